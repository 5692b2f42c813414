//! State files that survive between runs: versioned, written atomically, serialised by a lock.
//!
//! The lock is taken on a sidecar `<file>.lock`, not on the state file itself, because the
//! state file is replaced by rename on every write and a lock on a replaced inode protects
//! nothing. Writes go to a temporary file in the same directory (mode 0600), are fsynced,
//! renamed over the old file, and the directory is fsynced: a crash at any point leaves either
//! the old or the new state, never a torn one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use ugro_types::{Exit, ToolError};

/// A state file problem.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Creating, locking, reading or writing failed.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file exists but cannot be parsed. It is left untouched.
    #[error(
        "state file {path} is corrupt: {cause} (left untouched; use --reset-state to start over)"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: String,
    },
    /// The file is for another tool or from another format version. It is left untouched.
    #[error(
        "state file {path} has format {found:?} version {found_version}, this build reads {want:?} version {want_version} (left untouched; use --reset-state to start over)"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// Format found.
        found: String,
        /// Version found.
        found_version: u32,
        /// Format wanted.
        want: String,
        /// Version wanted.
        want_version: u32,
    },
}

impl StateError {
    /// 78 for a file that cannot be used as it is, 74 for I/O.
    pub fn exit(&self) -> Exit {
        match self {
            StateError::Io { .. } => Exit::IoErr,
            StateError::Corrupt { .. } | StateError::Version { .. } => Exit::Config,
        }
    }
}

impl ToolError for StateError {
    fn exit(&self) -> Exit {
        StateError::exit(self)
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    format: String,
    version: u32,
    data: T,
}

#[derive(Deserialize)]
struct EnvelopeHead {
    format: String,
    version: u32,
}

/// An exclusive lock on a state file, held until dropped.
#[derive(Debug)]
pub struct StateLock {
    path: PathBuf,
    _lock: File,
}

/// The default directory for a tool's state: `$XDG_STATE_HOME/ugro`, else `~/.local/state/ugro`,
/// else `/tmp/ugro-<uid>` (a user without a home directory still gets a private place).
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("ugro");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join(".local/state/ugro");
    }
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(0);
    PathBuf::from(format!("/tmp/ugro-{uid}"))
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

impl StateLock {
    /// Creates the parent directory (0700) if needed and waits for the exclusive lock.
    pub fn acquire(path: &Path) -> Result<Self, StateError> {
        let (lock, lock_path) = open_lock_file(path)?;
        lock.lock().map_err(io_err(&lock_path))?;
        remove_orphans(path);
        Ok(StateLock {
            path: path.to_owned(),
            _lock: lock,
        })
    }

    /// Like [`StateLock::acquire`], but `None` at once when another process holds the lock
    /// (a long-running filter), so a short command can do something else than wait.
    pub fn try_acquire(path: &Path) -> Result<Option<Self>, StateError> {
        let (lock, lock_path) = open_lock_file(path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        remove_orphans(path);
        Ok(Some(StateLock {
            path: path.to_owned(),
            _lock: lock,
        }))
    }

    /// The state file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state; `None` when the file does not exist yet.
    pub fn read<T: DeserializeOwned>(
        &self,
        format: &str,
        version: u32,
    ) -> Result<Option<T>, StateError> {
        read_snapshot(&self.path, format, version)
    }

    /// Replaces the state atomically.
    pub fn write<T: Serialize>(
        &self,
        format: &str,
        version: u32,
        data: &T,
    ) -> Result<(), StateError> {
        let env = Envelope {
            format: format.to_owned(),
            version,
            data,
        };
        let bytes = serde_json::to_vec(&env).map_err(|e| StateError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&self.path, &bytes)
    }
}

/// Reads a state file without taking its lock: writers replace the file by rename, so a
/// reader always sees one whole version. For read-only commands (`status`) that should not wait
/// for a long-running writer. `None` when the file does not exist yet.
pub fn read_snapshot<T: DeserializeOwned>(
    path: &Path,
    format: &str,
    version: u32,
) -> Result<Option<T>, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let corrupt = |cause: String| StateError::Corrupt {
        path: path.to_owned(),
        cause,
    };
    let head: EnvelopeHead = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if head.format != format || head.version != version {
        return Err(StateError::Version {
            path: path.to_owned(),
            found: head.format,
            found_version: head.version,
            want: format.to_owned(),
            want_version: version,
        });
    }
    let env: Envelope<T> = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    Ok(Some(env.data))
}

/// Writes `bytes` to `path` atomically with mode 0600 (temp file, fsync, rename, fsync dir).
/// Also used for files that need no lock because one process owns them (ugro-watch's state dir).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".ugro-tmp-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(&dir)
        .map_err(io_err(&dir))?;
    tmp.write_all(bytes).map_err(io_err(path))?;
    tmp.as_file().sync_all().map_err(io_err(path))?;
    tmp.persist(path).map_err(|e| io_err(path)(e.error))?;
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Removes a state file (for `--reset-state`), under its lock.
pub fn reset(path: &Path) -> Result<(), StateError> {
    let _lock = StateLock::acquire(path)?;
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// A run killed between creating its temporary file and renaming it leaves the temporary file
/// behind (never a torn state file). Those older than an hour are removed: no write takes that
/// long, so a younger one may belong to another ugro tool writing right now.
fn remove_orphans(state: &Path) {
    let dir = match state.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > std::time::Duration::from_secs(3600));
        if old && e.file_name().to_string_lossy().starts_with(".ugro-tmp-") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn open_lock_file(path: &Path) -> Result<(File, PathBuf), StateError> {
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let lock_path = sidecar(path);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(&lock_path)
        .map_err(io_err(&lock_path))?;
    Ok((lock, lock_path))
}

fn sidecar(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_private_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/state.json");
        let l = StateLock::acquire(&p).unwrap();
        assert_eq!(l.read::<Vec<u32>>("t", 1).unwrap(), None);
        l.write("t", 1, &vec![1u32, 2]).unwrap();
        assert_eq!(l.read::<Vec<u32>>("t", 1).unwrap(), Some(vec![1, 2]));
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn orphaned_temporary_files_older_than_an_hour_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let old = d.path().join(".ugro-tmp-old");
        let young = d.path().join(".ugro-tmp-young");
        let other = d.path().join("keep-me");
        for p in [&old, &young, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        for p in [&old, &other] {
            let f = std::fs::File::options().write(true).open(p).unwrap();
            f.set_modified(two_hours_ago).unwrap();
        }
        StateLock::acquire(&d.path().join("b.json")).unwrap();
        assert!(!old.exists());
        assert!(young.exists());
        assert!(other.exists());
    }

    #[test]
    fn try_acquire_says_none_while_another_holder_has_the_lock() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.json");
        let held = StateLock::acquire(&p).unwrap();
        assert!(StateLock::try_acquire(&p).unwrap().is_none());
        drop(held);
        assert!(StateLock::try_acquire(&p).unwrap().is_some());
    }

    #[test]
    fn corrupt_and_foreign_files_are_refused_and_left_alone() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("s.json");
        std::fs::write(&p, b"{not json").unwrap();
        let l = StateLock::acquire(&p).unwrap();
        let e = l.read::<Vec<u32>>("t", 1).unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }));
        assert_eq!(e.exit(), Exit::Config);
        assert_eq!(std::fs::read(&p).unwrap(), b"{not json");
        std::fs::write(&p, br#"{"format":"t","version":9,"data":[]}"#).unwrap();
        assert!(matches!(
            l.read::<Vec<u32>>("t", 1).unwrap_err(),
            StateError::Version { .. }
        ));
    }
}
