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
use crate::flap::Flap;
use crate::matcher::{Matcher, Op, all_match};
use crate::pending::{self, Change, Cond};
use crate::rules::{self, AlertName, Input, Want};
use ugro_types::view::{FleetView, RecordView, ScoreView, TransitionView, WatcherStateView};

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
    /// A notification of it went out (else everything in it was muted so far: it is flushed
    /// again as soon as an inhibiting alert resolves, not a group_interval later).
    #[serde(default)]
    pub notified: bool,
    /// Flushed at once when all its alerts resolved (the route's `resolved_at_once`).
    #[serde(default)]
    pub resolved_at_once: bool,
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
    /// Its conditions, pending or active (`for`, `keep_firing_for`).
    #[serde(default)]
    conds: Vec<Cond>,
    /// State files of version 1 kept the firing conditions here; adopted as active ones.
    #[serde(default, skip_serializing)]
    wants: Vec<Want>,
    last_ts: Timestamp,
    /// Its latest sample is not healthy (the cluster share ClusterDegraded waits on).
    bad: bool,
    /// A node-level alert of it is active (the cluster share ClusterDegraded fires on).
    #[serde(default)]
    confirmed: bool,
    counted: bool,
    circuit_open: bool,
    /// Flap detection.
    #[serde(default)]
    flap: Flap,
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
    #[serde(default)]
    confirmed: u32,
    /// More than the cluster share is unhealthy (or ClusterDegraded fires): node alerts the
    /// built-in ClusterDegraded rule covers are held back while it decides.
    #[serde(default)]
    cluster_hold: bool,
    /// When the next sweep is due (persisted, so cron runs sweep when a stream would).
    #[serde(default)]
    next_sweep: Timestamp,
    fleet_at: Option<Timestamp>,
    fleet_message: Option<String>,
    now: Timestamp,
    /// Nodes a slurm_drain receiver was told to drain and not yet to resume: their resume
    /// must get through even while their alerts are muted.
    #[serde(default)]
    drained: BTreeSet<String>,
}

impl EngineState {
    /// Every node name the state holds (tracked and drained), for the check on load: these
    /// names reach labels and `scontrol` arguments.
    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().chain(&self.drained).map(String::as_str)
    }
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
    scratch: Vec<Want>,
    changes: Vec<Change>,
    /// An inhibiting alert resolved: groups never notified are flushed again.
    rearm: bool,
    /// Index in `inhibit` of the built-in ClusterDegraded rule.
    cluster_rule: Option<usize>,
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

/// The labels of an alert.
fn labels_of(
    cfg: &AlertConfig,
    name: AlertName,
    node: Option<&str>,
    gpu: Option<u32>,
    sev: &str,
) -> LabelSet {
    let mut l = cfg.global.external_labels.clone();
    l.insert("alertname".into(), name.as_str().into());
    if let Some(n) = node {
        l.insert("node".into(), n.into());
    }
    if let Some(g) = gpu {
        l.insert("gpu".into(), g.to_string());
    }
    l.insert("severity".into(), sev.into());
    // Predictions route apart from present faults: `matchers: [predicted="true"]`.
    if name == AlertName::GpuFailurePredicted {
        l.insert("predicted".into(), "true".into());
    }
    l
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
            "NodeDegraded|NodeCritical|NodeUnreachable|NodeDataMissing|NodeCircuitOpen|NodeFlapping",
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
        let mut cluster_rule = None;
        if cfg.global.builtin_inhibit_rules {
            inhibit.extend(builtin_rules());
            cluster_rule = inhibit.iter().position(|r| {
                r.source
                    .iter()
                    .any(|m| m.to_string() == "alertname=\"ClusterDegraded\"")
            });
        }
        let mut st = st;
        adopt_version_1(&mut st);
        inhibit.extend(cfg.inhibit_rules.iter().cloned());
        let has_am = cfg.has_alertmanager();
        let mut e = Engine {
            cfg,
            st,
            inhibit,
            next_due: Timestamp(i64::MAX),
            scratch: Vec::new(),
            changes: Vec::new(),
            rearm: false,
            cluster_rule,
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
        labels_of(&self.cfg, name, node, gpu, sev)
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
        // No data: what the node had stays as it was (inhibited while unreachable), and the
        // missing data is a condition of its own.
        let no_data = unreachable || score.state == HealthState::Unknown;
        let mut present = std::mem::take(&mut self.scratch);
        if no_data {
            present.clear();
            present.push(Want {
                name: if unreachable {
                    AlertName::NodeUnreachable
                } else {
                    AlertName::NodeDataMissing
                },
                gpu: None,
                critical: unreachable,
            });
        } else {
            rules::wants_for(score, &mut present);
        }
        if !self.st.nodes.contains_key(node) {
            self.st.nodes.insert(node.to_owned(), NodeTrack::default());
        }
        let mut changes = std::mem::take(&mut self.changes);
        changes.clear();
        let (flap_change, confirmed) = {
            let cfg = &self.cfg;
            let Some(t) = self.st.nodes.get_mut(node) else {
                return;
            };
            if !no_data {
                hold_xids(&t.conds, score, &mut present);
            }
            let frozen = |w: &Want| {
                no_data
                    && !matches!(
                        w.name,
                        AlertName::NodeUnreachable | AlertName::NodeDataMissing
                    )
            };
            pending::update(&mut t.conds, &present, frozen, |n| cfg.rules.timing(n), now);
            if cfg.global.builtin_inhibit_rules
                && !no_data
                && present
                    .iter()
                    .any(|w| w.name.family() == AlertName::NodeCritical)
            {
                pending::cover(&mut t.conds, &present, rules::named_by(score).as_deref());
            }
            let hard = pending::hard_state(&t.conds);
            let flap = if cfg.flap.enabled {
                t.flap.record(hard, &cfg.flap)
            } else {
                None
            };
            pending::reconcile(&mut t.conds, t.flap.flapping, &mut changes);
            (flap, hard != b'O')
        };
        self.apply(node, score, &changes, now);
        self.changes = changes;
        if let Some(on) = flap_change {
            self.flapping(node, on, now);
        }
        if !self.cfg.global.resolve_timeout.is_zero() {
            self.confirm(node, &present, now);
        }
        // Predictions alone are not a present fault: such a node is not unhealthy.
        let bad = no_data
            || present
                .iter()
                .any(|w| w.name.family() == AlertName::NodeCritical);
        self.scratch = present;
        self.count(node, bad, confirmed, now);
        // Half-open is a trial, not a recovery: only closed (or no breaker) resolves it.
        let breaker_open = rec.breaker.as_ref().and_then(|b| match b.state {
            BreakerState::Open | BreakerState::ForcedOpen => Some(true),
            BreakerState::HalfOpen => None,
            _ => Some(false),
        });
        match breaker_open {
            Some(false) => self.circuit(node, false, None, now),
            Some(true) => self.circuit(node, true, None, now),
            None => {}
        }
    }

    /// Fires and resolves what a node's conditions changed.
    fn apply(&mut self, node: &str, score: &ScoreView<'_>, changes: &[Change], now: Timestamp) {
        let runbook = self.cfg.global.runbook_url.clone();
        for c in changes {
            match *c {
                Change::Resolve(w) => {
                    let l = self.labels(w.name, Some(node), w.gpu, w.severity());
                    self.resolve(fingerprint(&l), now);
                }
                Change::Fire(w) => {
                    let l = self.labels(w.name, Some(node), w.gpu, w.severity());
                    let a = rules::sample_annotations(&w, node, Some(score), runbook.as_deref());
                    self.fire(l, a, now);
                }
            }
        }
    }

    /// `resolve_timeout`: a sample that still asks for a firing alert confirms it.
    fn confirm(&mut self, node: &str, present: &[Want], now: Timestamp) {
        let Some(t) = self.st.nodes.get(node) else {
            return;
        };
        let fired: Vec<Want> = t
            .conds
            .iter()
            .filter_map(|c| c.fired)
            .filter(|f| {
                present
                    .iter()
                    .any(|p| p.name.family() == f.name.family() && p.gpu == f.gpu)
            })
            .collect();
        for w in fired {
            let l = self.labels(w.name, Some(node), w.gpu, w.severity());
            if let Some(e) = self.st.alerts.get_mut(&fingerprint(&l)) {
                e.updated_at = now;
            }
        }
    }

    /// Keeps the cluster counts (nodes seen, unhealthy, with a node alert active) in step
    /// with a node's latest sample.
    fn count(&mut self, node: &str, bad: bool, confirmed: bool, now: Timestamp) {
        let Some(t) = self.st.nodes.get_mut(node) else {
            return;
        };
        t.last_ts = now;
        let (was_counted, was_bad, was_confirmed) = (t.counted, t.bad, t.confirmed);
        t.counted = true;
        t.bad = bad;
        t.confirmed = confirmed;
        if was_counted && was_bad == bad && was_confirmed == confirmed {
            return;
        }
        if was_counted {
            self.st.bad -= u32::from(was_bad);
            self.st.confirmed -= u32::from(was_confirmed);
        } else {
            self.st.known += 1;
        }
        self.st.bad += u32::from(bad);
        self.st.confirmed += u32::from(confirmed);
        self.cluster(now);
    }

    /// NodeFlapping follows the node's flap detection.
    fn flapping(&mut self, node: &str, on: bool, now: Timestamp) {
        let l = self.labels(AlertName::NodeFlapping, Some(node), None, rules::WARNING);
        if !on {
            self.resolve(fingerprint(&l), now);
            return;
        }
        let f = &self.cfg.flap;
        let (n, low, high) = (f.samples, f.low_threshold, f.high_threshold);
        let (pct, history) = self
            .st
            .nodes
            .get(node)
            .map(|t| (t.flap.percent(n), t.flap.history.clone()))
            .unwrap_or_default();
        let mut a = BTreeMap::new();
        a.insert(
            "summary".into(),
            format!("{node} is flapping: {pct:.0}% state changes over its last {n} samples"),
        );
        a.insert(
            "description".into(),
            format!(
                "{pct:.1}% >= {high}%; its warning alerts stay as they are until it falls to {low}%, its critical ones still fire and resolve (states, oldest first: {history}; O ok, W degraded, C critical, U unreachable or no data)"
            ),
        );
        a.insert(
            "action".into(),
            ugro_types::Action::CheckHost.as_str().into(),
        );
        if let Some(b) = &self.cfg.global.runbook_url {
            a.insert("runbook_url".into(), rules::runbook_url(b, "NodeFlapping"));
        }
        let fp = fingerprint(&l);
        self.fire(l, a, now);
        // It replaces the node's warning pages, so it is not held for group_interval.
        self.due_now(fp, false, now);
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
                rec.failing_count
                    .map_or(f.len(), |n| usize::try_from(n).unwrap_or(usize::MAX)),
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

    /// ClusterDegraded: fires when more than the cluster share of the nodes seen have a
    /// node alert active (their `for` held), or on a fleet record; while more than the share
    /// are merely unhealthy it is pending, and the node alerts it covers are held back, so a
    /// fleet-wide event pages once. Resolves when neither share is exceeded any more.
    fn cluster(&mut self, now: Timestamp) {
        let g = &self.cfg.global;
        let known = self.st.known;
        let enough = known >= g.cluster_min_nodes.max(1);
        let share = g.cluster_degraded_share;
        let over = |n: u32| enough && f64::from(n) > share * f64::from(known);
        let fleet = self
            .st
            .fleet_at
            .is_some_and(|t| now.since(t) <= g.cluster_window);
        let (unhealthy, confirmed) = (over(self.st.bad), over(self.st.confirmed));
        let l = self.labels(AlertName::ClusterDegraded, None, None, rules::CRITICAL);
        let fp = fingerprint(&l);
        let mut firing = self.st.alerts.get(&fp).is_some_and(|e| e.ends_at.is_none());
        if (confirmed || fleet) && !firing {
            let a = self.cluster_annotations(fleet);
            self.fire(l, a, now);
            firing = true;
        } else if firing && !(unhealthy || confirmed || fleet) {
            self.resolve(fp, now);
            firing = false;
        }
        let hold = firing || unhealthy;
        if self.st.cluster_hold && !hold {
            self.rearm = true;
        }
        if self.st.cluster_hold != hold {
            self.st.cluster_hold = hold;
            self.changed = true;
        }
    }

    fn cluster_annotations(&self, fleet: bool) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
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
        a
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
            let source = self.inhibit.iter().any(|r| all_match(&r.source, &e.labels));
            // A resolved alert is (re)inserted into its groups like Alertmanager does.
            self.route(fp, now);
            self.rearm |= source;
            self.flush_if_all_resolved(fp, now);
        }
    }

    /// A group (of a `resolved_at_once` route) whose alerts have all resolved is due now: a
    /// recovery is not held for group_interval.
    fn flush_if_all_resolved(&mut self, fp: u64, now: Timestamp) {
        self.due_now(fp, true, now);
    }

    /// Groups of `fp` on `resolved_at_once` routes are due now (`all_resolved`: only those
    /// whose alerts have all resolved).
    fn due_now(&mut self, fp: u64, all_resolved: bool, now: Timestamp) {
        let Some(e) = self.st.alerts.get(&fp) else {
            return;
        };
        for key in &e.groups {
            let Some(g) = self.st.groups.get(key) else {
                continue;
            };
            let all = !all_resolved
                || g.alerts
                    .iter()
                    .all(|a| self.st.alerts.get(a).is_none_or(|x| x.ends_at.is_some()));
            if g.resolved_at_once && all && g.next_flush > now {
                if let Some(g) = self.st.groups.get_mut(key) {
                    g.next_flush = now;
                }
                self.next_due = self.next_due.min(now);
            }
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
                notified: false,
                resolved_at_once: r.resolved_at_once,
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
        if now >= self.st.next_sweep {
            self.st.next_sweep = now.add(SWEEP_EVERY);
            self.sweep(now);
        }
        if std::mem::take(&mut self.rearm) {
            self.rearm_muted(now);
        }
        if now >= self.next_due {
            self.flush(now, false, out);
        }
        if self.has_am && (self.dirty_am || now >= self.next_am) {
            self.next_am = now.add(SWEEP_EVERY);
            self.am_pass(now, out);
        }
    }

    /// Groups that never notified anything because all their alerts were muted are due at
    /// once when an inhibiting alert resolved (or a pending ClusterDegraded gave up), instead
    /// of a group_interval later.
    fn rearm_muted(&mut self, now: Timestamp) {
        let mut any = false;
        for g in self.st.groups.values_mut() {
            if !g.notified && !g.pending && g.next_flush > now {
                g.next_flush = now;
                any = true;
            }
        }
        if any {
            self.next_due = self.next_due.min(now);
        }
    }

    /// End of input: with `flush_on_exit`, group_wait counts as elapsed for groups never
    /// notified; groups already notified keep their group_interval / repeat_interval timers
    /// (they are in the state file, so a later run fires them on schedule). Nothing else
    /// happens here that a stream would not do at this record time, so with a group_wait of
    /// 0 (the default) a cron run per poll notifies exactly what one long stream does.
    pub fn finish(&mut self, out: &mut Out) {
        let now = self.st.now;
        let all = self.cfg.global.flush_on_exit;
        self.flush(now, all, out);
        if self.has_am {
            self.am_pass(now, out);
        }
    }

    fn sweep(&mut self, now: Timestamp) {
        let cutoff = now.sub(NFLOG_RETENTION);
        self.st.nflog.retain(|_, e| e.ts >= cutoff);
        // Nodes silent for longer than the window no longer count towards the cluster share.
        let window = self.cfg.global.cluster_window;
        let mut dropped = false;
        for t in self.st.nodes.values_mut() {
            if t.counted && now.since(t.last_ts) > window {
                t.counted = false;
                self.st.known -= 1;
                self.st.bad -= u32::from(t.bad);
                self.st.confirmed -= u32::from(t.confirmed);
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
                // Forget the condition so the node's next bad sample counts it again.
                let cfg = &self.cfg;
                if let Some(n) = node
                    && let Some(t) = self.st.nodes.get_mut(&n)
                {
                    t.conds.retain(|c| {
                        c.fired.is_none_or(|w| {
                            fingerprint(&labels_of(cfg, w.name, Some(&n), w.gpu, w.severity()))
                                != fp
                        })
                    });
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
        let mut sources: Vec<HashSet<Vec<String>>> = self
            .inhibit
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
            .collect();
        // A pending ClusterDegraded holds back what a firing one would inhibit.
        if self.st.cluster_hold
            && let Some(s) = self.cluster_rule.and_then(|i| sources.get_mut(i))
        {
            s.insert(Vec::new());
        }
        sources
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
                if let Some(g) = self.st.groups.get_mut(key) {
                    g.notified = true;
                }
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

/// XID alerts whose XID left the sample hold while their GPU is still bad
/// ([`rules::xid_holds`]).
fn hold_xids(conds: &[Cond], score: &ScoreView<'_>, present: &mut Vec<Want>) {
    for c in conds {
        let xid = matches!(c.want.name, AlertName::GpuXidFatal | AlertName::GpuXid);
        let here = present
            .iter()
            .any(|p| p.name == c.want.name && p.gpu == c.want.gpu);
        if xid && !here && (c.active || c.samples > 0) && rules::xid_holds(score, c.want.gpu) {
            present.push(c.want);
        }
    }
}

/// A version 1 state kept the conditions that fired as `wants`: they become active
/// conditions that fire, so the next sample that lacks them resolves them.
fn adopt_version_1(st: &mut EngineState) {
    let now = st.now;
    for t in st.nodes.values_mut() {
        if t.conds.is_empty() {
            t.conds = t.wants.drain(..).map(|w| Cond::adopted(w, now)).collect();
        }
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
