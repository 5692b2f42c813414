//! The XID policy: what each XID means, how bad it is and what to do about it.
//!
//! The shipped policy (`policy/xid-policy.yaml`) is embedded in the binary; a site file of the
//! same shape is merged over it field by field, so a site states only what it changes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use ugro_support::config::{ConfigError, parse_yaml};
use ugro_types::Action;

/// The shipped policy text.
pub const SHIPPED_POLICY: &str = include_str!("../policy/xid-policy.yaml");

/// How an XID is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XidSeverity {
    /// Forces the node to critical.
    Fatal,
    /// Costs the GPU points.
    Warning,
    /// An application fault: small deduction, restart the application.
    Application,
}

impl XidSeverity {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            XidSeverity::Fatal => "fatal",
            XidSeverity::Warning => "warning",
            XidSeverity::Application => "application",
        }
    }
}

/// Repeated events escalate.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalate {
    /// Events within `window` (same node and GPU) that trigger the escalation.
    pub count: u32,
    /// The window, a humantime duration (`10m`, `24h`).
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Severity once escalated (default: unchanged).
    #[serde(default)]
    pub severity: Option<XidSeverity>,
    /// Action once escalated (default: unchanged).
    #[serde(default)]
    pub action: Option<Action>,
}

/// One XID's entry as written in a policy file: every field optional so a site file can
/// override a single one.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XidEntry {
    /// What the XID means.
    #[serde(default)]
    pub meaning: Option<String>,
    /// How it is treated.
    #[serde(default)]
    pub severity: Option<XidSeverity>,
    /// Recommended action.
    #[serde(default)]
    pub action: Option<Action>,
    /// Points taken from the GPU (default: `deductions.<severity>`).
    #[serde(default)]
    pub deduction: Option<f64>,
    /// Count-in-window escalation.
    #[serde(default)]
    pub escalate: Option<Escalate>,
}

impl XidEntry {
    fn merge(&mut self, over: XidEntry) {
        if over.meaning.is_some() {
            self.meaning = over.meaning;
        }
        if over.severity.is_some() {
            self.severity = over.severity;
        }
        if over.action.is_some() {
            self.action = over.action;
        }
        if over.deduction.is_some() {
            self.deduction = over.deduction;
        }
        if over.escalate.is_some() {
            self.escalate = over.escalate;
        }
    }
}

/// Default deductions per severity.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deductions {
    /// For fatal XIDs.
    #[serde(default)]
    pub fatal: Option<f64>,
    /// For warnings.
    #[serde(default)]
    pub warning: Option<f64>,
    /// For application faults.
    #[serde(default)]
    pub application: Option<f64>,
}

/// A policy file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Default deductions.
    #[serde(default)]
    pub deductions: Deductions,
    /// The entry used for XIDs that are not listed.
    #[serde(default)]
    pub unknown: Option<XidEntry>,
    /// Per XID.
    #[serde(default)]
    pub xids: BTreeMap<u32, XidEntry>,
}

/// A resolved rule: what the scorer applies.
#[derive(Debug, Clone, PartialEq)]
pub struct XidRule {
    /// What the XID means.
    pub meaning: String,
    /// How it is treated.
    pub severity: XidSeverity,
    /// Recommended action.
    pub action: Action,
    /// Points taken from the GPU.
    pub deduction: f64,
    /// Count-in-window escalation.
    pub escalate: Option<Escalate>,
}

/// The merged, validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct XidPolicy {
    rules: BTreeMap<u32, XidRule>,
    unknown: XidRule,
}

impl XidPolicy {
    /// The shipped policy.
    pub fn shipped() -> Result<XidPolicy, ConfigError> {
        Self::build(&[(Path::new("<shipped xid-policy.yaml>"), SHIPPED_POLICY)])
    }

    /// A policy with no entries: every XID gets the built-in `unknown` rule.
    pub fn empty() -> XidPolicy {
        XidPolicy {
            rules: BTreeMap::new(),
            unknown: default_unknown(),
        }
    }

    /// The shipped policy with `site` (path, text) merged over it.
    pub fn with_site(path: &Path, text: &str) -> Result<XidPolicy, ConfigError> {
        Self::build(&[
            (Path::new("<shipped xid-policy.yaml>"), SHIPPED_POLICY),
            (path, text),
        ])
    }

    /// The shipped policy merged with the file at `path`.
    pub fn load_site(path: &Path) -> Result<XidPolicy, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::with_site(path, &text)
    }

    fn build(layers: &[(&Path, &str)]) -> Result<XidPolicy, ConfigError> {
        let mut merged = PolicyFile::default();
        // Where each entry was last touched, so a validation error names the right file.
        let mut origin: BTreeMap<Option<u32>, usize> = BTreeMap::new();
        for (i, (path, text)) in layers.iter().enumerate() {
            let layer: PolicyFile = parse_yaml(path, text)?;
            if layer.deductions.fatal.is_some() {
                merged.deductions.fatal = layer.deductions.fatal;
            }
            if layer.deductions.warning.is_some() {
                merged.deductions.warning = layer.deductions.warning;
            }
            if layer.deductions.application.is_some() {
                merged.deductions.application = layer.deductions.application;
            }
            if let Some(u) = layer.unknown {
                merged
                    .unknown
                    .get_or_insert_with(XidEntry::default)
                    .merge(u);
                origin.insert(None, i);
            }
            for (code, e) in layer.xids {
                merged.xids.entry(code).or_default().merge(e);
                origin.insert(Some(code), i);
            }
        }
        let (last_path, last_text) = layers.last().copied().unwrap_or((Path::new("-"), ""));
        let bad = |key: Option<u32>, field: &str, msg: String| {
            let (p, t) = origin
                .get(&key)
                .and_then(|&i| layers.get(i).copied())
                .unwrap_or((last_path, last_text));
            let name = key.map_or_else(|| "unknown".to_owned(), |c| format!("xids.{c}"));
            ConfigError::invalid(p, t, &format!("{name}.{field}"), msg)
        };
        let defaults = &merged.deductions;
        let resolve = |key: Option<u32>, e: &XidEntry| -> Result<XidRule, ConfigError> {
            let severity = e.severity.ok_or_else(|| {
                bad(
                    key,
                    "severity",
                    "missing: fatal, warning or application".into(),
                )
            })?;
            let action = e.action.unwrap_or(match severity {
                XidSeverity::Application => Action::RestartApp,
                XidSeverity::Fatal => Action::ResetGpu,
                XidSeverity::Warning => Action::CheckHost,
            });
            let deduction = e.deduction.or(match severity {
                XidSeverity::Fatal => defaults.fatal,
                XidSeverity::Warning => defaults.warning,
                XidSeverity::Application => defaults.application,
            });
            let deduction = deduction.unwrap_or(match severity {
                XidSeverity::Fatal => 100.0,
                XidSeverity::Warning => 25.0,
                XidSeverity::Application => 5.0,
            });
            if !(0.0..=100.0).contains(&deduction) {
                return Err(bad(
                    key,
                    "deduction",
                    format!("{deduction} is outside 0..=100"),
                ));
            }
            if let Some(esc) = &e.escalate
                && (esc.count == 0 || esc.window.is_zero())
            {
                return Err(bad(
                    key,
                    "escalate",
                    "count and window must be positive".into(),
                ));
            }
            Ok(XidRule {
                meaning: e.meaning.clone().unwrap_or_else(|| "no description".into()),
                severity,
                action,
                deduction,
                escalate: e.escalate.clone(),
            })
        };
        let mut rules = BTreeMap::new();
        for (code, e) in &merged.xids {
            rules.insert(*code, resolve(Some(*code), e)?);
        }
        let unknown = match &merged.unknown {
            Some(e) => resolve(None, e)?,
            None => default_unknown(),
        };
        Ok(XidPolicy { rules, unknown })
    }

    /// The rule for `code` (the `unknown` rule when it is not listed), and whether it is listed.
    pub fn rule(&self, code: u32) -> (&XidRule, bool) {
        match self.rules.get(&code) {
            Some(r) => (r, true),
            None => (&self.unknown, false),
        }
    }

    /// The longest escalation window in the policy (how long XID history is kept).
    pub fn longest_window(&self) -> Duration {
        self.rules
            .values()
            .chain(std::iter::once(&self.unknown))
            .filter_map(|r| r.escalate.as_ref().map(|e| e.window))
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

fn default_unknown() -> XidRule {
    XidRule {
        meaning: "XID not in the policy".into(),
        severity: XidSeverity::Warning,
        action: Action::CheckHost,
        deduction: 10.0,
        escalate: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn shipped_policy_has_nvidias_fatal_and_application_xids() {
        let p = XidPolicy::shipped().unwrap();
        for code in [48, 64, 74, 79, 95, 119, 120, 140, 143] {
            let (r, listed) = p.rule(code);
            assert!(listed, "{code} not listed");
            assert_eq!(r.severity, XidSeverity::Fatal, "xid {code}");
        }
        for code in [13, 31, 43, 45] {
            assert_eq!(
                p.rule(code).0.severity,
                XidSeverity::Application,
                "xid {code}"
            );
            assert_eq!(p.rule(code).0.action, Action::RestartApp);
        }
        for code in [61, 62, 63, 69, 92, 94] {
            assert!(p.rule(code).1, "{code} not listed");
        }
        let esc = p.rule(94).0.escalate.clone().unwrap();
        assert_eq!(esc.count, 3);
        assert_eq!(esc.window, Duration::from_secs(600));
    }

    #[test]
    fn site_file_overrides_single_fields_and_adds_entries() {
        let site = "xids:\n  31:\n    severity: warning\n    deduction: 12\n  999:\n    severity: fatal\n    action: reboot\n";
        let p = XidPolicy::with_site(Path::new("site.yaml"), site).unwrap();
        let (r31, _) = p.rule(31);
        assert_eq!(r31.severity, XidSeverity::Warning);
        assert_eq!(r31.deduction, 12.0);
        assert_eq!(
            r31.action,
            Action::RestartApp,
            "action kept from the shipped file"
        );
        assert!(r31.meaning.contains("page fault"));
        assert_eq!(p.rule(999).0.action, Action::Reboot);
        assert_eq!(p.rule(999).0.deduction, 100.0);
    }

    #[test]
    fn unlisted_xid_uses_the_unknown_rule() {
        let p = XidPolicy::shipped().unwrap();
        let (r, listed) = p.rule(4242);
        assert!(!listed);
        assert_eq!(r.severity, XidSeverity::Warning);
    }

    #[test]
    fn bad_site_file_names_file_line_and_field() {
        let site = "xids:\n  13:\n    severity: deadly\n";
        let e = XidPolicy::with_site(Path::new("site.yaml"), site).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("site.yaml:3: xids"), "{msg}");
        let site = "xids:\n  500:\n    action: reboot\n";
        let msg = XidPolicy::with_site(Path::new("site.yaml"), site)
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("site.yaml:") && msg.contains("severity"),
            "{msg}"
        );
    }
}
