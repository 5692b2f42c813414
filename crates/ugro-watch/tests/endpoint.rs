//! `--listen` with the live loop under tokio's paused time: scrapers that stall (a request
//! never read, headers never finished) stay connected for the whole run and no poll is late;
//! a scrape made while the loop itself is blocked is answered (the endpoint needs nothing
//! from the loop); and the final view matches what the watcher polled and wrote.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod live;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use live::*;
use serde_json::Value;

/// One HTTP/1.1 exchange: status line, headers (lower-cased), body.
struct Reply {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

fn get(addr: SocketAddr, path: &str, gzip: bool) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    let accept = if gzip {
        "Accept-Encoding: gzip\r\n"
    } else {
        ""
    };
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n{accept}\r\n").unwrap();
    let mut all = Vec::new();
    // The server closes the connection after one response (no keep-alive).
    s.read_to_end(&mut all).unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&all[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Reply {
        status,
        headers: head,
        body: all[split + 4..].to_vec(),
    }
}

fn text(r: &Reply) -> String {
    if r.headers.contains("content-encoding: gzip") {
        let mut out = String::new();
        flate2::read::GzDecoder::new(&r.body[..])
            .read_to_string(&mut out)
            .unwrap();
        out
    } else {
        String::from_utf8(r.body.clone()).unwrap()
    }
}

/// Series (name with labels, as written) → value.
fn series(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_owned(), v.parse().unwrap())
        })
        .collect()
}

/// Connections that ask for /metrics and never read the answer, and one that never finishes
/// its headers: a stalled scraper and a slow-loris.
fn stalled_scrapers(addr: SocketAddr) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: stalled\r\n\r\n")
            .unwrap();
        held.push(s);
    }
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: sl").unwrap();
    held.push(s);
    held
}

/// Latest status per fingerprint of the alert records on stdout: the (alertname, node) firing.
fn firing_in(out: &Capture) -> Vec<(String, String)> {
    let mut last: BTreeMap<String, Value> = BTreeMap::new();
    for r in out.records().into_iter().filter(|r| r["kind"] == "alert") {
        last.insert(r["fingerprint"].as_str().unwrap().to_owned(), r);
    }
    let mut f: Vec<(String, String)> = last
        .values()
        .filter(|r| r["status"] == "firing")
        .map(|r| {
            let l = &r["labels"];
            let node = l["node"].as_str().unwrap_or("").to_owned();
            (l["alertname"].as_str().unwrap().to_owned(), node)
        })
        .collect();
    f.sort();
    f
}

fn firing_in_metrics(m: &BTreeMap<String, f64>) -> Vec<(String, String)> {
    let label = |k: &str, name: &str| {
        let start = k.find(&format!("{name}=\""))? + name.len() + 2;
        Some(k[start..].split('"').next()?.to_owned())
    };
    let mut f: Vec<(String, String)> = m
        .iter()
        .filter(|(k, v)| k.starts_with("ugro_alert_firing{") && **v == 1.0)
        .map(|(k, _)| {
            let node = label(k, "node").unwrap_or_default();
            (label(k, "alertname").unwrap(), node)
        })
        .collect();
    f.sort();
    f
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn stalled_scrapers_delay_no_poll_and_the_endpoint_shows_what_the_watcher_saw() {
    let d = tempfile::tempdir().unwrap();
    let healthy: Vec<String> = (0..60).map(|i| format!("ok-{i:03}")).collect();
    let mut all = healthy.clone();
    all.extend(["bad-000", "bad-001", "down-000"].map(String::from));
    let cycles = 30;
    let addr: SocketAddr = format!("127.0.0.1:{}", ugro_e2e::free_port())
        .parse()
        .unwrap();
    let lost = Behaviour::Answer {
        latency: Duration::from_millis(20),
        util: 80,
        lost: true,
    };
    let base = by_prefix(vec![("bad", lost), ("down", Behaviour::Down)]);
    // At 10 s, ok-000's poll blocks the loop's only thread until two scrapes are answered.
    let during: Arc<Mutex<Option<(Reply, Reply)>>> = Arc::default();
    let (once, got) = (Arc::new(AtomicBool::new(false)), during.clone());
    let script: Script = Arc::new(move |node, at| {
        if node == "ok-000" && at >= 10_000 && !once.swap(true, Ordering::SeqCst) {
            let m = get(addr, "/metrics", false);
            let h = get(addr, "/healthz", false);
            *got.lock().unwrap() = Some((m, h));
        }
        base(node, at)
    });
    let yaml = cluster_yaml(
        "intervals: {base: 1s, max: 1s, spread: 0.5}\ntimeout: 2s\n",
        &all,
    );
    let state = d.path().join("st");
    let listen = addr.to_string();
    let args = [
        "--pipeline",
        "--state-dir",
        state.to_str().unwrap(),
        "--stats-every",
        "5s",
        "--listen",
        &listen,
        // Every scrape renders: the final one must show the final view.
        "--metrics-cache",
        "0s",
    ];
    // The endpoint binds when the run starts: connect once it listens.
    let stall = tokio::task::spawn_blocking(move || {
        loop {
            if TcpStream::connect(addr).is_ok() {
                return stalled_scrapers(addr);
            }
            std::thread::yield_now();
        }
    });
    let run = run(d.path(), &yaml, &args, script, cycles).await;
    let held = stall.await.unwrap();
    assert_eq!(run.exit, ugro_types::Exit::Ok);
    run.assert_on_schedule(&healthy, 1_000, cycles * 1_000);
    for n in &healthy {
        assert_eq!(run.polls_of(n).len(), cycles as usize, "{n}");
    }

    let (m, h) = during
        .lock()
        .unwrap()
        .take()
        .expect("the scrape during the run");
    assert_eq!((m.status, h.status), (200, 200));
    assert!(String::from_utf8_lossy(&h.body).contains(r#""status":"ok""#));
    let mid = series(&text(&m));
    assert_eq!(mid["ugro_watch_nodes"], 63.0);
    assert!(mid[r#"ugro_node_poll_failures_total{node="down-000"}"#] >= 5.0);

    let plain = get(addr, "/metrics", false);
    let zipped = get(addr, "/metrics", true);
    assert_eq!((plain.status, zipped.status), (200, 200));
    assert!(zipped.headers.contains("content-encoding: gzip"));
    assert!(!plain.headers.contains("content-encoding"));
    let body = text(&plain);
    ugro_e2e::assert_promtool_clean(&body);
    let (fin, z) = (series(&body), series(&text(&zipped)));
    let nodes_only = |m: &BTreeMap<String, f64>| -> Vec<(String, f64)> {
        m.iter()
            .filter(|(k, _)| k.starts_with("ugro_node_") || k.starts_with("ugro_gpu_"))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    assert_eq!(
        nodes_only(&fin),
        nodes_only(&z),
        "gzip and plain bodies differ"
    );

    let v = |k: &str| *fin.get(k).unwrap_or_else(|| panic!("no {k}"));
    assert_eq!(v("ugro_watch_polls_total"), run.polls.len() as f64);
    assert_eq!(
        v(r#"ugro_node_poll_failures_total{node="down-000"}"#),
        run.polls_of("down-000").len() as f64
    );
    assert_eq!(v(r#"ugro_node_poll_failures_total{node="ok-007"}"#), 0.0);
    assert_eq!(v(r#"ugro_node_poll_duration_seconds{node="ok-007"}"#), 0.05);
    assert_eq!(
        v(r#"ugro_node_unreachable{node="down-000",cause="ssh"}"#),
        1.0
    );
    assert_eq!(v(r#"ugro_node_reachable{node="down-000"}"#), 0.0);
    assert_eq!(v(r#"ugro_node_state{node="ok-007",state="healthy"}"#), 1.0);
    assert_eq!(
        v(r#"ugro_node_state{node="bad-001",state="critical"}"#),
        1.0
    );
    assert_eq!(
        v(r#"ugro_gpu_utilization_percent{node="ok-007",gpu="0",uuid=""}"#),
        80.0
    );
    assert_eq!(
        v(r#"ugro_node_breaker_state{node="bad-001",state="open"}"#),
        1.0
    );
    assert_eq!(
        v(r#"ugro_node_breaker_state{node="ok-007",state="closed"}"#),
        1.0
    );
    assert_eq!(v(r#"ugro_watch_queue_capacity{queue="pipeline"}"#), 4096.0);
    assert!(v("ugro_watch_poll_lateness_seconds") <= 0.1);
    let firing = firing_in(&run.out);
    assert!(
        firing.contains(&("GpuLost".into(), "bad-000".into())),
        "{firing:?}"
    );
    assert_eq!(
        firing_in_metrics(&fin),
        firing,
        "firing alerts vs alert records"
    );
    let gone: Vec<&String> = fin.keys().filter(|k| k.contains("node=\"gone")).collect();
    assert!(gone.is_empty());
    drop(held);
}
