//! Against a real Alertmanager (Debian's prometheus-alertmanager) on a loopback port: alerts
//! are posted, read back through GET /api/v2/alerts with matching fingerprints, and resolved.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ugro_types::Timestamp;

const AM: &str = "/usr/bin/prometheus-alertmanager";

struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(url: &str) -> Option<serde_json::Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let mut r = agent.get(url).call().ok()?;
    let s = r.body_mut().read_to_string().ok()?;
    serde_json::from_str(&s).ok()
}

fn start(dir: &std::path::Path) -> Option<(Guard, u16)> {
    if !require(AM, std::path::Path::new(AM).exists()) {
        return None;
    }
    let cfg = dir.join("am.yml");
    write(
        &cfg,
        "route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n",
    );
    let port = free_port();
    let child = Command::new(AM)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let g = Guard(child);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if get(&format!("http://127.0.0.1:{port}/api/v2/status")).is_some() {
            return Some((g, port));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("alertmanager did not come up on port {port}");
}

fn active(port: u16) -> Vec<serde_json::Value> {
    get(&format!("http://127.0.0.1:{port}/api/v2/alerts"))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn alerts_reach_alertmanager_with_its_fingerprints_and_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_am, port)) = start(dir.path()) else {
        return;
    };
    let cfg = dir.path().join("alert.yaml");
    write(
        &cfg,
        &format!(
            "global:\n  external_labels: {{cluster: test}}\nroute:\n  receiver: am\nreceivers:\n  - name: am\n    alertmanager:\n      urls: [\"http://127.0.0.1:{port}\"]\n      resend_interval: 1m\n"
        ),
    );
    let state = dir.path().join("state.json");
    let args = [
        "-c",
        cfg.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ];
    let t = Timestamp::now();
    let out = run(&args, &sample("gpu-07", t, "critical", XID), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let got = active(port);
    assert_eq!(got.len(), 2, "{got:?}");
    for a in &got {
        let labels: ugro_types::LabelSet = serde_json::from_value(a["labels"].clone()).unwrap();
        assert_eq!(
            a["fingerprint"].as_str().unwrap(),
            ugro_types::fingerprint_hex(&labels)
        );
        assert_eq!(labels["node"], "gpu-07");
        assert_eq!(labels["cluster"], "test");
        assert_eq!(a["status"]["state"], "active");
        let ends = Timestamp::parse(a["endsAt"].as_str().unwrap()).unwrap();
        let ahead = ends.since(t);
        assert!(
            ahead >= Duration::from_secs(230) && ahead <= Duration::from_secs(250),
            "endsAt {ahead:?} ahead, want 4 x 1m"
        );
    }
    let names: Vec<_> = got
        .iter()
        .map(|a| a["labels"]["alertname"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        names.contains(&"NodeCritical".to_owned()) && names.contains(&"GpuXidFatal".to_owned())
    );

    let out = run(
        &args,
        &sample("gpu-07", Timestamp::now(), "healthy", ""),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Alertmanager drops alerts whose endsAt has passed from the active list.
    let start = Instant::now();
    loop {
        let left = active(port);
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still active: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_resolve_sent_during_an_alertmanager_outage_is_delivered_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_am, port)) = start(dir.path()) else {
        return;
    };
    let dead = free_port();
    let cfg = dir.path().join("alert.yaml");
    let conf = |p: u16| {
        format!(
            "route:\n  receiver: am\nreceivers:\n  - name: am\n    alertmanager:\n      urls: [\"http://127.0.0.1:{p}\"]\n      resend_interval: 1m\ndelivery: {{attempts: 1, timeout: 2s}}\n"
        )
    };
    let state = dir.path().join("state.json");
    let args = [
        "-c",
        cfg.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ];
    write(&cfg, &conf(port));
    let out = run(
        &args,
        &sample("gpu-07", Timestamp::now(), "critical", ""),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(active(port).len(), 1);

    // Alertmanager unreachable while the node recovers.
    write(&cfg, &conf(dead));
    let out = run(
        &args,
        &sample("gpu-07", Timestamp::now(), "healthy", ""),
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not delivered"), "{err}");
    assert_eq!(active(port).len(), 1);

    write(&cfg, &conf(port));
    let out = run(
        &args,
        &sample("gpu-07", Timestamp::now(), "healthy", ""),
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = Instant::now();
    loop {
        let left = active(port);
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the resolve was lost: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
