//! slurm_drain in --act mode against a real slurmctld (tests/support/slurm.rs): what the
//! receiver does to real nodes. scontrol runs with a cleared environment; the receiver's
//! `env: [SLURM_CONF]` passes this cluster's configuration through.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ugro_e2e::slurm::{NodeInfo, SlurmCluster};
use ugro_types::Timestamp;

/// Runs ugro-alert --act over `lines` with a slurm_drain receiver on cluster `c`; returns
/// stderr.
fn alert(dir: &std::path::Path, c: &SlurmCluster, lines: &[String]) -> String {
    let cfg = dir.join("alert.yaml");
    write_config(
        &cfg,
        "global:\n  cluster_min_nodes: 100\nroute:\n  receiver: drain\n  group_by: [node]\nreceivers:\n  - name: drain\n    slurm_drain: {timeout: 10s, scontrol: /usr/bin/scontrol, env: [SLURM_CONF]}\n",
    );
    act_on(c, &cfg, &dir.join("alert-state.json"), lines)
}

#[test]
fn a_critical_node_is_drained_under_its_job_and_resumed_when_it_recovers() {
    let Some(c) = SlurmCluster::shared(4) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let job = c.submit("n1", true);
    c.drain("n2", "hw ticket 42");
    let t = Timestamp(1_795_000_000_000);
    let both = |at, state| -> Vec<String> {
        ["n1", "n2"]
            .iter()
            .map(|n| sample(n, secs(t, at), state, ""))
            .collect()
    };

    alert(dir.path(), &c, &both(0, "critical"));
    let n1 = c.node("n1");
    assert_eq!(n1.state, "ALLOCATED+DRAIN", "{}", c.logs());
    assert_eq!(
        n1.reason.as_deref(),
        Some("ugro: NodeCritical: n1 is critical (score 50)")
    );
    assert_eq!(c.job_state(&job), "RUNNING");
    let n2 = c.node("n2");
    assert_eq!(n2.reason.as_deref(), Some("hw ticket 42"));

    // As in slurm.rs: the resolve of a group that flushed at the first record goes out with
    // the next run after group_interval.
    alert(dir.path(), &c, &both(300, "healthy"));
    alert(dir.path(), &c, &both(600, "healthy"));
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
    let Some(c) = SlurmCluster::shared(4) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    c.run(
        "scontrol",
        &["update", "NodeName=n3", "State=DOWN", "Reason=cable pulled"],
    );
    let t = Timestamp(1_795_000_000_000);
    alert(dir.path(), &c, &[sample("n3", t, "critical", "")]);
    let n3 = c.node("n3");
    assert!(n3.state.starts_with("DOWN"), "{n3:?}");
    assert_eq!(n3.reason.as_deref(), Some("cable pulled"));
}

#[test]
fn a_node_slurm_does_not_know_does_not_delay_the_drain_of_a_real_one() {
    let Some(c) = SlurmCluster::shared(4) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let t = Timestamp(1_795_000_000_000);
    let err = alert(
        dir.path(),
        &c,
        &[
            sample("ghost", t, "critical", ""),
            sample("n4", t, "critical", ""),
        ],
    );
    assert!(err.contains("refused for good"), "{err}");
    let n4 = c.wait_node("n4", "drained", NodeInfo::drained);
    assert_eq!(
        n4.reason.as_deref(),
        Some("ugro: NodeCritical: n4 is critical (score 50)")
    );
    assert_eq!(spooled(&dir.path().join("alert-state.json.spool")), 0);
    c.resume("n4");
}
