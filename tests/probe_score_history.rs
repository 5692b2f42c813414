//! `ugro-probe | ugro-score` for what issue 16 added: the driver's recovery action from NVML's
//! field 230, XIDs whose message carries the verdict, the same kernel record seen by two probe
//! runs (counted once with `--state`), probe processes restarted under one scorer (counted once
//! in the stream), and a GPU that vanishes between cron runs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report

use std::path::Path;

use ugro_e2e::{probe_fixture, run_tool};
use ugro_types::{Action, HealthState, ReasonCode, Sample, Score};

const BOOT: &str = "0f6c2e3a-7d1b-4c5e-9a8f-1b2c3d4e5f60";

/// One probe run on `fixture` with `args`, scored with `score_args`.
fn probe_score(dir: &Path, fixture: &str, args: &[&str], score_args: &[&str]) -> Sample {
    let out = run_tool("ugro-score", score_args, &probe_fixture(dir, fixture, args));
    assert!(
        out.status.success(),
        "score: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn score(s: &Sample) -> &Score {
    s.score.as_ref().unwrap()
}

/// The GPU reasons only: the host part is this machine's real one.
fn gpu_codes(s: &Sample) -> Vec<(ReasonCode, Option<u32>)> {
    score(s)
        .reasons
        .iter()
        .filter(|r| r.component == ugro_types::Component::Gpu)
        .map(|r| (r.code.clone(), r.gpu))
        .collect()
}

#[test]
fn recovery_action_fixtures_give_the_drivers_verdict() {
    let d = tempfile::tempdir().unwrap();
    for (fixture, state, action, gpu) in [
        ("recovery-none.json", HealthState::Healthy, None, None),
        (
            "recovery-not-supported.json",
            HealthState::Healthy,
            None,
            None,
        ),
        (
            "recovery-gpu-reset.json",
            HealthState::Critical,
            Some(Action::ResetGpu),
            Some(2),
        ),
        (
            "recovery-node-reboot.json",
            HealthState::Critical,
            Some(Action::Reboot),
            Some(5),
        ),
        (
            "recovery-drain-and-reset.json",
            HealthState::Critical,
            Some(Action::ResetGpu),
            Some(6),
        ),
        (
            "recovery-drain-p2p.json",
            HealthState::Degraded,
            Some(Action::RestartApp),
            Some(1),
        ),
    ] {
        let s = probe_score(d.path(), fixture, &["--no-xid", "--expect-gpus", "8"], &[]);
        let sc = score(&s);
        match gpu {
            None => assert!(gpu_codes(&s).is_empty(), "{fixture}: {}", sc.summary),
            Some(i) => {
                assert_eq!(
                    gpu_codes(&s),
                    [(ReasonCode::GpuRecoveryAction, Some(i))],
                    "{fixture}"
                );
                assert_eq!(Some(sc.action), action, "{fixture}: {}", sc.summary);
            }
        }
        if state == HealthState::Critical {
            assert_eq!(sc.state, state, "{fixture}: {}", sc.summary);
        } else {
            // The host half is this machine's: it may cost a little, never a GPU verdict.
            assert!(
                sc.state.badness() >= state.badness(),
                "{fixture}: {}",
                sc.summary
            );
            assert_ne!(sc.state, HealthState::Critical, "{fixture}: {}", sc.summary);
        }
    }
}

/// A kmsg record logged a minute ago on the GPU at PCI bus `bus`.
fn record(seq: u64, bus: &str, code: u32, message: &str) -> String {
    let usec = (ugro_e2e::uptime_s() * 1e6) as u64 - 60_000_000;
    format!("3,{seq},{usec},-;NVRM: Xid (PCI:0000:{bus}:00): {code}, {message}\n")
}

#[test]
fn nvlink5_and_recovery_xids_are_judged_from_the_drivers_message() {
    let d = tempfile::tempdir().unwrap();
    let kmsg = d.path().join("kmsg");
    let text = [
        record(10, "18", 149, "pid=1234, name=python, NETIR_LINK_EVT  Fatal   XC0 i0 Link 01 (0x021425c6 0x00000000 0x00000000 0x00000000 0x00000000 0x00000000)"),
        record(11, "2a", 145, "RLW_REMAP Nonfatal XC0 i0 Link 00 (0x00000004 0x00000001 0x00000000 0x00000000)"),
        record(12, "3a", 154, "GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)"),
    ]
    .concat();
    std::fs::write(&kmsg, text).unwrap();
    let k = kmsg.to_string_lossy().into_owned();
    let s = probe_score(
        d.path(),
        "h200x8-busy.json",
        &["--kmsg-file", &k, "--boot-id", BOOT],
        &[],
    );
    let sc = score(&s);
    assert_eq!(
        (sc.state, sc.action),
        (HealthState::Critical, Action::Reboot),
        "{}",
        sc.summary
    );
    let on = |gpu: u32| sc.reasons.iter().find(|r| r.gpu == Some(gpu)).unwrap();
    assert_eq!(
        (on(0).code.clone(), on(0).action),
        (ReasonCode::XidFatal, Action::ResetGpu)
    );
    assert_eq!(
        (on(1).code.clone(), on(1).action),
        (ReasonCode::XidWarning, Action::None)
    );
    assert_eq!(
        (on(2).code.clone(), on(2).action),
        (ReasonCode::XidFatal, Action::Reboot)
    );
}

#[test]
fn two_probe_runs_over_the_same_kernel_record_count_it_once() {
    let d = tempfile::tempdir().unwrap();
    let kmsg = d.path().join("kmsg");
    // XID 74 escalates to hardware_inspection at two events in 24 h.
    std::fs::write(
        &kmsg,
        record(4711, "5d", 74, "pid=99, name=python, NVLink: fatal error"),
    )
    .unwrap();
    let k = kmsg.to_string_lossy().into_owned();
    let state = d.path().join("score.json").to_string_lossy().into_owned();
    let args = ["--kmsg-file", &k, "--boot-id", BOOT, "--expect-gpus", "8"];
    let score_args = ["--state", &state];
    for run in 0..2 {
        let s = probe_score(d.path(), "h200x8-busy.json", &args, &score_args);
        let r = score(&s).reasons.iter().find(|r| r.gpu == Some(3)).unwrap();
        assert_eq!(
            (r.code.clone(), r.action),
            (ReasonCode::XidFatal, Action::ResetGpu),
            "run {run}: {}",
            r.message
        );
    }
}

#[test]
fn a_gpu_gone_since_the_last_cron_run_is_critical_without_expected_gpus() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("score.json").to_string_lossy().into_owned();
    let before = probe_score(
        d.path(),
        "h200x8-idle.json",
        &["--no-xid"],
        &["--state", &state],
    );
    assert!(gpu_codes(&before).is_empty(), "{}", score(&before).summary);
    let after = probe_score(
        d.path(),
        "fault-7-of-8.json",
        &["--no-xid"],
        &["--state", &state],
    );
    let sc = score(&after);
    assert_eq!(
        (sc.state, sc.action),
        (HealthState::Critical, Action::Reboot),
        "{}",
        sc.summary
    );
    assert!(
        gpu_codes(&after).contains(&(ReasonCode::GpuMissingSinceSeen, None)),
        "{}",
        sc.summary
    );
}

#[test]
fn a_probe_restarted_mid_stream_repeats_no_event_to_the_scorer() {
    let d = tempfile::tempdir().unwrap();
    let kmsg = d.path().join("kmsg");
    let k = kmsg.to_string_lossy().into_owned();
    let args = ["--kmsg-file", &k, "--boot-id", BOOT, "--expect-gpus", "8"];
    // XID 94 is a warning that escalates to fatal at three events in 10 minutes: counting the
    // repeats of each probe process would make it fatal on the third sample.
    let xid94 = |seq| record(seq, "18", 94, "pid=7, name=python, Contained: SM (0x1)");
    let mut log = xid94(10);
    let mut stream = Vec::new();
    for grow in [None, Some(11), None, Some(12)] {
        // Each sample comes from a new probe process: the log grew, or the probe restarted.
        if let Some(seq) = grow {
            log.push_str(&xid94(seq));
        }
        std::fs::write(&kmsg, &log).unwrap();
        stream.extend(probe_fixture(d.path(), "h200x8-busy.json", &args));
    }
    let out = run_tool("ugro-score", &[], &stream);
    assert!(out.status.success());
    let verdicts: Vec<(ReasonCode, Action)> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Sample>()
        .map(|s| {
            let s = s.unwrap();
            let on0 = |r: &&ugro_types::Reason| r.gpu == Some(0) && r.message.contains("XID 94");
            let r = score(&s).reasons.iter().find(on0).unwrap();
            (r.code.clone(), r.action)
        })
        .collect();
    let warning = (ReasonCode::XidWarning, Action::RestartApp);
    let fatal = (ReasonCode::XidFatal, Action::ResetGpu);
    assert_eq!(verdicts, [warning.clone(), warning.clone(), warning, fatal]);
}
