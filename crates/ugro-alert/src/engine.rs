//! The alert lifecycle with Alertmanager's semantics: the alert store, routing into
//! aggregation groups, group_wait / group_interval / repeat_interval timers, silences,
//! inhibition and the notification log. Pure: time comes from the caller, notifications are
//! returned, nothing is delivered here.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ugro_types::{
    Alert, AlertStatus, BreakerState, HealthState, LabelSet, ReasonCode, Timestamp, fingerprint,
};

use crate::config::{AlertConfig, InhibitRule, ReceiverKind, Route};
use crate::matcher::{Matcher, Op, all_match};
use crate::rules::{self, AlertName, Input, Want};
use ugro_types::view::{FleetView, RecordView, TransitionView, WatcherStateView};

/// nflog entries older than this are forgotten (Alertmanager's default retention).
const NFLOG_RETENTION: Duration = Duration::from_secs(120 * 3600);
/// How often (record time) the cluster share, resolve timeouts and Alertmanager resends are
/// looked at.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// One alert in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    /// Identity.
    pub labels: LabelSet,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// When it began firing.
    pub starts_at: Timestamp,
    /// Set once resolved.
    pub ends_at: Option<Timestamp>,
    /// Last time a record confirmed it.
    pub updated_at: Timestamp,
    /// Group keys holding it.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Counts the changes Alertmanager instances must hear of (fired, re-fired, resolved).
    #[serde(default)]
    pub am_version: u64,
    /// Per Alertmanager instance (`<receiver> <url>`): what it last accepted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub am_acked: BTreeMap<String, am::AmAck>,
}

/// An aggregation group.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    /// Receiver.
    pub receiver: String,
    /// Group labels.
    pub labels: LabelSet,
    /// Fingerprints.
    pub alerts: BTreeSet<u64>,
    /// Next flush.
    pub next_flush: Timestamp,
    /// Never flushed yet (still in group_wait).
    pub pending: bool,
    /// group_interval, ms.
    pub group_interval_ms: u64,
    /// repeat_interval, ms.
    pub repeat_interval_ms: u64,
}

/// What was last notified for a group and receiver (Alertmanager's nflog entry).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NflogEntry {
    /// Fingerprints notified as firing.
    pub firing: BTreeSet<u64>,
    /// Fingerprints notified as resolved.
    pub resolved: BTreeSet<u64>,
    /// When.
    pub ts: Timestamp,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct NodeTrack {
    wants: Vec<Want>,
    last_ts: Timestamp,
    bad: bool,
    counted: bool,
    circuit_open: bool,
}

/// Everything that survives between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EngineState {
    alerts: BTreeMap<u64, Entry>,
    groups: BTreeMap<String, Group>,
    nflog: BTreeMap<String, NflogEntry>,
    nodes: HashMap<String, NodeTrack>,
    known: u32,
    bad: u32,
    fleet_at: Option<Timestamp>,
    fleet_message: Option<String>,
    now: Timestamp,
    /// Nodes a slurm_drain receiver was told to drain and not yet to resume: their resume
    /// must get through even while their alerts are muted.
    #[serde(default)]
    drained: BTreeSet<String>,
}

/// A notification for one receiver: the alerts of one group flush.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Notification {
    /// Unique id (also sent as `X-Ugro-Notification-Id`), stable across retries.
    pub id: String,
    /// Receiver name.
    pub receiver: String,
    /// Group key.
    #[serde(rename = "groupKey")]
    pub group_key: String,
    /// Group labels.
    #[serde(rename = "groupLabels")]
    pub group_labels: LabelSet,
    /// Alerts (firing first).
    pub alerts: Vec<Alert>,
    /// When the group was flushed (record time).
    pub ts: Timestamp,
}

impl Notification {
    /// `firing` if any alert fires.
    pub fn status(&self) -> AlertStatus {
        if self.alerts.iter().any(|a| a.status == AlertStatus::Firing) {
            AlertStatus::Firing
        } else {
            AlertStatus::Resolved
        }
    }
}

pub use am::{AM_RESOLVED_RETENTION, AmAck, AmBatch, AmResult};

/// Output of a step.
#[derive(Debug, Default)]
pub struct Out {
    /// Group notifications.
    pub notifications: Vec<Notification>,
    /// Alertmanager batches.
    pub am: Vec<AmBatch>,
}

impl Out {
    /// Nothing to deliver.
    pub fn is_empty(&self) -> bool {
        self.notifications.is_empty() && self.am.is_empty()
    }
}

/// The engine.
#[derive(Debug)]
pub struct Engine {
    cfg: AlertConfig,
    st: EngineState,
    inhibit: Vec<InhibitRule>,
    next_due: Timestamp,
    next_sweep: Timestamp,
    scratch: Vec<Want>,
    has_am: bool,
    dirty_am: bool,
    next_am: Timestamp,
    /// Alertmanager instances, from the configuration.
    am_targets: Vec<am::AmTarget>,
    /// Per instance: a batch in flight, and after a failed POST the time unsent changes wait
    /// for (the next resend) instead of being retried on every record.
    am_inst: HashMap<String, am::AmInstance>,
    watchdog_fp: Option<u64>,
    /// Set when something changed that the state file should record.
    pub changed: bool,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn after(t: Timestamp, ms: u64) -> Timestamp {
    t.add(Duration::from_millis(ms))
}

fn builtin_rules() -> Vec<InhibitRule> {
    let m = |n: &str, op: Op, v: &str| Matcher::new(n, op, v).ok();
    let mut out = Vec::new();
    if let (Some(s), Some(t1), Some(t2)) = (
        m("alertname", Op::Eq, "NodeUnreachable"),
        m("alertname", Op::NotRe, "NodeUnreachable|NodeCircuitOpen"),
        m("node", Op::Re, ".+"),
    ) {
        out.push(InhibitRule {
            source: vec![s],
            target: vec![t1, t2],
            equal: vec!["node".into()],
        });
    }
    if let (Some(s), Some(t)) = (
        m("alertname", Op::Eq, "ClusterDegraded"),
        m(
            "alertname",
            Op::Re,
            "NodeDegraded|NodeCritical|NodeUnreachable|NodeDataMissing|NodeCircuitOpen",
        ),
    ) {
        out.push(InhibitRule {
            source: vec![s],
            target: vec![t],
            equal: Vec::new(),
        });
    }
    out
}

impl Engine {
    /// An engine over `state` (from the state file, or default).
    pub fn new(cfg: AlertConfig, st: EngineState) -> Engine {
        let mut inhibit = Vec::new();
        if cfg.global.builtin_inhibit_rules {
            inhibit.extend(builtin_rules());
        }
        inhibit.extend(cfg.inhibit_rules.iter().cloned());
        let has_am = cfg.has_alertmanager();
        let mut e = Engine {
            cfg,
            st,
            inhibit,
            next_due: Timestamp(i64::MAX),
            next_sweep: Timestamp(i64::MIN),
            scratch: Vec::new(),
            has_am,
            dirty_am: false,
            next_am: Timestamp(i64::MIN),
            am_targets: Vec::new(),
            am_inst: HashMap::new(),
            watchdog_fp: None,
            changed: false,
        };
        e.am_targets = am::targets(&e.cfg);
        e.recompute_due();
        e
    }

    /// Replaces the silences (a long run re-reads its silences file when it changes).
    pub fn set_silences(&mut self, s: Vec<crate::config::Silence>) {
        self.cfg.silences = s;
    }

    /// The state to persist.
    pub fn state(&self) -> &EngineState {
        &self.st
    }

    /// The configuration.
    pub fn config(&self) -> &AlertConfig {
        &self.cfg
    }

    /// The current record time.
    pub fn now(&self) -> Timestamp {
        self.st.now
    }

    /// Alerts in the store (tests, status).
    pub fn alerts(&self) -> impl Iterator<Item = &Entry> {
        self.st.alerts.values()
    }

    fn recompute_due(&mut self) {
        self.next_due = self
            .st
            .groups
            .values()
            .map(|g| g.next_flush)
            .min()
            .unwrap_or(Timestamp(i64::MAX));
    }

    fn labels(&self, name: AlertName, node: Option<&str>, gpu: Option<u32>, sev: &str) -> LabelSet {
        let mut l = self.cfg.global.external_labels.clone();
        l.insert("alertname".into(), name.as_str().into());
        if let Some(n) = node {
            l.insert("node".into(), n.into());
        }
        if let Some(g) = gpu {
            l.insert("gpu".into(), g.to_string());
        }
        l.insert("severity".into(), sev.into());
        l
    }

    /// Applies one parsed record at its time and runs the timers that are due.
    pub fn observe(&mut self, input: &Input<'_>, out: &mut Out) {
        let rec = &input.record;
        let now = rec.ts.max(self.st.now);
        self.st.now = now;
        if self.cfg.global.watchdog
            && self
                .watchdog_fp
                .is_none_or(|fp| self.st.alerts.get(&fp).is_none_or(|e| e.ends_at.is_some()))
        {
            self.ensure_watchdog(now);
        }
        match (rec.kind, &input.transition, &input.fleet) {
            (ugro_types::Kind::Sample, _, _) => self.sample(rec, now),
            (_, Some(t), _) => self.transition(&rec.node, t, now),
            (_, _, Some(f)) => self.fleet(f, now),
            (ugro_types::Kind::Stats, _, _) => {
                if let Some(w) = &input.watcher {
                    self.watcher_state(w, now);
                }
            }
            _ => {}
        }
        self.advance(now, out);
    }

    fn ensure_watchdog(&mut self, now: Timestamp) {
        let l = self.labels(AlertName::Watchdog, None, None, rules::NONE);
        let fp = fingerprint(&l);
        self.watchdog_fp = Some(fp);
        if self.st.alerts.get(&fp).is_some_and(|e| e.ends_at.is_none()) {
            return;
        }
        let mut a = BTreeMap::new();
        a.insert(
            "summary".into(),
            "ugro-alert heartbeat: always firing".into(),
        );
        a.insert(
            "description".into(),
            "Fires as long as the alerting pipeline works; page when it stops arriving.".into(),
        );
        a.insert("action".into(), "none".into());
        self.fire(l, a, now);
    }

    fn sample(&mut self, rec: &RecordView<'_>, now: Timestamp) {
        let node: &str = &rec.node;
        let Some(score) = rec.score.as_ref() else {
            return;
        };
        let unreachable = rec.unreachable || score.has_reason(&ReasonCode::NodeUnreachable);
        let mut wants = std::mem::take(&mut self.scratch);
        let track = self.st.nodes.get(node);
        if unreachable || score.state == HealthState::Unknown {
            // No data: what the node had stays as it was (inhibited while unreachable), and the
            // missing data is an alert of its own.
            wants.clear();
            if let Some(t) = track {
                wants.extend(t.wants.iter().filter(|w| {
                    !matches!(
                        w.name,
                        AlertName::NodeUnreachable | AlertName::NodeDataMissing
                    )
                }));
            }
            wants.push(Want {
                name: if unreachable {
                    AlertName::NodeUnreachable
                } else {
                    AlertName::NodeDataMissing
                },
                gpu: None,
                critical: unreachable,
            });
            wants.sort_unstable();
        } else {
            rules::wants_for(score, &mut wants);
        }
        let bad = score.state != HealthState::Healthy || unreachable;
        let same = track.is_some_and(|t| t.wants == wants);
        if !same {
            let old = track.map(|t| t.wants.clone()).unwrap_or_default();
            for w in old.iter().filter(|w| !wants.contains(w)) {
                let l = self.labels(w.name, Some(node), w.gpu, w.severity());
                self.resolve(fingerprint(&l), now);
            }
            let runbook = self.cfg.global.runbook_url.clone();
            for w in &wants {
                let l = self.labels(w.name, Some(node), w.gpu, w.severity());
                let a = rules::sample_annotations(w, node, Some(score), runbook.as_deref());
                self.fire(l, a, now);
            }
        } else if !self.cfg.global.resolve_timeout.is_zero() {
            for w in &wants {
                let l = self.labels(w.name, Some(node), w.gpu, w.severity());
                if let Some(e) = self.st.alerts.get_mut(&fingerprint(&l)) {
                    e.updated_at = now;
                }
            }
        }
        let t = match self.st.nodes.get_mut(node) {
            Some(t) => t,
            None => self.st.nodes.entry(node.to_owned()).or_default(),
        };
        if !same {
            t.wants.clear();
            t.wants.extend_from_slice(&wants);
        }
        t.last_ts = now;
        let (was_counted, was_bad) = (t.counted, t.bad);
        t.counted = true;
        t.bad = bad;
        // Half-open is a trial, not a recovery: only closed (or no breaker) resolves it.
        let breaker_open = rec.breaker.as_ref().and_then(|b| match b.state {
            BreakerState::Open | BreakerState::ForcedOpen => Some(true),
            BreakerState::HalfOpen => None,
            _ => Some(false),
        });
        self.scratch = wants;
        if !was_counted {
            self.st.known += 1;
        }
        if (was_counted && was_bad) != bad || !was_counted {
            if was_counted && was_bad {
                self.st.bad -= 1;
            }
            if bad {
                self.st.bad += 1;
            }
            self.cluster(now);
        }
        match breaker_open {
            Some(false) => self.circuit(node, false, None, now),
            Some(true) => self.circuit(node, true, None, now),
            None => {}
        }
    }

    fn transition(&mut self, node: &str, t: &TransitionView<'_>, now: Timestamp) {
        let Some(to) = t.to else { return };
        match to {
            BreakerState::Open | BreakerState::ForcedOpen => {
                self.circuit(node, true, Some(t), now);
            }
            BreakerState::HalfOpen => {}
            BreakerState::Closed | BreakerState::Disabled | BreakerState::MetricsOnly => {
                self.circuit(node, false, None, now);
            }
        }
    }

    fn circuit(
        &mut self,
        node: &str,
        open: bool,
        rec: Option<&TransitionView<'_>>,
        now: Timestamp,
    ) {
        let was = self.st.nodes.get(node).is_some_and(|t| t.circuit_open);
        if was == open && rec.is_none() {
            return;
        }
        let l = self.labels(AlertName::NodeCircuitOpen, Some(node), None, rules::INFO);
        if open {
            let mut a = BTreeMap::new();
            a.insert("summary".into(), format!("circuit breaker open for {node}"));
            let mut desc = String::from("ugro-breaker holds this node's records back");
            if let Some(r) = rec {
                if let Some(x) = &r.reason {
                    desc.push_str(&format!("; reason {x}"));
                }
                if let Some(x) = &r.history {
                    desc.push_str(&format!("; {x}"));
                }
                if let Some(x) = r.next_trial_at {
                    desc.push_str(&format!("; next trial at {x}"));
                }
            }
            a.insert("description".into(), desc);
            let action = rec.and_then(|r| r.cause_action).unwrap_or_default();
            a.insert("action".into(), action.as_str().into());
            if let Some(b) = &self.cfg.global.runbook_url {
                a.insert(
                    "runbook_url".into(),
                    rules::runbook_url(b, "NodeCircuitOpen"),
                );
            }
            self.fire(l, a, now);
        } else {
            self.resolve(fingerprint(&l), now);
        }
        self.st
            .nodes
            .entry(node.to_owned())
            .or_default()
            .circuit_open = open;
    }

    fn fleet(&mut self, rec: &FleetView<'_>, now: Timestamp) {
        self.st.fleet_at = Some(now);
        let mut msg = rec
            .message
            .as_deref()
            .unwrap_or("fleet guard verdict")
            .to_owned();
        if let Some(f) = &rec.failing {
            msg.push_str(&format!(
                " ({} of {} nodes failing: {})",
                f.len(),
                rec.known_nodes.unwrap_or(0),
                f.iter()
                    .take(20)
                    .map(|s| s.as_ref())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        self.st.fleet_message = Some(msg);
        self.cluster(now);
    }

    /// WatcherStateUnwritable follows `state_unwritable` in ugro-watch's stats records.
    fn watcher_state(&mut self, rec: &WatcherStateView<'_>, now: Timestamp) {
        let Some(bad) = rec.state_unwritable else {
            return;
        };
        let l = self.labels(
            AlertName::WatcherStateUnwritable,
            None,
            None,
            rules::WARNING,
        );
        let fp = fingerprint(&l);
        let firing = self.st.alerts.get(&fp).is_some_and(|e| e.ends_at.is_none());
        if bad && !firing {
            let mut a = BTreeMap::new();
            a.insert(
                "summary".into(),
                "ugro-watch cannot write its state; monitoring goes on".into(),
            );
            let cause = rec.state_error.as_deref().unwrap_or("write failed");
            a.insert("description".into(), cause.to_owned());
            a.insert("action".into(), "none".into());
            self.fire(l, a, now);
        } else if !bad && firing {
            self.resolve(fp, now);
        }
    }

    fn cluster_condition(&self, now: Timestamp) -> bool {
        let g = &self.cfg.global;
        let share = self.st.known >= g.cluster_min_nodes.max(1)
            && f64::from(self.st.bad) > g.cluster_degraded_share * f64::from(self.st.known);
        let fleet = self
            .st
            .fleet_at
            .is_some_and(|t| now.since(t) <= g.cluster_window);
        share || fleet
    }

    fn cluster(&mut self, now: Timestamp) {
        let l = self.labels(AlertName::ClusterDegraded, None, None, rules::CRITICAL);
        let fp = fingerprint(&l);
        let firing = self.st.alerts.get(&fp).is_some_and(|e| e.ends_at.is_none());
        let want = self.cluster_condition(now);
        if want && !firing {
            let mut a = BTreeMap::new();
            let fleet = self
                .st
                .fleet_at
                .is_some_and(|t| now.since(t) <= self.cfg.global.cluster_window);
            let desc = if fleet {
                self.st.fleet_message.clone().unwrap_or_default()
            } else {
                let mut bad: Vec<&str> = self
                    .st
                    .nodes
                    .iter()
                    .filter(|(_, t)| t.counted && t.bad)
                    .map(|(n, _)| n.as_str())
                    .collect();
                bad.sort_unstable();
                let more = bad.len().saturating_sub(20);
                bad.truncate(20);
                format!(
                    "{} of {} nodes seen in the last {} are unhealthy: {}{}",
                    self.st.bad,
                    self.st.known,
                    humantime::format_duration(self.cfg.global.cluster_window),
                    bad.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                )
            };
            a.insert(
                "summary".into(),
                format!(
                    "cluster degraded: {} of {} nodes unhealthy",
                    self.st.bad, self.st.known
                ),
            );
            a.insert("description".into(), desc);
            a.insert("action".into(), "check_network".into());
            if let Some(b) = &self.cfg.global.runbook_url {
                a.insert(
                    "runbook_url".into(),
                    rules::runbook_url(b, "ClusterDegraded"),
                );
            }
            self.fire(l, a, now);
        } else if !want && firing {
            self.resolve(fp, now);
        }
    }

    fn fire(&mut self, labels: LabelSet, annotations: BTreeMap<String, String>, now: Timestamp) {
        self.changed = true;
        let fp = fingerprint(&labels);
        if let Some(e) = self.st.alerts.get_mut(&fp) {
            if e.ends_at.is_none() {
                e.annotations = annotations;
                e.updated_at = now;
                return;
            }
            e.starts_at = now;
            e.ends_at = None;
            e.updated_at = now;
            e.annotations = annotations;
            e.am_version += 1;
        } else {
            self.st.alerts.insert(
                fp,
                Entry {
                    labels,
                    annotations,
                    starts_at: now,
                    ends_at: None,
                    updated_at: now,
                    groups: Vec::new(),
                    am_version: 1,
                    am_acked: BTreeMap::new(),
                },
            );
        }
        self.dirty_am = true;
        self.route(fp, now);
    }

    fn resolve(&mut self, fp: u64, now: Timestamp) {
        if let Some(e) = self.st.alerts.get_mut(&fp)
            && e.ends_at.is_none()
        {
            e.ends_at = Some(now);
            e.am_version += 1;
            self.dirty_am = true;
            self.changed = true;
            // A resolved alert is (re)inserted into its groups like Alertmanager does.
            self.route(fp, now);
        }
    }

    fn route(&mut self, fp: u64, now: Timestamp) {
        let Some(e) = self.st.alerts.get(&fp) else {
            return;
        };
        let mut routes: Vec<&Route> = Vec::new();
        self.cfg.route.matching(&e.labels, &mut routes);
        let mut keys = Vec::new();
        for r in routes {
            if matches!(
                self.cfg.receivers.get(&r.receiver).map(|x| &x.kind),
                Some(ReceiverKind::Alertmanager { .. })
            ) {
                continue;
            }
            let glabels: LabelSet = if r.group_by_all {
                e.labels.clone()
            } else {
                r.group_by
                    .iter()
                    .filter_map(|k| e.labels.get(k).map(|v| (k.clone(), v.clone())))
                    .collect()
            };
            let key = format!(
                "{}:{{{}}}",
                r.key,
                glabels
                    .iter()
                    .map(|(k, v)| format!("{k}={v:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let g = self.st.groups.entry(key.clone()).or_insert_with(|| Group {
                receiver: r.receiver.clone(),
                labels: glabels,
                alerts: BTreeSet::new(),
                next_flush: now.add(r.group_wait),
                pending: true,
                group_interval_ms: ms(r.group_interval),
                repeat_interval_ms: ms(r.repeat_interval),
            });
            g.alerts.insert(fp);
            if g.next_flush < self.next_due {
                self.next_due = g.next_flush;
            }
            keys.push(key);
        }
        if let Some(e) = self.st.alerts.get_mut(&fp) {
            for k in keys {
                if !e.groups.contains(&k) {
                    e.groups.push(k);
                }
            }
        }
    }

    /// Lets time pass: flushes due groups, sweeps timeouts, re-sends to Alertmanager.
    pub fn advance(&mut self, now: Timestamp, out: &mut Out) {
        if now > self.st.now {
            self.st.now = now;
        }
        let now = self.st.now;
        if now >= self.next_sweep {
            self.next_sweep = now.add(SWEEP_EVERY);
            self.sweep(now);
        }
        if now >= self.next_due {
            self.flush(now, false, out);
        }
        if self.has_am && (self.dirty_am || now >= self.next_am) {
            self.next_am = now.add(SWEEP_EVERY);
            self.am_pass(now, out);
        }
    }

    /// End of input: with `flush_on_exit`, group_wait counts as elapsed for groups never
    /// notified; groups already notified keep their group_interval / repeat_interval timers
    /// (they are in the state file, so a later run fires them on schedule).
    pub fn finish(&mut self, out: &mut Out) {
        let now = self.st.now;
        self.sweep(now);
        let all = self.cfg.global.flush_on_exit;
        self.flush(now, all, out);
        if self.has_am {
            self.am_pass(now, out);
        }
        let cutoff = now.sub(NFLOG_RETENTION);
        self.st.nflog.retain(|_, e| e.ts >= cutoff);
    }

    fn sweep(&mut self, now: Timestamp) {
        // Nodes silent for longer than the window no longer count towards the cluster share.
        let window = self.cfg.global.cluster_window;
        let mut dropped = false;
        for t in self.st.nodes.values_mut() {
            if t.counted && now.since(t.last_ts) > window {
                t.counted = false;
                self.st.known -= 1;
                if t.bad {
                    self.st.bad -= 1;
                }
                dropped = true;
            }
        }
        let cl = self.labels(AlertName::ClusterDegraded, None, None, rules::CRITICAL);
        let firing = self
            .st
            .alerts
            .get(&fingerprint(&cl))
            .is_some_and(|e| e.ends_at.is_none());
        if dropped || firing {
            self.cluster(now);
        }
        let rt = self.cfg.global.resolve_timeout;
        if !rt.is_zero() {
            let stale: Vec<(u64, Timestamp, Option<String>)> = self
                .st
                .alerts
                .iter()
                .filter(|(_, e)| {
                    e.ends_at.is_none()
                        && now.since(e.updated_at) > rt
                        && !matches!(
                            e.labels.get("alertname").map(String::as_str),
                            Some("Watchdog" | "ClusterDegraded" | "NodeCircuitOpen")
                        )
                })
                .map(|(fp, e)| (*fp, e.updated_at.add(rt), e.labels.get("node").cloned()))
                .collect();
            for (fp, at, node) in stale {
                if let Some(e) = self.st.alerts.get_mut(&fp) {
                    e.ends_at = Some(at);
                    e.am_version += 1;
                    self.dirty_am = true;
                    self.changed = true;
                }
                self.route(fp, now);
                // Forget the condition so the node's next bad sample fires it again.
                if let Some(t) = node.and_then(|n| self.st.nodes.get_mut(&n)) {
                    t.wants.clear();
                }
            }
        }
    }

    fn muted(&self, e: &Entry, now: Timestamp, sources: &[HashSet<Vec<String>>]) -> bool {
        let silenced = self.cfg.silences.iter().any(|s| s.mutes(&e.labels, now));
        if silenced && !(e.ends_at.is_some() && self.cfg.global.notify_resolved_when_silenced) {
            return true;
        }
        self.inhibit.iter().zip(sources).any(|(r, src)| {
            all_match(&r.target, &e.labels) && {
                let key: Vec<String> = r
                    .equal
                    .iter()
                    .map(|k| e.labels.get(k).cloned().unwrap_or_default())
                    .collect();
                // An alert that matches both sides does not inhibit itself (Alertmanager).
                src.contains(&key) && !(all_match(&r.source, &e.labels) && self.single_source(r, e))
            }
        })
    }

    fn single_source(&self, r: &InhibitRule, e: &Entry) -> bool {
        let key: Vec<&str> = r
            .equal
            .iter()
            .map(|k| e.labels.get(k).map_or("", String::as_str))
            .collect();
        self.st
            .alerts
            .values()
            .filter(|s| s.ends_at.is_none() && all_match(&r.source, &s.labels))
            .filter(|s| {
                r.equal
                    .iter()
                    .zip(&key)
                    .all(|(k, v)| s.labels.get(k).map_or("", String::as_str) == *v)
            })
            .count()
            <= 1
    }

    fn inhibit_sources(&self) -> Vec<HashSet<Vec<String>>> {
        self.inhibit
            .iter()
            .map(|r| {
                self.st
                    .alerts
                    .values()
                    .filter(|s| s.ends_at.is_none() && all_match(&r.source, &s.labels))
                    .map(|s| {
                        r.equal
                            .iter()
                            .map(|k| s.labels.get(k).cloned().unwrap_or_default())
                            .collect()
                    })
                    .collect()
            })
            .collect()
    }

    fn flush(&mut self, now: Timestamp, all: bool, out: &mut Out) {
        let due: Vec<String> = self
            .st
            .groups
            .iter()
            .filter(|(_, g)| (all && g.pending) || g.next_flush <= now)
            .map(|(k, _)| k.clone())
            .collect();
        if due.is_empty() {
            self.recompute_due();
            return;
        }
        let sources = self.inhibit_sources();
        for key in due {
            self.flush_group(&key, now, &sources, out);
        }
        self.recompute_due();
    }

    fn flush_group(
        &mut self,
        key: &str,
        now: Timestamp,
        sources: &[HashSet<Vec<String>>],
        out: &mut Out,
    ) {
        let Some(g) = self.st.groups.get(key) else {
            return;
        };
        let receiver = g.receiver.clone();
        let fps: Vec<u64> = g.alerts.iter().copied().collect();
        let repeat = Duration::from_millis(g.repeat_interval_ms);
        let group_labels = g.labels.clone();
        let mut firing = BTreeSet::new();
        let mut resolved = BTreeSet::new();
        let mut alerts = Vec::new();
        let slurm = matches!(
            self.cfg.receivers.get(&receiver).map(|r| &r.kind),
            Some(ReceiverKind::SlurmDrain { .. })
        );
        for fp in &fps {
            let Some(e) = self.st.alerts.get(fp) else {
                continue;
            };
            // Muting stops ugro from draining, never from undoing its own drain: a node
            // left drained after its critical condition cleared is an outage of its own.
            if self.muted(e, now, sources) && !(slurm && self.resume_due(e)) {
                continue;
            }
            // Nor does a node resume while another critical alert of it (muted or not) fires.
            if slurm
                && e.ends_at.is_some()
                && is_critical(&e.labels)
                && e.labels
                    .get("node")
                    .is_some_and(|n| self.critical_firing(n))
            {
                continue;
            }
            if e.ends_at.is_some() {
                resolved.insert(*fp);
            } else {
                firing.insert(*fp);
            }
            alerts.push((*fp, e));
        }
        let send_resolved = self
            .cfg
            .receivers
            .get(&receiver)
            .is_none_or(|r| r.send_resolved);
        let nkey = format!("{key}\u{1f}{receiver}");
        if !alerts.is_empty() {
            let entry = self.st.nflog.get(&nkey);
            if needs_update(entry, &firing, &resolved, send_resolved, repeat, now) {
                let mut list: Vec<Alert> = alerts
                    .iter()
                    .filter(|(_, e)| send_resolved || e.ends_at.is_none())
                    .map(|(_, e)| self.render(e, now, &receiver, key))
                    .collect();
                list.sort_by_key(|a| (a.status != AlertStatus::Firing, a.labels.clone()));
                if slurm {
                    self.note_drains(&list);
                }
                if !list.is_empty() {
                    let id = format!(
                        "{:016x}",
                        fingerprint(&LabelSet::from([
                            ("g".to_owned(), key.to_owned()),
                            ("r".to_owned(), receiver.clone()),
                            ("t".to_owned(), now.0.to_string()),
                            ("f".to_owned(), format!("{firing:?}{resolved:?}")),
                        ]))
                    );
                    out.notifications.push(Notification {
                        id,
                        receiver: receiver.clone(),
                        group_key: key.to_owned(),
                        group_labels,
                        alerts: list,
                        ts: now,
                    });
                }
                self.st.nflog.insert(
                    nkey,
                    NflogEntry {
                        firing,
                        resolved,
                        ts: now,
                    },
                );
                self.changed = true;
            }
        }
        // Resolved alerts leave the group once flushed, notified or not (Alertmanager's
        // DeleteIfNotModified); a muted resolved alert is therefore never notified.
        let mut remove = Vec::new();
        for fp in &fps {
            if self.st.alerts.get(fp).is_none_or(|e| e.ends_at.is_some()) {
                remove.push(*fp);
            }
        }
        for fp in remove {
            if let Some(g) = self.st.groups.get_mut(key) {
                g.alerts.remove(&fp);
            }
            if let Some(e) = self.st.alerts.get_mut(&fp) {
                e.groups.retain(|k| k != key);
            }
            if self
                .st
                .alerts
                .get(&fp)
                .is_some_and(|e| e.groups.is_empty() && !self.am_keeps(e, now))
            {
                self.st.alerts.remove(&fp);
            }
        }
        if let Some(g) = self.st.groups.get_mut(key) {
            if g.alerts.is_empty() {
                self.st.groups.remove(key);
            } else {
                g.pending = false;
                g.next_flush = after(now, g.group_interval_ms);
            }
        }
    }

    /// A resolved critical alert of a node ugro drained, with no critical alert of that node
    /// (muted or not) still firing.
    fn resume_due(&self, e: &Entry) -> bool {
        let Some(node) = e.labels.get("node") else {
            return false;
        };
        e.ends_at.is_some()
            && is_critical(&e.labels)
            && self.st.drained.contains(node)
            && !self.critical_firing(node)
    }

    fn critical_firing(&self, node: &str) -> bool {
        self.st.alerts.values().any(|o| {
            o.ends_at.is_none()
                && is_critical(&o.labels)
                && o.labels.get("node").map(String::as_str) == Some(node)
        })
    }

    /// Keeps the drained set in step with what a slurm_drain receiver is told: a node with a
    /// firing critical alert is drained, one with only resolved critical alerts is resumed.
    fn note_drains(&mut self, list: &[Alert]) {
        let mut firing: BTreeSet<&str> = BTreeSet::new();
        let mut resolved: BTreeSet<&str> = BTreeSet::new();
        for a in list.iter().filter(|a| is_critical(&a.labels)) {
            let Some(node) = a.labels.get("node") else {
                continue;
            };
            if a.status == AlertStatus::Firing {
                firing.insert(node);
            } else {
                resolved.insert(node);
            }
        }
        for n in &firing {
            self.st.drained.insert((*n).to_owned());
        }
        for n in resolved.difference(&firing) {
            self.st.drained.remove(*n);
        }
    }

    fn render(&self, e: &Entry, now: Timestamp, receiver: &str, key: &str) -> Alert {
        let status = if e.ends_at.is_some() {
            AlertStatus::Resolved
        } else {
            AlertStatus::Firing
        };
        let mut a = Alert::new(now, status, e.labels.clone(), e.starts_at);
        a.annotations = e.annotations.clone();
        a.ends_at = e.ends_at;
        if !self.cfg.global.external_url.is_empty() {
            a.generator_url = Some(self.cfg.global.external_url.clone());
        }
        a.receiver = Some(receiver.to_owned());
        a.group_key = Some(key.to_owned());
        a
    }
}

fn is_critical(l: &LabelSet) -> bool {
    l.get("severity").map(String::as_str) == Some(rules::CRITICAL)
}

/// Alertmanager's DedupStage.needsUpdate.
fn needs_update(
    entry: Option<&NflogEntry>,
    firing: &BTreeSet<u64>,
    resolved: &BTreeSet<u64>,
    send_resolved: bool,
    repeat: Duration,
    now: Timestamp,
) -> bool {
    let Some(e) = entry else {
        return !firing.is_empty();
    };
    if !firing.is_subset(&e.firing) {
        return true;
    }
    if firing.is_empty() {
        return !e.firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(&e.resolved) {
        return true;
    }
    now.since(e.ts) >= repeat
}

mod am;
mod remedy;
#[cfg(test)]
mod tests;

pub use remedy::RemedyAlert;
