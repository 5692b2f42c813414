//! slurm_drain in --act mode against a real slurmctld (tests/support/slurm.rs): what today's
//! receiver does to real nodes. slurm_drain runs scontrol with a cleared environment, so
//! SLURM_CONF is lost (issue 11); the receiver is pointed at a wrapper that sets it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ugro_e2e::slurm::SlurmCluster;
use ugro_types::Timestamp;

/// Runs ugro-alert --act over `lines` with a slurm_drain receiver using `scontrol`.
fn alert(dir: &std::path::Path, scontrol: &std::path::Path, lines: &[String]) {
    let cfg = dir.join("alert.yaml");
    write(
        &cfg,
        &format!(
            "global:\n  cluster_min_nodes: 100\nroute:\n  receiver: drain\n  group_by: [node]\nreceivers:\n  - name: drain\n    slurm_drain: {{timeout: 10s, scontrol: {}}}\n",
            scontrol.display()
        ),
    );
    let state = dir.join("alert-state.json");
    let args = [
        "-c",
        cfg.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--act",
    ];
    let out = run(&args, &lines.join("\n"), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_critical_node_is_drained_under_its_job_and_resumed_when_it_recovers() {
    let Some(c) = SlurmCluster::shared(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let scontrol = c.wrapper("/usr/bin/scontrol");
    let job = c.submit("n1", true);
    c.drain("n2", "hw ticket 42");
    let t = Timestamp(1_795_000_000_000);
    let both = |at, state| -> Vec<String> {
        ["n1", "n2"]
            .iter()
            .map(|n| sample(n, secs(t, at), state, ""))
            .collect()
    };

    alert(dir.path(), &scontrol, &both(0, "critical"));
    let n1 = c.node("n1");
    assert_eq!(n1.state, "ALLOCATED+DRAIN", "{}", c.logs());
    assert_eq!(
        n1.reason.as_deref(),
        Some("ugro: n1 is critical (score 50)")
    );
    assert_eq!(c.job_state(&job), "RUNNING");
    let n2 = c.node("n2");
    assert_eq!(n2.reason.as_deref(), Some("hw ticket 42"));

    // As in slurm.rs: the resolve of a group that flushed at the first record goes out with
    // the next run after group_interval.
    alert(dir.path(), &scontrol, &both(300, "healthy"));
    alert(dir.path(), &scontrol, &both(600, "healthy"));
    // A resumed node reads ALLOCATED+NOT_RESPONDING until slurmctld's ping answers.
    let n1 = c.wait_node("n1", "ALLOCATED", |n| !n.drained());
    assert!(
        n1.state.starts_with("ALLOCATED"),
        "resumed under its job: {n1:?}"
    );
    assert_eq!(n1.reason, None);
    let n2 = c.node("n2");
    assert_eq!(n2.state, "IDLE+DRAIN", "a foreign drain stays");
    assert_eq!(n2.reason.as_deref(), Some("hw ticket 42"));

    c.cancel(&job);
    c.wait_node("n1", "IDLE", |n| n.state == "IDLE");
    c.resume("n2");
}

#[test]
fn a_down_node_is_left_alone() {
    let Some(c) = SlurmCluster::shared(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let scontrol = c.wrapper("/usr/bin/scontrol");
    c.run(
        "scontrol",
        &["update", "NodeName=n3", "State=DOWN", "Reason=cable pulled"],
    );
    let t = Timestamp(1_795_000_000_000);
    alert(dir.path(), &scontrol, &[sample("n3", t, "critical", "")]);
    let n3 = c.node("n3");
    assert!(n3.state.starts_with("DOWN"), "{n3:?}");
    assert_eq!(n3.reason.as_deref(), Some("cable pulled"));
}
