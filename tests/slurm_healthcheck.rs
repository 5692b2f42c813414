//! dist/slurm/ugro-healthcheck against a real Slurm 22.05: as slurm.conf's
//! HealthCheckProgram, a node whose GPU fixture is critical drains itself with ugro's reason and
//! a healthy node is resumed only if ugro drained it; run the way slurmd runs it (empty
//! environment but SLURMD_NODENAME), DOWN nodes, foreign reasons, "needs service" and nodes
//! held by remediation ("ugro: remedy ...") are left alone, and a dry run or a check that cannot tell changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the test's failure report

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ugro_e2e::slurm::{SlurmCluster, SlurmOptions};
use ugro_e2e::{bin, gpu_fixture, root, write_executable};

const CRITICAL: &str = "fault-xid79-gpu-lost.json";
const HEALTHY: &str = "h200x8-idle.json";

/// Score thresholds that ignore this host's own load, memory and disks, so the verdict is the
/// GPU fixture's whatever the runner is doing.
const SCORE_YAML: &str = "system:\n  cpu_pct_warn: 100\n  memory_available_warn_pct: 0\n  \
    memory_available_crit_pct: 0\n  swap_used_warn_pct: 100\n  disk_used_warn_pct: 100\n  \
    disk_used_crit_pct: 100\n  load_per_cpu_warn: 1000\n  load_per_cpu_crit: 1000\n\
    process:\n  zombies_warn: 1000000\n  d_state_warn: 1000000\n";

fn script() -> PathBuf {
    root().join("dist/slurm/ugro-healthcheck")
}

/// Points `node`'s probe at a GPU fixture (an atomic switch: slurmd may be running the check).
fn set_fixture(dir: &Path, node: &str, fixture: &str) {
    let tmp = dir.join(format!(".fixture-{node}"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(gpu_fixture(fixture), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join(format!("fixture-{node}.json"))).unwrap();
}

/// Writes the script's configuration for `slurm_conf` (atomically) and returns its path; each
/// node's probe replays dir/fixture-<node>.json.
fn write_conf(dir: &Path, slurm_conf: &Path) -> PathBuf {
    std::fs::write(dir.join("score.yaml"), SCORE_YAML).unwrap();
    let conf = format!(
        "SLURM_CONF='{slurm}'\n\
         UGRO_HC_SCONTROL=/usr/bin/scontrol\n\
         UGRO_HC_PROBE='{probe}'\n\
         UGRO_HC_SCORE='{score}'\n\
         UGRO_HC_PROBE_ARGS=\"--gpu-fixture {d}/fixture-$SLURMD_NODENAME.json --no-xid --cpu-window 0\"\n\
         UGRO_HC_SCORE_ARGS='-c {d}/score.yaml'\n\
         UGRO_HC_LOG='{d}/hc.log'\n",
        slurm = slurm_conf.display(),
        probe = bin("ugro-probe").display(),
        score = bin("ugro-score").display(),
        d = dir.display(),
    );
    let path = dir.join("hc.conf");
    std::fs::write(dir.join(".hc.conf"), conf).unwrap();
    std::fs::rename(dir.join(".hc.conf"), &path).unwrap();
    path
}

/// Runs the script for `node` as slurmd runs HealthCheckProgram: no arguments but `args`, an
/// environment of SLURMD_NODENAME only (plus the configuration file's name).
fn check(conf: &Path, node: &str, args: &[&str]) -> Output {
    Command::new(script())
        .args(args)
        .env_clear()
        .env("SLURMD_NODENAME", node)
        .env("UGRO_HEALTHCHECK_CONF", conf)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Waits until the script's log has a line containing `what`.
fn wait_log(dir: &Path, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(dir.join("hc.log")).unwrap_or_default();
        if log.lines().any(|l| l.contains(what)) {
            return;
        }
        assert!(Instant::now() < deadline, "no {what:?} in the log:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn as_health_check_program_a_critical_node_drains_itself_and_only_ugro_drains_are_resumed() {
    if !SlurmCluster::installed() {
        // start() reports the skip (or fails under UGRO_REQUIRE_REAL=1).
        let _ = SlurmCluster::start(&SlurmOptions::default());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    set_fixture(d, "n1", CRITICAL);
    set_fixture(d, "n2", HEALTHY);
    set_fixture(d, "n3", HEALTHY);
    // HealthCheckProgram takes no arguments and gets an empty environment: a two-line wrapper
    // names the configuration, as a site with its settings outside /etc/default would.
    let hc = d.join("hc");
    write_executable(
        &hc,
        &format!(
            "#!/bin/sh\nUGRO_HEALTHCHECK_CONF='{}/hc.conf' exec '{}' \"$@\"\n",
            d.display(),
            script().display()
        ),
    );
    let c = SlurmCluster::start(&SlurmOptions {
        nodes: 3,
        extra_conf: vec![
            format!("HealthCheckProgram={}", hc.display()),
            "HealthCheckInterval=1".into(),
            "HealthCheckNodeState=ANY".into(),
        ],
    })
    .expect("Slurm is installed");
    write_conf(d, c.conf());
    c.drain("n2", "ugro: earlier run");
    c.drain("n3", "hw ticket 42");

    let n1 = c.wait_node("n1", "drained", |n| n.drained());
    let reason = n1.reason.unwrap_or_default();
    assert!(
        reason.starts_with("ugro: healthcheck: critical") && reason.contains("GPU 3: lost"),
        "{reason}"
    );
    c.wait_node("n2", "resumed", |n| !n.drained());
    wait_log(
        d,
        "n3 healthy: drained by someone else (Reason=hw ticket 42): left alone",
    );
    let n3 = c.node("n3");
    assert_eq!(n3.state, "IDLE+DRAIN");
    assert_eq!(n3.reason.as_deref(), Some("hw ticket 42"));

    set_fixture(d, "n1", HEALTHY);
    c.wait_node("n1", "resumed", |n| !n.drained());
    wait_log(
        d,
        "n1 healthy: resumed (was Reason=ugro: healthcheck: critical",
    );
}

#[test]
fn critical_exits_1_and_drains_once_healthy_resumes_and_exits_0() {
    let Some(c) = SlurmCluster::shared(6) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let conf = write_conf(dir.path(), c.conf());
    set_fixture(dir.path(), "n1", CRITICAL);
    let o = check(&conf, "n1", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let n1 = c.node("n1");
    assert_eq!(n1.state, "IDLE+DRAIN");
    let reason = n1.reason.unwrap();
    assert!(
        reason.starts_with("ugro: healthcheck: critical"),
        "{reason}"
    );
    assert!(text(&o).contains("n1 critical: drained: Reason=ugro: healthcheck:"));

    let o = check(&conf, "n1", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("already drained"), "{}", text(&o));
    assert_eq!(c.node("n1").reason.as_deref(), Some(reason.as_str()));

    set_fixture(dir.path(), "n1", HEALTHY);
    let o = check(&conf, "n1", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(!c.node("n1").drained());
}

#[test]
fn down_nodes_foreign_reasons_and_needs_service_are_left_alone() {
    let Some(c) = SlurmCluster::shared(6) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let conf = write_conf(dir.path(), c.conf());
    c.run(
        "scontrol",
        &["update", "NodeName=n2", "State=DOWN", "Reason=cable pulled"],
    );
    set_fixture(dir.path(), "n2", CRITICAL);
    let o = check(&conf, "n2", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let n2 = c.node("n2");
    assert!(n2.state.starts_with("DOWN"), "{n2:?}");
    assert_eq!(n2.reason.as_deref(), Some("cable pulled"));

    for (node, reason) in [
        ("n3", "hw ticket 42"),
        ("n4", "ugro: needs service: XID 79"),
        (
            "n6",
            "ugro: remedy reset_gpu verifying: GpuXidFatal gpu=3 xid=79",
        ),
    ] {
        c.drain(node, reason);
        set_fixture(dir.path(), node, HEALTHY);
        let o = check(&conf, node, &[]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(text(&o).contains("left alone"), "{}", text(&o));
        let n = c.node(node);
        assert_eq!(n.state, "IDLE+DRAIN");
        assert_eq!(n.reason.as_deref(), Some(reason));
    }
    for node in ["n2", "n3", "n4", "n6"] {
        c.resume(node);
    }
}

#[test]
fn a_dry_run_and_a_check_that_cannot_tell_change_nothing() {
    let Some(c) = SlurmCluster::shared(6) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let conf = write_conf(dir.path(), c.conf());
    set_fixture(dir.path(), "n5", CRITICAL);
    let before = c.node("n5");
    let o = check(&conf, "n5", &["-n"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("dry run: would run: /usr/bin/scontrol update NodeName=n5 State=DRAIN Reason=ugro: healthcheck: critical"),
        "{}",
        text(&o)
    );
    assert_eq!(c.node("n5"), before);

    // No fixture for this node: the probe fails, ugro-score says UNKNOWN.
    let o = check(&conf, "nobody", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nobody unknown:"),
        "{}",
        text(&o)
    );
    let o = Command::new(script())
        .env_clear()
        .env("SLURMD_NODENAME", "n5")
        .env("UGRO_HEALTHCHECK_CONF", dir.path().join("missing.conf"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("cannot read UGRO_HEALTHCHECK_CONF"));
}
