//! `cluster.yaml`: the nodes to watch and how to reach them.
//!
//! Parsing goes through `ugro_support::config` so every error names `file:line: field`. Unknown
//! keys are refused (a typo such as `intervall:` must not silently fall back to a default).
//! Relative paths in the file are taken relative to the file's own directory, so a cluster
//! directory can be moved or checked into git as a whole.

mod ranges;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use ugro_support::config::{ConfigError, load_yaml, parse_yaml};

/// The whole cluster file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// Defaults for SSH connections.
    #[serde(default)]
    pub ssh: SshDefaults,
    /// The probe to run on each node.
    #[serde(default)]
    pub probe: ProbeConf,
    /// Polling intervals.
    #[serde(default)]
    pub intervals: Intervals,
    /// At most this many polls in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Per-node poll timeout: a node that has not answered by then is reported unreachable
    /// (cause `timeout`) and its probe is restarted.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The default transport for every node.
    #[serde(default)]
    pub transport: TransportConf,
    /// What makes a node count as busy.
    #[serde(default)]
    pub activity: ActivityConf,
    /// Configuration files of the in-process pipeline (`--pipeline`).
    #[serde(default)]
    pub pipeline: PipelineConf,
    /// The state directory.
    #[serde(default)]
    pub state: StateConf,
    /// The nodes.
    pub nodes: Vec<NodeConf>,
}

/// SSH connection defaults; each node may override `user` and `port`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshDefaults {
    /// Remote user (default: ssh's own default, i.e. the local user or ~/.ssh/config).
    #[serde(default)]
    pub user: Option<String>,
    /// Port (default 22 or ~/.ssh/config).
    #[serde(default)]
    pub port: Option<u16>,
    /// Private key; when set, only this key is offered (`IdentitiesOnly=yes`).
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
    /// known_hosts file (default: ssh's, `~/.ssh/known_hosts`).
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    /// TCP connect and SSH handshake timeout.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Accept and record host keys of hosts not yet in known_hosts
    /// (`StrictHostKeyChecking=accept-new`). Off by default: an unknown host key fails the
    /// connection. A changed key always fails.
    #[serde(default)]
    pub accept_new_host_keys: bool,
    /// An ssh_config file passed with `-F`.
    #[serde(default)]
    pub config_file: Option<PathBuf>,
}

impl Default for SshDefaults {
    fn default() -> Self {
        SshDefaults {
            user: None,
            port: None,
            identity_file: None,
            known_hosts: None,
            connect_timeout: default_connect_timeout(),
            accept_new_host_keys: false,
            config_file: None,
        }
    }
}

/// The probe command.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConf {
    /// Remote path (or name on the remote PATH) of `ugro-probe`.
    #[serde(default = "default_probe_path")]
    pub path: String,
    /// Extra arguments after `--serve --node NAME`.
    #[serde(default)]
    pub args: Vec<String>,
}

impl Default for ProbeConf {
    fn default() -> Self {
        ProbeConf {
            path: default_probe_path(),
            args: Vec::new(),
        }
    }
}

/// Polling intervals.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Intervals {
    /// Interval while a node is busy or degraded.
    #[serde(default = "default_base", with = "humantime_serde")]
    pub base: Duration,
    /// Longest interval for an idle, healthy node (the interval doubles up to this).
    #[serde(default = "default_max", with = "humantime_serde")]
    pub max: Duration,
    /// Share of the base interval over which one cycle's polls are spread (0 = all at once,
    /// 1 = over the whole interval). Each node keeps a fixed phase derived from its name.
    #[serde(default = "default_spread")]
    pub spread: f64,
    /// First reconnect delay after a connection failure; doubles up to `reconnect_max`.
    #[serde(default = "default_reconnect_min", with = "humantime_serde")]
    pub reconnect_min: Duration,
    /// Longest reconnect delay.
    #[serde(default = "default_reconnect_max", with = "humantime_serde")]
    pub reconnect_max: Duration,
}

impl Default for Intervals {
    fn default() -> Self {
        Intervals {
            base: default_base(),
            max: default_max(),
            spread: default_spread(),
            reconnect_min: default_reconnect_min(),
            reconnect_max: default_reconnect_max(),
        }
    }
}

/// Activity detection.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivityConf {
    /// A node whose GPU utilisation reaches this (percent, any GPU) is busy.
    #[serde(default = "default_util_threshold")]
    pub gpu_utilization_pct: u32,
    /// A file whose recent modification means "jobs are running" (whole fleet).
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// How recent the file's mtime must be.
    #[serde(default = "default_fresh", with = "humantime_serde")]
    pub file_fresh: Duration,
    /// A command (argv, no shell) that prints busy node names (whitespace or comma separated,
    /// Slurm hostlists like `gpu[01-04]` are expanded). Run once per base interval.
    #[serde(default)]
    pub jobs_cmd: Option<Vec<String>>,
}

impl Default for ActivityConf {
    fn default() -> Self {
        ActivityConf {
            gpu_utilization_pct: default_util_threshold(),
            file: None,
            file_fresh: default_fresh(),
            jobs_cmd: None,
        }
    }
}

/// The in-process pipeline's configuration files (the same files the CLIs take with `-c`).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConf {
    /// ugro-score configuration.
    #[serde(default)]
    pub score: Option<PathBuf>,
    /// ugro-breaker configuration.
    #[serde(default)]
    pub breaker: Option<PathBuf>,
    /// ugro-alert configuration.
    #[serde(default)]
    pub alert: Option<PathBuf>,
}

/// The state directory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConf {
    /// Where per-node state files go (`--state-dir` overrides).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// History entries kept per node.
    #[serde(default = "default_history")]
    pub history: usize,
    /// How often a `stats` record is written (0 = never).
    #[serde(default = "default_stats_every", with = "humantime_serde")]
    pub stats_every: Duration,
}

impl Default for StateConf {
    fn default() -> Self {
        StateConf {
            dir: None,
            history: default_history(),
            stats_every: default_stats_every(),
        }
    }
}

/// How a node is reached: `ssh`, `local`, or `{command: [argv…]}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "TransportRepr")]
pub enum TransportConf {
    /// A persistent SSH session with a resident `ugro-probe --serve` on it.
    #[default]
    Ssh,
    /// A resident `ugro-probe --serve` child on this machine.
    Local,
    /// A resident child started from this argv (no shell); `{node}`, `{host}`, `{port}`,
    /// `{user}` and `{expect_gpus}` (the node's `expected_gpus`, empty when unset) are replaced,
    /// and an argument that is exactly `{probe_args}` becomes the `probe.args` list (zero or
    /// more arguments). Nothing else is added: the template must pass what the probe needs.
    /// It must behave like `ugro-probe --serve`.
    Command(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum TransportRepr {
    Name(String),
    Command { command: Vec<String> },
}

impl TryFrom<TransportRepr> for TransportConf {
    type Error = String;
    fn try_from(r: TransportRepr) -> Result<Self, String> {
        match r {
            TransportRepr::Name(n) if n == "ssh" => Ok(TransportConf::Ssh),
            TransportRepr::Name(n) if n == "local" => Ok(TransportConf::Local),
            TransportRepr::Name(n) => Err(format!(
                "unknown transport {n:?} (ssh, local, or {{command: [argv...]}})"
            )),
            TransportRepr::Command { command } => Ok(TransportConf::Command(command)),
        }
    }
}

/// One node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConf {
    /// Node name (record `node`).
    pub name: String,
    /// Host name or address (default: the name).
    #[serde(default)]
    pub host: Option<String>,
    /// SSH port.
    #[serde(default)]
    pub port: Option<u16>,
    /// SSH user.
    #[serde(default)]
    pub user: Option<String>,
    /// Free-form tags (`--tag` selects by them).
    #[serde(default)]
    pub tags: Vec<String>,
    /// GPUs this node should have (passed to the probe as `--expect-gpus` by the ssh and local
    /// transports; a `command` transport receives it only where its template has
    /// `{expect_gpus}`).
    #[serde(default)]
    pub expected_gpus: Option<u32>,
    /// Transport override.
    #[serde(default)]
    pub transport: Option<TransportConf>,
}

impl NodeConf {
    /// The host to connect to.
    pub fn host(&self) -> &str {
        self.host.as_deref().unwrap_or(&self.name)
    }
}

fn default_concurrency() -> usize {
    64
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_probe_path() -> String {
    "ugro-probe".into()
}
fn default_base() -> Duration {
    Duration::from_secs(5)
}
fn default_max() -> Duration {
    Duration::from_secs(60)
}
fn default_spread() -> f64 {
    0.5
}
fn default_reconnect_min() -> Duration {
    Duration::from_secs(1)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(60)
}
fn default_util_threshold() -> u32 {
    10
}
fn default_fresh() -> Duration {
    Duration::from_secs(120)
}
fn default_history() -> usize {
    60
}
fn default_stats_every() -> Duration {
    Duration::from_secs(60)
}

impl Cluster {
    /// Loads and checks a cluster file.
    pub fn load(path: &Path) -> Result<Cluster, ConfigError> {
        let (c, text): (Cluster, String) = load_yaml(path)?;
        c.finish(path, &text)
    }

    /// Parses and checks cluster text that came from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Cluster, ConfigError> {
        let c: Cluster = parse_yaml(path, text)?;
        c.finish(path, text)
    }

    /// The embedded default for `--local`: this machine, no SSH.
    pub fn local(name: &str) -> Cluster {
        Cluster {
            ssh: SshDefaults::default(),
            probe: ProbeConf::default(),
            intervals: Intervals::default(),
            concurrency: default_concurrency(),
            timeout: default_timeout(),
            transport: TransportConf::Local,
            activity: ActivityConf::default(),
            pipeline: PipelineConf::default(),
            state: StateConf::default(),
            nodes: vec![NodeConf {
                name: name.to_owned(),
                host: None,
                port: None,
                user: None,
                tags: Vec::new(),
                expected_gpus: None,
                transport: None,
            }],
        }
    }

    /// The transport of one node.
    pub fn transport_of<'a>(&'a self, node: &'a NodeConf) -> &'a TransportConf {
        node.transport.as_ref().unwrap_or(&self.transport)
    }

    fn finish(mut self, path: &Path, text: &str) -> Result<Cluster, ConfigError> {
        let bad = |field: &str, msg: String| ConfigError::invalid(path, text, field, msg);
        if self.nodes.is_empty() {
            return Err(bad("nodes", "at least one node is needed".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let at = |f: &str| format!("nodes[{i}].{f}");
            if n.name == "*" {
                return Err(bad(&at("name"), "`*` names the whole fleet".into()));
            }
            ugro_types::validate_node(&n.name).map_err(|e| bad(&at("name"), e.to_string()))?;
            if !seen.insert(n.name.as_str()) {
                return Err(bad(&at("name"), format!("duplicate node {:?}", n.name)));
            }
            check_host(n.host()).map_err(|m| bad(&at("host"), m))?;
            if let Some(u) = &n.user {
                check_user(u).map_err(|m| bad(&at("user"), m))?;
            }
            if n.port == Some(0) {
                return Err(bad(&at("port"), "port 0 is not a port".into()));
            }
            if let Some(t) = &n.transport {
                check_transport(t).map_err(|m| bad(&at("transport"), m))?;
            }
        }
        if let Some(u) = &self.ssh.user {
            check_user(u).map_err(|m| bad("ssh.user", m))?;
        }
        check_transport(&self.transport).map_err(|m| bad("transport", m))?;
        if self.probe.path.is_empty() || self.probe.path.starts_with('-') {
            return Err(bad(
                "probe.path",
                "must be a path or command name not starting with '-'".into(),
            ));
        }
        ranges::check(&self).map_err(|(f, m)| bad(&f, m))?;
        let iv = &self.intervals;
        if iv.base.is_zero() {
            return Err(bad("intervals.base", "must be more than 0".into()));
        }
        if iv.max < iv.base {
            return Err(bad(
                "intervals.max",
                format!(
                    "{} is shorter than intervals.base {}",
                    humantime::format_duration(iv.max),
                    humantime::format_duration(iv.base)
                ),
            ));
        }
        if !(0.0..=1.0).contains(&iv.spread) {
            return Err(bad("intervals.spread", "must be between 0 and 1".into()));
        }
        if iv.reconnect_max < iv.reconnect_min {
            return Err(bad(
                "intervals.reconnect_max",
                "is shorter than intervals.reconnect_min".into(),
            ));
        }
        if self.concurrency == 0 {
            return Err(bad("concurrency", "must be at least 1".into()));
        }
        if self.timeout.is_zero() {
            return Err(bad("timeout", "must be more than 0".into()));
        }
        if self.activity.gpu_utilization_pct > 100 {
            return Err(bad(
                "activity.gpu_utilization_pct",
                "is a percentage".into(),
            ));
        }
        if self.activity.jobs_cmd.as_ref().is_some_and(Vec::is_empty) {
            return Err(bad("activity.jobs_cmd", "is an empty command".into()));
        }
        // Relative paths are relative to the cluster file, not to wherever watch was started.
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(q) = p.as_mut().filter(|q| q.is_relative()) {
                *q = base.join(&*q);
            }
        };
        fix(&mut self.ssh.identity_file);
        fix(&mut self.ssh.known_hosts);
        fix(&mut self.ssh.config_file);
        fix(&mut self.activity.file);
        fix(&mut self.pipeline.score);
        fix(&mut self.pipeline.breaker);
        fix(&mut self.pipeline.alert);
        fix(&mut self.state.dir);
        Ok(self)
    }
}

/// A host must not be readable as an ssh option or carry a user part.
pub fn check_host(h: &str) -> Result<(), String> {
    if h.is_empty() {
        return Err("empty host".into());
    }
    if h.starts_with('-') {
        return Err(format!(
            "host {h:?} starts with '-' (ssh would read an option)"
        ));
    }
    if h.len() > 253 {
        return Err("host longer than 253 bytes".into());
    }
    if !h
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']'))
    {
        return Err(format!(
            "host {h:?}: only letters, digits and . - _ : [ ] are allowed (put the user in `user:`)"
        ));
    }
    Ok(())
}

fn check_user(u: &str) -> Result<(), String> {
    if u.is_empty()
        || u.starts_with('-')
        || !u
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(format!(
            "user {u:?}: letters, digits and . - _ only, not starting with '-'"
        ));
    }
    Ok(())
}

fn check_transport(t: &TransportConf) -> Result<(), String> {
    if let TransportConf::Command(argv) = t {
        let Some(first) = argv.first() else {
            return Err("command: empty argv".into());
        };
        if first.is_empty() {
            return Err("command: empty program".into());
        }
        for a in argv {
            let mut rest = a.as_str();
            while let Some(i) = rest.find('{') {
                let tail = &rest[i..];
                let Some(j) = tail.find('}') else { break };
                let name = &tail[1..j];
                if name == "probe_args" && a != "{probe_args}" {
                    return Err(
                        "command: {probe_args} must be a whole argument (it becomes probe.args)"
                            .into(),
                    );
                }
                if !matches!(
                    name,
                    "node" | "host" | "port" | "user" | "expect_gpus" | "probe_args"
                ) {
                    return Err(format!(
                        "command: unknown placeholder {{{name}}} (known: {{node}} {{host}} {{port}} \
                         {{user}} {{expect_gpus}} {{probe_args}})"
                    ));
                }
                rest = &tail[j + 1..];
            }
        }
    }
    Ok(())
}

/// Substitutes the placeholders of a command template for one node; an argument that is
/// exactly `{probe_args}` becomes `probe_args` (zero or more arguments).
pub fn expand_argv(
    template: &[String],
    node: &NodeConf,
    ssh: &SshDefaults,
    probe_args: &[String],
) -> Vec<String> {
    let port = node
        .port
        .or(ssh.port)
        .map(|p| p.to_string())
        .unwrap_or_else(|| "22".into());
    let user = node.user.as_deref().or(ssh.user.as_deref()).unwrap_or("");
    let gpus = node
        .expected_gpus
        .map(|n| n.to_string())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(template.len() + probe_args.len());
    for a in template {
        if a == "{probe_args}" {
            out.extend(probe_args.iter().cloned());
            continue;
        }
        out.push(
            a.replace("{node}", &node.name)
                .replace("{host}", node.host())
                .replace("{port}", &port)
                .replace("{user}", user)
                .replace("{expect_gpus}", &gpus),
        );
    }
    out
}

impl Cluster {
    /// Settings that are valid but will not do what they seem to: `expected_gpus` or
    /// `probe.args` on a node whose command template does not pass them on.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        for n in &self.nodes {
            let TransportConf::Command(t) = self.transport_of(n) else {
                continue;
            };
            if n.expected_gpus.is_some() && !t.iter().any(|a| a.contains("{expect_gpus}")) {
                w.push(format!(
                    "node {}: expected_gpus is not passed on: its command transport has no \
                     {{expect_gpus}} placeholder",
                    n.name
                ));
            }
            if !self.probe.args.is_empty() && !t.iter().any(|a| a == "{probe_args}") {
                w.push(format!(
                    "node {}: probe.args is not passed on: its command transport has no \
                     {{probe_args}} argument",
                    n.name
                ));
            }
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Cluster, ConfigError> {
        Cluster::parse(Path::new("/etc/ugro/cluster.yaml"), text)
    }

    fn line_field(e: ConfigError) -> (usize, String, String) {
        match e {
            ConfigError::Invalid {
                line,
                field,
                message,
                ..
            } => (line, field, message),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn minimal_file_gets_the_documented_defaults() {
        let c = parse("nodes:\n  - name: gpu-01\n").unwrap();
        assert_eq!(c.intervals.base, Duration::from_secs(5));
        assert_eq!(c.intervals.max, Duration::from_secs(60));
        assert_eq!(c.concurrency, 64);
        assert_eq!(c.transport, TransportConf::Ssh);
        assert!(!c.ssh.accept_new_host_keys);
        assert_eq!(c.nodes[0].host(), "gpu-01");
    }

    #[test]
    fn full_file_parses_and_relative_paths_follow_the_file() {
        let c = parse(
            "ssh:\n  user: ops\n  identity_file: keys/id\n  known_hosts: /k\n  connect_timeout: 3s\n\
             probe:\n  path: /opt/ugro-probe\n  args: [--peer, 10.0.0.1:22]\n\
             intervals:\n  base: 2s\n  max: 30s\n  spread: 0\n\
             concurrency: 8\ntimeout: 1500ms\n\
             pipeline:\n  breaker: breaker.yaml\n\
             nodes:\n  - name: a\n    host: 10.0.0.5\n    port: 2222\n    tags: [rack1]\n    expected_gpus: 8\n\
             \x20 - name: b\n    transport:\n      command: [fake, '{node}', '{host}']\n",
        )
        .unwrap();
        assert_eq!(
            c.ssh.identity_file,
            Some(PathBuf::from("/etc/ugro/keys/id"))
        );
        assert_eq!(c.ssh.known_hosts, Some(PathBuf::from("/k")));
        assert_eq!(
            c.pipeline.breaker,
            Some(PathBuf::from("/etc/ugro/breaker.yaml"))
        );
        assert_eq!(c.timeout, Duration::from_millis(1500));
        assert_eq!(c.nodes[0].port, Some(2222));
        let t = c.transport_of(&c.nodes[1]).clone();
        let TransportConf::Command(argv) = t else {
            panic!("not a command")
        };
        assert_eq!(
            expand_argv(&argv, &c.nodes[1], &c.ssh, &c.probe.args),
            ["fake", "b", "b"]
        );
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let (line, field, msg) =
            line_field(parse("intervals:\n  bse: 5s\nnodes:\n  - name: a\n").unwrap_err());
        assert_eq!(line, 2);
        assert!(field.starts_with("intervals"), "{field}");
        assert!(msg.contains("bse"), "{msg}");
    }

    #[test]
    fn host_that_ssh_would_read_as_an_option_is_refused() {
        let (line, field, _) = line_field(
            parse("nodes:\n  - name: a\n  - name: b\n    host: -oProxyCommand=sh\n").unwrap_err(),
        );
        assert_eq!(field, "nodes[1].host");
        assert_eq!(line, 4);
        assert!(parse("nodes:\n  - name: a\n    host: root@h\n").is_err());
    }

    #[test]
    fn hostile_or_duplicate_names_are_refused() {
        let (_, field, _) = line_field(parse("nodes:\n  - name: '-x'\n").unwrap_err());
        assert_eq!(field, "nodes[0].name");
        let (line, field, msg) =
            line_field(parse("nodes:\n  - name: a\n  - name: a\n").unwrap_err());
        assert_eq!(field, "nodes[1].name");
        assert!(msg.contains("duplicate"));
        assert!(line >= 2);
    }

    #[test]
    fn max_interval_shorter_than_base_is_refused() {
        let (line, field, _) = line_field(
            parse("intervals:\n  base: 10s\n  max: 5s\nnodes:\n  - name: a\n").unwrap_err(),
        );
        assert_eq!((line, field.as_str()), (3, "intervals.max"));
    }

    #[test]
    fn unknown_placeholder_is_refused() {
        let e = parse("transport:\n  command: [x, '{nod}']\nnodes:\n  - name: a\n").unwrap_err();
        let (_, field, msg) = line_field(e);
        assert_eq!(field, "transport");
        assert!(msg.contains("{nod}"));
    }

    #[test]
    fn shipped_example_parses() {
        let c = Cluster::parse(
            Path::new("examples/cluster.yaml"),
            include_str!("../examples/cluster.yaml"),
        )
        .unwrap();
        assert_eq!(c.nodes.len(), 4);
        assert_eq!(c.nodes[0].expected_gpus, Some(8));
        assert_eq!(c.transport_of(&c.nodes[2]), &TransportConf::Local);
        assert_eq!(c, {
            let mut d = c.clone();
            d.intervals = Intervals::default();
            d
        });
    }

    #[test]
    fn command_template_receives_expected_gpus_and_probe_args() {
        let c = parse(
            "probe:\n  args: [--gpu-fixture, f.json]\n\
             transport:\n  command: [p, '{node}', '--expect-gpus={expect_gpus}', '{probe_args}', end]\n\
             nodes:\n  - name: a\n    expected_gpus: 8\n  - name: b\n",
        )
        .unwrap();
        let TransportConf::Command(t) = c.transport.clone() else {
            panic!("not a command")
        };
        assert_eq!(
            expand_argv(&t, &c.nodes[0], &c.ssh, &c.probe.args),
            [
                "p",
                "a",
                "--expect-gpus=8",
                "--gpu-fixture",
                "f.json",
                "end"
            ]
        );
        assert_eq!(
            expand_argv(&t, &c.nodes[1], &c.ssh, &[]),
            ["p", "b", "--expect-gpus=", "end"]
        );
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }

    #[test]
    fn command_template_that_drops_expected_gpus_or_probe_args_is_warned_about() {
        let c = parse(
            "probe:\n  args: [-x]\ntransport:\n  command: [p, '{node}']\n\
             nodes:\n  - name: a\n    expected_gpus: 8\n  - name: b\n",
        )
        .unwrap();
        let w = c.warnings();
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w[0].contains("node a") && w[0].contains("expected_gpus"),
            "{w:?}"
        );
        assert!(
            w.iter()
                .all(|m| !m.contains("node b") || m.contains("probe.args"))
        );
    }

    #[test]
    fn probe_args_placeholder_inside_an_argument_is_refused() {
        let e = parse("transport:\n  command: [x, '--a={probe_args}']\nnodes:\n  - name: a\n")
            .unwrap_err();
        let (_, field, msg) = line_field(e);
        assert_eq!(field, "transport");
        assert!(msg.contains("whole argument"), "{msg}");
    }

    #[test]
    fn empty_node_list_is_refused() {
        assert!(parse("nodes: []\n").is_err());
    }
}
