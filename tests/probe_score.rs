//! `ugro-probe --gpu-fixture F | ugro-score`: every shipped GPU fixture gives the state and
//! action its fault calls for. The probe's host, network and process sections are this
//! machine's real ones.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report

use serde_json::Value;
use ugro_e2e::{probe_fixture, records, run_tool};

fn probe_then_score(probe_args: &[&str], fixture_name: &str) -> Value {
    let state = tempfile::tempdir().unwrap();
    let probe = probe_fixture(state.path(), fixture_name, probe_args);
    let out = run_tool("ugro-score", &[], &probe);
    let mut r = records(&out.stdout);
    assert_eq!(
        r.len(),
        1,
        "score stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    r.remove(0)
}

fn codes(s: &Value) -> Vec<String> {
    s["score"]["reasons"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn check(fixture_name: &str, extra: &[&str], state: &str, action: &str, code: Option<&str>) {
    let mut args = vec!["--no-xid"];
    args.extend_from_slice(extra);
    let s = probe_then_score(&args, fixture_name);
    let sc = &s["score"];
    assert_eq!(sc["state"], state, "{fixture_name}: {sc}");
    assert_eq!(sc["action"], action, "{fixture_name}: {sc}");
    if let Some(c) = code {
        assert!(
            codes(&s).iter().any(|x| x == c),
            "{fixture_name}: no {c} in {sc}"
        );
    }
}

#[test]
fn idle_and_busy_h200_are_healthy_with_no_gpu_reason() {
    for (f, n) in [
        ("h200-idle.json", "1"),
        ("h200-busy.json", "1"),
        ("h200x8-idle.json", "8"),
        ("h200x8-busy.json", "8"),
    ] {
        let s = probe_then_score(&["--no-xid", "--expect-gpus", n], f);
        let sc = &s["score"];
        assert_eq!(sc["state"], "healthy", "{f}: {sc}");
        assert_eq!(sc["components"]["gpu"], 100.0, "{f}: {sc}");
        // The host part is this machine's (a loaded test runner may earn a check_host
        // reason); the GPUs must earn none.
        let gpu_reasons: Vec<&Value> = sc["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["component"] == "gpu")
            .collect();
        assert!(gpu_reasons.is_empty(), "{f}: {sc}");
    }
}

#[test]
fn xid_79_and_a_lost_gpu_are_critical_and_need_a_reboot() {
    // NVIDIA's catalog: XID 79 "GPU has fallen off the bus" — reboot (the shipped policy).
    check(
        "fault-xid79-gpu-lost.json",
        &["--expect-gpus", "8"],
        "critical",
        "reboot",
        Some("gpu_lost"),
    );
    check(
        "fault-gpu-lost-at-open.json",
        &["--expect-gpus", "8"],
        "critical",
        "reboot",
        Some("gpu_lost"),
    );
}

#[test]
fn replayed_kernel_log_xid_79_is_critical() {
    let d = tempfile::tempdir().unwrap();
    let uptime = ugro_e2e::uptime_s();
    let usec = (uptime * 1e6) as u64 - 1_000_000;
    let kmsg = d.path().join("kmsg");
    std::fs::write(
        &kmsg,
        format!(
            "4,9,{usec},-;NVRM: Xid (PCI:0000:5d:00): 79, pid=1234, name=python, GPU has fallen off the bus.\n"
        ),
    )
    .unwrap();
    let k = kmsg.to_string_lossy().into_owned();
    let s = probe_then_score(
        &["--kmsg-file", &k, "--expect-gpus", "8"],
        "h200x8-busy.json",
    );
    assert_eq!(s["gpu"]["devices"][3]["xids"][0]["code"], 79);
    assert_eq!(s["score"]["state"], "critical", "{}", s["score"]);
    assert_eq!(s["score"]["action"], "reboot", "{}", s["score"]);
}

#[test]
fn row_remap_failure_needs_hardware_inspection() {
    check(
        "fault-remap-failure.json",
        &["--expect-gpus", "8"],
        "critical",
        "hardware_inspection",
        Some("row_remap_failure"),
    );
}

#[test]
fn row_remap_pending_is_not_healthy_and_needs_a_reboot() {
    let s = probe_then_score(
        &["--no-xid", "--expect-gpus", "8"],
        "fault-remap-pending.json",
    );
    let sc = &s["score"];
    assert_ne!(sc["state"], "healthy", "{sc}");
    assert_ne!(sc["state"], "unknown", "{sc}");
    assert_eq!(sc["action"], "reboot", "{sc}");
    assert!(codes(&s).iter().any(|c| c == "row_remap_pending"), "{sc}");
}

#[test]
fn uncorrected_ecc_is_critical() {
    check(
        "fault-ecc-uncorrected.json",
        &["--expect-gpus", "8"],
        "critical",
        "reset_gpu",
        Some("ecc_uncorrected_volatile"),
    );
}

#[test]
fn seven_of_eight_gpus_is_critical() {
    check(
        "fault-7-of-8.json",
        &["--expect-gpus", "8"],
        "critical",
        "reboot",
        Some("gpu_missing"),
    );
}

#[test]
fn hw_slowdown_under_load_is_degraded() {
    check(
        "fault-hw-slowdown.json",
        &["--expect-gpus", "8"],
        "degraded",
        "check_host",
        Some("gpu_hw_slowdown"),
    );
}

#[test]
fn pcie_x8_under_load_is_degraded() {
    check(
        "fault-pcie-x8.json",
        &["--expect-gpus", "8"],
        "degraded",
        "hardware_inspection",
        Some("pcie_width_low"),
    );
}

#[test]
fn nvml_failure_is_critical() {
    check(
        "nvml-driver-not-loaded.json",
        &[],
        "critical",
        "reboot",
        Some("nvml_failed"),
    );
}
