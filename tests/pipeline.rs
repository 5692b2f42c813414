//! The shell pipeline `ugro-probe | ugro-score | ugro-breaker | ugro-alert` with the real
//! binaries: the line format is the contract between them, so these tests only look at decoded
//! records and exit statuses.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the test's failure report

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};
use ugro_e2e::{bin, gpu_fixture, records, run_tool};

fn ok(tool: &str, out: &Output) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{tool} failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.clone()
}

fn probe(fixture_name: &str, node: &str, state: &Path) -> Vec<u8> {
    let cpu = state.join("cpu.json");
    let out = Command::new(bin("ugro-probe"))
        .arg("--gpu-fixture")
        .arg(gpu_fixture(fixture_name))
        .args(["--node", node, "--cpu-window", "0", "--cpu-state-file"])
        .arg(cpu)
        .output()
        .unwrap();
    ok("ugro-probe", &out)
}

/// One cron run of the whole pipeline with persistent breaker and alert state.
fn cron_run(fixture_name: &str, node: &str, state: &Path) -> (Vec<Value>, Vec<Value>) {
    let sample = probe(fixture_name, node, state);
    let scored = ok("ugro-score", &run_tool("ugro-score", &[], &sample));
    let b = state.join("breaker.json");
    let a = state.join("alert.json");
    let broken = ok(
        "ugro-breaker",
        &run_tool("ugro-breaker", &["--state", b.to_str().unwrap()], &scored),
    );
    let alerts = ok(
        "ugro-alert",
        &run_tool("ugro-alert", &["--state", a.to_str().unwrap()], &broken),
    );
    (records(&broken), records(&alerts))
}

fn names(alerts: &[Value], status: &str) -> Vec<String> {
    let mut v: Vec<String> = alerts
        .iter()
        .filter(|a| a["status"] == status)
        .map(|a| a["labels"]["alertname"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn a_healthy_h200_node_passes_every_stage_and_raises_no_alert() {
    let d = tempfile::tempdir().unwrap();
    let (through, alerts) = cron_run("h200x8-busy.json", "gpu-01", d.path());
    assert_eq!(through.len(), 1);
    let r = &through[0];
    assert_eq!(r["kind"], "sample");
    assert_eq!(r["gpu"]["devices"].as_array().unwrap().len(), 8);
    assert_eq!(r["score"]["state"], "healthy", "{}", r["score"]);
    assert_eq!(r["breaker"]["state"], "closed");
    assert!(alerts.is_empty(), "{alerts:?}");
}

#[test]
fn fields_users_add_between_stages_reach_the_end_of_the_pipeline() {
    let d = tempfile::tempdir().unwrap();
    let sample = probe("h200-idle.json", "gpu-02", d.path());
    // What `jq -c '. + {site: "lab", ticket: {id: 7}}'` would do between probe and score.
    let mut v: Value = serde_json::from_slice(&sample).unwrap();
    v["site"] = json!("lab");
    v["ticket"] = json!({"id": 7, "tags": ["a", "b"]});
    let line = format!("{v}\n");
    let scored = ok("ugro-score", &run_tool("ugro-score", &[], line.as_bytes()));
    let b = d.path().join("b.json");
    let broken = ok(
        "ugro-breaker",
        &run_tool("ugro-breaker", &["--state", b.to_str().unwrap()], &scored),
    );
    let out = records(&broken);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0]["site"], "lab");
    assert_eq!(out[0]["ticket"], json!({"id": 7, "tags": ["a", "b"]}));
    assert!(out[0]["score"].is_object() && out[0]["breaker"].is_object());
    // Everything the probe wrote is still there, unchanged.
    for (k, val) in v.as_object().unwrap() {
        assert_eq!(&out[0][k], val, "field {k} changed");
    }
}

#[test]
fn a_lost_gpu_pages_on_the_third_cron_run_with_the_breaker_trip_then_nothing_while_open() {
    let d = tempfile::tempdir().unwrap();
    // Two runs: pending (the hard-fault `for` is 3 samples), kept in the state files.
    for run in 1..=2 {
        let (_, alerts) = cron_run("fault-xid79-gpu-lost.json", "gpu-03", d.path());
        assert!(alerts.is_empty(), "run {run}: {alerts:?}");
    }

    // Third consecutive failure: the alerts fire, and the breaker opens (NodeCircuitOpen).
    let (through, third) = cron_run("fault-xid79-gpu-lost.json", "gpu-03", d.path());
    let t: Vec<&Value> = through
        .iter()
        .filter(|r| r["kind"] == "transition")
        .collect();
    assert_eq!(t.len(), 1, "{through:?}");
    assert_eq!(t[0]["from"], "closed");
    assert_eq!(t[0]["to"], "open");
    assert_eq!(t[0]["consecutive_failures"], 3);
    let fired = names(&third, "firing");
    for name in ["GpuXidFatal", "GpuLost", "NodeCircuitOpen"] {
        assert!(fired.contains(&name.to_owned()), "{name}: {fired:?}");
    }
    // The GPU alerts name every reason of the score, so NodeCritical would only repeat them.
    assert!(!fired.contains(&"NodeCritical".to_owned()), "{fired:?}");
    for a in &third {
        assert_eq!(
            a["fingerprint"],
            ugro_types::fingerprint_hex(&serde_json::from_value(a["labels"].clone()).unwrap())
        );
    }

    // While open, the node's failing samples are held back and nothing more is said.
    let (through, fourth) = cron_run("fault-xid79-gpu-lost.json", "gpu-03", d.path());
    assert!(through.is_empty(), "{through:?}");
    assert!(fourth.is_empty(), "{fourth:?}");
}

#[test]
fn every_filter_reports_bad_lines_by_number_keeps_the_good_ones_and_exits_65() {
    let d = tempfile::tempdir().unwrap();
    let sample = probe("h200-idle.json", "gpu-04", d.path());
    let good = String::from_utf8(sample).unwrap();
    let scored = String::from_utf8(ok(
        "ugro-score",
        &run_tool("ugro-score", &[], good.as_bytes()),
    ))
    .unwrap();
    let b = d.path().join("b.json");
    let a = d.path().join("a.json");
    let cases: [(&str, Vec<&str>, &str); 3] = [
        ("ugro-score", vec![], good.trim_end()),
        (
            "ugro-breaker",
            vec!["--state", b.to_str().unwrap()],
            scored.trim_end(),
        ),
        (
            "ugro-alert",
            vec!["--state", a.to_str().unwrap()],
            scored.trim_end(),
        ),
    ];
    for (tool, args, line) in cases {
        let input = format!("{line}\r\n\nnot json at all\n{line}\n");
        let out = run_tool(tool, &args, input.as_bytes());
        assert_eq!(
            out.status.code(),
            Some(65),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("{tool}: line 3: ")),
            "{tool} stderr: {err}"
        );
        if tool != "ugro-alert" {
            assert_eq!(records(&out.stdout).len(), 2, "{tool} lost a good line");
        }
    }
}

#[test]
fn every_tool_stops_quietly_with_status_0_when_its_reader_goes_away() {
    let d = tempfile::tempdir().unwrap();
    let sample = probe("h200x8-busy.json", "gpu-05", d.path());
    let scored = ok("ugro-score", &run_tool("ugro-score", &[], &sample));
    let b = d.path().join("b.json");
    for (tool, args, line) in [
        ("ugro-score", vec![], &sample),
        (
            "ugro-breaker",
            vec!["--state".to_owned(), b.to_str().unwrap().to_owned()],
            &scored,
        ),
    ] {
        let input: Vec<u8> = line.repeat(20_000);
        let mut child = Command::new(bin(tool))
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        // Read one line, then close the pipe like `| head -1`.
        let mut stdout = child.stdout.take().unwrap();
        let mut first = [0u8; 64];
        std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
        drop(stdout);
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{tool}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{tool} was not quiet: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
