//! The operator journal: `reset`, `force-open`, … against a state file whose lock a long run
//! (a filter on a pipe, ugro-watch) holds. The command appends one JSON line to `<state>.ops`
//! under a small lock of its own and exits; the lock holder applies the pending lines on its
//! next record or tick (and a run that opens the state applies what is left).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use ugro_support::journal;
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
    journal::journal_path(state)
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
    let q = QueuedOp {
        node: node.to_owned(),
        op: op_name(op).to_owned(),
        ts,
    };
    journal::enqueue(state, &q)
}

/// Takes every pending command out of the journal of `state` (oldest first). A line that
/// does not parse, or names an unknown command or a bad node, is logged and dropped.
pub fn take(state: &Path) -> Result<Vec<(String, Operation, Timestamp)>, StateError> {
    let mut out = Vec::new();
    for q in journal::take::<QueuedOp>(state)? {
        match parse_op(&q.op) {
            Some(op) if ugro_types::validate_node(&q.node).is_ok() => out.push((q.node, op, q.ts)),
            _ => tracing::warn!(
                "{}: dropped queued command {} {}",
                journal_path(state).display(),
                q.op,
                q.node
            ),
        }
    }
    Ok(out)
}

/// Whether commands are waiting (cheap: one stat).
pub fn pending(state: &Path) -> bool {
    journal::pending(state)
}
