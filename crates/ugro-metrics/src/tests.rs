//! Rendering tests, from the real H200 reading (ugro-score's fixture) and small samples.

use ugro_types::view::BreakerView;
use ugro_types::{
    Action, BreakerState, Component, Components, GpuScore, GpuSection, GpuStatus, HealthState,
    HostSection, Reason, ReasonCode, Sample, Score, Timestamp, Unreachable, Xid,
};

use super::*;

const BUSY: &str = include_str!("../../ugro-score/fixtures/h200-busy.jsonl");

fn busy() -> Sample {
    serde_json::from_str(BUSY.trim()).unwrap()
}

fn xid(code: u32) -> Xid {
    Xid {
        code,
        pci_bus_id: None,
        ts: None,
        message: None,
        boot_id: None,
        seq: None,
    }
}

/// The lines of `text` for metric `name` (exactly that name, with or without labels).
fn series<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .collect()
}

fn reason(code: ReasonCode, gpu: Option<u32>, points: f64, fatal: bool, action: Action) -> Reason {
    Reason {
        code,
        component: Component::Gpu,
        gpu,
        value: None,
        threshold: None,
        deduction: points,
        fatal,
        predicted: false,
        window: None,
        action,
        message: "m".into(),
    }
}

/// A node with a sample and nothing else, rendered.
fn render_node(s: &Sample, names: Names) -> String {
    let mut r = Renderer::new(names);
    r.node(&NodeView {
        node: &s.node,
        sample: Some(s),
        breaker: None,
        poll: None,
    });
    r.render()
}

fn scored(mut s: Sample) -> Sample {
    s.score = Some(Score {
        total: Some(35.0),
        state: HealthState::Critical,
        action: Action::ResetGpu,
        components: Components {
            gpu: Some(10.0),
            system: Some(100.0),
            network: None,
            process: None,
        },
        gpus: vec![GpuScore {
            index: 0,
            score: 10.0,
        }],
        reasons: vec![
            reason(
                ReasonCode::EccUncorrectedVolatile,
                Some(0),
                60.0,
                true,
                Action::ResetGpu,
            ),
            reason(ReasonCode::XidWarning, Some(0), 10.0, false, Action::None),
            reason(
                ReasonCode::XidWarning,
                Some(0),
                15.0,
                false,
                Action::RestartApp,
            ),
            Reason {
                component: Component::System,
                ..reason(ReasonCode::DiskFull, None, 20.0, false, Action::CheckHost)
            },
        ],
        summary: "s".into(),
    });
    s
}

#[test]
fn families_have_help_and_type_once_and_values_are_not_invented() {
    let mut s = Sample::new("n\"1", Timestamp(1_000));
    s.host = Some(HostSection {
        cpu_pct: None,
        memory_total_bytes: Some(10),
        ..HostSection::default()
    });
    let text = render_sample(&s, Names::Ugro);
    assert!(text.contains("# TYPE ugro_host_memory_total_bytes gauge"));
    assert!(text.contains("ugro_host_memory_total_bytes{node=\"n\\\"1\"} 10"));
    assert!(!text.contains("ugro_host_cpu_busy_percent"));
    assert_eq!(
        text.matches("# HELP ugro_probe_timestamp_seconds").count(),
        1
    );
}

fn gpu_sample(absent_xids: bool) -> Sample {
    let mut s = Sample::new("n1", Timestamp(1_000));
    let mut dev = ugro_types::Gpu::default();
    let mut sec = GpuSection {
        status: GpuStatus::Ok,
        reason: None,
        expected: None,
        found: Some(1),
        pci_devices: None,
        driver_version: None,
        cuda_version: None,
        source: None,
        devices: Vec::new(),
        unattributed_xids: Vec::new(),
        absent: Default::default(),
    };
    if absent_xids {
        dev.absent
            .insert("xids".into(), "kernel log unreadable".into());
        sec.absent
            .insert("xids".into(), "kernel log unreadable".into());
    }
    sec.devices.push(dev);
    s.gpu = Some(sec);
    s
}

#[test]
fn xid_counts_are_left_out_when_the_log_was_not_read() {
    let read = render_sample(&gpu_sample(false), Names::Dcgm);
    assert!(read.contains("ugro_gpu_xid_events{node=\"n1\",gpu=\"0\",uuid=\"\"} 0"));
    assert!(read.contains("ugro_gpu_unattributed_xid_events{node=\"n1\"} 0"));
    assert_eq!(series(&read, "DCGM_FI_DEV_XID_ERRORS").len(), 1, "{read}");
    let unread = render_sample(&gpu_sample(true), Names::Dcgm);
    for name in [
        "ugro_gpu_xid_events",
        "ugro_gpu_unattributed_xid_events",
        "DCGM_FI_DEV_XID_ERRORS",
    ] {
        assert!(series(&unread, name).is_empty(), "{name}: {unread}");
    }
    assert!(unread.contains("ugro_gpu_up{"));
}

#[test]
fn xid_counts_include_events_left_out_of_a_capped_list_and_codes_are_labels() {
    let mut s = gpu_sample(false);
    if let Some(g) = s.gpu.as_mut() {
        g.devices[0].xids = vec![xid(13), xid(13), xid(79)];
        g.devices[0].absent.insert(
            "xids_truncated".into(),
            "67 more XID events not listed".into(),
        );
        g.unattributed_xids = vec![xid(31)];
        g.absent.insert(
            "unattributed_xids_truncated".into(),
            "2 more XID events not listed".into(),
        );
    }
    let text = render_sample(&s, Names::Dcgm);
    assert!(
        text.contains("ugro_gpu_xid_events{node=\"n1\",gpu=\"0\",uuid=\"\"} 70"),
        "{text}"
    );
    assert!(text.contains("ugro_gpu_unattributed_xid_events{node=\"n1\"} 3"));
    assert!(
        text.contains("ugro_gpu_xid_code_events{node=\"n1\",gpu=\"0\",uuid=\"\",xid=\"13\"} 2")
    );
    assert!(
        text.contains("ugro_gpu_xid_code_events{node=\"n1\",gpu=\"0\",uuid=\"\",xid=\"79\"} 1")
    );
    // DCGM's gauge is the last XID, its code as a label too.
    let dcgm = series(&text, "DCGM_FI_DEV_XID_ERRORS");
    assert!(dcgm[0].ends_with(",err_code=\"79\"} 79"), "{dcgm:?}");
}

#[test]
fn volatile_and_aggregate_ecc_are_separate_families() {
    let mut s = busy();
    if let Some(ecc) = s.gpu.as_mut().and_then(|g| g.devices[0].ecc.as_mut()) {
        ecc.uncorrected_volatile = Some(2);
        ecc.uncorrected_aggregate = Some(2);
    }
    let text = render_sample(&s, Names::Ugro);
    let vol = series(&text, "ugro_gpu_ecc_volatile_errors_total");
    let agg = series(&text, "ugro_gpu_ecc_aggregate_errors_total");
    assert_eq!(vol.len(), 2, "{vol:?}");
    // The survey did not record the corrected aggregate count: no series for it.
    assert_eq!(agg.len(), 1, "{agg:?}");
    assert!(agg[0].contains("type=\"uncorrected\"") && agg[0].ends_with(" 2"));
    let sum_vol: u64 = vol
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(
        sum_vol, 2,
        "sum over the volatile family counts each error once"
    );
    assert!(!text.contains("ugro_gpu_ecc_errors_total"));
}

#[test]
fn gpu_info_carries_model_bus_driver_and_cuda() {
    let text = render_sample(&busy(), Names::Ugro);
    assert!(text.contains(
        "ugro_gpu_info{node=\"h200-vm\",gpu=\"0\",uuid=\"GPU-ae4b922a-21e0-394a-26e5-47b5e85a9cf5\",\
         name=\"NVIDIA H200\",pci_bus_id=\"00000000:00:06.0\",driver_version=\"580.159.04\",\
         cuda_version=\"13.0\"} 1"
    ), "{text}");
}

#[test]
fn dcgm_names_use_dcgm_labels_and_units() {
    let text = render_sample(&busy(), Names::Dcgm);
    let l = "{gpu=\"0\",UUID=\"GPU-ae4b922a-21e0-394a-26e5-47b5e85a9cf5\",pci_bus_id=\"00000000:00:06.0\",\
             device=\"nvidia0\",modelName=\"NVIDIA H200\",Hostname=\"h200-vm\",\
             DCGM_FI_DRIVER_VERSION=\"580.159.04\"}";
    for (name, value) in [
        ("DCGM_FI_DEV_GPU_UTIL", "99"),
        ("DCGM_FI_DEV_MEM_COPY_UTIL", "23"),
        // 1059913728 bytes = 1010.8 MiB; DCGM reports whole MiB.
        ("DCGM_FI_DEV_FB_USED", "1010"),
        (
            "DCGM_FI_DEV_FB_FREE",
            &((150754820096u64 - 1059913728) >> 20).to_string(),
        ),
        ("DCGM_FI_DEV_GPU_TEMP", "61"),
        ("DCGM_FI_DEV_POWER_USAGE", "694.355"),
        // sw_power_cap is NVML bit 0x4.
        ("DCGM_FI_DEV_CLOCKS_EVENT_REASONS", "4"),
        ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "0"),
        ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", "0"),
        ("DCGM_FI_DEV_ROW_REMAP_PENDING", "0"),
        ("DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "0"),
    ] {
        let want = format!("{name}{l} {value}");
        assert!(text.lines().any(|x| x == want), "missing {want}\n{text}");
    }
    assert!(
        series(&text, "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL").is_empty(),
        "not recorded: no series"
    );
    assert!(text.contains("# TYPE DCGM_FI_DEV_PCIE_REPLAY_COUNTER counter"));
    assert!(series(&render_sample(&busy(), Names::Ugro), "DCGM_FI_DEV_GPU_UTIL").is_empty());
}

#[test]
fn score_state_action_and_components_are_labelled_gauges() {
    let s = scored(busy());
    let text = render_node(&s, Names::Ugro);
    assert!(text.contains("ugro_node_score{node=\"h200-vm\"} 35"));
    assert!(text.contains("ugro_node_component_score{node=\"h200-vm\",component=\"gpu\"} 10"));
    assert!(
        !text.contains("component=\"network\""),
        "absent component: no series"
    );
    assert!(text.contains(
        "ugro_gpu_score{node=\"h200-vm\",gpu=\"0\",uuid=\"GPU-ae4b922a-21e0-394a-26e5-47b5e85a9cf5\"} 10"
    ));
    let states = series(&text, "ugro_node_state");
    assert_eq!(states.len(), 4);
    assert!(states.contains(&"ugro_node_state{node=\"h200-vm\",state=\"critical\"} 1"));
    assert_eq!(states.iter().filter(|l| l.ends_with(" 1")).count(), 1);
    assert!(text.contains("ugro_node_state_severity{node=\"h200-vm\"} 3"));
    let actions = series(&text, "ugro_node_action");
    assert_eq!(actions.len(), 7);
    assert!(actions.contains(&"ugro_node_action{node=\"h200-vm\",action=\"reset_gpu\"} 1"));
    assert!(text.contains("ugro_node_reachable{node=\"h200-vm\"} 1"));
    assert!(series(&text, "ugro_node_unreachable").is_empty());
}

#[test]
fn reasons_with_the_same_code_and_gpu_are_one_series() {
    let s = scored(busy());
    let text = render_node(&s, Names::Ugro);
    let reasons = series(&text, "ugro_node_reason");
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons.contains(
        &"ugro_node_reason{node=\"h200-vm\",code=\"xid_warning\",family=\"xid\",component=\"gpu\",\
          gpu=\"0\",fatal=\"false\",action=\"restart_app\"} 25"
    ), "{reasons:?}");
    assert!(reasons.contains(
        &"ugro_node_reason{node=\"h200-vm\",code=\"ecc_uncorrected_volatile\",family=\"ecc\",\
          component=\"gpu\",gpu=\"0\",fatal=\"true\",action=\"reset_gpu\"} 60"
    ));
    // A node-wide reason of no alert family: neither gpu nor family label.
    assert!(reasons.contains(
        &"ugro_node_reason{node=\"h200-vm\",code=\"disk_full\",component=\"system\",fatal=\"false\",\
          action=\"check_host\"} 20"
    ));
}

#[test]
fn an_unreachable_node_has_its_cause_and_no_score_total() {
    let mut s = Sample::new("gpu-9", Timestamp(1_000));
    s.unreachable = Some(Unreachable {
        cause: "ssh".into(),
        message: "refused".into(),
    });
    let mut sc = scored(Sample::new("x", Timestamp(0))).score.unwrap();
    sc.total = None;
    sc.state = HealthState::Unknown;
    s.score = Some(sc);
    let text = render_node(&s, Names::Dcgm);
    assert!(text.contains("ugro_node_reachable{node=\"gpu-9\"} 0"));
    assert!(text.contains("ugro_node_unreachable{node=\"gpu-9\",cause=\"ssh\"} 1"));
    assert!(series(&text, "ugro_node_score").is_empty());
    assert!(text.contains("ugro_node_state_severity{node=\"gpu-9\"} 2"));
}

#[test]
fn breaker_poll_alerts_and_watcher_series() {
    let s = busy();
    let poll = PollStats {
        last: Some(Timestamp(1_500)),
        duration: Some(std::time::Duration::from_millis(250)),
        failures: 3,
    };
    let mut r = Renderer::new(Names::Ugro);
    r.node(&NodeView {
        node: "h200-vm",
        sample: Some(&s),
        breaker: Some(BreakerView {
            state: BreakerState::Open,
            consecutive_failures: 3,
            next_trial_at: Some(Timestamp(61_000)),
        }),
        poll: Some(&poll),
    });
    let alert = FiringAlert {
        alertname: "GpuXidFatal".into(),
        severity: "critical".into(),
        node: Some("h200-vm".into()),
        gpu: Some("3".into()),
        since: Timestamp(2_000),
    };
    r.alerts([&alert]);
    r.watcher(&WatcherStats {
        nodes: Some(1000),
        polls: Some(12),
        failures: vec![("timeout".into(), 2)],
        queues: vec![QueueStats {
            name: "records".into(),
            depth: 5,
            capacity: Some(1024),
        }],
        state_unwritable: Some(false),
        delivery: vec![DeliveryStats {
            receiver: "am".into(),
            url: Some("http://127.0.0.1:9093".into()),
            queue_depth: 2,
            delivered: 7,
            ..DeliveryStats::default()
        }],
        ..WatcherStats::default()
    });
    let text = r.render();
    for want in [
        "ugro_node_breaker_state{node=\"h200-vm\",state=\"open\"} 1",
        "ugro_node_breaker_state{node=\"h200-vm\",state=\"closed\"} 0",
        "ugro_node_breaker_consecutive_failures{node=\"h200-vm\"} 3",
        "ugro_node_breaker_next_trial_timestamp_seconds{node=\"h200-vm\"} 61",
        "ugro_node_last_poll_timestamp_seconds{node=\"h200-vm\"} 1.5",
        "ugro_node_poll_duration_seconds{node=\"h200-vm\"} 0.25",
        "ugro_node_poll_failures_total{node=\"h200-vm\"} 3",
        "ugro_alert_firing{alertname=\"GpuXidFatal\",severity=\"critical\",node=\"h200-vm\",gpu=\"3\"} 1",
        "ugro_alert_firing_since_timestamp_seconds{alertname=\"GpuXidFatal\",severity=\"critical\",node=\"h200-vm\",gpu=\"3\"} 2",
        "ugro_watch_nodes 1000",
        "ugro_watch_polls_total 12",
        "ugro_watch_poll_failures_total{cause=\"timeout\"} 2",
        "ugro_watch_queue_depth{queue=\"records\"} 5",
        "ugro_watch_queue_capacity{queue=\"records\"} 1024",
        "ugro_watch_state_unwritable 0",
        "ugro_watch_delivery_queue_depth{receiver=\"am\",url=\"http://127.0.0.1:9093\"} 2",
        "ugro_watch_delivery_notifications_total{receiver=\"am\",url=\"http://127.0.0.1:9093\",outcome=\"delivered\"} 7",
        "ugro_watch_delivery_notifications_total{receiver=\"am\",url=\"http://127.0.0.1:9093\",outcome=\"dropped\"} 0",
    ] {
        assert!(text.lines().any(|l| l == want), "missing {want}\n{text}");
    }
    assert!(
        series(&text, "ugro_watch_cycle_duration_seconds").is_empty(),
        "unknown: left out"
    );
}

fn line(s: &Sample) -> String {
    serde_json::to_string(s).unwrap()
}

#[test]
fn the_table_keeps_the_latest_sample_breaker_and_firing_alerts_per_node() {
    let mut t = NodeTable::new();
    let mut a = scored(busy());
    a.node = "a".into();
    let mut b = busy();
    b.node = "b".into();
    assert!(t.ingest(&line(&a)).unwrap());
    assert!(t.ingest(&line(&b)).unwrap());
    let mut a2 = busy();
    a2.node = "a".into();
    let with_breaker = ugro_types::io::set_field(
        &line(&a2),
        "breaker",
        serde_json::json!({"state": "half_open", "consecutive_failures": 0}),
    )
    .unwrap();
    t.ingest(std::str::from_utf8(&with_breaker).unwrap())
        .unwrap();
    // A later sample without an annotation keeps the breaker state.
    t.ingest(&line(&a2)).unwrap();
    let transition = r#"{"v":1,"kind":"transition","ts":"2026-11-28T00:00:00Z","node":"b","from":"closed","to":"open","reason":"failure_threshold","consecutive_failures":3,"at":"2026-11-28T00:00:00Z","next_trial_at":"2026-11-28T00:05:00Z"}"#;
    t.ingest(transition).unwrap();
    let firing = r#"{"v":1,"kind":"alert","ts":"2026-11-28T00:00:00Z","node":"b","fingerprint":"00000000000000aa","status":"firing","labels":{"alertname":"NodeCritical","node":"b","severity":"critical"},"annotations":{},"startsAt":"2026-11-28T00:00:00Z"}"#;
    let cluster = r#"{"v":1,"kind":"alert","ts":"2026-11-28T00:00:00Z","node":"*","fingerprint":"00000000000000bb","status":"firing","labels":{"alertname":"ClusterDegraded","severity":"critical"},"annotations":{},"startsAt":"2026-11-28T00:00:00Z"}"#;
    t.ingest(firing).unwrap();
    t.ingest(cluster).unwrap();
    assert!(
        !t.ingest(r#"{"v":1,"kind":"stats","ts":"2026-11-28T00:00:00Z","node":"*","tool":"x"}"#)
            .unwrap()
    );
    let text = t.render(Names::Ugro, None);
    assert_eq!(t.len(), 2);
    assert_eq!(
        text.matches("# TYPE ugro_probe_timestamp_seconds").count(),
        1
    );
    assert_eq!(series(&text, "ugro_probe_timestamp_seconds").len(), 2);
    // a's latest sample has no score: its earlier score series are gone.
    assert!(series(&text, "ugro_node_score").is_empty(), "{text}");
    assert!(text.contains("ugro_node_breaker_state{node=\"a\",state=\"half_open\"} 1"));
    assert!(text.contains("ugro_node_breaker_state{node=\"b\",state=\"open\"} 1"));
    assert!(text.contains("ugro_node_breaker_next_trial_timestamp_seconds{node=\"b\"} 1795824300"));
    assert!(
        text.contains("ugro_alert_firing{alertname=\"ClusterDegraded\",severity=\"critical\"} 1")
    );
    assert!(text.contains(
        "ugro_alert_firing{alertname=\"NodeCritical\",severity=\"critical\",node=\"b\"} 1"
    ));
    let resolved = firing.replace("\"firing\"", "\"resolved\"");
    t.ingest(&resolved).unwrap();
    let text = t.render(Names::Ugro, None);
    assert_eq!(series(&text, "ugro_alert_firing").len(), 1, "{text}");
}

#[test]
fn a_bad_line_is_an_error_that_changes_nothing() {
    let mut t = NodeTable::new();
    let e = t.ingest(r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"a","gpu":{"status":"sideways"}}"#);
    assert!(e.unwrap_err().to_string().contains("sideways"));
    assert!(t.ingest("not json").is_err());
    assert!(t.is_empty());
}

#[test]
fn every_family_name_is_unique_and_in_the_contrib_table() {
    let mut names: Vec<&str> = CATALOG.iter().map(|m| m.name).collect();
    names.sort_unstable();
    let n = names.len();
    names.dedup();
    assert_eq!(names.len(), n, "duplicate family names");
    let readme = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../contrib/README.md"
    ))
    .expect("contrib/README.md");
    let table = catalog::markdown_table();
    assert!(
        readme.contains(&table),
        "contrib/README.md's metric table is out of date; it should read:\n\n{table}"
    );
}
