//! The operator journal beside a state file: commands (`ugro-breaker reset NODE`,
//! `ugro-alert budget reset`) given while a long run (a filter on a pipe, ugro-watch) holds the
//! state file's lock. The command appends one JSON line to `<state>.ops` under a small lock of
//! its own and exits; the lock holder takes the pending lines on its next record or tick (and a
//! run that opens the state takes what is left), so an operator never waits for a run to end.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::state::StateError;

/// The journal beside `state`.
pub fn journal_path(state: &Path) -> PathBuf {
    with_suffix(state, ".ops")
}

fn with_suffix(state: &Path, suffix: &str) -> PathBuf {
    let mut s = state.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

fn open_rw(path: &Path) -> Result<File, StateError> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))
}

fn locked(path: &Path) -> Result<File, StateError> {
    let lock_path = with_suffix(path, ".lock");
    let lock = open_rw(&lock_path)?;
    lock.lock().map_err(io_err(&lock_path))?;
    Ok(lock)
}

/// Appends one entry to the journal of `state` (fsynced before it returns).
pub fn enqueue<T: Serialize>(state: &Path, entry: &T) -> Result<(), StateError> {
    let path = journal_path(state);
    let _lock = locked(&path)?;
    let mut line = serde_json::to_vec(entry).map_err(|e| io_err(&path)(e.into()))?;
    line.push(b'\n');
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_err(&path))?;
    f.write_all(&line).map_err(io_err(&path))?;
    f.sync_all().map_err(io_err(&path))
}

/// Takes every pending entry out of the journal of `state`, oldest first. A line that does not
/// parse is logged with the journal's name and line and dropped; the others are kept.
pub fn take<T: DeserializeOwned>(state: &Path) -> Result<Vec<T>, StateError> {
    take_checked(state, Ok::<T, String>)
}

/// [`take`], with `check` turning each parsed entry into what the caller applies (or the reason
/// it is refused). When any line is dropped (bad JSON, bad UTF-8, refused by `check`) the journal
/// as it was is kept aside as `<state>.ops.corrupt` for the operator: a damaged journal never
/// blocks a run.
pub fn take_checked<T: DeserializeOwned, U>(
    state: &Path,
    check: impl Fn(T) -> Result<U, String>,
) -> Result<Vec<U>, StateError> {
    let path = journal_path(state);
    // The common case, checked without any lock: nothing queued.
    if !pending(state) {
        return Ok(Vec::new());
    }
    let _lock = locked(&path)?;
    let mut f = open_rw(&path)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes).map_err(io_err(&path))?;
    f.set_len(0).map_err(io_err(&path))?;
    f.rewind().map_err(io_err(&path))?;
    f.sync_all().map_err(io_err(&path))?;
    let mut out = Vec::new();
    let mut dropped = 0;
    for (n, l) in bytes.split(|&b| b == b'\n').enumerate() {
        if l.trim_ascii().is_empty() {
            continue;
        }
        match serde_json::from_slice::<T>(l)
            .map_err(|e| e.to_string())
            .and_then(&check)
        {
            Ok(e) => out.push(e),
            Err(e) => {
                dropped += 1;
                tracing::warn!("{}:{}: dropped queued command: {e}", path.display(), n + 1);
            }
        }
    }
    if dropped > 0 {
        quarantine(&path, &bytes);
    }
    Ok(out)
}

/// Keeps a damaged journal's bytes aside (`<journal>.corrupt`, the newest only) so the
/// operator can see what was dropped; failing to is logged, never fatal.
fn quarantine(path: &Path, bytes: &[u8]) {
    let aside = with_suffix(path, ".corrupt");
    match crate::state::write_atomic(&aside, bytes) {
        Ok(()) => tracing::warn!(
            "{}: damaged lines dropped; the journal as it was is kept in {}",
            path.display(),
            aside.display()
        ),
        Err(e) => tracing::warn!(
            "{}: could not keep the damaged journal: {e}",
            path.display()
        ),
    }
}

/// Whether entries are waiting (cheap: one stat).
pub fn pending(state: &Path) -> bool {
    std::fs::metadata(journal_path(state)).is_ok_and(|m| m.len() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Op {
        op: String,
    }

    #[test]
    fn entries_come_back_once_in_order_and_bad_lines_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.json");
        assert!(!pending(&state));
        enqueue(&state, &Op { op: "a".into() }).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(journal_path(&state))
            .unwrap()
            .write_all(b"not json\n")
            .unwrap();
        enqueue(&state, &Op { op: "b".into() }).unwrap();
        assert!(pending(&state));
        let got: Vec<Op> = take(&state).unwrap();
        assert_eq!(got, [Op { op: "a".into() }, Op { op: "b".into() }]);
        assert!(!pending(&state));
        assert!(take::<Op>(&state).unwrap().is_empty());
    }
}
