//! From input records to alert conditions: what the engine reads of a line (built from
//! `ugro_types::view`), and the alert catalog.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use ugro_types::view::{
    FleetView, ReasonView, RecordView, ScoreView, TransitionView, WatcherStateView,
};
use ugro_types::{Action, Component, HealthState, Kind, ReasonCode, ReasonFamily, RecordError};

use crate::pending::Key;

/// One input record as alerting reads it: the record (header, score, breaker annotation,
/// whether the node was unreachable) in one pass, and for the breaker's own records their
/// body, read from the same line only when the kind says so.
#[derive(Debug)]
pub struct Input<'a> {
    /// Header, score, breaker annotation, unreachable.
    pub record: RecordView<'a>,
    /// The body of a `transition` record.
    pub transition: Option<TransitionView<'a>>,
    /// The body of a `fleet` record.
    pub fleet: Option<FleetView<'a>>,
    /// What a `stats` record says about ugro-watch's state (WatcherStateUnwritable).
    pub watcher: Option<WatcherStateView<'a>>,
}

impl<'a> Input<'a> {
    /// Parses one line and checks its header.
    pub fn parse(line: &'a str) -> Result<Self, RecordError> {
        let record = RecordView::parse(line)?;
        let transition = match record.kind {
            Kind::Transition => Some(TransitionView::parse(line)?),
            _ => None,
        };
        let fleet = match record.kind {
            Kind::Fleet => Some(FleetView::parse(line)?),
            _ => None,
        };
        let watcher = match record.kind {
            Kind::Stats => Some(WatcherStateView::parse(line)?),
            _ => None,
        };
        Ok(Input {
            record,
            transition,
            fleet,
            watcher,
        })
    }
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
    /// Row remapping failed: the GPU needs hardware service.
    GpuRowRemapFailure,
    /// Row remapping pending: a GPU reset applies it.
    GpuRowRemapPending,
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
    /// The node changes state too often (Nagios flap detection); its warning alerts wait.
    NodeFlapping,
    /// A trend predicts a GPU failure (score reasons with `predicted: true`): label
    /// `predicted="true"`, severity warning, apart from the alerts of present faults.
    GpuFailurePredicted,
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
            AlertName::GpuRowRemapPending => "GpuRowRemapPending",
            AlertName::GpuEccErrors => "GpuEccErrors",
            AlertName::GpuThermal => "GpuThermal",
            AlertName::GpuThrottled => "GpuThrottled",
            AlertName::GpuPcieDegraded => "GpuPcieDegraded",
            AlertName::GpuLost => "GpuLost",
            AlertName::WatcherStateUnwritable => "WatcherStateUnwritable",
            AlertName::NodeFlapping => "NodeFlapping",
            AlertName::GpuFailurePredicted => "GpuFailurePredicted",
        }
    }

    /// Every name, in declaration order.
    pub const ALL: [AlertName; 19] = [
        AlertName::NodeCritical,
        AlertName::NodeDegraded,
        AlertName::NodeDataMissing,
        AlertName::NodeUnreachable,
        AlertName::NodeCircuitOpen,
        AlertName::ClusterDegraded,
        AlertName::Watchdog,
        AlertName::GpuXidFatal,
        AlertName::GpuXid,
        AlertName::GpuRowRemapFailure,
        AlertName::GpuRowRemapPending,
        AlertName::GpuEccErrors,
        AlertName::GpuThermal,
        AlertName::GpuThrottled,
        AlertName::GpuPcieDegraded,
        AlertName::GpuLost,
        AlertName::WatcherStateUnwritable,
        AlertName::NodeFlapping,
        AlertName::GpuFailurePredicted,
    ];

    /// The name for an `alertname` label value.
    pub fn parse(s: &str) -> Option<AlertName> {
        AlertName::ALL.into_iter().find(|n| n.as_str() == s)
    }

    /// Alerts raised from a node's samples, whose timing (`for`, `keep_firing_for`) comes
    /// from `alert_rules`. The others follow events (breaker transitions, fleet records,
    /// flap detection, ugro-watch's stats) and fire when those say so.
    pub fn from_samples(self) -> bool {
        !matches!(
            self,
            AlertName::NodeCircuitOpen
                | AlertName::ClusterDegraded
                | AlertName::Watchdog
                | AlertName::NodeFlapping
                | AlertName::WatcherStateUnwritable
        )
    }

    /// The condition this alert is one severity of: NodeDegraded and NodeCritical are the
    /// node's state, so a node going from degraded to critical keeps the time it has been
    /// unhealthy (its `for` is not started again).
    pub fn family(self) -> AlertName {
        match self {
            AlertName::NodeDegraded => AlertName::NodeCritical,
            n => n,
        }
    }

    /// The built-in `for`, in samples in a row. Hard faults (a critical node, a GPU lost, a
    /// fatal XID, uncorrected ECC errors, a failed row remap, an unreachable node) fire on
    /// their third sample, two polls after they start, so neither a one-sample blip nor a
    /// two-sample burst pages; soft conditions (degraded, thermal, throttling, PCIe, warning
    /// XIDs, a pending row remap, missing data, a predicted failure) on their fourth, three
    /// polls after they start, so a three-sample spike does not either. Event alerts fire at
    /// once.
    pub fn default_for(self) -> u32 {
        match self {
            AlertName::NodeCritical
            | AlertName::GpuXidFatal
            | AlertName::GpuLost
            | AlertName::GpuEccErrors
            | AlertName::GpuRowRemapFailure
            | AlertName::NodeUnreachable => 3,
            AlertName::NodeCircuitOpen
            | AlertName::ClusterDegraded
            | AlertName::Watchdog
            | AlertName::NodeFlapping
            | AlertName::WatcherStateUnwritable => 0,
            _ => 4,
        }
    }

    /// The built-in `keep_firing_for`, in clear samples (hysteresis): a soft condition
    /// resolves on its third clear sample in a row, a hard fault on its second, so a node that
    /// comes and goes is one page, not one per return, and a recovery still resolves within 2
    /// polls.
    pub fn default_keep_firing_for(self) -> u32 {
        match self.default_for() {
            0 => 0,
            3 => 1,
            _ => 2,
        }
    }
}

/// The catalog entry for a score reason, if it has its own alert. Matched by the code's
/// family, so a code from a newer `ugro-score` in a known family still lands (see
/// [`ReasonFamily::from_name`]). The device families count only for GPU reasons.
pub fn catalog(code: &ReasonCode, component: Option<Component>, fatal: bool) -> Option<AlertName> {
    let gpu = component == Some(Component::Gpu);
    match code.family()? {
        ReasonFamily::Unreachable => None,
        ReasonFamily::Xid if fatal => Some(AlertName::GpuXidFatal),
        ReasonFamily::Xid => Some(AlertName::GpuXid),
        ReasonFamily::RowRemap if is_pending(code) => Some(AlertName::GpuRowRemapPending),
        ReasonFamily::RowRemap => Some(AlertName::GpuRowRemapFailure),
        ReasonFamily::Ecc => Some(AlertName::GpuEccErrors),
        ReasonFamily::Thermal if gpu => Some(AlertName::GpuThermal),
        ReasonFamily::Throttle if gpu => Some(AlertName::GpuThrottled),
        ReasonFamily::Pcie if gpu => Some(AlertName::GpuPcieDegraded),
        ReasonFamily::Missing if gpu => Some(AlertName::GpuLost),
        ReasonFamily::Thermal
        | ReasonFamily::Throttle
        | ReasonFamily::Pcie
        | ReasonFamily::Missing => None,
    }
}

/// A pending row remap (a reset applies it) apart from a failed one (hardware service):
/// `row_remap_pending`, or a newer scorer's row-remap code that says `pending`.
fn is_pending(code: &ReasonCode) -> bool {
    matches!(code, ReasonCode::RowRemapPending)
        || matches!(code, ReasonCode::Other(s) if s.to_ascii_lowercase().contains("pending"))
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

/// The alert a reason raises: GpuFailurePredicted for a prediction (whatever its family, so
/// a trend never shares a name with a present fault), else its [`catalog`] entry.
fn alert_for(r: &ReasonView<'_>) -> Option<AlertName> {
    if r.predicted {
        return Some(AlertName::GpuFailurePredicted);
    }
    catalog(&r.code, r.component, r.fatal)
}

/// The conditions a scored sample of a reachable node asks for, sorted. Reason alerts are
/// raised only when the node as a whole is degraded or critical, so small deductions on a
/// healthy node stay quiet. Predictions are not present faults: they raise
/// GpuFailurePredicted (warning) only, and a node degraded by predictions alone asks for no
/// NodeDegraded.
pub fn wants_for(score: &ScoreView<'_>, out: &mut Vec<Want>) {
    out.clear();
    let critical = match score.state {
        HealthState::Critical => true,
        HealthState::Degraded => false,
        HealthState::Healthy | HealthState::Unknown => return,
    };
    let predicted_only = !score.reasons.is_empty() && score.reasons.iter().all(|r| r.predicted);
    if !predicted_only {
        out.push(Want {
            name: if critical {
                AlertName::NodeCritical
            } else {
                AlertName::NodeDegraded
            },
            gpu: None,
            critical,
        });
    }
    out.extend(score.reasons.iter().filter_map(|r| {
        alert_for(r).map(|name| Want {
            name,
            gpu: r.gpu,
            critical: !r.predicted && (r.fatal || critical),
        })
    }));
    // Sorted, then one per (name, GPU), critical if any of its reasons is: n log n, where a
    // search per reason made one sample with 10 000 lost GPUs cost seconds.
    out.sort_unstable();
    out.dedup_by(|later, kept| {
        let same = later.name == kept.name && later.gpu == kept.gpu;
        kept.critical |= same && later.critical;
        same
    });
}

/// The specific alerts that name every present (not predicted) reason of a score, for
/// [`crate::pending::cover`]; `None` when one of them has no alert of its own.
pub fn named_by(score: &ScoreView<'_>) -> Option<Vec<Key>> {
    score
        .reasons
        .iter()
        .filter(|r| !r.predicted)
        .map(|r| catalog(&r.code, r.component, r.fatal).map(|n| (n, r.gpu)))
        .collect()
}

/// Whether an XID alert of `gpu` holds on a sample whose score no longer has the XID (it
/// left the probe's lookback): it does while the node is degraded or critical and the score
/// still has a reason for that GPU, or says GPUs are missing (a GPU that fell off the bus
/// may not be listed at all). So GpuXidFatal stays beside GpuLost until the GPU is back.
pub fn xid_holds(score: &ScoreView<'_>, gpu: Option<u32>) -> bool {
    if !matches!(score.state, HealthState::Degraded | HealthState::Critical) {
        return false;
    }
    score.reasons.iter().filter(|r| !r.predicted).any(|r| {
        (gpu.is_some() && r.gpu == gpu)
            || (r.gpu.is_none()
                && r.component == Some(Component::Gpu)
                && r.code.family() == Some(ReasonFamily::Missing))
    })
}

/// Annotations for a condition raised by a sample.
pub fn sample_annotations(
    w: &Want,
    node: &str,
    score: Option<&ScoreView<'_>>,
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
            // The GPU first: a cheap comparison that spares the catalog lookup for every
            // other GPU's reasons.
            .find(|r| r.gpu == w.gpu && alert_for(r) == Some(w.name))
    });
    if let (AlertName::GpuFailurePredicted, Some(s)) = (w.name, score) {
        predicted_annotations(w.gpu, s, &mut a);
    }
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
        (AlertName::GpuFailurePredicted, Some(r)) => {
            let gpu = r.gpu.map(|g| format!("GPU {g} on ")).unwrap_or_default();
            (
                format!("{gpu}{node}: failure predicted: {}", r.message),
                predicted_description(w.gpu, score),
                r.action.to_string(),
            )
        }
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

/// The predictions of one GPU, one per line: message (code).
fn predicted_description(gpu: Option<u32>, score: Option<&ScoreView<'_>>) -> String {
    score
        .into_iter()
        .flat_map(|s| s.reasons.iter())
        .filter(|r| r.predicted && r.gpu == gpu)
        .map(|r| format!("{} ({})", r.message, r.code))
        .collect::<Vec<_>>()
        .join("\n")
}

/// GpuFailurePredicted's own annotations, from the GPU's first prediction: `trend` (its
/// code; every code, comma-separated, when several trends fire), `rate` (the reason's value),
/// `threshold` and `window`, as ugro-score wrote them.
fn predicted_annotations(
    gpu: Option<u32>,
    score: &ScoreView<'_>,
    a: &mut BTreeMap<String, String>,
) {
    let mut of_gpu = score.reasons.iter().filter(|r| r.predicted && r.gpu == gpu);
    let Some(first) = of_gpu.next() else {
        return;
    };
    let codes: Vec<String> = std::iter::once(first)
        .chain(of_gpu)
        .map(|r| r.code.to_string())
        .collect();
    a.insert("trend".into(), codes.join(","));
    let num = |v: Option<f64>| v.map(|x| format!("{x}"));
    for (k, v) in [
        ("rate", num(first.value)),
        ("threshold", num(first.threshold)),
        ("window", first.window.as_deref().map(str::to_owned)),
    ] {
        if let Some(v) = v {
            a.insert(k.into(), v);
        }
    }
}

/// `base` + `/` + alert name.
pub fn runbook_url(base: &str, name: &str) -> String {
    format!("{}/{name}", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(json: &str) -> ScoreView<'_> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn catalog_names_the_gpu_families() {
        assert_eq!(
            catalog(&ReasonCode::XidFatal, Some(Component::Gpu), true),
            Some(AlertName::GpuXidFatal)
        );
        assert_eq!(
            catalog(&ReasonCode::parse("xid_seen"), Some(Component::Gpu), false),
            Some(AlertName::GpuXid)
        );
        assert_eq!(
            catalog(&ReasonCode::RowRemapFailure, Some(Component::Gpu), true),
            Some(AlertName::GpuRowRemapFailure)
        );
        assert_eq!(
            catalog(&ReasonCode::GpuTemperatureHigh, Some(Component::Gpu), false),
            Some(AlertName::GpuThermal)
        );
        assert_eq!(
            catalog(&ReasonCode::DiskFull, Some(Component::System), false),
            None
        );
        assert_eq!(
            catalog(&ReasonCode::NodeUnreachable, Some(Component::Network), true),
            None
        );
    }

    /// The catalog as it was when codes were bare strings matched by substring.
    fn substring_catalog(code: &str, component: &str, fatal: bool) -> Option<AlertName> {
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
            return Some(if has("pending") {
                AlertName::GpuRowRemapPending
            } else {
                AlertName::GpuRowRemapFailure
            });
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

    #[test]
    fn typed_catalog_raises_what_substring_matching_raised_for_every_code() {
        let unknown = [
            "xid_storm",
            "gpu_fallen_off_bus",
            "nvlink_down",
            "Thermal_Trip",
        ];
        let codes = ReasonCode::KNOWN
            .iter()
            .cloned()
            .chain(unknown.iter().map(|c| ReasonCode::parse(c)));
        for code in codes {
            for component in ["gpu", "system", "network", "process", "future"] {
                let typed = serde_json::from_value(component.into()).ok();
                for fatal in [false, true] {
                    assert_eq!(
                        catalog(&code, typed, fatal),
                        substring_catalog(code.as_str(), component, fatal),
                        "{code} {component} {fatal}"
                    );
                }
            }
        }
    }

    #[test]
    fn one_condition_per_alert_and_gpu_critical_if_any_reason_is_fatal() {
        let s = score(
            r#"{"state":"degraded","action":"none","summary":"x","reasons":[
            {"code":"gpu_temperature_high","component":"gpu","gpu":3,"deduction":10,"action":"none","message":"a"},
            {"code":"gpu_temperature_high","component":"gpu","gpu":3,"deduction":100,"fatal":true,"action":"reset_gpu","message":"b"},
            {"code":"gpu_temperature_high","component":"gpu","gpu":2,"deduction":10,"action":"none","message":"c"}]}"#,
        );
        let mut w = Vec::new();
        wants_for(&s, &mut w);
        let got: Vec<_> = w
            .iter()
            .map(|w| (w.name.as_str(), w.gpu, w.critical))
            .collect();
        assert_eq!(
            got,
            [
                ("NodeDegraded", None, false),
                ("GpuThermal", Some(2), false),
                ("GpuThermal", Some(3), true)
            ]
        );
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
    fn a_prediction_asks_for_its_own_warning_and_no_node_alert_when_alone() {
        let s = score(
            r#"{"state":"degraded","action":"none","summary":"x","reasons":[
            {"code":"ecc_corrected_rate","component":"gpu","gpu":4,"value":250,"threshold":100,"window":"1h","predicted":true,"deduction":10,"action":"hardware_inspection","message":"250 corrected per hour"}]}"#,
        );
        let mut w = Vec::new();
        wants_for(&s, &mut w);
        assert_eq!(
            w,
            [Want {
                name: AlertName::GpuFailurePredicted,
                gpu: Some(4),
                critical: false
            }]
        );
        assert_eq!(named_by(&s), Some(vec![]), "no present reason to name");
    }

    #[test]
    fn named_by_lists_the_gpu_alerts_of_present_reasons_or_none_for_a_cause_without_one() {
        let s = score(
            r#"{"state":"critical","action":"none","summary":"x","reasons":[
            {"code":"xid_fatal","component":"gpu","gpu":3,"fatal":true,"deduction":100,"action":"reset_gpu","message":"a"},
            {"code":"ecc_corrected_rate","component":"gpu","gpu":4,"predicted":true,"deduction":10,"action":"hardware_inspection","message":"b"}]}"#,
        );
        assert_eq!(named_by(&s), Some(vec![(AlertName::GpuXidFatal, Some(3))]));
        let s = score(
            r#"{"state":"critical","action":"none","summary":"x","reasons":[
            {"code":"xid_fatal","component":"gpu","gpu":3,"fatal":true,"deduction":100,"action":"reset_gpu","message":"a"},
            {"code":"disk_full","component":"system","deduction":30,"action":"check_host","message":"b"}]}"#,
        );
        assert_eq!(named_by(&s), None);
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
