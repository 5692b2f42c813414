//! Two replicas of a watcher (two ugro-alert runs with their own state, told of the same
//! faults) with slurm_drain leases against a real slurmctld (tests/support/slurm.rs): the
//! lease in the node's Comment lets only one of them act on a node, and the other takes over
//! once a dead holder's lease has expired.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use ugro_e2e::slurm::{NodeInfo, SlurmCluster};
use ugro_types::Timestamp;

const T: Timestamp = Timestamp(1_795_000_000_000);

/// One run of replica `holder` (state and spool under `dir/holder`) over `lines`; returns
/// stderr. A lease another replica holds is retried at once and then left in the spool, so a
/// run ends quickly.
fn replica(
    dir: &std::path::Path,
    c: &SlurmCluster,
    holder: &str,
    ttl: &str,
    lines: &[String],
) -> String {
    let own = dir.join(holder);
    std::fs::create_dir_all(&own).unwrap();
    let cfg = own.join("alert.yaml");
    write_config(
        &cfg,
        &format!(
            "global:\n  cluster_min_nodes: 100\ndelivery: {{attempts: 1, budget: 10s}}\n\
             route:\n  receiver: drain\n  group_by: [node]\nreceivers:\n  - name: drain\n    \
             slurm_drain: {{timeout: 10s, scontrol: /usr/bin/scontrol, env: [SLURM_CONF], \
             lease: {{holder: {holder}, ttl: {ttl}, settle: 1s}}}}\n"
        ),
    );
    act_on(c, &cfg, &own.join("state.json"), lines)
}

fn at(node: &str, s: i64, state: &str) -> Vec<String> {
    vec![sample(node, secs(T, s), state, "")]
}

fn drains(err: &str, node: &str) -> usize {
    err.matches(&format!(
        "ran /usr/bin/scontrol update NodeName={node} State=DRAIN"
    ))
    .count()
}

#[test]
fn only_the_lease_holder_acts_so_a_late_replica_does_not_drain_a_node_again_after_its_resume() {
    let Some(c) = SlurmCluster::shared(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    c.run("scontrol", &["update", "NodeName=n1", "Comment=rma 42"]);

    let a = replica(dir.path(), &c, "replica-a", "1h", &at("n1", 0, "critical"));
    assert_eq!(drains(&a, "n1"), 1, "{a}");
    assert!(c.node("n1").drained());
    assert_eq!(lease(&c, "n1").0, "replica-a");
    assert!(
        comment(&c, "n1").starts_with("rma 42 "),
        "operator text kept"
    );

    // The fault clears; a resumes the node (the resolve goes out with the run after
    // group_interval, as in slurm_real.rs).
    replica(dir.path(), &c, "replica-a", "1h", &at("n1", 300, "healthy"));
    replica(dir.path(), &c, "replica-a", "1h", &at("n1", 600, "healthy"));
    c.wait_node("n1", "resumed", |n| !n.drained());

    // b still sees the fault a little longer: without the lease it would drain n1 again.
    let b = replica(
        dir.path(),
        &c,
        "replica-b",
        "1h",
        &at("n1", 300, "critical"),
    );
    assert!(b.contains("replica replica-a holds the lease"), "{b}");
    assert_eq!(drains(&b, "n1"), 0, "{b}");
    let n1 = c.node("n1");
    assert!(!n1.drained(), "{n1:?}");
    assert_eq!(lease(&c, "n1").0, "replica-a");
}

#[test]
fn when_the_holder_dies_the_other_replica_acts_once_its_lease_has_expired() {
    let Some(c) = SlurmCluster::shared(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = replica(dir.path(), &c, "replica-a", "3s", &at("n2", 0, "critical"));
    assert_eq!(drains(&a, "n2"), 1, "{a}");
    // a is gone from here on. b was told of the fault too, and then of its end.
    replica(dir.path(), &c, "replica-b", "1h", &at("n2", 0, "critical"));
    let (holder, until) = lease(&c, "n2");
    assert_eq!(holder, "replica-a");
    // Waiting for the wall clock to pass the lease's end is the behaviour under test, not a
    // guess at how long something takes.
    let end = SystemTime::UNIX_EPOCH + Duration::from_secs(until + 1);
    while SystemTime::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    // The resolve goes out in one of the next two runs (group_interval, as in slurm_real.rs).
    let mut b = replica(dir.path(), &c, "replica-b", "1h", &at("n2", 300, "healthy"));
    b += &replica(dir.path(), &c, "replica-b", "1h", &at("n2", 600, "healthy"));
    assert!(b.contains("lease taken by replica-b"), "{b}");
    let n2 = c.wait_node("n2", "resumed", |n| !n.drained());
    assert_eq!(n2.reason, None);
    assert_eq!(lease(&c, "n2").0, "replica-b");
}

#[test]
fn two_replicas_started_together_drain_a_node_once() {
    let Some(c) = SlurmCluster::shared(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let runs: Vec<String> = std::thread::scope(|s| {
        let hs: Vec<_> = ["replica-a", "replica-b"]
            .map(|h| {
                let (dir, c) = (dir.path(), &c);
                s.spawn(move || replica(dir, c, h, "1h", &at("n3", 0, "critical")))
            })
            .into_iter()
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all = runs.join("\n");
    assert_eq!(drains(&all, "n3"), 1, "{all}");
    assert!(all.matches("lease taken by").count() <= 1, "{all}");
    let n3 = c.wait_node("n3", "drained", NodeInfo::drained);
    assert!(n3.reason.unwrap().starts_with("ugro: "));
    c.resume("n3");
}
