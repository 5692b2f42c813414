//! The state directory: one file per node plus `fleet.json` and `stats.json`, each replaced
//! atomically, written by a background thread so that a slow disk (every write is fsynced)
//! never delays a poll. Writes to the same file are coalesced: only the newest content of a
//! file is written.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread::JoinHandle;

use ugro_support::state::{StateError, write_atomic};

/// Handle to the writer thread.
#[derive(Debug)]
pub struct StateDir {
    dir: PathBuf,
    tx: Option<mpsc::Sender<(PathBuf, Vec<u8>)>>,
    thread: Option<JoinHandle<Option<StateError>>>,
}

impl StateDir {
    /// Creates `dir` and `dir/nodes` (mode 0700) and starts the writer.
    pub fn open(dir: &Path) -> Result<StateDir, StateError> {
        use std::os::unix::fs::PermissionsExt;
        let nodes = dir.join("nodes");
        std::fs::create_dir_all(&nodes).map_err(|source| StateError::Io {
            path: nodes.clone(),
            source,
        })?;
        for d in [dir, nodes.as_path()] {
            let _ = std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700));
        }
        let (tx, rx) = mpsc::channel::<(PathBuf, Vec<u8>)>();
        let thread = std::thread::Builder::new()
            .name("ugro-watch-state".into())
            .spawn(move || writer(&rx))
            .map_err(|source| StateError::Io {
                path: dir.to_owned(),
                source,
            })?;
        Ok(StateDir {
            dir: dir.to_owned(),
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queues `nodes/<node>.json`.
    pub fn node(&self, node: &str, bytes: Vec<u8>) {
        self.put(self.dir.join("nodes").join(format!("{node}.json")), bytes);
    }

    /// Queues a top-level file (`fleet.json`, `stats.json`).
    pub fn file(&self, name: &str, bytes: Vec<u8>) {
        self.put(self.dir.join(name), bytes);
    }

    fn put(&self, path: PathBuf, bytes: Vec<u8>) {
        if let Some(tx) = &self.tx {
            let _ = tx.send((path, bytes));
        }
    }

    /// Writes everything queued and stops the writer; the first write error, if any.
    pub fn close(mut self) -> Result<(), StateError> {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(Some(e))) => Err(e),
            _ => Ok(()),
        }
    }
}

fn writer(rx: &mpsc::Receiver<(PathBuf, Vec<u8>)>) -> Option<StateError> {
    let mut first_err = None;
    let mut pending: HashMap<PathBuf, Vec<u8>> = HashMap::new();
    while let Ok((p, b)) = rx.recv() {
        pending.insert(p, b);
        while let Ok((p, b)) = rx.try_recv() {
            pending.insert(p, b);
        }
        for (p, b) in pending.drain() {
            if let Err(e) = write_atomic(&p, &b) {
                tracing::warn!("{e}");
                first_err.get_or_insert(e);
            }
        }
    }
    first_err
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_written_with_the_newest_content() {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::open(&d.path().join("st")).unwrap();
        s.node("n1", b"{\"a\":1}".to_vec());
        s.node("n1", b"{\"a\":2}".to_vec());
        s.file("stats.json", b"{}".to_vec());
        s.close().unwrap();
        let got = std::fs::read(d.path().join("st/nodes/n1.json")).unwrap();
        assert_eq!(got, b"{\"a\":2}");
        assert!(d.path().join("st/stats.json").exists());
    }
}
