//! The side of remediation that waits: asking slurmctld about a node, running the remediation
//! and check programs, updating the node's reason and resuming it. `parallel` threads take
//! jobs from one bounded queue and hand outcomes back; the stage only queues and collects, so
//! a remediation that runs for minutes holds back neither the pipeline nor another node.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ugro_types::Timestamp;

use crate::deliver::lease::{self, LeaseConf, Lost, Register, Verdict};
use crate::deliver::{Exec, ExecOutput, SlurmNode, Transport, parse_scontrol_show};

/// Output kept of a program run (its tail: the end says what went wrong).
pub const OUTPUT_KEPT_BYTES: usize = 2048;

/// One program run, as kept in the state file and shown in the next alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// When it was started (record time).
    pub ts: Timestamp,
    /// What ran.
    pub argv: Vec<String>,
    /// Exit status; None when it was killed (timeout) or could not start.
    pub status: Option<i32>,
    /// Its stdout and stderr, the last [`OUTPUT_KEPT_BYTES`].
    pub output: String,
}

impl RunRecord {
    /// Exit 0.
    pub fn ok(&self) -> bool {
        self.status == Some(0)
    }

    /// `exit 3: <last line>` for a reason or a summary.
    pub fn brief(&self) -> String {
        let st = match self.status {
            Some(s) => format!("exit {s}"),
            None => "killed or did not start".to_owned(),
        };
        match self.output.lines().rev().find(|l| !l.trim().is_empty()) {
            Some(l) => format!("{st}: {}", l.trim()),
            None => st,
        }
    }
}

/// Work for the pool.
#[derive(Debug, Clone)]
pub enum Job {
    /// Run the remediation once Slurm says the node is drained by ugro with no job on it;
    /// first its reason becomes `reason`.
    Remediate {
        /// argv, expanded.
        argv: Vec<String>,
        /// The reason while it runs.
        reason: String,
    },
    /// Set the reason of a node that stays drained.
    Reason(String),
    /// Run the check (if any), then resume the node if ugro still holds it.
    Resume {
        /// The check, expanded.
        check: Option<Vec<String>>,
    },
    /// Only renew the node's lease (a replica that holds a node it is verifying).
    Renew,
}

/// Another replica's unexpired lease on a node, and the node as Slurm shows it then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Other {
    /// The replica that holds the lease.
    pub holder: String,
    /// Until when, Unix seconds.
    pub until: u64,
    /// `State=` then.
    pub state: String,
}

/// Where a node's reason says an earlier holder left its remediation: what a replica that
/// takes the node over adopts instead of starting again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// `ugro: remedy <action> verifying: ...`: the remediation ran; verify it.
    Verifying,
    /// `ugro: remedy <action> failed: <fault>: <why>`: it failed; why.
    Failed(String),
    /// `ugro: needs service: <fault>: <why>`: escalated; why.
    NeedsService(String),
}

/// What a reason (as `scontrol show node` prints it, perhaps with Slurm's ` [user@time]`)
/// says about the remediation; None for a drain reason or `running` (which is redone).
pub fn found(reason: &str) -> Option<Found> {
    let r = match reason.rsplit_once(" [") {
        Some((head, tail)) if tail.ends_with(']') && tail.contains('@') => head,
        _ => reason,
    };
    if let Some(why) = r.strip_prefix("ugro: needs service: ") {
        return Some(Found::NeedsService(why.to_owned()));
    }
    let (_action, rest) = r.strip_prefix("ugro: remedy ")?.split_once(' ')?;
    if rest.starts_with("verifying: ") {
        Some(Found::Verifying)
    } else {
        rest.strip_prefix("failed: ")
            .map(|why| Found::Failed(why.to_owned()))
    }
}

/// What a job found.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Not yet: not drained, a job still runs, DOWN (Slurm's state, for the log).
    NotReady(String),
    /// Someone else has the node now (drained with a reason not ours, or resumed): let go.
    Released(String),
    /// The remediation ran.
    Ran(RunRecord),
    /// The reason was set.
    ReasonSet,
    /// The check failed; the node stays drained.
    CheckFailed(RunRecord),
    /// Back in service.
    Resumed(Option<RunRecord>),
    /// scontrol failed (slurmctld unreachable, a bad SLURM_CONF): try again later.
    Error(String),
    /// Another replica holds the node's lease: nothing was done.
    Leased(Other),
    /// The reason says where another replica left the node (see [`Found`]); nothing ran.
    Found(Found),
    /// The lease was renewed.
    Renewed,
}

/// What the pool runs programs with.
#[derive(Debug, Clone)]
pub struct Runner {
    /// scontrol.
    pub scontrol: PathBuf,
    /// scontrol's timeout.
    pub scontrol_timeout: Duration,
    /// The remediation's timeout.
    pub timeout: Duration,
    /// The check's timeout.
    pub check_timeout: Duration,
    /// Variables the programs inherit (the receiver's `env`).
    pub inherit: Vec<String>,
    /// How they are run.
    pub transport: Arc<dyn Transport>,
    /// The receiver's lease (replicas): every job takes or renews it first.
    pub lease: Option<LeaseConf>,
}

struct Task {
    node: String,
    ts: Timestamp,
    job: Job,
    /// Some when this replica followed another's lease on the node (whether it saw the node
    /// drained meanwhile): a job that now gets the lease takes the node over.
    takeover: Option<bool>,
}

/// The threads and their queues.
#[derive(Debug)]
pub struct Pool {
    jobs: SyncSender<Task>,
    done: Receiver<(String, Outcome)>,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?}", self.node, self.job)
    }
}

impl Pool {
    /// Starts `threads` workers behind a queue of `queue` jobs.
    pub fn start(runner: Runner, threads: usize, queue: usize) -> std::io::Result<Pool> {
        let (jobs, rx) = std::sync::mpsc::sync_channel::<Task>(queue);
        let (tx, done) = std::sync::mpsc::channel();
        let rx = Arc::new(Mutex::new(rx));
        let runner = Arc::new(runner);
        for i in 0..threads {
            let (rx, tx, runner) = (rx.clone(), tx.clone(), runner.clone());
            std::thread::Builder::new()
                .name(format!("remedy-{i}"))
                .spawn(move || serve(&rx, &tx, &runner))?;
        }
        Ok(Pool { jobs, done })
    }

    /// Queues a job; false when the queue is full (the caller tries again later).
    pub fn submit(&self, node: &str, ts: Timestamp, job: Job, takeover: Option<bool>) -> bool {
        let t = Task {
            node: node.to_owned(),
            ts,
            job,
            takeover,
        };
        match self.jobs.try_send(t) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// Outcomes that came in; never waits.
    pub fn outcomes(&self) -> Vec<(String, Outcome)> {
        let mut v = Vec::new();
        loop {
            match self.done.try_recv() {
                Ok(o) => v.push(o),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return v,
            }
        }
    }

    /// Waits up to `timeout` for one outcome (tests and the end of a run).
    pub fn wait(&self, timeout: Duration) -> Option<(String, Outcome)> {
        self.done.recv_timeout(timeout).ok()
    }
}

fn serve(rx: &Mutex<Receiver<Task>>, tx: &Sender<(String, Outcome)>, r: &Runner) {
    loop {
        let task = {
            let guard = rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            guard.recv()
        };
        let Ok(t) = task else { return };
        let out = r.run(&t);
        if tx.send((t.node, out)).is_err() {
            return;
        }
    }
}

/// Slurm states in which a job still runs on the node (or is being cleaned up).
fn busy(state: &str) -> bool {
    ["ALLOCATED", "MIXED", "COMPLETING"]
        .iter()
        .any(|s| state.contains(s))
}

fn tail(s: &str, n: usize) -> &str {
    if s.len() <= n {
        return s;
    }
    let mut i = s.len() - n;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// A node's comment through scontrol: the lease's register.
struct CommentOf<'a> {
    runner: &'a Runner,
    node: &'a str,
}

impl Register for CommentOf<'_> {
    type Error = String;
    fn read(&self) -> Result<String, String> {
        Ok(self.runner.show(self.node)?.comment)
    }
    fn write(&self, comment: &str) -> Result<(), String> {
        let name = format!("NodeName={}", self.node);
        let comment = format!("Comment={comment}");
        self.runner.scontrol(&["update", &name, &comment]).map(drop)
    }
}

impl Runner {
    fn run(&self, t: &Task) -> Outcome {
        let r = self
            .lease(&t.node, Duration::ZERO)
            .and_then(|held| match held {
                Some(other) => Ok(Outcome::Leased(other)),
                None => self.job(t),
            });
        r.unwrap_or_else(Outcome::Error)
    }

    fn job(&self, t: &Task) -> Result<Outcome, String> {
        let takeover = t.takeover;
        match &t.job {
            Job::Remediate { argv, reason } => {
                self.remediate(&t.node, t.ts, argv, reason, takeover)
            }
            Job::Reason(reason) => self
                .set_reason(&t.node, reason)
                .map(|()| Outcome::ReasonSet),
            Job::Resume { check } => self.resume(&t.node, t.ts, check.as_deref(), takeover),
            Job::Renew => Ok(Outcome::Renewed),
        }
    }

    /// Takes or renews the node's lease until now + ttl + `longer` (the program about to
    /// run); Some(other) when another replica holds it. Without a lease configured, Ok(None).
    fn lease(&self, node: &str, longer: Duration) -> Result<Option<Other>, String> {
        let Some(conf) = &self.lease else {
            return Ok(None);
        };
        let st = self.show(node)?;
        let other = |l: lease::Lease| Other {
            holder: l.holder,
            until: l.until,
            state: st.state.clone(),
        };
        if let Verdict::Held(l) = lease::judge(&st.comment, &conf.holder, lease::unix_now()) {
            return Ok(Some(other(l)));
        }
        let conf = LeaseConf {
            ttl: conf.ttl + longer,
            ..conf.clone()
        };
        let reg = CommentOf { runner: self, node };
        match lease::take(&reg, &conf, &|d| self.transport.sleep(d))? {
            Ok(()) => Ok(None),
            Err(Lost::Held(l)) => Ok(Some(other(l))),
            Err(lost @ Lost::Slow(_)) => Err(format!("{node}: {lost}")),
        }
    }

    /// Runs a program of `timeout` under the lease, held for it and `ttl` beyond, then
    /// brought back to `ttl` from its end; Err(other) when the lease was lost meanwhile.
    fn leased_run(
        &self,
        node: &str,
        ts: Timestamp,
        argv: &[String],
        timeout: Duration,
    ) -> Result<Result<RunRecord, Other>, String> {
        if let Some(other) = self.lease(node, timeout)? {
            return Ok(Err(other));
        }
        let rec = self.record(ts, argv, timeout);
        if let Err(e) = self.lease(node, Duration::ZERO) {
            tracing::warn!("remedy: {node}: lease not renewed after the run: {e}");
        }
        Ok(Ok(rec))
    }

    fn exec(&self, argv: &[String], timeout: Duration) -> Result<ExecOutput, String> {
        self.transport.exec(&Exec {
            argv,
            env: Vec::new(),
            inherit: &self.inherit,
            stdin: b"",
            timeout,
            capture: true,
        })
    }

    fn scontrol(&self, args: &[&str]) -> Result<ExecOutput, String> {
        let mut argv = vec![self.scontrol.to_string_lossy().into_owned()];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        let out = self.exec(&argv, self.scontrol_timeout)?;
        if out.status == Some(0) {
            return Ok(out);
        }
        let text = if out.stderr.trim().is_empty() {
            &out.stdout
        } else {
            &out.stderr
        };
        Err(format!(
            "{} exited with {:?}: {}",
            argv.join(" "),
            out.status,
            text.lines().next().unwrap_or("").trim()
        ))
    }

    fn show(&self, node: &str) -> Result<SlurmNode, String> {
        let out = self.scontrol(&["show", "node", node])?;
        parse_scontrol_show(&out.stdout)
            .ok_or_else(|| format!("scontrol show node {node}: no State= in its output"))
    }

    /// Drained with our reason: Ok(node state); else what to tell the controller.
    fn held(&self, node: &str) -> Result<Result<SlurmNode, Outcome>, String> {
        let st = self.show(node)?;
        let state = st.state.to_ascii_uppercase();
        Ok(if !state.contains("DRAIN") {
            Err(Outcome::NotReady(format!(
                "not drained (State={})",
                st.state
            )))
        } else if !st.reason.starts_with("ugro:") {
            Err(Outcome::Released(format!(
                "drained by someone else (Reason={})",
                st.reason
            )))
        } else {
            Ok(st)
        })
    }

    /// Drained with our reason, as in [`Runner::held`]; a node taken over that is no longer
    /// drained after this replica saw it drained was resumed by the replica before: let go.
    fn held_over(
        &self,
        node: &str,
        takeover: Option<bool>,
    ) -> Result<Result<SlurmNode, Outcome>, String> {
        Ok(match self.held(node)? {
            Err(Outcome::NotReady(why)) if takeover == Some(true) => Err(Outcome::Released(
                format!("{why} after the replica that held its lease had it drained"),
            )),
            r => r,
        })
    }

    /// Drained with our reason, as in [`Runner::held`]; one no longer drained was resumed
    /// by someone else (an operator, the replica before): nothing left to resume.
    fn still_drained(&self, node: &str) -> Result<Result<SlurmNode, Outcome>, String> {
        Ok(match self.held(node)? {
            Err(Outcome::NotReady(why)) => Err(Outcome::Released(why)),
            r => r,
        })
    }

    /// Where the node's reason says a replica left it, with replicas only; a failure only
    /// for a node taken over (else it is this replica's own, to retry).
    fn found(&self, st: &SlurmNode, takeover: Option<bool>) -> Option<Found> {
        self.lease.as_ref()?;
        match found(&st.reason)? {
            Found::Failed(_) if takeover.is_none() => None,
            f => Some(f),
        }
    }

    fn remediate(
        &self,
        node: &str,
        ts: Timestamp,
        argv: &[String],
        reason: &str,
        takeover: Option<bool>,
    ) -> Result<Outcome, String> {
        let st = match self.held_over(node, takeover)? {
            Ok(st) => st,
            Err(o) => return Ok(o),
        };
        // This replica asks to remediate only a node it has not remediated or escalated, so
        // with replicas a reason saying so was another one's; a failure is ours to retry
        // unless the node was taken over.
        if let Some(f) = self.found(&st, takeover) {
            return Ok(Outcome::Found(f));
        }
        let state = st.state.to_ascii_uppercase();
        if busy(&state) || state.contains("DOWN") {
            return Ok(Outcome::NotReady(format!("State={}", st.state)));
        }
        self.set_reason(node, reason)?;
        Ok(match self.leased_run(node, ts, argv, self.timeout)? {
            Ok(rec) => Outcome::Ran(rec),
            Err(other) => Outcome::Leased(other),
        })
    }

    fn record(&self, ts: Timestamp, argv: &[String], timeout: Duration) -> RunRecord {
        let (status, output) = match self.exec(argv, timeout) {
            Ok(o) => (o.status, format!("{}{}", o.stdout, o.stderr)),
            Err(e) => (None, e),
        };
        RunRecord {
            ts,
            argv: argv.to_vec(),
            status,
            output: tail(&output, OUTPUT_KEPT_BYTES).to_owned(),
        }
    }

    fn set_reason(&self, node: &str, reason: &str) -> Result<(), String> {
        let name = format!("NodeName={node}");
        let reason = format!("Reason={reason}");
        self.scontrol(&["update", &name, "State=DRAIN", &reason])
            .map(drop)
    }

    fn resume(
        &self,
        node: &str,
        ts: Timestamp,
        check: Option<&[String]>,
        takeover: Option<bool>,
    ) -> Result<Outcome, String> {
        let st = match self.still_drained(node)? {
            Ok(st) => st,
            Err(o) => return Ok(o),
        };
        // Verifying is where a resume starts; the rest was another replica's say.
        if let Some(f @ (Found::NeedsService(_) | Found::Failed(_))) = self.found(&st, takeover) {
            return Ok(Outcome::Found(f));
        }
        let rec = match check {
            Some(argv) => match self.leased_run(node, ts, argv, self.check_timeout)? {
                Ok(rec) => Some(rec),
                Err(other) => return Ok(Outcome::Leased(other)),
            },
            None => None,
        };
        if let Some(r) = &rec
            && !r.ok()
        {
            return Ok(Outcome::CheckFailed(r.clone()));
        }
        if rec.is_some()
            && let Err(o) = self.still_drained(node)?
        {
            return Ok(o);
        }
        let name = format!("NodeName={node}");
        self.scontrol(&["update", &name, "State=RESUME"])?;
        Ok(Outcome::Resumed(rec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_runs_brief_is_its_status_and_last_line() {
        let r = RunRecord {
            ts: Timestamp(0),
            argv: vec!["x".into()],
            status: Some(3),
            output: "one\nGPU reset failed\n\n".into(),
        };
        assert_eq!(r.brief(), "exit 3: GPU reset failed");
        assert!(!r.ok());
        assert_eq!(tail("ééé", 3), "é");
    }

    #[test]
    fn a_reason_says_where_the_replica_before_left_the_remediation() {
        assert_eq!(
            found(
                "ugro: remedy reset_gpu verifying: GpuXidFatal gpu=3 [slurm@2026-12-02T01:00:00]"
            ),
            Some(Found::Verifying)
        );
        assert_eq!(
            found("ugro: remedy reboot failed: NodeCritical: check failed (exit 1)"),
            Some(Found::Failed("NodeCritical: check failed (exit 1)".into()))
        );
        assert_eq!(
            found("ugro: needs service: NodeCritical: 2 failed remediations [root@x]"),
            Some(Found::NeedsService(
                "NodeCritical: 2 failed remediations".into()
            ))
        );
        for redo in [
            "ugro: remedy reset_gpu running: GpuXidFatal gpu=3",
            "ugro: GpuXidFatal gpu=3 xid=79: fell off the bus",
            "maintenance [root@x]",
        ] {
            assert_eq!(found(redo), None, "{redo}");
        }
    }

    #[test]
    fn running_and_completing_jobs_make_a_node_busy() {
        assert!(busy("MIXED+DRAIN"));
        assert!(busy("ALLOCATED+DRAIN"));
        assert!(busy("IDLE+COMPLETING+DRAIN"));
        assert!(!busy("IDLE+DRAIN"));
    }
}
