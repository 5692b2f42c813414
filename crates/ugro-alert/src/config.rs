//! The configuration file: global settings, the routing tree, receivers, inhibit rules and
//! the silences file. Parsed with `ugro_support::config`, so every error names the file, the
//! line and the field.

mod ranges;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use ugro_support::config::{ConfigError, parse_yaml};
use ugro_types::{LabelSet, Timestamp};

use crate::flap::FlapConfig;
use crate::matcher::{Matcher, SilenceMatcher, valid_label_name, valid_label_value};
use crate::pending::{Hold, Timing};
use crate::rules::AlertName;

fn d(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Raw YAML document.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    global: RawGlobal,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    route: Option<RawRoute>,
    #[serde(default)]
    receivers: Vec<RawReceiver>,
    #[serde(default)]
    inhibit_rules: Vec<RawInhibit>,
    #[serde(default)]
    silences_file: Option<PathBuf>,
    #[serde(default)]
    alert_rules: BTreeMap<String, RawRule>,
    #[serde(default)]
    flap_detection: RawFlap,
}

/// `alert_rules.<AlertName>`: the rule's timing.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "for")]
    hold: Option<RawHold>,
    keep_firing_for: Option<RawHold>,
}

/// `for: 3` (samples in a row), `for: 3 samples`, or `for: 30s` (record time).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawHold {
    Samples(u32),
    Text(String),
}

impl RawHold {
    fn parse(self) -> Result<Hold, String> {
        let text = match self {
            RawHold::Samples(n) => return Ok(Hold::Samples(n)),
            RawHold::Text(t) => t,
        };
        let t = text.trim();
        if let Some(n) = t
            .strip_suffix("samples")
            .or_else(|| t.strip_suffix("sample"))
        {
            return n
                .trim()
                .parse()
                .map(Hold::Samples)
                .map_err(|_| format!("{text:?}: a whole number of samples"));
        }
        humantime::parse_duration(t)
            .map(Hold::Time)
            .map_err(|e| format!("{text:?}: {e} (a number of samples, or a duration like 30s)"))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawFlap {
    enabled: bool,
    samples: usize,
    low_threshold: f64,
    high_threshold: f64,
}

impl Default for RawFlap {
    fn default() -> Self {
        let d = FlapConfig::default();
        RawFlap {
            enabled: d.enabled,
            samples: d.samples,
            low_threshold: d.low_threshold,
            high_threshold: d.high_threshold,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawGlobal {
    runbook_url: Option<String>,
    external_url: Option<String>,
    external_labels: BTreeMap<String, String>,
    #[serde(with = "humantime_serde")]
    resolve_timeout: Duration,
    cluster_degraded_share: f64,
    cluster_min_nodes: u32,
    #[serde(with = "humantime_serde")]
    cluster_window: Duration,
    watchdog: bool,
    builtin_inhibit_rules: bool,
    notify_resolved_when_silenced: bool,
    flush_on_exit: bool,
    #[serde(with = "humantime_serde")]
    max_clock_skew: Duration,
}

impl Default for RawGlobal {
    fn default() -> Self {
        RawGlobal {
            runbook_url: None,
            external_url: None,
            external_labels: BTreeMap::new(),
            resolve_timeout: Duration::ZERO,
            cluster_degraded_share: 0.5,
            cluster_min_nodes: 4,
            cluster_window: d(300),
            watchdog: false,
            builtin_inhibit_rules: true,
            notify_resolved_when_silenced: false,
            flush_on_exit: true,
            max_clock_skew: d(300),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDelivery {
    #[serde(with = "humantime_serde")]
    timeout: Duration,
    attempts: u32,
    #[serde(with = "humantime_serde")]
    backoff: Duration,
    #[serde(with = "humantime_serde")]
    max_backoff: Duration,
    spool_dir: Option<PathBuf>,
    spool_max_entries: usize,
    spool_max_bytes: u64,
    #[serde(with = "humantime_serde")]
    spool_retry_interval: Duration,
    #[serde(with = "humantime_serde")]
    budget: Duration,
    queue_size: usize,
}

impl Default for RawDelivery {
    fn default() -> Self {
        RawDelivery {
            timeout: d(10),
            attempts: 3,
            backoff: Duration::from_millis(500),
            max_backoff: d(30),
            spool_dir: None,
            spool_max_entries: 1000,
            spool_max_bytes: 16 << 20,
            spool_retry_interval: d(30),
            budget: d(20),
            queue_size: 1024,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    receiver: Option<String>,
    group_by: Option<Vec<String>>,
    #[serde(default, with = "humantime_serde")]
    group_wait: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    group_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    repeat_interval: Option<Duration>,
    #[serde(default)]
    matchers: Vec<String>,
    #[serde(default, rename = "continue")]
    cont: bool,
    #[serde(default)]
    resolved_at_once: Option<bool>,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

/// A secret-bearing URL: from the environment or a file, never the command line. A literal
/// `url` is accepted for URLs without secrets (a loopback Alertmanager).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUrl {
    url: Option<String>,
    url_env: Option<String>,
    url_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReceiver {
    name: String,
    stdout: Option<serde::de::IgnoredAny>,
    exec: Option<RawExec>,
    webhook: Option<RawWebhook>,
    alertmanager: Option<RawAm>,
    slack: Option<RawSlack>,
    #[serde(alias = "slurm-drain")]
    slurm_drain: Option<RawSlurm>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExec {
    command: Vec<String>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    #[serde(default = "yes")]
    send_resolved: bool,
    #[serde(default)]
    env: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    #[serde(flatten)]
    url: RawUrl,
    #[serde(default = "yes")]
    send_resolved: bool,
    #[serde(default)]
    max_alerts: usize,
    bearer_token_env: Option<String>,
    bearer_token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAm {
    urls: Vec<String>,
    #[serde(default, with = "humantime_serde")]
    resend_interval: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlack {
    #[serde(flatten)]
    url: RawUrl,
    #[serde(default = "yes")]
    send_resolved: bool,
    channel: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlurm {
    #[serde(default)]
    act: bool,
    scontrol: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    remediation: Option<crate::remedy::config::RawRemediation>,
    #[serde(default)]
    verify: Option<crate::remedy::config::RawVerify>,
    #[serde(default)]
    escalate: Option<crate::remedy::config::RawEscalate>,
    #[serde(default)]
    budget: Option<crate::remedy::config::RawBudget>,
    #[serde(default)]
    lease: Option<RawLease>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLease {
    #[serde(default)]
    holder: Option<String>,
    #[serde(default, with = "humantime_serde")]
    ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    settle: Option<Duration>,
}

/// The lease's holder name by default: this host's name (replicas run on different hosts).
fn lease_conf(
    raw: RawLease,
    bad: impl Fn(&str, String) -> ConfigError,
) -> Result<crate::deliver::lease::LeaseConf, ConfigError> {
    use crate::deliver::lease::{LeaseConf, valid_holder};
    let holder = raw.holder.unwrap_or_else(|| {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    });
    if !valid_holder(&holder) {
        return Err(bad(
            "slurm_drain.lease.holder",
            format!("{holder:?}: 1 to 64 letters, digits, . - _ @"),
        ));
    }
    let ttl = raw.ttl.unwrap_or(d(120));
    let settle = raw.settle.unwrap_or(d(2));
    if ttl <= settle * 2 || ttl < d(1) {
        return Err(bad(
            "slurm_drain.lease.ttl",
            "must be at least 1s and more than twice settle".into(),
        ));
    }
    Ok(LeaseConf {
        holder,
        ttl,
        settle,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInhibit {
    #[serde(default)]
    source_matchers: Vec<String>,
    #[serde(default)]
    target_matchers: Vec<String>,
    #[serde(default)]
    equal: Vec<String>,
}

fn yes() -> bool {
    true
}

/// Global settings.
#[derive(Debug, Clone)]
pub struct Global {
    /// Base of `runbook_url` annotations (the alert name is appended).
    pub runbook_url: Option<String>,
    /// `externalURL` in webhook payloads, `generatorURL` base.
    pub external_url: String,
    /// Labels added to every alert (like Prometheus external labels).
    pub external_labels: LabelSet,
    /// Alerts not refreshed for this long are resolved; zero disables.
    pub resolve_timeout: Duration,
    /// More than this share of known nodes unhealthy → ClusterDegraded.
    pub cluster_degraded_share: f64,
    /// ClusterDegraded needs at least this many known nodes.
    pub cluster_min_nodes: u32,
    /// Window for "known" nodes and for fleet records.
    pub cluster_window: Duration,
    /// Always-firing Watchdog alert.
    pub watchdog: bool,
    /// NodeUnreachable and ClusterDegraded inhibit rules, and NodeCritical / NodeDegraded
    /// left out while the node's GPU alerts name every present reason.
    pub builtin_inhibit_rules: bool,
    /// Send resolved notifications of silenced alerts anyway.
    pub notify_resolved_when_silenced: bool,
    /// At end of input, group_wait counts as elapsed for groups never notified.
    pub flush_on_exit: bool,
    /// Records stamped more than this ahead of this host's clock are rejected; zero disables.
    pub max_clock_skew: Duration,
}

/// Delivery settings.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Attempts before spooling.
    pub attempts: u32,
    /// First backoff; doubles per attempt.
    pub backoff: Duration,
    /// Backoff ceiling.
    pub max_backoff: Duration,
    /// Spool directory (default: next to the state file).
    pub spool_dir: Option<PathBuf>,
    /// Spool bound, entries.
    pub spool_max_entries: usize,
    /// Spool bound, bytes.
    pub spool_max_bytes: u64,
    /// How long a failing receiver waits between tries once `attempts` in a row failed, and
    /// how often a worker looks for spool entries other runs left.
    pub spool_retry_interval: Duration,
    /// At end of input, how long the run may still spend delivering; then what is left stays
    /// in the spool for the next run.
    pub budget: Duration,
    /// Notifications queued per receiver in memory (one per group: a newer one supersedes).
    pub queue_size: usize,
}

/// Where a URL comes from.
#[derive(Debug, Clone)]
pub enum UrlSource {
    /// Literal from the file.
    Literal(String),
    /// Environment variable name.
    Env(String),
    /// File holding the URL.
    File(PathBuf),
}

impl UrlSource {
    /// Resolves the URL now (secrets are read at delivery time and never logged).
    pub fn resolve(&self) -> Result<String, String> {
        match self {
            UrlSource::Literal(u) => Ok(u.clone()),
            UrlSource::Env(v) => std::env::var(v)
                .map(|s| s.trim().to_owned())
                .map_err(|_| format!("environment variable {v} is not set")),
            UrlSource::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .map_err(|e| format!("{}: {e}", p.display())),
        }
    }
}

/// What a receiver does.
#[derive(Debug, Clone)]
pub enum ReceiverKind {
    /// Alert records on stdout.
    Stdout,
    /// Run a program.
    Exec {
        /// argv.
        command: Vec<String>,
        /// Kill after.
        timeout: Option<Duration>,
        /// Variables of ours it inherits besides the basics.
        env: Vec<String>,
    },
    /// Alertmanager webhook v4.
    Webhook {
        /// URL.
        url: UrlSource,
        /// 0 = all.
        max_alerts: usize,
        /// Bearer token.
        token: Option<UrlSource>,
    },
    /// POST /api/v2/alerts.
    Alertmanager {
        /// Base URLs.
        urls: Vec<String>,
        /// Resend interval.
        resend_interval: Duration,
    },
    /// Slack incoming webhook.
    Slack {
        /// URL.
        url: UrlSource,
        /// Channel override.
        channel: Option<String>,
    },
    /// scontrol drain, remediation, verification, resume.
    SlurmDrain {
        /// Really run scontrol update and the remediation commands.
        act: bool,
        /// Program.
        scontrol: PathBuf,
        /// Timeout.
        timeout: Option<Duration>,
        /// Variables of ours scontrol and the remediation commands inherit besides the basics
        /// (`SLURM_CONF`).
        env: Vec<String>,
        /// Remediation, verification, escalation and the quarantine budget (with a
        /// `remediation:` section).
        remedy: Option<Box<crate::remedy::RemedyConfig>>,
        /// Act on a node only while holding its lease (replicas).
        lease: Option<crate::deliver::lease::LeaseConf>,
    },
}

/// One receiver.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// Name.
    pub name: String,
    /// Resolved notifications are sent.
    pub send_resolved: bool,
    /// Kind.
    pub kind: ReceiverKind,
}

/// A node of the routing tree, with inherited settings filled in.
#[derive(Debug, Clone)]
pub struct Route {
    /// Receiver name.
    pub receiver: String,
    /// Group labels; `...` groups by all labels.
    pub group_by: Vec<String>,
    /// `group_by: ['...']`.
    pub group_by_all: bool,
    /// Wait before the first notification of a new group.
    pub group_wait: Duration,
    /// Wait between notifications of a group that changed.
    pub group_interval: Duration,
    /// Re-send an unchanged group after this long.
    pub repeat_interval: Duration,
    /// Matchers.
    pub matchers: Vec<Matcher>,
    /// Keep matching siblings after a match.
    pub cont: bool,
    /// A group whose alerts have all resolved, or that a NodeFlapping joined, is notified
    /// at once, not at its next group_interval (false: Alertmanager's behaviour).
    pub resolved_at_once: bool,
    /// Children.
    pub routes: Vec<Route>,
    /// Alertmanager-style route key (`{}/{severity="critical"}`).
    pub key: String,
}

impl Route {
    /// The routes an alert goes to (Alertmanager's `Route.Match`).
    pub fn matching<'r>(&'r self, labels: &LabelSet, out: &mut Vec<&'r Route>) {
        if !crate::matcher::all_match(&self.matchers, labels) {
            return;
        }
        let before = out.len();
        for r in &self.routes {
            let n = out.len();
            r.matching(labels, out);
            if out.len() > n && !r.cont {
                break;
            }
        }
        if out.len() == before {
            out.push(self);
        }
    }
}

/// An inhibit rule.
#[derive(Debug, Clone)]
pub struct InhibitRule {
    /// Alerts that inhibit.
    pub source: Vec<Matcher>,
    /// Alerts that are inhibited.
    pub target: Vec<Matcher>,
    /// Labels that must be equal on both.
    pub equal: Vec<String>,
}

/// A silence.
#[derive(Debug, Clone, Deserialize)]
pub struct Silence {
    /// Id (optional in the file).
    #[serde(default)]
    pub id: Option<String>,
    /// Matchers.
    pub matchers: Vec<SilenceMatcher>,
    /// Start.
    #[serde(rename = "startsAt")]
    pub starts_at: Timestamp,
    /// End.
    #[serde(rename = "endsAt")]
    pub ends_at: Timestamp,
    /// Who.
    #[serde(rename = "createdBy", default)]
    pub created_by: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
    #[serde(skip)]
    compiled: Vec<Matcher>,
}

impl Silence {
    /// Whether it mutes `labels` at `now`.
    pub fn mutes(&self, labels: &LabelSet, now: Timestamp) -> bool {
        self.starts_at <= now
            && now < self.ends_at
            && crate::matcher::all_match(&self.compiled, labels)
    }
}

/// The whole configuration, validated.
#[derive(Debug, Clone)]
pub struct AlertConfig {
    /// Global settings.
    pub global: Global,
    /// Delivery settings.
    pub delivery: Delivery,
    /// Routing tree.
    pub route: Route,
    /// Receivers by name.
    pub receivers: BTreeMap<String, Receiver>,
    /// User inhibit rules (built-in ones are added by the engine).
    pub inhibit_rules: Vec<InhibitRule>,
    /// Silences.
    pub silences: Vec<Silence>,
    /// Where the silences came from; a long run re-reads the file when it changes.
    pub silences_path: Option<PathBuf>,
    /// Each alert rule's `for` and `keep_firing_for`.
    pub rules: Rules,
    /// Flap detection.
    pub flap: FlapConfig,
}

/// The timing of every alert rule: the built-in one ([`AlertName::default_for`]), under
/// `alert_rules."*"`, under the alert's own entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules([Timing; AlertName::ALL.len()]);

impl Default for Rules {
    fn default() -> Self {
        Rules(AlertName::ALL.map(Timing::builtin))
    }
}

impl Rules {
    /// The timing of `name`.
    pub fn timing(&self, name: AlertName) -> Timing {
        self.0[name as usize]
    }
}

impl Default for AlertConfig {
    fn default() -> Self {
        let text = "";
        // The empty document is valid by construction; fall back to a hand-built value anyway
        // rather than panic.
        build(Path::new("<defaults>"), text, RawConfig::default(), None).unwrap_or_else(|_| {
            AlertConfig {
                global: global(RawGlobal::default(), LabelSet::new()),
                delivery: delivery(RawDelivery::default()),
                route: default_route(),
                receivers: BTreeMap::from([(
                    "stdout".to_owned(),
                    Receiver {
                        name: "stdout".into(),
                        send_resolved: true,
                        kind: ReceiverKind::Stdout,
                    },
                )]),
                inhibit_rules: Vec::new(),
                silences: Vec::new(),
                silences_path: None,
                rules: Rules::default(),
                flap: FlapConfig::default(),
            }
        })
    }
}

/// The root route's defaults: one group per node and severity, notified as soon as an alert
/// fires (the `for` of each rule already keeps blips out, and a pending ClusterDegraded holds
/// node alerts back in a fleet-wide event), and at once when all its alerts resolved.
fn default_route() -> Route {
    Route {
        receiver: "stdout".into(),
        group_by: vec!["node".into(), "severity".into()],
        group_by_all: false,
        group_wait: d(0),
        group_interval: d(300),
        repeat_interval: d(4 * 3600),
        matchers: Vec::new(),
        cont: false,
        resolved_at_once: true,
        routes: Vec::new(),
        key: "{}".into(),
    }
}

fn global(g: RawGlobal, external_labels: LabelSet) -> Global {
    Global {
        runbook_url: g.runbook_url,
        external_url: g.external_url.unwrap_or_default(),
        external_labels,
        resolve_timeout: g.resolve_timeout,
        cluster_degraded_share: g.cluster_degraded_share,
        cluster_min_nodes: g.cluster_min_nodes,
        cluster_window: g.cluster_window,
        watchdog: g.watchdog,
        builtin_inhibit_rules: g.builtin_inhibit_rules,
        notify_resolved_when_silenced: g.notify_resolved_when_silenced,
        flush_on_exit: g.flush_on_exit,
        max_clock_skew: g.max_clock_skew,
    }
}

fn delivery(d: RawDelivery) -> Delivery {
    Delivery {
        timeout: d.timeout,
        attempts: d.attempts.max(1),
        backoff: d.backoff,
        max_backoff: d.max_backoff,
        spool_dir: d.spool_dir,
        spool_max_entries: d.spool_max_entries.max(1),
        spool_max_bytes: d.spool_max_bytes,
        spool_retry_interval: d.spool_retry_interval,
        budget: d.budget,
        queue_size: d.queue_size.max(1),
    }
}

impl AlertConfig {
    /// Loads the configuration; `None` gives the defaults (everything to stdout, grouped by
    /// alertname). The silences file is read now; relative paths are relative to the
    /// configuration file.
    pub fn load(path: Option<&Path>) -> Result<AlertConfig, crate::Error> {
        let Some(path) = path else {
            return Ok(AlertConfig::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let raw: RawConfig = parse_yaml(path, &text)?;
        Ok(build(path, &text, raw, path.parent())?)
    }

    /// Parses configuration text (tests, and `ugro-watch` with an embedded config).
    pub fn from_str(path: &Path, text: &str) -> Result<AlertConfig, ConfigError> {
        let raw: RawConfig = parse_yaml(path, text)?;
        build(path, text, raw, path.parent())
    }

    /// Replaces the silences with those of `file` (`--silences`).
    pub fn load_silences(&mut self, file: &Path) -> Result<(), ConfigError> {
        self.silences = load_silences(file)?;
        self.silences_path = Some(file.to_owned());
        Ok(())
    }

    /// Whether any receiver is an Alertmanager.
    pub fn has_alertmanager(&self) -> bool {
        self.receivers
            .values()
            .any(|r| matches!(r.kind, ReceiverKind::Alertmanager { .. }))
    }

    /// Sets `act` on every slurm_drain receiver (`--act`).
    pub fn set_act(&mut self, act: bool) {
        for r in self.receivers.values_mut() {
            if let ReceiverKind::SlurmDrain { act: a, .. } = &mut r.kind {
                *a = *a || act;
            }
        }
    }
}

/// Reads a silences file: a YAML or JSON list in Alertmanager's silence shape (the output of
/// `amtool silence query -o json` works; its extra fields are ignored).
pub fn load_silences(file: &Path) -> Result<Vec<Silence>, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        path: file.to_owned(),
        source,
    })?;
    let mut list: Vec<Silence> = parse_yaml(file, &text)?;
    for (i, s) in list.iter_mut().enumerate() {
        if s.matchers.is_empty() {
            return Err(ConfigError::invalid(
                file,
                &text,
                &format!("[{i}].matchers"),
                "a silence needs at least one matcher",
            ));
        }
        let mut compiled = Vec::new();
        for (j, m) in s.matchers.iter().enumerate() {
            compiled.push(m.compile().map_err(|e| {
                ConfigError::invalid(file, &text, &format!("[{i}].matchers[{j}].value"), e)
            })?);
        }
        s.compiled = compiled;
        if s.ends_at <= s.starts_at {
            return Err(ConfigError::invalid(
                file,
                &text,
                &format!("[{i}].endsAt"),
                "endsAt must be after startsAt",
            ));
        }
    }
    Ok(list)
}

/// `[A-Za-z_][A-Za-z0-9_]*`: what an `env` allow-list may name.
fn valid_env_name(n: &str) -> bool {
    let mut b = n.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn build(
    path: &Path,
    text: &str,
    raw: RawConfig,
    base: Option<&Path>,
) -> Result<AlertConfig, ConfigError> {
    let inv = |field: &str, msg: String| ConfigError::invalid(path, text, field, msg);
    ranges::check(&raw).map_err(|(f, m)| inv(&f, m))?;
    let g = &raw.global;
    if !(g.cluster_degraded_share > 0.0 && g.cluster_degraded_share <= 1.0) {
        return Err(inv(
            "global.cluster_degraded_share",
            "must be in (0, 1]".into(),
        ));
    }
    let mut external = LabelSet::new();
    for (k, v) in &g.external_labels {
        if !valid_label_name(k) {
            return Err(inv(
                "global.external_labels",
                format!("invalid label name {k:?}"),
            ));
        }
        valid_label_value(v)
            .map_err(|e| inv("global.external_labels", format!("label {k}: {e}")))?;
        external.insert(k.clone(), v.clone());
    }
    let rel = |p: PathBuf| match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p,
    };

    let mut receivers = BTreeMap::new();
    if raw.receivers.is_empty() {
        receivers.insert(
            "stdout".to_owned(),
            Receiver {
                name: "stdout".into(),
                send_resolved: true,
                kind: ReceiverKind::Stdout,
            },
        );
    }
    for (i, r) in raw.receivers.into_iter().enumerate() {
        let field = |f: &str| format!("receivers[{i}].{f}");
        if r.name.is_empty()
            || !r
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(inv(
                &field("name"),
                format!(
                    "invalid receiver name {:?} (letters, digits, - _ .)",
                    r.name
                ),
            ));
        }
        let check_env = |names: &[String], f: &str| -> Result<(), ConfigError> {
            match names.iter().find(|n| !valid_env_name(n)) {
                Some(n) => Err(inv(f, format!("{n:?} is not a variable name"))),
                None => Ok(()),
            }
        };
        let url = |u: RawUrl, f: &str| -> Result<UrlSource, ConfigError> {
            match (u.url, u.url_env, u.url_file) {
                (Some(l), None, None) => Ok(UrlSource::Literal(l)),
                (None, Some(e), None) => Ok(UrlSource::Env(e)),
                (None, None, Some(p)) => Ok(UrlSource::File(rel(p))),
                _ => Err(inv(
                    &field(f),
                    "give exactly one of url, url_env, url_file".into(),
                )),
            }
        };
        let mut kinds = Vec::new();
        if r.stdout.is_some() {
            kinds.push((true, ReceiverKind::Stdout));
        }
        if let Some(e) = r.exec {
            if e.command.is_empty() || e.command[0].is_empty() {
                return Err(inv(
                    &field("exec.command"),
                    "needs a program (argv, no shell)".into(),
                ));
            }
            check_env(&e.env, &field("exec.env"))?;
            kinds.push((
                e.send_resolved,
                ReceiverKind::Exec {
                    command: e.command,
                    timeout: e.timeout,
                    env: e.env,
                },
            ));
        }
        if let Some(w) = r.webhook {
            let token = match (w.bearer_token_env, w.bearer_token_file) {
                (None, None) => None,
                (Some(e), None) => Some(UrlSource::Env(e)),
                (None, Some(p)) => Some(UrlSource::File(rel(p))),
                _ => {
                    return Err(inv(
                        &field("webhook"),
                        "give one of bearer_token_env, bearer_token_file".into(),
                    ));
                }
            };
            kinds.push((
                w.send_resolved,
                ReceiverKind::Webhook {
                    url: url(w.url, "webhook")?,
                    max_alerts: w.max_alerts,
                    token,
                },
            ));
        }
        if let Some(a) = r.alertmanager {
            if a.urls.is_empty() {
                return Err(inv(
                    &field("alertmanager.urls"),
                    "needs at least one URL".into(),
                ));
            }
            for u in &a.urls {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(inv(
                        &field("alertmanager.urls"),
                        format!("{u:?} is not an http(s) URL"),
                    ));
                }
            }
            let resend = a.resend_interval.unwrap_or(d(60));
            if resend.is_zero() {
                return Err(inv(
                    &field("alertmanager.resend_interval"),
                    "must be positive".into(),
                ));
            }
            kinds.push((
                true,
                ReceiverKind::Alertmanager {
                    urls: a.urls,
                    resend_interval: resend,
                },
            ));
        }
        if let Some(s) = r.slack {
            kinds.push((
                s.send_resolved,
                ReceiverKind::Slack {
                    url: url(s.url, "slack")?,
                    channel: s.channel,
                },
            ));
        }
        if let Some(s) = r.slurm_drain {
            check_env(&s.env, &field("slurm_drain.env"))?;
            let remedy = crate::remedy::config::build(crate::remedy::config::RawRemedy {
                remediation: s.remediation,
                verify: s.verify,
                escalate: s.escalate,
                budget: s.budget,
            })
            .map_err(|(f, why)| inv(&field(&format!("slurm_drain.{f}")), why))?;
            let lease = match s.lease {
                None => None,
                Some(l) => Some(lease_conf(l, |f, m| inv(&field(f), m))?),
            };
            kinds.push((
                true,
                ReceiverKind::SlurmDrain {
                    act: s.act,
                    scontrol: s.scontrol.unwrap_or_else(|| PathBuf::from("scontrol")),
                    timeout: s.timeout,
                    env: s.env,
                    remedy: remedy.map(Box::new),
                    lease,
                },
            ));
        }
        if kinds.len() != 1 {
            return Err(inv(
                &field("name"),
                format!(
                    "receiver {:?} needs exactly one of stdout, exec, webhook, alertmanager, slack, slurm_drain (found {})",
                    r.name,
                    kinds.len()
                ),
            ));
        }
        let Some((send_resolved, kind)) = kinds.pop() else {
            continue;
        };
        if receivers.contains_key(&r.name) {
            return Err(inv(
                &field("name"),
                format!("duplicate receiver {:?}", r.name),
            ));
        }
        receivers.insert(
            r.name.clone(),
            Receiver {
                name: r.name,
                send_resolved,
                kind,
            },
        );
    }

    let raw_route = raw.route.unwrap_or_default();
    let mut seen_receivers = HashSet::new();
    let route = build_route(
        raw_route,
        &default_route(),
        None,
        "route",
        &receivers,
        &mut seen_receivers,
        &inv,
    )?;

    let mut inhibit_rules = Vec::new();
    for (i, r) in raw.inhibit_rules.into_iter().enumerate() {
        let ms = |list: Vec<String>, f: &str| -> Result<Vec<Matcher>, ConfigError> {
            list.iter()
                .map(|m| Matcher::parse(m).map_err(|e| inv(&format!("inhibit_rules[{i}].{f}"), e)))
                .collect()
        };
        let source = ms(r.source_matchers, "source_matchers")?;
        let target = ms(r.target_matchers, "target_matchers")?;
        if source.is_empty() || target.is_empty() {
            return Err(inv(
                &format!("inhibit_rules[{i}].source_matchers"),
                "source_matchers and target_matchers must both be given".into(),
            ));
        }
        for e in &r.equal {
            if !valid_label_name(e) {
                return Err(inv(
                    &format!("inhibit_rules[{i}].equal"),
                    format!("invalid label name {e:?}"),
                ));
            }
        }
        inhibit_rules.push(InhibitRule {
            source,
            target,
            equal: r.equal,
        });
    }

    let silences_path = raw.silences_file.map(rel);
    let silences = match &silences_path {
        Some(p) => load_silences(p)?,
        None => Vec::new(),
    };

    let rules = build_rules(raw.alert_rules, &inv)?;
    let flap = build_flap(&raw.flap_detection, &inv)?;
    Ok(AlertConfig {
        global: global(raw.global, external),
        delivery: delivery(raw.delivery),
        route,
        receivers,
        inhibit_rules,
        silences,
        silences_path,
        rules,
        flap,
    })
}

/// `alert_rules`: `"*"` first, then each alert's own entry over it.
fn build_rules(
    raw: BTreeMap<String, RawRule>,
    inv: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Rules, ConfigError> {
    let mut rules = Rules::default();
    let mut raw = raw;
    let star = raw.remove("*");
    let mut apply = |names: &[AlertName], r: RawRule, field: &str| -> Result<(), ConfigError> {
        let hold = r.hold.map(RawHold::parse).transpose();
        let hold = hold.map_err(|e| inv(&format!("{field}.for"), e))?;
        let keep = r.keep_firing_for.map(RawHold::parse).transpose();
        let keep = keep.map_err(|e| inv(&format!("{field}.keep_firing_for"), e))?;
        for n in names {
            let t = &mut rules.0[*n as usize];
            t.hold = hold.unwrap_or(t.hold);
            t.keep_firing_for = keep.unwrap_or(t.keep_firing_for);
        }
        Ok(())
    };
    let timed: Vec<AlertName> = AlertName::ALL
        .into_iter()
        .filter(|n| n.from_samples())
        .collect();
    if let Some(r) = star {
        apply(&timed, r, "alert_rules.*")?;
    }
    for (name, r) in raw {
        let field = format!("alert_rules.{name}");
        let Some(n) = AlertName::parse(&name) else {
            let known: Vec<&str> = timed.iter().map(|n| n.as_str()).collect();
            return Err(inv(
                &field,
                format!("unknown alert {name:?} (known: *, {})", known.join(", ")),
            ));
        };
        if !n.from_samples() {
            return Err(inv(
                &field,
                format!(
                    "{name} follows events (breaker, fleet, flap detection), not samples; it has no for"
                ),
            ));
        }
        apply(&[n], r, &field)?;
    }
    Ok(rules)
}

fn build_flap(
    f: &RawFlap,
    inv: &dyn Fn(&str, String) -> ConfigError,
) -> Result<FlapConfig, ConfigError> {
    if !(3..=1000).contains(&f.samples) {
        return Err(inv(
            "flap_detection.samples",
            "must be between 3 and 1000".into(),
        ));
    }
    let pct = |v: f64| (0.0..=100.0).contains(&v);
    if !(pct(f.low_threshold) && pct(f.high_threshold) && f.low_threshold < f.high_threshold) {
        return Err(inv(
            "flap_detection.low_threshold",
            "thresholds are percentages with low_threshold < high_threshold".into(),
        ));
    }
    Ok(FlapConfig {
        enabled: f.enabled,
        samples: f.samples,
        low_threshold: f.low_threshold,
        high_threshold: f.high_threshold,
    })
}

fn build_route(
    raw: RawRoute,
    parent: &Route,
    parent_key: Option<&str>,
    field: &str,
    receivers: &BTreeMap<String, Receiver>,
    seen: &mut HashSet<String>,
    inv: &dyn Fn(&str, String) -> ConfigError,
) -> Result<Route, ConfigError> {
    let receiver = match raw.receiver {
        Some(r) => r,
        None if parent_key.is_none() && receivers.len() == 1 => {
            receivers.keys().next().cloned().unwrap_or_default()
        }
        None if parent_key.is_none() => {
            return Err(inv(
                &format!("{field}.receiver"),
                "the root route needs a receiver".into(),
            ));
        }
        None => parent.receiver.clone(),
    };
    if !receivers.contains_key(&receiver) {
        return Err(inv(
            &format!("{field}.receiver"),
            format!(
                "unknown receiver {receiver:?} (known: {})",
                receivers.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    seen.insert(receiver.clone());
    let mut matchers = Vec::new();
    for m in &raw.matchers {
        matchers.push(Matcher::parse(m).map_err(|e| inv(&format!("{field}.matchers"), e))?);
    }
    if parent_key.is_none() && !matchers.is_empty() {
        return Err(inv(
            &format!("{field}.matchers"),
            "the root route matches everything; put matchers on child routes".into(),
        ));
    }
    let (group_by, group_by_all) = match raw.group_by {
        Some(g) if g.iter().any(|x| x == "...") => (Vec::new(), true),
        Some(g) => {
            for l in &g {
                if !valid_label_name(l) {
                    return Err(inv(
                        &format!("{field}.group_by"),
                        format!("invalid label name {l:?}"),
                    ));
                }
            }
            (g, false)
        }
        None => (parent.group_by.clone(), parent.group_by_all),
    };
    let group_interval = raw.group_interval.unwrap_or(parent.group_interval);
    let repeat_interval = raw.repeat_interval.unwrap_or(parent.repeat_interval);
    if group_interval.is_zero() {
        return Err(inv(
            &format!("{field}.group_interval"),
            "must be positive".into(),
        ));
    }
    if repeat_interval.is_zero() {
        return Err(inv(
            &format!("{field}.repeat_interval"),
            "must be positive".into(),
        ));
    }
    let own = format!(
        "{{{}}}",
        matchers
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    let key = match parent_key {
        None => "{}".to_owned(),
        Some(p) => format!("{p}/{own}"),
    };
    let mut route = Route {
        receiver,
        group_by,
        group_by_all,
        group_wait: raw.group_wait.unwrap_or(parent.group_wait),
        group_interval,
        repeat_interval,
        matchers,
        cont: raw.cont,
        resolved_at_once: raw.resolved_at_once.unwrap_or(parent.resolved_at_once),
        routes: Vec::new(),
        key: key.clone(),
    };
    let mut children = Vec::new();
    let mut keys = HashSet::new();
    for (i, c) in raw.routes.into_iter().enumerate() {
        let mut child = build_route(
            c,
            &route,
            Some(&key),
            &format!("{field}.routes[{i}]"),
            receivers,
            seen,
            inv,
        )?;
        // Alertmanager keys siblings with identical matchers apart by their position.
        if !keys.insert(child.key.clone()) {
            child.key = format!("{}#{i}", child.key);
        }
        children.push(child);
    }
    route.routes = children;
    Ok(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> Result<AlertConfig, ConfigError> {
        AlertConfig::from_str(Path::new("alert.yaml"), text)
    }

    #[test]
    fn defaults_route_everything_to_stdout_one_group_per_node_and_severity_at_once() {
        let c = AlertConfig::default();
        assert_eq!(c.route.receiver, "stdout");
        assert_eq!(c.route.group_by, ["node", "severity"]);
        assert_eq!(c.route.group_wait, d(0));
        assert_eq!(c.route.group_interval, d(300));
        assert_eq!(c.route.repeat_interval, d(14_400));
        assert!(c.route.resolved_at_once);
        assert!(c.global.flush_on_exit);
    }

    #[test]
    fn alert_rules_take_samples_or_durations_with_star_under_each_name() {
        let c = cfg("alert_rules:\n  '*': {for: 0}\n  GpuThermal: {for: 30s, keep_firing_for: 2 samples}\n  NodeUnreachable: {for: 4}\n").unwrap();
        let t = |n| c.rules.timing(n);
        assert_eq!(t(AlertName::NodeDegraded).hold, Hold::Samples(0));
        assert_eq!(t(AlertName::GpuThermal).hold, Hold::Time(d(30)));
        assert_eq!(t(AlertName::GpuThermal).keep_firing_for, Hold::Samples(2));
        assert_eq!(t(AlertName::NodeUnreachable).hold, Hold::Samples(4));
        let d = AlertConfig::default();
        assert_eq!(d.rules.timing(AlertName::GpuLost).hold, Hold::Samples(3));
        assert_eq!(
            d.rules.timing(AlertName::NodeDegraded).hold,
            Hold::Samples(4)
        );
    }

    #[test]
    fn alert_rules_refuse_unknown_names_event_alerts_and_bad_durations() {
        let e = cfg("alert_rules:\n  NodeOnFire: {for: 2}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("alert_rules.NodeOnFire") && e.contains("unknown alert"),
            "{e}"
        );
        let e = cfg("alert_rules:\n  ClusterDegraded: {for: 2}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("follows events"), "{e}");
        let e = cfg("alert_rules:\n  GpuLost: {for: soon}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("alert.yaml:2:") && e.contains("GpuLost.for"),
            "{e}"
        );
        let e = cfg("flap_detection: {low_threshold: 30, high_threshold: 20}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("flap_detection"), "{e}");
    }

    #[test]
    fn unknown_receiver_is_named_with_file_line_and_field() {
        let e = cfg("receivers:\n  - name: a\n    stdout: {}\nroute:\n  receiver: a\n  routes:\n    - matchers: [severity=critical]\n      receiver: pager\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("alert.yaml:8: route.routes[0].receiver: unknown receiver \"pager\""),
            "{e}"
        );
    }

    #[test]
    fn typos_in_fields_are_refused_with_their_line() {
        let e = cfg("route:\n  receiver: stdout\n  group_wiat: 10s\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("alert.yaml:3:"), "{e}");
        assert!(e.contains("group_wiat"), "{e}");
    }

    #[test]
    fn children_inherit_timers_and_matching_follows_continue() {
        let c = cfg(concat!(
            "receivers:\n  - {name: a, stdout: {}}\n  - {name: b, stdout: {}}\n",
            "route:\n  receiver: a\n  group_wait: 1s\n  routes:\n",
            "    - {matchers: ['severity=critical'], receiver: b, continue: true}\n",
            "    - {matchers: ['node=~gpu-.*'], group_by: [node]}\n",
        ))
        .unwrap();
        assert_eq!(c.route.routes[0].group_wait, d(1));
        let l: LabelSet = [("severity", "critical"), ("node", "gpu-1")]
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        let mut out = Vec::new();
        c.route.matching(&l, &mut out);
        let names: Vec<_> = out.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            names,
            ["{}/{severity=\"critical\"}", "{}/{node=~\"gpu-.*\"}"]
        );
        let l: LabelSet = [("severity".to_owned(), "info".to_owned())].into();
        let mut out = Vec::new();
        c.route.matching(&l, &mut out);
        assert_eq!(out[0].key, "{}");
    }

    #[test]
    fn env_allow_lists_name_variables_and_reach_the_receiver() {
        let c = cfg("receivers:\n  - name: d\n    slurm_drain: {env: [SLURM_CONF]}\n").unwrap();
        match &c.receivers["d"].kind {
            ReceiverKind::SlurmDrain { env, .. } => assert_eq!(env, &["SLURM_CONF"]),
            k => panic!("{k:?}"),
        }
        let e = cfg("receivers:\n  - name: x\n    exec: {command: [true], env: ['A=b']}\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("receivers[0].exec.env") && e.contains("not a variable name"),
            "{e}"
        );
    }

    #[test]
    fn slurm_drain_lease_gets_its_defaults_and_bad_values_name_the_field() {
        let c = cfg("receivers:\n  - name: d\n    slurm_drain: {lease: {holder: w-1}}\n").unwrap();
        match &c.receivers["d"].kind {
            ReceiverKind::SlurmDrain { lease: Some(l), .. } => {
                assert_eq!((l.holder.as_str(), l.ttl, l.settle), ("w-1", d(120), d(2)));
            }
            k => panic!("{k:?}"),
        }
        for bad in [
            "{holder: 'a b'}",
            "{holder: 'a:b'}",
            "{ttl: 3s, settle: 2s}",
        ] {
            let e = cfg(&format!(
                "receivers:\n  - name: d\n    slurm_drain: {{lease: {bad}}}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(e.contains("receivers[0].slurm_drain.lease."), "{bad}: {e}");
        }
    }

    #[test]
    fn a_receiver_needs_exactly_one_kind() {
        let e = cfg("receivers:\n  - name: x\n").unwrap_err().to_string();
        assert!(e.contains("receivers[0].name"), "{e}");
    }
}
