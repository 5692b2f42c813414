//! One worker thread per Alertmanager instance: a hung or unreachable instance delays neither
//! its peers nor any other receiver. Each batch is tried once; what an instance missed is in
//! the engine's per-instance state and goes again at the next resend interval, as
//! Prometheus's notifier does.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::lane::{Counters, Lane};
use super::payload::am_payload;
use super::transport::{Failure, Transport};
use crate::engine::{AmBatch, AmResult};

/// A batch and what became of it, for [`crate::engine::Engine::am_result`].
#[derive(Debug)]
pub struct AmOutcome {
    /// The batch.
    pub batch: AmBatch,
    /// Its result.
    pub result: AmResult,
}

/// Results waiting for the stage to hand them to the engine.
#[derive(Debug, Default)]
pub(crate) struct AmResults {
    list: Mutex<Vec<AmOutcome>>,
    cv: Condvar,
}

impl AmResults {
    pub fn push(&self, o: AmOutcome) {
        self.list
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(o);
        self.cv.notify_all();
    }

    pub fn take(&self) -> Vec<AmOutcome> {
        std::mem::take(
            &mut *self
                .list
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Waits for at least one result, until `until`; false if none came.
    pub fn wait(&self, until: Instant) -> bool {
        let mut l = self
            .list
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        loop {
            if !l.is_empty() {
                return true;
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            l = match self.cv.wait_timeout(l, until - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

#[derive(Debug)]
pub(crate) struct AmWorker {
    pub url: String,
    pub timeout: Duration,
    pub transport: Arc<dyn Transport>,
    pub lane: Arc<Lane<AmBatch>>,
    pub counters: Arc<Counters>,
    pub results: Arc<AmResults>,
}

impl AmWorker {
    pub fn run(self) {
        loop {
            let (batches, deadline, stop) = self.lane.take();
            for b in batches {
                self.lane.set_busy();
                let result = self.post(&b, deadline);
                self.results.push(AmOutcome { batch: b, result });
            }
            if stop {
                break;
            }
            self.lane.wait(deadline, None);
        }
        self.lane.set_done();
    }

    fn post(&self, b: &AmBatch, deadline: Option<Instant>) -> AmResult {
        let c = &self.counters;
        let left = deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        });
        if left < Duration::from_millis(100) {
            return AmResult::Failed;
        }
        let body = match serde_json::to_vec(&am_payload(&b.alerts)) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("alertmanager payload: {e}");
                return AmResult::Refused;
            }
        };
        let url = format!("{}/api/v2/alerts", self.url.trim_end_matches('/'));
        match self
            .transport
            .post(&url, &[], &body, self.timeout.min(left))
        {
            Ok(()) => {
                Counters::add(&c.delivered, 1);
                AmResult::Accepted
            }
            Err(Failure::Permanent(m)) => {
                tracing::error!(
                    "alertmanager {}: refused {} alerts for good: {m}",
                    self.url,
                    b.alerts.len()
                );
                c.error(&m);
                Counters::add(&c.failed, 1);
                AmResult::Refused
            }
            Err(Failure::Retry(m)) => {
                tracing::error!(
                    "alertmanager {}: {} alerts not delivered ({m}); sent again at the next resend interval",
                    self.url,
                    b.alerts.len()
                );
                c.error(&m);
                Counters::add(&c.retries, 1);
                AmResult::Failed
            }
        }
    }
}
