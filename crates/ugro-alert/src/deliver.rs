//! Receivers other than stdout: payloads, the transport (HTTP and argv processes), retries
//! with exponential backoff, and the bounded on-disk spool.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use ugro_types::{Alert, AlertStatus, LabelSet};

use crate::config::{AlertConfig, Delivery, ReceiverKind, UrlSource};
use crate::engine::{AmBatch, Notification};

/// What a program run produced.
#[derive(Debug, Clone)]
pub struct ExecOutput {
    /// Exit status (None when killed).
    pub status: Option<i32>,
    /// Its stdout.
    pub stdout: String,
}

/// The side-effecting edge, injected so the delivery logic can be tested without a network.
pub trait Transport: Send + std::fmt::Debug {
    /// POSTs JSON; any non-2xx status is an error.
    fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<(), String>;
    /// Runs argv (never through a shell) with extra environment and stdin. With `capture`
    /// its stdout is returned, else it goes to stderr (ours carries records).
    fn exec(
        &self,
        argv: &[String],
        env: &[(String, String)],
        stdin: &[u8],
        timeout: Duration,
        capture: bool,
    ) -> Result<ExecOutput, String>;
}

/// Whether a variable of ours reaches exec receivers and scontrol: the basics a program needs
/// and `UGRO_ALERT_*`; everything else (tokens, credentials) is withheld.
pub fn passes_env(name: &str) -> bool {
    matches!(name, "PATH" | "HOME" | "LANG" | "LC_ALL" | "TZ") || name.starts_with("UGRO_ALERT_")
}

/// HTTP through ureq, processes through `std::process::Command`.
#[derive(Debug, Default)]
pub struct RealTransport;

impl Transport for RealTransport {
    fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<(), String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(true)
            .build()
            .into();
        let mut req = agent
            .post(url)
            .header("Content-Type", "application/json")
            .header(
                "User-Agent",
                concat!("ugro-alert/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        // The URL may hold a token: say only which host failed.
        let host = url
            .split('/')
            .nth(2)
            .unwrap_or("?")
            .rsplit('@')
            .next()
            .unwrap_or("?")
            .to_owned();
        req.send(body)
            .map(|_| ())
            .map_err(|e| format!("POST to {host}: {}", redact(&e.to_string(), url)))
    }

    fn exec(
        &self,
        argv: &[String],
        env: &[(String, String)],
        stdin: &[u8],
        timeout: Duration,
        capture: bool,
    ) -> Result<ExecOutput, String> {
        let Some((prog, args)) = argv.split_first() else {
            return Err("empty command".into());
        };
        let mut cmd = Command::new(prog);
        // Its own process group, so a timeout kills whatever the program started too.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        // Children see only what they need: our environment may hold receiver tokens.
        cmd.env_clear();
        for (k, v) in std::env::vars_os() {
            if passes_env(&k.to_string_lossy()) {
                cmd.env(k, v);
            }
        }
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(if capture {
                Stdio::piped()
            } else {
                Stdio::from(std::io::stderr())
            })
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().map_err(|e| format!("{prog}: {e}"))?;
        let input = stdin.to_vec();
        let writer = child.stdin.take().map(|mut w| {
            std::thread::spawn(move || {
                // The program may exit without reading its input; that is its business.
                let _ = w.write_all(&input);
            })
        });
        let reader = child.stdout.take().map(|mut r| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        });
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if start.elapsed() >= timeout => {
                    let _ = rustix::process::kill_process_group(
                        rustix::process::Pid::from_child(&child),
                        rustix::process::Signal::KILL,
                    );
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(format!("{prog}: {e}")),
            }
        };
        // After a kill the pipes may be held open by the program's own children: the helper
        // threads are left to finish on their own rather than waited for.
        let stdout = if status.is_some() {
            if let Some(w) = writer {
                let _ = w.join();
            }
            reader.and_then(|r| r.join().ok()).unwrap_or_default()
        } else {
            String::new()
        };
        match status {
            None => Err(format!(
                "{prog}: killed after {}",
                humantime::format_duration(timeout)
            )),
            Some(st) => Ok(ExecOutput {
                status: st.code(),
                stdout,
            }),
        }
    }
}

fn redact(msg: &str, url: &str) -> String {
    if url.is_empty() {
        msg.to_owned()
    } else {
        msg.replace(url, "<url>")
    }
}

/// Alertmanager's zero time, used as `endsAt` of firing alerts in webhook payloads.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn common<'a>(
    maps: impl Iterator<Item = &'a std::collections::BTreeMap<String, String>>,
) -> LabelSet {
    let mut it = maps;
    let Some(first) = it.next() else {
        return LabelSet::new();
    };
    let mut c = first.clone();
    for m in it {
        c.retain(|k, v| m.get(k) == Some(v));
    }
    c
}

/// The Alertmanager webhook v4 payload.
pub fn webhook_payload(n: &Notification, external_url: &str, max_alerts: usize) -> Value {
    let total = n.alerts.len();
    let keep = if max_alerts == 0 {
        total
    } else {
        max_alerts.min(total)
    };
    let alerts: Vec<Value> = n.alerts[..keep]
        .iter()
        .map(|a| {
            json!({
                "status": a.status.as_str(),
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": a.starts_at.to_string(),
                "endsAt": a.ends_at.map_or_else(|| ZERO_TIME.to_owned(), |t| t.to_string()),
                "generatorURL": a.generator_url.clone().unwrap_or_default(),
                "fingerprint": a.fingerprint,
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": total - keep,
        "status": n.status().as_str(),
        "receiver": n.receiver,
        "groupLabels": n.group_labels,
        "commonLabels": common(n.alerts.iter().map(|a| &a.labels)),
        "commonAnnotations": common(n.alerts.iter().map(|a| &a.annotations)),
        "externalURL": external_url,
        "alerts": alerts,
    })
}

/// A Slack incoming-webhook message.
pub fn slack_payload(n: &Notification, channel: Option<&str>) -> Value {
    let firing = n
        .alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Firing)
        .count();
    let name = n
        .group_labels
        .get("alertname")
        .cloned()
        .unwrap_or_else(|| n.group_key.clone());
    let head = if firing > 0 {
        format!("[FIRING:{firing}] {name}")
    } else {
        format!("[RESOLVED] {name}")
    };
    let mut lines = Vec::new();
    for a in n.alerts.iter().take(20) {
        let s = a.annotations.get("summary").map_or("", String::as_str);
        let act = a.annotations.get("action").map_or("none", String::as_str);
        lines.push(format!(
            "• {} {s} (action: {act})",
            if a.status == AlertStatus::Firing {
                "🔥"
            } else {
                "✅"
            }
        ));
    }
    if n.alerts.len() > 20 {
        lines.push(format!("… and {} more", n.alerts.len() - 20));
    }
    let text = format!("{head}\n{}", lines.join("\n"));
    let mut v = json!({
        "text": text,
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": head}},
            {"type": "section", "text": {"type": "mrkdwn", "text": lines.join("\n")}},
        ],
    });
    if let (Some(c), Some(o)) = (channel, v.as_object_mut()) {
        o.insert("channel".into(), Value::String(c.to_owned()));
    }
    v
}

/// Alertmanager's POST /api/v2/alerts body.
pub fn am_payload(alerts: &[Alert]) -> Value {
    Value::Array(
        alerts
            .iter()
            .map(|a| {
                json!({
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": a.starts_at.to_string(),
                    "endsAt": a.ends_at.map(|t| t.to_string()),
                    "generatorURL": a.generator_url.clone().unwrap_or_default(),
                })
            })
            .collect(),
    )
}

/// The `UGRO_ALERT_*` environment of an exec receiver.
pub fn exec_env(n: &Notification) -> Vec<(String, String)> {
    let firing = n
        .alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Firing)
        .count();
    let mut nodes: Vec<&str> = n
        .alerts
        .iter()
        .filter_map(|a| a.labels.get("node").map(String::as_str))
        .collect();
    nodes.sort_unstable();
    nodes.dedup();
    let mut names: Vec<&str> = n
        .alerts
        .iter()
        .filter_map(|a| a.labels.get("alertname").map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    vec![
        ("UGRO_ALERT_ID".into(), n.id.clone()),
        ("UGRO_ALERT_RECEIVER".into(), n.receiver.clone()),
        ("UGRO_ALERT_GROUP_KEY".into(), n.group_key.clone()),
        ("UGRO_ALERT_STATUS".into(), n.status().as_str().into()),
        ("UGRO_ALERT_COUNT".into(), n.alerts.len().to_string()),
        ("UGRO_ALERT_FIRING".into(), firing.to_string()),
        (
            "UGRO_ALERT_RESOLVED".into(),
            (n.alerts.len() - firing).to_string(),
        ),
        ("UGRO_ALERT_NODES".into(), nodes.join(",")),
        ("UGRO_ALERT_ALERTNAMES".into(), names.join(",")),
    ]
}

/// A node's Slurm state from `scontrol show node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmNode {
    /// `State=` (e.g. `IDLE+DRAIN`).
    pub state: String,
    /// `Reason=` (to end of line), empty when none.
    pub reason: String,
}

/// Parses `scontrol show node` output.
pub fn parse_scontrol_show(text: &str) -> Option<SlurmNode> {
    let mut state = None;
    let mut reason = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(r) = t.strip_prefix("Reason=") {
            reason = r.trim_end().to_owned();
            continue;
        }
        for tok in t.split_whitespace() {
            if let Some(s) = tok.strip_prefix("State=") {
                state = Some(s.to_owned());
            }
        }
    }
    state.map(|state| SlurmNode { state, reason })
}

fn reason_text(summary: &str) -> String {
    let clean: String = summary
        .chars()
        .map(|c| if c.is_control() || c == '"' { ' ' } else { c })
        .take(200)
        .collect();
    format!("ugro: {}", clean.trim())
}

/// The bounded on-disk spool: one JSON file per notification, named by a sequence number so
/// that they are retried in order.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_entries: usize,
    max_bytes: u64,
    seq: u64,
}

impl Spool {
    /// Opens (creating, mode 0700) the directory.
    pub fn open(dir: &Path, d: &Delivery) -> std::io::Result<Spool> {
        use std::os::unix::fs::PermissionsExt;
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        let mut s = Spool {
            dir: dir.to_owned(),
            max_entries: d.spool_max_entries,
            max_bytes: d.spool_max_bytes,
            seq: 0,
        };
        s.seq = s.entries()?.last().map_or(0, |(n, _, _)| *n) + 1;
        Ok(s)
    }

    /// `(seq, path, bytes)` in order.
    pub fn entries(&self) -> std::io::Result<Vec<(u64, PathBuf, u64)>> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name();
            let Some(n) = name
                .to_str()
                .and_then(|s| s.strip_suffix(".json"))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            v.push((n, e.path(), e.metadata()?.len()));
        }
        v.sort_unstable_by_key(|x| x.0);
        Ok(v)
    }

    /// Adds a notification, dropping the oldest entries (with an error logged) past the bounds.
    pub fn push(&mut self, n: &Notification) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(n).map_err(std::io::Error::other)?;
        let path = self.dir.join(format!("{:020}.json", self.seq));
        self.seq += 1;
        ugro_support::state::write_atomic(&path, &bytes).map_err(std::io::Error::other)?;
        let mut entries = self.entries()?;
        let mut total: u64 = entries.iter().map(|e| e.2).sum();
        while entries.len() > self.max_entries || (total > self.max_bytes && entries.len() > 1) {
            let (_, p, len) = entries.remove(0);
            let what = std::fs::read(&p)
                .ok()
                .and_then(|b| serde_json::from_slice::<Notification>(&b).ok())
                .map(|n| {
                    format!(
                        "receiver {} group {} ({} alerts)",
                        n.receiver,
                        n.group_key,
                        n.alerts.len()
                    )
                })
                .unwrap_or_else(|| p.display().to_string());
            tracing::error!("spool full: dropped the oldest notification: {what}");
            std::fs::remove_file(&p)?;
            total -= len;
        }
        Ok(())
    }
}

/// Delivers notifications to receivers, retrying and spooling.
#[derive(Debug)]
pub struct Deliverer {
    cfg: AlertConfig,
    spool: Option<Spool>,
    transport: Box<dyn Transport>,
    /// Notifications that failed and were spooled (for stats and exit status).
    pub spooled: u64,
    /// Spooled notifications delivered later.
    pub recovered: u64,
}

impl Deliverer {
    /// A deliverer; `spool_dir` None keeps failures in memory only as log lines.
    pub fn new(
        cfg: AlertConfig,
        spool_dir: Option<&Path>,
        transport: Box<dyn Transport>,
    ) -> std::io::Result<Deliverer> {
        let spool = match spool_dir {
            Some(d) => Some(Spool::open(d, &cfg.delivery)?),
            None => None,
        };
        Ok(Deliverer {
            cfg,
            spool,
            transport,
            spooled: 0,
            recovered: 0,
        })
    }

    /// Whether the spool holds anything.
    pub fn spool_pending(&self) -> bool {
        self.spool
            .as_ref()
            .is_some_and(|s| s.entries().is_ok_and(|e| !e.is_empty()))
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let d = &self.cfg.delivery;
        d.backoff
            .saturating_mul(1u32 << attempt.min(16))
            .min(d.max_backoff)
    }

    /// Delivers one notification: spooled behind earlier failures of the same receiver, else
    /// sent with retries and spooled on failure.
    pub fn deliver(&mut self, n: &Notification) {
        let queued = self.has_queued(&n.receiver);
        if !queued {
            let mut last = String::new();
            for attempt in 0..self.cfg.delivery.attempts {
                match self.send(n) {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(
                            "receiver {}: attempt {} failed: {e}",
                            n.receiver,
                            attempt + 1
                        );
                        last = e;
                    }
                }
                if attempt + 1 < self.cfg.delivery.attempts {
                    std::thread::sleep(self.backoff(attempt));
                }
            }
            tracing::warn!(
                "receiver {}: giving up for now ({last}); spooling",
                n.receiver
            );
        }
        match self.spool.as_mut() {
            Some(s) => match s.push(n) {
                Ok(()) => self.spooled += 1,
                Err(e) => tracing::error!("receiver {}: notification lost: spool: {e}", n.receiver),
            },
            None => tracing::error!("receiver {}: notification lost (no spool)", n.receiver),
        }
        if queued {
            self.drain();
        }
    }

    fn has_queued(&self, receiver: &str) -> bool {
        let Some(s) = &self.spool else { return false };
        s.entries().unwrap_or_default().iter().any(|(_, p, _)| {
            std::fs::read(p)
                .ok()
                .and_then(|b| serde_json::from_slice::<Notification>(&b).ok())
                .is_some_and(|n| n.receiver == receiver)
        })
    }

    /// Retries spooled notifications in order, one attempt each; a receiver that fails again
    /// keeps the rest of its queue for later. Entries are removed only after success.
    pub fn drain(&mut self) {
        let Some(s) = &self.spool else { return };
        let entries = match s.entries() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("spool: {e}");
                return;
            }
        };
        let mut blocked: Vec<String> = Vec::new();
        for (_, p, _) in entries {
            let n: Notification = match std::fs::read(&p)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!("spool entry {} unreadable ({e}); removed", p.display());
                    let _ = std::fs::remove_file(&p);
                    continue;
                }
            };
            if blocked.contains(&n.receiver) {
                continue;
            }
            if !self.cfg.receivers.contains_key(&n.receiver) {
                tracing::error!(
                    "spool entry {} is for receiver {} which is no longer configured; removed",
                    p.display(),
                    n.receiver
                );
                let _ = std::fs::remove_file(&p);
                continue;
            }
            match self.send(&n) {
                Ok(()) => {
                    if let Err(e) = std::fs::remove_file(&p) {
                        tracing::error!("spool: removing {}: {e}", p.display());
                    }
                    self.recovered += 1;
                }
                Err(e) => {
                    tracing::warn!("receiver {}: still failing: {e}", n.receiver);
                    blocked.push(n.receiver);
                }
            }
        }
    }

    fn send(&self, n: &Notification) -> Result<(), String> {
        let Some(r) = self.cfg.receivers.get(&n.receiver) else {
            return Err(format!("unknown receiver {}", n.receiver));
        };
        let timeout = self.cfg.delivery.timeout;
        let ext = &self.cfg.global.external_url;
        match &r.kind {
            ReceiverKind::Stdout | ReceiverKind::Alertmanager { .. } => Ok(()),
            ReceiverKind::Webhook {
                url,
                max_alerts,
                token,
            } => {
                let body = serde_json::to_vec(&webhook_payload(n, ext, *max_alerts))
                    .map_err(|e| e.to_string())?;
                let mut headers = vec![("X-Ugro-Notification-Id", n.id.clone())];
                if let Some(t) = token {
                    headers.push(("Authorization", format!("Bearer {}", t.resolve()?)));
                }
                self.transport
                    .post(&url.resolve()?, &headers, &body, timeout)
            }
            ReceiverKind::Slack { url, channel } => {
                let body = serde_json::to_vec(&slack_payload(n, channel.as_deref()))
                    .map_err(|e| e.to_string())?;
                self.transport.post(&url.resolve()?, &[], &body, timeout)
            }
            ReceiverKind::Exec {
                command,
                timeout: t,
            } => {
                let body =
                    serde_json::to_vec(&webhook_payload(n, ext, 0)).map_err(|e| e.to_string())?;
                let out = self.transport.exec(
                    command,
                    &exec_env(n),
                    &body,
                    t.unwrap_or(timeout),
                    false,
                )?;
                match out.status {
                    Some(0) => Ok(()),
                    s => Err(format!("{} exited with {s:?}", command[0])),
                }
            }
            ReceiverKind::SlurmDrain {
                act,
                scontrol,
                timeout: t,
            } => self.slurm(n, *act, scontrol, t.unwrap_or(timeout)),
        }
    }

    fn slurm(
        &self,
        n: &Notification,
        act: bool,
        scontrol: &Path,
        timeout: Duration,
    ) -> Result<(), String> {
        let prog = scontrol.to_string_lossy().into_owned();
        let run = |args: Vec<String>| -> Result<ExecOutput, String> {
            let mut argv = vec![prog.clone()];
            argv.extend(args);
            self.transport.exec(&argv, &[], b"", timeout, true)
        };
        let critical = |a: &Alert| a.labels.get("severity").map(String::as_str) == Some("critical");
        let mut nodes: Vec<(&str, bool, &Alert)> = Vec::new();
        for a in n.alerts.iter().filter(|a| critical(a)) {
            let Some(node) = a.labels.get("node") else {
                continue;
            };
            if ugro_types::validate_node(node).is_err() || node == "*" {
                continue;
            }
            let firing = a.status == AlertStatus::Firing;
            match nodes.iter_mut().find(|(x, _, _)| *x == node) {
                Some(e) => {
                    if firing && !e.1 {
                        *e = (node, true, a);
                    }
                }
                None => nodes.push((node, firing, a)),
            }
        }
        for (node, firing, a) in nodes {
            let shown = run(vec!["show".into(), "node".into(), node.into()]).and_then(|show| {
                if show.status != Some(0) {
                    return Err(format!(
                        "scontrol show node {node} exited with {:?}",
                        show.status
                    ));
                }
                parse_scontrol_show(&show.stdout)
                    .ok_or_else(|| format!("scontrol show node {node}: no State= in its output"))
            });
            let st = match shown {
                Ok(st) => st,
                // A dry run on a host without Slurm still says what it would do.
                Err(e) if !act => {
                    let what = if firing {
                        "State=DRAIN"
                    } else {
                        "State=RESUME (if drained by ugro)"
                    };
                    note(&format!(
                        "slurm_drain dry run (use --act): node state unknown ({e}); would run: {prog} update NodeName={node} {what}"
                    ));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let state = st.state.to_ascii_uppercase();
            let args = if state.contains("DOWN") {
                note(&format!("slurm_drain: {node} is {}: left alone", st.state));
                continue;
            } else if firing {
                if state.contains("DRAIN") {
                    note(&format!(
                        "slurm_drain: {node} is already {} (reason {:?}): left alone",
                        st.state, st.reason
                    ));
                    continue;
                }
                let summary = a
                    .annotations
                    .get("summary")
                    .map_or("critical", String::as_str);
                vec![
                    "update".to_owned(),
                    format!("NodeName={node}"),
                    "State=DRAIN".to_owned(),
                    format!("Reason={}", reason_text(summary)),
                ]
            } else {
                if !state.contains("DRAIN") {
                    continue;
                }
                if !st.reason.starts_with("ugro:") {
                    note(&format!(
                        "slurm_drain: {node} drained by someone else (reason {:?}): left alone",
                        st.reason
                    ));
                    continue;
                }
                vec![
                    "update".to_owned(),
                    format!("NodeName={node}"),
                    "State=RESUME".to_owned(),
                ]
            };
            if !act {
                note(&format!(
                    "slurm_drain dry run (use --act): would run: {prog} {}",
                    args.join(" ")
                ));
                continue;
            }
            let out = run(args.clone())?;
            if out.status != Some(0) {
                return Err(format!(
                    "{prog} {} exited with {:?}",
                    args.join(" "),
                    out.status
                ));
            }
            note(&format!("slurm_drain: ran {prog} {}", args.join(" ")));
        }
        Ok(())
    }

    /// Sends an Alertmanager batch to every listed instance (an HA cluster gossips, so one
    /// accepting it is enough). Returns whether any did; the engine keeps what was not
    /// delivered and sends it again at the next resend interval.
    pub fn deliver_am(&self, b: &AmBatch) -> bool {
        let Some(ReceiverKind::Alertmanager { urls, .. }) =
            self.cfg.receivers.get(&b.receiver).map(|r| &r.kind)
        else {
            return true;
        };
        let body = match serde_json::to_vec(&am_payload(&b.alerts)) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!("alertmanager payload: {e}");
                return true;
            }
        };
        let mut any = false;
        for base in urls {
            let url = format!("{}/api/v2/alerts", base.trim_end_matches('/'));
            let mut ok = false;
            for attempt in 0..self.cfg.delivery.attempts {
                match self
                    .transport
                    .post(&url, &[], &body, self.cfg.delivery.timeout)
                {
                    Ok(()) => {
                        ok = true;
                        break;
                    }
                    Err(e) => tracing::warn!("alertmanager {base}: attempt {}: {e}", attempt + 1),
                }
                if attempt + 1 < self.cfg.delivery.attempts {
                    std::thread::sleep(self.backoff(attempt));
                }
            }
            if ok {
                any = true;
            } else {
                tracing::error!(
                    "alertmanager {base}: {} alerts not delivered; tried again at the next resend interval",
                    b.alerts.len()
                );
            }
        }
        any
    }
}

fn note(msg: &str) {
    let _ = writeln!(std::io::stderr().lock(), "ugro-alert: {msg}");
}

/// Resolves a URL source (exposed for tests).
pub fn resolve_url(u: &UrlSource) -> Result<String, String> {
    u.resolve()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scontrol_show_output_is_parsed_for_state_and_reason() {
        let out = "NodeName=gpu-01 Arch=x86_64 CoresPerSocket=32\n   State=IDLE+DRAIN ThreadsPerCore=2\n   Reason=ugro: xid 79 [root@2026-11-28T10:00:00]\n";
        let n = parse_scontrol_show(out).unwrap();
        assert_eq!(n.state, "IDLE+DRAIN");
        assert!(n.reason.starts_with("ugro: xid 79"));
        assert_eq!(parse_scontrol_show("NodeName=x\n"), None);
    }

    #[test]
    fn full_spool_drops_the_oldest_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = AlertConfig::default().delivery;
        d.spool_max_entries = 2;
        let mut s = Spool::open(&dir.path().join("spool"), &d).unwrap();
        for i in 0..3 {
            let n = Notification {
                id: format!("id{i}"),
                receiver: "r".into(),
                group_key: "{}:{}".into(),
                group_labels: LabelSet::new(),
                alerts: Vec::new(),
                ts: ugro_types::Timestamp(i),
            };
            s.push(&n).unwrap();
        }
        let left: Vec<String> = s
            .entries()
            .unwrap()
            .iter()
            .map(|(_, p, _)| {
                serde_json::from_slice::<Notification>(&std::fs::read(p).unwrap())
                    .unwrap()
                    .id
            })
            .collect();
        assert_eq!(left, ["id1", "id2"]);
        // A reopened spool continues the sequence instead of overwriting.
        let s2 = Spool::open(&dir.path().join("spool"), &d).unwrap();
        assert_eq!(s2.seq, s.seq);
    }

    fn notification(statuses: &[AlertStatus]) -> Notification {
        let alerts = statuses
            .iter()
            .enumerate()
            .map(|(i, st)| {
                let labels: LabelSet = [
                    ("alertname".to_owned(), "NodeCritical".to_owned()),
                    ("node".to_owned(), format!("n{i}")),
                ]
                .into();
                let mut a = Alert::new(
                    ugro_types::Timestamp(0),
                    *st,
                    labels,
                    ugro_types::Timestamp(0),
                );
                a.annotations
                    .insert("summary".into(), format!("n{i} is critical"));
                a
            })
            .collect();
        Notification {
            id: "x".into(),
            receiver: "r".into(),
            group_key: "{}:{alertname=\"NodeCritical\"}".into(),
            group_labels: [("alertname".to_owned(), "NodeCritical".to_owned())].into(),
            alerts,
            ts: ugro_types::Timestamp(0),
        }
    }

    #[test]
    fn webhook_payload_truncates_and_computes_common_labels() {
        let n = notification(&[
            AlertStatus::Firing,
            AlertStatus::Resolved,
            AlertStatus::Firing,
        ]);
        let v = webhook_payload(&n, "http://x", 2);
        assert_eq!(v["version"], "4");
        assert_eq!(v["truncatedAlerts"], 1);
        assert_eq!(v["alerts"].as_array().unwrap().len(), 2);
        assert_eq!(
            v["commonLabels"],
            serde_json::json!({"alertname": "NodeCritical"})
        );
        assert_eq!(v["commonAnnotations"], serde_json::json!({}));
        assert_eq!(v["status"], "firing");
        assert_eq!(v["alerts"][0]["endsAt"], ZERO_TIME);
    }

    #[test]
    fn slack_message_counts_firing_alerts_and_names_the_group() {
        let v = slack_payload(
            &notification(&[AlertStatus::Firing, AlertStatus::Resolved]),
            Some("#gpu"),
        );
        let text = v["text"].as_str().unwrap();
        assert!(text.starts_with("[FIRING:1] NodeCritical"), "{text}");
        assert!(text.contains("n1 is critical"));
        assert_eq!(v["channel"], "#gpu");
        let v = slack_payload(&notification(&[AlertStatus::Resolved]), None);
        assert!(
            v["text"]
                .as_str()
                .unwrap()
                .starts_with("[RESOLVED] NodeCritical")
        );
        assert!(v.get("channel").is_none());
    }

    #[test]
    fn reason_text_strips_quotes_and_control_characters() {
        assert_eq!(reason_text("a \"b\"\nc"), "ugro: a  b  c");
    }
}
