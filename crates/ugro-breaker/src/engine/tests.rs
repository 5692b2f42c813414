use serde_json::{Value, json};

use super::*;
use crate::config::FleetGuardConfig;

const T0: i64 = 1_795_824_000_000; // 2026-11-28T00:00:00Z

fn at(secs: i64) -> Timestamp {
    Timestamp(T0 + secs * 1000)
}

fn sample(node: &str, secs: i64, state: &str) -> String {
    json!({
        "v": 1, "kind": "sample", "ts": at(secs), "node": node,
        "host": {"cpu_pct": 3.5},
        "score": {"state": state, "action": if state == "critical" { "reboot" } else { "none" },
                  "components": {}, "reasons": [], "summary": state},
    })
    .to_string()
}

fn unreachable(node: &str, secs: i64) -> String {
    json!({
        "v": 1, "kind": "sample", "ts": at(secs), "node": node,
        "unreachable": {"cause": "ssh", "message": "timed out"},
        "score": {"state": "unknown", "action": "check_network", "components": {},
                  "reasons": [{"code": "node_unreachable"}], "summary": "unreachable"},
    })
    .to_string()
}

/// A breaker whose wall clock is far ahead of every test record (the skew test sets its own).
fn brk(cfg: BreakerConfig, data: BreakerData) -> Breaker {
    Breaker::new(cfg, data).with_clock(|| at(100 * 86_400))
}

fn no_guard() -> BreakerConfig {
    BreakerConfig {
        fleet_guard: FleetGuardConfig {
            enabled: false,
            ..FleetGuardConfig::default()
        },
        ..BreakerConfig::default()
    }
}

fn feed(b: &mut Breaker, lines: &[String]) -> Vec<Value> {
    let mut out = Vec::new();
    for l in lines {
        let mut emit = |r: &[u8]| {
            out.push(serde_json::from_slice::<Value>(r).unwrap());
            Ok(())
        };
        b.process(l, &mut emit).unwrap();
    }
    out
}

fn kinds(out: &[Value]) -> Vec<String> {
    out.iter()
        .map(|v| match v["kind"].as_str().unwrap() {
            "transition" => format!(
                "{}->{}",
                v["from"].as_str().unwrap(),
                v["to"].as_str().unwrap()
            ),
            "sample" => format!("s:{}", v["breaker"]["state"].as_str().unwrap_or("-")),
            k => k.to_owned(),
        })
        .collect()
}

fn trip(b: &mut Breaker, node: &str, from_secs: i64) -> Vec<Value> {
    let lines: Vec<String> = (0..3)
        .map(|i| sample(node, from_secs + i * 10, "critical"))
        .collect();
    feed(b, &lines)
}

#[test]
fn one_blip_does_not_trip() {
    let mut b = brk(no_guard(), BreakerData::default());
    let out = feed(
        &mut b,
        &[
            sample("n1", 0, "critical"),
            sample("n1", 10, "healthy"),
            sample("n1", 20, "critical"),
            sample("n1", 30, "critical"),
        ],
    );
    assert_eq!(kinds(&out), ["s:closed"; 4]);
    let counts: Vec<u64> = out
        .iter()
        .map(|v| v["breaker"]["consecutive_failures"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [1, 0, 1, 2]);
    assert_eq!(out[0]["host"]["cpu_pct"], 3.5, "other fields kept");
}

#[test]
fn three_strikes_trip_and_hold_back_until_the_wait_ends() {
    let mut b = brk(no_guard(), BreakerData::default());
    let mut out = trip(&mut b, "n1", 0);
    out.extend(feed(
        &mut b,
        &[sample("n1", 100, "critical"), sample("n2", 100, "healthy")],
    ));
    assert_eq!(
        kinds(&out),
        ["s:closed", "s:closed", "closed->open", "s:open", "s:closed"]
    );
    let t = &out[2];
    assert_eq!(t["node"], "n1");
    assert_eq!(t["reason"], "failure_threshold");
    assert_eq!(t["consecutive_failures"], 3);
    assert_eq!(t["at"], json!(at(20)));
    assert_eq!(t["next_trial_at"], json!(at(320)));
    assert_eq!(t["open_for_ms"], 300_000);
    assert_eq!(t["cause_state"], "critical");
    assert_eq!(t["cause_action"], "reboot");
    assert_eq!(t["trips_in_window"], 1);
    assert_eq!(t["history"], "1 trip in 7 days");
    assert_eq!(out[3]["breaker"]["next_trial_at"], json!(at(320)));
    assert_eq!(b.counters().held, 1);
    assert_eq!(b.data().nodes["n1"].held, 1);
}

#[test]
fn a_recovery_while_open_passes_annotated_open_and_the_wait_goes_on() {
    let mut b = brk(no_guard(), BreakerData::default());
    trip(&mut b, "n1", 0);
    let out = feed(
        &mut b,
        &[
            sample("n1", 90, "critical"),
            sample("n1", 100, "healthy"),
            sample("n1", 110, "critical"),
            sample("n1", 120, "degraded"),
        ],
    );
    // A failure is held; the alert stage sees the recovery at once, and a new failure after
    // it (evidence of a new fault), until the trial.
    assert_eq!(kinds(&out), ["s:open", "s:open", "s:open"]);
    assert_eq!(out[0]["breaker"]["next_trial_at"], json!(at(320)));
    assert_eq!(b.data().nodes["n1"].state, BreakerState::Open);
    assert_eq!(b.data().nodes["n1"].held, 1);
    let out = feed(&mut b, &[sample("n1", 330, "healthy")]);
    assert_eq!(
        kinds(&out),
        ["open->half_open", "half_open->closed", "s:closed"]
    );
}

#[test]
fn half_open_trial_success_closes() {
    let mut b = brk(no_guard(), BreakerData::default());
    trip(&mut b, "n1", 0);
    let out = feed(
        &mut b,
        &[sample("n1", 400, "healthy"), sample("n1", 410, "critical")],
    );
    assert_eq!(
        kinds(&out),
        [
            "open->half_open",
            "half_open->closed",
            "s:closed",
            "s:closed"
        ]
    );
    assert_eq!(out[0]["reason"], "wait_elapsed");
    assert_eq!(out[0]["at"], json!(at(320)), "at is the end of the wait");
    assert_eq!(out[0]["ts"], json!(at(400)));
    assert_eq!(out[1]["reason"], "trial_succeeded");
    assert_eq!(out[3]["breaker"]["consecutive_failures"], 1);
}

#[test]
fn half_open_trial_failure_reopens_with_backoff_doubling_up_to_the_cap() {
    let cfg = BreakerConfig {
        exponential_max_wait_duration_in_open_state: Duration::from_secs(1200),
        ..no_guard()
    };
    let mut b = brk(cfg, BreakerData::default());
    trip(&mut b, "n1", 0);
    let mut waits = Vec::new();
    let mut now = 20;
    for _ in 0..4 {
        let due = b.data().nodes["n1"].next_trial_at.unwrap();
        now = (due.0 - T0) / 1000;
        let out = feed(&mut b, &[sample("n1", now, "critical")]);
        assert_eq!(
            kinds(&out),
            ["open->half_open", "half_open->open", "s:open"]
        );
        assert_eq!(out[1]["reason"], "trial_failed");
        waits.push(out[1]["open_for_ms"].as_u64().unwrap() / 1000);
    }
    assert_eq!(waits, [600, 1200, 1200, 1200]);
    // Closing resets the backoff: the next trip waits the base time again.
    let due = (b.data().nodes["n1"].next_trial_at.unwrap().0 - T0) / 1000;
    assert!(due > now);
    feed(&mut b, &[sample("n1", due, "healthy")]);
    let out = trip(&mut b, "n1", due + 10);
    assert_eq!(out[2]["open_for_ms"], 300_000);
    assert_eq!(
        out[2]["trips_in_window"], 2,
        "reopening after a trial is not a new trip"
    );
}

#[test]
fn backoff_off_reopens_for_the_base_wait() {
    let cfg = BreakerConfig {
        enable_exponential_backoff: false,
        ..no_guard()
    };
    let mut b = brk(cfg, BreakerData::default());
    trip(&mut b, "n1", 0);
    let out = feed(&mut b, &[sample("n1", 320, "critical")]);
    assert_eq!(out[1]["open_for_ms"], 300_000);
}

#[test]
fn several_trial_successes_needed_when_configured() {
    let cfg = BreakerConfig {
        permitted_number_of_calls_in_half_open_state: 2,
        ..no_guard()
    };
    let mut b = brk(cfg, BreakerData::default());
    trip(&mut b, "n1", 0);
    let out = feed(
        &mut b,
        &[sample("n1", 320, "healthy"), sample("n1", 330, "healthy")],
    );
    assert_eq!(
        kinds(&out),
        [
            "open->half_open",
            "s:half_open",
            "half_open->closed",
            "s:closed"
        ]
    );
}

#[test]
fn forced_open_holds_everything_until_reset() {
    let mut b = brk(no_guard(), BreakerData::default());
    let t = b.operate("n1", Operation::ForceOpen, at(0)).unwrap();
    assert_eq!(
        (t.from, t.to),
        (BreakerState::Closed, BreakerState::ForcedOpen)
    );
    assert_eq!(t.reason, "operator_force_open");
    let out = feed(
        &mut b,
        &[
            sample("n1", 10, "healthy"),
            sample("n1", 100_000, "critical"),
        ],
    );
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(b.data().nodes["n1"].held, 2);
    let t = b.operate("n1", Operation::Reset, at(200_000)).unwrap();
    assert_eq!(t.to, BreakerState::Closed);
    assert_eq!(
        kinds(&feed(&mut b, &[sample("n1", 200_010, "healthy")])),
        ["s:closed"]
    );
    assert!(
        b.operate("n1", Operation::Reset, at(1)).is_none(),
        "no change, no record"
    );
    assert!(b.operate("never-seen", Operation::Reset, at(1)).is_none());
    assert!(!b.data().nodes.contains_key("never-seen"));
}

#[test]
fn disabled_passes_everything_and_counts_nothing() {
    let mut b = brk(no_guard(), BreakerData::default());
    b.operate("n1", Operation::Disable, at(0));
    let lines: Vec<String> = (0..10).map(|i| sample("n1", i, "critical")).collect();
    let out = feed(&mut b, &lines);
    assert_eq!(kinds(&out), vec!["s:disabled"; 10]);
    assert!(
        out.iter()
            .all(|v| v["breaker"]["consecutive_failures"] == 0)
    );
}

#[test]
fn metrics_only_counts_but_never_trips() {
    let mut b = brk(no_guard(), BreakerData::default());
    b.operate("n1", Operation::MetricsOnly, at(0));
    let lines: Vec<String> = (1..=10).map(|i| sample("n1", i, "critical")).collect();
    let out = feed(&mut b, &lines);
    assert_eq!(kinds(&out), vec!["s:metrics_only"; 10]);
    assert_eq!(out[9]["breaker"]["consecutive_failures"], 10);
}

#[test]
fn replaying_the_same_input_from_empty_state_gives_identical_output() {
    let mut lines = Vec::new();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..200 {
        for n in 0..5 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let state = match (seed >> 33) % 10 {
                0..=5 => "critical",
                6 => "unknown",
                _ => "healthy",
            };
            lines.push(sample(&format!("n{n}"), i * 60, state));
        }
    }
    let cfg = BreakerConfig::default();
    let a = feed(&mut brk(cfg.clone(), BreakerData::default()), &lines);
    let b = feed(&mut brk(cfg, BreakerData::default()), &lines);
    assert_eq!(a, b);
    assert!(
        a.iter().any(|v| v["kind"] == "transition"),
        "the input must exercise trips"
    );
}

#[test]
fn unknown_counts_only_when_the_node_was_unreachable() {
    let mut b = brk(no_guard(), BreakerData::default());
    let out = feed(
        &mut b,
        &[
            unreachable("n1", 0),
            sample("n1", 10, "unknown"),
            unreachable("n1", 20),
            sample("n1", 30, "unknown"),
            unreachable("n1", 40),
        ],
    );
    assert_eq!(
        kinds(&out),
        [
            "s:closed",
            "s:closed",
            "s:closed",
            "s:closed",
            "closed->open",
            "s:open"
        ]
    );
    assert_eq!(
        out[1]["breaker"]["consecutive_failures"], 1,
        "plain unknown neither counts nor resets"
    );
    assert_eq!(out[4]["cause_state"], "unknown");
    assert_eq!(out[4]["cause_action"], "check_network");
}

#[test]
fn degraded_is_a_success_by_default_and_a_failure_when_configured() {
    let lines: Vec<String> = (0..3).map(|i| sample("n1", i, "degraded")).collect();
    let out = feed(&mut brk(no_guard(), BreakerData::default()), &lines);
    assert!(out.iter().all(|v| v["kind"] == "sample"));
    let cfg = BreakerConfig {
        degraded: Outcome::Failure,
        ..no_guard()
    };
    let out = feed(&mut brk(cfg, BreakerData::default()), &lines);
    assert_eq!(out[2]["kind"], "transition");
}

#[test]
fn out_of_order_and_stale_records_pass_but_do_not_count() {
    let mut b = brk(no_guard(), BreakerData::default());
    let out = feed(
        &mut b,
        &[
            sample("n1", 1000, "critical"),
            sample("n1", 990, "critical"), // older than n1's last record
            sample("n1", 300, "critical"), // 10m+ behind n1's newest record: stale
            sample("n1", 1001, "critical"),
        ],
    );
    assert_eq!(kinds(&out), vec!["s:closed"; 4]);
    assert_eq!(out[3]["breaker"]["consecutive_failures"], 2);
    assert_eq!(b.counters().out_of_order, 1);
    assert_eq!(b.counters().stale, 1);
}

#[test]
fn a_node_running_ahead_does_not_make_other_nodes_stale() {
    let mut b = brk(no_guard(), BreakerData::default());
    let out = feed(
        &mut b,
        &[
            sample("n1", 1000, "critical"),
            sample("n2", 5000, "healthy"), // its clock is an hour ahead
            sample("n1", 1010, "critical"),
            sample("n1", 1020, "critical"),
        ],
    );
    assert_eq!(
        kinds(&out),
        ["s:closed", "s:closed", "s:closed", "closed->open", "s:open"]
    );
    assert_eq!(b.counters().stale, 0);
}

#[test]
fn a_record_far_ahead_of_the_host_clock_is_rejected_and_moves_no_clock() {
    let mut b = Breaker::new(no_guard(), BreakerData::default()).with_clock(|| at(0));
    let far = sample("n1", 86_400, "critical");
    let mut emit = |_: &[u8]| Ok(());
    match b.process(&far, &mut emit) {
        Err(StageError::Reject(m)) => {
            assert!(m.contains("is 1day ahead of this host's clock"), "{m}");
        }
        other => panic!("not rejected: {other:?}"),
    }
    assert!(
        b.data().nodes.is_empty(),
        "no node state from a rejected record"
    );
    // Within max_clock_skew (5m) is fine, and later records of the node still count.
    let out = feed(
        &mut b,
        &[
            sample("n1", 0, "critical"),
            sample("n1", 10, "critical"),
            sample("n1", 290, "critical"),
        ],
    );
    assert_eq!(out[2]["kind"], "transition");
    let off = BreakerConfig {
        max_clock_skew: Duration::ZERO,
        ..no_guard()
    };
    let mut b = Breaker::new(off, BreakerData::default()).with_clock(|| at(0));
    assert_eq!(feed(&mut b, &[far]).len(), 1, "0s turns the check off");
}

#[test]
fn an_out_of_order_record_does_not_end_an_open_wait() {
    let mut b = brk(no_guard(), BreakerData::default());
    trip(&mut b, "n1", 100);
    // Newer than the trial time but older than n1's newest record is impossible; an older one
    // must simply be held.
    let out = feed(&mut b, &[sample("n1", 50, "healthy")]);
    assert!(out.is_empty());
    assert_eq!(b.data().nodes["n1"].state, BreakerState::Open);
}

#[test]
fn a_fleet_wide_outage_lists_a_bounded_number_of_failing_nodes_and_counts_them_all() {
    let mut b = brk(BreakerConfig::default(), BreakerData::default());
    let nodes = ugro_types::limits::MAX_ITEMS + 100;
    let mut lines = Vec::new();
    for round in 0..3 {
        for n in 0..nodes {
            lines.push(sample(&format!("n{n:05}"), round * 10, "critical"));
        }
    }
    let out = feed(&mut b, &lines);
    let f = out
        .iter()
        .find(|v| v["kind"] == "fleet")
        .expect("a fleet record");
    let listed = f["failing"].as_array().unwrap();
    assert_eq!(listed.len(), ugro_types::limits::MAX_ITEMS);
    assert_eq!(listed[0], "n00000", "in name order");
    assert_eq!(
        f["failing_count"], nodes as u64,
        "every failing node counted"
    );
}

#[test]
fn fleet_guard_blames_the_observer_when_most_nodes_fail_together() {
    let mut b = brk(BreakerConfig::default(), BreakerData::default());
    let mut lines = Vec::new();
    for round in 0..4 {
        for n in 0..4 {
            lines.push(sample(&format!("n{n}"), round * 10 + n, "critical"));
        }
    }
    let out = feed(&mut b, &lines);
    let fleets: Vec<&Value> = out.iter().filter(|v| v["kind"] == "fleet").collect();
    assert_eq!(fleets.len(), 1, "one record per window");
    let f = fleets[0];
    assert_eq!(f["verdict"], "suspect_observer");
    assert_eq!(f["node"], "*");
    assert_eq!(f["known_nodes"], 4);
    assert_eq!(f["failing"], json!(["n0", "n1", "n2", "n3"]));
    assert_eq!(f["failing_count"], 4);
    assert_eq!(f["threshold"], 0.5);
    assert_eq!(f["window"], "1m");
    assert!(
        !out.iter().any(|v| v["kind"] == "transition"),
        "no breaker opened"
    );
    assert!(
        b.data()
            .nodes
            .values()
            .all(|n| n.state == BreakerState::Closed)
    );
    assert_eq!(b.counters().suppressed_trips, 8);
}

#[test]
fn fleet_guard_ignores_nodes_that_only_blipped() {
    let mut b = brk(BreakerConfig::default(), BreakerData::default());
    let mut lines: Vec<String> = (1..5)
        .map(|n| sample(&format!("n{n}"), 0, "healthy"))
        .collect();
    lines.push(sample("n2", 5, "critical"));
    lines.push(sample("n3", 6, "critical"));
    for i in 0..4 {
        lines.push(sample("n1", 10 + i * 5, "critical"));
    }
    let out = feed(&mut b, &lines);
    assert!(
        !out.iter().any(|v| v["kind"] == "fleet"),
        "one failing node of 4 is no fleet event"
    );
    assert_eq!(b.data().nodes["n1"].state, BreakerState::Open);
    assert_eq!(b.counters().suppressed_trips, 0);
}

#[test]
fn fleet_guard_lets_a_minority_trip() {
    let mut b = brk(BreakerConfig::default(), BreakerData::default());
    let mut lines = Vec::new();
    for round in 0..3 {
        lines.push(sample("n0", round * 10, "critical"));
        lines.push(sample("n1", round * 10, "critical"));
        for n in 2..5 {
            lines.push(sample(&format!("n{n}"), round * 10, "healthy"));
        }
    }
    let out = feed(&mut b, &lines);
    assert!(!out.iter().any(|v| v["kind"] == "fleet"));
    let trips: Vec<&Value> = out.iter().filter(|v| v["kind"] == "transition").collect();
    assert_eq!(trips.len(), 2, "2 of 5 is not more than half");
}

#[test]
fn fleet_guard_is_off_below_the_minimum_fleet() {
    let mut b = brk(BreakerConfig::default(), BreakerData::default());
    let out = trip(&mut b, "n1", 0);
    assert_eq!(out[2]["kind"], "transition");
}

#[test]
fn pass_open_annotates_instead_of_holding() {
    let cfg = BreakerConfig {
        pass_open: true,
        ..no_guard()
    };
    let mut b = brk(cfg, BreakerData::default());
    trip(&mut b, "n1", 0);
    let out = feed(&mut b, &[sample("n1", 30, "healthy")]);
    assert_eq!(kinds(&out), ["s:open"]);
    assert_eq!(out[0]["breaker"]["next_trial_at"], json!(at(320)));
}

#[test]
fn other_kinds_pass_unchanged_and_unscored_samples_are_rejected() {
    let mut b = brk(no_guard(), BreakerData::default());
    let other = r#"{"v":1,"kind":"alert","ts":"2026-11-28T00:00:00Z","node":"n1","x":[1,2,3]}"#;
    let mut got = Vec::new();
    let mut emit = |r: &[u8]| {
        got.push(r.to_vec());
        Ok(())
    };
    b.process(other, &mut emit).unwrap();
    let unscored = r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n1"}"#;
    let e = b.process(unscored, &mut emit).unwrap_err();
    assert!(matches!(e, StageError::Reject(m) if m.contains("score")));
    assert_eq!(got, [other.as_bytes().to_vec()]);
}

#[test]
fn an_existing_breaker_field_is_replaced_not_duplicated() {
    let mut b = brk(no_guard(), BreakerData::default());
    let mut v: Value = serde_json::from_str(&sample("n1", 0, "critical")).unwrap();
    v["breaker"] = json!({"state": "stale-upstream"});
    let out = feed(&mut b, &[v.to_string()]);
    assert_eq!(out[0]["breaker"]["state"], "closed");
    assert_eq!(out[0]["breaker"]["consecutive_failures"], 1);
}

#[test]
fn automatic_half_open_follows_the_stream_time_of_any_node() {
    let cfg = BreakerConfig {
        automatic_transition_from_open_to_half_open_enabled: true,
        ..no_guard()
    };
    let mut b = brk(cfg, BreakerData::default());
    trip(&mut b, "n1", 0);
    let out = feed(
        &mut b,
        &[sample("n2", 319, "healthy"), sample("n2", 321, "healthy")],
    );
    assert_eq!(kinds(&out), ["s:closed", "open->half_open", "s:closed"]);
    assert_eq!(out[1]["at"], json!(at(320)));
    let out = feed(&mut b, &[sample("n1", 330, "healthy")]);
    assert_eq!(kinds(&out), ["half_open->closed", "s:closed"]);
}

#[test]
fn lemon_history_counts_trips_within_the_window() {
    let cfg = BreakerConfig {
        trip_history_size: 3,
        ..no_guard()
    };
    let mut b = brk(cfg, BreakerData::default());
    let day = 86_400;
    let mut last = Value::Null;
    for d in [0, 1, 2, 9, 10] {
        trip(&mut b, "n1", d * day);
        let due = (b.data().nodes["n1"].next_trial_at.unwrap().0 - T0) / 1000;
        let out = feed(&mut b, &[sample("n1", due, "healthy")]);
        assert_eq!(out[1]["to"], "closed");
        last = out[0].clone();
    }
    assert_eq!(b.data().nodes["n1"].trips.len(), 3, "bounded");
    assert_eq!(
        last["trips_in_window"], 2,
        "days 9 and 10; day 2 is outside 7 days"
    );
    assert_eq!(last["history"], "2 trips in 7 days");
    assert_eq!(last["trip_window"], "7days");
}
