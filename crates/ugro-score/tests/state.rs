//! `ugro-score --state FILE` as cron runs it: one process per run, each scoring a few lines, the
//! history carried in the file between them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use assert_cmd::Command;
use ugro_types::{Action, HealthState, ReasonCode, Sample, Timestamp, Xid};

const T0: i64 = 1_800_000_000_000;
const HOUR: i64 = 3_600_000;
const BOOT: &str = "0f6c2e3a-7d1b-4c5e-9a8f-1b2c3d4e5f60";

fn busy_at(at: i64) -> Sample {
    let text = std::fs::read_to_string(format!(
        "{}/fixtures/h200-busy.jsonl",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut s: Sample = serde_json::from_str(text.trim()).unwrap();
    s.ts = Timestamp(T0 + at);
    s.host.as_mut().unwrap().boot_id = Some(BOOT.into());
    s
}

fn dbe(seq: u64, at: i64) -> Xid {
    Xid {
        code: 48,
        pci_bus_id: Some("PCI:0000:00:06".into()),
        ts: Some(Timestamp(T0 + at)),
        message: Some("An uncorrectable double bit error (DBE) has been detected".into()),
        boot_id: Some(BOOT.into()),
        seq: Some(seq),
    }
}

/// ugro-score with `args` (no configuration from the environment).
fn tool<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Command {
    let mut c = Command::cargo_bin("ugro-score").unwrap();
    c.env_remove("UGRO_SCORE_CONFIG").args(args);
    c
}

/// `samples` through `c`: the scored samples back.
fn scored(c: &mut Command, samples: &[Sample]) -> Vec<Sample> {
    let input: String = samples
        .iter()
        .map(|s| serde_json::to_string(s).unwrap() + "\n")
        .collect();
    let out = c
        .write_stdin(input)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// One cron run over `samples`: the scored samples back.
fn run(state: &Path, samples: &[Sample]) -> Vec<Sample> {
    scored(&mut tool(&[Path::new("--state"), state]), samples)
}

fn score(s: &Sample) -> &ugro_types::Score {
    s.score.as_ref().unwrap()
}

#[test]
fn cron_runs_with_state_see_xid_48_again_within_24h() {
    let d = tempfile::tempdir().unwrap();
    let st = d.path().join("score.json");
    let mut first = busy_at(60_000);
    first.gpu.as_mut().unwrap().devices[0].xids = vec![dbe(100, 0)];
    let r = run(&st, &[first]);
    assert_eq!(score(&r[0]).action, Action::ResetGpu);
    // Hourly runs without the event, then the same GPU logs a second DBE 20 h later.
    for h in 1..4 {
        let r = run(&st, &[busy_at(h * HOUR)]);
        assert_eq!(score(&r[0]).state, HealthState::Healthy);
    }
    let mut again = busy_at(20 * HOUR + 60_000);
    again.gpu.as_mut().unwrap().devices[0].xids = vec![dbe(200, 20 * HOUR)];
    let r = run(&st, &[again.clone()]);
    let sc = score(&r[0]);
    assert_eq!(
        (sc.state, sc.action),
        (HealthState::Critical, Action::HardwareInspection)
    );
    assert_eq!(sc.reasons[0].code, ReasonCode::XidRecurring);
    // The next run still sees the same record (the probe's lookback): counted once, so the
    // message still says two events.
    again.ts = Timestamp(again.ts.0 + 60_000);
    let r = run(&st, &[again]);
    assert!(
        score(&r[0]).reasons[0].message.contains("(2 events)"),
        "{}",
        score(&r[0]).summary
    );
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&st).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn without_state_a_cron_run_cannot_see_the_earlier_event() {
    let mut first = busy_at(60_000);
    first.gpu.as_mut().unwrap().devices[0].xids = vec![dbe(100, 0)];
    let mut again = busy_at(20 * HOUR + 60_000);
    again.gpu.as_mut().unwrap().devices[0].xids = vec![dbe(200, 20 * HOUR)];
    for s in [first, again] {
        let s = scored(&mut tool::<&str>(&[]), &[s]).remove(0);
        assert_eq!(
            score(&s).action,
            Action::ResetGpu,
            "stateless: each run alone"
        );
    }
}

#[test]
fn reset_state_starts_over_and_a_foreign_file_is_refused_untouched() {
    let d = tempfile::tempdir().unwrap();
    let st = d.path().join("score.json");
    let mut first = busy_at(60_000);
    first.gpu.as_mut().unwrap().devices[0].xids = vec![dbe(100, 0)];
    run(&st, &[first]);
    let mut again = busy_at(2 * HOUR);
    again.gpu.as_mut().unwrap().devices[0].xids = vec![dbe(200, HOUR)];
    let s = scored(
        &mut tool(&[Path::new("--reset-state"), Path::new("--state"), &st]),
        &[again],
    )
    .remove(0);
    assert_eq!(
        score(&s).reasons[0].code,
        ReasonCode::XidFatal,
        "history was reset"
    );

    std::fs::write(
        &st,
        "{\"format\":\"ugro-score\",\"version\":99,\"data\":{}}",
    )
    .unwrap();
    let assert = tool(&[Path::new("--state"), &st])
        .write_stdin(serde_json::to_string(&busy_at(0)).unwrap())
        .assert()
        .code(78);
    let err = String::from_utf8_lossy(&assert.get_output().stderr).into_owned();
    assert!(
        err.contains("version 99") && err.contains("--reset-state"),
        "{err}"
    );
    assert!(std::fs::read_to_string(&st).unwrap().contains("99"));
}

#[test]
fn the_prometheus_output_keeps_the_history_too() {
    let d = tempfile::tempdir().unwrap();
    let st = d.path().join("score.json");
    let args = [
        Path::new("--format"),
        Path::new("prometheus"),
        Path::new("--state"),
        &st,
    ];
    tool(&args)
        .write_stdin(serde_json::to_string(&busy_at(0)).unwrap())
        .assert()
        .success();
    let text = std::fs::read_to_string(&st).unwrap();
    assert!(text.contains("\"format\":\"ugro-score\""), "{text}");
    assert!(
        text.contains("GPU-ae4b922a"),
        "the node's GPU is remembered: {text}"
    );
}

#[test]
fn a_bare_state_flag_uses_the_users_state_directory() {
    let d = tempfile::tempdir().unwrap();
    let r = scored(
        tool(&["--state"]).env("XDG_STATE_HOME", d.path()),
        &[busy_at(0)],
    );
    assert_eq!(r.len(), 1);
    assert!(d.path().join("ugro/score.json").is_file());
    // A file right after the flag is the state file; the input is still standard input.
    let named = d.path().join("mine.json");
    let r = scored(&mut tool(&[Path::new("--state"), &named]), &[busy_at(0)]);
    assert_eq!(r.len(), 1);
    assert!(named.is_file());
}
