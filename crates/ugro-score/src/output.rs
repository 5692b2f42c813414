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
    /// Monitoring Plugins output: one status line for the worst state, a line per node after it.
    Nagios,
    /// An aligned table for people.
    Table,
    /// Prometheus text: the latest scored sample of every node, rewritten as records arrive.
    Prometheus,
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

fn perfdata(out: &mut String, prefix: &str, score: &Score, t: &StateThresholds) {
    let warn = format!("{}:", t.degraded);
    let crit = format!("{}:", t.critical);
    perf(out, &format!("{prefix}score"), score.total, &warn, &crit);
    let c = &score.components;
    for (label, v) in [
        ("gpu", c.gpu),
        ("system", c.system),
        ("network", c.network),
        ("process", c.process),
    ] {
        if v.is_some() {
            perf(out, &format!("{prefix}{label}"), v, "", "");
        }
    }
    for g in &score.gpus {
        perf(
            out,
            &format!("{prefix}gpu{}", g.index),
            Some(g.score),
            "",
            "",
        );
    }
}

/// The whole plugin output for the samples of one run, following the Monitoring Plugins
/// guidelines: the first line is `UGRO <STATE> - <text> | <perfdata>` for the worst state,
/// which is also the exit status; with several samples, one line per node follows as long
/// text (no `|` in it) and the perfdata labels carry the node name. `bad_lines` rejected input
/// lines make the state at least UNKNOWN and are said in the text.
pub fn nagios_report(
    checks: &[(String, Score)],
    dropped: u64,
    bad_lines: u64,
    t: &StateThresholds,
) -> (HealthState, String) {
    let mut worst = checks
        .iter()
        .map(|(_, s)| s.state)
        .reduce(|a, b| worse(Some(a), b));
    if bad_lines > 0 || worst.is_none() {
        worst = Some(worse(worst, HealthState::Unknown));
    }
    let worst = worst.unwrap_or(HealthState::Unknown);
    let status = worst.plugin_status().label();
    let bad = match bad_lines {
        0 => String::new(),
        1 => "; 1 bad input line".to_owned(),
        n => format!("; {n} bad input lines"),
    };
    let mut out = format!("UGRO {status} - ");
    match checks {
        [] => {
            let why = if bad_lines > 0 {
                "no valid sample in the input"
            } else {
                "no samples in the input"
            };
            out.push_str(why);
            out.push_str(&bad);
        }
        [(node, score)] => {
            let _ = write!(
                out,
                "{}: {}{bad} |",
                plugin_safe(node),
                plugin_safe(&score.summary)
            );
            perfdata(&mut out, "", score, t);
        }
        many => {
            let count = |st: HealthState| many.iter().filter(|(_, s)| s.state == st).count();
            let (node, score) = many
                .iter()
                .find(|(_, s)| s.state == worst)
                .or_else(|| many.first())
                .map(|(n, s)| (n.as_str(), s))
                .unwrap_or(("", &many[0].1));
            let _ = write!(
                out,
                "{} nodes: {} critical, {} unknown, {} degraded, {} healthy; {}: {}{bad} |",
                many.len() as u64 + dropped,
                count(HealthState::Critical),
                count(HealthState::Unknown),
                count(HealthState::Degraded),
                count(HealthState::Healthy),
                plugin_safe(node),
                plugin_safe(&score.summary),
            );
            for (node, score) in many {
                perfdata(&mut out, &format!("{} ", perf_label(node)), score, t);
            }
            for (node, score) in many {
                let _ = write!(
                    out,
                    "\n{}: {}",
                    plugin_safe(node),
                    plugin_safe(&score.summary)
                );
            }
            if dropped > 0 {
                let _ = write!(out, "\n({dropped} more samples not listed)");
            }
        }
    }
    (worst, out)
}

/// A node name inside a quoted perfdata label: the guidelines reserve `'` and `=` there.
fn perf_label(node: &str) -> String {
    node.chars()
        .map(|c| {
            if matches!(c, '\'' | '=' | '|') {
                '_'
            } else {
                c
            }
        })
        .collect()
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
