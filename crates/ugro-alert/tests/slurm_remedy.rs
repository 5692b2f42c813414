//! Remediation against a real slurmctld (tests/support/slurm.rs): drain under a job,
//! remediate only once the job ended, verify by healthy polls, resume; a failing remediation
//! keeps the node drained and the second failure makes it need service; the quarantine budget
//! drains exactly its cap and nothing more until `ugro-alert budget reset`. Each ugro-alert
//! run is one poll (cron); the stand-in remediation records its argv.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use ugro_e2e::slurm::{NodeInfo, SlurmCluster};
use ugro_types::{Alert, AlertStatus, Timestamp};

/// Records `<argv>` in `calls` and exits with the number in `rc` (0 when absent).
const REMEDY: &str = r#"#!/bin/sh
echo "$*" >> "@DIR@/calls"
echo "resetting GPUs of $1"
rc=$(cat "@DIR@/rc" 2>/dev/null || echo 0)
[ "$rc" = 0 ] || echo "reset failed: GPU busy" >&2
exit "$rc"
"#;

struct Rig {
    dir: tempfile::TempDir,
    cfg: PathBuf,
    state: PathBuf,
    conf: String,
    t: Timestamp,
}

impl Rig {
    fn new(c: &SlurmCluster, extra: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("remedy");
        write(
            &script,
            &REMEDY.replace("@DIR@", dir.path().to_str().unwrap()),
        );
        make_executable(&script);
        let cfg = dir.path().join("alert.yaml");
        write(
            &cfg,
            &format!(
                r#"global:
  cluster_min_nodes: 100
route:
  receiver: drain
  group_by: [node]
  group_interval: 1s
  routes:
    - matchers: ['alertname=~"NodeNeedsService|QuarantineBudgetExhausted"']
      receiver: out
      continue: true
    - receiver: drain
receivers:
  - name: out
    stdout: {{}}
  - name: drain
    slurm_drain:
      timeout: 10s
      scontrol: /usr/bin/scontrol
      env: [SLURM_CONF]
      remediation:
        actions:
          reset_gpu: ["{}", "{{node}}", "{{action}}"]
        timeout: 30s
        retry_after: 20s
        poll_interval: 10s
      verify:
        healthy_polls: 2
{extra}"#,
                script.display()
            ),
        );
        let state = dir.path().join("alert-state.json");
        Rig {
            dir,
            cfg,
            state,
            conf: c.conf().display().to_string(),
            t: Timestamp(1_795_000_000_000),
        }
    }

    /// One poll `i` (30 s apart): a run of ugro-alert --act over these nodes' samples; the
    /// alerts it printed.
    fn poll(&self, i: i64, nodes: &[(&str, &str)]) -> Vec<Alert> {
        let lines: Vec<String> = nodes
            .iter()
            .map(|(n, st)| sample(n, secs(self.t, i * 30), st, ""))
            .collect();
        let args = [
            "-c",
            self.cfg.to_str().unwrap(),
            "--state",
            self.state.to_str().unwrap(),
            "--act",
        ];
        let out = run(
            &args,
            &lines.join("\n"),
            &[("SLURM_CONF", self.conf.as_str())],
        );
        succeeded(&out);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn fail_with(&self, rc: i32) {
        write(&self.dir.path().join("rc"), &rc.to_string());
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

fn reason(c: &SlurmCluster, node: &str) -> String {
    c.node(node).reason.unwrap_or_default()
}

fn firing<'a>(alerts: &'a [Alert], name: &str) -> Vec<&'a Alert> {
    alerts
        .iter()
        .filter(|a| a.labels["alertname"] == name && a.status == AlertStatus::Firing)
        .collect()
}

#[test]
fn a_fault_under_a_job_is_remediated_after_the_job_then_verified_and_resumed() {
    let Some(c) = SlurmCluster::shared(6) else {
        return;
    };
    let r = Rig::new(&c, "");
    let job = c.submit("n1", true);

    r.poll(0, &[("n1", "critical")]);
    let n1 = c.node("n1");
    assert_eq!(n1.state, "ALLOCATED+DRAIN", "{}", c.logs());
    assert_eq!(
        reason(&c, "n1"),
        "ugro: NodeCritical: n1 is critical (score 50)"
    );
    assert!(r.calls().is_empty(), "nothing runs under a job");

    c.cancel(&job);
    c.wait_node("n1", "IDLE+DRAIN", |n| n.state == "IDLE+DRAIN");
    r.poll(1, &[("n1", "critical")]);
    assert_eq!(r.calls(), ["n1 reset_gpu"]);
    assert_eq!(
        reason(&c, "n1"),
        "ugro: remedy reset_gpu verifying: NodeCritical"
    );

    // One healthy poll is not enough (healthy_polls: 2); the node's alert resolving does not
    // resume it either.
    r.poll(2, &[("n1", "healthy")]);
    assert!(c.node("n1").drained(), "{:?}", c.node("n1"));
    r.poll(3, &[("n1", "healthy")]);
    let n1 = c.wait_node("n1", "IDLE", |n| !n.drained());
    assert_eq!(n1.reason, None, "{n1:?}");
    assert_eq!(r.calls().len(), 1, "remediated once");
}

#[test]
fn a_failed_remediation_keeps_the_node_drained_and_the_second_needs_service() {
    let Some(c) = SlurmCluster::shared(6) else {
        return;
    };
    let r = Rig::new(&c, "");
    r.fail_with(1);

    let alerts = r.poll(0, &[("n2", "critical")]);
    assert_eq!(r.calls(), ["n2 reset_gpu"]);
    let n2 = c.node("n2");
    assert!(n2.drained(), "{n2:?}");
    let why = reason(&c, "n2");
    assert!(
        why.starts_with("ugro: remedy reset_gpu failed: NodeCritical: remediation reset_gpu failed (exit 1: reset failed: GPU busy)"),
        "{why}"
    );
    assert!(firing(&alerts, "NodeNeedsService").is_empty());

    // Before retry_after nothing is tried again.
    r.poll(0, &[("n2", "critical")]);
    assert_eq!(r.calls().len(), 1);
    let alerts = r.poll(1, &[("n2", "critical")]);
    assert_eq!(r.calls().len(), 2);
    let why = reason(&c, "n2");
    assert!(
        why.starts_with("ugro: needs service: NodeCritical: 2 failed remediations within 7days"),
        "{why}"
    );
    assert!(c.node("n2").drained());
    let needs = firing(&alerts, "NodeNeedsService");
    assert_eq!(needs.len(), 1, "{alerts:?}");
    assert_eq!(needs[0].labels["node"], "n2");
    assert!(
        needs[0].annotations["remediation_output"].contains("reset failed: GPU busy"),
        "the last output is in the alert: {:?}",
        needs[0].annotations
    );

    // A node that needs service is not remediated again, healthy or not.
    r.poll(2, &[("n2", "healthy")]);
    r.poll(3, &[("n2", "healthy")]);
    r.poll(4, &[("n2", "healthy")]);
    assert_eq!(r.calls().len(), 2);
    assert!(c.node("n2").drained());
    c.resume("n2");
}

#[test]
fn the_quarantine_budget_drains_its_cap_alerts_once_and_waits_for_a_reset() {
    let Some(c) = SlurmCluster::shared(6) else {
        return;
    };
    let r = Rig::new(&c, "      budget: {max_nodes: 2}\n");
    let faulty = ["n3", "n4", "n5"];
    let all = |st: &'static str| -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<_> = faulty.iter().map(|n| (*n, st)).collect();
        v.push(("n6", "healthy"));
        v
    };
    let drained = || -> Vec<&str> {
        faulty
            .iter()
            .copied()
            .filter(|n| c.node(n).drained())
            .collect()
    };

    let alerts = r.poll(0, &all("critical"));
    assert_eq!(drained().len(), 2, "exactly the budget: {:?}", drained());
    assert_eq!(
        firing(&alerts, "QuarantineBudgetExhausted").len(),
        1,
        "{alerts:?}"
    );
    let spared: Vec<&str> = faulty
        .iter()
        .copied()
        .filter(|n| !drained().contains(n))
        .collect();

    let alerts = r.poll(1, &all("critical"));
    assert_eq!(drained().len(), 2, "nothing more before a reset");
    assert!(
        firing(&alerts, "QuarantineBudgetExhausted").is_empty(),
        "one alert"
    );

    let out = run(
        &["--state", r.state.to_str().unwrap(), "budget", "reset"],
        "",
        &[],
    );
    succeeded(&out);
    r.poll(2, &all("critical"));
    let n = c.wait_node(spared[0], "drained after the reset", NodeInfo::drained);
    assert!(n.reason.unwrap_or_default().starts_with("ugro:"));
    // The group flushed at this run's first record, so the resolve goes out with the next
    // run (group_interval), as any change to a notified group does.
    let alerts = r.poll(3, &all("critical"));
    assert!(
        alerts
            .iter()
            .any(|a| a.labels["alertname"] == "QuarantineBudgetExhausted"
                && a.status == AlertStatus::Resolved),
        "{alerts:?}"
    );
    assert!(r.path().join("alert-state.json.remedy").exists());
    for n in faulty {
        c.resume(n);
    }
}
