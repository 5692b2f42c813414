//! Against real sshd instances on loopback and the real ugro-probe.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn ready() -> Option<std::path::PathBuf> {
    if !require(
        "sshd/ssh/ssh-keygen (Debian openssh-server, openssh-client)",
        SshFleet::available(),
    ) {
        return None;
    }
    let probe = probe_bin();
    if !require(
        "target/*/ugro-probe (cargo build --workspace)",
        probe.is_some(),
    ) {
        return None;
    }
    probe
}

fn sha256(p: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(p)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// The probe copy deploy left in the fleet's cache, checked to sit under its own SHA-256.
/// (Not compared with target/*/ugro-probe: other builds sharing the target directory may
/// relink that file while a test runs.)
fn deployed_copy(fleet: &SshFleet) -> Option<std::path::PathBuf> {
    let dir = fleet.cache.join("ugro");
    let copies: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ugro-probe-") && !n.contains(".tmp."))
        })
        .collect();
    assert!(copies.len() <= 1, "{copies:?}");
    let copy = copies.into_iter().next()?;
    let name = copy.file_name()?.to_str()?.to_owned();
    assert_eq!(
        name.strip_prefix("ugro-probe-"),
        Some(sha256(&copy).as_str())
    );
    Some(copy)
}

#[test]
fn eight_nodes_are_polled_over_ssh_through_a_deployed_probe() {
    let Some(probe) = ready() else { return };
    let fleet = SshFleet::start(8);
    let fixture = gpu_fixture("h200x8-idle.json");
    let yaml = fleet.cluster_yaml(
        "intervals: {base: 400ms, max: 400ms, spread: 0.5}\ntimeout: 5s\n",
        &["--gpu-fixture", fixture.to_str().unwrap()],
    );
    let dir = fleet.dir.path();
    std::fs::write(dir.join("cluster.yaml"), yaml).unwrap();
    // The first poll connects and copies the probe; then every node answers each cycle.
    let mut w = Running::start(&["-c", "cluster.yaml", "--stats-every", "0"], dir);
    w.until(
        Duration::from_secs(120),
        "three samples from each node",
        |seen| (0..8).all(|i| samples_of(seen, &format!("node-{i}")).count() >= 3),
    );
    w.signal("INT");
    let (st, recs) = w.wait(Duration::from_secs(30));
    assert!(st.success(), "{st}");
    let recs: Vec<Value> = recs.into_iter().map(|(_, v)| v).collect();
    for i in 0..8 {
        let node = format!("node-{i}");
        let s: Vec<&Value> = recs
            .iter()
            .filter(|r| r["kind"] == "sample" && r["node"] == node.as_str())
            .collect();
        assert!(s.len() >= 3, "{node}: {} samples", s.len());
        for r in s {
            assert!(r.get("unreachable").is_none(), "{node}: {r}");
            assert_eq!(r["gpu"]["devices"].as_array().map(Vec::len), Some(8));
        }
    }
    // The deployed copy sits in the per-user cache under its SHA-256, the size of a probe.
    let copy = deployed_copy(&fleet).expect("no deployed copy");
    assert!(std::fs::metadata(&copy).unwrap().len() > 1_000_000);
    assert!(probe.is_file());
}

#[test]
fn a_hundred_character_tmpdir_still_reaches_ssh_nodes() {
    let Some(_) = ready() else { return };
    let fleet = SshFleet::start(2);
    let dir = fleet.dir.path();
    // A TMPDIR of exactly 100 characters (today's limit for a control socket under it is 49).
    let mut long = dir.join("t");
    while long.as_os_str().len() < 100 {
        long.push("x".repeat((100 - long.as_os_str().len() - 1).clamp(1, 40)));
    }
    assert_eq!(long.as_os_str().len(), 100, "{long:?}");
    std::fs::create_dir_all(&long).unwrap();
    let yaml = fleet.cluster_yaml(
        "intervals: {base: 300ms, max: 300ms}\n",
        &[
            "--gpu-fixture",
            gpu_fixture("h200x8-idle.json").to_str().unwrap(),
        ],
    );
    std::fs::write(dir.join("cluster.yaml"), yaml).unwrap();
    let out = std::process::Command::new(watch_bin())
        .args(["-c", "cluster.yaml", "--cycles", "3", "--stats-every", "0"])
        .env("TMPDIR", &long)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs = records(&out.stdout);
    for n in ["node-0", "node-1"] {
        let s: Vec<&Value> = recs
            .iter()
            .filter(|r| r["kind"] == "sample" && r["node"] == n)
            .collect();
        assert!(!s.is_empty(), "{n}: no sample");
        assert!(
            s.iter().all(|r| r.get("unreachable").is_none()),
            "{n}: {s:?}"
        );
    }
}

#[test]
fn unknown_host_key_is_refused_unless_new_keys_are_accepted() {
    let Some(_) = ready() else { return };
    let fleet = SshFleet::start(2);
    let dir = fleet.dir.path();
    let empty = dir.join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let yaml = fleet
        .cluster_yaml("intervals: {base: 300ms, max: 300ms}\n", &[])
        .replace(fleet.known_hosts.to_str().unwrap(), empty.to_str().unwrap());
    std::fs::write(dir.join("strict.yaml"), &yaml).unwrap();
    let out = std::process::Command::new(watch_bin())
        .args(["-c", "strict.yaml", "--cycles", "2", "--stats-every", "0"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let recs = records(&out.stdout);
    assert!(!recs.is_empty());
    for r in recs.iter().filter(|r| r["kind"] == "sample") {
        assert_eq!(r["unreachable"]["cause"], "ssh", "{r}");
    }
    let accept = yaml.replace("ssh:\n", "ssh:\n  accept_new_host_keys: true\n");
    std::fs::write(dir.join("accept.yaml"), accept).unwrap();
    let out = std::process::Command::new(watch_bin())
        .args(["-c", "accept.yaml", "--cycles", "2", "--stats-every", "0"])
        .current_dir(dir)
        .output()
        .unwrap();
    let recs = records(&out.stdout);
    let ok = recs
        .iter()
        .filter(|r| r["kind"] == "sample" && r.get("unreachable").is_none())
        .count();
    assert!(ok >= 2, "{recs:?}");
    let learned = std::fs::read_to_string(&empty).unwrap();
    assert_eq!(learned.lines().count(), 2, "{learned}");
}

#[test]
fn no_deploy_runs_the_configured_probe_path() {
    let Some(probe) = ready() else { return };
    let fleet = SshFleet::start(2);
    let dir = fleet.dir.path();
    let yaml = fleet
        .cluster_yaml("intervals: {base: 300ms, max: 300ms}\n", &[])
        .replace(
            "probe:\n",
            &format!("probe:\n  path: {}\n", probe.display()),
        );
    std::fs::write(dir.join("c.yaml"), yaml).unwrap();
    let out = std::process::Command::new(watch_bin())
        .args([
            "-c",
            "c.yaml",
            "--cycles",
            "2",
            "--no-deploy",
            "--stats-every",
            "0",
        ])
        .current_dir(dir)
        .output()
        .unwrap();
    let recs = records(&out.stdout);
    assert!(
        recs.iter()
            .any(|r| r["kind"] == "sample" && r.get("host").is_some())
    );
    assert!(
        !fleet.cache.join("ugro").exists(),
        "deployed despite --no-deploy"
    );
}

#[test]
fn stopped_sshd_makes_its_node_unreachable_without_delaying_the_others_and_restart_reinstates_it() {
    let Some(_) = ready() else { return };
    let mut fleet = SshFleet::start(8);
    let dir = fleet.dir.path().to_owned();
    std::fs::write(
        dir.join("breaker.yaml"),
        "failure_threshold: 2\nwait_duration_in_open_state: 2s\nenable_exponential_backoff: false\n\
         permitted_number_of_calls_in_half_open_state: 1\nfleet_guard:\n  enabled: false\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("alert.yaml"),
        // NodeUnreachable's `for` within the breaker's failure_threshold: what the breaker holds
        // never reaches the alert stage.
        "route:\n  receiver: stdout\n  group_wait: 1s\nalert_rules:\n  NodeUnreachable: {for: 2}\n",
    )
    .unwrap();
    let yaml = fleet.cluster_yaml(
        "intervals: {base: 500ms, max: 500ms, spread: 0.2, reconnect_min: 200ms, reconnect_max: 1s}\n\
         timeout: 3s\npipeline:\n  breaker: breaker.yaml\n  alert: alert.yaml\n",
        &["--gpu-fixture", gpu_fixture("h200x8-idle.json").to_str().unwrap()],
    );
    std::fs::write(dir.join("cluster.yaml"), yaml).unwrap();
    let w = Running::start(
        &[
            "-c",
            "cluster.yaml",
            "--pipeline",
            "--state-dir",
            "state",
            "--history",
            "1000",
        ],
        &dir,
    );
    let node_state = |i: usize| -> Value {
        std::fs::read(dir.join(format!("state/nodes/node-{i}.json")))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    };
    let wait = |what: &str, pred: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !pred() {
            if Instant::now() > deadline {
                let s = node_state(7);
                let h = s["history"].as_array().map(|h| h.len()).unwrap_or(0);
                let tail: Vec<&Value> = s["history"]
                    .as_array()
                    .map(|h| h.iter().rev().take(3).collect())
                    .unwrap_or_default();
                panic!(
                    "timed out waiting for {what}: node-7 breaker {} state {} history {h} {tail:?}",
                    s["breaker"], s["state"]
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait("eight healthy nodes", &|| {
        (0..8).all(|i| node_state(i)["state"] == "healthy")
    });
    fleet.own.stop();
    // Three unreachable polls, not just the open breaker: when sshd came back within a poll of
    // the trip (two unreachable samples), NodeUnreachable was not among the alerts in about a
    // third of the runs, at c7bbba0 as since; an outage that outlasts the trip pages every time.
    wait(
        "node-7 unreachable three times with an open breaker",
        &|| {
            let s = node_state(7);
            s["history"]
                .as_array()
                .is_some_and(|h| h.iter().filter(|e| e["state"] == "unreachable").count() >= 3)
                && s["breaker"]["state"] == "open"
        },
    );
    let transition = node_state(7)["breaker"].clone();
    assert_eq!(transition["reason"], "failure_threshold", "{transition}");
    fleet.own.restart();
    wait("node-7 reinstated", &|| {
        let s = node_state(7);
        s["state"] == "healthy" && s["breaker"]["state"] == "closed"
    });
    // Enough history for the gap check below, however fast the scenario above went.
    wait("more than ten samples from each other node", &|| {
        (0..7).all(|i| {
            node_state(i)["history"]
                .as_array()
                .is_some_and(|h| h.len() > 10)
        })
    });
    w.signal("TERM");
    let (st, out) = w.wait(Duration::from_secs(30));
    assert!(st.success(), "{st}");
    // --pipeline writes what the last stage writes: alerts, among them node-7's unreachable.
    let alerts: Vec<&Value> = out.iter().map(|(_, v)| v).collect();
    assert!(alerts.iter().all(|v| v["kind"] == "alert"), "{alerts:?}");
    assert!(
        alerts
            .iter()
            .any(|v| v["node"] == "node-7" && v["labels"]["alertname"] == "NodeUnreachable"),
        "{alerts:?}"
    );
    // The other nodes kept their pace throughout: their probes' timestamps never leave a gap
    // of 2.5 s or more (the interval is 0.5 s; waiting on node-7 would cost the 3 s timeouts).
    for i in 0..7 {
        let s = node_state(i);
        let ts: Vec<i64> = s["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                ugro_types::Timestamp::parse(e["ts"].as_str().unwrap())
                    .unwrap()
                    .millis()
            })
            .collect();
        assert!(ts.len() > 10, "node-{i}: {} samples", ts.len());
        let worst = ts.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(worst < 2_500, "node-{i}: a gap of {worst} ms");
        assert!(
            s["history"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["state"] == "healthy")
        );
    }
}

#[test]
fn ssh_nodes_added_by_sighup_get_the_probe_deployed() {
    let Some(probe) = ready() else { return };
    let fleet = SshFleet::start(2);
    let dir = fleet.dir.path();
    let fixture = gpu_fixture("h200x8-idle.json");
    // At start-up only a local node, so nothing decides about deploy for SSH yet.
    let ssh_yaml = fleet.cluster_yaml(
        "intervals: {base: 300ms, max: 300ms}\ntimeout: 5s\n",
        &["--gpu-fixture", fixture.to_str().unwrap()],
    );
    let local_node = "  - name: here\n    transport: local\n";
    let (head, ssh_nodes) = ssh_yaml.split_once("nodes:\n").unwrap();
    std::fs::write(
        dir.join("cluster.yaml"),
        format!("{head}nodes:\n{local_node}"),
    )
    .unwrap();
    let mut w = Running::start(&["-c", "cluster.yaml", "--stats-every", "0"], dir);
    w.until(
        Duration::from_secs(60),
        "a sample from the local node",
        |s| samples_of(s, "here").count() > 0,
    );
    std::fs::write(
        dir.join("cluster.yaml"),
        format!("{head}nodes:\n{local_node}{ssh_nodes}"),
    )
    .unwrap();
    w.signal("HUP");
    w.until(
        Duration::from_secs(120),
        "two samples from each added SSH node",
        |s| (0..2).all(|i| samples_of(s, &format!("node-{i}")).count() >= 2),
    );
    w.signal("TERM");
    let (st, recs) = w.wait(Duration::from_secs(30));
    assert!(st.success(), "{st}");
    for i in 0..2 {
        let node = format!("node-{i}");
        let last = recs
            .iter()
            .map(|(_, v)| v)
            .rfind(|v| v["kind"] == "sample" && v["node"] == node.as_str())
            .unwrap();
        assert!(last.get("unreachable").is_none(), "{last}");
    }
    assert!(deployed_copy(&fleet).is_some(), "not deployed");
    assert!(probe.is_file());
}

#[test]
fn node_of_another_architecture_runs_its_own_probe_instead_of_a_copy() {
    let Some(probe) = ready() else { return };
    // A `uname` first on the sessions' PATH reports an architecture that is not this one.
    let foreign = if std::env::consts::ARCH == "aarch64" {
        "x86_64"
    } else {
        "aarch64"
    };
    let bin = tempfile::tempdir().unwrap();
    let uname = bin.path().join("uname");
    std::fs::write(&uname, format!("#!/bin/sh\necho {foreign}\n")).unwrap();
    std::fs::set_permissions(&uname, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let fleet = SshFleet::start_with_env(
        2,
        &format!("PATH={}:/usr/local/bin:/usr/bin:/bin", bin.path().display()),
    );
    let dir = fleet.dir.path();
    let fixture = gpu_fixture("h200x8-idle.json");
    let yaml = fleet.cluster_yaml(
        "intervals: {base: 300ms, max: 300ms}\ntimeout: 5s\n",
        &["--gpu-fixture", fixture.to_str().unwrap()],
    );
    // probe.path is a name the node does not have: the poll fails and says why.
    std::fs::write(
        dir.join("missing.yaml"),
        yaml.replace("probe:\n", "probe:\n  path: ugro-probe-not-installed\n"),
    )
    .unwrap();
    let out = std::process::Command::new(watch_bin())
        .args(["-c", "missing.yaml", "--cycles", "2", "--stats-every", "0"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let recs = records(&out.stdout);
    let samples: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "sample").collect();
    assert!(!samples.is_empty());
    for s in &samples {
        assert_eq!(s["unreachable"]["cause"], "probe", "{s}");
        let m = s["unreachable"]["message"].as_str().unwrap();
        assert!(
            m.contains(foreign) && m.contains(std::env::consts::ARCH) && m.contains("not deployed"),
            "{m}"
        );
    }
    assert!(
        !fleet.cache.join("ugro").exists(),
        "copied a binary of the wrong architecture"
    );
    // probe.path present on the node: it is run as it is.
    std::fs::write(
        dir.join("present.yaml"),
        yaml.replace(
            "probe:\n",
            &format!("probe:\n  path: {}\n", probe.display()),
        ),
    )
    .unwrap();
    let out = std::process::Command::new(watch_bin())
        .args(["-c", "present.yaml", "--cycles", "2", "--stats-every", "0"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let recs = records(&out.stdout);
    let ok = recs
        .iter()
        .filter(|r| r["kind"] == "sample" && r.get("unreachable").is_none())
        .count();
    assert!(ok >= 2, "{recs:?}");
    assert!(!fleet.cache.join("ugro").exists());
}
