//! What only a fleet-wide endpoint knows: firing alerts, each node's polls, and the watcher
//! itself. ugro-watch fills these in; the names are fixed here so that the dashboards and rules
//! in contrib/ can use them already.

use std::time::Duration;

use ugro_types::Timestamp;
use ugro_types::view::AlertView;

use crate::catalog::*;
use crate::expo::{Exposition, Labels};

fn secs(t: Timestamp) -> f64 {
    t.millis() as f64 / 1000.0
}

/// One firing alert, as `ugro_alert_firing` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiringAlert {
    /// `alertname` label.
    pub alertname: String,
    /// `severity` label (`critical`, `warning`, `info`, `none`).
    pub severity: String,
    /// `node` label; none for fleet-wide alerts (ClusterDegraded, Watchdog).
    pub node: Option<String>,
    /// `gpu` label, for GPU alerts.
    pub gpu: Option<String>,
    /// When the condition began (`startsAt`).
    pub since: Timestamp,
}

impl FiringAlert {
    /// The alert an `alert` record describes; `None` unless it is firing.
    pub fn from_record(a: &AlertView<'_>) -> Option<FiringAlert> {
        if a.status != ugro_types::AlertStatus::Firing {
            return None;
        }
        let node = a.label("node").filter(|n| *n != "*").map(str::to_owned);
        Some(FiringAlert {
            alertname: a.alertname().unwrap_or("").to_owned(),
            severity: a.label("severity").unwrap_or("").to_owned(),
            node,
            gpu: a.label("gpu").map(str::to_owned),
            since: a.starts_at,
        })
    }
}

/// The watcher's view of one node's polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PollStats {
    /// When the last poll finished.
    pub last: Option<Timestamp>,
    /// How long it took.
    pub duration: Option<Duration>,
    /// Polls that failed since the watcher started.
    pub failures: u64,
}

/// One of the watcher's queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    /// Its name (`label` value of `queue`).
    pub name: String,
    /// Records waiting.
    pub depth: u64,
    /// Capacity; none for a queue bounded by what it holds (one entry per node or file).
    pub capacity: Option<u64>,
}

/// One alert receiver's delivery worker (ugro-alert's `ReceiverStats`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeliveryStats {
    /// The receiver's name.
    pub receiver: String,
    /// The Alertmanager instance; none for other receivers.
    pub url: Option<String>,
    /// Notifications waiting in memory.
    pub queue_depth: u64,
    /// Notifications in the spool.
    pub spooled: u64,
    /// Accepted by the receiver.
    pub delivered: u64,
    /// Refused for good.
    pub failed: u64,
    /// Lost to a full queue or spool.
    pub dropped: u64,
    /// Replaced by a newer notification of the same group.
    pub superseded: u64,
    /// Failed attempts that will be retried.
    pub retries: u64,
}

/// The watcher's own health. Fields it does not know are left out of the output.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WatcherStats {
    /// Nodes configured.
    pub nodes: Option<u64>,
    /// The last full cycle's duration.
    pub cycle: Option<Duration>,
    /// Polls finished since start.
    pub polls: Option<u64>,
    /// Failed polls since start, by cause (`ssh`, `timeout`, `probe`).
    pub failures: Vec<(String, u64)>,
    /// The worst lateness of a poll started since the previous render.
    pub lateness: Option<Duration>,
    /// Polls in flight.
    pub in_flight: Option<u64>,
    /// The current concurrency limit.
    pub concurrency_limit: Option<u64>,
    /// Samples replaced in the pipeline's backlog, since start.
    pub superseded: Option<u64>,
    /// Whether the state cannot be written.
    pub state_unwritable: Option<bool>,
    /// Queues.
    pub queues: Vec<QueueStats>,
    /// Alert delivery, per receiver (with `--pipeline`).
    pub delivery: Vec<DeliveryStats>,
    /// How long the previous render of the endpoint's body took.
    pub render: Option<Duration>,
    /// Resident memory, bytes.
    pub rss_bytes: Option<u64>,
}

pub(crate) fn alerts<'a>(e: &mut Exposition, alerts: impl IntoIterator<Item = &'a FiringAlert>) {
    for a in alerts {
        let l = Labels::new()
            .with("alertname", &a.alertname)
            .with("severity", &a.severity)
            .and_opt("node", a.node.as_deref())
            .and_opt("gpu", a.gpu.as_deref());
        e.set(&ALERT_FIRING, &l, Some(1.0));
        e.set(&ALERT_SINCE, &l, Some(secs(a.since)));
    }
}

pub(crate) fn poll(e: &mut Exposition, node: &Labels, p: &PollStats) {
    e.set(&POLL_LAST, node, p.last.map(secs));
    e.set(&POLL_DURATION, node, p.duration.map(|d| d.as_secs_f64()));
    e.set(&POLL_FAILURES, node, Some(p.failures as f64));
}

pub(crate) fn watcher(e: &mut Exposition, w: &WatcherStats) {
    let none = Labels::new();
    let count = |n: Option<u64>| n.map(|n| n as f64);
    let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
    e.set(&WATCH_NODES, &none, count(w.nodes));
    e.set(&WATCH_CYCLE, &none, secs(w.cycle));
    e.set(&WATCH_POLLS, &none, count(w.polls));
    for (cause, n) in &w.failures {
        e.set(&WATCH_FAILURES, &none.and("cause", cause), Some(*n as f64));
    }
    e.set(&WATCH_LATENESS, &none, secs(w.lateness));
    e.set(&WATCH_IN_FLIGHT, &none, count(w.in_flight));
    e.set(&WATCH_CONCURRENCY, &none, count(w.concurrency_limit));
    e.set(&WATCH_SUPERSEDED, &none, count(w.superseded));
    e.flag(&WATCH_STATE_UNWRITABLE, &none, w.state_unwritable);
    for q in &w.queues {
        let l = none.and("queue", &q.name);
        e.set(&WATCH_QUEUE_DEPTH, &l, Some(q.depth as f64));
        e.set(&WATCH_QUEUE_CAPACITY, &l, count(q.capacity));
    }
    for d in &w.delivery {
        delivery(e, d);
    }
    e.set(&WATCH_RENDER, &none, secs(w.render));
    e.set(&WATCH_RSS, &none, count(w.rss_bytes));
}

fn delivery(e: &mut Exposition, d: &DeliveryStats) {
    let l = Labels::new()
        .and("receiver", &d.receiver)
        .and_opt("url", d.url.as_deref());
    e.set(&WATCH_DELIVERY_QUEUE, &l, Some(d.queue_depth as f64));
    e.set(&WATCH_DELIVERY_SPOOLED, &l, Some(d.spooled as f64));
    for (outcome, n) in [
        ("delivered", d.delivered),
        ("failed", d.failed),
        ("dropped", d.dropped),
        ("superseded", d.superseded),
        ("retried", d.retries),
    ] {
        e.set(&WATCH_DELIVERY, &l.and("outcome", outcome), Some(n as f64));
    }
}
