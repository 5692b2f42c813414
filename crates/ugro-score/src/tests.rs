//! Unit tests of every scoring rule and override, starting from the real H200 readings.

use std::time::Duration;

use serde_json::{Value, json};
use ugro_types::stage::{Stage, StageError};
use ugro_types::{
    Action, Component, DeviceState, Disk, Gpu, GpuStatus, HealthState, IbPort, Interface,
    NetworkSection, Peer, ProcessSection, ReasonCode, Sample, Timestamp, TrainingProcess,
    Unreachable, Xid,
};

use crate::config::ScoreConfig;
use crate::{Scorer, combine_gpus};

const IDLE: &str = include_str!("../fixtures/h200-idle.jsonl");
const BUSY: &str = include_str!("../fixtures/h200-busy.jsonl");

fn busy() -> Sample {
    serde_json::from_str(BUSY.trim()).unwrap()
}

fn idle() -> Sample {
    serde_json::from_str(IDLE.trim()).unwrap()
}

/// The busy H200 node with eight identical GPUs (indices and UUIDs made distinct).
fn eight() -> Sample {
    let mut s = busy();
    let g0 = s.gpu.as_ref().unwrap().devices[0].clone();
    let devs = s.gpu.as_mut().unwrap();
    devs.devices = (0..8)
        .map(|i| {
            let mut g = g0.clone();
            g.index = i;
            g.uuid = Some(format!("GPU-{i:08}"));
            g
        })
        .collect();
    s
}

fn gpu0(s: &mut Sample) -> &mut Gpu {
    &mut s.gpu.as_mut().unwrap().devices[0]
}

fn score(s: &Sample) -> ugro_types::Score {
    Scorer::new(ScoreConfig::default()).score_sample(s)
}

fn codes(sc: &ugro_types::Score) -> Vec<&str> {
    sc.reasons.iter().map(|r| r.code.as_str()).collect()
}

fn at(s: &mut Sample, secs: i64) {
    s.ts = Timestamp(1_800_000_000_000 + secs * 1000);
}

#[test]
fn real_h200_idle_and_busy_samples_are_healthy_with_no_deduction() {
    for s in [idle(), busy()] {
        let sc = score(&s);
        assert_eq!(sc.state, HealthState::Healthy, "{}", sc.summary);
        assert_eq!(sc.total, Some(100.0));
        assert!(sc.reasons.is_empty(), "{:?}", sc.reasons);
        assert_eq!(sc.action, Action::None);
    }
    // The busy reading: 99 % utilisation, 694 W of 700 W, SW_POWER_CAP.
    let b = busy();
    let g = &b.gpu.as_ref().unwrap().devices[0];
    assert_eq!(g.utilization_pct, Some(99));
    assert_eq!(
        g.throttle_reasons.as_deref(),
        Some(&["sw_power_cap".to_owned()][..])
    );
}

#[test]
fn sw_power_cap_on_an_idle_gpu_costs_a_little() {
    let mut s = busy();
    gpu0(&mut s).utilization_pct = Some(10);
    let sc = score(&s);
    assert_eq!(codes(&sc), ["gpu_power_capped_idle"]);
    assert_eq!(sc.components.gpu, Some(95.0));
}

#[test]
fn temperature_deduction_grows_towards_the_slowdown_temperature() {
    let mut s = busy();
    gpu0(&mut s).temperature_c = Some(76); // 11 C below the default 87: fine
    assert!(score(&s).reasons.is_empty());
    gpu0(&mut s).temperature_c = Some(82); // 5 C below: half of 40
    let sc = score(&s);
    assert_eq!(codes(&sc), ["gpu_temperature_high"]);
    assert_eq!(sc.reasons[0].deduction, 20.0);
    assert_eq!(sc.reasons[0].threshold, Some(json!(87.0)));
    gpu0(&mut s).temperature_c = Some(90);
    assert_eq!(score(&s).reasons[0].deduction, 40.0);
    // The GPU's own slowdown temperature wins over the default.
    gpu0(&mut s).temperature_c = Some(82);
    gpu0(&mut s).temperature_slowdown_c = Some(100);
    assert!(score(&s).reasons.is_empty());
}

#[test]
fn power_over_the_limit_is_a_deduction_but_at_the_limit_is_not() {
    let mut s = busy();
    gpu0(&mut s).power_w = Some(700.0);
    assert!(score(&s).reasons.is_empty());
    gpu0(&mut s).power_w = Some(760.0);
    let sc = score(&s);
    assert_eq!(codes(&sc), ["gpu_power_over_limit"]);
    assert_eq!(sc.reasons[0].gpu, Some(0));
}

#[test]
fn hardware_slowdowns_count_once_and_sw_thermal_separately() {
    let mut s = busy();
    gpu0(&mut s).throttle_reasons = Some(
        [
            "hw_slowdown",
            "hw_thermal_slowdown",
            "sw_power_cap",
            "gpu_idle",
        ]
        .map(String::from)
        .to_vec(),
    );
    let sc = score(&s);
    assert_eq!(codes(&sc), ["gpu_hw_slowdown"]);
    assert_eq!(sc.components.gpu, Some(60.0));
    // One GPU below the degraded line degrades the node although the total is above it.
    assert_eq!(sc.state, HealthState::Degraded);
    assert!(sc.total.unwrap() >= 70.0, "{:?}", sc.total);
    gpu0(&mut s).throttle_reasons = Some(vec!["hw_power_brake_slowdown".into()]);
    assert_eq!(codes(&score(&s)), ["gpu_hw_slowdown"]);
    gpu0(&mut s).throttle_reasons = Some(vec!["sw_thermal_slowdown".into()]);
    assert_eq!(codes(&score(&s)), ["gpu_sw_thermal_slowdown"]);
}

#[test]
fn uncorrected_volatile_ecc_is_a_hard_fail() {
    let mut s = eight();
    s.gpu.as_mut().unwrap().devices[5]
        .ecc
        .as_mut()
        .unwrap()
        .uncorrected_volatile = Some(2);
    let sc = score(&s);
    assert_eq!(sc.state, HealthState::Critical);
    assert_eq!(sc.reasons[0].code, ReasonCode::EccUncorrectedVolatile);
    assert!(sc.reasons[0].fatal);
    assert_eq!(sc.reasons[0].gpu, Some(5));
    assert_eq!(sc.action, Action::ResetGpu);
}

#[test]
fn uncorrected_aggregate_ecc_alone_is_a_small_deduction() {
    let mut s = busy();
    gpu0(&mut s).ecc.as_mut().unwrap().uncorrected_aggregate = Some(1);
    let sc = score(&s);
    assert_eq!(codes(&sc), ["ecc_uncorrected_aggregate"]);
    assert_eq!(sc.state, HealthState::Healthy);
}

#[test]
fn row_remap_pending_wants_a_reboot_and_degrades() {
    let mut s = busy();
    gpu0(&mut s).remapped_rows.as_mut().unwrap().pending = Some(true);
    let sc = score(&s);
    assert_eq!(codes(&sc), ["row_remap_pending"]);
    assert_eq!(sc.action, Action::Reboot);
    assert_eq!(sc.components.gpu, Some(30.0));
    assert_eq!(sc.state, HealthState::Degraded);
}

#[test]
fn one_gpu_below_the_critical_threshold_degrades_an_eight_gpu_node() {
    let mut s = eight();
    s.gpu.as_mut().unwrap().devices[2]
        .remapped_rows
        .as_mut()
        .unwrap()
        .pending = Some(true);
    s.network = Some(NetworkSection::default());
    s.processes = Some(ProcessSection::default());
    let sc = score(&s);
    assert_eq!(sc.gpus[2].score, 30.0);
    assert!(sc.components.gpu.unwrap() > 40.0);
    assert!(sc.total.unwrap() >= 70.0);
    assert_eq!(sc.state, HealthState::Degraded, "{}", sc.summary);
}

#[test]
fn row_remap_failure_is_a_hard_fail_for_hardware_inspection() {
    let mut s = busy();
    gpu0(&mut s).remapped_rows.as_mut().unwrap().failure = Some(true);
    let sc = score(&s);
    assert_eq!(sc.state, HealthState::Critical);
    assert_eq!(sc.action, Action::HardwareInspection);
    assert!(sc.reasons[0].fatal);
}

#[test]
fn pcie_link_below_max_counts_only_while_busy() {
    let mut s = busy();
    {
        let p = gpu0(&mut s).pcie.as_mut().unwrap();
        p.generation = Some(4);
        p.width = Some(8);
    }
    let sc = score(&s);
    let mut c = codes(&sc);
    c.sort_unstable();
    assert_eq!(c, ["pcie_gen_low", "pcie_width_low"]);
    // An idle GPU drops its link speed to save power: not a fault.
    gpu0(&mut s).utilization_pct = Some(0);
    gpu0(&mut s).throttle_reasons = Some(vec!["gpu_idle".into()]);
    assert!(score(&s).reasons.is_empty());
}

#[test]
fn replay_counter_growth_needs_a_previous_sample_of_the_same_gpu() {
    let mut sc = Scorer::new(ScoreConfig::default());
    let mut s = busy();
    at(&mut s, 0);
    gpu0(&mut s).pcie.as_mut().unwrap().replay_counter = Some(50);
    assert!(
        sc.score_sample(&s).reasons.is_empty(),
        "first sight is free"
    );
    at(&mut s, 60);
    gpu0(&mut s).pcie.as_mut().unwrap().replay_counter = Some(55);
    let r = sc.score_sample(&s);
    assert_eq!(codes(&r), ["pcie_replay_growth"]);
    assert_eq!(r.reasons[0].value, Some(json!(5)));
    assert_eq!(r.action, Action::CheckHost);
    at(&mut s, 120);
    gpu0(&mut s).pcie.as_mut().unwrap().replay_counter = Some(500);
    let r = sc.score_sample(&s);
    assert_eq!(r.action, Action::HardwareInspection, "high growth");
    // Driver reload: the counter restarts; a new baseline, no growth.
    at(&mut s, 180);
    gpu0(&mut s).pcie.as_mut().unwrap().replay_counter = Some(0);
    assert!(sc.score_sample(&s).reasons.is_empty());
    // An older sample arriving late is not compared with newer history.
    at(&mut s, 10);
    gpu0(&mut s).pcie.as_mut().unwrap().replay_counter = Some(40);
    assert!(sc.score_sample(&s).reasons.is_empty());
    // Another node with the same GPU UUID has its own history.
    let mut other = s.clone();
    other.node = "other".into();
    at(&mut other, 240);
    assert!(sc.score_sample(&other).reasons.is_empty());
}

fn xid(code: u32, ts: Option<Timestamp>) -> Xid {
    Xid {
        code,
        pci_bus_id: Some("00000000:00:06.0".into()),
        ts,
        message: None,
        boot_id: None,
        seq: None,
    }
}

#[test]
fn fatal_xids_of_the_catalog_force_critical() {
    for code in [46, 48, 62, 74, 79, 95, 109, 119, 120, 140, 143] {
        let mut s = busy();
        gpu0(&mut s).xids = vec![xid(code, None)];
        let sc = score(&s);
        assert_eq!(sc.state, HealthState::Critical, "xid {code}");
        assert_eq!(sc.reasons[0].code, ReasonCode::XidFatal);
        assert_eq!(sc.reasons[0].value, Some(json!(code)));
        assert!(sc.gpus[0].score == 0.0);
    }
}

#[test]
fn xids_63_and_64_defer_to_the_remapped_rows_on_gpus_that_report_them() {
    for code in [63, 64] {
        let mut s = busy();
        assert!(
            gpu0(&mut s).remapped_rows.is_some(),
            "the H200 reports row remapping"
        );
        gpu0(&mut s).xids = vec![xid(code, None)];
        let sc = score(&s);
        assert!(sc.reasons.is_empty(), "xid {code}: {:?}", codes(&sc));
        // A GPU without row remapping (page retirement): the XID itself decides.
        gpu0(&mut s).remapped_rows = None;
        let sc = score(&s);
        assert_eq!(sc.action, Action::ResetGpu, "xid {code}");
        let want = if code == 64 {
            HealthState::Critical
        } else {
            HealthState::Healthy
        };
        assert_eq!(sc.state, want, "xid {code}");
    }
}

#[test]
fn application_xids_recommend_a_restart_and_cost_little() {
    for code in [13, 31, 45] {
        let mut s = busy();
        gpu0(&mut s).xids = vec![xid(code, None), xid(code, None)];
        let sc = score(&s);
        assert_eq!(codes(&sc), ["xid_application"], "one reason per code");
        assert_eq!(sc.action, Action::RestartApp);
        assert_eq!(sc.state, HealthState::Healthy);
        assert!(sc.reasons[0].message.contains("2 events"));
    }
}

#[test]
fn unknown_and_unattributed_xids_still_count() {
    let mut s = busy();
    gpu0(&mut s).xids = vec![xid(4242, None)];
    s.gpu.as_mut().unwrap().unattributed_xids = vec![xid(79, None)];
    let sc = score(&s);
    assert_eq!(sc.state, HealthState::Critical);
    let unattributed = sc
        .reasons
        .iter()
        .find(|r| r.value == Some(json!(79)))
        .unwrap();
    assert_eq!(unattributed.gpu, None);
    let unknown = sc
        .reasons
        .iter()
        .find(|r| r.value == Some(json!(4242)))
        .unwrap();
    assert!(unknown.message.contains("not in the policy"));
    assert_eq!(unknown.code, ReasonCode::XidWarning);
}

#[test]
fn xid_94_three_times_in_ten_minutes_escalates_to_fatal() {
    let mut sc = Scorer::new(ScoreConfig::default());
    let mut s = busy();
    let t0 = Timestamp(1_800_000_000_000);
    let ev = |m: i64| xid(94, Some(Timestamp(t0.0 + m * 60_000)));
    // The probe's lookback repeats the same event in the next sample: counted once.
    s.ts = Timestamp(t0.0 + 60_000);
    gpu0(&mut s).xids = vec![ev(0)];
    assert_eq!(sc.score_sample(&s).state, HealthState::Healthy);
    s.ts = Timestamp(t0.0 + 120_000);
    gpu0(&mut s).xids = vec![ev(0), ev(2)];
    let r = sc.score_sample(&s);
    assert_ne!(r.state, HealthState::Critical, "two events: {}", r.summary);
    s.ts = Timestamp(t0.0 + 300_000);
    gpu0(&mut s).xids = vec![ev(2), ev(5)];
    let r = sc.score_sample(&s);
    assert_eq!(r.state, HealthState::Critical, "{}", r.summary);
    assert_eq!(r.reasons[0].code, ReasonCode::XidFatal);
    assert_eq!(r.action, Action::ResetGpu);
    assert!(
        r.reasons[0].message.contains("3 times in 10m"),
        "{}",
        r.reasons[0].message
    );
    // Twenty minutes later the old events have left the window.
    s.ts = Timestamp(t0.0 + 25 * 60_000);
    gpu0(&mut s).xids = vec![ev(25)];
    assert_ne!(sc.score_sample(&s).state, HealthState::Critical);
}

#[test]
fn an_untimed_xid_repeated_in_every_sample_is_one_event_not_an_escalation() {
    let mut sc = Scorer::new(ScoreConfig::default());
    let mut s = busy();
    for m in 0..5 {
        s.ts = Timestamp(1_800_000_000_000 + m * 60_000);
        // A replayed log line without a kernel time, as the probe re-sends it each sample.
        gpu0(&mut s).xids = vec![xid(94, None)];
        let r = sc.score_sample(&s);
        assert_ne!(r.state, HealthState::Critical, "sample {m}: {}", r.summary);
    }
    // Three distinct untimed lines in one sample are three events.
    gpu0(&mut s).xids = vec![xid(94, None), xid(94, None), xid(94, None)];
    assert_eq!(sc.score_sample(&s).state, HealthState::Critical);
}

#[test]
fn sections_present_but_without_readings_are_missing_data_not_healthy() {
    let mut s = busy();
    s.host = Some(ugro_types::HostSection::default());
    let r = score(&s);
    assert_eq!(r.state, HealthState::Unknown, "{}", r.summary);
    assert!(codes(&r).contains(&"host_data_missing"), "{:?}", codes(&r));

    let mut s = busy();
    for d in &mut s.gpu.as_mut().unwrap().devices {
        *d = ugro_types::Gpu {
            index: d.index,
            uuid: d.uuid.clone(),
            ..Default::default()
        };
    }
    let r = score(&s);
    assert_eq!(r.state, HealthState::Unknown, "{}", r.summary);
    assert!(codes(&r).contains(&"gpu_no_readings"), "{:?}", codes(&r));
}

#[test]
fn site_policy_can_make_an_application_xid_fatal() {
    let mut cfg = ScoreConfig::default();
    cfg.policy = crate::XidPolicy::with_site(
        std::path::Path::new("site.yaml"),
        "xids:\n  13: {severity: fatal, action: reset_gpu}\n",
    )
    .unwrap();
    let mut s = busy();
    gpu0(&mut s).xids = vec![xid(13, None)];
    let sc = Scorer::new(cfg).score_sample(&s);
    assert_eq!(sc.state, HealthState::Critical);
}

#[test]
fn a_lost_gpu_or_an_unreadable_one_is_a_hard_fail() {
    for (state, code, action) in [
        (DeviceState::Lost, ReasonCode::GpuLost, Action::Reboot),
        (DeviceState::Error, ReasonCode::GpuError, Action::ResetGpu),
    ] {
        let mut s = eight();
        let g = &mut s.gpu.as_mut().unwrap().devices[3];
        *g = Gpu {
            index: 3,
            state,
            ..Gpu::default()
        };
        let sc = score(&s);
        assert_eq!(sc.state, HealthState::Critical);
        assert_eq!(sc.reasons[0].code, code);
        assert_eq!(sc.reasons[0].gpu, Some(3));
        assert_eq!(sc.action, action);
    }
}

#[test]
fn fewer_gpus_than_expected_and_nvml_failure_are_hard_fails() {
    let mut s = eight();
    {
        let g = s.gpu.as_mut().unwrap();
        g.status = GpuStatus::Missing;
        g.expected = Some(8);
        g.found = Some(7);
        g.devices.pop();
    }
    let sc = score(&s);
    assert_eq!(sc.state, HealthState::Critical);
    assert_eq!(sc.reasons[0].code, ReasonCode::GpuMissing);
    assert_eq!(sc.reasons[0].value, Some(json!(7)));
    assert_eq!(sc.reasons[0].threshold, Some(json!(8)));
    assert!(
        sc.components.gpu.unwrap() < 20.0,
        "the missing GPU counts as 0"
    );

    let mut s = busy();
    {
        let g = s.gpu.as_mut().unwrap();
        g.status = GpuStatus::Failed;
        g.reason = Some("Driver/library version mismatch".into());
        g.devices.clear();
    }
    let sc = score(&s);
    assert_eq!(sc.state, HealthState::Critical);
    assert_eq!(sc.reasons[0].code, ReasonCode::NvmlFailed);
}

#[test]
fn one_broken_gpu_of_eight_is_not_87_percent_healthy() {
    let c = combine_gpus(&[0.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0, 100.0], 0.8).unwrap();
    assert!((c - 17.5).abs() < 1e-9, "{c}");
    let mut s = eight();
    {
        let g = &mut s.gpu.as_mut().unwrap().devices[6];
        g.remapped_rows.as_mut().unwrap().pending = Some(true);
        g.throttle_reasons = Some(vec!["hw_slowdown".into()]);
    }
    let sc = score(&s);
    assert_eq!(sc.gpus[6].score, 0.0);
    assert_eq!(sc.gpus[0].score, 100.0);
    assert_eq!(sc.components.gpu, Some(17.5));
    assert_ne!(sc.state, HealthState::Healthy, "{}", sc.summary);
}

#[test]
fn unreachable_node_is_unknown_with_check_network() {
    let mut s = Sample::new("gpu-07", Timestamp(0));
    s.unreachable = Some(Unreachable {
        cause: "ssh".into(),
        message: "connection timed out".into(),
    });
    let sc = score(&s);
    assert_eq!(sc.state, HealthState::Unknown);
    assert_eq!(sc.total, None);
    assert_eq!(codes(&sc), ["node_unreachable"]);
    assert_eq!(sc.action, Action::CheckNetwork);
}

#[test]
fn missing_required_sections_give_unknown_never_healthy() {
    let mut s = busy();
    s.host = None;
    let sc = score(&s);
    assert_eq!(sc.state, HealthState::Unknown);
    assert_eq!(sc.total, None);
    assert_eq!(codes(&sc), ["host_data_missing"]);

    let mut s = busy();
    s.gpu = None;
    assert_eq!(score(&s).state, HealthState::Unknown);

    let mut s = busy();
    {
        let g = s.gpu.as_mut().unwrap();
        g.status = GpuStatus::Absent;
        g.reason = Some("libnvidia-ml.so.1: cannot open shared object file".into());
        g.devices.clear();
    }
    let sc = score(&s);
    assert_eq!(sc.state, HealthState::Unknown);
    assert_eq!(codes(&sc), ["gpu_absent"]);

    // A CPU-only site says so, and the node is scored on what it has.
    let mut cfg = ScoreConfig::default();
    cfg.require.gpu = false;
    let sc = Scorer::new(cfg).score_sample(&s);
    assert_eq!(sc.state, HealthState::Healthy);
    assert_eq!(sc.components.gpu, None);

    let empty = Sample::new("n", Timestamp(0));
    assert_eq!(score(&empty).state, HealthState::Unknown);
}

#[test]
fn a_hard_fail_wins_over_missing_data() {
    let mut s = busy();
    s.host = None;
    gpu0(&mut s).xids = vec![xid(79, None)];
    assert_eq!(score(&s).state, HealthState::Critical);
}

#[test]
fn optional_sections_missing_leave_the_total_over_the_remaining_weights() {
    let mut s = busy();
    s.host.as_mut().unwrap().disks[0].used_bytes = 99;
    s.host.as_mut().unwrap().disks[0].available_bytes = 1;
    let sc = score(&s);
    // gpu 100 (0.4), system 60 (0.3), no network, no processes: (40 + 18) / 0.7
    assert_eq!(sc.components.system, Some(60.0));
    assert_eq!(sc.total, Some(82.9));
    // A failed optional collector is visible as a reason without a deduction.
    let mut s = busy();
    s.errors.push(ugro_types::CollectorError {
        collector: "network".into(),
        error: "timed out".into(),
        duration_ms: 2000.0,
        timed_out: true,
    });
    let sc = score(&s);
    assert_eq!(codes(&sc), ["network_data_missing"]);
    assert_eq!(sc.state, HealthState::Healthy);
}

#[test]
fn total_is_the_weighted_sum_of_the_components() {
    let mut s = busy();
    s.network = Some(NetworkSection {
        peers: vec![Peer {
            target: "10.0.0.2:22".into(),
            reachable: false,
            latency_ms: None,
            error: Some("refused".into()),
        }],
        ..NetworkSection::default()
    });
    s.processes = Some(ProcessSection {
        zombies: Some(25),
        ..ProcessSection::default()
    });
    let sc = score(&s);
    assert_eq!(sc.components.network, Some(70.0));
    assert_eq!(sc.components.process, Some(95.0));
    // 0.4*100 + 0.3*100 + 0.2*70 + 0.1*95
    assert_eq!(sc.total, Some(93.5));
    let mut cfg = ScoreConfig::default();
    cfg.weights = crate::Weights {
        gpu: 0.0,
        system: 0.0,
        network: 1.0,
        process: 0.0,
    };
    assert_eq!(Scorer::new(cfg).score_sample(&s).total, Some(70.0));
}

#[test]
fn system_rules_memory_swap_disks_inodes_load_cpu() {
    let mut s = busy();
    {
        let h = s.host.as_mut().unwrap();
        h.cpu_pct = Some(99.5);
        h.memory_total_bytes = Some(1000);
        h.memory_available_bytes = Some(20); // 2 %: critical
        h.swap_total_bytes = Some(100);
        h.swap_used_bytes = Some(80);
        h.load = Some([100.0, 70.0, 10.0]); // 5-min 70 / 16 CPUs = 4.4: critical
        h.disks.push(Disk {
            mount: "/snap/core/1".into(),
            fstype: Some("squashfs".into()),
            total_bytes: 10,
            used_bytes: 10,
            available_bytes: 0,
            inodes_used_pct: Some(100.0),
        });
        h.disks.push(Disk {
            mount: "/data".into(),
            fstype: Some("ext4".into()),
            total_bytes: 1000,
            used_bytes: 920,
            available_bytes: 80,
            inodes_used_pct: Some(98.0),
        });
    }
    let sc = score(&s);
    let mut c = codes(&sc);
    c.sort_unstable();
    assert_eq!(
        c,
        [
            "cpu_saturated",
            "disk_full",
            "inodes_full",
            "load_high",
            "memory_low",
            "swap_used"
        ]
    );
    assert!(sc.reasons.iter().all(|r| r.component == Component::System));
    assert!(!sc.reasons.iter().any(|r| r.message.contains("/snap")));
    assert_eq!(sc.components.system, Some(0.0));
    assert_eq!(sc.state, HealthState::Degraded, "{}", sc.summary);
}

fn iface(name: &str, oper: &str, carrier: Option<bool>) -> Interface {
    Interface {
        name: name.into(),
        oper_state: oper.into(),
        carrier,
        speed_mbps: None,
    }
}

fn ib(dev: &str, state: &str, phys: &str) -> IbPort {
    IbPort {
        device: dev.into(),
        port: 1,
        state: state.into(),
        phys_state: phys.into(),
        rate_gbps: Some(400.0),
    }
}

#[test]
fn network_rules_links_infiniband_and_peers() {
    let mut s = busy();
    s.network = Some(NetworkSection {
        interfaces: vec![
            iface("eth0", "up", Some(true)),
            iface("eth1", "down", Some(false)), // cable out: counts
            iface("eth2", "down", None),        // administratively down: ignored
            iface("ifb0", "down", Some(false)), // ignored by name
        ],
        infiniband: vec![
            ib("mlx5_0", "4: ACTIVE", "5: LinkUp"),
            ib("mlx5_1", "1: DOWN", "2: Polling"),
            ib("mlx5_2", "1: DOWN", "3: Disabled"),
        ],
        peers: vec![
            Peer {
                target: "10.0.0.2:22".into(),
                reachable: true,
                latency_ms: Some(0.4),
                error: None,
            },
            Peer {
                target: "10.0.0.3:22".into(),
                reachable: true,
                latency_ms: Some(45.0),
                error: None,
            },
        ],
        absent: Default::default(),
    });
    let sc = score(&s);
    let mut c = codes(&sc);
    c.sort_unstable();
    assert_eq!(c, ["ib_port_down", "interface_down", "peer_latency_high"]);
    assert_eq!(sc.components.network, Some(40.0));
    assert_eq!(sc.action, Action::CheckNetwork);

    let mut cfg = ScoreConfig::default();
    cfg.network.required_interfaces = vec!["eth2".into(), "ib9".into()];
    let sc = Scorer::new(cfg).score_sample(&s);
    let mut c = codes(&sc);
    c.sort_unstable();
    assert_eq!(
        c,
        [
            "ib_port_down",
            "interface_down",
            "interface_down",
            "interface_missing",
            "peer_latency_high"
        ]
    );
}

#[test]
fn process_rules_zombies_d_state_and_stuck_training() {
    let mut s = busy();
    let t = |pid, state: &str| TrainingProcess {
        pid,
        command: "python train.py".into(),
        state: Some(state.into()),
        gpu_memory_bytes: None,
        gpus: vec![0],
        matched_by: "nvml".into(),
    };
    s.processes = Some(ProcessSection {
        total: Some(300),
        zombies: Some(3),
        d_state: Some(9),
        training: vec![t(10, "R"), t(11, "D"), t(12, "Z")],
        absent: Default::default(),
    });
    let sc = score(&s);
    let mut c = codes(&sc);
    c.sort_unstable();
    assert_eq!(
        c,
        [
            "d_state_processes",
            "training_process_d_state",
            "training_process_zombie"
        ]
    );
    assert_eq!(sc.components.process, Some(45.0));
    assert_eq!(sc.action, Action::RestartApp);
}

#[test]
fn action_is_the_most_drastic_and_the_summary_leads_with_it() {
    let mut s = busy();
    gpu0(&mut s).power_w = Some(800.0);
    gpu0(&mut s).xids = vec![xid(79, None)];
    let sc = score(&s);
    assert_eq!(sc.action, Action::Reboot);
    assert!(sc.reasons[0].fatal);
    assert!(sc.summary.starts_with("critical"), "{}", sc.summary);
    assert!(sc.summary.contains("XID 79"), "{}", sc.summary);
    assert!(sc.summary.contains("(+1 more)"), "{}", sc.summary);
}

#[test]
fn state_thresholds_are_configurable() {
    let mut s = busy();
    gpu0(&mut s).throttle_reasons = Some(vec!["sw_thermal_slowdown".into()]);
    let mut cfg = ScoreConfig::default();
    cfg.thresholds.degraded = 95.0;
    // gpu 90 → total (36 + 30) / 0.7 = 94.3
    let sc = Scorer::new(cfg).score_sample(&s);
    assert_eq!(sc.state, HealthState::Degraded);
    assert_eq!(score(&s).state, HealthState::Healthy);
}

#[test]
fn history_is_bounded() {
    let mut cfg = ScoreConfig::default();
    cfg.max_tracked_nodes = 20;
    let mut sc = Scorer::new(cfg);
    for i in 0..100 {
        let mut s = busy();
        s.node = format!("n{i}");
        at(&mut s, i);
        sc.score_sample(&s);
    }
    assert!(sc.tracked_nodes() <= 20, "{}", sc.tracked_nodes());
}

fn run_stage(scorer: &mut Scorer, line: &str) -> Result<Vec<Value>, StageError> {
    let mut out = Vec::new();
    let mut emit = |r: &[u8]| {
        out.push(serde_json::from_slice::<Value>(r).unwrap());
        Ok(())
    };
    scorer.process(line, &mut emit)?;
    Ok(out)
}

#[test]
fn stage_adds_score_keeps_unknown_fields_and_passes_other_kinds() {
    let mut sc = Scorer::new(ScoreConfig::default());
    let mut v: Value = serde_json::from_str(BUSY.trim()).unwrap();
    v["site"] = json!({"rack": "r7", "tags": [1, 2]});
    let out = run_stage(&mut sc, &v.to_string()).unwrap();
    assert_eq!(out[0]["site"], json!({"rack": "r7", "tags": [1, 2]}));
    assert_eq!(out[0]["score"]["state"], "healthy");
    assert_eq!(out[0]["gpu"], v["gpu"]);

    // An old score is replaced, not duplicated.
    let mut again = out[0].clone();
    again["score"]["state"] = json!("critical");
    let out = run_stage(&mut sc, &again.to_string()).unwrap();
    assert_eq!(out[0]["score"]["state"], "healthy");
    let mut nulled = v.clone();
    nulled["score"] = Value::Null;
    let text = serde_json::to_string(&nulled).unwrap();
    let out = run_stage(&mut sc, &text).unwrap();
    assert_eq!(out[0]["score"]["state"], "healthy");

    let mut foreign = v.clone();
    foreign["score"] = json!({"mine": true});
    let out = run_stage(&mut sc, &foreign.to_string()).unwrap();
    assert_eq!(out[0]["score"]["state"], "healthy");
    assert!(out[0]["score"].get("mine").is_none());

    let tr =
        json!({"v":1,"kind":"transition","ts":"2026-11-28T00:00:00Z","node":"n","gpu":7,"x":1});
    let out = run_stage(&mut sc, &tr.to_string()).unwrap();
    assert_eq!(out, [tr]);
    let custom = json!({"v":1,"kind":"custom","ts":"2026-11-28T00:00:00Z","node":"n"});
    assert_eq!(run_stage(&mut sc, &custom.to_string()).unwrap(), [custom]);
}

#[test]
fn stage_rejects_broken_lines() {
    let mut sc = Scorer::new(ScoreConfig::default());
    for bad in [
        "not json",
        r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n","gpu":{"status":"sideways"}}"#,
        r#"{"v":7,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n"}"#,
        r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"-rf"}"#,
        r#"{"v":1,"kind":"transition","ts":"yesterday","node":"n"}"#,
        "[1,2]",
    ] {
        assert!(
            matches!(run_stage(&mut sc, bad), Err(StageError::Reject(_))),
            "{bad} accepted"
        );
    }
}

#[test]
fn escalation_windows_parse_as_durations() {
    let p = crate::XidPolicy::shipped().unwrap();
    assert_eq!(p.longest_window(), Duration::from_secs(7 * 86_400));
}

#[test]
fn scorer_can_run_inside_a_chain_on_another_thread() {
    fn send<T: Send>() {}
    send::<Scorer>();
}
