use std::path::Path;

use super::*;
use crate::config::AlertConfig;

const T0: i64 = 1_795_000_000_000;

fn ts(s: i64) -> String {
    Timestamp(T0 + s * 1000).to_string()
}

fn sample(node: &str, s: i64, state: &str, reasons: &str) -> String {
    format!(
        r#"{{"v":1,"kind":"sample","ts":"{}","node":"{node}","score":{{"total":50,"state":"{state}","action":"reset_gpu","components":{{}},"reasons":[{reasons}],"summary":"{node} {state}"}}}}"#,
        ts(s)
    )
}

const XID: &str = r#"{"code":"xid_fatal","component":"gpu","gpu":3,"deduction":100,"fatal":true,"action":"reset_gpu","message":"XID 79 fell off the bus"}"#;

/// A reason without an alert of its own: the node alert names it.
const DISK: &str = r#"{"code":"disk_full","component":"system","deduction":30,"action":"check_host","message":"/ 99% full"}"#;

fn unreachable(node: &str, s: i64) -> String {
    format!(
        r#"{{"v":1,"kind":"sample","ts":"{}","node":"{node}","unreachable":{{"cause":"ssh","message":"timeout"}},"score":{{"state":"unknown","action":"check_network","components":{{}},"reasons":[{{"code":"node_unreachable","component":"network","deduction":100,"fatal":true,"action":"check_network","message":"unreachable"}}],"summary":"unreachable"}}}}"#,
        ts(s)
    )
}

/// Timing off (every condition fires on its first sample, no flap detection): these tests
/// are about routing, grouping and delivery; the timing tests use [`timed`].
const UNTIMED: &str =
    "alert_rules: {'*': {for: 0, keep_firing_for: 0}}\nflap_detection: {enabled: false}\n";

fn cfg(yaml: &str) -> AlertConfig {
    timed(&format!("{UNTIMED}{yaml}"))
}

/// A configuration with the built-in timing (`for`, flap detection).
fn timed(yaml: &str) -> AlertConfig {
    AlertConfig::from_str(Path::new("t.yaml"), yaml).unwrap()
}

struct H {
    e: Engine,
}

impl H {
    fn new(c: AlertConfig) -> H {
        H {
            e: Engine::new(c, EngineState::default()),
        }
    }
    fn feed(&mut self, line: &str) -> Vec<Notification> {
        let rec = Input::parse(line).unwrap();
        let mut out = Out::default();
        self.e.observe(&rec, &mut out);
        out.notifications
    }
    fn at(&mut self, s: i64) -> Vec<Notification> {
        let mut out = Out::default();
        self.e.advance(Timestamp(T0 + s * 1000), &mut out);
        out.notifications
    }
    fn finish(&mut self) -> Vec<Notification> {
        let mut out = Out::default();
        self.e.finish(&mut out);
        out.notifications
    }
}

fn names(ns: &[Notification]) -> Vec<(String, String)> {
    let mut v: Vec<_> = ns
        .iter()
        .flat_map(|n| n.alerts.iter())
        .map(|a| (a.labels["alertname"].clone(), a.status.as_str().to_owned()))
        .collect();
    v.sort();
    v
}

const QUICK: &str = "route:\n  receiver: stdout\n  group_by: [alertname]\n  resolved_at_once: false\n  group_wait: 30s\n  group_interval: 5m\n  repeat_interval: 4h\n";

#[test]
fn critical_fires_after_group_wait_and_clears_on_healthy_sample() {
    let mut h = H::new(cfg(QUICK));
    assert!(h.feed(&sample("gpu-01", 0, "critical", XID)).is_empty());
    assert!(h.at(29).is_empty(), "group_wait not elapsed");
    let n = h.at(30);
    // NodeCritical would only repeat what GpuXidFatal says (see the cover tests).
    assert_eq!(names(&n), [("GpuXidFatal".into(), "firing".into())]);
    let a = n
        .iter()
        .flat_map(|n| &n.alerts)
        .find(|a| a.labels["alertname"] == "GpuXidFatal")
        .unwrap();
    assert_eq!(a.labels["gpu"], "3");
    assert_eq!(a.labels["severity"], "critical");
    assert_eq!(a.fingerprint, ugro_types::fingerprint_hex(&a.labels));
    assert_eq!(a.annotations["action"], "reset_gpu");
    assert!(h.feed(&sample("gpu-01", 40, "healthy", "")).is_empty());
    assert!(h.at(329).is_empty(), "group_interval not elapsed");
    let n = h.at(330);
    assert_eq!(names(&n), [("GpuXidFatal".into(), "resolved".into())]);
    let r = &n[0].alerts[0];
    assert_eq!(r.ends_at, Some(Timestamp(T0 + 40_000)));
    assert_eq!(
        h.e.alerts().count(),
        0,
        "resolved and notified alerts are forgotten"
    );
}

#[test]
fn unchanged_condition_repeats_only_after_repeat_interval() {
    let mut h = H::new(cfg(QUICK));
    h.feed(&sample("gpu-01", 0, "degraded", ""));
    assert_eq!(h.at(30).len(), 1);
    for s in (40..4 * 3600).step_by(60) {
        assert!(
            h.feed(&sample("gpu-01", s, "degraded", "")).is_empty(),
            "repeat at {s}"
        );
    }
    let n = h.at(4 * 3600 + 330);
    assert_eq!(names(&n), [("NodeDegraded".into(), "firing".into())]);
}

#[test]
fn severity_change_resolves_one_identity_and_fires_another() {
    let mut h = H::new(cfg(QUICK));
    h.feed(&sample("n1", 0, "degraded", ""));
    h.at(30);
    h.feed(&sample("n1", 60, "critical", ""));
    let n = h.at(330);
    assert_eq!(
        names(&n),
        [
            ("NodeCritical".into(), "firing".into()),
            ("NodeDegraded".into(), "resolved".into())
        ]
    );
}

#[test]
fn silenced_then_resolved_alert_sends_no_resolved_notification() {
    let dir = tempfile::tempdir().unwrap();
    let sil = dir.path().join("s.yaml");
    std::fs::write(
        &sil,
        format!(
            "- matchers: [{{name: node, value: gpu-01, isRegex: false}}]\n  startsAt: \"{}\"\n  endsAt: \"{}\"\n  createdBy: ops\n  comment: maintenance\n",
            ts(100),
            ts(10_000)
        ),
    )
    .unwrap();
    for (send_anyway, want) in [(false, 0), (true, 1)] {
        let mut c = cfg(QUICK);
        c.load_silences(&sil).unwrap();
        c.global.notify_resolved_when_silenced = send_anyway;
        let mut h = H::new(c);
        h.feed(&sample("gpu-01", 0, "degraded", ""));
        assert_eq!(h.at(30).len(), 1, "notified before the silence");
        h.feed(&sample("gpu-01", 200, "healthy", ""));
        let n = h.at(400);
        assert_eq!(n.len(), want, "notify_resolved_when_silenced={send_anyway}");
        assert!(h.at(10_000).is_empty());
    }
}

#[test]
fn silence_mutes_new_firing_alerts_only_while_active() {
    let dir = tempfile::tempdir().unwrap();
    let sil = dir.path().join("s.json");
    std::fs::write(
        &sil,
        format!(
            r#"[{{"matchers":[{{"name":"alertname","value":"Node.*","isRegex":true,"isEqual":true}}],"startsAt":"{}","endsAt":"{}","createdBy":"me","comment":"x"}}]"#,
            ts(0),
            ts(100)
        ),
    )
    .unwrap();
    let mut c = cfg(QUICK);
    c.load_silences(&sil).unwrap();
    let mut h = H::new(c);
    h.feed(&sample("n1", 0, "degraded", ""));
    assert!(h.at(30).is_empty());
    let n = h.at(330);
    assert_eq!(names(&n), [("NodeDegraded".into(), "firing".into())]);
}

#[test]
fn unreachable_node_inhibits_its_other_alerts() {
    let mut h = H::new(cfg(QUICK));
    h.feed(&sample("n1", 0, "critical", &format!("{XID},{DISK}")));
    assert_eq!(h.at(30).len(), 2);
    h.feed(&unreachable("n1", 60));
    let n = h.at(330);
    assert_eq!(names(&n), [("NodeUnreachable".into(), "firing".into())]);
    // The node's own alerts are neither resolved nor re-notified while it is unreachable.
    assert!(h.e.alerts().filter(|e| e.ends_at.is_none()).count() == 3);
}

#[test]
fn many_unhealthy_nodes_give_one_cluster_alert() {
    let mut h = H::new(cfg(QUICK));
    for i in 0..10 {
        h.feed(&sample(
            &format!("n{i}"),
            0,
            if i < 6 { "degraded" } else { "healthy" },
            "",
        ));
    }
    let n = h.at(30);
    assert_eq!(names(&n), [("ClusterDegraded".into(), "firing".into())]);
    for i in 0..10 {
        h.feed(&sample(&format!("n{i}"), 60, "healthy", ""));
    }
    let n = h.at(330);
    assert_eq!(names(&n), [("ClusterDegraded".into(), "resolved".into())]);
}

#[test]
fn fleet_record_raises_cluster_degraded_until_the_window_passes() {
    let mut h = H::new(cfg(QUICK));
    let fleet = format!(
        r#"{{"v":1,"kind":"fleet","ts":"{}","node":"*","verdict":"suspect_observer","failing":["a","b","c"],"known_nodes":4,"threshold":0.5,"window":"5m","message":"too many at once"}}"#,
        ts(0)
    );
    h.feed(&fleet);
    let n = h.at(30);
    assert_eq!(names(&n), [("ClusterDegraded".into(), "firing".into())]);
    assert!(n[0].alerts[0].annotations["description"].contains("too many at once"));
    let n = h.at(330);
    assert_eq!(names(&n), [("ClusterDegraded".into(), "resolved".into())]);
}

#[test]
fn breaker_open_and_close_fire_and_resolve_circuit_alert() {
    let mut h = H::new(cfg(QUICK));
    let tr = |s: i64, from: &str, to: &str| {
        format!(
            r#"{{"v":1,"kind":"transition","ts":"{}","node":"n1","from":"{from}","to":"{to}","reason":"failure_threshold","consecutive_failures":3,"at":"{}","history":"1 trips in 7 days"}}"#,
            ts(s),
            ts(s)
        )
    };
    h.feed(&tr(0, "closed", "open"));
    let n = h.at(30);
    assert_eq!(names(&n), [("NodeCircuitOpen".into(), "firing".into())]);
    assert_eq!(n[0].alerts[0].labels["severity"], "info");
    h.feed(&tr(100, "open", "half_open"));
    h.feed(&tr(110, "half_open", "closed"));
    let n = h.at(330);
    assert_eq!(names(&n), [("NodeCircuitOpen".into(), "resolved".into())]);
}

#[test]
fn user_inhibit_rule_with_equal_labels() {
    let mut h = H::new(cfg(&format!(
        "{QUICK}inhibit_rules:\n  - source_matchers: [alertname=GpuXidFatal]\n    target_matchers: [alertname=NodeCritical]\n    equal: [node]\n"
    )));
    h.feed(&sample("n1", 0, "critical", XID));
    h.feed(&sample("n2", 0, "critical", ""));
    let n = h.at(30);
    let nodes: Vec<_> = n
        .iter()
        .flat_map(|n| &n.alerts)
        .map(|a| format!("{}@{}", a.labels["alertname"], a.labels["node"]))
        .collect();
    assert!(nodes.contains(&"GpuXidFatal@n1".to_owned()));
    assert!(nodes.contains(&"NodeCritical@n2".to_owned()));
    assert!(!nodes.contains(&"NodeCritical@n1".to_owned()), "{nodes:?}");
}

#[test]
fn flush_on_exit_notifies_a_one_shot_run_without_waiting() {
    let mut h = H::new(cfg(QUICK));
    h.feed(&sample("n1", 0, "critical", ""));
    let n = h.finish();
    assert_eq!(names(&n), [("NodeCritical".into(), "firing".into())]);
    let mut c = cfg(QUICK);
    c.global.flush_on_exit = false;
    let mut h = H::new(c);
    h.feed(&sample("n1", 0, "critical", ""));
    assert!(h.finish().is_empty());
}

#[test]
fn flush_on_exit_keeps_group_interval_across_cron_runs() {
    let c = cfg(QUICK);
    let mut st = EngineState::default();
    let mut sent = Vec::new();
    let runs: [&[(&str, i64)]; 4] = [
        &[("n1", 0)],
        &[("n1", 60), ("n2", 60)],
        &[("n1", 90), ("n2", 90)],
        &[("n1", 301), ("n2", 301)],
    ];
    for (i, run) in runs.iter().enumerate() {
        let mut h = H {
            e: Engine::new(c.clone(), st),
        };
        let mut got = Vec::new();
        for (n, s) in *run {
            got.extend(h.feed(&sample(n, *s, "critical", "")));
        }
        got.extend(h.finish());
        st = h.e.st.clone();
        sent.push((i, got.iter().map(|n| n.alerts.len()).collect::<Vec<_>>()));
    }
    assert_eq!(
        sent,
        [(0, vec![1]), (1, vec![]), (2, vec![]), (3, vec![2])],
        "n2 waits for group_interval (5m) after the first notification"
    );
}

#[test]
fn watchdog_always_fires() {
    let mut c = cfg(QUICK);
    c.global.watchdog = true;
    let mut h = H::new(c);
    h.feed(&sample("n1", 0, "healthy", ""));
    let n = h.at(30);
    assert_eq!(names(&n), [("Watchdog".into(), "firing".into())]);
    assert!(h.at(4 * 3600).is_empty(), "repeat_interval not yet elapsed");
    let n = h.at(4 * 3600 + 30 + 300);
    assert_eq!(
        names(&n),
        [("Watchdog".into(), "firing".into())],
        "repeat_interval"
    );
}

#[test]
fn routing_tree_splits_receivers_and_send_resolved_false_drops_resolved() {
    let c = cfg(concat!(
        "receivers:\n  - {name: all, stdout: {}}\n  - name: pager\n    exec: {command: [/bin/true], send_resolved: false}\n",
        "route:\n  receiver: all\n  group_wait: 0s\n  routes:\n    - {matchers: ['severity=critical'], receiver: pager, continue: true}\n    - {receiver: all}\n"
    ));
    let mut h = H::new(c);
    let n = h.feed(&sample("n1", 0, "critical", ""));
    let mut rs: Vec<_> = n.iter().map(|n| n.receiver.as_str()).collect();
    rs.sort();
    assert_eq!(rs, ["all", "pager"]);
    // All of the group resolved: notified at once (resolved_at_once), not at group_interval.
    let n = h.feed(&sample("n1", 10, "healthy", ""));
    let rs: Vec<_> = n.iter().map(|n| n.receiver.as_str()).collect();
    assert_eq!(rs, ["all"], "pager has send_resolved: false");
}

#[test]
fn resolve_timeout_resolves_alerts_no_record_confirms() {
    let mut c = cfg(QUICK);
    c.global.resolve_timeout = Duration::from_secs(600);
    let mut h = H::new(c);
    h.feed(&sample("n1", 0, "degraded", ""));
    assert_eq!(h.at(30).len(), 1);
    h.feed(&sample("n1", 300, "degraded", ""));
    assert!(h.at(899).is_empty(), "refreshed at 300");
    let n = h.at(1300);
    assert_eq!(names(&n), [("NodeDegraded".into(), "resolved".into())]);
    assert_eq!(n[0].alerts[0].ends_at, Some(Timestamp(T0 + 900_000)));
    // The node's next bad sample fires it again.
    h.feed(&sample("n1", 1400, "degraded", ""));
    assert_eq!(
        names(&h.at(1430)),
        [("NodeDegraded".into(), "firing".into())]
    );
}

fn am_cfg(urls: &str, resend: &str) -> AlertConfig {
    cfg(&format!(
        "route:\n  receiver: am\nreceivers:\n  - name: am\n    alertmanager: {{urls: [{urls}], resend_interval: {resend}}}\n"
    ))
}

impl H {
    fn am_feed(&mut self, line: &str) -> Vec<AmBatch> {
        let rec = Input::parse(line).unwrap();
        let mut out = Out::default();
        self.e.observe(&rec, &mut out);
        out.am
    }
    fn am_at(&mut self, s: i64) -> Vec<AmBatch> {
        let mut out = Out::default();
        self.e.advance(Timestamp(T0 + s * 1000), &mut out);
        out.am
    }
    fn answer(&mut self, batches: &[AmBatch], ok: &[&str]) {
        for b in batches {
            let r = if ok.contains(&b.url.as_str()) {
                AmResult::Accepted
            } else {
                AmResult::Failed
            };
            self.e.am_result(b, r);
        }
    }
}

fn urls(bs: &[AmBatch]) -> Vec<&str> {
    bs.iter().map(|b| b.url.as_str()).collect()
}

const A: &str = "http://a:9093";
const B: &str = "http://b:9093";

#[test]
fn alertmanager_receiver_resends_firing_alerts_with_prometheus_ends_at() {
    let mut h = H::new(am_cfg("'http://a:9093'", "1m"));
    let l1 = sample("n1", 0, "degraded", "");
    let rec = Input::parse(&l1).unwrap();
    let mut out = Out::default();
    h.e.observe(&rec, &mut out);
    assert!(
        out.notifications.is_empty(),
        "no grouping for alertmanager receivers"
    );
    assert_eq!(out.am.len(), 1);
    let a = &out.am[0].alerts[0];
    assert_eq!(
        a.ends_at,
        Some(Timestamp(T0 + 240_000)),
        "now + 4 x resend_interval"
    );
    h.answer(&out.am, &[A]);
    assert!(h.am_at(30).is_empty(), "not yet due");
    let b = h.am_at(60);
    assert_eq!(b[0].alerts[0].ends_at, Some(Timestamp(T0 + 300_000)));
    h.answer(&b, &[A]);
    let b = h.am_feed(&sample("n1", 70, "healthy", ""));
    let a = &b[0].alerts[0];
    assert_eq!(a.status, AlertStatus::Resolved);
    assert_eq!(
        a.ends_at,
        Some(Timestamp(T0 + 70_000)),
        "resolved with its resolve time"
    );
    h.answer(&b, &[A]);
    assert_eq!(h.e.alerts().count(), 1, "kept for the resolved retention");
}

#[test]
fn resolved_alerts_are_resent_for_fifteen_minutes_like_prometheus() {
    let mut h = H::new(am_cfg("'http://a:9093'", "1m"));
    let b = h.am_feed(&sample("n1", 0, "critical", ""));
    h.answer(&b, &[A]);
    let b = h.am_feed(&sample("n1", 10, "healthy", ""));
    h.answer(&b, &[A]);
    let mut resent = 0;
    for s in (11..=10 + 15 * 60).step_by(10) {
        let b = h.am_at(s);
        for x in &b {
            assert_eq!(x.alerts[0].status, AlertStatus::Resolved);
            assert_eq!(x.alerts[0].ends_at, Some(Timestamp(T0 + 10_000)));
        }
        resent += b.len();
        h.answer(&b, &[A]);
    }
    assert_eq!(resent, 14, "once per resend interval within the retention");
    assert!(h.am_at(10 + 15 * 60 + 5).is_empty());
    assert_eq!(h.e.alerts().count(), 0, "forgotten after the retention");
}

#[test]
fn a_resolve_one_instance_missed_goes_to_that_instance_until_it_accepts_it() {
    let mut h = H::new(am_cfg("'http://a:9093', 'http://b:9093'", "1m"));
    let b = h.am_feed(&sample("n1", 0, "critical", ""));
    assert_eq!(urls(&b), [A, B], "one batch per instance");
    h.answer(&b, &[A, B]);
    let b = h.am_feed(&sample("n1", 10, "healthy", ""));
    assert_eq!(urls(&b), [A, B]);
    h.answer(&b, &[A]);
    assert!(
        h.am_at(40).is_empty(),
        "no retry on every record during an outage"
    );
    let b = h.am_at(70);
    assert_eq!(
        urls(&b),
        [A, B],
        "A by the retention resend, B because it missed it"
    );
    let missed = b.iter().find(|x| x.url == B).unwrap();
    assert_eq!(missed.alerts[0].status, AlertStatus::Resolved);
    assert_eq!(missed.alerts[0].ends_at, Some(Timestamp(T0 + 10_000)));
    h.answer(&b, &[A, B]);
    assert!(h.am_at(80).is_empty(), "both have it now");
}

#[test]
fn a_resolve_is_resent_past_the_retention_while_the_instance_may_still_hold_it_firing() {
    // resend 5m: an instance's copy of a firing alert lives 20 min, past the 15 min retention.
    let mut h = H::new(am_cfg("'http://a:9093', 'http://b:9093'", "5m"));
    let b = h.am_feed(&sample("n1", 0, "critical", ""));
    h.answer(&b, &[A, B]);
    let b = h.am_feed(&sample("n1", 10, "healthy", ""));
    h.answer(&b, &[A]);
    let mut late = Vec::new();
    for s in (20..=25 * 60).step_by(20) {
        let b = h.am_at(s);
        if s > 10 + 15 * 60 {
            late.extend(urls(&b).into_iter().map(str::to_owned));
        }
        h.answer(&b, &[A]);
    }
    assert_eq!(
        late,
        [B],
        "only B, and only until its copy (endsAt 20m) expired"
    );
    assert_eq!(h.e.alerts().count(), 0);
}

#[test]
fn a_change_made_while_a_batch_is_in_flight_goes_out_after_its_result() {
    let mut h = H::new(am_cfg("'http://a:9093'", "1m"));
    let first = h.am_feed(&sample("n1", 0, "critical", ""));
    assert!(
        h.am_feed(&sample("n1", 5, "healthy", "")).is_empty(),
        "one batch in flight"
    );
    assert!(h.e.am_in_flight());
    h.answer(&first, &[A]);
    let mut out = Out::default();
    h.e.am_flush(&mut out);
    assert_eq!(out.am.len(), 1);
    assert_eq!(out.am[0].alerts[0].status, AlertStatus::Resolved);
}

#[test]
fn circuit_alert_stays_firing_while_the_breaker_is_half_open() {
    let mut h = H::new(cfg(QUICK));
    let with = |s: i64, state: &str| {
        let l = sample("n1", s, "healthy", "");
        format!(
            "{},\"breaker\":{{\"state\":\"{state}\"}}}}",
            &l[..l.len() - 1]
        )
    };
    h.feed(&with(0, "open"));
    assert_eq!(
        names(&h.at(30)),
        [("NodeCircuitOpen".into(), "firing".into())]
    );
    h.feed(&with(100, "half_open"));
    assert!(h.at(400).is_empty(), "half-open is no recovery");
    h.feed(&with(500, "closed"));
    assert_eq!(
        names(&h.at(800)),
        [("NodeCircuitOpen".into(), "resolved".into())]
    );
}

#[test]
fn slurm_drain_gets_the_resolve_of_a_drained_node_even_while_cluster_degraded_inhibits_it() {
    let mut h = H::new(cfg(
        "route:\n  receiver: drain\n  group_by: [node]\n  group_wait: 0s\n  group_interval: 1s\nreceivers:\n  - name: drain\n    slurm_drain: {}\n",
    ));
    for n in ["n2", "n3", "n4"] {
        h.feed(&sample(n, 0, "healthy", ""));
    }
    let n = h.feed(&sample("n1", 1, "critical", ""));
    assert_eq!(names(&n), [("NodeCritical".into(), "firing".into())]);
    for (i, n) in ["n2", "n3", "n4"].iter().enumerate() {
        h.feed(&sample(n, 10 + i as i64, "critical", ""));
    }
    // n1 recovers while the cluster is still degraded (3 of 4): its resolve reaches the
    // drain receiver although ClusterDegraded inhibits it.
    let mut n = h.feed(&sample("n1", 20, "healthy", ""));
    n.extend(h.at(25));
    let resolved: Vec<_> = n
        .iter()
        .flat_map(|n| &n.alerts)
        .filter(|a| a.labels["alertname"] == "NodeCritical")
        .map(|a| (a.labels["node"].clone(), a.status))
        .collect();
    assert_eq!(resolved, [("n1".to_owned(), AlertStatus::Resolved)]);
}

#[test]
fn watcher_stats_fire_and_resolve_watcher_state_unwritable() {
    let stats = |s: i64, bad: bool| {
        format!(
            r#"{{"v":1,"kind":"stats","ts":"{}","node":"*","tool":"ugro-watch","probes":3,"state_unwritable":{bad},"state_error":"st/nodes/a.json: No space left on device (os error 28)"}}"#,
            ts(s)
        )
    };
    let mut h = H::new(cfg(QUICK));
    assert!(h.feed(&stats(0, false)).is_empty());
    assert!(h.feed(&stats(10, true)).is_empty());
    let n = h.at(40);
    assert_eq!(
        names(&n),
        [("WatcherStateUnwritable".into(), "firing".into())]
    );
    let a = &n[0].alerts[0];
    assert_eq!(a.labels["severity"], "warning");
    assert!(a.annotations["description"].contains("No space left"));
    assert!(
        h.feed(&stats(50, true)).is_empty(),
        "still firing, not again"
    );
    h.feed(&stats(60, false));
    assert_eq!(
        names(&h.at(400)),
        [("WatcherStateUnwritable".into(), "resolved".into())]
    );
    // Stats of other tools (no state_unwritable) change nothing.
    let other = format!(
        r#"{{"v":1,"kind":"stats","ts":"{}","node":"*","tool":"ugro-score","lines":5}}"#,
        ts(500)
    );
    assert!(h.feed(&other).is_empty());
    assert_eq!(h.e.alerts().count(), 0);
}

// ---- Timing with the default configuration (`for`, routing, flap detection) ----

/// One poll every 30 s.
const POLL: i64 = 30;

const GPU_LOST: &str = r#"{"code":"gpu_lost","component":"gpu","gpu":3,"deduction":100,"fatal":true,"action":"reset_gpu","message":"GPU 3 lost"}"#;

fn open_breaker(line: &str) -> String {
    let b = r#""breaker":{"state":"open","consecutive_failures":3,"next_trial_at":"2026-11-18T00:00:00Z"},"#;
    line.replacen("\"score\":", &format!("{b}\"score\":"), 1)
}

/// What each poll paged: `"poll Name status"`, per alert, in poll order.
fn pages(h: &mut H, polls: &[Vec<String>]) -> Vec<String> {
    let mut got = Vec::new();
    for (i, lines) in polls.iter().enumerate() {
        for l in lines {
            for (n, s) in names(&h.feed(l)) {
                got.push(format!("{i} {n} {s}"));
            }
        }
    }
    for (n, s) in names(&h.finish()) {
        got.push(format!("end {n} {s}"));
    }
    got
}

#[test]
fn one_sample_blips_and_two_sample_bursts_never_page_by_default() {
    let mut h = H::new(timed(""));
    let polls: Vec<Vec<String>> = (0..8)
        .map(|i| {
            let s = i * POLL;
            vec![
                sample(
                    "n1",
                    s,
                    if i == 1 { "critical" } else { "healthy" },
                    if i == 1 { XID } else { "" },
                ),
                if (1..3).contains(&i) {
                    unreachable("n2", s)
                } else {
                    sample("n2", s, "healthy", "")
                },
                sample(
                    "n3",
                    s,
                    if (4..6).contains(&i) {
                        "degraded"
                    } else {
                        "healthy"
                    },
                    "",
                ),
            ]
        })
        .collect();
    assert_eq!(pages(&mut h, &polls), Vec::<String>::new());
}

#[test]
fn hard_faults_page_within_three_polls_and_resolve_on_the_second_healthy_poll() {
    let mut h = H::new(timed(""));
    let polls: Vec<Vec<String>> = (0..6)
        .map(|i| {
            let s = i * POLL;
            let n1 = if i < 4 {
                sample("n1", s, "critical", XID)
            } else {
                sample("n1", s, "healthy", "")
            };
            let n2 = if i < 4 {
                unreachable("n2", s)
            } else {
                sample("n2", s, "healthy", "")
            };
            vec![n1, n2]
        })
        .collect();
    assert_eq!(
        pages(&mut h, &polls),
        [
            "2 GpuXidFatal firing",
            "2 NodeUnreachable firing",
            "5 GpuXidFatal resolved",
            "5 NodeUnreachable resolved",
        ]
    );
}

#[test]
fn a_node_failing_after_another_was_paged_is_paged_at_once_not_at_group_interval() {
    let mut h = H::new(timed(""));
    let polls: Vec<Vec<String>> = (0..6)
        .map(|i| {
            let s = i * POLL;
            let n2 = if i >= 2 { "critical" } else { "healthy" };
            vec![sample("n1", s, "critical", ""), sample("n2", s, n2, "")]
        })
        .collect();
    assert_eq!(
        pages(&mut h, &polls),
        ["2 NodeCritical firing", "4 NodeCritical firing"]
    );
}

#[test]
fn a_recovery_passed_by_an_open_breaker_resolves_within_two_polls_and_the_circuit_alert_stays() {
    let mut h = H::new(timed(""));
    let mut polls: Vec<Vec<String>> = (0..3).map(|i| vec![unreachable("n1", i * POLL)]).collect();
    // The breaker opened on the third failure: that record passes annotated open.
    polls[2] = vec![open_breaker(&unreachable("n1", 2 * POLL))];
    // Held records (the breaker's) do not reach the stage; the recovery does, still open.
    polls.push(vec![]);
    polls.push(vec![open_breaker(&sample("n1", 4 * POLL, "healthy", ""))]);
    polls.push(vec![open_breaker(&sample("n1", 5 * POLL, "healthy", ""))]);
    assert_eq!(
        pages(&mut h, &polls),
        [
            "2 NodeCircuitOpen firing",
            "2 NodeUnreachable firing",
            "5 NodeUnreachable resolved",
        ]
    );
}

#[test]
fn a_fatal_xid_stays_firing_while_its_gpu_is_lost_and_resolves_when_it_is_back() {
    let mut h = H::new(timed(""));
    let polls: Vec<Vec<String>> = (0..8)
        .map(|i| {
            let s = i * POLL;
            vec![match i {
                0..=2 => sample("n1", s, "critical", &format!("{XID},{GPU_LOST}")),
                // The XID left the probe's lookback; the GPU is still lost.
                3..=5 => sample("n1", s, "critical", GPU_LOST),
                _ => sample("n1", s, "healthy", ""),
            }]
        })
        .collect();
    assert_eq!(
        pages(&mut h, &polls),
        [
            "2 GpuLost firing",
            "2 GpuXidFatal firing",
            "7 GpuLost resolved",
            "7 GpuXidFatal resolved",
        ]
    );
}

#[test]
fn a_flapping_node_pages_one_node_flapping_and_nothing_else_until_it_settles() {
    let mut h = H::new(timed(""));
    // Degraded for 5 polls (past its `for`), healthy for 3 (past its keep_firing_for), six
    // times; then healthy.
    let polls: Vec<Vec<String>> = (0..80)
        .map(|i| {
            let bad = i < 48 && i % 8 < 5;
            vec![sample(
                "n1",
                i * POLL,
                if bad { "degraded" } else { "healthy" },
                "",
            )]
        })
        .collect();
    let got = pages(&mut h, &polls);
    let poll = |p: &String| p.split(' ').next().unwrap().to_owned();
    let on = got.iter().position(|p| p.contains("NodeFlapping firing"));
    let off = got.iter().position(|p| p.contains("NodeFlapping resolved"));
    let (Some(on), Some(off)) = (on, off) else {
        panic!("one NodeFlapping, fired and resolved: {got:?}");
    };
    assert_eq!(got.iter().filter(|p| p.contains("NodeFlapping")).count(), 2);
    // Between its page and its resolve nothing is paged: the node's alerts stay as they were.
    let (p_on, p_off) = (poll(&got[on]), poll(&got[off]));
    assert!(
        got[on..=off]
            .iter()
            .all(|p| poll(p) == p_on || poll(p) == p_off),
        "{got:?}"
    );
    let before = got[..on]
        .iter()
        .filter(|p| p.contains("firing") && poll(p) != p_on)
        .count();
    assert!(before <= 2, "pages before flapping was detected: {got:?}");
    assert!(
        got[off..].iter().all(|p| p.ends_with("resolved")),
        "everything resolved once settled: {got:?}"
    );
}

/// A labelled trace of a few nodes: faults, blips, bursts, a flapping node, an outage
/// under an open breaker.
fn mixed_trace() -> Vec<Vec<String>> {
    (0..120)
        .map(|i| {
            let s = i * POLL;
            let pick = |bad: bool, state: &str, r: &str| {
                if bad {
                    (state.to_owned(), r.to_owned())
                } else {
                    ("healthy".into(), String::new())
                }
            };
            let mut out = Vec::new();
            let (st, r) = pick((10..30).contains(&i), "critical", XID);
            out.push(sample("fault", s, &st, &r));
            let (st, r) = pick(i % 17 == 3, "critical", XID);
            out.push(sample("blip", s, &st, &r));
            let (st, r) = pick(i % 23 < 2, "degraded", "");
            out.push(sample("burst", s, &st, &r));
            let (st, r) = pick(i < 64 && i % 8 < 5, "degraded", "");
            out.push(sample("flap", s, &st, &r));
            match i {
                40..=42 => out.push(if i == 42 {
                    open_breaker(&unreachable("down", s))
                } else {
                    unreachable("down", s)
                }),
                43..=50 => {}
                51..=55 => out.push(open_breaker(&sample("down", s, "healthy", ""))),
                _ => out.push(sample("down", s, "healthy", "")),
            }
            out
        })
        .collect()
}

#[test]
fn one_cron_run_per_poll_writes_byte_for_byte_what_one_stream_writes() {
    let trace = mixed_trace();
    let c = timed("");
    let json = |ns: &[Notification]| {
        ns.iter()
            .map(|n| serde_json::to_string(n).unwrap())
            .collect::<Vec<_>>()
    };
    let mut stream = Engine::new(c.clone(), EngineState::default());
    let mut from_stream = Vec::new();
    for lines in &trace {
        for l in lines {
            let mut out = Out::default();
            stream.observe(&Input::parse(l).unwrap(), &mut out);
            from_stream.extend(json(&out.notifications));
        }
    }
    let mut out = Out::default();
    stream.finish(&mut out);
    from_stream.extend(json(&out.notifications));

    let mut file = serde_json::to_string(&EngineState::default()).unwrap();
    let mut from_cron = Vec::new();
    for lines in &trace {
        let st: EngineState = serde_json::from_str(&file).unwrap();
        let mut run = Engine::new(c.clone(), st);
        let mut out = Out::default();
        for l in lines {
            run.observe(&Input::parse(l).unwrap(), &mut out);
        }
        run.finish(&mut out);
        from_cron.extend(json(&out.notifications));
        file = serde_json::to_string(run.state()).unwrap();
    }
    assert!(from_stream.len() >= 6, "the trace pages: {from_stream:#?}");
    assert_eq!(from_cron, from_stream);
    let text = from_stream.join("\n");
    assert!(
        !text.contains("\"blip\"") && !text.contains("\"burst\""),
        "{text}"
    );
}

const HOT: &str = r#"{"code":"gpu_temperature_high","component":"gpu","gpu":2,"value":88,"threshold":85,"deduction":30,"action":"none","message":"GPU 2 at 88 C"}"#;

#[test]
fn a_node_alert_does_not_repeat_what_its_gpu_alerts_name_but_fires_for_a_second_cause() {
    let polls: Vec<Vec<String>> = (0..8)
        .map(|i| {
            let s = i * POLL;
            let (state, hot, two) = if i < 5 {
                ("degraded", HOT.to_owned(), format!("{HOT},{DISK}"))
            } else {
                ("healthy", String::new(), String::new())
            };
            vec![sample("hot", s, state, &hot), sample("two", s, state, &two)]
        })
        .collect();
    assert_eq!(
        pages(&mut H::new(timed("")), &polls),
        [
            "3 GpuThermal firing",
            "3 GpuThermal firing",
            "3 NodeDegraded firing",
            "7 GpuThermal resolved",
            "7 GpuThermal resolved",
            "7 NodeDegraded resolved",
        ]
    );
    let mut h = H::new(timed(""));
    let mut got = Vec::new();
    for l in polls.iter().flatten() {
        for n in h.feed(l) {
            for a in &n.alerts {
                got.push(format!("{}@{}", a.labels["alertname"], a.labels["node"]));
            }
        }
    }
    assert!(got.contains(&"NodeDegraded@two".to_owned()), "{got:?}");
    assert!(!got.contains(&"NodeDegraded@hot".to_owned()), "{got:?}");
}

#[test]
fn a_flapping_node_still_pages_and_drains_each_hard_fault_within_three_polls() {
    let mut h = H::new(timed(
        "route:\n  receiver: pager\n  routes:\n    - {matchers: [severity=critical], receiver: drain, group_by: [node], continue: true}\nreceivers:\n  - name: pager\n    stdout: {}\n  - name: drain\n    slurm_drain: {}\n",
    ));
    // Critical for 5 polls, healthy for 4, six times: the node flaps.
    let bad = |i: i64| i < 54 && i % 9 < 5;
    let mut flapping_at = None;
    let mut drained = Vec::new();
    let mut resumed = Vec::new();
    for i in 0..80 {
        let state = if bad(i) { "critical" } else { "healthy" };
        for n in h.feed(&sample("n1", i * POLL, state, "")) {
            for a in &n.alerts {
                let name = a.labels["alertname"].as_str();
                if name == "NodeFlapping" && a.status == AlertStatus::Firing {
                    flapping_at.get_or_insert(i);
                }
                if n.receiver == "drain" && name == "NodeCritical" {
                    match a.status {
                        AlertStatus::Firing => drained.push(i),
                        AlertStatus::Resolved => resumed.push(i),
                    }
                }
            }
        }
    }
    let on = flapping_at.expect("the node flaps");
    assert!(on < 27, "flapping detected by the third fault: poll {on}");
    // Each fault starts at 9k and is drained two polls later, flapping or not; each recovery
    // (healthy from 9k + 5) resumes on the second healthy poll.
    assert_eq!(drained, [2, 11, 20, 29, 38, 47]);
    assert_eq!(resumed, [6, 15, 24, 33, 42, 51]);
}

const PREDICTED: &str = r#"{"code":"pcie_replay_rate","component":"gpu","gpu":1,"value":40.5,"threshold":31,"window":"5m","deduction":25,"predicted":true,"action":"hardware_inspection","message":"GPU 1: 40.5 PCIe replays per minute over 5m, above DCGM's limit of 31 for gen 5 x16"}"#;

#[test]
fn a_predicted_reason_fires_its_own_warning_labelled_predicted_and_no_present_fault_alert() {
    let mut h = H::new(cfg(
        "route:\n  receiver: pager\n  routes:\n    - {matchers: ['predicted=\"true\"'], receiver: tickets}\nreceivers:\n  - name: pager\n    stdout: {}\n  - name: tickets\n    stdout: {}\n",
    ));
    let mut n = h.feed(&sample("n1", 0, "degraded", PREDICTED));
    n.extend(h.finish());
    let alerts: Vec<(&str, &Alert)> = n
        .iter()
        .flat_map(|n| n.alerts.iter().map(move |a| (n.receiver.as_str(), a)))
        .collect();
    assert_eq!(alerts.len(), 1, "{n:#?}");
    let (receiver, a) = alerts[0];
    assert_eq!(receiver, "tickets");
    assert_eq!(a.labels["alertname"], "GpuFailurePredicted");
    assert_eq!(a.labels["predicted"], "true");
    assert_eq!(a.labels["severity"], "warning");
    assert_eq!(a.labels["gpu"], "1");
    assert_eq!(a.annotations["trend"], "pcie_replay_rate");
    assert_eq!(a.annotations["rate"], "40.5");
    assert_eq!(a.annotations["threshold"], "31");
    assert_eq!(a.annotations["window"], "5m");
    assert_eq!(a.annotations["action"], "hardware_inspection");
    assert!(
        a.annotations["summary"].contains("failure predicted"),
        "{a:?}"
    );

    // Beside a present fault of the same family, on a critical node: each its own alert,
    // the prediction still a warning, and the present fault pages where it did.
    let pcie = r#"{"code":"pcie_width_low","component":"gpu","gpu":1,"deduction":10,"action":"check_host","message":"x8 of x16"}"#;
    let mut n = h.feed(&sample("n2", 0, "critical", &format!("{PREDICTED},{pcie}")));
    n.extend(h.finish());
    let got: Vec<String> = n
        .iter()
        .flat_map(|n| {
            n.alerts.iter().map(move |a| {
                format!(
                    "{} {} {}",
                    n.receiver, a.labels["alertname"], a.labels["severity"]
                )
            })
        })
        .collect();
    assert_eq!(
        got.iter()
            .filter(|g| g.contains("GpuFailurePredicted"))
            .collect::<Vec<_>>(),
        ["tickets GpuFailurePredicted warning"]
    );
    assert!(
        got.contains(&"pager GpuPcieDegraded critical".to_owned()),
        "{got:?}"
    );
}
