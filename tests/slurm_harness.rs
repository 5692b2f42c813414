//! The real-Slurm harness against Slurm 22.05 itself: nodes come up IDLE, a drain shows our
//! reason, a job under a drain is DRAINING, resume returns IDLE, and nothing outlives the
//! cluster. Each test uses its own node of the one shared cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the test's failure report

use ugro_e2e::slurm::{SlurmCluster, SlurmOptions, processes_using};

const NODES: usize = 3;

#[test]
fn every_node_registers_idle() {
    let Some(c) = SlurmCluster::shared(NODES) else {
        return;
    };
    assert_eq!(c.nodes(), ["n1", "n2", "n3"]);
    let out = c.run("sinfo", &["-h", "-N", "-o", "%N"]);
    assert_eq!(out.lines().collect::<Vec<_>>(), ["n1", "n2", "n3"]);
    assert!(c.run("scontrol", &["ping"]).contains("is UP"));
}

#[test]
fn a_drain_shows_its_reason_and_resume_returns_the_node_to_idle() {
    let Some(c) = SlurmCluster::shared(NODES) else {
        return;
    };
    c.wait_node("n1", "IDLE", |n| n.state == "IDLE");
    c.drain("n1", "ugro: test");
    let n = c.node("n1");
    assert_eq!(n.state, "IDLE+DRAIN");
    assert_eq!(n.reason.as_deref(), Some("ugro: test"));
    assert!(n.drained());
    assert_eq!(c.sinfo_state("n1"), "drained");
    c.resume("n1");
    // slurmctld marks a resumed node IDLE+NOT_RESPONDING (sinfo: idle*) until its next ping
    // answers, so this waits.
    let n = c.wait_node("n1", "IDLE", |n| n.state == "IDLE");
    assert_eq!(n.reason, None);
    assert_eq!(c.sinfo_state("n1"), "idle");
}

#[test]
fn a_drain_under_a_running_job_is_draining_until_the_job_ends() {
    let Some(c) = SlurmCluster::shared(NODES) else {
        return;
    };
    c.wait_node("n2", "IDLE", |n| n.state == "IDLE");
    let whole = c.submit("n2", true);
    assert_eq!(c.node("n2").state, "ALLOCATED");
    assert_eq!(c.sinfo_state("n2"), "allocated");
    c.drain("n2", "ugro: busy");
    let n = c.node("n2");
    assert_eq!(n.state, "ALLOCATED+DRAIN");
    assert_eq!(n.reason.as_deref(), Some("ugro: busy"));
    assert_eq!(c.sinfo_state("n2"), "draining");
    assert_eq!(
        c.job_state(&whole),
        "RUNNING",
        "a drain lets the job run on"
    );
    c.cancel(&whole);
    c.wait_node("n2", "IDLE+DRAIN", |n| n.state == "IDLE+DRAIN");
    assert_eq!(c.sinfo_state("n2"), "drained");
    c.resume("n2");
    c.wait_node("n2", "IDLE", |n| n.state == "IDLE");
}

#[test]
fn a_job_on_part_of_a_node_is_mixed_and_mixed_drain_under_a_drain() {
    let Some(c) = SlurmCluster::shared(NODES) else {
        return;
    };
    c.wait_node("n3", "IDLE", |n| n.state == "IDLE");
    let part = c.submit("n3", false);
    assert_eq!(c.node("n3").state, "MIXED");
    assert_eq!(c.sinfo_state("n3"), "mixed");
    c.drain("n3", "ugro: part");
    assert_eq!(c.node("n3").state, "MIXED+DRAIN");
    assert_eq!(c.sinfo_state("n3"), "draining");
    c.cancel(&part);
    c.resume("n3");
    c.wait_node("n3", "IDLE", |n| n.state == "IDLE");
}

#[test]
fn dropping_a_cluster_leaves_no_process_behind() {
    let Some(c) = SlurmCluster::start(&SlurmOptions {
        nodes: 1,
        ..SlurmOptions::default()
    }) else {
        return;
    };
    let conf = c.conf().to_owned();
    c.submit("n1", true);
    // munged, slurmctld (and its slurmscriptd), slurmd, slurmstepd, the job's shell and sleep.
    // squeue says RUNNING before slurmstepd has forked the job's shell, so wait for it to
    // appear rather than count at once (on a loaded runner the count was 5).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut before = processes_using(&conf);
    while before.len() < 6 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        before = processes_using(&conf);
    }
    assert!(before.len() >= 6, "{before:?}");
    drop(c);
    assert_eq!(processes_using(&conf), Vec::<i32>::new());
    assert!(!conf.exists());
}
