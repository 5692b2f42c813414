//! The binary through the command and local transports (no SSH).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn fake(node_args: &str) -> String {
    format!("[{}, '{{node}}', {node_args}]", fake_probe().display())
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn watch(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(watch_bin())
        .args(args)
        .current_dir(dir)
        // Default state files (no --state-dir) in the test's directory, not the user's.
        .env("XDG_STATE_HOME", dir.join("xdg-state"))
        .output()
        .unwrap()
}

#[test]
fn bad_cluster_file_names_file_line_and_field_and_exits_78() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "c.yaml",
        "intervals:\n  base: 5s\nnodes:\n  - name: ok\n  - name: bad\n    host: -oProxyCommand=x\n",
    );
    let out = watch(d.path(), &["-c", "c.yaml"]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("c.yaml:6: nodes[1].host"), "{err}");
    let out = watch(d.path(), &["-c", "missing.yaml"]);
    assert_eq!(out.status.code(), Some(66));
    let out = watch(d.path(), &[]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn check_prints_the_resolved_nodes() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "c.yaml",
        &format!(
            "ssh: {{user: ops, port: 2222}}\nnodes:\n  - {{name: a, host: 10.0.0.1, tags: [r1]}}\n  - name: b\n    transport: {{command: {}}}\n",
            fake("'0'")
        ),
    );
    let out = watch(d.path(), &["-c", "c.yaml", "--check"]);
    assert!(out.status.success());
    let recs = records(&out.stdout);
    assert_eq!(recs[0]["host"], "10.0.0.1");
    assert_eq!(recs[0]["user"], "ops");
    assert_eq!(recs[0]["port"], 2222);
    assert_eq!(recs[0]["transport"], "ssh");
    assert_eq!(recs[1]["transport"]["command"][1], "b");
}

#[test]
fn hung_probe_times_out_without_holding_up_the_others() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "c.yaml",
        &format!(
            "intervals: {{base: 1s, max: 1s, spread: 0}}\ntimeout: 2s\ntransport: {{command: {}}}\n\
             nodes:\n  - name: a\n  - name: b\n  - name: c\n  - name: hung\n    transport: {{command: {}}}\n",
            fake("'0.05'"),
            fake("'0', hang")
        ),
    );
    let out = watch(
        d.path(),
        &["-c", "c.yaml", "--cycles", "4", "--stats-every", "0"],
    );
    assert!(out.status.success());
    let recs = records(&out.stdout);
    let samples: Vec<&Value> = recs.iter().filter(|r| r["kind"] == "sample").collect();
    for n in ["a", "b", "c"] {
        let s: Vec<&&Value> = samples.iter().filter(|r| r["node"] == n).collect();
        // Polled though "hung" never answers (its timeout spans two cycles). Exact counts
        // and schedules are checked under paused time (tests/paused.rs).
        assert!(s.len() >= 2, "{n}: {}", s.len());
        assert!(s.iter().all(|r| r.get("unreachable").is_none()));
    }
    let hung: Vec<&&Value> = samples.iter().filter(|r| r["node"] == "hung").collect();
    assert!(!hung.is_empty());
    assert!(
        hung.iter().all(|r| r["unreachable"]["cause"] == "timeout"),
        "{hung:?}"
    );
    // The first cycle's answers came out before the hung node's timeout did.
    let first_timeout = recs.iter().position(|r| r["node"] == "hung").unwrap();
    for n in ["a", "b", "c"] {
        let first = recs.iter().position(|r| r["node"] == n).unwrap();
        assert!(first < first_timeout, "{n} waited for the hung node");
    }
}

#[test]
fn state_dir_keeps_latest_sample_and_bounded_history() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "c.yaml",
        &format!(
            "intervals: {{base: 200ms, max: 200ms}}\ntransport: {{command: {}}}\nnodes:\n  - name: a\n  - name: b\n",
            fake("'0', ok, '55'")
        ),
    );
    let out = watch(
        d.path(),
        &[
            "-c",
            "c.yaml",
            "--cycles",
            "8",
            "--state-dir",
            "st",
            "--history",
            "3",
            "--stats-every",
            "200ms",
        ],
    );
    assert!(out.status.success());
    let node: Value =
        serde_json::from_slice(&std::fs::read(d.path().join("st/nodes/a.json")).unwrap()).unwrap();
    assert_eq!(node["node"], "a");
    assert_eq!(node["history"].as_array().unwrap().len(), 3);
    assert_eq!(node["sample"]["gpu"]["devices"][0]["utilization_pct"], 55);
    // Raw mode still scores for the table and the state files.
    assert!(node["score"]["state"].is_string(), "{node}");
    let fleet: Value =
        serde_json::from_slice(&std::fs::read(d.path().join("st/fleet.json")).unwrap()).unwrap();
    assert_eq!(fleet["nodes"].as_array().unwrap().len(), 2);
    let stats: Value =
        serde_json::from_slice(&std::fs::read(d.path().join("st/stats.json")).unwrap()).unwrap();
    assert_eq!(stats["kind"], "stats");
    assert_eq!(stats["tool"], "ugro-watch");
    // Busy GPUs (55 % ≥ 10 %) keep the base interval.
    assert_eq!(stats["interval_ms"], 200);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(d.path().join("st/nodes/a.json"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn closed_stdout_stops_quietly_with_status_zero() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "c.yaml",
        &format!(
            "intervals: {{base: 100ms, max: 100ms}}\ntransport: {{command: {}}}\nnodes:\n  - name: a\n",
            fake("'0'")
        ),
    );
    let mut child = Command::new(watch_bin())
        .args(["-c", "c.yaml"])
        .current_dir(d.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 64];
    let _ = std::io::Read::read(&mut out, &mut buf).unwrap();
    drop(out);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(std::time::Instant::now() < deadline, "still running");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(st.code(), Some(0));
}

#[test]
fn sighup_reloads_the_cluster_file_and_sigterm_exits_cleanly() {
    let d = tempfile::tempdir().unwrap();
    let body = |nodes: &str| {
        format!(
            "intervals: {{base: 200ms, max: 200ms}}\ntransport: {{command: {}}}\nnodes:\n{nodes}",
            fake("'0'")
        )
    };
    write(d.path(), "c.yaml", &body("  - name: a\n"));
    let mut w = Running::start(&["-c", "c.yaml", "--stats-every", "0"], d.path());
    w.until(Duration::from_secs(20), "a sample from a", |s| {
        samples_of(s, "a").count() > 0
    });
    // A broken file is refused and the running configuration kept.
    write(d.path(), "c.yaml", "nodes: [\n");
    w.signal("HUP");
    std::thread::sleep(Duration::from_millis(300));
    write(d.path(), "c.yaml", &body("  - name: a\n  - name: b\n"));
    w.signal("HUP");
    w.until(
        Duration::from_secs(20),
        "a sample from the added node",
        |s| samples_of(s, "b").count() > 0,
    );
    let n = w.seen.len();
    w.until(Duration::from_secs(20), "a still polled", |s| {
        samples_of(&s[n..], "a").count() > 0
    });
    w.signal("TERM");
    let (st, _) = w.wait(Duration::from_secs(20));
    assert_eq!(st.code(), Some(0));
}

#[test]
fn replay_through_the_pipeline_scores_and_alerts() {
    let d = tempfile::tempdir().unwrap();
    let line = |node: &str, s: u32, unreachable: bool| {
        if unreachable {
            format!(
                r#"{{"v":1,"kind":"sample","ts":"2026-11-28T00:00:{s:02}.000Z","node":"{node}","unreachable":{{"cause":"ssh","message":"refused"}}}}"#
            )
        } else {
            format!(
                r#"{{"v":1,"kind":"sample","ts":"2026-11-28T00:00:{s:02}.000Z","node":"{node}","gpu":{{"status":"ok","devices":[{{"index":0,"state":"ok"}}]}}}}"#
            )
        }
    };
    let mut rec = String::new();
    for s in 0..30 {
        rec.push_str(&line("n1", s, s >= 5));
        rec.push('\n');
    }
    rec.push_str("garbage\n");
    write(d.path(), "rec.jsonl", &rec);
    let out = watch(
        d.path(),
        &["--replay", "rec.jsonl", "--pipeline", "--state-dir", "st"],
    );
    assert_eq!(
        out.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 31"));
    let node: Value =
        serde_json::from_slice(&std::fs::read(d.path().join("st/nodes/n1.json")).unwrap()).unwrap();
    assert_eq!(node["state"], "unreachable");
    assert_eq!(node["breaker"]["state"], "open");
}

#[test]
fn local_mode_polls_this_machine_through_the_real_probe() {
    if !require(
        "target/*/ugro-probe (cargo build --workspace)",
        probe_bin().is_some(),
    ) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let out = watch(
        d.path(),
        &[
            "--local",
            "--cycles",
            "2",
            "--interval",
            "300ms",
            "--stats-every",
            "0",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs: Vec<Value> = records(&out.stdout)
        .into_iter()
        .filter(|r| r["kind"] != "tick")
        .collect();
    assert!(!recs.is_empty());
    for r in &recs {
        assert_eq!(r["kind"], "sample");
        assert!(r.get("unreachable").is_none(), "{r}");
        assert!(r["host"]["cpus"].as_u64().is_some_and(|c| c > 0), "{r}");
    }
}

#[test]
fn jobs_command_keeps_busy_nodes_at_the_base_interval_while_idle_ones_back_off() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "busy.txt", "busy[1-2]\n");
    write(
        d.path(),
        "c.yaml",
        &format!(
            "intervals: {{base: 200ms, max: 3200ms, spread: 0}}\ntransport: {{command: {}}}\n\
             activity:\n  jobs_cmd: [cat, busy.txt]\nnodes:\n  - name: busy1\n  - name: busy2\n  - name: idle\n",
            fake("'0'")
        ),
    );
    let out = watch(
        d.path(),
        &["-c", "c.yaml", "--cycles", "30", "--stats-every", "0"],
    );
    assert!(out.status.success());
    let recs = records(&out.stdout);
    let count = |n: &str| recs.iter().filter(|r| r["node"] == n).count();
    // 30 cycles: a busy node is polled every cycle, the idle one at 1, 2, 4, 8, 16 cycles.
    assert!(count("busy1") >= 20, "busy1: {}", count("busy1"));
    assert!(count("busy2") >= 20, "busy2: {}", count("busy2"));
    assert!(count("idle") <= 8, "idle: {}", count("idle"));
}

#[test]
fn fresh_activity_file_keeps_the_whole_fleet_at_the_base_interval() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), "stamp", "");
    write(
        d.path(),
        "c.yaml",
        &format!(
            "intervals: {{base: 200ms, max: 3200ms, spread: 0}}\ntransport: {{command: {}}}\nnodes:\n  - name: a\n  - name: b\n",
            fake("'0'")
        ),
    );
    let out = watch(
        d.path(),
        &[
            "-c",
            "c.yaml",
            "--cycles",
            "20",
            "--stats-every",
            "0",
            "--activity-file",
            "stamp",
        ],
    );
    assert!(out.status.success());
    let recs = records(&out.stdout);
    for n in ["a", "b"] {
        let c = recs.iter().filter(|r| r["node"] == n).count();
        assert!(c >= 14, "{n}: {c}");
    }
    // Without the file the same fleet backs off.
    let out = watch(
        d.path(),
        &["-c", "c.yaml", "--cycles", "20", "--stats-every", "0"],
    );
    let recs = records(&out.stdout);
    assert!(recs.iter().filter(|r| r["node"] == "a").count() <= 7);
}

#[test]
fn table_format_draws_a_live_table_coloured_unless_no_color() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "c.yaml",
        &format!(
            "intervals: {{base: 200ms, max: 200ms}}\ntransport: {{command: {}}}\nnodes:\n  - name: gpu-a\n  - name: gpu-b\n    transport: {{command: {}}}\n",
            fake("'0', ok, '80'"),
            fake("'0', exit")
        ),
    );
    let run = |no_color: bool| {
        let mut c = Command::new(watch_bin());
        c.args(["-c", "c.yaml", "--cycles", "4", "--format", "table"])
            .current_dir(d.path());
        if no_color {
            c.env("NO_COLOR", "1");
        } else {
            c.env_remove("NO_COLOR");
        }
        let out = c.output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let plain = run(true);
    let last = plain.rsplit("\x1b[2J").next().unwrap();
    assert!(
        last.contains("NODE") && last.contains("LAST ALERT"),
        "{last}"
    );
    let row_a = last.lines().find(|l| l.starts_with("gpu-a")).unwrap();
    assert!(
        row_a.contains("1/1") && row_a.contains("55°C") && row_a.contains("80%"),
        "{row_a}"
    );
    let row_b = last.lines().find(|l| l.starts_with("gpu-b")).unwrap();
    assert!(row_b.contains("unreachable"), "{row_b}");
    assert!(!plain.contains("\x1b[3"), "colour despite NO_COLOR");
    assert!(
        run(false).contains("\x1b[31m"),
        "no colour for an unreachable node"
    );
}

fn stats_after(seen: &[(std::time::Instant, Value)], from: usize) -> Vec<&Value> {
    seen[from..]
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["kind"] == "stats")
        .collect()
}

#[test]
fn command_line_intervals_survive_a_sighup_reload() {
    let d = tempfile::tempdir().unwrap();
    // The file keeps the default intervals (5s, 60s); the command line asks for 1s.
    let body = |nodes: &str| format!("transport: {{command: {}}}\nnodes:\n{nodes}", fake("'0'"));
    write(d.path(), "c.yaml", &body("  - name: a\n"));
    let mut w = Running::start(
        &[
            "-c",
            "c.yaml",
            "--interval",
            "1s",
            "--max-interval",
            "1s",
            "--stats-every",
            "1s",
        ],
        d.path(),
    );
    w.until(Duration::from_secs(20), "stats at 1 s", |s| {
        stats_after(s, 0).iter().any(|v| v["interval_ms"] == 1000)
    });
    write(d.path(), "c.yaml", &body("  - name: a\n  - name: b\n"));
    w.signal("HUP");
    w.until(
        Duration::from_secs(20),
        "a sample from the added node",
        |s| samples_of(s, "b").count() > 0,
    );
    let n = w.seen.len();
    w.until(Duration::from_secs(20), "two stats after the reload", |s| {
        stats_after(s, n).len() >= 2
    });
    for st in stats_after(&w.seen, n) {
        assert_eq!(st["interval_ms"], 1000, "{st}");
        assert_eq!(st["interval_max_ms"], 1000, "{st}");
        assert_eq!(st["nodes"], 2, "{st}");
    }
    w.signal("TERM");
    let (st, _) = w.wait(Duration::from_secs(20));
    assert_eq!(st.code(), Some(0));
}

#[test]
fn reload_that_changes_only_timing_keeps_the_resident_probes() {
    let d = tempfile::tempdir().unwrap();
    // Each start of a node's probe appends its pid to NODE.pids.
    let cmd = format!(
        "[sh, -c, 'echo $$ >> {{node}}.pids; exec {} {{node}} 0']",
        fake_probe().display()
    );
    let body = |timing: &str| {
        format!("{timing}transport: {{command: {cmd}}}\nnodes:\n  - name: a\n  - name: b\n")
    };
    write(
        d.path(),
        "c.yaml",
        &body("intervals: {base: 200ms, max: 200ms, spread: 0}\ntimeout: 5s\n"),
    );
    let mut w = Running::start(&["-c", "c.yaml", "--stats-every", "500ms"], d.path());
    w.until(Duration::from_secs(20), "samples from both", |s| {
        samples_of(s, "a").count() >= 2 && samples_of(s, "b").count() >= 2
    });
    let pids = |n: &str| std::fs::read_to_string(d.path().join(format!("{n}.pids"))).unwrap();
    let before = (pids("a"), pids("b"));
    assert_eq!(before.0.lines().count(), 1, "{before:?}");
    write(
        d.path(),
        "c.yaml",
        &body("intervals: {base: 200ms, max: 800ms, spread: 0}\ntimeout: 3s\n"),
    );
    w.signal("HUP");
    // Idle nodes now back off to the new maximum: the new timing is in force.
    let n = w.seen.len();
    w.until(
        Duration::from_secs(20),
        "idle nodes at the new maximum",
        |s| {
            stats_after(s, n)
                .iter()
                .any(|v| v["interval_max_ms"] == 800 && v["interval_ms"] == 800)
        },
    );
    let n = w.seen.len();
    w.until(Duration::from_secs(20), "both still polled", |s| {
        samples_of(&s[n..], "a").count() > 0 && samples_of(&s[n..], "b").count() > 0
    });
    assert_eq!((pids("a"), pids("b")), before, "a probe was restarted");
    w.signal("TERM");
    let (st, _) = w.wait(Duration::from_secs(20));
    assert_eq!(st.code(), Some(0));
}

#[test]
fn command_transport_receives_expected_gpus_and_probe_args_and_check_warns_when_dropped() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "c.yaml",
        "probe:\n  args: [--gpu-fixture, f.json]\n\
         transport: {command: [p, '{node}', --expect-gpus, '{expect_gpus}', '{probe_args}']}\n\
         nodes:\n  - {name: a, expected_gpus: 8}\n  - name: b\n    transport: {command: [q, '{node}']}\n    expected_gpus: 4\n",
    );
    let out = watch(d.path(), &["-c", "c.yaml", "--check"]);
    assert!(out.status.success());
    let recs = records(&out.stdout);
    assert_eq!(
        recs[0]["transport"]["command"],
        serde_json::json!(["p", "a", "--expect-gpus", "8", "--gpu-fixture", "f.json"])
    );
    assert_eq!(
        recs[1]["transport"]["command"],
        serde_json::json!(["q", "b"])
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node b: expected_gpus is not passed on"),
        "{err}"
    );
    assert!(err.contains("node b: probe.args is not passed on"), "{err}");
    assert!(!err.contains("node a:"), "{err}");
}

#[test]
fn expected_gpus_reaches_a_command_transport_probe() {
    let probe = probe_bin();
    if !require(
        "target/*/ugro-probe (cargo build --workspace)",
        probe.is_some(),
    ) {
        return;
    }
    let Some(probe) = probe else { return };
    let d = tempfile::tempdir().unwrap();
    let fixture = gpu_fixture("h200x8-idle.json");
    write(
        d.path(),
        "c.yaml",
        &format!(
            "probe:\n  args: [--gpu-fixture, {}]\n\
             intervals: {{base: 300ms, max: 300ms}}\n\
             transport: {{command: [{}, --serve, --node, '{{node}}', --expect-gpus, '{{expect_gpus}}', '{{probe_args}}']}}\n\
             nodes:\n  - {{name: a, expected_gpus: 4}}\n",
            fixture.display(),
            probe.display()
        ),
    );
    let out = watch(
        d.path(),
        &["-c", "c.yaml", "--cycles", "2", "--stats-every", "0"],
    );
    assert!(out.status.success());
    let recs = records(&out.stdout);
    let s = recs
        .iter()
        .find(|r| r["kind"] == "sample")
        .expect("a sample");
    assert!(s.get("unreachable").is_none(), "{s}");
    assert_eq!(s["gpu"]["devices"].as_array().map(Vec::len), Some(8), "{s}");
    assert_eq!(s["gpu"]["expected"], 4, "{s}");
}

#[test]
fn replay_reports_a_line_a_stage_rejects_with_its_number_and_exits_65() {
    let d = tempfile::tempdir().unwrap();
    let good = |s: u32| {
        format!(
            r#"{{"v":1,"kind":"sample","ts":"2026-11-28T00:00:{s:02}.000Z","node":"n1","gpu":{{"status":"ok","devices":[{{"index":0,"state":"ok"}}]}}}}"#
        )
    };
    // A valid header over an invalid sample: only ugro-score can tell.
    let bad = r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:01.000Z","node":"n1","gpu":7}"#;
    write(
        d.path(),
        "rec.jsonl",
        &format!("{}\n{bad}\n\n{}\n", good(0), good(2)),
    );
    let out = watch(d.path(), &["--replay", "rec.jsonl", "--pipeline"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(err.contains("ugro-score: line 2:"), "{err}");
    // Raw mode scores too (for the views and the state directory): the same line is bad
    // there, reported, and left out.
    let out = watch(d.path(), &["--replay", "rec.jsonl", "--format", "json"]);
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ugro-watch: line 2:"));
    assert_eq!(records(&out.stdout).len(), 2);
    // --strict stops at the bad line.
    let out = watch(
        d.path(),
        &["--replay", "rec.jsonl", "--pipeline", "--strict"],
    );
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2"));
}

#[test]
fn raw_mode_keeps_the_scorers_history_in_the_state_dir_across_restarts() {
    let d = tempfile::tempdir().unwrap();
    // n1 with `gpus` GPUs at second `s` of one minute.
    let line = |s: u32, gpus: u32| {
        let devices: Vec<String> = (0..gpus)
            .map(|i| format!(r#"{{"index":{i},"state":"ok","temperature_c":40}}"#))
            .collect();
        format!(
            r#"{{"v":1,"kind":"sample","ts":"2026-11-28T00:01:{s:02}.000Z","node":"n1","gpu":{{"status":"ok","devices":[{}]}},"host":{{"cpus":8,"load":[1.0,1.0,1.0],"memory_total_bytes":1000000000,"memory_available_bytes":800000000}}}}"#,
            devices.join(",")
        ) + "\n"
    };
    write(d.path(), "eight.jsonl", &line(0, 8));
    write(d.path(), "seven.jsonl", &line(30, 7));
    // One watcher process over `file`: n1's state file after it.
    let replay = |file: &str| -> Value {
        let out = watch(d.path(), &["--replay", file, "--state-dir", "st"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&std::fs::read(d.path().join("st/nodes/n1.json")).unwrap()).unwrap()
    };
    let n1 = replay("eight.jsonl");
    assert_eq!(n1["state"], "healthy", "{n1}");
    // A new watcher process: only the history in st/score.json knows n1 had eight GPUs.
    let n1 = replay("seven.jsonl");
    assert_eq!(n1["state"], "critical", "{n1}");
    assert!(n1.to_string().contains("gpu_missing_since_seen"), "{n1}");
    let saved: Value =
        serde_json::from_slice(&std::fs::read(d.path().join("st/score.json")).unwrap()).unwrap();
    assert_eq!(saved["format"], "ugro-score");
}

fn shard_cluster(dir: &std::path::Path, nodes: usize, extra: &str) {
    let mut text = format!(
        "{extra}intervals: {{base: 1s, max: 1s, spread: 0}}\ntransport: {{command: {}}}\nnodes:\n",
        fake("'0'")
    );
    for i in 0..nodes {
        text.push_str(&format!("  - name: gpu-{i:03}\n"));
    }
    write(dir, "c.yaml", &text);
}

#[test]
fn shards_split_the_fleet_so_that_every_node_is_polled_by_exactly_its_shard() {
    let d = tempfile::tempdir().unwrap();
    shard_cluster(d.path(), 24, "");
    let check = watch(d.path(), &["-c", "c.yaml", "--check", "--shard", "1/2"]);
    assert!(check.status.success());
    let assigned: Vec<(String, String, bool)> = records(&check.stdout)
        .iter()
        .map(|r| {
            let node = r["node"].as_str().unwrap().to_owned();
            let shard = r["shard"].as_str().unwrap().to_owned();
            (node, shard, r["watched"].as_bool().unwrap())
        })
        .collect();
    assert_eq!(assigned.len(), 24, "--check lists every node of the file");
    for (n, s, w) in &assigned {
        assert_eq!(*w, s == "1/2", "{n}");
    }
    for shard in ["1/2", "2/2"] {
        let out = watch(
            d.path(),
            &[
                "-c",
                "c.yaml",
                "--shard",
                shard,
                "--cycles",
                "1",
                "--stats-every",
                "0",
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut polled: Vec<String> = records(&out.stdout)
            .iter()
            .filter(|r| r["kind"] == "sample")
            .map(|r| r["node"].as_str().unwrap().to_owned())
            .collect();
        polled.sort();
        polled.dedup();
        let mut want: Vec<String> = assigned
            .iter()
            .filter(|(_, s, _)| s == shard)
            .map(|(n, _, _)| n.clone())
            .collect();
        want.sort();
        assert!(!want.is_empty() && want.len() < 24, "{shard}: {want:?}");
        assert_eq!(polled, want, "shard {shard}");
    }
}

#[test]
fn cluster_file_shard_applies_unless_the_command_line_names_another_and_bad_ones_are_refused() {
    let d = tempfile::tempdir().unwrap();
    shard_cluster(d.path(), 8, "shard: 2/2\n");
    let check = watch(d.path(), &["-c", "c.yaml", "--check"]);
    let recs = records(&check.stdout);
    assert!(recs.iter().all(|r| r["watched"] == (r["shard"] == "2/2")));
    let check = watch(d.path(), &["-c", "c.yaml", "--check", "--shard", "1/2"]);
    let recs = records(&check.stdout);
    assert!(recs.iter().all(|r| r["watched"] == (r["shard"] == "1/2")));

    shard_cluster(d.path(), 8, "shard: 3/2\n");
    let out = watch(d.path(), &["-c", "c.yaml", "--check"]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("c.yaml:1: shard"), "{err}");

    shard_cluster(d.path(), 1, "");
    let out = watch(d.path(), &["-c", "c.yaml", "--check", "--shard", "0/2"]);
    assert_eq!(out.status.code(), Some(64), "--shard is 1-based");
    // One node, many shards: the shards without it refuse to start rather than watch no one.
    let empty = (1..=8)
        .map(|i| {
            watch(
                d.path(),
                &[
                    "-c",
                    "c.yaml",
                    "--shard",
                    &format!("{i}/8"),
                    "--cycles",
                    "1",
                ],
            )
        })
        .filter(|o| o.status.code() == Some(64))
        .count();
    assert_eq!(empty, 7);
}
