//! What the watcher knows about each node, built from the records the pipeline job sees: the
//! latest sample, its score, the breaker state, the last alert, and a bounded history. The TTY
//! table and the state directory are both renderings of this. Records are read through the
//! contract's borrowed views (`ugro_types::view`), never picked apart by field path.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;
use serde_json::value::RawValue;
use ugro_types::view::{AlertView, BreakerView, SampleView, TransitionView};
use ugro_types::{AlertStatus, BreakerState, DeviceState, HealthState, Score, Timestamp};

/// One history entry: enough to plot a node's health over time without keeping whole samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistEntry {
    /// Sample time.
    pub ts: Timestamp,
    /// Score state, or `unreachable`.
    pub state: Option<&'static str>,
    /// Score total.
    pub total: Option<f64>,
    /// GPUs answering.
    pub gpus_ok: u32,
    /// GPUs visible.
    pub gpus: u32,
    /// Hottest GPU, °C.
    pub hottest_c: Option<u32>,
    /// Mean GPU utilisation, percent.
    pub utilization_pct: Option<u32>,
}

/// The breaker as the state file shows it: the latest annotation's counters plus the last
/// transition's reason and time (kept while the state is the one that transition entered).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BreakerInfo {
    /// Current state.
    pub state: Option<BreakerState>,
    /// Consecutive failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// Next trial (open states).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_trial_at: Option<Timestamp>,
    /// State before the last transition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<BreakerState>,
    /// Why the last transition happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    /// Trips in the window, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<String>,
}

/// The last alert about a node, compact.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertInfo {
    /// Firing or resolved.
    pub status: AlertStatus,
    /// The alert's name.
    pub alertname: String,
    /// Its severity label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// When it began.
    #[serde(rename = "startsAt")]
    pub starts_at: Timestamp,
    /// When it ended.
    #[serde(rename = "endsAt", skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<Timestamp>,
    /// Alertmanager fingerprint.
    pub fingerprint: String,
}

/// One node.
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// The latest sample as emitted (scored), kept only for the state directory.
    pub sample: Option<Box<RawValue>>,
    /// Its score.
    pub score: Option<Score>,
    /// Latest entry, also the head of `history`.
    pub last: Option<HistEntry>,
    /// `unreachable.cause` of the latest sample.
    pub unreachable: Option<String>,
    /// The breaker.
    pub breaker: Option<BreakerInfo>,
    /// Last alert.
    pub last_alert: Option<AlertInfo>,
    /// Bounded history, oldest first.
    pub history: VecDeque<HistEntry>,
    /// Changed since the state directory was last written.
    pub dirty: bool,
}

impl NodeView {
    /// A node with nothing known yet.
    pub fn new(name: &str) -> Self {
        NodeView {
            name: name.to_owned(),
            ..NodeView::default()
        }
    }

    /// Takes in a sample and its score (`raw` is its line, kept when `keep_raw`).
    pub fn observe_sample(
        &mut self,
        s: &SampleView<'_>,
        score: Option<Score>,
        raw: &str,
        history: usize,
        keep_raw: bool,
    ) {
        self.unreachable = s.unreachable.as_ref().map(|u| u.cause.clone());
        let devices = s.gpu.as_ref().map_or(&[][..], |g| g.devices.as_slice());
        let gpus = u32::try_from(devices.len()).unwrap_or(u32::MAX);
        let gpus_ok = devices
            .iter()
            .filter(|d| d.state == DeviceState::Ok)
            .count();
        let utils: Vec<u32> = devices.iter().filter_map(|d| d.utilization_pct).collect();
        let utilization_pct = (!utils.is_empty()).then(|| {
            u32::try_from(utils.iter().map(|u| u64::from(*u)).sum::<u64>() / utils.len() as u64)
                .unwrap_or(u32::MAX)
        });
        let state = if self.unreachable.is_some() {
            Some("unreachable")
        } else {
            score.as_ref().map(|sc| sc.state.as_str())
        };
        let entry = HistEntry {
            ts: s.ts,
            state,
            total: score.as_ref().and_then(|sc| sc.total),
            gpus_ok: u32::try_from(gpus_ok).unwrap_or(u32::MAX),
            gpus,
            hottest_c: devices.iter().filter_map(|d| d.temperature_c).max(),
            utilization_pct,
        };
        if history > 0 {
            while self.history.len() >= history {
                self.history.pop_front();
            }
            self.history.push_back(entry.clone());
        }
        self.last = Some(entry);
        self.score = score;
        self.sample = if keep_raw {
            RawValue::from_string(raw.to_owned()).ok()
        } else {
            None
        };
        self.dirty = true;
    }

    /// The breaker's annotation of a sample already seen.
    pub fn observe_annotation(&mut self, a: &BreakerView) {
        let b = self.breaker.get_or_insert_with(BreakerInfo::default);
        if b.state != Some(a.state) {
            // The last transition's details belong to the state it entered.
            *b = BreakerInfo::default();
        }
        b.state = Some(a.state);
        b.consecutive_failures = Some(a.consecutive_failures);
        b.next_trial_at = a.next_trial_at;
        self.dirty = true;
    }

    /// A breaker transition.
    pub fn observe_transition(&mut self, t: &TransitionView<'_>) {
        self.breaker = Some(BreakerInfo {
            state: t.to,
            consecutive_failures: t.consecutive_failures,
            next_trial_at: t.next_trial_at,
            from: t.from,
            reason: t.reason.as_deref().map(str::to_owned),
            at: t.at,
            history: t.history.as_deref().map(str::to_owned),
        });
        self.dirty = true;
    }

    /// An alert about this node.
    pub fn observe_alert(&mut self, a: &AlertView<'_>) {
        self.last_alert = Some(AlertInfo {
            status: a.status,
            alertname: a.alertname().unwrap_or_default().to_owned(),
            severity: a.label("severity").map(str::to_owned),
            starts_at: a.starts_at,
            ends_at: a.ends_at,
            fingerprint: a.fingerprint.clone().into_owned(),
        });
        self.dirty = true;
    }

    /// The scorer's state of the latest sample (`None` before the first).
    pub fn health(&self) -> Option<HealthState> {
        self.score.as_ref().map(|s| s.state)
    }

    /// The node's state file.
    pub fn state_json(&self, now: Timestamp) -> serde_json::Value {
        serde_json::json!({
            "node": self.name,
            "updated": now,
            "state": self.last.as_ref().and_then(|l| l.state),
            "sample": self.sample,
            "score": self.score,
            "breaker": self.breaker,
            "last_alert": self.last_alert,
            "history": self.history,
        })
    }

    /// One entry of `fleet.json`.
    pub fn summary_json(&self) -> serde_json::Value {
        serde_json::json!({
            "node": self.name,
            "state": self.last.as_ref().and_then(|l| l.state),
            "total": self.last.as_ref().and_then(|l| l.total),
            "ts": self.last.as_ref().map(|l| l.ts),
            "breaker": self.breaker.as_ref().and_then(|b| b.state),
            "last_alert": self.last_alert.as_ref().map(|a| &a.alertname),
        })
    }
}

/// Every node's view, in table order (the cluster file's).
#[derive(Debug, Default)]
pub struct Views {
    nodes: Vec<NodeView>,
    index: HashMap<String, usize>,
    /// History entries kept per node.
    pub history: usize,
    /// Keep each node's whole latest sample (only the state directory needs it).
    pub keep_raw: bool,
    /// Something changed since the table was last drawn.
    pub table_dirty: bool,
}

impl Views {
    /// No nodes yet.
    pub fn new(history: usize, keep_raw: bool) -> Self {
        Views {
            history,
            keep_raw,
            table_dirty: true,
            ..Views::default()
        }
    }

    /// Makes the table show exactly `names`, in that order; views of names kept stay.
    pub fn set_nodes(&mut self, names: &[String]) {
        let mut old: HashMap<String, NodeView> = std::mem::take(&mut self.nodes)
            .into_iter()
            .map(|v| (v.name.clone(), v))
            .collect();
        self.index.clear();
        for n in names {
            let v = old.remove(n).unwrap_or_else(|| NodeView::new(n));
            self.index.insert(n.clone(), self.nodes.len());
            self.nodes.push(v);
        }
        self.table_dirty = true;
    }

    /// A node's view, registered on first sight (replay has no node list).
    pub fn node_mut(&mut self, name: &str) -> &mut NodeView {
        let i = match self.index.get(name) {
            Some(i) => *i,
            None => {
                self.index.insert(name.to_owned(), self.nodes.len());
                self.nodes.push(NodeView::new(name));
                self.nodes.len() - 1
            }
        };
        self.table_dirty = true;
        &mut self.nodes[i]
    }

    /// A node's view, if known.
    pub fn get(&self, name: &str) -> Option<&NodeView> {
        self.index.get(name).and_then(|i| self.nodes.get(*i))
    }

    /// Every view, in table order.
    pub fn iter(&self) -> impl Iterator<Item = &NodeView> {
        self.nodes.iter()
    }

    /// The state directory's files that changed: `(nodes/<node>.json or fleet.json, bytes)`.
    pub fn take_dirty(&mut self, now: Timestamp) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for v in self.nodes.iter_mut().filter(|v| v.dirty) {
            v.dirty = false;
            if let Ok(b) = serde_json::to_vec_pretty(&v.state_json(now)) {
                out.push((crate::node_file::node_file(&v.name), b));
            }
        }
        if !out.is_empty() {
            let fleet: Vec<serde_json::Value> =
                self.nodes.iter().map(NodeView::summary_json).collect();
            let doc = serde_json::json!({"updated": now, "nodes": fleet});
            if let Ok(b) = serde_json::to_vec_pretty(&doc) {
                out.push(("fleet.json".into(), b));
            }
        }
        out
    }
}

/// Renders the live table. `color` adds ANSI colours by state.
pub fn render_table<'a>(
    nodes: impl Iterator<Item = &'a NodeView>,
    footer: &str,
    color: bool,
) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(8192);
    // Home and clear: the table is redrawn in place.
    out.push_str("\x1b[H\x1b[2J");
    let _ = writeln!(
        out,
        "{:<24} {:<11} {:>5} {:>7} {:>7} {:>5} {:<10} LAST ALERT",
        "NODE", "STATE", "SCORE", "GPUS", "HOTTEST", "UTIL", "BREAKER"
    );
    for n in nodes {
        let last = n.last.as_ref();
        let state =
            last.and_then(|l| l.state)
                .unwrap_or(if last.is_some() { "-" } else { "pending" });
        let dash = || "-".to_owned();
        let score = last
            .and_then(|l| l.total)
            .map_or_else(dash, |t| format!("{t:.0}"));
        let gpus = last.map_or_else(dash, |l| format!("{}/{}", l.gpus_ok, l.gpus));
        let hot = last
            .and_then(|l| l.hottest_c)
            .map_or_else(dash, |c| format!("{c}°C"));
        let util = last
            .and_then(|l| l.utilization_pct)
            .map_or_else(dash, |u| format!("{u}%"));
        let breaker = n
            .breaker
            .as_ref()
            .and_then(|b| b.state)
            .map_or("-", BreakerState::as_str);
        let alert = n
            .last_alert
            .as_ref()
            .map_or_else(dash, |a| format!("{} {}", a.alertname, a.status.as_str()));
        let (on, off) = if color {
            (state_colour(state), "\x1b[0m")
        } else {
            ("", "")
        };
        let _ = writeln!(
            out,
            "{:<24} {on}{:<11}{off} {:>5} {:>7} {:>7} {:>5} {:<10} {}",
            truncate(&n.name, 24),
            state,
            score,
            gpus,
            hot,
            util,
            breaker,
            alert
        );
    }
    out.push_str(footer);
    out.push('\n');
    out
}

fn state_colour(state: &str) -> &'static str {
    match state {
        "healthy" => "\x1b[32m",
        "degraded" => "\x1b[33m",
        "critical" | "unreachable" => "\x1b[31m",
        "unknown" => "\x1b[35m",
        _ => "",
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00.000Z","node":"n1","gpu":{"status":"ok","devices":[{"index":0,"state":"ok","temperature_c":71,"utilization_pct":40},{"index":1,"state":"lost"}]},"score":{"total":61.5,"state":"degraded","action":"reset_gpu","components":{},"reasons":[],"summary":"x"}}"#;

    /// A scored line, and its score.
    fn sample(temp: u32) -> (String, Score) {
        let line = SAMPLE.replace("71", &temp.to_string());
        let rec = ugro_types::view::RecordView::<'_, Score>::parse(&line).unwrap();
        let score = rec.score.clone().unwrap();
        (line, score)
    }

    fn observe(v: &mut NodeView, line: &str, score: Score, history: usize, keep: bool) {
        let s = SampleView::parse(line).unwrap();
        v.observe_sample(&s, Some(score), line, history, keep);
    }

    #[test]
    fn sample_transition_and_alert_fill_the_view() {
        let mut v = NodeView::new("n1");
        let (raw, score) = sample(71);
        observe(&mut v, &raw, score, 3, true);
        let t = TransitionView::parse(
            r#"{"v":1,"kind":"transition","ts":"2026-11-28T00:00:01.000Z","node":"n1","from":"closed","to":"open","reason":"failure_threshold","consecutive_failures":3,"at":"2026-11-28T00:00:01.000Z"}"#,
        )
        .unwrap();
        v.observe_transition(&t);
        let a = AlertView::parse(
            r#"{"v":1,"kind":"alert","ts":"2026-11-28T00:00:02.000Z","node":"n1","fingerprint":"0123456789abcdef","status":"firing","labels":{"alertname":"GpuLost","severity":"critical"},"annotations":{},"startsAt":"2026-11-28T00:00:02.000Z"}"#,
        )
        .unwrap();
        v.observe_alert(&a);
        let last = v.last.clone().unwrap();
        assert_eq!((last.gpus_ok, last.gpus), (1, 2));
        assert_eq!(last.hottest_c, Some(71));
        assert_eq!(last.state, Some("degraded"));
        assert_eq!(v.health(), Some(HealthState::Degraded));
        let s = v.state_json(Timestamp(0));
        assert_eq!(s["last_alert"]["alertname"], "GpuLost");
        assert_eq!(s["breaker"]["state"], "open");
        assert_eq!(s["breaker"]["reason"], "failure_threshold");
        assert_eq!(s["score"]["total"], 61.5);
        assert_eq!(s["sample"]["gpu"]["devices"][0]["temperature_c"], 71);
        // The annotation of a later sample keeps the transition's reason while still open.
        v.observe_annotation(&BreakerView {
            state: BreakerState::Open,
            consecutive_failures: 4,
            next_trial_at: None,
        });
        assert_eq!(
            v.state_json(Timestamp(0))["breaker"]["reason"],
            "failure_threshold"
        );
        let table = render_table([&v].into_iter(), "", false);
        assert!(table.contains("1/2") && table.contains("71°C") && table.contains("GpuLost"));
        assert!(!table.contains("\x1b[3"));
        assert!(render_table([&v].into_iter(), "", true).contains("\x1b[33m"));
    }

    #[test]
    fn history_is_bounded() {
        let mut v = NodeView::new("n1");
        for i in 0..10 {
            let (raw, score) = sample(50 + i);
            observe(&mut v, &raw, score, 4, false);
        }
        assert_eq!(v.history.len(), 4);
        assert_eq!(v.history.front().unwrap().hottest_c, Some(56));
        assert!(v.sample.is_none());
    }

    #[test]
    fn unreachable_sample_shows_as_unreachable() {
        let mut v = NodeView::new("n1");
        let line = r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00.000Z","node":"n1","unreachable":{"cause":"ssh","message":"refused"}}"#;
        v.observe_sample(&SampleView::parse(line).unwrap(), None, line, 4, true);
        assert_eq!(v.last.unwrap().state, Some("unreachable"));
        assert_eq!(v.unreachable.as_deref(), Some("ssh"));
    }

    #[test]
    fn the_node_list_sets_the_table_order_and_keeps_known_views() {
        let mut vs = Views::new(4, false);
        vs.set_nodes(&["a".into(), "b".into()]);
        let (raw, score) = sample(60);
        observe(vs.node_mut("b"), &raw, score, 4, false);
        vs.set_nodes(&["c".into(), "b".into()]);
        let names: Vec<&str> = vs.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["c", "b"]);
        assert!(vs.get("b").unwrap().last.is_some());
        assert!(vs.get("a").is_none());
        let dirty = vs.take_dirty(Timestamp(0));
        assert_eq!(dirty.len(), 2, "b's file and fleet.json");
        assert!(vs.take_dirty(Timestamp(0)).is_empty());
    }
}
