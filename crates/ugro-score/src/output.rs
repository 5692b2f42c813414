//! The people- and monitoring-facing renderings of a score: the Monitoring Plugins status line
//! and the table.

use std::fmt::Write as _;

use ugro_types::{HealthState, Score};

use crate::config::StateThresholds;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// The input record with `score` added (JSON lines).
    #[default]
    Json,
    /// One Monitoring Plugins status line per sample.
    Nagios,
    /// An aligned table for people.
    Table,
}

/// Text that goes into a plugin status line must not contain the perfdata separator or a
/// line break.
fn plugin_safe(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '|' => '/',
            '\n' | '\r' => ' ',
            c => c,
        })
        .collect()
}

fn perf(out: &mut String, label: &str, value: Option<f64>, warn: &str, crit: &str) {
    let _ = match value {
        Some(v) => write!(out, " '{label}'={v};{warn};{crit};0;100"),
        None => write!(out, " '{label}'=U;{warn};{crit};0;100"),
    };
}

/// `UGRO <STATE> - <node>: <summary> | <perfdata>` following the Monitoring Plugins guidelines:
/// thresholds are ranges (`70:` warns below 70), unknown values are `U`.
pub fn nagios_line(node: &str, score: &Score, t: &StateThresholds) -> String {
    let status = score.state.plugin_status().label();
    let mut out = format!(
        "UGRO {status} - {}: {}",
        plugin_safe(node),
        plugin_safe(&score.summary)
    );
    out.push_str(" |");
    let warn = format!("{}:", t.degraded);
    let crit = format!("{}:", t.critical);
    perf(&mut out, "score", score.total, &warn, &crit);
    let c = &score.components;
    for (label, v) in [
        ("gpu", c.gpu),
        ("system", c.system),
        ("network", c.network),
        ("process", c.process),
    ] {
        if v.is_some() {
            perf(&mut out, label, v, "", "");
        }
    }
    for g in &score.gpus {
        perf(&mut out, &format!("gpu{}", g.index), Some(g.score), "", "");
    }
    out
}

/// The table header.
pub fn table_header() -> String {
    format!(
        "{:<20} {:<24} {:<8} {:>5} {:>5} {:>5} {:>5} {:>5} {:<19} SUMMARY",
        "NODE", "TIME", "STATE", "TOTAL", "GPU", "SYS", "NET", "PROC", "ACTION"
    )
}

fn num(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

/// One table row.
pub fn table_row(node: &str, ts: &str, score: &Score) -> String {
    let c = &score.components;
    format!(
        "{:<20} {:<24} {:<8} {:>5} {:>5} {:>5} {:>5} {:>5} {:<19} {}",
        node,
        ts,
        score.state.as_str(),
        num(score.total),
        num(c.gpu),
        num(c.system),
        num(c.network),
        num(c.process),
        score.action.as_str(),
        score.summary
    )
}

/// The worse of two states in the Monitoring Plugins order (unknown between degraded and critical).
pub fn worse(a: Option<HealthState>, b: HealthState) -> HealthState {
    match a {
        Some(a) if a.badness() >= b.badness() => a,
        _ => b,
    }
}
