//! The probe binary on this machine, with fixtures and replayed kernel logs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use assert_cmd::cargo::CommandCargoExt;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// A probe command with its CPU state kept in a private directory.
fn probe(state: &Path) -> Command {
    let mut c = Command::cargo_bin("ugro-probe").unwrap();
    c.arg("--cpu-state-file").arg(state.join("cpu.json"));
    c.env_remove("UGRO_PROBE_CONFIG");
    c
}

fn records(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn one(c: &mut Command) -> Value {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "status {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut r = records(&out.stdout);
    assert_eq!(r.len(), 1, "{r:?}");
    r.remove(0)
}

#[test]
fn real_probe_fills_host_network_and_processes_and_exits_zero_without_gpus() {
    let d = tempfile::tempdir().unwrap();
    let s = one(probe(d.path()).args(["--node", "test-node"]));
    assert_eq!(s["kind"], "sample");
    assert_eq!(s["node"], "test-node");
    let h = &s["host"];
    assert!(h["memory_total_bytes"].as_u64().unwrap() > 0);
    assert!(h["cpus"].as_u64().unwrap() >= 1);
    assert_eq!(h["load"].as_array().unwrap().len(), 3);
    assert!(h["uptime_s"].is_u64());
    assert!(
        h["disks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["mount"] == "/"),
        "{h}"
    );
    assert!(s["network"]["interfaces"].is_array());
    assert!(s["processes"]["total"].as_u64().unwrap() > 1);
    assert!(s["processes"]["zombies"].is_u64());
    // No NVIDIA driver on the test machine: absent with the loader's message. On a GPU
    // machine NVML answers instead.
    let g = &s["gpu"];
    match g["status"].as_str().unwrap() {
        "absent" => assert!(
            g["reason"].as_str().unwrap().contains("libnvidia-ml"),
            "{g}"
        ),
        "ok" => assert!(!g["devices"].as_array().unwrap().is_empty()),
        other => panic!("unexpected gpu status {other}: {g}"),
    }
    let names: Vec<&str> = s["collectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for n in ["gpu", "host", "disks", "network", "processes"] {
        assert!(names.contains(&n), "{names:?}");
    }
}

#[test]
fn fixture_replays_real_h200_readings_through_the_conversion() {
    let d = tempfile::tempdir().unwrap();
    let s = one(probe(d.path())
        .arg("--gpu-fixture")
        .arg(fixture("h200-busy.json"))
        .arg("--no-xid"));
    let g = &s["gpu"];
    assert_eq!(g["status"], "ok");
    assert_eq!(g["driver_version"], "580.159.04");
    assert_eq!(g["cuda_version"], "13.0");
    let dev = &g["devices"][0];
    assert_eq!(dev["name"], "NVIDIA H200");
    assert_eq!(dev["pci_bus_id"], "00000000:00:06.0");
    assert_eq!(dev["utilization_pct"], 99);
    assert_eq!(dev["power_w"], 694.355);
    assert_eq!(dev["power_limit_w"], 700.0);
    assert_eq!(dev["throttle_reasons"], serde_json::json!(["sw_power_cap"]));
    assert_eq!(dev["remapped_rows"]["pending"], false);
    assert_eq!(dev["pcie"]["width"], 16);
    assert_eq!(dev["processes"][0]["pid"], 482);
    // The survey did not record these: absent with a reason, not 0.
    assert!(dev.get("temperature_slowdown_c").is_none());
    assert_eq!(dev["absent"]["temperature_slowdown_c"], "not recorded");
    // NVML's compute process shows up among training processes.
    let t = s["processes"]["training"].as_array().unwrap();
    assert!(
        t.iter()
            .any(|p| p["pid"] == 482 && p["matched_by"] == "nvml"),
        "{t:?}"
    );
}

#[test]
fn seven_of_eight_gpus_is_missing_with_expect_gpus() {
    let d = tempfile::tempdir().unwrap();
    let s = one(probe(d.path())
        .arg("--gpu-fixture")
        .arg(fixture("fault-7-of-8.json"))
        .args(["--no-xid", "--expect-gpus", "8"]));
    assert_eq!(s["gpu"]["status"], "missing");
    assert_eq!(s["gpu"]["found"], 7);
    assert_eq!(s["gpu"]["expected"], 8);
}

#[test]
fn an_unreadable_kernel_log_says_why_xids_are_absent_and_the_gpus_are_still_reported() {
    let d = tempfile::tempdir().unwrap();
    // A directory cannot be read as a log. (Permission denied, dmesg_restrict without
    // CAP_SYSLOG, is the same minus the `errors` entry: it is how the probe runs, not a fault.)
    let s = one(probe(d.path())
        .arg("--gpu-fixture")
        .arg(fixture("h200x8-busy.json"))
        .arg("--kmsg-file")
        .arg(d.path()));
    let why = s["gpu"]["absent"]["xids"].as_str().unwrap();
    assert!(why.starts_with("kernel log unreadable"), "{why}");
    for dev in s["gpu"]["devices"].as_array().unwrap() {
        assert_eq!(dev["absent"]["xids"], why);
    }
    assert_eq!(s["gpu"]["status"], "ok");
    assert_eq!(s["gpu"]["devices"].as_array().unwrap().len(), 8);
    assert_eq!(s["errors"][0]["collector"], "xid", "{}", s["errors"]);
    assert!(s["host"].is_object());
}

#[test]
fn kmsg_replay_attaches_real_format_xids_by_bus_id_within_the_lookback() {
    let d = tempfile::tempdir().unwrap();
    let uptime = ugro_e2e::uptime_s();
    if uptime < 30.0 {
        println!("skipped: machine booted {uptime}s ago, too recently for a lookback test");
        return;
    }
    let now_us = (uptime * 1e6) as u64;
    let kmsg = d.path().join("kmsg");
    std::fs::write(
        &kmsg,
        format!(
            "6,100,1000000,-;NVRM: loading NVIDIA UNIX x86_64 Kernel Module  580.159.04\n\
             4,101,2000000,-;NVRM: Xid (PCI:0000:2a:00): 48, pid=1, name=old, DBE (double bit error)\n\
             4,102,{},-;NVRM: Xid (PCI:0000:5d:00): 79, pid=1234, name=python, GPU has fallen off the bus.\n\
             \x20SUBSYSTEM=pci\n\
             4,103,{},-;NVRM: Xid (0000:ab:00): 13, Graphics SM Warp Exception\n\
             4,104,{},-;NVRM: Xid (PCI:0000:ee:00): 94, pid=9, Contained ECC error\n",
            now_us - 2_000_000,
            now_us - 1_000_000,
            now_us - 500_000
        ),
    )
    .unwrap();
    let s = one(probe(d.path())
        .arg("--gpu-fixture")
        .arg(fixture("h200x8-idle.json"))
        .arg("--kmsg-file")
        .arg(&kmsg)
        .args(["--xid-lookback", "20s"]));
    let devs = s["gpu"]["devices"].as_array().unwrap();
    // 0000:5d:00 is GPU 3 and 0000:ab:00 GPU 5 in the 8-GPU fixture.
    assert_eq!(devs[3]["xids"][0]["code"], 79);
    assert_eq!(devs[3]["xids"][0]["pci_bus_id"], "PCI:0000:5d:00");
    assert!(
        devs[3]["xids"][0]["message"]
            .as_str()
            .unwrap()
            .contains("fallen off the bus")
    );
    assert_eq!(devs[5]["xids"][0]["code"], 13);
    // XID 48 at 2 s after boot is outside the 20 s window.
    assert!(devs[1].get("xids").is_none(), "{}", devs[1]);
    // A bus id no visible GPU has.
    assert_eq!(s["gpu"]["unattributed_xids"][0]["code"], 94);
}

#[test]
fn a_hanging_collector_is_abandoned_and_the_others_still_emit() {
    let d = tempfile::tempdir().unwrap();
    // A FIFO nobody writes to: opening it blocks forever, like a dead mount.
    let fifo = d.path().join("kmsg.fifo");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let start = std::time::Instant::now();
    let s = one(probe(d.path()).arg("--kmsg-file").arg(&fifo).args([
        "--budget",
        "xid=300ms",
        "--no-gpu",
    ]));
    assert!(start.elapsed() < Duration::from_secs(5));
    let e = s["errors"].as_array().unwrap();
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0]["collector"], "xid");
    assert_eq!(e[0]["timed_out"], true);
    assert!(e[0]["duration_ms"].as_f64().unwrap() >= 300.0);
    assert!(s["host"]["memory_total_bytes"].is_u64());
    assert!(s["processes"]["total"].is_u64());
}

#[test]
fn a_resident_probe_does_not_pile_up_threads_behind_a_hung_collector() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("kmsg.fifo");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let mut child = probe(d.path())
        .arg("--serve")
        .arg("--kmsg-file")
        .arg(&fifo)
        .args(["--budget", "xid=200ms", "--no-gpu"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"\n\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let r = records(&out.stdout);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0]["errors"][0]["timed_out"], true);
    let second = r[1]["errors"][0]["error"].as_str().unwrap();
    assert!(second.contains("still going"), "{second}");
    assert!(r[1]["host"].is_object());
}

#[test]
fn one_shot_uses_the_previous_cpu_reading_instead_of_sleeping() {
    let d = tempfile::tempdir().unwrap();
    let first = one(probe(d.path()).args(["--cpu-window", "0", "--no-gpu", "--no-xid"]));
    assert!(first["host"].get("cpu_pct").is_none());
    assert_eq!(
        first["host"]["absent"]["cpu_pct"],
        "no recent previous reading"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let second = one(probe(d.path()).args(["--cpu-window", "0", "--no-gpu", "--no-xid"]));
    let pct = second["host"]["cpu_pct"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&pct));
    assert!(second["host"]["cpu_window_ms"].as_u64().unwrap() >= 1000);
}

#[test]
fn serve_writes_one_sample_per_input_line_and_exits_at_eof() {
    let d = tempfile::tempdir().unwrap();
    let mut child = probe(d.path())
        .arg("--serve")
        .arg("--gpu-fixture")
        .arg(fixture("h200-idle.json"))
        .arg("--no-xid")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"\n\n\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let r = records(&out.stdout);
    assert_eq!(r.len(), 3);
    assert!(r.iter().all(|s| s["gpu"]["status"] == "ok"));
}

#[test]
fn serve_treats_stdin_as_bytes_so_a_non_utf8_request_still_gets_its_sample() {
    let d = tempfile::tempdir().unwrap();
    let mut child = probe(d.path())
        .args(["--serve", "--no-gpu", "--no-xid"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"\xff\xfe\n\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(records(&out.stdout).len(), 2);
}

#[test]
fn config_file_errors_name_the_file_line_and_field() {
    let d = tempfile::tempdir().unwrap();
    for (text, want) in [
        (
            "no_xid: true\nbudgets:\n  host: 2s\n  bogus: 1s\n",
            ":4: budgets.bogus: unknown collector",
        ),
        (
            "no_xid: true\nbudgets:\n  gpu: 2h\n",
            ":3: budgets.gpu: 2h is out of range",
        ),
        (
            "no_xid: true\npeer_timeout: 1h\n",
            ":2: peer_timeout: 1h is out of range",
        ),
    ] {
        let cfg = d.path().join("probe.yaml");
        std::fs::write(&cfg, text).unwrap();
        let out = probe(d.path())
            .args(["--no-gpu", "-c"])
            .arg(&cfg)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{text}: {err}");
        assert!(err.contains(&format!("probe.yaml{want}")), "{text}: {err}");
    }
}

#[test]
fn interval_mode_writes_count_samples() {
    let d = tempfile::tempdir().unwrap();
    let out = probe(d.path())
        .args([
            "--interval",
            "100ms",
            "--count",
            "3",
            "--no-gpu",
            "--no-xid",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let r = records(&out.stdout);
    assert_eq!(r.len(), 3);
    assert!(r[0]["ts"].as_str() < r[2]["ts"].as_str());
}

#[test]
fn peers_on_loopback_report_reachability_and_latency() {
    let d = tempfile::tempdir().unwrap();
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let s = one(probe(d.path())
        .args(["--no-gpu", "--no-xid", "--peer"])
        .arg(open.local_addr().unwrap().to_string())
        .arg("--peer")
        .arg(&closed_addr));
    let p = s["network"]["peers"].as_array().unwrap();
    assert_eq!(p[0]["reachable"], true);
    assert!(p[0]["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(p[1]["reachable"], false);
    assert!(p[1]["error"].is_string());
}

#[test]
fn prometheus_output_passes_promtool() {
    let d = tempfile::tempdir().unwrap();
    let out = probe(d.path())
        .arg("--format")
        .arg("prometheus")
        .arg("--gpu-fixture")
        .arg(fixture("fault-xid79-gpu-lost.json"))
        .args(["--node", "n1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("ugro_gpu_up{node=\"n1\",gpu=\"3\""), "{text}");
    assert!(text.contains("ugro_host_memory_total_bytes{node=\"n1\"}"));
    promtool_check(&text);
}

#[test]
fn dcgm_names_are_added_with_dcgm_labels_and_pass_promtool_but_for_dcgm_naming() {
    let d = tempfile::tempdir().unwrap();
    let text = prometheus(d.path(), &["--metric-names", "dcgm", "--no-xid"]);
    assert!(
        text.contains("ugro_gpu_utilization_percent{node=\"n1\",gpu=\"0\""),
        "{text}"
    );
    let util: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("DCGM_FI_DEV_GPU_UTIL{"))
        .collect();
    assert_eq!(util.len(), 8, "{text}");
    assert!(
        util[0].contains("device=\"nvidia0\",modelName=\"NVIDIA H200\",Hostname=\"n1\""),
        "{util:?}"
    );
    ugro_e2e::assert_promtool_dcgm(&text);
}

#[test]
fn output_file_is_replaced_at_each_interval_and_holds_one_sample() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("textfile").join("ugro.prom");
    std::fs::create_dir(file.parent().unwrap()).unwrap();
    let out = probe(d.path())
        .args([
            "--format",
            "prometheus",
            "--node",
            "n1",
            "--no-xid",
            "--gpu-fixture",
        ])
        .arg(fixture("h200x8-idle.json"))
        .args(["--interval", "1ms", "--count", "3", "--output"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "nothing on stdout with --output");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        text.matches("# TYPE ugro_probe_timestamp_seconds gauge")
            .count(),
        1
    );
    promtool_check(&text);
    let names: Vec<_> = std::fs::read_dir(file.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names,
        ["ugro.prom"],
        "no temporary file left in the textfile directory"
    );
    // JSON too: the file holds the latest sample only.
    let json = d.path().join("latest.json");
    let out = probe(d.path())
        .args([
            "--node",
            "n1",
            "--no-gpu",
            "--interval",
            "1ms",
            "--count",
            "2",
            "-o",
        ])
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        records(std::fs::read_to_string(&json).unwrap().as_bytes()).len(),
        1
    );
}

#[test]
fn output_into_a_missing_directory_fails_naming_it() {
    let d = tempfile::tempdir().unwrap();
    let out = probe(d.path())
        .args([
            "--node",
            "n1",
            "--no-gpu",
            "--output",
            "/nonexistent/dir/ugro.prom",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(74));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/dir"), "{err}");
}

fn promtool_check(text: &str) {
    ugro_e2e::assert_promtool_clean(text);
}

#[test]
fn config_file_sets_the_same_keys_and_errors_name_the_line() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("probe.yaml");
    std::fs::write(
        &cfg,
        format!(
            "node: from-config\nexpect_gpus: 8\ngpu_fixture: {}\nno_xid: true\nbudgets:\n  host: 2s\n",
            fixture("fault-7-of-8.json").display()
        ),
    )
    .unwrap();
    let s = one(probe(d.path()).arg("--config").arg(&cfg));
    assert_eq!(s["node"], "from-config");
    assert_eq!(s["gpu"]["status"], "missing");
    // Flags win over the file.
    let s = one(probe(d.path()).arg("--config").arg(&cfg).args([
        "--node",
        "from-flag",
        "--expect-gpus",
        "7",
    ]));
    assert_eq!(s["node"], "from-flag");
    assert_eq!(s["gpu"]["status"], "ok");

    std::fs::write(&cfg, "node: x\nexpect_gpu: 8\n").unwrap();
    let out = probe(d.path()).arg("--config").arg(&cfg).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("probe.yaml:2"), "{err}");
}

#[test]
fn the_shipped_example_configuration_loads() {
    let d = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("probe.example.yaml");
    let s = one(probe(d.path())
        .arg("--config")
        .arg(example)
        .args(["--no-gpu", "--no-xid"]));
    assert_eq!(s["network"]["peers"][0]["target"], "127.0.0.1:22");
}

#[test]
fn bad_inputs_get_the_shared_exit_statuses() {
    let d = tempfile::tempdir().unwrap();
    let st = probe(d.path())
        .args(["--gpu-fixture", "/nonexistent/fixture.json"])
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(66));
    let bad = d.path().join("bad.json");
    std::fs::write(&bad, "{\"devices\": 3}").unwrap();
    let st = probe(d.path())
        .arg("--gpu-fixture")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(65));
    let st = probe(d.path()).args(["--node", "-bad"]).output().unwrap();
    assert_eq!(st.status.code(), Some(64));
    let st = probe(d.path()).args(["--budget", "gpu"]).output().unwrap();
    assert_eq!(st.status.code(), Some(64));
    let st = probe(d.path())
        .args(["--interval", "soon"])
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(64));
}

#[test]
fn driver_not_loaded_is_failed_not_absent() {
    let d = tempfile::tempdir().unwrap();
    let s = one(probe(d.path())
        .arg("--gpu-fixture")
        .arg(fixture("nvml-driver-not-loaded.json"))
        .arg("--no-xid"));
    assert_eq!(s["gpu"]["status"], "failed");
    assert!(
        s["gpu"]["reason"]
            .as_str()
            .unwrap()
            .contains("DriverNotLoaded")
    );
    assert!(s["host"].is_object());
}

fn mkfifo(p: &Path) {
    assert!(Command::new("mkfifo").arg(p).status().unwrap().success());
}

#[test]
fn a_timed_out_xid_collector_marks_xids_absent_on_every_gpu() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("kmsg.fifo");
    mkfifo(&fifo);
    let s = one(probe(d.path())
        .arg("--gpu-fixture")
        .arg(fixture("h200x8-busy.json"))
        .arg("--kmsg-file")
        .arg(&fifo)
        .args(["--budget", "xid=300ms"]));
    assert_eq!(s["errors"][0]["collector"], "xid", "{}", s["errors"]);
    assert_eq!(s["errors"][0]["timed_out"], true);
    let why = s["gpu"]["absent"]["xids"]
        .as_str()
        .unwrap_or_else(|| panic!("no gpu.absent.xids: {}", s["gpu"]));
    assert!(why.contains("timed out after 300 ms"), "{why}");
    let devs = s["gpu"]["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 8);
    for dev in devs {
        assert_eq!(dev["absent"]["xids"], why, "{dev}");
    }
}

fn prometheus(d: &Path, extra: &[&str]) -> String {
    let out = probe(d)
        .args(["--format", "prometheus", "--node", "n1", "--gpu-fixture"])
        .arg(fixture("h200x8-idle.json"))
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn prometheus_leaves_xid_counts_out_when_the_kernel_log_was_not_read() {
    let d = tempfile::tempdir().unwrap();
    // Control: a log that was read and holds no XIDs gives real zeros.
    let empty = d.path().join("kmsg");
    std::fs::write(&empty, "6,1,1000,-;usb 1-1: new device\n").unwrap();
    let read = prometheus(d.path(), &["--kmsg-file", empty.to_str().unwrap()]);
    assert!(
        read.contains("ugro_gpu_xid_events{node=\"n1\",gpu=\"0\""),
        "{read}"
    );
    assert!(read.contains("ugro_gpu_unattributed_xid_events{node=\"n1\"} 0"));
    promtool_check(&read);
    for extra in [&["--kmsg-file", "/nonexistent/kmsg"][..], &["--no-xid"][..]] {
        let text = prometheus(d.path(), extra);
        assert!(!text.contains("ugro_gpu_xid_events"), "{extra:?}: {text}");
        assert!(
            !text.contains("ugro_gpu_unattributed_xid_events"),
            "{extra:?}: {text}"
        );
        assert!(text.contains("ugro_gpu_up{node=\"n1\",gpu=\"7\""), "{text}");
        promtool_check(&text);
    }
}

#[test]
fn no_xid_names_xids_absent_instead_of_reporting_none() {
    let d = tempfile::tempdir().unwrap();
    let s = one(probe(d.path())
        .arg("--gpu-fixture")
        .arg(fixture("h200x8-idle.json"))
        .arg("--no-xid"));
    assert!(
        s["gpu"]["absent"]["xids"]
            .as_str()
            .unwrap()
            .contains("--no-xid")
    );
    // Recorded fixture lines are the log, replayed: those XIDs are reported, not absent.
    let s = one(probe(d.path())
        .arg("--gpu-fixture")
        .arg(fixture("fault-xid79-gpu-lost.json"))
        .arg("--no-xid"));
    assert!(s["gpu"]["absent"].get("xids").is_none(), "{}", s["gpu"]);
}

#[test]
fn serve_keeps_the_cpu_reading_in_memory_and_leaves_the_state_file_alone() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("cpu.json");
    let run = |lines: &[u8]| {
        let mut child = probe(d.path())
            .args(["--serve", "--no-gpu", "--no-xid"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(lines).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        records(&out.stdout)
    };
    let r = run(b"\n\n\n");
    assert_eq!(r.len(), 3);
    assert!(!state.exists(), "--serve wrote {}", state.display());
    // A file left by a one-shot run is neither used nor rewritten.
    std::fs::write(&state, "sentinel").unwrap();
    let r = run(b"\n\n\n");
    assert_eq!(r.len(), 3);
    assert!(r.iter().all(|s| s["host"]["cpus"].is_u64()));
    assert_eq!(std::fs::read_to_string(&state).unwrap(), "sentinel");
}

#[test]
fn an_xid_storm_is_capped_to_the_most_recent_and_says_how_many_were_left_out() {
    let d = tempfile::tempdir().unwrap();
    let kmsg = d.path().join("kmsg");
    // Plain lines (no kmsg header) carry no time and are always in the window.
    let mut text = String::new();
    for i in 0..500 {
        text.push_str(&format!(
            "NVRM: Xid (PCI:0000:ab:00): 13, pid={i}, Graphics SM Warp Exception\n"
        ));
        text.push_str(&format!(
            "NVRM: Xid (PCI:0000:ee:00): 13, pid={i}, elsewhere\n"
        ));
    }
    std::fs::write(&kmsg, text).unwrap();
    let out = probe(d.path())
        .arg("--gpu-fixture")
        .arg(fixture("h200x8-idle.json"))
        .arg("--kmsg-file")
        .arg(&kmsg)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(out.stdout.len() < 64 * 1024, "{} bytes", out.stdout.len());
    let s = records(&out.stdout).remove(0);
    // 0000:ab:00 is GPU 5 in the 8-GPU fixture.
    let dev = &s["gpu"]["devices"][5];
    let xids = dev["xids"].as_array().unwrap();
    assert_eq!(xids.len(), 64);
    assert!(xids.iter().all(|x| x["code"] == 13));
    // The most recent are kept.
    assert!(xids[63]["message"].as_str().unwrap().contains("pid=499"));
    assert!(xids[0]["message"].as_str().unwrap().contains("pid=436"));
    let note = dev["absent"]["xids_truncated"].as_str().unwrap();
    assert!(note.starts_with("436 more XID events not listed"), "{note}");
    assert_eq!(s["gpu"]["unattributed_xids"].as_array().unwrap().len(), 64);
    assert!(
        s["gpu"]["absent"]["unattributed_xids_truncated"]
            .as_str()
            .unwrap()
            .starts_with("436 more")
    );
    assert!(
        s["gpu"]["devices"][4]["absent"]
            .get("xids_truncated")
            .is_none()
    );
}

fn sample_of(c: &mut Command) -> ugro_types::Sample {
    serde_json::from_value(one(c)).unwrap()
}

#[test]
fn a_collector_past_its_budget_is_left_out_listed_once_and_its_late_answer_discarded() {
    let d = tempfile::tempdir().unwrap();
    // The fixture answers at once, but not within 1 µs: its answer arrives after the budget,
    // while the other collectors still run.
    let s = sample_of(
        probe(d.path())
            .arg("--gpu-fixture")
            .arg(fixture("h200x8-busy.json"))
            .args(["--no-xid", "--budget", "gpu=1us"]),
    );
    assert!(s.gpu.is_none(), "{:?}", s.gpu);
    let errs: Vec<_> = s.errors.iter().filter(|e| e.collector == "gpu").collect();
    assert_eq!(errs.len(), 1, "{:?}", s.errors);
    assert!(errs[0].timed_out);
    assert!(
        errs[0].error.contains("0.001 ms budget"),
        "{}",
        errs[0].error
    );
    let runs: Vec<_> = s.collectors.iter().filter(|c| c.name == "gpu").collect();
    assert_eq!(runs.len(), 1, "{:?}", s.collectors);
    assert!(!runs[0].ok);
    // The others are unaffected, and NVML's compute processes did not leak in either.
    assert!(s.host.is_some());
    let procs = s.processes.unwrap();
    assert!(procs.training.iter().all(|p| p.matched_by != "nvml"));
}

#[test]
fn recovery_action_fixtures_each_convert_to_the_documented_field() {
    use ugro_types::RecoveryAction as R;
    let d = tempfile::tempdir().unwrap();
    for (file, gpu, want, json) in [
        ("recovery-none.json", None, R::None, "none"),
        ("recovery-gpu-reset.json", Some(2), R::GpuReset, "gpu_reset"),
        (
            "recovery-node-reboot.json",
            Some(5),
            R::NodeReboot,
            "node_reboot",
        ),
        ("recovery-drain-p2p.json", Some(1), R::DrainP2p, "drain_p2p"),
        (
            "recovery-drain-and-reset.json",
            Some(6),
            R::DrainAndReset,
            "drain_and_reset",
        ),
    ] {
        let raw = one(probe(d.path())
            .arg("--gpu-fixture")
            .arg(fixture(file))
            .arg("--no-xid"));
        let s: ugro_types::Sample = serde_json::from_value(raw.clone()).unwrap();
        let devs = s.gpu.unwrap().devices;
        assert_eq!(devs.len(), 8);
        for dev in &devs {
            let expect = if gpu.is_none_or(|g| g == dev.index) {
                want
            } else {
                R::None
            };
            assert_eq!(
                dev.recovery_action,
                Some(expect),
                "{file} gpu {}",
                dev.index
            );
            assert!(!dev.absent.contains_key("recovery_action"));
        }
        // The wire form is the snake-case name.
        let g = gpu.unwrap_or(0) as usize;
        assert_eq!(raw["gpu"]["devices"][g]["recovery_action"], json, "{file}");
    }
    let s = sample_of(
        probe(d.path())
            .arg("--gpu-fixture")
            .arg(fixture("recovery-not-supported.json"))
            .arg("--no-xid"),
    );
    for dev in s.gpu.unwrap().devices {
        assert_eq!(dev.recovery_action, None);
        assert_eq!(dev.absent["recovery_action"], "not supported");
    }
    // The H200 survey did not read the field: not recorded, not "none".
    let s = sample_of(
        probe(d.path())
            .arg("--gpu-fixture")
            .arg(fixture("h200-idle.json"))
            .arg("--no-xid"),
    );
    let dev = &s.gpu.unwrap().devices[0];
    assert_eq!(dev.recovery_action, None);
    assert_eq!(dev.absent["recovery_action"], "not recorded");
}

#[test]
fn the_pci_gpu_count_comes_from_sysfs_beside_what_nvml_sees() {
    let d = tempfile::tempdir().unwrap();
    // A fake sysfs of an HGX node: 8 GPUs, 4 NVSwitches, the BMC's VGA, an HCA.
    let sys = fixture("sysfs-hgx8");
    // NVML sees 7: one GPU fell out of NVML but is still on the bus.
    let s = sample_of(
        probe(d.path())
            .arg("--gpu-fixture")
            .arg(fixture("fault-7-of-8.json"))
            .arg("--sys-root")
            .arg(&sys)
            .arg("--no-xid"),
    );
    let g = s.gpu.unwrap();
    assert_eq!((g.pci_devices, g.found), (Some(8), Some(7)));
    assert!(!g.absent.contains_key("pci_devices"));
    // No PCI tree: absent with the reason, not 0.
    let s = sample_of(
        probe(d.path())
            .arg("--gpu-fixture")
            .arg(fixture("h200x8-idle.json"))
            .arg("--sys-root")
            .arg(d.path().join("nowhere"))
            .arg("--no-xid"),
    );
    let g = s.gpu.unwrap();
    assert_eq!(g.pci_devices, None);
    assert!(
        g.absent["pci_devices"].contains("bus/pci/devices"),
        "{:?}",
        g.absent
    );
}

#[test]
fn boot_id_is_only_for_a_replay_and_must_be_a_boot_id() {
    let d = tempfile::tempdir().unwrap();
    let kmsg = d.path().join("kmsg");
    std::fs::write(&kmsg, "").unwrap();
    let id = "0f6c2e3a-7d1b-4c5e-9a8f-1b2c3d4e5f60";
    let st = probe(d.path()).args(["--boot-id", id]).output().unwrap();
    assert_eq!(st.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&st.stderr).contains("--boot-id"));
    let st = probe(d.path())
        .arg("--kmsg-file")
        .arg(&kmsg)
        .args(["--boot-id", "yesterday", "--no-gpu"])
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(64));
    let s = sample_of(probe(d.path()).arg("--kmsg-file").arg(&kmsg).args([
        "--boot-id",
        id,
        "--no-gpu",
    ]));
    // The host's own boot id is still the host's.
    let host = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(s.host.unwrap().boot_id.as_deref(), Some(host.trim()));
}

#[test]
fn fixture_kernel_lines_keep_their_sequence_numbers_and_carry_the_boot_id() {
    let d = tempfile::tempdir().unwrap();
    let id = "0f6c2e3a-7d1b-4c5e-9a8f-1b2c3d4e5f60";
    let s = sample_of(
        probe(d.path())
            .arg("--gpu-fixture")
            .arg(fixture("fault-xid79-gpu-lost.json"))
            .args(["--no-xid", "--boot-id", id]),
    );
    let g = s.gpu.unwrap();
    let x = &g.devices[3].xids[0];
    assert_eq!(x.code, 79);
    assert_eq!(x.identity(), Some((id, 10456)));
}
