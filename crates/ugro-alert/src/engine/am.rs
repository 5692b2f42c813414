//! Alertmanager receivers, as Prometheus's notifier feeds Alertmanager: every alert a route
//! sends to one goes to each of its instances, firing ones again every resend_interval with
//! `endsAt = now + 4 × resend_interval`. Delivery state is kept per instance: an instance that
//! missed a change (a resolve above all) gets it again until it accepts it, so that it does
//! not page FIRING after its peer paged RESOLVED; resolved alerts are re-sent for
//! [`AM_RESOLVED_RETENTION`] like Prometheus's resolvedRetention.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ugro_types::{Alert, Timestamp};

use super::{Engine, Entry, Out};
use crate::config::{AlertConfig, ReceiverKind, Route};

/// How long a resolved alert keeps being sent (Prometheus: 15 min).
pub const AM_RESOLVED_RETENTION: Duration = Duration::from_secs(15 * 60);

/// What an instance last accepted of an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AmAck {
    /// The alert's `am_version` then.
    pub version: u64,
    /// When that batch was made (record time).
    pub at: Timestamp,
}

/// A batch for one Alertmanager instance.
#[derive(Debug, Clone)]
pub struct AmBatch {
    /// Receiver name.
    pub receiver: String,
    /// The instance's base URL.
    pub url: String,
    /// Alerts, with endsAt set as Prometheus does.
    pub alerts: Vec<Alert>,
    /// Their fingerprints and versions, for [`Engine::am_result`].
    pub fps: Vec<(u64, u64)>,
    /// When the batch was made.
    pub ts: Timestamp,
}

impl AmBatch {
    /// The instance key, `<receiver> <url>`.
    pub fn instance(&self) -> String {
        instance_key(&self.receiver, &self.url)
    }
}

/// What became of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmResult {
    /// 2xx.
    Accepted,
    /// A 4xx other than 408/429: Alertmanager will never take these alerts as they are
    /// (Prometheus drops such a batch too); the firing ones go again at the next resend.
    Refused,
    /// Not reached, or 5xx: tried again at the next resend interval.
    Failed,
}

#[derive(Debug)]
pub(super) struct AmTarget {
    receiver: String,
    urls: Vec<String>,
    resend: Duration,
}

#[derive(Debug, Default)]
pub(super) struct AmInstance {
    in_flight: bool,
    retry_at: Option<Timestamp>,
}

fn instance_key(receiver: &str, url: &str) -> String {
    format!("{receiver} {url}")
}

pub(super) fn targets(cfg: &AlertConfig) -> Vec<AmTarget> {
    cfg.receivers
        .values()
        .filter_map(|r| match &r.kind {
            ReceiverKind::Alertmanager {
                urls,
                resend_interval,
            } => Some(AmTarget {
                receiver: r.name.clone(),
                urls: urls.clone(),
                resend: *resend_interval,
            }),
            _ => None,
        })
        .collect()
}

/// Whether instance `key` should be sent `e` now.
fn due(e: &Entry, key: &str, resend: Duration, now: Timestamp) -> bool {
    match e.am_acked.get(key) {
        None => true,
        Some(ack) if ack.version < e.am_version => true,
        Some(ack) => match e.ends_at {
            None => now.since(ack.at) >= resend,
            Some(r) => now.since(r) < AM_RESOLVED_RETENTION && now.since(ack.at) >= resend,
        },
    }
}

impl Engine {
    /// The Alertmanager targets (with their route keys) an alert goes to.
    fn am_routes<'a>(&'a self, e: &Entry) -> Vec<(&'a AmTarget, &'a Route)> {
        let mut routes = Vec::new();
        self.cfg.route.matching(&e.labels, &mut routes);
        routes
            .into_iter()
            .filter_map(|r| {
                self.am_targets
                    .iter()
                    .find(|t| t.receiver == r.receiver)
                    .map(|t| (t, r))
            })
            .collect()
    }

    /// Whether a resolved alert must stay in the store for Alertmanager instances: within the
    /// retention, or while an instance that has not accepted the resolve may still hold it
    /// firing (until the endsAt it last accepted).
    pub(super) fn am_keeps(&self, e: &Entry, now: Timestamp) -> bool {
        let Some(resolved) = e.ends_at else {
            return true;
        };
        if !self.has_am {
            return false;
        }
        let routes = self.am_routes(e);
        if routes.is_empty() {
            return false;
        }
        if now.since(resolved) < AM_RESOLVED_RETENTION {
            return true;
        }
        routes.iter().any(|(t, _)| {
            t.urls.iter().any(|u| {
                e.am_acked
                    .get(&instance_key(&t.receiver, u))
                    .is_some_and(|a| a.version < e.am_version && now < a.at.add(t.resend * 4))
            })
        })
    }

    /// Whether a batch is out and its result not yet in.
    pub fn am_in_flight(&self) -> bool {
        self.am_inst.values().any(|i| i.in_flight)
    }

    /// Makes the batches that are due now (after results came in, say).
    pub fn am_flush(&mut self, out: &mut Out) {
        if self.has_am {
            let now = self.st.now;
            self.am_pass(now, out);
        }
    }

    pub(super) fn am_pass(&mut self, now: Timestamp, out: &mut Out) {
        self.dirty_am = false;
        let mut batches: BTreeMap<String, AmBatch> = BTreeMap::new();
        let mut finished = Vec::new();
        for (fp, e) in &self.st.alerts {
            if e.groups.is_empty() && !self.am_keeps(e, now) {
                finished.push(*fp);
                continue;
            }
            for (t, r) in self.am_routes(e) {
                for url in &t.urls {
                    let key = instance_key(&t.receiver, url);
                    let inst = self.am_inst.get(&key);
                    let waiting =
                        inst.is_some_and(|i| i.in_flight || i.retry_at.is_some_and(|at| now < at));
                    if waiting || !due(e, &key, t.resend, now) {
                        continue;
                    }
                    let mut a = self.render(e, now, &t.receiver, &r.key);
                    // A firing alert is valid until now + 4 × resend interval; a resolved one
                    // carries its resolve time.
                    a.ends_at = Some(e.ends_at.unwrap_or_else(|| now.add(t.resend * 4)));
                    let b = batches.entry(key).or_insert_with(|| AmBatch {
                        receiver: t.receiver.clone(),
                        url: url.clone(),
                        alerts: Vec::new(),
                        fps: Vec::new(),
                        ts: now,
                    });
                    b.alerts.push(a);
                    b.fps.push((*fp, e.am_version));
                }
            }
        }
        for fp in finished {
            self.st.alerts.remove(&fp);
            self.changed = true;
        }
        for (key, b) in batches {
            self.am_inst.entry(key).or_default().in_flight = true;
            out.am.push(b);
        }
    }

    /// What became of a batch. Accepted (or refused for good): the instance has this state of
    /// each alert. Failed: the instance gets what it misses at the next resend interval.
    pub fn am_result(&mut self, b: &AmBatch, result: AmResult) {
        let key = b.instance();
        let resend = self
            .am_targets
            .iter()
            .find(|t| t.receiver == b.receiver)
            .map_or(Duration::from_secs(60), |t| t.resend);
        let inst = self.am_inst.entry(key.clone()).or_default();
        inst.in_flight = false;
        self.dirty_am = true;
        self.changed = true;
        if result == AmResult::Failed {
            inst.retry_at = Some(self.st.now.add(resend));
            return;
        }
        inst.retry_at = None;
        let now = self.st.now;
        let mut done: HashSet<u64> = HashSet::new();
        for (fp, version) in &b.fps {
            if let Some(e) = self.st.alerts.get_mut(fp) {
                let ack = AmAck {
                    version: *version,
                    at: b.ts,
                };
                let newer = e.am_acked.get(&key).is_none_or(|a| a.version <= *version);
                if newer {
                    e.am_acked.insert(key.clone(), ack);
                }
                if e.groups.is_empty() {
                    done.insert(*fp);
                }
            }
        }
        for fp in done {
            if self
                .st
                .alerts
                .get(&fp)
                .is_some_and(|e| !self.am_keeps(e, now))
            {
                self.st.alerts.remove(&fp);
            }
        }
    }
}
