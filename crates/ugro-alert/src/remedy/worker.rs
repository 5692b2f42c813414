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
}

struct Task {
    node: String,
    ts: Timestamp,
    job: Job,
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
    pub fn submit(&self, node: &str, ts: Timestamp, job: Job) -> bool {
        let t = Task {
            node: node.to_owned(),
            ts,
            job,
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

impl Runner {
    fn run(&self, t: &Task) -> Outcome {
        let r = match &t.job {
            Job::Remediate { argv, reason } => self.remediate(&t.node, t.ts, argv, reason),
            Job::Reason(reason) => self
                .set_reason(&t.node, reason)
                .map(|()| Outcome::ReasonSet),
            Job::Resume { check } => self.resume(&t.node, t.ts, check.as_deref()),
        };
        r.unwrap_or_else(Outcome::Error)
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

    fn remediate(
        &self,
        node: &str,
        ts: Timestamp,
        argv: &[String],
        reason: &str,
    ) -> Result<Outcome, String> {
        let st = match self.held(node)? {
            Ok(st) => st,
            Err(o) => return Ok(o),
        };
        let state = st.state.to_ascii_uppercase();
        if busy(&state) || state.contains("DOWN") {
            return Ok(Outcome::NotReady(format!("State={}", st.state)));
        }
        self.set_reason(node, reason)?;
        Ok(Outcome::Ran(self.record(ts, argv, self.timeout)))
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
    ) -> Result<Outcome, String> {
        let rec = check.map(|argv| self.record(ts, argv, self.check_timeout));
        if let Some(r) = &rec
            && !r.ok()
        {
            return Ok(Outcome::CheckFailed(r.clone()));
        }
        if let Err(o) = self.held(node)? {
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
    fn running_and_completing_jobs_make_a_node_busy() {
        assert!(busy("MIXED+DRAIN"));
        assert!(busy("ALLOCATED+DRAIN"));
        assert!(busy("IDLE+COMPLETING+DRAIN"));
        assert!(!busy("IDLE+DRAIN"));
    }
}
