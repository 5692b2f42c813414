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
/// does not parse (bad JSON, bad UTF-8, an unknown command or node name) is dropped, and the
/// journal as it was is kept aside as `<state>.ops.corrupt` for the operator: a damaged
/// journal never blocks a run, `--reset-state` included.
pub fn take(state: &Path) -> Result<Vec<(String, Operation, Timestamp)>, StateError> {
    journal::take_checked(state, |q: QueuedOp| {
        let op = parse_op(&q.op).ok_or_else(|| format!("unknown command {:?}", q.op))?;
        ugro_types::validate_node(&q.node).map_err(|e| e.to_string())?;
        Ok((q.node, op, q.ts))
    })
}

/// Whether commands are waiting (cheap: one stat).
pub fn pending(state: &Path) -> bool {
    journal::pending(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::io::Write;

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
        let aside = std::fs::read(format!("{}.corrupt", journal.display())).unwrap();
        assert!(
            aside.windows(1).any(|w| w == b"\xff"),
            "the damaged bytes are kept"
        );
        assert!(take(&state).unwrap().is_empty());
    }
}
