//! The breaker as a pipeline stage with its state file: the lock is taken when the stage is
//! opened and held until it is dropped, so concurrent runs on one file serialise and none of
//! their updates is lost.

use std::path::Path;
use std::time::{Duration, Instant};

use ugro_support::state::{StateError, StateLock};
use ugro_types::stage::{Emit, Stage, StageError};
use ugro_types::{Timestamp, Transition};

use crate::config::BreakerConfig;
use crate::engine::{Breaker, BreakerData, Counters, Operation};

/// The `format` of the state file's envelope.
pub const STATE_FORMAT: &str = "ugro-breaker";
/// The version of the state file's data this build reads and writes.
pub const STATE_VERSION: u32 = 1;

/// The breaker stage: [`Breaker`] plus its locked state file.
#[derive(Debug)]
pub struct BreakerStage {
    breaker: Breaker,
    lock: StateLock,
    dirty: bool,
    pending: bool,
    last_persist: Instant,
    persist_interval: Duration,
    /// Operator commands queued while this run held the lock (see `crate::ops`).
    queued: Vec<(String, Operation, Timestamp)>,
    last_ops_check: Instant,
}

/// How often (wall clock) a long run looks for queued operator commands: one stat.
const OPS_CHECK: Duration = Duration::from_millis(500);

fn fatal(e: StateError) -> StageError {
    StageError::Fatal {
        exit: e.exit(),
        message: e.to_string(),
    }
}

impl BreakerStage {
    /// Locks `state` (waiting for other runs to finish) and reads it. A corrupt or foreign
    /// file is an error (exit 78) and is left as it is.
    pub fn open(cfg: BreakerConfig, state: &Path) -> Result<Self, crate::Error> {
        Self::with_lock(cfg, StateLock::acquire(state)?)
    }

    /// Like [`BreakerStage::open`], but `None` at once when a running filter or ugro-watch
    /// holds the state (an operator command then queues instead of waiting).
    pub fn try_open(cfg: BreakerConfig, state: &Path) -> Result<Option<Self>, crate::Error> {
        StateLock::try_acquire(state)?
            .map(|lock| Self::with_lock(cfg, lock))
            .transpose()
    }

    fn with_lock(cfg: BreakerConfig, lock: StateLock) -> Result<Self, crate::Error> {
        let state = lock.path().to_owned();
        let state = state.as_path();
        let data: BreakerData = lock.read(STATE_FORMAT, STATE_VERSION)?.unwrap_or_default();
        ugro_support::state::check_nodes(state, data.nodes.keys().map(String::as_str))?;
        let persist_interval = cfg.persist_interval;
        // Commands queued for a run that has ended since: applied before the first record,
        // their transitions emitted then.
        let queued = crate::ops::take(state)?;
        Ok(BreakerStage {
            breaker: Breaker::new(cfg, data),
            lock,
            dirty: false,
            pending: false,
            last_persist: Instant::now(),
            persist_interval,
            queued,
            last_ops_check: Instant::now(),
        })
    }

    /// Applies commands taken from the journal where there is no stream for their
    /// transitions (an operator command, a run dropped before its first record).
    fn apply_queued_unseen(&mut self) {
        for (node, op, ts) in std::mem::take(&mut self.queued) {
            tracing::info!("{node}: applied queued {}", crate::ops::op_name(op));
            self.breaker.operate(&node, op, ts);
            self.dirty = true;
        }
    }

    /// Applies queued operator commands (checked at most every 500 ms), emitting their
    /// transitions into the stream and persisting at once.
    fn apply_queued(&mut self, emit: &mut Emit<'_>) -> Result<(), StageError> {
        if self.queued.is_empty() {
            if self.last_ops_check.elapsed() < OPS_CHECK {
                return Ok(());
            }
            self.last_ops_check = Instant::now();
            if !crate::ops::pending(self.lock.path()) {
                return Ok(());
            }
            self.queued = crate::ops::take(self.lock.path()).map_err(fatal)?;
        }
        for (node, op, ts) in std::mem::take(&mut self.queued) {
            tracing::info!("{node}: applying queued {}", crate::ops::op_name(op));
            if let Some(t) = self.breaker.operate(&node, op, ts) {
                let bytes = serde_json::to_vec(&t).map_err(|e| StageError::Write(e.into()))?;
                emit(&bytes)?;
            }
            self.dirty = true;
        }
        self.persist().map_err(fatal)
    }

    /// The breaker.
    pub fn breaker(&self) -> &Breaker {
        &self.breaker
    }

    /// Counters of this run.
    pub fn counters(&self) -> Counters {
        self.breaker.counters()
    }

    /// Writes the state now (atomically) if anything changed.
    pub fn persist(&mut self) -> Result<(), StateError> {
        if self.dirty {
            self.lock
                .write(STATE_FORMAT, STATE_VERSION, self.breaker.data())?;
            self.dirty = false;
            self.pending = false;
            self.last_persist = Instant::now();
        }
        Ok(())
    }

    /// Applies an operator command (time `now`, the wall clock for the CLI) and persists.
    pub fn operate(
        &mut self,
        node: &str,
        op: Operation,
        now: Timestamp,
    ) -> Result<Option<Transition>, crate::Error> {
        self.apply_queued_unseen();
        let t = self.breaker.operate(node, op, now);
        self.dirty = true;
        self.persist()?;
        Ok(t)
    }

    /// Persists after transitions, no more often than `persist_interval` of wall-clock time:
    /// a long run keeps its file current without an fsync per record.
    fn maybe_persist(&mut self) -> Result<(), StageError> {
        if self.breaker.take_transitioned() {
            self.pending = true;
        }
        if self.pending && self.last_persist.elapsed() >= self.persist_interval {
            self.persist().map_err(fatal)?;
        }
        Ok(())
    }
}

impl Stage for BreakerStage {
    fn process(&mut self, line: &str, emit: &mut Emit<'_>) -> Result<(), StageError> {
        self.apply_queued(emit)?;
        let r = self.breaker.process(line, emit);
        if !matches!(r, Err(StageError::Reject(_))) {
            self.dirty = true;
        }
        r?;
        self.maybe_persist()
    }

    fn tick(&mut self, now: Timestamp, emit: &mut Emit<'_>) -> Result<(), StageError> {
        self.apply_queued(emit)?;
        self.breaker.tick(now, emit)?;
        if self.dirty {
            self.pending = true;
        }
        self.maybe_persist()
    }

    fn persist(&mut self) -> Result<(), StageError> {
        self.dirty = true;
        BreakerStage::persist(self).map_err(fatal)
    }

    fn finish(&mut self, emit: &mut Emit<'_>) -> Result<(), StageError> {
        self.last_ops_check = Instant::now()
            .checked_sub(OPS_CHECK)
            .unwrap_or(self.last_ops_check);
        self.apply_queued(emit)?;
        let c = self.breaker.counters();
        tracing::info!(
            passed = c.passed,
            held = c.held,
            stale = c.stale,
            out_of_order = c.out_of_order,
            transitions = c.transitions,
            suppressed_trips = c.suppressed_trips,
            "end of input"
        );
        self.persist().map_err(fatal)
    }
}

impl Drop for BreakerStage {
    /// A run that stops early (closed stdout, an error) still keeps what it learned.
    fn drop(&mut self) {
        self.apply_queued_unseen();
        if let Err(e) = self.persist() {
            tracing::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stage_can_run_inside_a_watch_chain() {
        fn send<T: Send>() {}
        send::<BreakerStage>();
    }

    #[test]
    fn finish_persists_and_a_second_open_sees_the_counts() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("b.json");
        let line = r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n1","score":{"state":"critical"}}"#;
        {
            let mut s = BreakerStage::open(BreakerConfig::default(), &p).unwrap();
            let mut sink = |_: &[u8]| Ok(());
            s.process(line, &mut sink).unwrap();
            s.finish(&mut sink).unwrap();
        }
        let s = BreakerStage::open(BreakerConfig::default(), &p).unwrap();
        assert_eq!(s.breaker().data().nodes["n1"].consecutive_failures, 1);
    }
}
