//! The live loop under tokio's paused time with an in-process fake network: schedules checked in
//! the paused clock, counts that do not race a wall-clock timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod live;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use live::*;
use serde_json::Value;

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:03}")).collect()
}

fn stats(raw: &Capture) -> Vec<Value> {
    raw.records()
        .into_iter()
        .filter(|r| r["kind"] == "stats")
        .collect()
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn hung_nodes_listed_first_never_take_the_slots_of_healthy_ones() {
    let d = tempfile::tempdir().unwrap();
    let hung = names("hung", 30);
    let healthy = names("ok", 170);
    let all: Vec<String> = hung.iter().chain(&healthy).cloned().collect();
    let yaml = cluster_yaml(
        "intervals: {base: 5s, max: 5s, spread: 0.5}\ntimeout: 3s\nconcurrency: 64\n",
        &all,
    );
    let script = by_prefix(vec![("hung", Behaviour::Hang)]);
    let run = run(d.path(), &yaml, &["--stats-every", "5s"], script, 18).await;
    assert_eq!(run.exit, ugro_types::Exit::Ok);
    // 90 s: every healthy node polled every 5 s (+10 %) to the end.
    let worst = run.assert_on_schedule(&healthy, 5_000, 90_000);
    assert!(worst <= 5_000, "worst gap {worst} ms");
    for n in &healthy {
        assert_eq!(run.polls_of(n).len(), 18, "{n}");
    }
    // The hung nodes are still polled (their timeouts reported), within their share of slots.
    let samples: Vec<Value> = run
        .raw
        .records()
        .into_iter()
        .filter(|r| r["kind"] == "sample")
        .collect();
    for n in &hung {
        let mine: Vec<&Value> = samples.iter().filter(|r| r["node"] == n.as_str()).collect();
        assert!(mine.len() >= 3, "{n}: {}", mine.len());
        assert!(mine.iter().all(|r| r["unreachable"]["cause"] == "timeout"));
    }
    // The limit halved after the first cycle's fresh timeouts and grew back: hung nodes do
    // not keep it down.
    let st = stats(&run.raw);
    assert!(st.iter().any(|s| s["concurrency_limit"] == 32), "{st:?}");
    assert_eq!(st.last().unwrap()["concurrency_limit"], 64);
    assert!(
        st.iter()
            .all(|s| s["suspects_in_flight"].as_u64().unwrap() <= 16)
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_thousand_nodes_with_five_percent_hanging_answer_once_per_cycle() {
    let d = tempfile::tempdir().unwrap();
    let all = names("sim", 1000);
    let hung: Vec<String> = all.iter().step_by(20).cloned().collect();
    let yaml = cluster_yaml(
        "intervals: {base: 4s, max: 4s, spread: 0.3}\ntimeout: 2s\nconcurrency: 1000\n",
        &all,
    );
    let h = hung.clone();
    let script: Script = Arc::new(move |n, _| {
        if h.iter().any(|x| x == n) {
            Behaviour::Hang
        } else {
            BUSY
        }
    });
    let run = run(d.path(), &yaml, &["--stats-every", "1h"], script, 2).await;
    let recs = run.raw.records();
    let samples: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "sample").collect();
    let ok = samples.iter().filter(|r| r.get("unreachable").is_none());
    let timeouts = samples
        .iter()
        .filter(|r| r["unreachable"]["cause"] == "timeout");
    // Exact counts: in paused time nothing races a timeout.
    assert_eq!(ok.count(), 950 * 2);
    assert_eq!(timeouts.count(), 50 * 2);
    for n in &hung {
        assert!(
            samples
                .iter()
                .filter(|r| r["node"] == n.as_str())
                .all(|r| r["unreachable"]["cause"] == "timeout")
        );
    }
    let last = stats(&run.raw).pop().expect("final stats");
    assert_eq!(last["nodes"], 1000);
    assert_eq!(last["timeouts"], 100);
    assert_eq!(last["pipeline_superseded"], 0);
}

/// A webhook that accepts every connection and reads the request, but answers none until
/// `answer()` holds; then it answers 200 to the held requests and every later one, keeping their
/// bodies. A held request whose client gave up first counts as `abandoned`.
struct Webhook {
    port: u16,
    answered: Arc<Mutex<Vec<Value>>>,
    held: Arc<Mutex<usize>>,
    abandoned: Arc<Mutex<usize>>,
}

impl Webhook {
    fn start(answer: impl Fn() -> bool + Send + 'static) -> Webhook {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let answered = Arc::new(Mutex::new(Vec::new()));
        let held = Arc::new(Mutex::new(0));
        let abandoned = Arc::new(Mutex::new(0));
        let (a, h, g) = (answered.clone(), held.clone(), abandoned.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { break };
                let body = read_request(&c);
                if !answer() {
                    *h.lock().unwrap() += 1;
                    // Accepted, read, and left unanswered until the condition holds (polled
                    // every 10 ms: this is the receiver's side, not a measurement).
                    while !answer() {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    if client_gone(&c) {
                        *g.lock().unwrap() += 1;
                        continue;
                    }
                }
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    a.lock().unwrap().push(v);
                }
            }
        });
        Webhook {
            port,
            answered,
            held,
            abandoned,
        }
    }
}

/// Whether the client closed its end (it timed out and gave up).
fn client_gone(c: &TcpStream) -> bool {
    c.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let gone = matches!(c.peek(&mut b), Ok(0));
    c.set_nonblocking(false).unwrap();
    gone
}

fn read_request(c: &TcpStream) -> Vec<u8> {
    let mut r = BufReader::new(c);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return Vec::new();
        }
        let t = line.trim_end().to_ascii_lowercase();
        if t.is_empty() {
            break;
        }
        if let Some(v) = t.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    let _ = r.read_exact(&mut body);
    body
}

/// The receiver answers nothing until every poll of the healthy nodes has been made: if delivery could
/// hold up polling, no poll would be made while the first request hangs, and the client would
/// give up (after its 60 s timeout) before the receiver answered.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_webhook_that_never_answers_delays_no_poll_and_gets_the_alerts_once_it_answers() {
    let d = tempfile::tempdir().unwrap();
    let healthy = names("ok", 10);
    let mut all = names("bad", 2);
    all.extend(healthy.iter().cloned());
    let cycles = 40;
    let polls: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
    let p = polls.clone();
    let want = healthy.len() * cycles;
    let hook = Webhook::start(move || {
        let polls = p.lock().unwrap();
        polls.iter().filter(|(n, _)| n.starts_with("ok-")).count() >= want
    });
    std::fs::write(
        d.path().join("alert.yaml"),
        format!(
            "route: {{receiver: hook, group_wait: 1s, group_interval: 5s, repeat_interval: 1h}}\n\
             receivers:\n  - name: hook\n    webhook: {{url: 'http://127.0.0.1:{}/hook'}}\n\
             delivery: {{timeout: 60s, attempts: 1, backoff: 0s, spool_retry_interval: 2s}}\n",
            hook.port
        ),
    )
    .unwrap();
    let yaml = cluster_yaml(
        "intervals: {base: 1s, max: 1s, spread: 0.5}\ntimeout: 2s\n",
        &all,
    );
    let lost = Behaviour::Answer {
        latency: Duration::from_millis(20),
        util: 80,
        lost: true,
    };
    let alert = d.path().join("alert.yaml");
    let state = d.path().join("st");
    let args = [
        "--pipeline",
        "--alert-config",
        alert.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--stats-every",
        "5s",
        // A small pipeline queue: while the alert stage waits on the receiver the queue fills
        // and the backlog takes over.
        "--queue",
        "8",
    ];
    let script = by_prefix(vec![("bad", lost)]);
    let run = run_logged(d.path(), &yaml, &args, script, cycles as u64, polls).await;
    assert_eq!(run.exit, ugro_types::Exit::Ok);
    run.assert_on_schedule(&healthy, 1_000, 40_000);
    for n in &healthy {
        assert_eq!(run.polls_of(n).len(), cycles, "{n}");
    }
    assert!(*hook.held.lock().unwrap() >= 1, "the receiver never hung");
    assert_eq!(
        *hook.abandoned.lock().unwrap(),
        0,
        "a delivery gave up first"
    );
    let last = stats(&run.raw).pop().expect("final stats");
    assert!(last["pipeline_superseded"].as_u64().unwrap() > 0, "{last}");
    // Once it answered, the alerts for both failing nodes arrived.
    let got = hook.answered.lock().unwrap().clone();
    let alerted: Vec<(String, String)> = got
        .iter()
        .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
        .map(|a| {
            (
                a["labels"]["node"].as_str().unwrap_or("").to_owned(),
                a["labels"]["alertname"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for n in ["bad-000", "bad-001"] {
        assert!(
            alerted
                .iter()
                .any(|(node, name)| node == n && name == "GpuLost"),
            "{n}: {alerted:?}"
        );
    }
}
