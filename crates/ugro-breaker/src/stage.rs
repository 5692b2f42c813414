//! The breaker as a pipeline stage with its state file: the lock is taken when the stage is
//! opened and held until it is dropped, so concurrent runs on one file serialise and none of
//! their updates is lost.

use std::path::Path;
use std::time::{Duration, Instant};

use ugro_types::stage::{Emit, Stage, StageError};
use ugro_types::state::{StateError, StateLock};
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
}

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
        let lock = StateLock::acquire(state)?;
        let data: BreakerData = lock.read(STATE_FORMAT, STATE_VERSION)?.unwrap_or_default();
        let persist_interval = cfg.persist_interval;
        Ok(BreakerStage {
            breaker: Breaker::new(cfg, data),
            lock,
            dirty: false,
            pending: false,
            last_persist: Instant::now(),
            persist_interval,
        })
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
        let r = self.breaker.process(line, emit);
        if !matches!(r, Err(StageError::Reject(_))) {
            self.dirty = true;
        }
        r?;
        self.maybe_persist()
    }

    fn tick(&mut self, now: Timestamp, emit: &mut Emit<'_>) -> Result<(), StageError> {
        self.breaker.tick(now, emit)?;
        if self.dirty {
            self.pending = true;
        }
        self.maybe_persist()
    }

    fn finish(&mut self, _emit: &mut Emit<'_>) -> Result<(), StageError> {
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
