//! The rules that need history: XID identity, recurrence and reboots, the GPU count, the
//! driver's recovery action, the trends on synthetic series, and the state file between runs
//! (each `Scorer::with_state` below is one cron run).

use std::path::Path;

use ugro_types::{
    Action, GpuStatus, HealthState, ReasonCode, RecoveryAction, Sample, Score, Timestamp, Xid,
};

use crate::config::ScoreConfig;
use crate::output::Format;
use crate::{Scorer, state};

const BUSY: &str = include_str!("../fixtures/h200-busy.jsonl");
const BOOT_A: &str = "0f6c2e3a-7d1b-4c5e-9a8f-1b2c3d4e5f60";
const BOOT_B: &str = "6b1f0d2e-9a3c-4e5f-8a7b-2c3d4e5f6071";
const BOOT_C: &str = "9d4e5f60-1b2c-4c5e-9a8f-7d1b0f6c2e3a";
const T0: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

/// The busy H200 node with eight GPUs (distinct indices, UUIDs and bus ids), at `T0 + at` ms,
/// in boot `boot`.
fn node(at: i64, boot: &str) -> Sample {
    let mut s: Sample = serde_json::from_str(BUSY.trim()).unwrap();
    s.ts = Timestamp(T0 + at);
    s.host.as_mut().unwrap().boot_id = Some(boot.into());
    let g = s.gpu.as_mut().unwrap();
    let g0 = g.devices[0].clone();
    g.devices = (0..8)
        .map(|i| {
            let mut d = g0.clone();
            d.index = i;
            d.uuid = Some(format!("GPU-{i:08}"));
            d.pci_bus_id = Some(format!("00000000:{:02x}:00.0", 0x18 + i * 0x10));
            d
        })
        .collect();
    g.found = Some(8);
    s
}

fn xid(code: u32, boot: &str, seq: u64, at: i64, message: &str) -> Xid {
    Xid {
        code,
        pci_bus_id: Some("PCI:0000:18:00".into()),
        ts: Some(Timestamp(T0 + at)),
        message: Some(message.into()),
        boot_id: Some(boot.into()),
        seq: Some(seq),
    }
}

fn codes(sc: &Score) -> Vec<&str> {
    sc.reasons.iter().map(|r| r.code.as_str()).collect()
}

fn find<'a>(sc: &'a Score, code: &ReasonCode) -> &'a ugro_types::Reason {
    sc.reasons
        .iter()
        .find(|r| r.code == *code)
        .unwrap_or_else(|| panic!("no {code} in {:?}", codes(sc)))
}

/// One cron run: a scorer over the state file, one sample, the state saved.
fn cron(state: &Path, s: &Sample) -> Score {
    let mut sc = Scorer::with_state(ScoreConfig::default(), Format::Json, state).unwrap();
    let score = sc.score_sample(s);
    sc.save_state().unwrap();
    score
}

#[test]
fn the_same_kernel_event_seen_by_two_runs_counts_once() {
    let d = tempfile::tempdir().unwrap();
    let st = d.path().join("score.json");
    // XID 74 escalates at two events in 24h. Two probe runs report the one record (same boot
    // and sequence number), the second with a time 1 ms off, as the bug report measured.
    let mut a = node(10 * MIN, BOOT_A);
    a.gpu.as_mut().unwrap().devices[0].xids = vec![xid(74, BOOT_A, 812, 9 * MIN, "NVLink error")];
    let mut b = node(15 * MIN, BOOT_A);
    let mut again = xid(74, BOOT_A, 812, 9 * MIN, "NVLink error");
    again.ts = Some(Timestamp(T0 + 9 * MIN + 1));
    b.gpu.as_mut().unwrap().devices[0].xids = vec![again];
    assert_eq!(cron(&st, &a).action, Action::ResetGpu);
    let r = cron(&st, &b);
    assert_eq!(r.action, Action::ResetGpu, "{}", r.summary);
    assert!(
        !r.reasons[0].message.contains("seen 2 times"),
        "{}",
        r.reasons[0].message
    );
    // A second record (another sequence number) is a second event.
    let mut c = node(20 * MIN, BOOT_A);
    c.gpu.as_mut().unwrap().devices[0].xids = vec![xid(74, BOOT_A, 901, 19 * MIN, "NVLink error")];
    let r = cron(&st, &c);
    assert_eq!(r.action, Action::HardwareInspection, "{}", r.summary);
}

#[test]
fn xid_48_again_on_the_same_gpu_within_24h_needs_hardware_inspection() {
    let d = tempfile::tempdir().unwrap();
    let st = d.path().join("score.json");
    let run = |at: i64, seq: u64| {
        let mut s = node(at + MIN, BOOT_A);
        s.gpu.as_mut().unwrap().devices[2].xids = vec![xid(
            48,
            BOOT_A,
            seq,
            at,
            "An uncorrectable double bit error (DBE) has been detected",
        )];
        cron(&st, &s)
    };
    let first = run(0, 10);
    assert_eq!(
        (first.state, first.action),
        (HealthState::Critical, Action::ResetGpu)
    );
    assert_eq!(first.reasons[0].code, ReasonCode::XidFatal);
    // Cron runs in between without the event leave it in the history.
    for h in 1..6 {
        assert_eq!(
            cron(&st, &node(h * HOUR, BOOT_A)).state,
            HealthState::Healthy
        );
    }
    let second = run(6 * HOUR, 20);
    let r = find(&second, &ReasonCode::XidRecurring);
    assert_eq!(r.action, Action::HardwareInspection);
    assert_eq!(
        (r.gpu, r.fatal, r.window.as_deref()),
        (Some(2), true, Some("1day"))
    );
    // 29 h after the first, the second (at 6 h) is within 24 h: still a repeat.
    let third = run(29 * HOUR, 30);
    assert_eq!(
        third.reasons[0].code,
        ReasonCode::XidRecurring,
        "{}",
        third.summary
    );
    // 27 h after the last one, alone in its window: a fatal XID, not a repeat.
    let fourth = run(56 * HOUR, 40);
    assert_eq!(
        fourth.reasons[0].code,
        ReasonCode::XidFatal,
        "{}",
        fourth.summary
    );
    assert_eq!(fourth.action, Action::ResetGpu);
}

#[test]
fn an_xid_surviving_two_reboots_needs_hardware_inspection() {
    let d = tempfile::tempdir().unwrap();
    let st = d.path().join("score.json");
    // XID 119 (GSP RPC timeout, reset_gpu): days apart, so neither a count nor a recurrence.
    let run = |at: i64, boot: &str, seq: Option<u64>| {
        let mut s = node(at + MIN, boot);
        if let Some(seq) = seq {
            s.gpu.as_mut().unwrap().devices[5].xids = vec![xid(
                119,
                boot,
                seq,
                at,
                "Timeout after 6s of waiting for RPC response",
            )];
        }
        cron(&st, &s)
    };
    assert_eq!(run(0, BOOT_A, Some(7)).action, Action::ResetGpu);
    let one_reboot = run(2 * DAY, BOOT_B, Some(7));
    assert_eq!(
        one_reboot.reasons[0].code,
        ReasonCode::XidFatal,
        "{}",
        one_reboot.summary
    );
    assert_eq!(one_reboot.action, Action::ResetGpu);
    let two = run(4 * DAY, BOOT_C, Some(9));
    let r = find(&two, &ReasonCode::XidAfterReboots);
    assert_eq!(
        (r.action, r.gpu, r.fatal),
        (Action::HardwareInspection, Some(5), true)
    );
    assert!(r.message.contains("2 reboots"), "{}", r.message);
}

#[test]
fn reboots_count_even_when_the_xid_skipped_a_boot() {
    let d = tempfile::tempdir().unwrap();
    let st = d.path().join("score.json");
    let mut a = node(MIN, BOOT_A);
    a.gpu.as_mut().unwrap().devices[1].xids =
        vec![xid(79, BOOT_A, 3, 0, "GPU has fallen off the bus.")];
    cron(&st, &a);
    cron(&st, &node(DAY, BOOT_B));
    let mut c = node(2 * DAY, BOOT_C);
    c.gpu.as_mut().unwrap().devices[1].xids = vec![xid(
        79,
        BOOT_C,
        3,
        2 * DAY - MIN,
        "GPU has fallen off the bus.",
    )];
    let r = cron(&st, &c);
    assert_eq!(
        r.reasons[0].code,
        ReasonCode::XidAfterReboots,
        "{:?}",
        codes(&r)
    );
}

#[test]
fn a_gpu_count_below_the_nodes_recent_maximum_is_critical_without_expected_gpus() {
    let d = tempfile::tempdir().unwrap();
    let st = d.path().join("score.json");
    assert_eq!(cron(&st, &node(0, BOOT_A)).state, HealthState::Healthy);
    let mut seven = node(10 * MIN, BOOT_A);
    let g = seven.gpu.as_mut().unwrap();
    g.devices.remove(4);
    g.found = Some(7);
    assert_eq!((g.status, g.expected), (GpuStatus::Ok, None));
    let r = cron(&st, &seven);
    assert_eq!(
        (r.state, r.action),
        (HealthState::Critical, Action::Reboot),
        "{}",
        r.summary
    );
    let reason = find(&r, &ReasonCode::GpuMissingSinceSeen);
    assert_eq!(
        (reason.value.clone(), reason.threshold.clone()),
        (Some(7.into()), Some(8.into()))
    );
    // Eight days on, the eight-GPU reading has aged out: seven is the node now.
    seven.ts = Timestamp(T0 + 8 * DAY);
    assert_eq!(cron(&st, &seven).state, HealthState::Healthy);
}

#[test]
fn more_gpus_on_the_pci_bus_than_in_nvml_is_critical() {
    let mut s = node(0, BOOT_A);
    let g = s.gpu.as_mut().unwrap();
    g.devices.pop();
    g.found = Some(7);
    g.pci_devices = Some(8);
    let r = Scorer::new(ScoreConfig::default()).score_sample(&s);
    assert_eq!((r.state, r.action), (HealthState::Critical, Action::Reboot));
    assert_eq!(codes(&r), ["gpu_missing_from_nvml"]);
    // The same count on the bus and in NVML is fine; so is a node whose sysfs was unreadable.
    s.gpu.as_mut().unwrap().pci_devices = Some(7);
    assert!(
        Scorer::new(ScoreConfig::default())
            .score_sample(&s)
            .reasons
            .is_empty()
    );
    // GPUs on the bus but no NVML at all: a GPU node with a broken driver.
    let g = s.gpu.as_mut().unwrap();
    g.status = GpuStatus::Absent;
    g.devices.clear();
    g.found = None;
    g.reason = Some("libnvidia-ml.so.1: cannot open shared object file".into());
    let r = Scorer::new(ScoreConfig::default()).score_sample(&s);
    assert_eq!(r.state, HealthState::Critical, "{}", r.summary);
    assert_eq!(r.reasons[0].code, ReasonCode::GpuMissingFromNvml);
}

#[test]
fn the_drivers_recovery_action_sets_the_action_and_state() {
    for (a, state, action, fatal) in [
        (
            RecoveryAction::None,
            HealthState::Healthy,
            Action::None,
            false,
        ),
        (
            RecoveryAction::GpuReset,
            HealthState::Critical,
            Action::ResetGpu,
            true,
        ),
        (
            RecoveryAction::NodeReboot,
            HealthState::Critical,
            Action::Reboot,
            true,
        ),
        (
            RecoveryAction::DrainAndReset,
            HealthState::Critical,
            Action::ResetGpu,
            true,
        ),
        (
            RecoveryAction::DrainP2p,
            HealthState::Degraded,
            Action::RestartApp,
            false,
        ),
        (
            RecoveryAction::Unknown(6),
            HealthState::Critical,
            Action::ResetGpu,
            true,
        ),
        (
            RecoveryAction::Unknown(9),
            HealthState::Degraded,
            Action::CheckHost,
            false,
        ),
    ] {
        let mut s = node(0, BOOT_A);
        s.gpu.as_mut().unwrap().devices[3].recovery_action = Some(a);
        let r = Scorer::new(ScoreConfig::default()).score_sample(&s);
        assert_eq!((r.state, r.action), (state, action), "{a}: {}", r.summary);
        if a != RecoveryAction::None {
            let reason = find(&r, &ReasonCode::GpuRecoveryAction);
            assert_eq!((reason.gpu, reason.fatal), (Some(3), fatal), "{a}");
            assert_eq!(reason.value, Some(a.to_string().into()));
        }
    }
}

/// A change to GPU 0's readings.
type Edit<'a> = &'a dyn Fn(&mut ugro_types::Gpu);

/// Scores a series of (minutes, edit) on one scorer, returning each score.
fn series(edits: &[(i64, Edit<'_>)]) -> Vec<Score> {
    let mut sc = Scorer::new(ScoreConfig::default());
    edits
        .iter()
        .map(|(m, edit)| {
            let mut s = node(m * MIN, BOOT_A);
            edit(&mut s.gpu.as_mut().unwrap().devices[0]);
            sc.score_sample(&s)
        })
        .collect()
}

fn predicted<'a>(sc: &'a Score, code: &ReasonCode) -> Option<&'a ugro_types::Reason> {
    sc.reasons.iter().find(|r| r.code == *code && r.predicted)
}

#[test]
fn a_rising_temperature_is_predicted_to_reach_slowdown() {
    let temp = |t: u32| move |g: &mut ugro_types::Gpu| g.temperature_c = Some(t);
    let (t60, t63, t66, t69, t72, t75) =
        (temp(60), temp(63), temp(66), temp(69), temp(72), temp(75));
    let rising: Vec<(i64, Edit<'_>)> = vec![
        (0, &t60),
        (1, &t63),
        (2, &t66),
        (3, &t69),
        (4, &t72),
        (5, &t75),
    ];
    let scores = series(&rising);
    // Under five minutes of readings is not a trend yet.
    assert!(
        scores[..5]
            .iter()
            .all(|s| predicted(s, &ReasonCode::GpuTemperatureRising).is_none())
    );
    let r = predicted(&scores[5], &ReasonCode::GpuTemperatureRising).unwrap();
    // 75 C rising 3 C/min, slowdown at 87 C: 4 minutes.
    assert_eq!(
        (r.value.clone(), r.threshold.clone()),
        (Some(4.0.into()), Some(10.0.into()))
    );
    assert_eq!((r.window.as_deref(), r.fatal), (Some("5m"), false));
    assert_eq!(r.action, Action::CheckHost);
    assert_eq!(
        scores[5].state,
        HealthState::Healthy,
        "a prediction is not a fault"
    );
    // A steady GPU with a degree of jitter is not rising.
    let (a, b) = (temp(70), temp(71));
    let steady: Vec<(i64, Edit<'_>)> = (0..12)
        .map(|m| (m, if m % 2 == 0 { &a as Edit<'_> } else { &b }))
        .collect();
    assert!(series(&steady).iter().all(|s| s.reasons.is_empty()));
}

#[test]
fn pcie_replays_above_dcgms_limit_are_predicted_and_below_it_are_growth() {
    let replays =
        |n: u64| move |g: &mut ugro_types::Gpu| g.pcie.as_mut().unwrap().replay_counter = Some(n);
    // Gen 5 x16: DCGM's limit is ceil(1.92 x 16) = 31 a minute.
    let (a0, a1, a2) = (replays(1000), replays(1020), replays(1040));
    let below = series(&[(0, &a0), (1, &a1), (2, &a2)]);
    assert!(below[0].reasons.is_empty(), "a first sample has no rate");
    for s in &below[1..] {
        assert_eq!(codes(s), ["pcie_replay_growth"], "{}", s.summary);
        assert!(!s.reasons[0].predicted);
    }
    let (b0, b1, b2) = (replays(1000), replays(1040), replays(1080));
    let above = series(&[(0, &b0), (1, &b1), (2, &b2)]);
    let r = predicted(&above[2], &ReasonCode::PcieReplayRate).unwrap();
    assert_eq!(
        (r.value.clone(), r.threshold.clone()),
        (Some(40.0.into()), Some(31.0.into()))
    );
    assert_eq!(
        (r.window.as_deref(), r.action),
        (Some("2m"), Action::HardwareInspection)
    );
    // The same growth on a Gen3 x8 link (limit 4 a minute) is far above.
    let slow = |n: u64| {
        move |g: &mut ugro_types::Gpu| {
            let p = g.pcie.as_mut().unwrap();
            (p.generation, p.width, p.replay_counter) = (Some(3), Some(8), Some(n));
        }
    };
    let (c0, c1) = (slow(0), slow(5));
    let gen3 = series(&[(0, &c0), (1, &c1)]);
    assert_eq!(
        predicted(&gen3[1], &ReasonCode::PcieReplayRate)
            .unwrap()
            .threshold,
        Some(4.0.into())
    );
}

#[test]
fn a_corrected_ecc_burst_counts_and_its_rate_is_predicted() {
    let ecc = |n: u64| {
        move |g: &mut ugro_types::Gpu| g.ecc.as_mut().unwrap().corrected_volatile = Some(n)
    };
    let (e0, e1) = (ecc(0), ecc(5_000_000));
    let s = series(&[(0, &e0), (10, &e1)]);
    assert!(s[0].reasons.is_empty());
    let count = find(&s[1], &ReasonCode::EccCorrectedVolatile);
    assert_eq!(
        (count.action, count.predicted),
        (Action::HardwareInspection, false)
    );
    let rate = predicted(&s[1], &ReasonCode::EccCorrectedRate).unwrap();
    assert_eq!(rate.value, Some(30_000_000.0.into()), "per hour");
    assert_eq!(rate.window.as_deref(), Some("10m"));
    assert_ne!(
        s[1].state,
        HealthState::Healthy,
        "5 000 000 corrected errors are not healthy 100"
    );
    // The same count on a first sample: the count rule only.
    let first = series(&[(0, &e1)]);
    assert_eq!(codes(&first[0]), ["ecc_corrected_volatile"]);
}

#[test]
fn correctable_remapped_rows_growing_are_predicted() {
    let rows = |n: u64| {
        move |g: &mut ugro_types::Gpu| g.remapped_rows.as_mut().unwrap().correctable = Some(n)
    };
    let (r0, r2) = (rows(0), rows(2));
    let s = series(&[(0, &r0), (30, &r2)]);
    let r = predicted(&s[1], &ReasonCode::RowRemapCorrectableGrowth).unwrap();
    assert_eq!(
        (r.value.clone(), r.window.as_deref()),
        (Some(2.0.into()), Some("30m"))
    );
}

#[test]
fn an_xid_storm_on_one_gpu_is_a_predicted_rate() {
    let mut sc = Scorer::new(ScoreConfig::default());
    let mut last = None;
    for i in 0..7 {
        let mut s = node(i * 8 * MIN + MIN, BOOT_A);
        s.gpu.as_mut().unwrap().devices[0].xids = vec![xid(
            92,
            BOOT_A,
            i as u64,
            i * 8 * MIN,
            "High single-bit ECC error rate",
        )];
        last = Some(sc.score_sample(&s));
    }
    let r = last.unwrap();
    let rate = predicted(&r, &ReasonCode::XidRate).unwrap();
    assert_eq!(
        (rate.value.clone(), rate.window.as_deref()),
        (Some(7.0.into()), Some("1h"))
    );
}

#[test]
fn the_state_file_is_private_versioned_and_refused_when_foreign() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let st = d.path().join("score.json");
    cron(&st, &node(0, BOOT_A));
    let mode = std::fs::metadata(&st).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&st).unwrap();
    let head: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(head["format"], state::STATE_FORMAT);
    assert_eq!(head["version"], state::STATE_VERSION);
    std::fs::write(&st, r#"{"format":"ugro-breaker","version":1,"data":{}}"#).unwrap();
    let e = Scorer::with_state(ScoreConfig::default(), Format::Json, &st).unwrap_err();
    assert_eq!(e.exit(), ugro_types::Exit::Config, "{e}");
    assert!(
        std::fs::read_to_string(&st)
            .unwrap()
            .contains("ugro-breaker"),
        "left untouched"
    );
}

#[test]
fn a_state_file_naming_a_node_no_record_could_name_is_refused_untouched() {
    let d = tempfile::tempdir().unwrap();
    let st = d.path().join("score.json");
    cron(&st, &node(0, BOOT_A));
    let text = std::fs::read_to_string(&st).unwrap();
    let node_name = &node(0, BOOT_A).node;
    let tampered = text.replace(&format!("\"{node_name}\""), "\"../../etc/passwd\"");
    assert_ne!(tampered, text, "the node's key was in the file");
    std::fs::write(&st, &tampered).unwrap();
    let e = Scorer::with_state(ScoreConfig::default(), Format::Json, &st).unwrap_err();
    assert_eq!(e.exit(), ugro_types::Exit::Config, "{e}");
    assert!(e.to_string().contains("score.json"), "names the file: {e}");
    assert_eq!(
        std::fs::read_to_string(&st).unwrap(),
        tampered,
        "left untouched"
    );
}

#[test]
fn the_state_forgets_nodes_not_seen_within_the_age() {
    let d = tempfile::tempdir().unwrap();
    let st = d.path().join("score.json");
    let mut old = node(0, BOOT_A);
    old.node = "gone-node".into();
    cron(&st, &old);
    cron(&st, &node(8 * DAY, BOOT_A));
    let sc = Scorer::with_state(ScoreConfig::default(), Format::Json, &st).unwrap();
    assert_eq!(sc.tracked_nodes(), 1);
}
