//! The people- and monitoring-facing renderings of a score: the Monitoring Plugins status line
//! and the table.

use ugro_types::{HealthState, Score};

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
