//! State files that survive between runs: versioned, written atomically, serialised by a lock.
//!
//! The lock is taken on a sidecar `<file>.lock`, not on the state file itself, because the
//! state file is replaced by rename on every write and a lock on a replaced inode protects
//! nothing. Writes go to a temporary file in the same directory (mode 0600), are fsynced,
//! renamed over the old file, and the directory is fsynced: a crash at any point leaves either
//! the old or the new state, never a torn one.
//!
//! What a state path may be ([`resolve`]): a regular file, or a name not yet taken, or a
//! symbolic link to one of those, which is followed: the tool reads and replaces the file the
//! link points to, and the link stays. A directory, FIFO, device or socket is refused with
//! status 78 before anything opens it (opening a FIFO to read it would wait for a writer
//! forever), and so is its `.lock` sidecar if it is one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use ugro_types::{Exit, ToolError};

/// A state file problem.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The shared fallback state directory is not private to this user. It is left untouched.
    #[error(
        "state directory {path} is not private: {why}; refusing to use it (someone else may have created it). Set XDG_STATE_HOME or HOME, pass --state, or remove it"
    )]
    NotPrivate {
        /// The directory.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
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
    /// The path names something that is not a regular file (a directory, FIFO, device,
    /// socket, or a loop of symbolic links). Nothing was opened.
    #[error("state file {path} is {what}, not a regular file; pass the path of a file")]
    NotAFile {
        /// The path (after following symbolic links).
        path: PathBuf,
        /// What it is.
        what: &'static str,
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
    /// 78 for a file or directory that cannot be used as it is, 74 for I/O.
    pub fn exit(&self) -> Exit {
        match self {
            StateError::Io { .. } => Exit::IoErr,
            StateError::Corrupt { .. }
            | StateError::NotAFile { .. }
            | StateError::Version { .. }
            | StateError::NotPrivate { .. } => Exit::Config,
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

/// The default directory for a tool's state: `$XDG_STATE_HOME/ugro`, else
/// `$HOME/.local/state/ugro`, else `ugro-<uid>` in the temporary directory (`$TMPDIR`, else
/// `/tmp`), so that a user without a home directory still gets a place that survives runs.
///
/// That last one has a name anyone can predict, in space anyone can write, so it is created
/// atomically with mode 0700 and refused ([`StateError::NotPrivate`]) unless it is a real
/// directory owned by this user and closed to group and other: another user who created it
/// first could otherwise plant state, or spool entries that would be delivered with this
/// user's credentials.
pub fn default_state_dir() -> Result<PathBuf, StateError> {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("ugro"));
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Ok(PathBuf::from(h).join(".local/state/ugro"));
    }
    let uid = rustix::process::geteuid().as_raw();
    let dir = std::env::temp_dir().join(format!("ugro-{uid}"));
    private_dir(&dir, uid)?;
    Ok(dir)
}

/// Creates `dir` with mode 0700 unless it exists, then checks that it is a directory (not a
/// link to one) owned by `uid` with no permission bits for group or other.
pub fn private_dir(dir: &Path, uid: u32) -> Result<(), StateError> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(dir)(e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io_err(dir))?;
    let refuse = |why: String| {
        Err(StateError::NotPrivate {
            path: dir.to_owned(),
            why,
        })
    };
    if !meta.file_type().is_dir() {
        return refuse("not a directory (a symbolic link or another file is in its place)".into());
    }
    if meta.uid() != uid {
        return refuse(format!(
            "owned by uid {}, not by this user (uid {uid})",
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return refuse(format!(
            "mode {mode:04o} lets group or other in (want 0700)"
        ));
    }
    Ok(())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

impl StateLock {
    /// Creates the parent directory (0700) if needed and waits for the exclusive lock.
    /// The path is [`resolve`]d first: [`StateLock::path`] is the file itself.
    pub fn acquire(path: &Path) -> Result<Self, StateError> {
        let path = resolve(path)?;
        let (lock, lock_path) = open_lock_file(&path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                // Say so: a second watcher or filter on the same file would otherwise hang
                // without a word until the first one exits.
                tracing::warn!(
                    "{}: waiting for another run that holds this state file (give each run its own state file)",
                    path.display()
                );
                lock.lock().map_err(io_err(&lock_path))?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        remove_orphans(&path);
        Ok(StateLock { path, _lock: lock })
    }

    /// Like [`StateLock::acquire`], but `None` at once when another process holds the lock
    /// (a long-running filter), so a short command can do something else than wait.
    pub fn try_acquire(path: &Path) -> Result<Option<Self>, StateError> {
        let path = resolve(path)?;
        let (lock, lock_path) = open_lock_file(&path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        remove_orphans(&path);
        Ok(Some(StateLock { path, _lock: lock }))
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
        write_atomic(&self.path, &encode(&self.path, format, version, data)?)
    }
}

/// The bytes [`StateLock::write`] writes for `data`: for a holder of the lock that hands the
/// writing (and its fsync) to another thread, which then calls [`write_atomic`].
pub fn encode<T: Serialize>(
    path: &Path,
    format: &str,
    version: u32,
    data: &T,
) -> Result<Vec<u8>, StateError> {
    let env = Envelope {
        format: format.to_owned(),
        version,
        data,
    };
    serde_json::to_vec(&env).map_err(|e| StateError::Io {
        path: path.to_owned(),
        source: std::io::Error::other(e),
    })
}

/// Reads a state file without taking its lock: writers replace the file by rename, so a
/// reader always sees one whole version. For read-only commands (`status`) that should not wait
/// for a long-running writer. `None` when the file does not exist yet.
pub fn read_snapshot<T: DeserializeOwned>(
    path: &Path,
    format: &str,
    version: u32,
) -> Result<Option<T>, StateError> {
    let path = &resolve(path)?;
    let mut file = match open_regular(path, OpenOptions::new().read(true)) {
        Ok(f) => f,
        Err(StateError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut file, &mut bytes).map_err(io_err(path))?;
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
    let path = &resolve(path)?;
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
    let lock = StateLock::acquire(path)?;
    match std::fs::remove_file(lock.path()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(lock.path())(e)),
    }
}

/// The file a state path stands for: symbolic links followed (relative targets from the
/// link's directory, at most 40 hops), the result a regular file or a name not yet taken.
/// Anything else is [`StateError::NotAFile`]: checked with `lstat`, which never blocks, so
/// a FIFO is refused rather than opened.
pub fn resolve(path: &Path) -> Result<PathBuf, StateError> {
    let mut p = path.to_owned();
    for _ in 0..40 {
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(p),
            Err(e) => return Err(io_err(&p)(e)),
        };
        if !meta.file_type().is_symlink() {
            return match file_kind(&meta) {
                None => Ok(p),
                Some(what) => Err(StateError::NotAFile { path: p, what }),
            };
        }
        let target = std::fs::read_link(&p).map_err(io_err(&p))?;
        p = match p.parent() {
            Some(dir) => dir.join(target),
            None => target,
        };
    }
    Err(StateError::NotAFile {
        path: p,
        what: "a loop of symbolic links",
    })
}

/// `None` for a regular file, else what it is.
fn file_kind(meta: &std::fs::Metadata) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    Some(if t.is_file() {
        return None;
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "a symbolic link"
    })
}

/// Opens `path` without blocking on what it turns out to be (`O_NONBLOCK`, `O_NOCTTY`) and
/// refuses it unless it is a regular file: the check after `open` closes the window in which
/// the name could have been replaced since [`resolve`] looked at it.
pub fn open_regular(path: &Path, options: &mut OpenOptions) -> Result<File, StateError> {
    use rustix::fs::OFlags;
    let flags = (OFlags::NONBLOCK | OFlags::NOCTTY).bits();
    let f = options
        .custom_flags(i32::try_from(flags).unwrap_or(0))
        .open(path)
        .map_err(io_err(path))?;
    let meta = f.metadata().map_err(io_err(path))?;
    match file_kind(&meta) {
        None => Ok(f),
        Some(what) => Err(StateError::NotAFile {
            path: path.to_owned(),
            what,
        }),
    }
}

/// Refuses a state file that names a node no record could name (`../../etc/passwd`,
/// `$(reboot)`): node names go into file names, commands and labels, so a tampered or damaged
/// file must not bring one in. The file is reported corrupt (status 78) and left untouched.
pub fn check_nodes<'a>(
    path: &Path,
    nodes: impl IntoIterator<Item = &'a str>,
) -> Result<(), StateError> {
    for n in nodes {
        if let Err(e) = ugro_types::validate_node(n) {
            return Err(StateError::Corrupt {
                path: path.to_owned(),
                cause: e.to_string(),
            });
        }
    }
    Ok(())
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
        // Created with the mode rather than chmod-ed after, so it is never open to others.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
    }
    let lock_path = sidecar(path);
    let lock = open_regular(
        &lock_path,
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600),
    )?;
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

    fn my_uid() -> u32 {
        rustix::process::geteuid().as_raw()
    }

    /// A directory someone made before the tool ran, with `mode`.
    fn precreated(parent: &Path, mode: u32) -> PathBuf {
        let dir = parent.join("ugro-test");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        dir
    }

    #[test]
    fn a_missing_fallback_directory_is_created_private() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("ugro-test");
        private_dir(&dir, my_uid()).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        private_dir(&dir, my_uid()).unwrap();
    }

    #[test]
    fn a_precreated_world_writable_directory_is_refused_by_name() {
        let d = tempfile::tempdir().unwrap();
        let dir = precreated(d.path(), 0o777);
        let e = private_dir(&dir, my_uid()).unwrap_err();
        assert!(matches!(e, StateError::NotPrivate { .. }), "{e}");
        assert_eq!(e.exit(), Exit::Config);
        let msg = e.to_string();
        assert!(msg.contains(&dir.display().to_string()), "{msg}");
        assert!(msg.contains("0777"), "{msg}");
    }

    #[test]
    fn a_group_readable_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let dir = precreated(d.path(), 0o750);
        assert!(private_dir(&dir, my_uid()).is_err());
    }

    #[test]
    fn a_directory_owned_by_another_user_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("ugro-test");
        private_dir(&dir, my_uid()).unwrap();
        // The same 0700 directory, judged for a user who does not own it.
        let other = my_uid().wrapping_add(1);
        let msg = private_dir(&dir, other).unwrap_err().to_string();
        assert!(msg.contains("owned by uid"), "{msg}");
    }

    #[test]
    fn a_symbolic_link_in_place_of_the_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("elsewhere");
        private_dir(&target, my_uid()).unwrap();
        let link = d.path().join("ugro-test");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let msg = private_dir(&link, my_uid()).unwrap_err().to_string();
        assert!(msg.contains("not a directory"), "{msg}");
    }

    #[test]
    fn parents_of_a_new_state_file_are_created_private() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/state.json");
        StateLock::acquire(&p).unwrap();
        for dir in [d.path().join("a"), d.path().join("a/b")] {
            let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", dir.display());
        }
    }

    fn mkfifo(p: &Path) {
        rustix::fs::mkfifoat(rustix::fs::CWD, p, rustix::fs::Mode::from_raw_mode(0o600)).unwrap();
    }

    #[test]
    fn a_fifo_or_directory_as_state_is_refused_without_opening_it() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("s.json");
        mkfifo(&fifo);
        // Each of these would block forever on open or read if the FIFO were opened.
        for e in [
            StateLock::acquire(&fifo).unwrap_err(),
            StateLock::try_acquire(&fifo).unwrap_err(),
            read_snapshot::<u32>(&fifo, "t", 1).unwrap_err(),
            write_atomic(&fifo, b"x").unwrap_err(),
            reset(&fifo).unwrap_err(),
        ] {
            assert!(
                matches!(e, StateError::NotAFile { what: "a FIFO", .. }),
                "{e}"
            );
            assert_eq!(e.exit(), Exit::Config);
        }
        let dir = d.path().join("dir");
        std::fs::create_dir(&dir).unwrap();
        let e = StateLock::acquire(&dir).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
        assert_eq!(e.exit(), Exit::Config);
        // A FIFO in place of the lock sidecar is refused too.
        let p = d.path().join("t.json");
        mkfifo(&d.path().join("t.json.lock"));
        assert!(matches!(
            StateLock::acquire(&p).unwrap_err(),
            StateError::NotAFile { .. }
        ));
        assert!(matches!(
            read_snapshot::<u32>(Path::new("/dev/null"), "t", 1).unwrap_err(),
            StateError::NotAFile {
                what: "a device",
                ..
            }
        ));
    }

    #[test]
    fn a_symlinked_state_file_is_followed_and_the_link_stays() {
        let d = tempfile::tempdir().unwrap();
        let real_dir = d.path().join("real");
        std::fs::create_dir(&real_dir).unwrap();
        let target = real_dir.join("state.json");
        let link = d.path().join("link.json");
        // Relative to the link's directory, and dangling until the first write.
        std::os::unix::fs::symlink("real/state.json", &link).unwrap();
        let l = StateLock::acquire(&link).unwrap();
        assert_eq!(l.path(), d.path().join("real/state.json"));
        l.write("t", 1, &7u32).unwrap();
        drop(l);
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(read_snapshot::<u32>(&link, "t", 1).unwrap(), Some(7));
        assert_eq!(read_snapshot::<u32>(&target, "t", 1).unwrap(), Some(7));
        // The lock is the target's: two links to one file serialise on one lock.
        let held = StateLock::acquire(&target).unwrap();
        assert!(StateLock::try_acquire(&link).unwrap().is_none());
        drop(held);
        let a = d.path().join("a");
        let b = d.path().join("b");
        std::os::unix::fs::symlink(&b, &a).unwrap();
        std::os::unix::fs::symlink(&a, &b).unwrap();
        let e = StateLock::acquire(&a).unwrap_err();
        assert!(e.to_string().contains("loop"), "{e}");
    }

    #[test]
    fn node_names_from_a_state_file_are_checked() {
        let p = Path::new("s.json");
        assert!(check_nodes(p, ["gpu-01", "n.b"]).is_ok());
        for bad in ["../../etc/passwd", "$(reboot)", "", "-rf"] {
            let e = check_nodes(p, ["ok", bad]).unwrap_err();
            assert!(matches!(e, StateError::Corrupt { .. }), "{e}");
            assert_eq!(e.exit(), Exit::Config);
        }
    }
}
