//! `ugro-breaker status`: the state file for people (a table) or for programs (JSON).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};
use ugro_types::{BreakerState, Timestamp};

use crate::Format;
use crate::config::BreakerConfig;
use crate::engine::BreakerData;

fn opt_ts(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "-".to_owned(), |t| t.to_string())
}

/// Renders the status at wall-clock `now` (trips are counted over the trip window before it).
pub fn render(
    data: &BreakerData,
    cfg: &BreakerConfig,
    path: &Path,
    now: Timestamp,
    format: Format,
) -> String {
    let from = now.sub(cfg.trip_window);
    let trips = |n: &crate::NodeState| n.trips.iter().filter(|t| **t >= from).count();
    match format {
        Format::Json => {
            let nodes: Vec<Value> = data
                .nodes
                .iter()
                .map(|(name, n)| {
                    let mut v = serde_json::to_value(n).unwrap_or(Value::Null);
                    if let Value::Object(m) = &mut v {
                        m.insert("node".into(), json!(name));
                        m.insert("trips_in_window".into(), json!(trips(n)));
                    }
                    v
                })
                .collect();
            let doc = json!({
                "state_file": path.display().to_string(),
                "trip_window": humantime::format_duration(cfg.trip_window).to_string(),
                "last_fleet_at": data.last_fleet_at,
                "nodes": nodes,
            });
            let mut s = doc.to_string();
            s.push('\n');
            s
        }
        Format::Table => {
            let head = [
                "NODE",
                "STATE",
                "FAILURES",
                "SINCE",
                "NEXT_TRIAL",
                "TRIPS",
                "HELD",
                "LAST_SEEN",
            ];
            let mut rows: Vec<[String; 8]> = vec![head.map(str::to_owned)];
            for (name, n) in &data.nodes {
                rows.push([
                    name.clone(),
                    n.state.as_str().to_owned(),
                    n.consecutive_failures.to_string(),
                    opt_ts(n.since),
                    if n.state == BreakerState::Open {
                        opt_ts(n.next_trial_at)
                    } else {
                        "-".into()
                    },
                    trips(n).to_string(),
                    n.held.to_string(),
                    opt_ts(n.last_ts),
                ]);
            }
            let mut widths = [0usize; 8];
            for r in &rows {
                for (w, c) in widths.iter_mut().zip(r) {
                    *w = (*w).max(c.len());
                }
            }
            let mut s = String::new();
            for r in &rows {
                let mut line = String::new();
                for (i, (c, w)) in r.iter().zip(widths).enumerate() {
                    if i + 1 == r.len() {
                        line.push_str(c);
                    } else {
                        let _ = write!(line, "{c:<w$}  ");
                    }
                }
                s.push_str(line.trim_end());
                s.push('\n');
            }
            if data.nodes.is_empty() {
                let _ = writeln!(s, "(no nodes in {})", path.display());
            }
            s
        }
    }
}
