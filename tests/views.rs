//! The borrowed views in `ugro_types::view` read what the real tools write: every shipped GPU
//! fixture goes through `ugro-probe | ugro-score | ugro-breaker | ugro-alert`, and every output
//! line reads the same through its view as through the owned record type.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the test's failure report

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde::de::IgnoredAny;
use ugro_e2e::{bin, root, run_tool};
use ugro_types::view::{AlertView, RecordView, SampleView, ScoreHead, TransitionView};
use ugro_types::{Alert, BreakerAnnotation, Kind, ReasonCode, Sample, Transition};

fn ok(tool: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{tool} failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Four samples of one fixture, a minute apart and ending now, so that a faulty node trips
/// its breaker (three strikes) and alerts.
fn samples(fixture: &Path, state: &Path) -> String {
    let out = Command::new(bin("ugro-probe"))
        .arg("--gpu-fixture")
        .arg(fixture)
        .args(["--node", "gpu-node-1", "--no-xid", "--cpu-window", "0"])
        .arg("--cpu-state-file")
        .arg(state.join("cpu.json"))
        .output()
        .unwrap();
    let line = ok("ugro-probe", &out);
    let s: Sample = serde_json::from_str(line.trim_end()).unwrap();
    (0..4u64)
        .rev()
        .map(|i| {
            let mut t = s.clone();
            t.ts = s.ts.sub(Duration::from_secs(60 * i));
            serde_json::to_string(&t).unwrap() + "\n"
        })
        .collect()
}

/// A scored sample: the sample view, the record view and the score head against the owned type.
fn check_scored(line: &str) {
    let owned: Sample = serde_json::from_str(line).unwrap();
    let score = owned.score.as_ref().expect("scored");
    let v = SampleView::parse(line).unwrap();
    assert_eq!(
        (v.kind, v.ts, &*v.node),
        (owned.kind, owned.ts, &*owned.node)
    );
    assert!(v.has_score);
    assert_eq!(v.host.as_deref(), owned.host.as_ref());
    let devices = |g: Option<usize>| g.unwrap_or(0);
    assert_eq!(
        devices(v.gpu.as_ref().map(|g| g.devices.len())),
        devices(owned.gpu.as_ref().map(|g| g.devices.len()))
    );
    let r: RecordView<'_> = RecordView::parse(line).unwrap();
    let sv = r.score.as_ref().unwrap();
    assert_eq!((sv.state, sv.total), (score.state, score.total));
    assert_eq!(sv.known_action(), Some(score.action));
    assert_eq!(sv.summary, score.summary);
    assert_eq!(sv.reasons.len(), score.reasons.len());
    for (rv, ro) in sv.reasons.iter().zip(&score.reasons) {
        assert!(
            !matches!(rv.code, ReasonCode::Other(_)),
            "ugro-score emitted a code ReasonCode does not list: {}",
            rv.code
        );
        assert_eq!(rv.code, ro.code);
        assert_eq!(rv.component, Some(ro.component));
        assert_eq!((rv.gpu, rv.fatal), (ro.gpu, ro.fatal));
        assert_eq!(rv.known_action(), Some(ro.action));
        assert_eq!(rv.message, ro.message);
    }
    assert_eq!(r.unreachable, owned.unreachable.is_some());
    let head: RecordView<'_, ScoreHead, IgnoredAny> = RecordView::parse(line).unwrap();
    assert_eq!(head.score.unwrap().state, score.state);
    assert_eq!(head.score.unwrap().action, Some(score.action));
}

/// A line out of the breaker: an annotated sample or a transition.
fn check_broken(line: &str) -> Kind {
    let r: RecordView<'_> = RecordView::parse(line).unwrap();
    match r.kind {
        Kind::Sample => {
            check_scored(line);
            #[derive(serde::Deserialize)]
            struct Annotated {
                breaker: BreakerAnnotation,
            }
            let owned: Annotated = serde_json::from_str(line).unwrap();
            let b = r.breaker.unwrap();
            assert!(r.has_breaker);
            assert_eq!(b.state, owned.breaker.state);
            assert_eq!(b.consecutive_failures, owned.breaker.consecutive_failures);
            assert_eq!(b.next_trial_at, owned.breaker.next_trial_at);
        }
        Kind::Transition => {
            let owned: Transition = serde_json::from_str(line).unwrap();
            let t = TransitionView::parse(line).unwrap();
            assert_eq!((t.from, t.to), (Some(owned.from), Some(owned.to)));
            assert_eq!(t.reason.as_deref(), Some(owned.reason.as_str()));
            assert_eq!(t.consecutive_failures, Some(owned.consecutive_failures));
            assert_eq!(
                (t.at, t.next_trial_at),
                (Some(owned.at), owned.next_trial_at)
            );
            assert_eq!(t.history.as_deref(), owned.history.as_deref());
            assert_eq!(
                (t.cause_state, t.cause_action),
                (owned.cause_state, owned.cause_action)
            );
        }
        k => panic!("unexpected {k:?} from the breaker: {line}"),
    }
    r.kind
}

fn check_alert(line: &str) {
    let owned: Alert = serde_json::from_str(line).unwrap();
    let a = AlertView::parse(line).unwrap();
    assert_eq!(
        (a.kind, a.ts, &*a.node),
        (owned.kind, owned.ts, &*owned.node)
    );
    assert_eq!(
        (&*a.fingerprint, a.status),
        (&*owned.fingerprint, owned.status)
    );
    let labels: Vec<(&str, &str)> = a.labels.iter().map(|(k, v)| (&**k, &**v)).collect();
    let want: Vec<(&str, &str)> = owned.labels.iter().map(|(k, v)| (&**k, &**v)).collect();
    assert_eq!(labels, want);
    assert_eq!(
        a.alertname(),
        owned.labels.get("alertname").map(String::as_str)
    );
    assert_eq!(a.annotations.len(), owned.annotations.len());
    assert_eq!((a.starts_at, a.ends_at), (owned.starts_at, owned.ends_at));
    assert_eq!(a.receiver.as_deref(), owned.receiver.as_deref());
    assert_eq!(a.group_key.as_deref(), owned.group_key.as_deref());
}

#[test]
fn every_line_the_pipeline_writes_for_every_gpu_fixture_reads_the_same_through_its_view() {
    let mut fixtures: Vec<_> = std::fs::read_dir(root().join("crates/ugro-probe/fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 10, "{fixtures:?}");
    let (mut transitions, mut alerts) = (0, 0);
    for f in &fixtures {
        let d = tempfile::tempdir().unwrap();
        let input = samples(f, d.path());
        let scored = ok("ugro-score", &run_tool("ugro-score", &[], input.as_bytes()));
        scored.lines().for_each(check_scored);
        let b = d.path().join("b.json");
        let broken = ok(
            "ugro-breaker",
            &run_tool(
                "ugro-breaker",
                &["--state", b.to_str().unwrap()],
                scored.as_bytes(),
            ),
        );
        transitions += broken
            .lines()
            .map(check_broken)
            .filter(|k| *k == Kind::Transition)
            .count();
        let a = d.path().join("a.json");
        let out = ok(
            "ugro-alert",
            &run_tool(
                "ugro-alert",
                &["--state", a.to_str().unwrap()],
                broken.as_bytes(),
            ),
        );
        for line in out.lines() {
            check_alert(line);
            alerts += 1;
        }
    }
    // The faulty fixtures must have produced the rarer kinds, or half the views went untested.
    assert!(
        transitions > 0 && alerts > 0,
        "{transitions} transitions, {alerts} alerts"
    );
}
