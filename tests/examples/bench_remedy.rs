//! scripts/bench-remedy.sh: drain → remediate → verify → resume against a real slurmctld,
//! measured in polls. One long-running `ugro-alert --act` (as under ugro-watch) is fed one poll
//! of node n1 per second of wall time (record time moves 1 s a poll, with a tick), and Slurm is
//! asked after each poll. Per episode: a job runs on n1, the fault arrives, the job is cancelled
//! two polls after the drain, the node turns healthy after the remediation ran, and
//! verification needs 3 healthy polls.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use ugro_e2e::slurm::{SlurmCluster, SlurmOptions};
use ugro_types::Timestamp;

const EPISODES: usize = 3;
const HEALTHY_POLLS: u32 = 3;

fn sample(ts: Timestamp, state: &str) -> String {
    format!(
        r#"{{"v":1,"kind":"sample","ts":"{ts}","node":"n1","score":{{"total":50,"state":"{state}","action":"reset_gpu","components":{{}},"reasons":[],"summary":"score 50"}}}}"#
    )
}

fn tick(ts: Timestamp) -> String {
    format!(r#"{{"v":1,"kind":"tick","ts":"{ts}","node":"*"}}"#)
}

/// Writes one poll a second of wall time.
struct Feeder {
    stdin: std::process::ChildStdin,
    t0: Timestamp,
    /// Polls written so far.
    poll: usize,
}

impl Feeder {
    /// Writes poll `self.poll` and waits a second; its index.
    fn feed(&mut self, state: &str) -> usize {
        let ts = Timestamp(self.t0.0 + self.poll as i64 * 1000);
        writeln!(self.stdin, "{}\n{}", sample(ts, state), tick(ts)).unwrap();
        self.stdin.flush().unwrap();
        std::thread::sleep(Duration::from_secs(1));
        self.poll += 1;
        self.poll - 1
    }
}

#[derive(Debug, Default)]
struct Episode {
    drain: Option<usize>,
    remediated: Option<usize>,
    resumed: Option<usize>,
}

fn main() {
    let c = SlurmCluster::start(&SlurmOptions {
        nodes: 2,
        ..SlurmOptions::default()
    })
    .expect("slurm-wlm and munge are needed (Debian: slurm-wlm munge)");
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let script = dir.path().join("remedy");
    ugro_e2e::write_executable(
        &script,
        &format!("#!/bin/sh\necho \"$*\" >> {}\n", calls.display()),
    );
    let cfg = dir.path().join("alert.yaml");
    std::fs::write(
        &cfg,
        format!(
            "global: {{cluster_min_nodes: 100}}\nroute:\n  receiver: drain\n  group_by: [node]\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n  - name: drain\n    slurm_drain:\n      scontrol: /usr/bin/scontrol\n      env: [SLURM_CONF]\n      remediation:\n        actions: {{reset_gpu: [\"{}\", \"{{node}}\"]}}\n        poll_interval: 1s\n      verify: {{healthy_polls: {HEALTHY_POLLS}}}\n      escalate: {{recurrences: 100}}\n",
            script.display()
        ),
    )
    .unwrap();
    let mut alert = Command::new(ugro_e2e::bin("ugro-alert"))
        .args(["-c", cfg.to_str().unwrap(), "--act", "--state"])
        .arg(dir.path().join("state.json"))
        .env("SLURM_CONF", c.conf())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut f = Feeder {
        stdin: alert.stdin.take().unwrap(),
        t0: Timestamp(1_795_000_000_000),
        poll: 0,
    };
    let remediations = || {
        std::fs::read_to_string(&calls)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let mut episodes = Vec::new();
    for e in 0..EPISODES {
        let job = c.submit("n1", true);
        f.feed("healthy");
        let fault = f.feed("critical");
        let mut ep = Episode::default();
        let mut cancelled_at = None;
        let mut healthy = 0;
        let mut verified_at = None;
        for _ in 0..60 {
            let n1 = c.node("n1");
            if ep.drain.is_none() && n1.drained() {
                ep.drain = Some(f.poll - 1 - fault);
            }
            if let Some(d) = ep.drain
                && cancelled_at.is_none()
                && f.poll - 1 - fault >= d + 2
            {
                c.cancel(&job);
                cancelled_at = Some(f.poll);
            }
            if ep.remediated.is_none() && remediations() > e {
                ep.remediated = cancelled_at.map(|at| f.poll - at);
            }
            if ep.remediated.is_some() && verified_at.is_some() && !n1.drained() {
                ep.resumed = verified_at.map(|v| f.poll - 1 - v);
                break;
            }
            if ep.remediated.is_some() {
                let p = f.feed("healthy");
                healthy += 1;
                if healthy == HEALTHY_POLLS {
                    verified_at = Some(p);
                }
            } else {
                f.feed("critical");
            }
        }
        println!(
            "episode {}: fault->DRAIN {:?} polls, job end->remediation {:?} polls, verification passed->IDLE {:?} polls",
            e + 1,
            ep.drain,
            ep.remediated,
            ep.resumed
        );
        episodes.push(ep);
        c.wait_node("n1", "IDLE", |n| n.state == "IDLE");
    }
    drop(f);
    let _ = alert.wait();
    let worst = |f: fn(&Episode) -> Option<usize>| {
        episodes
            .iter()
            .map(|e| f(e).map_or("never".to_owned(), |n| n.to_string()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("| figure | target | measured (per episode) |");
    println!("| --- | --- | --- |");
    println!("| fault -> DRAIN | <= 3 polls | {} |", worst(|e| e.drain));
    println!(
        "| job ended -> remediation ran | report | {} |",
        worst(|e| e.remediated)
    );
    println!(
        "| verification passed -> IDLE | <= 2 polls | {} |",
        worst(|e| e.resumed)
    );
}
