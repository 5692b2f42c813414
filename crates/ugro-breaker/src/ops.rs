//! The operator journal: `reset`, `force-open`, … against a state file whose lock a long run
//! (a filter on a pipe, ugro-watch) holds. The command appends one JSON line to `<state>.ops`
//! under a small lock of its own and exits; the lock holder applies the pending lines on its
//! next record or tick (and a run that opens the state applies what is left).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use ugro_support::state::StateError;
use ugro_types::Timestamp;

use crate::engine::Operation;

/// One queued command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedOp {
    /// Node name.
    pub node: String,
    /// The command (`reset`, `force_open`, `disable`, `metrics_only`, `forget`).
    pub op: String,
    /// When it was queued (wall clock); the transition carries this time.
    pub ts: Timestamp,
}

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

/// The wire name of an operation.
pub fn op_name(op: Operation) -> &'static str {
    match op {
        Operation::Reset => "reset",
        Operation::ForceOpen => "force_open",
        Operation::Disable => "disable",
        Operation::MetricsOnly => "metrics_only",
        Operation::Forget => "forget",
    }
}

fn parse_op(s: &str) -> Option<Operation> {
    Some(match s {
        "reset" => Operation::Reset,
        "force_open" => Operation::ForceOpen,
        "disable" => Operation::Disable,
        "metrics_only" => Operation::MetricsOnly,
        "forget" => Operation::Forget,
        _ => return None,
    })
}

/// Appends one command to the journal of `state`.
pub fn enqueue(state: &Path, node: &str, op: Operation, ts: Timestamp) -> Result<(), StateError> {
    let path = journal_path(state);
    let lock_path = with_suffix(&path, ".lock");
    let lock = open_rw(&lock_path)?;
    lock.lock().map_err(io_err(&lock_path))?;
    let q = QueuedOp {
        node: node.to_owned(),
        op: op_name(op).to_owned(),
        ts,
    };
    let mut line = serde_json::to_vec(&q).map_err(|e| io_err(&path)(e.into()))?;
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

/// Takes every pending command out of the journal of `state` (oldest first). A line that
/// does not parse (bad JSON, bad UTF-8, an unknown command or node name) is dropped, and the
/// journal as it was is kept aside as `<state>.ops.corrupt` for the operator: a damaged
/// journal never blocks a run, `--reset-state` included.
pub fn take(state: &Path) -> Result<Vec<(String, Operation, Timestamp)>, StateError> {
    let path = journal_path(state);
    // The common case, checked without any lock: nothing queued.
    if std::fs::metadata(&path).map_or(true, |m| m.len() == 0) {
        return Ok(Vec::new());
    }
    let lock_path = with_suffix(&path, ".lock");
    let lock = open_rw(&lock_path)?;
    lock.lock().map_err(io_err(&lock_path))?;
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
        match parse_line(l) {
            Ok(q) => out.push(q),
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

fn parse_line(l: &[u8]) -> Result<(String, Operation, Timestamp), String> {
    let q = serde_json::from_slice::<QueuedOp>(l).map_err(|e| e.to_string())?;
    let op = parse_op(&q.op).ok_or_else(|| format!("unknown command {:?}", q.op))?;
    ugro_types::validate_node(&q.node).map_err(|e| e.to_string())?;
    Ok((q.node, op, q.ts))
}

/// Keeps a damaged journal's bytes aside (`<journal>.corrupt`, the newest only) so the
/// operator can see what was dropped; failing to is logged, never fatal.
fn quarantine(path: &Path, bytes: &[u8]) {
    let aside = with_suffix(path, ".corrupt");
    match ugro_support::state::write_atomic(&aside, bytes) {
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

/// Whether commands are waiting (cheap: one stat).
pub fn pending(state: &Path) -> bool {
    std::fs::metadata(journal_path(state)).is_ok_and(|m| m.len() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_journal_is_kept_aside_and_its_good_lines_still_apply() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("breaker.json");
        let ts = Timestamp::parse("2026-11-28T00:00:00Z").unwrap();
        enqueue(&state, "gpu-01", Operation::Reset, ts).unwrap();
        let journal = journal_path(&state);
        let mut f = OpenOptions::new().append(true).open(&journal).unwrap();
        f.write_all(b"{\"node\":\"\xff\"}\n{\"node\":\"../../etc/passwd\",\"op\":\"reset\",\"ts\":\"2026-11-28T00:00:00Z\"}\n")
            .unwrap();
        drop(f);
        enqueue(&state, "gpu-02", Operation::Forget, ts).unwrap();
        let got = take(&state).unwrap();
        assert_eq!(
            got,
            vec![
                ("gpu-01".to_owned(), Operation::Reset, ts),
                ("gpu-02".to_owned(), Operation::Forget, ts)
            ]
        );
        assert!(!pending(&state), "the journal is emptied");
        let aside = std::fs::read(with_suffix(&journal, ".corrupt")).unwrap();
        assert!(
            aside.windows(1).any(|w| w == b"\xff"),
            "the damaged bytes are kept"
        );
        assert!(take(&state).unwrap().is_empty());
    }
}
