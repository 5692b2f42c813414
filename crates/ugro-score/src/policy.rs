//! The XID policy: what each XID means, how bad it is and what to do about it.
//!
//! The shipped policy (`policy/xid-policy.yaml`) is embedded in the binary; a site file of the
//! same shape is merged over it field by field, so a site states only what it changes. Some
//! XIDs carry their verdict in the driver's message (NVLink 5's Fatal/Nonfatal, XID 154's new
//! recovery action): their entries hold `message_rules`, tried in order on each event.

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

/// A rule that reads the verdict from the event's message, as written in a policy file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageRuleEntry {
    /// Matches when the message has this whole word (any case).
    #[serde(default)]
    pub word: Option<String>,
    /// Matches when the message contains this text (any case).
    #[serde(default)]
    pub contains: Option<String>,
    /// What the event means when this rule matches (default: the entry's meaning).
    #[serde(default)]
    pub meaning: Option<String>,
    /// Severity when it matches (default: the entry's).
    #[serde(default)]
    pub severity: Option<XidSeverity>,
    /// Action when it matches (default: the entry's).
    #[serde(default)]
    pub action: Option<Action>,
    /// Deduction when it matches (default: the entry's, or the severity's default).
    #[serde(default)]
    pub deduction: Option<f64>,
}

/// One XID's entry as written in a policy file: every field optional so a site file can
/// override a single one.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XidEntry {
    /// What the XID means.
    #[serde(default)]
    pub meaning: Option<String>,
    /// The catalog's immediate-action bucket the entry was checked against (documentation).
    #[serde(default)]
    pub bucket: Option<String>,
    /// Why the entry departs from its bucket, or how it is judged (documentation).
    #[serde(default)]
    pub note: Option<String>,
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
    /// Verdicts read from the message, first match wins.
    #[serde(default)]
    pub message_rules: Option<Vec<MessageRuleEntry>>,
    /// Not scored on GPUs that report row remapping (the remapped-rows readings decide).
    #[serde(default)]
    pub defer_to_remapped_rows: Option<bool>,
    /// Reboots after which a repeat of this XID needs hardware inspection (default: the
    /// policy's `reboots.threshold`).
    #[serde(default)]
    pub reboot_threshold: Option<u32>,
}

impl XidEntry {
    fn merge(&mut self, over: XidEntry) {
        // A layer that states the verdict is final: the message rules and the deferral of the
        // layers below do not second-guess it unless it restates them.
        if over.severity.is_some() || over.action.is_some() {
            self.message_rules = None;
            self.defer_to_remapped_rows = None;
        }
        fn set<T>(dst: &mut Option<T>, src: Option<T>) {
            if src.is_some() {
                *dst = src;
            }
        }
        set(&mut self.meaning, over.meaning);
        set(&mut self.bucket, over.bucket);
        set(&mut self.note, over.note);
        set(&mut self.severity, over.severity);
        set(&mut self.action, over.action);
        set(&mut self.deduction, over.deduction);
        set(&mut self.escalate, over.escalate);
        set(&mut self.message_rules, over.message_rules);
        set(
            &mut self.defer_to_remapped_rows,
            over.defer_to_remapped_rows,
        );
        set(&mut self.reboot_threshold, over.reboot_threshold);
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

/// Which catalog the policy follows.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogRef {
    /// Where the catalog is published.
    #[serde(default)]
    pub source: String,
    /// Which revision of it the entries were checked against.
    #[serde(default)]
    pub revision: String,
}

/// A history rule as written: window and action, both optional in a site file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryRuleEntry {
    /// Reboots (for `reboots`), ignored for `recurrence`.
    #[serde(default)]
    pub threshold: Option<u32>,
    /// How far back the history rule looks.
    #[serde(default, with = "humantime_serde")]
    pub window: Option<Duration>,
    /// The action it recommends.
    #[serde(default)]
    pub action: Option<Action>,
}

impl HistoryRuleEntry {
    fn merge(&mut self, over: HistoryRuleEntry) {
        self.threshold = over.threshold.or(self.threshold);
        self.window = over.window.or(self.window);
        self.action = over.action.or(self.action);
    }
}

/// A policy file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// The policy data's own revision.
    #[serde(default)]
    pub version: Option<u32>,
    /// The catalog revision it follows.
    #[serde(default)]
    pub catalog: Option<CatalogRef>,
    /// Default deductions.
    #[serde(default)]
    pub deductions: Deductions,
    /// The entry used for XIDs that are not listed.
    #[serde(default)]
    pub unknown: Option<XidEntry>,
    /// The same fatal XID again within a window.
    #[serde(default)]
    pub recurrence: Option<HistoryRuleEntry>,
    /// The same XID after reboots.
    #[serde(default)]
    pub reboots: Option<HistoryRuleEntry>,
    /// Per XID.
    #[serde(default)]
    pub xids: BTreeMap<u32, XidEntry>,
}

/// Severity, action and points: what an event costs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// How it is treated.
    pub severity: XidSeverity,
    /// Recommended action.
    pub action: Action,
    /// Points taken from the GPU.
    pub deduction: f64,
}

/// How a message rule recognises its events.
#[derive(Debug, Clone, PartialEq)]
pub enum Matcher {
    /// A whole word, any case.
    Word(String),
    /// A substring, any case.
    Contains(String),
}

impl Matcher {
    /// Whether `message` matches.
    pub fn matches(&self, message: &str) -> bool {
        match self {
            Matcher::Word(w) => message
                .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .any(|t| t.eq_ignore_ascii_case(w)),
            Matcher::Contains(s) => contains_ci(message, s),
        }
    }
}

/// Case-insensitive substring test without allocating.
pub(crate) fn contains_ci(hay: &str, needle: &str) -> bool {
    needle.is_empty()
        || hay
            .as_bytes()
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// A resolved message rule.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageRule {
    /// What it looks for.
    pub matcher: Matcher,
    /// The meaning when it matches (the entry's when not given).
    pub meaning: Option<String>,
    /// The verdict when it matches.
    pub verdict: Verdict,
}

/// A resolved rule: what the scorer applies.
#[derive(Debug, Clone, PartialEq)]
pub struct XidRule {
    /// What the XID means.
    pub meaning: String,
    /// The catalog bucket it was checked against.
    pub bucket: Option<String>,
    /// Why it departs from its bucket.
    pub note: Option<String>,
    /// How it is treated.
    pub severity: XidSeverity,
    /// Recommended action.
    pub action: Action,
    /// Points taken from the GPU.
    pub deduction: f64,
    /// Count-in-window escalation.
    pub escalate: Option<Escalate>,
    /// Verdicts read from the message, first match wins.
    pub message_rules: Vec<MessageRule>,
    /// Not scored where the GPU reports row remapping.
    pub defer_to_remapped_rows: bool,
    /// Per-XID reboot threshold.
    pub reboot_threshold: Option<u32>,
}

impl XidRule {
    /// The entry's own verdict.
    pub fn verdict(&self) -> Verdict {
        Verdict {
            severity: self.severity,
            action: self.action,
            deduction: self.deduction,
        }
    }

    /// The verdict for one event: the first message rule that matches its message (its
    /// position from 1), else the entry's own (0).
    pub fn judge(&self, message: Option<&str>) -> (usize, Verdict, &str) {
        if let Some(m) = message {
            for (i, r) in self.message_rules.iter().enumerate() {
                if r.matcher.matches(m) {
                    let meaning = r.meaning.as_deref().unwrap_or(&self.meaning);
                    return (i + 1, r.verdict, meaning);
                }
            }
        }
        (0, self.verdict(), &self.meaning)
    }
}

/// The same fatal XID on the same GPU again within `window`.
#[derive(Debug, Clone, PartialEq)]
pub struct Recurrence {
    /// How far back.
    pub window: Duration,
    /// What it then needs.
    pub action: Action,
}

/// The same XID again `threshold` reboots after its first sighting within `window`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reboots {
    /// Reboots between the first and the current sighting.
    pub threshold: u32,
    /// How far back the first sighting may be.
    pub window: Duration,
    /// What it then needs.
    pub action: Action,
}

/// The merged, validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct XidPolicy {
    rules: BTreeMap<u32, XidRule>,
    unknown: XidRule,
    /// The policy data's revision (0 when no layer states one).
    pub version: u32,
    /// The catalog it follows.
    pub catalog: Option<CatalogRef>,
    /// The recurrence rule.
    pub recurrence: Recurrence,
    /// The reboot rule.
    pub reboots: Reboots,
}

const SHIPPED_NAME: &str = "<shipped xid-policy.yaml>";

impl XidPolicy {
    /// The shipped policy.
    pub fn shipped() -> Result<XidPolicy, ConfigError> {
        Self::build(&[(Path::new(SHIPPED_NAME), SHIPPED_POLICY)])
    }

    /// A policy with no entries: every XID gets the built-in `unknown` rule.
    pub fn empty() -> XidPolicy {
        XidPolicy {
            rules: BTreeMap::new(),
            unknown: default_unknown(),
            version: 0,
            catalog: None,
            recurrence: resolve_recurrence(None),
            reboots: resolve_reboots(None),
        }
    }

    /// The shipped policy with `site` (path, text) merged over it.
    pub fn with_site(path: &Path, text: &str) -> Result<XidPolicy, ConfigError> {
        Self::build(&[(Path::new(SHIPPED_NAME), SHIPPED_POLICY), (path, text)])
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
            merge_layer(&mut merged, layer, i, &mut origin);
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
        let mut rules = BTreeMap::new();
        for (code, e) in &merged.xids {
            let r = resolve(&merged.deductions, e).map_err(|(f, m)| bad(Some(*code), f, m))?;
            rules.insert(*code, r);
        }
        let unknown = match &merged.unknown {
            Some(e) => resolve(&merged.deductions, e).map_err(|(f, m)| bad(None, f, m))?,
            None => default_unknown(),
        };
        Ok(XidPolicy {
            rules,
            unknown,
            version: merged.version.unwrap_or(0),
            catalog: merged.catalog,
            recurrence: resolve_recurrence(merged.recurrence.as_ref()),
            reboots: resolve_reboots(merged.reboots.as_ref()),
        })
    }

    /// The rule for `code` (the `unknown` rule when it is not listed), and whether it is listed.
    pub fn rule(&self, code: u32) -> (&XidRule, bool) {
        match self.rules.get(&code) {
            Some(r) => (r, true),
            None => (&self.unknown, false),
        }
    }

    /// Every listed rule, by code.
    pub fn rules(&self) -> impl Iterator<Item = (u32, &XidRule)> {
        self.rules.iter().map(|(c, r)| (*c, r))
    }

    /// The longest window any XID rule looks back over (how long XID history is kept).
    pub fn longest_window(&self) -> Duration {
        self.rules
            .values()
            .chain(std::iter::once(&self.unknown))
            .filter_map(|r| r.escalate.as_ref().map(|e| e.window))
            .chain([self.recurrence.window, self.reboots.window])
            .max()
            .unwrap_or(Duration::ZERO)
    }
}

fn merge_layer(
    merged: &mut PolicyFile,
    layer: PolicyFile,
    i: usize,
    origin: &mut BTreeMap<Option<u32>, usize>,
) {
    merged.version = layer.version.or(merged.version);
    if layer.catalog.is_some() {
        merged.catalog = layer.catalog;
    }
    let d = &mut merged.deductions;
    d.fatal = layer.deductions.fatal.or(d.fatal);
    d.warning = layer.deductions.warning.or(d.warning);
    d.application = layer.deductions.application.or(d.application);
    for (dst, src) in [
        (&mut merged.recurrence, layer.recurrence),
        (&mut merged.reboots, layer.reboots),
    ] {
        if let Some(s) = src {
            dst.get_or_insert_with(HistoryRuleEntry::default).merge(s);
        }
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

fn default_deduction(d: &Deductions, severity: XidSeverity) -> f64 {
    let (configured, builtin) = match severity {
        XidSeverity::Fatal => (d.fatal, 100.0),
        XidSeverity::Warning => (d.warning, 25.0),
        XidSeverity::Application => (d.application, 5.0),
    };
    configured.unwrap_or(builtin)
}

fn check_deduction(field: &'static str, d: f64) -> Result<f64, (&'static str, String)> {
    if (0.0..=100.0).contains(&d) {
        Ok(d)
    } else {
        Err((field, format!("{d} is outside 0..=100")))
    }
}

type Invalid = (&'static str, String);

fn resolve(d: &Deductions, e: &XidEntry) -> Result<XidRule, Invalid> {
    let severity = e
        .severity
        .ok_or(("severity", "missing: fatal, warning or application".into()))?;
    let action = e.action.unwrap_or(match severity {
        XidSeverity::Application => Action::RestartApp,
        XidSeverity::Fatal => Action::ResetGpu,
        XidSeverity::Warning => Action::CheckHost,
    });
    let deduction = check_deduction(
        "deduction",
        e.deduction
            .unwrap_or_else(|| default_deduction(d, severity)),
    )?;
    if let Some(esc) = &e.escalate
        && (esc.count == 0 || esc.window.is_zero())
    {
        return Err(("escalate", "count and window must be positive".into()));
    }
    let entry = Verdict {
        severity,
        action,
        deduction,
    };
    let message_rules = e
        .message_rules
        .iter()
        .flatten()
        .map(|m| resolve_message_rule(d, e, entry, m))
        .collect::<Result<_, _>>()?;
    Ok(XidRule {
        meaning: e.meaning.clone().unwrap_or_else(|| "no description".into()),
        bucket: e.bucket.clone(),
        note: e.note.clone(),
        severity,
        action,
        deduction,
        escalate: e.escalate.clone(),
        message_rules,
        defer_to_remapped_rows: e.defer_to_remapped_rows.unwrap_or(false),
        reboot_threshold: e.reboot_threshold,
    })
}

fn resolve_message_rule(
    d: &Deductions,
    e: &XidEntry,
    entry: Verdict,
    m: &MessageRuleEntry,
) -> Result<MessageRule, Invalid> {
    let matcher = match (&m.word, &m.contains) {
        (Some(w), None) if !w.is_empty() => Matcher::Word(w.clone()),
        (None, Some(c)) if !c.is_empty() => Matcher::Contains(c.clone()),
        _ => {
            return Err((
                "message_rules",
                "each rule needs exactly one non-empty `word` or `contains`".into(),
            ));
        }
    };
    let severity = m.severity.unwrap_or(entry.severity);
    // A rule that changes the severity without a deduction takes that severity's default,
    // not the entry's (a Nonfatal NVLink event is not worth a fatal's points).
    let deduction = match (m.deduction, m.severity) {
        (Some(x), _) => x,
        (None, Some(s)) if Some(s) != e.severity => default_deduction(d, s),
        _ => entry.deduction,
    };
    Ok(MessageRule {
        matcher,
        meaning: m.meaning.clone(),
        verdict: Verdict {
            severity,
            action: m.action.unwrap_or(entry.action),
            deduction: check_deduction("message_rules", deduction)?,
        },
    })
}

fn resolve_recurrence(e: Option<&HistoryRuleEntry>) -> Recurrence {
    Recurrence {
        window: e
            .and_then(|e| e.window)
            .unwrap_or(Duration::from_secs(86_400)),
        action: e
            .and_then(|e| e.action)
            .unwrap_or(Action::HardwareInspection),
    }
}

fn resolve_reboots(e: Option<&HistoryRuleEntry>) -> Reboots {
    Reboots {
        threshold: e.and_then(|e| e.threshold).unwrap_or(2),
        window: e
            .and_then(|e| e.window)
            .unwrap_or(Duration::from_secs(7 * 86_400)),
        action: e
            .and_then(|e| e.action)
            .unwrap_or(Action::HardwareInspection),
    }
}

fn default_unknown() -> XidRule {
    XidRule {
        meaning: "XID not in the policy".into(),
        bucket: None,
        note: None,
        severity: XidSeverity::Warning,
        action: Action::CheckHost,
        deduction: 10.0,
        escalate: None,
        message_rules: Vec::new(),
        defer_to_remapped_rows: false,
        reboot_threshold: None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
