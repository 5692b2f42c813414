//! The on-disk spool, safe to share between processes: one file per notification, named
//! uniquely (receiver, creation time, pid, sequence) and created without ever replacing
//! another; whoever sends an entry holds an exclusive lock on it, so that two runs draining
//! one spool never send it twice, and removes it only after success.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::Delivery;
use crate::engine::Notification;

/// An entry as stored: the notification, and the state file it came from, so that groups of
/// runs with different state files sharing one spool are never taken for one another.
#[derive(Debug, Serialize, Deserialize)]
struct OnDisk {
    #[serde(default)]
    origin: String,
    #[serde(flatten)]
    n: Notification,
}

/// One spooled notification.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its file.
    pub path: PathBuf,
    /// The state file it came from (empty for entries older than this field).
    pub origin: String,
    /// The notification.
    pub n: Notification,
}

/// An entry this process holds the lock of; dropping it releases the lock.
#[derive(Debug)]
pub struct Claim {
    _file: File,
    /// Its file.
    pub path: PathBuf,
}

impl Claim {
    /// Removes the entry (after success); the lock is held until then.
    pub fn remove(self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// What [`Spool::lock`] found.
#[derive(Debug)]
pub enum Locked {
    /// Ours now.
    Held(Claim),
    /// Another process is sending it.
    Busy,
    /// Delivered (or dropped) by someone else meanwhile.
    Gone,
}

/// The spool directory.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_entries: usize,
    max_bytes: u64,
    seq: AtomicU64,
    /// What the last full listing found, plus this process's writes since: the bounds are
    /// checked against it, and a full listing is made only near them or once a second
    /// (other runs write too).
    estimate: Mutex<Estimate>,
}

#[derive(Debug)]
struct Estimate {
    entries: usize,
    bytes: u64,
    listed: Option<Instant>,
}

fn ms_now() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// The receiver an entry name is for: `<receiver>+<ms>-<pid>-<seq>.json` (receiver names
/// cannot hold `+`); None for names of older versions, whose receiver is in the file.
pub fn receiver_of(name: &str) -> Option<&str> {
    name.split_once('+').map(|(r, _)| r)
}

/// Entry names sort by creation time; names of older versions (a bare sequence number) first.
fn age_key(name: &str) -> (u128, String) {
    let ms = name
        .split_once('+')
        .and_then(|(_, rest)| rest.split('-').next())
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    (ms, name.to_owned())
}

impl Spool {
    /// Opens the directory, creating it (mode 0700) if needed. A directory another user owns,
    /// or that group or others may write to, is refused: anyone who can place a file there
    /// could have it delivered with this user's credentials.
    pub fn open(dir: &Path, d: &Delivery) -> std::io::Result<Spool> {
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)?;
            }
            Err(e) => return Err(e),
        }
        let md = std::fs::symlink_metadata(dir)?;
        if !md.is_dir() {
            return Err(std::io::Error::other("not a directory"));
        }
        if md.uid() != rustix::process::geteuid().as_raw() {
            return Err(std::io::Error::other(format!(
                "owned by uid {}, not by this user",
                md.uid()
            )));
        }
        if md.permissions().mode() & 0o022 != 0 {
            return Err(std::io::Error::other(format!(
                "writable by group or others (mode {:o}); chmod 700 it",
                md.permissions().mode() & 0o777
            )));
        }
        let s = Spool {
            dir: dir.to_owned(),
            max_entries: d.spool_max_entries,
            max_bytes: d.spool_max_bytes,
            seq: AtomicU64::new(0),
            estimate: Mutex::new(Estimate {
                entries: 0,
                bytes: 0,
                listed: None,
            }),
        };
        s.remove_orphans();
        Ok(s)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A run killed while writing leaves a temporary file behind (never a torn entry); those
    /// older than an hour are removed, as no write takes that long.
    fn remove_orphans(&self) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in rd.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|a| a > Duration::from_secs(3600));
            if old && e.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// `(name, path, bytes)` of every entry, oldest first; with `receiver`, only the entries
    /// named for it and those of older versions (whose receiver is read from the file).
    pub fn list(&self, receiver: Option<&str>) -> std::io::Result<Vec<(String, PathBuf, u64)>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            if let (Some(want), Some(r)) = (receiver, receiver_of(&name))
                && want != r
            {
                continue;
            }
            let len = match e.metadata() {
                Ok(m) => m.len(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            v.push((name, e.path(), len));
        }
        v.sort_by_cached_key(|(n, _, _)| age_key(n));
        Ok(v)
    }

    /// Reads an entry.
    pub fn read(&self, path: &Path) -> Result<Entry, String> {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        let d: OnDisk = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        Ok(Entry {
            path: path.to_owned(),
            origin: d.origin,
            n: d.n,
        })
    }

    /// Writes a new entry, locked by this process from its creation on. The name is unique
    /// (pid and a sequence number) and the file is linked into place only if the name is free,
    /// so no entry is ever replaced.
    pub fn write(&self, origin: &str, n: &Notification) -> std::io::Result<Claim> {
        let bytes = serde_json::to_vec(&OnDisk {
            origin: origin.to_owned(),
            n: n.clone(),
        })
        .map_err(std::io::Error::other)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(&self.dir)?;
        tmp.write_all(&bytes)?;
        self.note_write(bytes.len() as u64);
        tmp.as_file().sync_all()?;
        tmp.as_file().lock()?;
        let pid = std::process::id();
        loop {
            let seq = self.seq.fetch_add(1, Ordering::Relaxed);
            let name = format!("{}+{:013}-{pid}-{seq:06}.json", n.receiver, ms_now());
            let path = self.dir.join(&name);
            match tmp.persist_noclobber(&path) {
                Ok(file) => {
                    if let Ok(d) = File::open(&self.dir) {
                        let _ = d.sync_all();
                    }
                    return Ok(Claim { _file: file, path });
                }
                Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => tmp = e.file,
                Err(e) => return Err(e.error),
            }
        }
    }

    /// Takes the lock of an entry for sending it. The file is checked to still be the one at
    /// its path once locked: a run that locked it just before another removed it must not
    /// send it again.
    pub fn lock(&self, path: &Path) -> std::io::Result<Locked> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Locked::Gone),
            Err(e) => return Err(e),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(Locked::Busy),
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        let held = file.metadata()?;
        match std::fs::metadata(path) {
            Ok(m) if m.ino() == held.ino() && m.dev() == held.dev() => Ok(Locked::Held(Claim {
                _file: file,
                path: path.to_owned(),
            })),
            Ok(_) => Ok(Locked::Gone),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Locked::Gone),
            Err(e) => Err(e),
        }
    }

    fn note_write(&self, len: u64) {
        let mut e = self
            .estimate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        e.entries += 1;
        e.bytes += len;
    }

    /// Whether a full listing is due before the bounds can be trusted.
    fn near_bounds(&self) -> bool {
        let e = self
            .estimate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        e.listed
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
            || e.entries + e.entries / 8 + 1 >= self.max_entries
            || e.bytes + e.bytes / 8 >= self.max_bytes
    }

    /// Enforces the bounds: past spool_max_entries or spool_max_bytes the oldest entries that
    /// no one is sending are removed. Returns what was dropped, `(receiver, path, what)`, for
    /// the caller to count and log.
    pub fn trim(&self) -> std::io::Result<Vec<(String, PathBuf, String)>> {
        if !self.near_bounds() {
            return Ok(Vec::new());
        }
        let entries = self.list(None)?;
        let mut count = entries.len();
        let mut total: u64 = entries.iter().map(|e| e.2).sum();
        let mut dropped = Vec::new();
        for (name, path, len) in entries {
            if count <= self.max_entries && (total <= self.max_bytes || count <= 1) {
                break;
            }
            let Locked::Held(claim) = self.lock(&path)? else {
                continue;
            };
            let what = self.read(&path).map_or_else(
                |_| (receiver_of(&name).unwrap_or("?").to_owned(), name.clone()),
                |e| {
                    (
                        e.n.receiver.clone(),
                        format!("group {} ({} alerts)", e.n.group_key, e.n.alerts.len()),
                    )
                },
            );
            claim.remove()?;
            count -= 1;
            total = total.saturating_sub(len);
            dropped.push((what.0, path, what.1));
        }
        *self
            .estimate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Estimate {
            entries: count,
            bytes: total,
            listed: Some(Instant::now()),
        };
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AlertConfig;

    fn n(id: &str) -> Notification {
        Notification {
            id: id.into(),
            receiver: "r".into(),
            group_key: "{}:{}".into(),
            group_labels: ugro_types::LabelSet::new(),
            alerts: Vec::new(),
            ts: ugro_types::Timestamp(0),
        }
    }

    #[test]
    fn a_full_spool_drops_the_oldest_entries_nobody_is_sending() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = AlertConfig::default().delivery;
        d.spool_max_entries = 2;
        let s = Spool::open(&dir.path().join("spool"), &d).unwrap();
        let first = s.write("o", &n("id0")).unwrap();
        for i in 1..4 {
            drop(s.write("o", &n(&format!("id{i}"))).unwrap());
        }
        let dropped = s.trim().unwrap();
        assert_eq!(dropped.len(), 2, "{dropped:?}");
        let left: Vec<String> = s
            .list(Some("r"))
            .unwrap()
            .iter()
            .map(|(_, p, _)| s.read(p).unwrap().n.id)
            .collect();
        assert_eq!(left, ["id0", "id3"], "id0 is being sent, so id1 and id2 go");
        drop(first);
    }

    #[test]
    fn an_entry_is_sent_by_one_holder_only_and_never_after_its_removal() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), &AlertConfig::default().delivery).unwrap();
        let c = s.write("o", &n("a")).unwrap();
        let path = c.path.clone();
        assert!(matches!(s.lock(&path).unwrap(), Locked::Busy));
        drop(c);
        let Locked::Held(c) = s.lock(&path).unwrap() else {
            panic!("not lockable once released");
        };
        let late = File::open(&path).unwrap();
        c.remove().unwrap();
        assert!(matches!(s.lock(&path).unwrap(), Locked::Gone));
        drop(late);
    }

    #[test]
    fn names_are_unique_within_a_millisecond_and_keep_the_receiver() {
        let dir = tempfile::tempdir().unwrap();
        let s = Spool::open(dir.path(), &AlertConfig::default().delivery).unwrap();
        let names: std::collections::HashSet<PathBuf> = (0..50)
            .map(|i| s.write("o", &n(&i.to_string())).unwrap().path)
            .collect();
        assert_eq!(names.len(), 50);
        assert_eq!(s.list(Some("r")).unwrap().len(), 50);
        assert!(s.list(Some("other")).unwrap().is_empty());
    }

    #[test]
    fn a_spool_directory_others_can_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("open");
        std::fs::create_dir(&p).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Spool::open(&p, &AlertConfig::default().delivery).unwrap_err();
        assert!(e.to_string().contains("writable by group or others"), "{e}");
    }
}
