//! From input records to alert conditions: the typed, borrowed view of a record that the
//! engine needs, and the alert catalog.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use ugro_types::{Action, BreakerState, HealthState, Kind, Timestamp};

/// The fields of any input record that alerting uses; everything else is skipped unparsed.
#[derive(Debug, Deserialize)]
pub struct Input<'a> {
    /// Schema version.
    pub v: u32,
    /// Kind.
    pub kind: Kind,
    /// Record time: the engine's clock.
    pub ts: Timestamp,
    /// Node.
    #[serde(borrow)]
    pub node: Cow<'a, str>,
    /// Scored samples.
    #[serde(default, borrow)]
    pub score: Option<ScoreIn<'a>>,
    /// Breaker annotation on passed-through samples.
    #[serde(default)]
    pub breaker: Option<BreakerIn>,
    /// Present when the node could not be reached.
    #[serde(default)]
    pub unreachable: Option<IgnoredAny>,
    /// Transition: state after.
    #[serde(default)]
    pub to: Option<BreakerState>,
    /// Transition: why.
    #[serde(default, borrow)]
    pub reason: Option<Cow<'a, str>>,
    /// Transition: trips in window, for people.
    #[serde(default, borrow)]
    pub history: Option<Cow<'a, str>>,
    /// Transition: next trial.
    #[serde(default)]
    pub next_trial_at: Option<Timestamp>,
    /// Transition: action of the cause.
    #[serde(default)]
    pub cause_action: Option<Action>,
    /// Fleet: failing nodes.
    #[serde(default, borrow)]
    pub failing: Option<Vec<Cow<'a, str>>>,
    /// Fleet: known nodes.
    #[serde(default)]
    pub known_nodes: Option<u32>,
    /// Fleet: message.
    #[serde(default, borrow)]
    pub message: Option<Cow<'a, str>>,
    /// ugro-watch stats: whether the watcher cannot write its state (WatcherStateUnwritable).
    #[serde(default)]
    pub state_unwritable: Option<bool>,
    /// ugro-watch stats: the write failure, for people.
    #[serde(default, borrow)]
    pub state_error: Option<Cow<'a, str>>,
}

/// The parts of `score` alerting uses.
#[derive(Debug, Deserialize)]
pub struct ScoreIn<'a> {
    /// Total.
    #[serde(default)]
    pub total: Option<f64>,
    /// State.
    pub state: HealthState,
    /// Most drastic action (kept as text so a newer vocabulary does not reject the line).
    #[serde(default, borrow)]
    pub action: Cow<'a, str>,
    /// Reasons.
    #[serde(default, borrow)]
    pub reasons: Vec<ReasonIn<'a>>,
    /// One line for people.
    #[serde(default, borrow)]
    pub summary: Cow<'a, str>,
}

/// The parts of a reason alerting uses.
#[derive(Debug, Deserialize)]
pub struct ReasonIn<'a> {
    /// Code.
    #[serde(borrow)]
    pub code: Cow<'a, str>,
    /// Component (text, for the same reason).
    #[serde(default, borrow)]
    pub component: Cow<'a, str>,
    /// GPU.
    #[serde(default)]
    pub gpu: Option<u32>,
    /// Fatal.
    #[serde(default)]
    pub fatal: bool,
    /// Action.
    #[serde(default, borrow)]
    pub action: Cow<'a, str>,
    /// For people.
    #[serde(default, borrow)]
    pub message: Cow<'a, str>,
}

/// The breaker annotation's state.
#[derive(Debug, Deserialize)]
pub struct BreakerIn {
    /// State.
    pub state: BreakerState,
}

/// Every alert this tool raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AlertName {
    /// Node state critical.
    NodeCritical,
    /// Node state degraded.
    NodeDegraded,
    /// Node state unknown though the node answered (sections missing).
    NodeDataMissing,
    /// Node could not be reached.
    NodeUnreachable,
    /// Breaker open for the node.
    NodeCircuitOpen,
    /// Too many nodes unhealthy at once, or a breaker fleet verdict.
    ClusterDegraded,
    /// Always firing heartbeat.
    Watchdog,
    /// Fatal XID on a GPU.
    GpuXidFatal,
    /// Non-fatal XID.
    GpuXid,
    /// Remapped rows pending or failed.
    GpuRowRemapFailure,
    /// ECC errors.
    GpuEccErrors,
    /// Temperature.
    GpuThermal,
    /// Clock slowdown.
    GpuThrottled,
    /// PCIe link below its maximum.
    GpuPcieDegraded,
    /// GPU lost or missing.
    GpuLost,
    /// ugro-watch cannot write its state directory or state files.
    WatcherStateUnwritable,
}

impl AlertName {
    /// The `alertname` label.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertName::NodeCritical => "NodeCritical",
            AlertName::NodeDegraded => "NodeDegraded",
            AlertName::NodeDataMissing => "NodeDataMissing",
            AlertName::NodeUnreachable => "NodeUnreachable",
            AlertName::NodeCircuitOpen => "NodeCircuitOpen",
            AlertName::ClusterDegraded => "ClusterDegraded",
            AlertName::Watchdog => "Watchdog",
            AlertName::GpuXidFatal => "GpuXidFatal",
            AlertName::GpuXid => "GpuXid",
            AlertName::GpuRowRemapFailure => "GpuRowRemapFailure",
            AlertName::GpuEccErrors => "GpuEccErrors",
            AlertName::GpuThermal => "GpuThermal",
            AlertName::GpuThrottled => "GpuThrottled",
            AlertName::GpuPcieDegraded => "GpuPcieDegraded",
            AlertName::GpuLost => "GpuLost",
            AlertName::WatcherStateUnwritable => "WatcherStateUnwritable",
        }
    }
}

/// The catalog entry for a score reason, if it has its own alert. Codes are matched by what
/// they contain so that new codes from `ugro-score` in a known family still land.
pub fn catalog(code: &str, component: &str, fatal: bool) -> Option<AlertName> {
    let c = code.to_ascii_lowercase();
    let has = |s: &str| c.contains(s);
    if has("unreachable") {
        return None;
    }
    if has("xid") {
        return Some(if fatal {
            AlertName::GpuXidFatal
        } else {
            AlertName::GpuXid
        });
    }
    if has("remap") {
        return Some(AlertName::GpuRowRemapFailure);
    }
    if has("ecc") {
        return Some(AlertName::GpuEccErrors);
    }
    if component != "gpu" {
        return None;
    }
    if has("temp") || has("thermal") {
        return Some(AlertName::GpuThermal);
    }
    if has("throttl") || has("slowdown") || has("power_brake") {
        return Some(AlertName::GpuThrottled);
    }
    if has("pcie") {
        return Some(AlertName::GpuPcieDegraded);
    }
    if has("lost") || has("missing") || has("fallen") {
        return Some(AlertName::GpuLost);
    }
    None
}

/// Severity label values.
pub const CRITICAL: &str = "critical";
/// Severity label values.
pub const WARNING: &str = "warning";
/// Severity label values.
pub const INFO: &str = "info";
/// Severity of the Watchdog (Prometheus convention).
pub const NONE: &str = "none";

/// One condition a sample asks for: the alert's identity within the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Want {
    /// Alert name.
    pub name: AlertName,
    /// GPU index.
    pub gpu: Option<u32>,
    /// Severity.
    pub critical: bool,
}

impl Want {
    /// The severity label.
    pub fn severity(&self) -> &'static str {
        if self.critical { CRITICAL } else { WARNING }
    }
}

/// The conditions a scored sample of a reachable node asks for, sorted. Reason alerts are
/// raised only when the node as a whole is degraded or critical, so small deductions on a
/// healthy node stay quiet.
pub fn wants_for(score: &ScoreIn<'_>, out: &mut Vec<Want>) {
    out.clear();
    let critical = match score.state {
        HealthState::Critical => true,
        HealthState::Degraded => false,
        HealthState::Healthy | HealthState::Unknown => return,
    };
    out.push(Want {
        name: if critical {
            AlertName::NodeCritical
        } else {
            AlertName::NodeDegraded
        },
        gpu: None,
        critical,
    });
    for r in &score.reasons {
        if let Some(name) = catalog(&r.code, &r.component, r.fatal) {
            let w = Want {
                name,
                gpu: r.gpu,
                critical: r.fatal || critical,
            };
            if !out.iter().any(|x| x.name == w.name && x.gpu == w.gpu) {
                out.push(w);
            }
        }
    }
    out.sort_unstable();
}

/// Annotations for a condition raised by a sample.
pub fn sample_annotations(
    w: &Want,
    node: &str,
    score: Option<&ScoreIn<'_>>,
    runbook: Option<&str>,
) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    let total = score
        .and_then(|s| s.total)
        .map(|t| format!(" (score {t:.0})"))
        .unwrap_or_default();
    let summary_line = score.map(|s| s.summary.to_string()).unwrap_or_default();
    let reason = score.and_then(|s| {
        s.reasons
            .iter()
            .find(|r| catalog(&r.code, &r.component, r.fatal) == Some(w.name) && r.gpu == w.gpu)
    });
    let (summary, description, action) = match (w.name, reason) {
        (AlertName::NodeUnreachable, _) => (
            format!("{node} is unreachable"),
            summary_line,
            Action::CheckNetwork.as_str().to_owned(),
        ),
        (AlertName::NodeDataMissing, _) => (
            format!("{node} health is unknown: data missing"),
            summary_line,
            score.map_or_else(
                || Action::CheckHost.as_str().to_owned(),
                |s| s.action.to_string(),
            ),
        ),
        (AlertName::NodeCritical, _) => (
            format!("{node} is critical{total}"),
            summary_line,
            score.map_or_else(
                || Action::None.as_str().to_owned(),
                |s| s.action.to_string(),
            ),
        ),
        (AlertName::NodeDegraded, _) => (
            format!("{node} is degraded{total}"),
            summary_line,
            score.map_or_else(
                || Action::None.as_str().to_owned(),
                |s| s.action.to_string(),
            ),
        ),
        (_, Some(r)) => {
            let gpu = r.gpu.map(|g| format!("GPU {g} on ")).unwrap_or_default();
            (
                format!("{gpu}{node}: {}", r.message),
                format!("{} ({})", r.message, r.code),
                r.action.to_string(),
            )
        }
        (name, None) => (
            format!("{} on {node}", name.as_str()),
            summary_line,
            score.map_or_else(
                || Action::None.as_str().to_owned(),
                |s| s.action.to_string(),
            ),
        ),
    };
    a.insert("summary".into(), summary);
    a.insert("description".into(), description);
    let action = if action.is_empty() {
        Action::None.as_str().to_owned()
    } else {
        action
    };
    a.insert("action".into(), action);
    if let Some(base) = runbook {
        a.insert("runbook_url".into(), runbook_url(base, w.name.as_str()));
    }
    a
}

/// `base` + `/` + alert name.
pub fn runbook_url(base: &str, name: &str) -> String {
    format!("{}/{name}", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(json: &str) -> ScoreIn<'_> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn catalog_names_the_gpu_families() {
        assert_eq!(
            catalog("xid_fatal", "gpu", true),
            Some(AlertName::GpuXidFatal)
        );
        assert_eq!(catalog("xid_seen", "gpu", false), Some(AlertName::GpuXid));
        assert_eq!(
            catalog("row_remap_failure", "gpu", true),
            Some(AlertName::GpuRowRemapFailure)
        );
        assert_eq!(
            catalog("gpu_temperature_high", "gpu", false),
            Some(AlertName::GpuThermal)
        );
        assert_eq!(catalog("disk_full", "system", false), None);
        assert_eq!(catalog("node_unreachable", "network", true), None);
    }

    #[test]
    fn critical_node_with_fatal_xid_asks_for_node_and_gpu_alerts() {
        let s = score(
            r#"{"state":"critical","action":"reset_gpu","summary":"xid 79","reasons":[
            {"code":"xid_fatal","component":"gpu","gpu":3,"deduction":100,"fatal":true,"action":"reset_gpu","message":"XID 79"},
            {"code":"gpu_temperature_high","component":"gpu","gpu":1,"deduction":10,"action":"none","message":"hot"}]}"#,
        );
        let mut w = Vec::new();
        wants_for(&s, &mut w);
        let names: Vec<_> = w
            .iter()
            .map(|w| (w.name.as_str(), w.gpu, w.severity()))
            .collect();
        assert!(names.contains(&("NodeCritical", None, "critical")));
        assert!(names.contains(&("GpuXidFatal", Some(3), "critical")));
        assert!(names.contains(&("GpuThermal", Some(1), "critical")));
    }

    #[test]
    fn healthy_node_asks_for_nothing_even_with_small_deductions() {
        let s = score(
            r#"{"state":"healthy","action":"none","summary":"ok","reasons":[
            {"code":"gpu_temperature_high","component":"gpu","gpu":1,"deduction":5,"action":"none","message":"warm"}]}"#,
        );
        let mut w = vec![];
        wants_for(&s, &mut w);
        assert!(w.is_empty());
    }
}
