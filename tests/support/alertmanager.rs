//! Real Alertmanagers (Debian's `prometheus-alertmanager`) clustered on loopback, and a webhook
//! recorder they page into, for the cross-tool tests.
#![allow(clippy::expect_used)] // test support: a panic is the failing test's report

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The Debian binary.
pub const AM: &str = "/usr/bin/prometheus-alertmanager";

/// Whether Alertmanager is installed (and fails the test under `UGRO_REQUIRE_REAL=1` if not).
pub fn available() -> bool {
    crate::require(AM, Path::new(AM).exists())
}

/// GET a JSON API, `None` when it does not answer.
pub fn get(url: &str) -> Option<serde_json::Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    let mut r = agent.get(url).call().ok()?;
    let s = r.body_mut().read_to_string().ok()?;
    serde_json::from_str(&s).ok()
}

/// Polls `f` (an HTTP API or a process's output: there is no event to wait on) until it holds;
/// panics after a minute.
pub fn wait_for(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(60), "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A gossiping cluster of Alertmanagers; each instance can be stopped and started again
/// with its storage (as a crashed and restarted one would be).
#[derive(Debug)]
pub struct AmCluster {
    dir: PathBuf,
    web: Vec<u16>,
    gossip: Vec<u16>,
    children: Vec<Option<Child>>,
}

impl AmCluster {
    /// Starts `n` instances with `config` under `dir` and waits until all see each other.
    pub fn start(dir: &Path, n: usize, config: &str) -> AmCluster {
        let mut c = AmCluster {
            dir: dir.to_owned(),
            web: (0..n).map(|_| crate::free_port()).collect(),
            gossip: (0..n).map(|_| crate::free_port()).collect(),
            children: (0..n).map(|_| None).collect(),
        };
        std::fs::create_dir_all(dir).expect("am dir");
        std::fs::write(dir.join("am.yml"), config).expect("am.yml");
        for i in 0..n {
            c.up(i);
        }
        c.wait_clustered();
        c
    }

    /// The instances' base URLs.
    pub fn urls(&self) -> Vec<String> {
        self.web
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect()
    }

    /// Starts instance `i` (again) and waits until it answers.
    pub fn up(&mut self, i: usize) {
        let mut cmd = Command::new(AM);
        cmd.arg(format!(
            "--config.file={}",
            self.dir.join("am.yml").display()
        ))
        .arg(format!(
            "--storage.path={}",
            self.dir.join(format!("data{i}")).display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{}", self.web[i]))
        .arg(format!(
            "--cluster.listen-address=127.0.0.1:{}",
            self.gossip[i]
        ))
        .arg(format!(
            "--cluster.advertise-address=127.0.0.1:{}",
            self.gossip[i]
        ));
        for (j, g) in self.gossip.iter().enumerate() {
            if j != i {
                cmd.arg(format!("--cluster.peer=127.0.0.1:{g}"));
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("am{i}.log")))
            .expect("am log");
        let child = cmd
            .args([
                "--cluster.peer-timeout=1s",
                "--cluster.gossip-interval=100ms",
                "--cluster.pushpull-interval=1s",
                "--cluster.settle-timeout=2s",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("alertmanager");
        self.children[i] = Some(child);
        let url = format!("{}/api/v2/status", self.urls()[i]);
        wait_for(&format!("alertmanager {i} up"), || get(&url).is_some());
    }

    /// Kills instance `i` outright.
    pub fn down(&mut self, i: usize) {
        if let Some(mut c) = self.children[i].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Waits until every running instance is ready and sees all running peers.
    pub fn wait_clustered(&self) {
        let running = self.children.iter().filter(|c| c.is_some()).count();
        for (i, url) in self.urls().iter().enumerate() {
            if self.children[i].is_none() {
                continue;
            }
            let url = format!("{url}/api/v2/status");
            wait_for("a cluster", || {
                get(&url).is_some_and(|s| {
                    s["cluster"]["status"] == "ready"
                        && s["cluster"]["peers"]
                            .as_array()
                            .is_some_and(|a| a.len() == running)
                })
            });
        }
    }

    /// The alerts instance `i` holds now (`GET /api/v2/alerts`).
    pub fn alerts(&self, i: usize) -> Vec<serde_json::Value> {
        get(&format!("{}/api/v2/alerts", self.urls()[i]))
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// Every instance's log, for a failure report.
    pub fn logs(&self) -> String {
        (0..self.web.len())
            .map(|i| {
                std::fs::read_to_string(self.dir.join(format!("am{i}.log"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for AmCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.down(i);
        }
    }
}

/// A webhook receiver that records every POSTed body (Alertmanager's webhook payload).
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Its port on 127.0.0.1.
    pub port: u16,
    got: Arc<Mutex<Vec<(Instant, serde_json::Value)>>>,
}

impl Recorder {
    /// Listens on a free loopback port, answering 200 to everything.
    pub fn start() -> Recorder {
        let l = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = l.local_addr().expect("addr").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = Arc::clone(&got);
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                if let Some(body) = read_request(&s) {
                    g.lock().expect("recorder").push((Instant::now(), body));
                }
                let mut s = s;
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Recorder { port, got }
    }

    /// The URL to page.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Bodies received so far.
    pub fn got(&self) -> Vec<serde_json::Value> {
        self.got_at().into_iter().map(|(_, b)| b).collect()
    }

    /// Bodies received so far, each with when it arrived (for latency figures).
    pub fn got_at(&self) -> Vec<(Instant, serde_json::Value)> {
        self.got.lock().expect("recorder").clone()
    }
}

fn read_request(s: &std::net::TcpStream) -> Option<serde_json::Value> {
    let mut r = BufReader::new(s);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            len = v.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    serde_json::from_slice(&body).ok()
}

/// The Alertmanager route of the replica rigs (tests/shard_replicas.rs,
/// scripts/bench-watch-ha.sh): one group per node and alertname into `hook`, quick timings.
pub fn replica_route(hook: &Recorder, group_interval_s: u64) -> String {
    format!(
        "route:\n  receiver: hook\n  group_by: [node, alertname]\n  group_wait: 1s\n  \
         group_interval: {group_interval_s}s\n  repeat_interval: 1h\nreceivers:\n  - name: hook\n    \
         webhook_configs:\n      - url: {}\n        send_resolved: true\n",
        hook.url()
    )
}

/// Writes the watchers' `alert.yaml` (one `alertmanager` receiver listing every member of
/// `ams`, resend 2 s; ClusterDegraded off below 100 nodes: a shard sees only its own) and
/// `breaker.yaml` (opens on the second failure, for 1 s) into `dir`.
pub fn write_replica_configs(dir: &Path, ams: &AmCluster) {
    let urls: Vec<String> = ams.urls().iter().map(|u| format!("\"{u}\"")).collect();
    std::fs::write(
        dir.join("alert.yaml"),
        format!(
            "global: {{cluster_min_nodes: 100}}\nroute:\n  receiver: am\nreceivers:\n  - name: am\n    \
             alertmanager: {{urls: [{}], resend_interval: 2s}}\ndelivery: {{timeout: 2s}}\n",
            urls.join(", ")
        ),
    )
    .expect("alert.yaml");
    std::fs::write(
        dir.join("breaker.yaml"),
        "failure_threshold: 2\nwait_duration_in_open_state: 1s\nenable_exponential_backoff: false\n",
    )
    .expect("breaker.yaml");
}
