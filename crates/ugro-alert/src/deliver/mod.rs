//! Delivery, apart from the pipeline: every receiver other than stdout has its own worker
//! thread behind a bounded queue (Alertmanager: one per instance), with its own timeout,
//! retries, backoff and spool, so that a slow or failing receiver delays neither the stage nor
//! another receiver. The stage only queues; nothing it does waits on HTTP, a program, scontrol,
//! fsync or a full queue.
//!
//! - `lane`: the queue between the stage and a worker (supersede, bounded, never waits).
//! - `worker`: a receiver's worker (write-ahead spool, order per group, backoff, budget).
//! - `am`: an Alertmanager instance's worker.
//! - `spool`: the on-disk spool, safe to share between processes.
//! - `transport`: HTTP and programs, and the failure classes.
//! - `payload`, `slurm`: what each receiver is sent, and the Slurm drain logic.

mod am;
mod lane;
pub mod lease;
pub mod payload;
pub mod slurm;
pub mod spool;
pub mod transport;
mod worker;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use am::AmOutcome;
pub use payload::{am_payload, exec_env, slack_payload, webhook_payload};
pub use slurm::{MAX_REASON_BYTES, SlurmNode, drain_reason, parse_scontrol_show};
pub use spool::Spool;
pub use transport::{
    Exec, ExecOutput, Failure, RealTransport, Transport, http_failure, passes_env,
};
pub use worker::{EXEC_PERMANENT_EXIT, supersede};

use crate::config::{AlertConfig, ReceiverKind};
use crate::engine::{AmBatch, AmResult, Notification};
use lane::{Counters, Lane, Pushed};

/// How long past the delivery budget the end of a run waits for a worker still in an
/// attempt (each attempt's timeout is cut to the budget, so this is only a safety margin).
const GRACE: Duration = Duration::from_secs(2);

/// Alertmanager batches queued per instance before the next is refused (the engine makes at
/// most one per instance at a time, so this is never reached in practice).
const AM_QUEUE: usize = 16;

pub(crate) fn note(msg: &str) {
    let _ = writeln!(std::io::stderr().lock(), "ugro-alert: {msg}");
}

/// Delivery figures of one receiver (or one instance of an Alertmanager receiver), for the
/// watcher's `stats` records. Counts are since the stage was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReceiverStats {
    /// Receiver name.
    pub receiver: String,
    /// Alertmanager instance URL; absent for other receivers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Notifications waiting in memory: in the bounded queue (delivery.queue_size), or held
    /// by the worker where the spool could not be written.
    pub queue_depth: usize,
    /// Notifications in the spool waiting for delivery or a retry (this run's and those it
    /// took over from earlier or concurrent runs).
    pub spooled: usize,
    /// Notifications (Alertmanager: batches) the receiver accepted.
    pub delivered: u64,
    /// Refused for good (HTTP 4xx other than 408/429, a node Slurm does not know, an exec
    /// receiver's exit 65): reported once and not retried.
    pub failed: u64,
    /// Lost: the queue was full, or the spool past its bounds dropped its oldest entries.
    pub dropped: u64,
    /// Replaced by a newer notification of the same group before they were sent.
    pub superseded: u64,
    /// Failed attempts that will be retried.
    pub retries: u64,
    /// The last failure, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug)]
struct NotifyLane {
    lane: Arc<Lane<Notification>>,
    counters: Arc<Counters>,
}

#[derive(Debug)]
struct AmLane {
    receiver: String,
    url: String,
    lane: Arc<Lane<AmBatch>>,
    counters: Arc<Counters>,
}

/// The delivery workers of one stage.
#[derive(Debug)]
pub struct Dispatcher {
    receivers: BTreeMap<String, NotifyLane>,
    am: BTreeMap<String, AmLane>,
    am_results: Arc<am::AmResults>,
    spool: Option<Arc<Spool>>,
    origin: String,
    /// At the end of a run a full queue spills into the spool instead of dropping.
    spill: bool,
}

/// Workers are not joined: each exits on its own at the end of the run (or with the process).
fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new().name(name).spawn(f).map(drop)
}

impl Dispatcher {
    /// Starts a worker per receiver (per instance for Alertmanager). `spool_dir` is opened
    /// when a receiver needs it; `origin` (the state file) tells this run's groups apart from
    /// those of other runs sharing the spool.
    pub fn start(
        cfg: &AlertConfig,
        spool_dir: &Path,
        origin: String,
        transport: Arc<dyn Transport>,
    ) -> std::io::Result<Dispatcher> {
        let spooling = cfg.receivers.values().any(|r| {
            !matches!(
                r.kind,
                ReceiverKind::Stdout | ReceiverKind::Alertmanager { .. }
            )
        });
        let spool = if spooling {
            Some(Arc::new(Spool::open(spool_dir, &cfg.delivery)?))
        } else {
            None
        };
        let mut d = Dispatcher {
            receivers: BTreeMap::new(),
            am: BTreeMap::new(),
            am_results: Arc::default(),
            spool,
            origin,
            spill: false,
        };
        let all: BTreeMap<String, Arc<Counters>> = cfg
            .receivers
            .keys()
            .map(|k| (k.clone(), Arc::default()))
            .collect();
        let all = Arc::new(all);
        for r in cfg.receivers.values() {
            let counters = all.get(&r.name).cloned().unwrap_or_default();
            match &r.kind {
                ReceiverKind::Stdout => {}
                ReceiverKind::Alertmanager { urls, .. } => {
                    for url in urls {
                        d.start_am(cfg, &r.name, url, &transport)?;
                    }
                }
                _ => {
                    let lane = Arc::new(Lane::new(cfg.delivery.queue_size));
                    let ctx = worker::Ctx {
                        receiver: r.clone(),
                        delivery: cfg.delivery.clone(),
                        external_url: cfg.global.external_url.clone(),
                        transport: transport.clone(),
                        spool: d.spool.clone(),
                        origin: d.origin.clone(),
                        lane: lane.clone(),
                        counters: counters.clone(),
                        all: all.clone(),
                    };
                    let w = worker::Worker::new(ctx);
                    spawn(format!("deliver-{}", r.name), move || w.run())?;
                    d.receivers
                        .insert(r.name.clone(), NotifyLane { lane, counters });
                }
            }
        }
        d.warn_foreign(cfg);
        Ok(d)
    }

    fn start_am(
        &mut self,
        cfg: &AlertConfig,
        receiver: &str,
        url: &str,
        transport: &Arc<dyn Transport>,
    ) -> std::io::Result<()> {
        let lane = Arc::new(Lane::new(AM_QUEUE));
        let counters: Arc<Counters> = Arc::default();
        let w = am::AmWorker {
            url: url.to_owned(),
            timeout: cfg.delivery.timeout,
            transport: transport.clone(),
            lane: lane.clone(),
            counters: counters.clone(),
            results: self.am_results.clone(),
        };
        spawn(format!("deliver-{receiver}-am"), move || w.run())?;
        let key = format!("{receiver} {url}");
        self.am.insert(
            key,
            AmLane {
                receiver: receiver.to_owned(),
                url: url.to_owned(),
                lane,
                counters,
            },
        );
        Ok(())
    }

    /// A shared spool may hold entries for receivers this configuration does not have: they
    /// are left for a run that has them (or for the spool's bounds), never deleted here.
    fn warn_foreign(&self, cfg: &AlertConfig) {
        let Some(s) = &self.spool else { return };
        let mut foreign: BTreeMap<&str, usize> = BTreeMap::new();
        let list = s.list(None).unwrap_or_default();
        for (name, _, _) in &list {
            if let Some(r) = spool::receiver_of(name)
                && !cfg.receivers.contains_key(r)
            {
                *foreign.entry(r).or_default() += 1;
            }
        }
        for (r, n) in foreign {
            tracing::warn!(
                "spool {}: {n} entries for receiver {r}, which this configuration does not have; left alone",
                s.dir().display()
            );
        }
    }

    /// Queues a notification for its receiver's worker; never waits. A queued notification of
    /// the same group is superseded; a full queue drops this one (counted and logged).
    pub fn submit(&self, n: Notification) {
        let Some(l) = self.receivers.get(&n.receiver) else {
            tracing::error!(
                "receiver {}: no such receiver; notification dropped",
                n.receiver
            );
            return;
        };
        match l.lane.push(n, |a, b| a.group_key == b.group_key, supersede) {
            Pushed::Queued => {}
            Pushed::Superseded => Counters::add(&l.counters.superseded, 1),
            Pushed::Full(n) if self.spill => self.spill(l, &n),
            Pushed::Full(n) => {
                Counters::add(&l.counters.dropped, 1);
                tracing::error!(
                    "receiver {}: delivery queue full (delivery.queue_size): notification for group {} dropped",
                    n.receiver,
                    n.group_key
                );
            }
        }
    }

    /// Writes a notification to the spool from the caller's thread (end of a run only) and
    /// has the worker pick it up.
    fn spill(&self, l: &NotifyLane, n: &Notification) {
        match self.spool.as_ref().map(|s| s.write(&self.origin, n)) {
            Some(Ok(_)) => l.lane.rescan(),
            _ => {
                Counters::add(&l.counters.dropped, 1);
                tracing::error!(
                    "receiver {}: queue full and spool unwritable: notification for group {} lost",
                    n.receiver,
                    n.group_key
                );
            }
        }
    }

    /// From now on a full queue spills into the spool (written by the caller) rather than
    /// dropping: for the end of a run, which may wait on the disk.
    pub fn spill_when_full(&mut self) {
        self.spill = true;
    }

    /// Queues an Alertmanager batch for its instance's worker; never waits.
    pub fn submit_am(&self, b: AmBatch) {
        let Some(l) = self.am.get(&b.instance()) else {
            self.am_results.push(AmOutcome {
                batch: b,
                result: AmResult::Refused,
            });
            return;
        };
        if let Pushed::Full(b) = l.lane.push(b, |_, _| false, |_, b| b) {
            self.am_results.push(AmOutcome {
                batch: b,
                result: AmResult::Failed,
            });
        }
    }

    /// Alertmanager results that came in since the last call.
    pub fn am_outcomes(&self) -> Vec<AmOutcome> {
        if self.am.is_empty() {
            return Vec::new();
        }
        self.am_results.take()
    }

    /// Waits for an Alertmanager result until `until`; false if none came.
    pub fn wait_am(&self, until: Instant) -> bool {
        self.am_results.wait(until)
    }

    /// Waits until every worker has nothing it can do now (all delivered, or backing off);
    /// false if that did not happen within `timeout`.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        self.receivers
            .values()
            .all(|l| l.lane.wait_for(until, false))
            && self.am.values().all(|l| l.lane.wait_for(until, false))
    }

    /// The end of a run: attempts from now on are cut to `deadline`, after which workers
    /// leave what they hold in the spool.
    pub fn begin_finish(&self, deadline: Instant) {
        for l in self.receivers.values() {
            l.lane.stop_by(deadline);
        }
        for l in self.am.values() {
            l.lane.stop_by(deadline);
        }
    }

    /// Waits (until `deadline` and a short grace) for the receivers' workers to finish. A
    /// worker still busy then has its queue written to the spool here, so nothing is lost.
    pub fn end_finish(&mut self, deadline: Instant) {
        self.begin_finish(deadline);
        for l in self.am.values() {
            l.lane.stop();
        }
        for (name, l) in &self.receivers {
            if l.lane.wait_for(deadline + GRACE, true) {
                continue;
            }
            let (items, _, _) = l.lane.take();
            tracing::error!(
                "receiver {name}: still in an attempt past the delivery budget; {} queued notification(s) spooled by the stage",
                items.len()
            );
            for n in items {
                let r = self.spool.as_ref().map(|s| s.write(&self.origin, &n));
                if !matches!(r, Some(Ok(_))) {
                    Counters::add(&l.counters.dropped, 1);
                    tracing::error!(
                        "receiver {name}: notification for group {} lost",
                        n.group_key
                    );
                }
            }
        }
    }

    /// Per receiver (and Alertmanager instance) figures.
    pub fn stats(&self) -> Vec<ReceiverStats> {
        let get = Counters::get;
        let mk =
            |receiver: &str, instance: Option<String>, depth: usize, c: &Counters| ReceiverStats {
                receiver: receiver.to_owned(),
                instance,
                queue_depth: depth + c.unspooled.load(std::sync::atomic::Ordering::Relaxed),
                spooled: c.spooled.load(std::sync::atomic::Ordering::Relaxed),
                delivered: get(&c.delivered),
                failed: get(&c.failed),
                dropped: get(&c.dropped),
                superseded: get(&c.superseded),
                retries: get(&c.retries),
                last_error: c
                    .last_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone(),
            };
        let mut v: Vec<ReceiverStats> = self
            .receivers
            .iter()
            .map(|(name, l)| mk(name, None, l.lane.lock().queue.len(), &l.counters))
            .collect();
        v.extend(self.am.values().map(|l| {
            mk(
                &l.receiver,
                Some(l.url.clone()),
                l.lane.lock().queue.len(),
                &l.counters,
            )
        }));
        v
    }
}

impl Drop for Dispatcher {
    /// Without a finish (the stage dropped early), workers still write their queues to the
    /// spool before they go; they are given a moment for it, not joined.
    fn drop(&mut self) {
        let now = Instant::now();
        for l in self.receivers.values() {
            l.lane.stop_by(now);
            l.lane.stop();
        }
        for l in self.am.values() {
            l.lane.stop();
        }
        for l in self.receivers.values() {
            l.lane.wait_for(now + GRACE, true);
        }
    }
}
