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
/// does not parse is logged and dropped.
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
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(io_err(&path))?;
    f.set_len(0).map_err(io_err(&path))?;
    f.rewind().map_err(io_err(&path))?;
    f.sync_all().map_err(io_err(&path))?;
    let mut out = Vec::new();
    for l in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<QueuedOp>(l) {
            Ok(q) => match parse_op(&q.op) {
                Some(op) if ugro_types::validate_node(&q.node).is_ok() => {
                    out.push((q.node, op, q.ts));
                }
                _ => tracing::warn!("{}: dropped queued command {l}", path.display()),
            },
            Err(e) => tracing::warn!("{}: dropped queued command {l}: {e}", path.display()),
        }
    }
    Ok(out)
}

/// Whether commands are waiting (cheap: one stat).
pub fn pending(state: &Path) -> bool {
    std::fs::metadata(journal_path(state)).is_ok_and(|m| m.len() > 0)
}
