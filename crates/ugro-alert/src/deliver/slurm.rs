//! The slurm_drain receiver: drains nodes with a critical alert firing and resumes the ones
//! ugro drained, one node at a time, so that one node Slurm refuses never holds back another.

use std::path::Path;
use std::time::Duration;

use ugro_types::{Alert, AlertStatus};

use super::lease::{LeaseConf, Register};
use super::note;
use super::transport::{Exec, ExecOutput, Failure, Transport};
use crate::engine::Notification;

/// Slurm stores a node's reason in its accounting database as `tinytext` (255 bytes,
/// slurmdbd's event table); a longer one is cut there, so ours never is longer.
pub const MAX_REASON_BYTES: usize = 255;

/// A node's Slurm state from `scontrol show node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmNode {
    /// `State=` (e.g. `IDLE+DRAIN`).
    pub state: String,
    /// `Reason=` (to end of line), empty when none.
    pub reason: String,
    /// `Comment=` (to end of line), empty when none; holds the replicas' lease.
    pub comment: String,
}

/// Parses `scontrol show node` output.
pub fn parse_scontrol_show(text: &str) -> Option<SlurmNode> {
    let mut state = None;
    let mut reason = String::new();
    let mut comment = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(r) = t.strip_prefix("Reason=") {
            reason = r.trim_end().to_owned();
            continue;
        }
        if let Some(c) = t.strip_prefix("Comment=") {
            comment = c.trim_end().to_owned();
            continue;
        }
        for tok in t.split_whitespace() {
            if let Some(s) = tok.strip_prefix("State=") {
                state = Some(s.to_owned());
            }
        }
    }
    state.map(|state| SlurmNode {
        state,
        reason,
        comment,
    })
}

/// The XID of an alert: its `xid` annotation, else the `XID <n>` its summary names.
fn xid_of(a: &Alert) -> Option<u32> {
    if let Some(x) = a.annotations.get("xid").and_then(|x| x.parse().ok()) {
        return Some(x);
    }
    let s = a.annotations.get("summary")?;
    let at = s.find("XID ")?;
    let digits: String = s[at + 4..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// What the summary says beyond the alert name, GPU and XID that the reason already gives:
/// `GPU 3 on gpu-02: GPU 3: XID 79 (fell off the bus)` becomes `fell off the bus`.
fn detail(summary: &str, node: &str, gpu: Option<&str>, xid: Option<u32>) -> String {
    let mut s = summary.trim();
    if let Some(g) = gpu {
        for prefix in [format!("GPU {g} on {node}: "), format!("GPU {g}: ")] {
            s = s.strip_prefix(prefix.as_str()).unwrap_or(s);
        }
    }
    if let Some(x) = xid
        && let Some(rest) = s.strip_prefix(&format!("XID {x}"))
    {
        let rest = rest.trim_start_matches([':', ' ']);
        s = match rest.strip_prefix('(').and_then(|r| r.split_once(')')) {
            Some((inner, tail)) if tail.trim().is_empty() => inner,
            _ => rest,
        };
    }
    s.to_owned()
}

/// `ugro: <alertname> gpu=<i> xid=<n>: <summary>` (gpu= and xid= only where known), without
/// quotes or control characters, at most [`MAX_REASON_BYTES`].
pub fn drain_reason(node: &str, a: &Alert) -> String {
    let name = a.labels.get("alertname").map_or("critical", String::as_str);
    let gpu = a.labels.get("gpu").map(String::as_str);
    let xid = xid_of(a);
    let mut head = format!("ugro: {name}");
    if let Some(g) = gpu {
        head.push_str(&format!(" gpu={g}"));
    }
    if let Some(x) = xid {
        head.push_str(&format!(" xid={x}"));
    }
    let summary = a.annotations.get("summary").map_or("", String::as_str);
    let text = detail(summary, node, gpu, xid);
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() || c == '"' { ' ' } else { c })
        .collect();
    let clean = clean.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut r = if clean.is_empty() {
        head
    } else {
        format!("{head}: {clean}")
    };
    if r.len() > MAX_REASON_BYTES {
        let mut cut = MAX_REASON_BYTES;
        while !r.is_char_boundary(cut) {
            cut -= 1;
        }
        r.truncate(cut);
    }
    r
}

/// Whether scontrol's complaint is about the request itself (a node Slurm does not know, an
/// invalid state or name), which no retry can fix, rather than about reaching slurmctld.
fn refused(out: &ExecOutput) -> bool {
    let text = format!("{}{}", out.stdout, out.stderr);
    text.contains("not found") || text.contains("Invalid ")
}

fn first_line(out: &ExecOutput) -> String {
    let text = if out.stderr.trim().is_empty() {
        &out.stdout
    } else {
        &out.stderr
    };
    text.lines().next().unwrap_or("").trim().to_owned()
}

/// A slurm_drain receiver's settings.
#[derive(Debug)]
pub struct Slurm<'a> {
    /// Really run `scontrol update`.
    pub act: bool,
    /// The program.
    pub scontrol: &'a Path,
    /// Per run of it.
    pub timeout: Duration,
    /// Variables it inherits (`env`).
    pub inherit: &'a [String],
    /// How it is run.
    pub transport: &'a dyn Transport,
    /// Resume nodes whose critical alerts resolved; false with remediation, which resumes a
    /// node only after verifying it (`crate::remedy`).
    pub resumes: bool,
    /// With replicas: act on a node only while holding its lease ([`super::lease`]).
    pub lease: Option<&'a LeaseConf>,
}

/// A node's comment through scontrol, as the lease's register.
struct CommentOf<'s, 'a> {
    slurm: &'s Slurm<'a>,
    node: &'s str,
}

impl Register for CommentOf<'_, '_> {
    type Error = Failure;
    fn read(&self) -> Result<String, Failure> {
        Ok(self.slurm.show(self.node)?.comment)
    }
    fn write(&self, comment: &str) -> Result<(), Failure> {
        let args = vec![
            "update".into(),
            format!("NodeName={}", self.node),
            format!("Comment={comment}"),
        ];
        self.slurm
            .checked(
                args,
                &format!("scontrol update NodeName={} Comment=", self.node),
            )
            .map(drop)
    }
}

/// One node of a notification: whether a critical alert of it fires, and the alert that says
/// why (the most specific: one with an XID, else one with a GPU, else the first).
pub(crate) fn nodes_of(n: &Notification) -> Vec<(&str, bool, &Alert)> {
    let rank =
        |a: &Alert| u8::from(xid_of(a).is_some()) * 2 + u8::from(a.labels.contains_key("gpu"));
    let mut nodes: Vec<(&str, bool, &Alert)> = Vec::new();
    for a in &n.alerts {
        if a.labels.get("severity").map(String::as_str) != Some("critical") {
            continue;
        }
        let Some(node) = a.labels.get("node") else {
            continue;
        };
        if ugro_types::validate_node(node).is_err() || node == "*" {
            continue;
        }
        let firing = a.status == AlertStatus::Firing;
        match nodes.iter_mut().find(|(x, _, _)| *x == node) {
            Some(e) if firing && (!e.1 || rank(a) > rank(e.2)) => *e = (node, true, a),
            Some(_) => {}
            None => nodes.push((node, firing, a)),
        }
    }
    nodes
}

impl Slurm<'_> {
    fn run(&self, args: Vec<String>) -> Result<ExecOutput, Failure> {
        let mut argv = vec![self.scontrol.to_string_lossy().into_owned()];
        argv.extend(args);
        self.transport
            .exec(&Exec {
                argv: &argv,
                env: Vec::new(),
                inherit: self.inherit,
                stdin: b"",
                timeout: self.timeout,
                capture: true,
            })
            .map_err(Failure::Retry)
    }

    fn checked(&self, args: Vec<String>, what: &str) -> Result<ExecOutput, Failure> {
        let out = self.run(args)?;
        if out.status == Some(0) {
            return Ok(out);
        }
        let msg = format!("{what} exited with {:?}: {}", out.status, first_line(&out));
        Err(if refused(&out) {
            Failure::Permanent(msg)
        } else {
            Failure::Retry(msg)
        })
    }

    /// Drains or resumes every node of `n`. On a retryable failure `n` keeps only the alerts
    /// of the nodes still to do, so that the retry redoes nothing and reports nothing twice;
    /// a node refused for good is reported in the returned [`Failure::Permanent`] and not
    /// retried.
    pub fn deliver(&self, n: &mut Notification) -> Result<(), Failure> {
        let mut retry: Vec<(String, String)> = Vec::new();
        let mut refused: Vec<String> = Vec::new();
        for (node, firing, a) in nodes_of(n) {
            match self.node(node, firing, a) {
                Ok(()) => {}
                Err(Failure::Permanent(m)) => refused.push(m),
                Err(Failure::Retry(m)) => retry.push((node.to_owned(), m)),
            }
        }
        if let Some((_, first)) = retry.first() {
            let first = first.clone();
            n.alerts.retain(|a| {
                a.labels
                    .get("node")
                    .is_some_and(|x| retry.iter().any(|(r, _)| r == x))
            });
            if !refused.is_empty() {
                tracing::error!("slurm_drain: not retried: {}", refused.join("; "));
            }
            return Err(Failure::Retry(first));
        }
        if refused.is_empty() {
            Ok(())
        } else {
            Err(Failure::Permanent(refused.join("; ")))
        }
    }

    fn show(&self, node: &str) -> Result<SlurmNode, Failure> {
        self.checked(
            vec!["show".into(), "node".into(), node.into()],
            &format!("scontrol show node {node}"),
        )
        .and_then(|show| {
            parse_scontrol_show(&show.stdout).ok_or_else(|| {
                Failure::Retry(format!(
                    "scontrol show node {node}: no State= in its output"
                ))
            })
        })
    }

    /// Takes the node's lease (see [`super::lease`]) and returns the node's state read after
    /// it was taken. Another replica's lease is a retryable failure, so that this one acts
    /// once that lease has expired if its holder never did.
    fn leased(&self, node: &str, conf: &LeaseConf) -> Result<SlurmNode, Failure> {
        let reg = CommentOf { slurm: self, node };
        match super::lease::take(&reg, conf, &|d| self.transport.sleep(d))? {
            Ok(()) => {
                note(&format!(
                    "slurm_drain: {node}: lease taken by {}",
                    conf.holder
                ));
                self.show(node)
            }
            Err(lost) => Err(Failure::Retry(format!("slurm_drain: {node}: {lost}"))),
        }
    }

    fn node(&self, node: &str, firing: bool, a: &Alert) -> Result<(), Failure> {
        let prog = self.scontrol.display();
        let shown = self.show(node);
        let st = match shown {
            Ok(st) => st,
            // A dry run on a host without Slurm still says what it would do.
            Err(e) if !self.act => {
                let what = if firing {
                    format!("State=DRAIN Reason={}", drain_reason(node, a))
                } else {
                    "State=RESUME (if drained by ugro)".to_owned()
                };
                note(&format!(
                    "slurm_drain dry run (use --act): node state unknown ({e}); would run: {prog} update NodeName={node} {what}"
                ));
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let Some(mut args) = self.update_for(node, firing, a, &st) else {
            return Ok(());
        };
        if !self.act {
            note(&format!(
                "slurm_drain dry run (use --act): would run: {prog} {}",
                args.join(" ")
            ));
            return Ok(());
        }
        // Only what there is to do takes the lease; the state is read again under it, since
        // another replica may have acted meanwhile.
        if let Some(conf) = self.lease {
            let st = self.leased(node, conf)?;
            let Some(now) = self.update_for(node, firing, a, &st) else {
                return Ok(());
            };
            args = now;
        }
        let what = format!("{prog} {}", args.join(" "));
        self.checked(args, &what)?;
        note(&format!("slurm_drain: ran {what}"));
        Ok(())
    }

    /// The `scontrol update` for a node in state `st`, or None when it is to be left alone.
    fn update_for(
        &self,
        node: &str,
        firing: bool,
        a: &Alert,
        st: &SlurmNode,
    ) -> Option<Vec<String>> {
        let state = st.state.to_ascii_uppercase();
        let name = format!("NodeName={node}");
        if state.contains("DOWN") {
            note(&format!("slurm_drain: {node} is {}: left alone", st.state));
            None
        } else if firing {
            if state.contains("DRAIN") {
                note(&format!(
                    "slurm_drain: {node} is already {} (reason {:?}): left alone",
                    st.state, st.reason
                ));
                return None;
            }
            Some(vec![
                "update".into(),
                name,
                "State=DRAIN".into(),
                format!("Reason={}", drain_reason(node, a)),
            ])
        } else if !state.contains("DRAIN") {
            None
        } else if !self.resumes {
            tracing::debug!("slurm_drain: {node} recovered: remediation verifies and resumes it");
            None
        } else if !st.reason.starts_with("ugro:") {
            note(&format!(
                "slurm_drain: {node} drained by someone else (reason {:?}): left alone",
                st.reason
            ));
            None
        } else {
            Some(vec!["update".into(), name, "State=RESUME".into()])
        }
    }
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

    fn alert(name: &str, gpu: Option<u32>, summary: &str) -> Alert {
        let mut labels: ugro_types::LabelSet = [
            ("alertname".to_owned(), name.to_owned()),
            ("node".to_owned(), "gpu-02".to_owned()),
            ("severity".to_owned(), "critical".to_owned()),
        ]
        .into();
        if let Some(g) = gpu {
            labels.insert("gpu".into(), g.to_string());
        }
        let mut a = Alert::new(
            ugro_types::Timestamp(0),
            AlertStatus::Firing,
            labels,
            ugro_types::Timestamp(0),
        );
        a.annotations.insert("summary".into(), summary.into());
        a
    }

    #[test]
    fn drain_reason_names_alert_gpu_and_xid_once() {
        let a = alert(
            "GpuXidFatal",
            Some(3),
            "GPU 3 on gpu-02: GPU 3: XID 79 (GPU has fallen off the bus)",
        );
        assert_eq!(
            drain_reason("gpu-02", &a),
            "ugro: GpuXidFatal gpu=3 xid=79: GPU has fallen off the bus"
        );
        let a = alert("GpuLost", Some(1), "GPU 1 on gpu-02: GPU 1: lost");
        assert_eq!(drain_reason("gpu-02", &a), "ugro: GpuLost gpu=1: lost");
        let a = alert("NodeCritical", None, "gpu-02 is critical (score 12)");
        assert_eq!(
            drain_reason("gpu-02", &a),
            "ugro: NodeCritical: gpu-02 is critical (score 12)"
        );
    }

    #[test]
    fn drain_reason_strips_quotes_and_control_characters_and_fits_slurm() {
        let a = alert("NodeCritical", None, "a \"b\"\nc");
        assert_eq!(drain_reason("gpu-02", &a), "ugro: NodeCritical: a b c");
        let a = alert("NodeCritical", None, &"é".repeat(400));
        let r = drain_reason("gpu-02", &a);
        assert!(r.len() <= MAX_REASON_BYTES && r.len() > 250, "{}", r.len());
    }

    #[test]
    fn the_most_specific_critical_alert_of_a_node_gives_the_reason() {
        let n = Notification {
            id: "x".into(),
            receiver: "r".into(),
            group_key: "g".into(),
            group_labels: ugro_types::LabelSet::new(),
            alerts: vec![
                alert("NodeCritical", None, "gpu-02 is critical"),
                alert("GpuXidFatal", Some(3), "GPU 3 on gpu-02: GPU 3: XID 79 (x)"),
            ],
            ts: ugro_types::Timestamp(0),
        };
        let nodes = nodes_of(&n);
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].2.labels["alertname"], "GpuXidFatal");
    }
}
