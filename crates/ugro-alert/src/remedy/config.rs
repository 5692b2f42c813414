//! A slurm_drain receiver's remediation settings: the argv per recommended action, how a node
//! is verified before it goes back into service, when remediation gives up (escalation), and
//! the quarantine budget. Defaults come from the peers and are listed in `ugro-alert --help`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use ugro_types::Action;

/// Placeholders a remediation or check template may use.
pub const PLACEHOLDERS: [&str; 4] = ["node", "gpu", "pci_bus_id", "action"];

fn d(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// `remediation:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRemediation {
    #[serde(default)]
    actions: BTreeMap<String, Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    retry_after: Option<Duration>,
    #[serde(default)]
    parallel: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    poll_interval: Option<Duration>,
}

/// `verify:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVerify {
    #[serde(default)]
    healthy_polls: Option<u32>,
    #[serde(default)]
    check: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    check_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
}

/// `escalate:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEscalate {
    #[serde(default)]
    failures: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    failure_window: Option<Duration>,
    #[serde(default)]
    recurrences: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    recurrence_window: Option<Duration>,
}

/// `budget:` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBudget {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    max_percent: Option<f64>,
    #[serde(default)]
    max_nodes: Option<u32>,
    #[serde(default, with = "humantime_serde")]
    window: Option<Duration>,
}

/// The four sections of a slurm_drain receiver beyond drain and resume.
#[derive(Debug, Default)]
pub(crate) struct RawRemedy {
    pub remediation: Option<RawRemediation>,
    pub verify: Option<RawVerify>,
    pub escalate: Option<RawEscalate>,
    pub budget: Option<RawBudget>,
}

/// What to run for one recommended action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// argv with `{node}` `{gpu}` `{pci_bus_id}` `{action}`.
    pub argv: Vec<String>,
}

/// Remediation, verification and escalation for one slurm_drain receiver.
#[derive(Debug, Clone, PartialEq)]
pub struct RemedyConfig {
    /// argv per recommended action; an action without one is not remediated (the node waits
    /// to recover on its own, then is verified).
    pub actions: BTreeMap<Action, Template>,
    /// A remediation command is killed (with its process group) after this long (10m).
    pub timeout: Duration,
    /// After a failed remediation, the next attempt waits this long (10m).
    pub retry_after: Duration,
    /// Remediation and check commands running at once (4).
    pub parallel: usize,
    /// How often a node waiting for its jobs to end is asked about again (10s).
    pub poll_interval: Duration,
    /// Consecutive healthy polls before a node goes back into service (3).
    pub healthy_polls: u32,
    /// Run after the healthy polls; exit 0 passes (none).
    pub check: Option<Template>,
    /// The check is killed after this long (10m).
    pub check_timeout: Duration,
    /// A remediated node that has not passed verification this long after the remediation has
    /// failed it (30m).
    pub verify_timeout: Duration,
    /// Failed remediations within `failure_window` that make a node need service (2).
    pub failures: u32,
    /// (7d).
    pub failure_window: Duration,
    /// Remediations of the same fault within `recurrence_window` after which its return makes
    /// the node need service instead of another remediation (2, as gpud: the same XID after two
    /// reboots asks for hardware inspection).
    pub recurrences: u32,
    /// (24h).
    pub recurrence_window: Duration,
    /// The quarantine budget.
    pub budget: BudgetConfig,
}

/// The quarantine budget (NVSentinel's circuit breaker).
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetConfig {
    /// Off: any number of nodes may be drained.
    pub enabled: bool,
    /// At most this share of the known nodes, percent (50).
    pub max_percent: Option<f64>,
    /// At most this many nodes (none).
    pub max_nodes: Option<u32>,
    /// The sliding window (5m).
    pub window: Duration,
}

impl Default for RemedyConfig {
    fn default() -> Self {
        RemedyConfig {
            actions: BTreeMap::new(),
            timeout: d(600),
            retry_after: d(600),
            parallel: 4,
            poll_interval: d(10),
            healthy_polls: 3,
            check: None,
            check_timeout: d(600),
            verify_timeout: d(1800),
            failures: 2,
            failure_window: d(7 * 86_400),
            recurrences: 2,
            recurrence_window: d(86_400),
            budget: BudgetConfig::default(),
        }
    }
}

impl Default for BudgetConfig {
    fn default() -> Self {
        BudgetConfig {
            enabled: true,
            max_percent: Some(50.0),
            max_nodes: None,
            window: d(300),
        }
    }
}

impl BudgetConfig {
    /// How many nodes ugro may hold when `known` nodes are known: the smaller of the two
    /// limits, never below one (a budget that can drain nothing would hide every fault).
    pub fn cap(&self, known: usize) -> usize {
        let share = self.max_percent.map(|p| {
            let n = (known as f64 * p / 100.0).floor();
            if n.is_finite() && n > 0.0 {
                n as usize
            } else {
                0
            }
        });
        let nodes = self.max_nodes.map(|n| n as usize);
        let cap = match (share, nodes) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => usize::MAX,
        };
        cap.max(1)
    }
}

/// The action names an argv may be given for.
pub fn action_of(name: &str) -> Option<Action> {
    match name {
        "restart_app" => Some(Action::RestartApp),
        "reset_gpu" => Some(Action::ResetGpu),
        "reboot" => Some(Action::Reboot),
        "check_host" => Some(Action::CheckHost),
        "check_network" => Some(Action::CheckNetwork),
        _ => None,
    }
}

fn template(argv: Vec<String>, field: &str) -> Result<Template, (String, String)> {
    ugro_support::template::check(&argv, &PLACEHOLDERS).map_err(|e| (field.to_owned(), e))?;
    Ok(Template { argv })
}

fn positive(
    v: Option<Duration>,
    default: Duration,
    field: &str,
) -> Result<Duration, (String, String)> {
    match v {
        Some(x) if x.is_zero() => Err((field.to_owned(), "must be positive".into())),
        Some(x) => Ok(x),
        None => Ok(default),
    }
}

fn at_least_one(v: Option<u32>, default: u32, field: &str) -> Result<u32, (String, String)> {
    match v {
        Some(0) => Err((field.to_owned(), "must be at least 1".into())),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

/// Validates the sections; an error is (field under `slurm_drain.`, why). None without a
/// `remediation:` section: the receiver then drains and resumes as before.
pub(crate) fn build(raw: RawRemedy) -> Result<Option<RemedyConfig>, (String, String)> {
    let Some(r) = raw.remediation else {
        for (set, f) in [
            (raw.verify.is_some(), "verify"),
            (raw.escalate.is_some(), "escalate"),
            (raw.budget.is_some(), "budget"),
        ] {
            if set {
                return Err((f.into(), "needs a remediation: section beside it".into()));
            }
        }
        return Ok(None);
    };
    let mut c = RemedyConfig::default();
    {
        for (name, argv) in r.actions {
            let Some(action) = action_of(&name) else {
                return Err((
                    "remediation.actions".into(),
                    format!(
                        "{name:?} is not an action that can be remediated (restart_app, reset_gpu, reboot, check_host, check_network)"
                    ),
                ));
            };
            let t = template(argv, &format!("remediation.actions.{name}"))?;
            c.actions.insert(action, t);
        }
        c.timeout = positive(r.timeout, c.timeout, "remediation.timeout")?;
        c.poll_interval = positive(
            r.poll_interval,
            c.poll_interval,
            "remediation.poll_interval",
        )?;
        // Zero is allowed here: retry at the next poll.
        c.retry_after = r.retry_after.unwrap_or(c.retry_after);
        c.parallel = match r.parallel {
            Some(0) => return Err(("remediation.parallel".into(), "must be at least 1".into())),
            Some(n) => n,
            None => c.parallel,
        };
    }
    if let Some(v) = raw.verify {
        c.healthy_polls = at_least_one(v.healthy_polls, c.healthy_polls, "verify.healthy_polls")?;
        c.check = v.check.map(|a| template(a, "verify.check")).transpose()?;
        c.check_timeout = positive(v.check_timeout, c.check_timeout, "verify.check_timeout")?;
        c.verify_timeout = positive(v.timeout, c.verify_timeout, "verify.timeout")?;
    }
    if let Some(e) = raw.escalate {
        c.failures = at_least_one(e.failures, c.failures, "escalate.failures")?;
        c.failure_window = positive(
            e.failure_window,
            c.failure_window,
            "escalate.failure_window",
        )?;
        c.recurrences = at_least_one(e.recurrences, c.recurrences, "escalate.recurrences")?;
        c.recurrence_window = positive(
            e.recurrence_window,
            c.recurrence_window,
            "escalate.recurrence_window",
        )?;
    }
    if let Some(b) = raw.budget {
        c.budget.enabled = b.enabled.unwrap_or(true);
        if let Some(p) = b.max_percent
            && !(p > 0.0 && p <= 100.0)
        {
            return Err(("budget.max_percent".into(), "must be in (0, 100]".into()));
        }
        if b.max_percent.is_some() || b.max_nodes.is_some() {
            c.budget.max_percent = b.max_percent;
            c.budget.max_nodes = b.max_nodes;
        }
        if b.max_nodes == Some(0) {
            return Err(("budget.max_nodes".into(), "must be at least 1".into()));
        }
        c.budget.window = positive(b.window, c.budget.window, "budget.window")?;
    }
    Ok(Some(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(slurm: &str) -> Result<crate::AlertConfig, String> {
        let yaml =
            format!("route:\n  receiver: d\nreceivers:\n  - name: d\n    slurm_drain:\n{slurm}");
        crate::AlertConfig::from_str(std::path::Path::new("a.yaml"), &yaml)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn bad_remediation_settings_name_the_file_line_field_and_cause() {
        let e =
            load("      remediation:\n        actions:\n          reset_gpu: [ssh, \"{host}\"]\n")
                .unwrap_err();
        assert!(
            e.contains("a.yaml") && e.contains("remediation.actions.reset_gpu"),
            "{e}"
        );
        assert!(e.contains("unknown placeholder {host}"), "{e}");
        let e = load("      remediation:\n        actions:\n          reseat: [x]\n").unwrap_err();
        assert!(e.contains("\"reseat\" is not an action"), "{e}");
        let e = load("      budget: {max_nodes: 2}\n").unwrap_err();
        assert!(
            e.contains("slurm_drain.budget") && e.contains("needs a remediation"),
            "{e}"
        );
        let e = load("      remediation: {}\n      verify: {healthy_polls: 0}\n").unwrap_err();
        assert!(e.contains("verify.healthy_polls"), "{e}");
    }

    #[test]
    fn remediation_settings_default_from_the_peers() {
        let c = load("      remediation:\n        actions:\n          reboot: [ipmitool, power, cycle, \"{node}\"]\n")
            .unwrap();
        let r = c.receivers.values().find_map(|r| match &r.kind {
            crate::config::ReceiverKind::SlurmDrain { remedy, .. } => remedy.clone(),
            _ => None,
        });
        let r = r.unwrap();
        assert_eq!(r.actions[&Action::Reboot].argv[3], "{node}");
        assert_eq!((r.failures, r.recurrences, r.healthy_polls), (2, 2, 3));
        assert_eq!(r.budget.cap(100), 50);
        assert!(load("      act: true\n").is_ok(), "no remediation: none");
    }

    #[test]
    fn the_budget_is_the_smaller_limit_and_never_zero() {
        let b = BudgetConfig::default();
        assert_eq!(b.cap(10), 5);
        assert_eq!(b.cap(1), 1);
        assert_eq!(b.cap(0), 1);
        let b = BudgetConfig {
            max_nodes: Some(2),
            ..BudgetConfig::default()
        };
        assert_eq!(b.cap(10), 2);
        assert_eq!(b.cap(3), 1);
        let b = BudgetConfig {
            max_percent: None,
            max_nodes: Some(3),
            ..BudgetConfig::default()
        };
        assert_eq!(b.cap(100), 3);
    }
}
