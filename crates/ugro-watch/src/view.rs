//! What the watcher knows about each node, built from the records it emits: the latest
//! sample, its score, the breaker state, the last alert, and a bounded history. The TTY table
//! and the state directory are both renderings of this.

use std::collections::VecDeque;

use serde::Serialize;
use serde_json::Value;
use ugro_types::Timestamp;

/// One history entry: enough to plot a node's health over time without keeping whole samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistEntry {
    /// Sample time.
    pub ts: Value,
    /// Score state, or `unreachable`.
    pub state: Option<String>,
    /// Score total.
    pub total: Option<f64>,
    /// GPUs answering / visible.
    pub gpus_ok: u32,
    /// GPUs visible.
    pub gpus: u32,
    /// Hottest GPU, °C.
    pub hottest_c: Option<u64>,
    /// Mean GPU utilisation, percent.
    pub utilization_pct: Option<u64>,
}

/// One node.
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    /// Node name.
    pub name: String,
    /// The latest sample as emitted (scored in `--pipeline` mode).
    pub sample: Option<Value>,
    /// Latest entry, also the head of `history`.
    pub last: Option<HistEntry>,
    /// `unreachable.cause` of the latest sample.
    pub unreachable: Option<String>,
    /// Breaker state name.
    pub breaker_state: Option<String>,
    /// Breaker annotation or last transition.
    pub breaker: Option<Value>,
    /// Last alert (compact).
    pub last_alert: Option<Value>,
    /// Bounded history, oldest first.
    pub history: VecDeque<HistEntry>,
    /// Changed since the state directory was last written.
    pub dirty: bool,
    /// Keep the whole latest sample (only the state directory needs it).
    pub keep_sample: bool,
}

impl NodeView {
    /// A node with nothing known yet.
    pub fn new(name: &str) -> Self {
        NodeView {
            name: name.to_owned(),
            keep_sample: true,
            ..NodeView::default()
        }
    }

    /// Takes in one record about this node.
    pub fn observe(&mut self, rec: &Value, history: usize) {
        match rec.get("kind").and_then(Value::as_str) {
            Some("sample") => self.observe_sample(rec, history),
            Some("transition") => {
                self.breaker_state = rec.get("to").and_then(Value::as_str).map(str::to_owned);
                let mut b = pick(
                    rec,
                    &[
                        "from",
                        "reason",
                        "at",
                        "consecutive_failures",
                        "next_trial_at",
                        "history",
                    ],
                );
                if let (Some(obj), Some(to)) = (b.as_object_mut(), rec.get("to")) {
                    obj.insert("state".into(), to.clone());
                }
                self.breaker = Some(b);
                self.dirty = true;
            }
            Some("alert") => {
                let labels = rec.get("labels");
                let mut a = pick(rec, &["status", "startsAt", "endsAt", "fingerprint"]);
                if let (Some(obj), Some(l)) = (a.as_object_mut(), labels) {
                    for k in ["alertname", "severity"] {
                        if let Some(v) = l.get(k) {
                            obj.insert(k.to_owned(), v.clone());
                        }
                    }
                }
                self.last_alert = Some(a);
                self.dirty = true;
            }
            _ => {}
        }
    }

    /// The breaker's annotation of a sample already seen.
    pub fn observe_breaker(&mut self, b: &Value) {
        self.breaker_state = b.get("state").and_then(Value::as_str).map(str::to_owned);
        // The annotation refreshes the state and counters; the last transition's reason and
        // time stay.
        let merged = self
            .breaker
            .get_or_insert_with(|| Value::Object(Default::default()));
        if let (Some(m), Some(n)) = (merged.as_object_mut(), b.as_object()) {
            if n.get("state") != m.get("state") {
                for k in ["from", "reason", "at", "history"] {
                    m.remove(k);
                }
            }
            m.remove("next_trial_at");
            for (k, v) in n {
                m.insert(k.clone(), v.clone());
            }
        }
        self.dirty = true;
    }

    fn observe_sample(&mut self, rec: &Value, history: usize) {
        self.unreachable = rec
            .pointer("/unreachable/cause")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if let Some(b) = rec.get("breaker") {
            self.observe_breaker(b);
        }
        let devices = rec
            .pointer("/gpu/devices")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let gpus = u32::try_from(devices.len()).unwrap_or(u32::MAX);
        let gpus_ok = u32::try_from(
            devices
                .iter()
                .filter(|d| d.get("state").and_then(Value::as_str).unwrap_or("ok") == "ok")
                .count(),
        )
        .unwrap_or(u32::MAX);
        let hottest_c = devices
            .iter()
            .filter_map(|d| d.get("temperature_c").and_then(Value::as_u64))
            .max();
        let utils: Vec<u64> = devices
            .iter()
            .filter_map(|d| d.get("utilization_pct").and_then(Value::as_u64))
            .collect();
        let utilization_pct = if utils.is_empty() {
            None
        } else {
            Some(utils.iter().sum::<u64>() / utils.len() as u64)
        };
        let state = if self.unreachable.is_some() {
            Some("unreachable".to_owned())
        } else {
            rec.pointer("/score/state")
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let entry = HistEntry {
            ts: rec.get("ts").cloned().unwrap_or(Value::Null),
            state,
            total: rec.pointer("/score/total").and_then(Value::as_f64),
            gpus_ok,
            gpus,
            hottest_c,
            utilization_pct,
        };
        if history > 0 {
            while self.history.len() >= history {
                self.history.pop_front();
            }
            self.history.push_back(entry.clone());
        }
        self.last = Some(entry);
        if self.keep_sample {
            self.sample = Some(rec.clone());
        }
        self.dirty = true;
    }

    /// The node's state file.
    pub fn state_json(&self, now: Timestamp) -> Value {
        serde_json::json!({
            "node": self.name,
            "updated": now,
            "state": self.last.as_ref().and_then(|l| l.state.clone()),
            "sample": self.sample,
            "score": self.sample.as_ref().and_then(|s| s.get("score")).cloned(),
            "breaker": self.breaker,
            "last_alert": self.last_alert,
            "history": self.history,
        })
    }

    /// One line of `fleet.json`.
    pub fn summary_json(&self) -> Value {
        serde_json::json!({
            "node": self.name,
            "state": self.last.as_ref().and_then(|l| l.state.clone()),
            "total": self.last.as_ref().and_then(|l| l.total),
            "ts": self.last.as_ref().map(|l| l.ts.clone()),
            "breaker": self.breaker_state,
            "last_alert": self.last_alert.as_ref().and_then(|a| a.get("alertname")).cloned(),
        })
    }
}

fn pick(rec: &Value, keys: &[&str]) -> Value {
    let mut m = serde_json::Map::new();
    for k in keys {
        if let Some(v) = rec.get(*k) {
            m.insert((*k).to_owned(), v.clone());
        }
    }
    Value::Object(m)
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
        let state = last
            .and_then(|l| l.state.as_deref())
            .unwrap_or(if last.is_some() { "-" } else { "pending" });
        let score = last
            .and_then(|l| l.total)
            .map_or("-".to_owned(), |t| format!("{t:.0}"));
        let gpus = last.map_or("-".to_owned(), |l| format!("{}/{}", l.gpus_ok, l.gpus));
        let hot = last
            .and_then(|l| l.hottest_c)
            .map_or("-".to_owned(), |c| format!("{c}°C"));
        let util = last
            .and_then(|l| l.utilization_pct)
            .map_or("-".to_owned(), |u| format!("{u}%"));
        let breaker = n.breaker_state.as_deref().unwrap_or("-");
        let alert = n.last_alert.as_ref().map_or("-".to_owned(), |a| {
            format!(
                "{} {}",
                a.get("alertname").and_then(Value::as_str).unwrap_or("?"),
                a.get("status").and_then(Value::as_str).unwrap_or("")
            )
        });
        let (on, off) = if color {
            (
                match state {
                    "healthy" => "\x1b[32m",
                    "degraded" => "\x1b[33m",
                    "critical" | "unreachable" => "\x1b[31m",
                    "unknown" => "\x1b[35m",
                    _ => "",
                },
                "\x1b[0m",
            )
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

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(node: &str, temp: u64, util: u64) -> Value {
        json!({"v":1,"kind":"sample","ts":"2026-11-28T00:00:00.000Z","node":node,
               "gpu":{"status":"ok","devices":[
                   {"index":0,"state":"ok","temperature_c":temp,"utilization_pct":util},
                   {"index":1,"state":"lost"}]},
               "score":{"state":"degraded","total":61.5}})
    }

    #[test]
    fn sample_transition_and_alert_fill_the_view() {
        let mut v = NodeView::new("n1");
        v.observe(&sample("n1", 71, 40), 3);
        v.observe(
            &json!({"v":1,"kind":"transition","ts":"2026-11-28T00:00:01.000Z","node":"n1",
                    "from":"closed","to":"open","reason":"failure_threshold"}),
            3,
        );
        v.observe(
            &json!({"v":1,"kind":"alert","ts":"2026-11-28T00:00:02.000Z","node":"n1",
                    "status":"firing","labels":{"alertname":"GpuLost","severity":"critical"}}),
            3,
        );
        let last = v.last.clone().unwrap();
        assert_eq!((last.gpus_ok, last.gpus), (1, 2));
        assert_eq!(last.hottest_c, Some(71));
        assert_eq!(last.state.as_deref(), Some("degraded"));
        assert_eq!(v.breaker_state.as_deref(), Some("open"));
        let s = v.state_json(Timestamp(0));
        assert_eq!(s["last_alert"]["alertname"], "GpuLost");
        assert_eq!(s["score"]["total"], 61.5);
        let table = render_table([&v].into_iter(), "", false);
        assert!(table.contains("1/2") && table.contains("71°C") && table.contains("GpuLost"));
        assert!(!table.contains("\x1b[3"));
        assert!(render_table([&v].into_iter(), "", true).contains("\x1b[33m"));
    }

    #[test]
    fn history_is_bounded() {
        let mut v = NodeView::new("n1");
        for i in 0..10 {
            v.observe(&sample("n1", 50 + i, 0), 4);
        }
        assert_eq!(v.history.len(), 4);
        assert_eq!(v.history.front().unwrap().hottest_c, Some(56));
    }

    #[test]
    fn unreachable_sample_shows_as_unreachable() {
        let mut v = NodeView::new("n1");
        v.observe(
            &json!({"v":1,"kind":"sample","ts":"2026-11-28T00:00:00.000Z","node":"n1",
                    "unreachable":{"cause":"ssh","message":"refused"}}),
            4,
        );
        assert_eq!(v.last.unwrap().state.as_deref(), Some("unreachable"));
        assert_eq!(v.unreachable.as_deref(), Some("ssh"));
    }
}
