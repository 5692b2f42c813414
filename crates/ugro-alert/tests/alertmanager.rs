//! Against a real Alertmanager (Debian's prometheus-alertmanager) on loopback ports: alerts
//! are posted, read back through GET /api/v2/alerts with matching fingerprints, and resolved;
//! and against a clustered pair, one of which is unreachable while an alert resolves.
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
    let port = free_port();
    let g = spawn_am(
        dir,
        "route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n",
        port,
        &["--cluster.listen-address=".to_owned()],
    );
    Some((g, port))
}

/// Starts an Alertmanager with `config` on `port` and waits until it answers.
fn spawn_am(dir: &std::path::Path, config: &str, port: u16, extra: &[String]) -> Guard {
    std::fs::create_dir_all(dir).unwrap();
    let cfg = dir.join("am.yml");
    write(&cfg, config);
    let child = Command::new(AM)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("am.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let g = Guard(child);
    wait_for(&format!("alertmanager on port {port}"), || {
        get(&format!("http://127.0.0.1:{port}/api/v2/status")).is_some()
    });
    g
}

/// Polls `f` (an HTTP API: there is no event to wait on) until it holds, with a guard.
fn wait_for(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(30), "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
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
    write_config(
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
    let out = run(
        &args,
        &sample("gpu-07", t, "critical", &format!("{XID},{DISK}")),
        &[],
    );
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
    write_config(&cfg, &conf(port));
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
    write_config(&cfg, &conf(dead));
    let out = run(
        &args,
        &sample("gpu-07", Timestamp::now(), "healthy", ""),
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not delivered"), "{err}");
    assert_eq!(active(port).len(), 1);

    write_config(&cfg, &conf(port));
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

/// A TCP relay in front of an Alertmanager's web port: while down it closes every connection at
/// once, which is what ugro sees of an instance it cannot reach. The instance itself keeps
/// running and gossiping with its peer, as in a partition between ugro and one instance.
struct Relay {
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    port: u16,
}

impl Relay {
    fn start(upstream: u16) -> Relay {
        use std::sync::atomic::Ordering;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let u = up.clone();
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                if !u.load(Ordering::Relaxed) {
                    drop(c);
                    continue;
                }
                let Ok(back) = std::net::TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                for (mut from, mut to) in [
                    (c.try_clone().unwrap(), back.try_clone().unwrap()),
                    (back, c),
                ] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        });
        Relay { up, port }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The webhook notifications Alertmanager sent, as (status, node) in order.
fn pages(s: &Server) -> Vec<(String, String)> {
    s.got()
        .iter()
        .map(|(_, v)| {
            (
                v["status"].as_str().unwrap().to_owned(),
                v["groupLabels"]["node"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

const GROUP_INTERVAL_S: u64 = 8;

#[test]
fn a_clustered_instance_that_missed_a_resolve_gets_it_and_pages_no_firing_after_resolved() {
    if !require(AM, std::path::Path::new(AM).exists()) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hook = Server::start(free_port(), Mode::Ok);
    let am_cfg = format!(
        "route:\n  receiver: hook\n  group_by: [node]\n  group_wait: 1s\n  group_interval: {GROUP_INTERVAL_S}s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    webhook_configs:\n      - url: http://127.0.0.1:{}/hook\n        send_resolved: true\n",
        hook.port
    );
    let (web, gossip) = ([free_port(), free_port()], [free_port(), free_port()]);
    let cluster = |i: usize| {
        vec![
            format!("--cluster.listen-address=127.0.0.1:{}", gossip[i]),
            format!("--cluster.advertise-address=127.0.0.1:{}", gossip[i]),
            format!("--cluster.peer=127.0.0.1:{}", gossip[1 - i]),
            "--cluster.peer-timeout=1s".to_owned(),
            "--cluster.gossip-interval=100ms".to_owned(),
            "--cluster.pushpull-interval=1s".to_owned(),
            "--cluster.settle-timeout=2s".to_owned(),
        ]
    };
    let _am1 = spawn_am(&dir.path().join("am1"), &am_cfg, web[0], &cluster(0));
    let _am2 = spawn_am(&dir.path().join("am2"), &am_cfg, web[1], &cluster(1));
    for p in web {
        wait_for("a cluster of two", || {
            get(&format!("http://127.0.0.1:{p}/api/v2/status")).is_some_and(|s| {
                s["cluster"]["status"] == "ready"
                    && s["cluster"]["peers"]
                        .as_array()
                        .is_some_and(|a| a.len() == 2)
            })
        });
    }
    let relay = Relay::start(web[1]);
    let cfg = dir.path().join("alert.yaml");
    write_config(
        &cfg,
        &format!(
            "route:\n  receiver: am\nreceivers:\n  - name: am\n    alertmanager:\n      urls: [\"http://127.0.0.1:{}\", \"http://127.0.0.1:{}\"]\n      resend_interval: 1m\ndelivery: {{timeout: 2s}}\n",
            web[0], relay.port
        ),
    );
    let state = dir.path().join("state.json");
    let args = [
        "-c",
        cfg.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ];

    succeeded(&run(
        &args,
        &sample("gpu-07", Timestamp::now(), "critical", ""),
        &[],
    ));
    wait_for("FIRING page", || {
        pages(&hook).iter().any(|p| p.0 == "firing")
    });
    assert_eq!(active(web[0]).len(), 1);
    assert_eq!(active(web[1]).len(), 1);

    // The second instance is unreachable while the node recovers.
    relay.set_up(false);
    let err = succeeded(&run(
        &args,
        &sample("gpu-07", Timestamp::now(), "healthy", ""),
        &[],
    ));
    assert!(err.contains("not delivered"), "{err}");
    assert!(
        active(web[0]).is_empty(),
        "the reachable instance has the resolve"
    );
    assert_eq!(active(web[1]).len(), 1, "the other one missed it");

    // Back: the next run sends it the resolve it missed.
    relay.set_up(true);
    succeeded(&run(&args, "", &[]));
    assert!(
        active(web[1]).is_empty(),
        "the resolve was not re-sent: {:?}",
        active(web[1])
    );

    wait_for("RESOLVED page", || {
        pages(&hook).iter().any(|p| p.0 == "resolved")
    });
    // A peer that still held the alert firing would page FIRING at its next flush after the
    // RESOLVED (its nflog, gossiped, says resolved). Nothing signals a flush that pages nothing,
    // so the test waits past that flush.
    std::thread::sleep(Duration::from_secs(GROUP_INTERVAL_S + 4));
    let p = pages(&hook);
    let resolved_at = p.iter().position(|x| x.0 == "resolved").unwrap();
    assert!(
        p[resolved_at..].iter().all(|x| x.0 == "resolved"),
        "FIRING after RESOLVED: {p:?}"
    );
}
