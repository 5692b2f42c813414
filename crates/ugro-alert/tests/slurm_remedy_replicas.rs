//! Two replicas of a watcher with remediation against a real slurmctld (tests/support/slurm.rs):
//! two long-running `ugro-alert --act` processes, each with its own state file, the same
//! receiver configuration but their own lease holder, and the same stand-in remediation (it
//! appends a line to one file), fed the same records as they come. The node's lease (its
//! Slurm Comment) lets one of them remediate, verify and resume; the other follows; and when
//! the holder is killed mid-way the other finishes once the lease has expired. Every wait is
//! on an event (Slurm's state, the file, a process's log) with a deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use ugro_e2e::slurm::SlurmCluster;
use ugro_types::Timestamp;

/// Appends `<node> <action>` to the calls file.
const REMEDY: &str = "#!/bin/sh\necho \"$*\" >> \"@CALLS@\"\necho \"resetting GPUs of $1\"\n";

/// The lease lasts this long after its holder last acted (seconds).
const TTL: u64 = 6;

/// How long any one awaited event may take.
const DEADLINE: Duration = Duration::from_secs(90);

/// One `ugro-alert --act` reading records from a pipe; its stderr is collected.
struct Replica {
    holder: String,
    child: Child,
    stdin: Option<ChildStdin>,
    err: Arc<Mutex<String>>,
}

impl Replica {
    fn start(c: &SlurmCluster, dir: &Path, holder: &str, script: &Path) -> Replica {
        let own = dir.join(holder);
        std::fs::create_dir_all(&own).unwrap();
        let cfg = own.join("alert.yaml");
        write_config(
            &cfg,
            &format!(
                r#"global: {{cluster_min_nodes: 100}}
route: {{receiver: drain, group_by: [node], group_interval: 1s}}
receivers:
  - name: drain
    slurm_drain:
      timeout: 10s
      scontrol: /usr/bin/scontrol
      env: [SLURM_CONF]
      lease: {{holder: {holder}, ttl: {TTL}s, settle: 1s}}
      remediation:
        actions:
          reset_gpu: ["{}", "{{node}}", "{{action}}"]
        timeout: 30s
        poll_interval: 1s
      verify:
        healthy_polls: 2
"#,
                script.display()
            ),
        );
        let state = own.join("state.json");
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("ugro-alert"))
            .args([
                "-c",
                cfg.to_str().unwrap(),
                "--state",
                state.to_str().unwrap(),
            ])
            .arg("--act")
            .env("SLURM_CONF", c.conf())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stderr.take().unwrap();
        let sink = err.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Replica {
            holder: holder.to_owned(),
            stdin: child.stdin.take(),
            child,
            err,
        }
    }

    fn feed(&mut self, line: &str) {
        if let Some(s) = self.stdin.as_mut() {
            writeln!(s, "{line}").unwrap();
            s.flush().unwrap();
        }
    }

    fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// SIGKILL: no chance to tidy up, as when a watcher's host dies.
    fn kill(&mut self) {
        self.stdin = None;
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// End of input; the run's own exit status.
    fn close(mut self) -> String {
        self.stdin = None;
        let st = self.child.wait().unwrap();
        let err = self.stderr();
        assert!(st.success(), "{}: {st}\n{err}", self.holder);
        err
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    calls: PathBuf,
    a: Replica,
    b: Replica,
}

impl Rig {
    fn new(c: &SlurmCluster) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        let script = dir.path().join("remedy");
        write(&script, &REMEDY.replace("@CALLS@", calls.to_str().unwrap()));
        make_executable(&script);
        let a = Replica::start(c, dir.path(), "replica-a", &script);
        let b = Replica::start(c, dir.path(), "replica-b", &script);
        Rig {
            _dir: dir,
            calls,
            a,
            b,
        }
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.calls)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Feeds a sample of `node` in `state` (stamped now) to every replica still running,
    /// about three a second, until `done` holds; panics after [`DEADLINE`].
    fn feed_until(&mut self, node: &str, state: &str, what: &str, done: impl Fn(&Rig) -> bool) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let line = sample(node, Timestamp::now(), state, "");
            self.a.feed(&line);
            self.b.feed(&line);
            if done(self) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "never {what}\n== replica-a\n{}\n== replica-b\n{}",
                self.a.stderr(),
                self.b.stderr()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The replica holding `node`'s lease now and the other one.
    fn holder(&mut self, c: &SlurmCluster, node: &str) -> (&mut Replica, &mut Replica) {
        let (h, _) = lease(c, node);
        if h == self.a.holder {
            (&mut self.a, &mut self.b)
        } else {
            assert_eq!(h, self.b.holder);
            (&mut self.b, &mut self.a)
        }
    }
}

fn reason(c: &SlurmCluster, node: &str) -> String {
    c.node(node).reason.unwrap_or_default()
}

#[test]
fn two_replicas_remediate_a_faulty_node_once_after_its_job_and_resume_it_once() {
    let Some(c) = SlurmCluster::shared(2) else {
        return;
    };
    let job = c.submit("n1", true);
    let mut r = Rig::new(&c);

    r.feed_until("n1", "critical", "drained", |_| c.node("n1").drained());
    assert_eq!(c.node("n1").state, "ALLOCATED+DRAIN", "{}", c.logs());
    assert!(r.calls().is_empty(), "nothing runs under a job");

    c.cancel(&job);
    r.feed_until("n1", "critical", "remediated", |r| !r.calls().is_empty());
    r.feed_until("n1", "critical", "verifying", |_| {
        reason(&c, "n1").contains("verifying")
    });
    r.feed_until("n1", "healthy", "resumed", |_| !c.node("n1").drained());
    let n1 = c.node("n1");
    // IDLE (+NOT_RESPONDING when slurmd misses a ping on a loaded host: Slurm's, not ours).
    assert!(n1.state.starts_with("IDLE"), "{n1:?}");
    assert_eq!(n1.reason, None, "{n1:?}");

    // The other replica followed the holder's node in Slurm and lets go of it once resumed;
    // then neither has anything left to do.
    let (holder, other) = r.holder(&c, "n1");
    let (holder, other) = (holder.holder.clone(), other.holder.clone());
    r.feed_until("n1", "healthy", "let go by the follower", |r| {
        let f = if r.a.holder == other { &r.a } else { &r.b };
        let err = f.stderr();
        // Seen under the holder's lease, or (were it over already) on taking the node.
        err.contains("n1: back in service") || err.contains("remedy: n1 let go")
    });
    let (ea, eb) = (r.a.stderr(), r.b.stderr());
    let calls = r.calls();
    let (a, b) = (r.a.close(), r.b.close());
    assert_eq!(calls, ["n1 reset_gpu"], "remediated once\n{ea}\n{eb}");
    let (he, oe) = if holder == "replica-a" {
        (a, b)
    } else {
        (b, a)
    };
    assert!(he.contains("verified and resumed"), "{he}");
    assert!(
        oe.contains(&format!("replica {holder} holds its lease")),
        "{oe}"
    );
    assert!(!oe.contains("verified and resumed"), "{oe}");
    assert!(
        !oe.contains("ran /usr/bin/scontrol update NodeName=n1 State=DRAIN"),
        "{oe}"
    );
}

#[test]
fn when_the_holder_is_killed_mid_way_the_other_replica_finishes_after_the_lease_ttl() {
    let Some(c) = SlurmCluster::shared(2) else {
        return;
    };
    let mut r = Rig::new(&c);
    r.feed_until("n2", "critical", "remediated and verifying", |r| {
        !r.calls().is_empty() && reason(&c, "n2").contains("verifying")
    });
    let (holder, survivor) = r.holder(&c, "n2");
    holder.kill();
    let (dead, alive) = (holder.holder.clone(), survivor.holder.clone());
    let (_, until) = lease(&c, "n2");

    r.feed_until("n2", "healthy", "resumed by the survivor", |_| {
        !c.node("n2").drained()
    });
    let resumed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(resumed >= until, "not before the dead holder's lease ended");
    assert_eq!(r.calls(), ["n2 reset_gpu"], "not remediated again");
    assert_eq!(lease(&c, "n2").0, alive);
    let survivor = if r.a.holder == alive { &r.a } else { &r.b };
    let err = survivor.stderr();
    assert!(
        err.contains(&format!("the lease of replica {dead} expired")),
        "{err}"
    );
    assert!(err.contains("not remediating again"), "{err}");
    assert!(err.contains("verified and resumed"), "{err}");
    assert_eq!(c.node("n2").reason, None);
}
