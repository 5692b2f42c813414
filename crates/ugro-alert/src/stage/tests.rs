//! The stage with an injected transport: delivery runs beside the stage, never in its way.
//! Waits are on events the fake transport signals, never on the clock.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::deliver::{Exec, ExecOutput, Failure};

/// Generous guard for waiting on an event: reaching it means the test failed.
const GUARD: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct Net {
    /// Hosts whose POSTs hang until their timeout, or until a token lets one go.
    hang: Vec<&'static str>,
    tokens: usize,
    /// Hosts refusing connections.
    down: Vec<&'static str>,
    /// POSTs whose body contains this are answered 400.
    reject: Vec<&'static str>,
    /// `(url, body)` of every accepted POST.
    got: Vec<(String, serde_json::Value)>,
    /// Every attempt: `(url, timeout)`.
    attempts: Vec<(String, Duration)>,
    hanging: usize,
}

#[derive(Debug, Clone, Default)]
struct Fake(Arc<(Mutex<Net>, Condvar)>);

impl Fake {
    fn set(&self, f: impl FnOnce(&mut Net)) {
        f(&mut self.0.0.lock().unwrap());
        self.0.1.notify_all();
    }
    fn read<T>(&self, f: impl FnOnce(&Net) -> T) -> T {
        f(&self.0.0.lock().unwrap())
    }
    /// Waits until `f` holds.
    fn until(&self, what: &str, f: impl Fn(&Net) -> bool) {
        let (m, cv) = &*self.0;
        let end = Instant::now() + GUARD;
        let mut n = m.lock().unwrap();
        while !f(&n) {
            let now = Instant::now();
            assert!(now < end, "never happened: {what}: {n:#?}");
            n = cv.wait_timeout(n, end - now).unwrap().0;
        }
    }
}

fn host(url: &str) -> &str {
    url.split('/').nth(2).unwrap_or("")
}

impl Transport for Fake {
    fn post(
        &self,
        url: &str,
        _headers: &[(&str, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<(), Failure> {
        let (m, cv) = &*self.0;
        let mut n = m.lock().unwrap();
        n.attempts.push((url.to_owned(), timeout));
        cv.notify_all();
        let h = host(url);
        if n.hang.contains(&h) {
            n.hanging += 1;
            cv.notify_all();
            // A receiver that accepts and never answers: the attempt ends at its timeout.
            let end = Instant::now() + timeout.min(GUARD);
            while n.tokens == 0 && n.hang.contains(&h) && Instant::now() < end {
                let left = end.saturating_duration_since(Instant::now());
                n = cv.wait_timeout(n, left).unwrap().0;
            }
            n.tokens = n.tokens.saturating_sub(1);
            n.hanging -= 1;
            cv.notify_all();
            return Err(Failure::Retry(format!("POST to {h}: timed out")));
        }
        if n.down.contains(&h) {
            return Err(Failure::Retry(format!("POST to {h}: connection refused")));
        }
        let text = String::from_utf8_lossy(body);
        if n.reject.iter().any(|r| text.contains(r)) {
            return Err(crate::deliver::http_failure(
                400,
                format!("POST to {h}: HTTP 400"),
            ));
        }
        n.got
            .push((url.to_owned(), serde_json::from_slice(body).unwrap()));
        cv.notify_all();
        Ok(())
    }
    fn exec(&self, _: &Exec<'_>) -> Result<ExecOutput, String> {
        Err("no programs here".into())
    }
}

const T0: i64 = 1_795_000_000_000;

fn line(node: &str, s: i64, state: &str) -> String {
    format!(
        r#"{{"v":1,"kind":"sample","ts":"{}","node":"{node}","score":{{"state":"{state}","action":"reboot","components":{{}},"reasons":[],"summary":"bad"}}}}"#,
        Timestamp(T0 + s * 1000)
    )
}

fn hooks(names: &[&str], delivery: &str) -> String {
    // Many critical nodes would raise ClusterDegraded, which inhibits the node alerts.
    let mut c = String::from("global: {cluster_min_nodes: 1000}\nroute:\n  receiver: ");
    c.push_str(names[0]);
    c.push_str("\n  group_by: [node]\n  group_wait: 0s\n  group_interval: 1m\n  routes:\n");
    for n in names {
        c.push_str(&format!(
            "    - {{matchers: ['alertname=~.+'], receiver: {n}, continue: true}}\n"
        ));
    }
    c.push_str("receivers:\n");
    for n in names {
        c.push_str(&format!(
            "  - name: {n}\n    webhook: {{url: 'http://{n}/hook'}}\n"
        ));
    }
    c.push_str(delivery);
    c
}

fn stage(dir: &Path, yaml: &str, net: &Fake) -> AlertStage {
    // Every condition fires on its first sample: these tests are about delivery.
    let yaml = format!(
        "alert_rules: {{'*': {{for: 0, keep_firing_for: 0}}}}\nflap_detection: {{enabled: false}}\n{yaml}"
    );
    let cfg = AlertConfig::from_str(Path::new("a.yaml"), &yaml).unwrap();
    AlertStage::with_transport(cfg, &dir.join("s.json"), Box::new(net.clone())).unwrap()
}

fn stats(st: &AlertStage, receiver: &str) -> ReceiverStats {
    st.delivery_stats()
        .into_iter()
        .find(|s| s.receiver == receiver)
        .unwrap()
}

fn nodes_got(net: &Fake, h: &str) -> Vec<String> {
    net.read(|n| {
        n.got
            .iter()
            .filter(|(u, _)| host(u) == h)
            .flat_map(|(_, v)| v["alerts"].as_array().unwrap().clone())
            .map(|a| {
                format!(
                    "{} {}",
                    a["labels"]["node"].as_str().unwrap(),
                    a["status"].as_str().unwrap()
                )
            })
            .collect()
    })
}

#[test]
fn a_hung_receiver_does_not_delay_another_receiver() {
    let dir = tempfile::tempdir().unwrap();
    let net = Fake::default();
    net.set(|n| n.hang.push("slow"));
    let mut st = stage(
        dir.path(),
        &hooks(&["slow", "fast"], "delivery: {timeout: 1h}\n"),
        &net,
    );
    let mut emit = |_: &[u8]| Ok(());
    st.process(&line("n1", 0, "critical"), &mut emit).unwrap();
    net.until("slow hangs", |n| n.hanging == 1);
    st.process(&line("n2", 1, "critical"), &mut emit).unwrap();
    net.until("fast got both", |n| {
        n.got.iter().filter(|(u, _)| host(u) == "fast").count() == 2
    });
    assert_eq!(
        net.read(|n| n.hanging),
        1,
        "slow is still in its first attempt"
    );
    assert_eq!(nodes_got(&net, "fast"), ["n1 firing", "n2 firing"]);
    net.set(|n| n.hang.clear());
    st.finish(&mut emit).unwrap();
    assert_eq!(nodes_got(&net, "slow"), ["n1 firing", "n2 firing"]);
}

#[test]
fn a_permanent_failure_is_reported_once_and_does_not_hold_back_what_follows() {
    let dir = tempfile::tempdir().unwrap();
    let net = Fake::default();
    net.set(|n| n.reject.push("\"n1\""));
    let mut st = stage(dir.path(), &hooks(&["hook"], ""), &net);
    let mut emit = |_: &[u8]| Ok(());
    for (i, node) in ["n1", "n2", "n3"].iter().enumerate() {
        st.process(&line(node, i as i64, "critical"), &mut emit)
            .unwrap();
    }
    st.finish(&mut emit).unwrap();
    assert_eq!(nodes_got(&net, "hook"), ["n2 firing", "n3 firing"]);
    assert_eq!(
        net.read(|n| n.attempts.len()),
        3,
        "n1 was tried once, not retried"
    );
    let s = stats(&st, "hook");
    assert_eq!(
        (s.delivered, s.failed, s.retries, s.spooled),
        (2, 1, 0, 0),
        "{s:?}"
    );
    assert!(s.last_error.unwrap().contains("HTTP 400"));
    assert_eq!(
        std::fs::read_dir(dir.path().join("s.json.spool"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn an_outage_is_spooled_and_the_newest_state_of_each_group_is_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let net = Fake::default();
    net.set(|n| n.down.push("hook"));
    let yaml = "route:\n  receiver: hook\n  group_by: [alertname]\n  resolved_at_once: false\n  group_wait: 10s\n  group_interval: 1m\nreceivers:\n  - name: hook\n    webhook: {url: 'http://hook/x'}\ndelivery:\n  attempts: 1\n  backoff: 0s\n  spool_retry_interval: 1s\n";
    let mut st = stage(dir.path(), yaml, &net);
    let mut emit = |_: &[u8]| Ok(());
    st.process(&line("n1", 0, "critical"), &mut emit).unwrap();
    st.tick(Timestamp(T0 + 10_000), &mut emit).unwrap();
    net.until("first attempt", |n| !n.attempts.is_empty());
    st.process(&line("n2", 20, "critical"), &mut emit).unwrap();
    st.process(&line("n1", 30, "healthy"), &mut emit).unwrap();
    st.tick(Timestamp(T0 + 70_000), &mut emit).unwrap();
    assert!(st.wait_delivery_idle(GUARD));
    assert!(net.read(|n| n.got.is_empty()));
    net.set(|n| n.down.clear());
    net.until("delivered after the outage", |n| !n.got.is_empty());
    st.finish(&mut emit).unwrap();
    // The second notification carries the group's whole state, so it supersedes the first.
    assert_eq!(nodes_got(&net, "hook"), ["n2 firing", "n1 resolved"]);
    let s = stats(&st, "hook");
    assert_eq!((s.delivered, s.superseded, s.spooled), (1, 1, 0), "{s:?}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("s.json.spool"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn the_delivery_budget_cuts_attempts_and_leaves_the_rest_for_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let net = Fake::default();
    net.set(|n| n.hang.push("hook"));
    let yaml = hooks(
        &["hook"],
        "delivery: {timeout: 1h, budget: 10s, backoff: 0s}\n",
    );
    let mut st = stage(dir.path(), &yaml, &net);
    let mut emit = |_: &[u8]| Ok(());
    for i in 0..10 {
        st.process(&line(&format!("n{i}"), i, "critical"), &mut emit)
            .unwrap();
    }
    net.until("first attempt hangs", |n| n.hanging == 1);
    // That attempt began before the end of input, with the full timeout. Once the end is
    // announced and it is let go, every later attempt is cut to what is left of the budget.
    let budget = Duration::from_secs(2);
    st.dispatcher.begin_finish(Instant::now() + budget);
    net.set(|n| n.tokens = 1);
    st.finish(&mut emit).unwrap();
    let late: Vec<Duration> = net.read(|n| n.attempts.iter().skip(1).map(|a| a.1).collect());
    assert!(
        !late.is_empty() && late.iter().all(|t| *t <= budget),
        "{late:?}"
    );
    assert_eq!(stats(&st, "hook").spooled, 10);
    drop(st);
    assert_eq!(
        std::fs::read_dir(dir.path().join("s.json.spool"))
            .unwrap()
            .count(),
        10
    );

    let net = Fake::default();
    let mut st = stage(dir.path(), &yaml, &net);
    st.finish(&mut emit).unwrap();
    let mut got = nodes_got(&net, "hook");
    got.sort();
    assert_eq!(got.len(), 10, "{got:?}");
    assert_eq!(
        std::fs::read_dir(dir.path().join("s.json.spool"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn a_full_queue_drops_the_notification_that_does_not_fit_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let net = Fake::default();
    net.set(|n| n.hang.push("hook"));
    let yaml = hooks(&["hook"], "delivery: {timeout: 1h, queue_size: 2}\n");
    let mut st = stage(dir.path(), &yaml, &net);
    let mut emit = |_: &[u8]| Ok(());
    st.process(&line("n0", 0, "critical"), &mut emit).unwrap();
    net.until("worker busy", |n| n.hanging == 1);
    for i in 1..5 {
        st.process(&line(&format!("n{i}"), i, "critical"), &mut emit)
            .unwrap();
    }
    st.tick(Timestamp(T0 + 10_000), &mut emit).unwrap();
    let s = stats(&st, "hook");
    assert_eq!((s.queue_depth, s.dropped), (2, 2), "{s:?}");
    net.set(|n| n.hang.clear());
    st.finish(&mut emit).unwrap();
    assert_eq!(
        nodes_got(&net, "hook"),
        ["n0 firing", "n1 firing", "n2 firing"]
    );
}

/// A stage with the stdout receiver, group_wait 30 s, and the host clock at T0.
fn stdout_stage(dir: &Path) -> AlertStage {
    let yaml = "route:\n  receiver: stdout\n  group_wait: 30s\n";
    stage(dir, yaml, &Fake::default()).with_clock(|| Timestamp(T0))
}

#[test]
fn a_record_far_ahead_of_the_host_clock_is_rejected_and_moves_no_clock() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = stdout_stage(dir.path());
    let mut out = Vec::new();
    let mut emit = |b: &[u8]| {
        out.push(serde_json::from_slice::<serde_json::Value>(b).unwrap());
        Ok(())
    };
    match st.process(&line("n1", 7200, "critical"), &mut emit) {
        Err(StageError::Reject(m)) => {
            assert!(m.contains("is 2h ahead of this host's clock"), "{m}");
        }
        other => panic!("not rejected: {other:?}"),
    }
    assert_eq!(st.engine().now(), Timestamp::default(), "clock moved");
    assert_eq!(st.engine().alerts().count(), 0);
    st.process(&line("n1", 0, "critical"), &mut emit).unwrap();
    st.process(&line("n1", 31, "critical"), &mut emit).unwrap();
    assert_eq!(out.len(), 1, "group_wait runs on the records' own time");
    assert_eq!(out[0]["labels"]["alertname"], "NodeCritical");
}

#[test]
fn a_tick_runs_the_timers_and_one_from_the_future_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut st = stdout_stage(dir.path());
    let tick = |s: i64| {
        format!(
            r#"{{"v":1,"kind":"tick","ts":"{}","node":"*","tool":"ugro-watch"}}"#,
            Timestamp(T0 + s * 1000)
        )
    };
    let mut out = Vec::new();
    let mut emit = |b: &[u8]| {
        out.push(serde_json::from_slice::<serde_json::Value>(b).unwrap());
        Ok(())
    };
    ugro_types::stage::step(&mut st, &line("n1", 0, "critical"), &mut emit).unwrap();
    let far = ugro_types::stage::step(&mut st, &tick(7200), &mut emit);
    assert!(matches!(far, Err(StageError::Reject(_))), "{far:?}");
    assert_eq!(st.engine().now(), Timestamp(T0), "clock moved");
    ugro_types::stage::step(&mut st, &tick(29), &mut emit).unwrap();
    ugro_types::stage::step(&mut st, &tick(30), &mut emit).unwrap();
    assert_eq!(out.len(), 1, "group_wait ran out on the tick, not before");
    assert_eq!(out[0]["ts"], Timestamp(T0 + 30_000).to_string());
}

#[test]
fn the_stage_can_run_inside_a_chain() {
    fn send<T: Send>() {}
    send::<AlertStage>();
}
