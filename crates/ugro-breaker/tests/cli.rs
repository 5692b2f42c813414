//! The binary: state across invocations, concurrency, crashes, corrupt files, operator commands.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_ugro-breaker");
const T0: i64 = 1_795_824_000_000; // 2026-11-28T00:00:00Z

fn ts(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis((T0 + secs * 1000) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn sample(node: &str, secs: i64, state: &str) -> String {
    json!({
        "v": 1, "kind": "sample", "ts": ts(secs), "node": node,
        "score": {"state": state, "action": "none", "components": {}, "reasons": [], "summary": ""},
    })
    .to_string()
}

fn breaker(state: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.arg("--state").arg(state).env("UGRO_LOG", "warn");
    c
}

struct Run {
    code: i32,
    out: Vec<Value>,
    stdout: String,
    stderr: String,
}

fn run(cmd: Command, input: &str) -> Run {
    let out = assert_cmd::Command::from_std(cmd)
        .write_stdin(input.to_owned())
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        out: stdout
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
        stdout,
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn lines(ls: &[String]) -> String {
    ls.iter().map(|l| format!("{l}\n")).collect()
}

fn status_json(state: &Path) -> Value {
    let mut c = breaker(state);
    c.args(["status", "--format", "json"]);
    let r = run(c, "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

fn node<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == name)
        .unwrap_or_else(|| panic!("{name} not in {status}"))
}

#[test]
fn counts_carry_over_between_invocations() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("b/breaker.json");
    let r = run(
        breaker(&state),
        &lines(&[sample("n1", 0, "critical"), sample("n1", 60, "critical")]),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.out.len(), 2);
    assert_eq!(r.out[1]["breaker"]["consecutive_failures"], 2);
    let mode = std::fs::metadata(&state).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    let r = run(breaker(&state), &lines(&[sample("n1", 120, "critical")]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.out[0]["kind"], "transition");
    assert_eq!(r.out[0]["consecutive_failures"], 3);
    assert_eq!(r.out[1]["breaker"]["state"], "open");

    // Third run: still open, so a failure is held; a recovery passes, still open (evidence
    // for the alert stage), and the wait goes on; after it, the trial closes it.
    let r = run(breaker(&state), &lines(&[sample("n1", 150, "critical")]));
    assert!(r.out.is_empty(), "{:?}", r.out);
    let r = run(breaker(&state), &lines(&[sample("n1", 180, "healthy")]));
    assert_eq!(r.out.len(), 1, "{:?}", r.out);
    assert_eq!(r.out[0]["kind"], "sample");
    assert_eq!(r.out[0]["breaker"]["state"], "open");
    let r = run(breaker(&state), &lines(&[sample("n1", 420, "healthy")]));
    let reasons: Vec<&str> = r.out.iter().filter_map(|v| v["reason"].as_str()).collect();
    assert_eq!(reasons, ["wait_elapsed", "trial_succeeded"]);
    let s = status_json(&state);
    assert_eq!(node(&s, "n1")["state"], "closed");
    assert_eq!(node(&s, "n1")["held"], 1);
    assert_eq!(node(&s, "n1")["trips"].as_array().unwrap().len(), 1);
}

#[test]
fn fifty_concurrent_invocations_lose_no_update() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("breaker.json");
    let mut c = breaker(&state);
    c.args(["metrics-only", "shared"]);
    assert_eq!(run(c, "").code, 0);

    let children: Vec<_> = (0..50)
        .map(|i| {
            let mut child = breaker(&state)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let input = lines(&[
                sample("shared", 0, "critical"),
                sample(&format!("own-{i}"), 0, "critical"),
            ]);
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            child
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let s = status_json(&state);
    assert_eq!(s["nodes"].as_array().unwrap().len(), 51);
    assert_eq!(node(&s, "shared")["consecutive_failures"], 50);
    for i in 0..50 {
        assert_eq!(node(&s, &format!("own-{i}"))["consecutive_failures"], 1);
    }
}

#[test]
fn sigkill_during_writes_never_leaves_a_corrupt_file() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("breaker.json");
    let cfg = d.path().join("b.yaml");
    // Every record is a transition and every transition is written: the file is being replaced
    // all the time the process runs.
    std::fs::write(
        &cfg,
        "failure_threshold: 1\nwait_duration_in_open_state: 1s\npersist_interval: 0s\nfleet_guard:\n  enabled: false\n",
    )
    .unwrap();
    let mut input = String::new();
    for round in 0..400 {
        for n in 0..20 {
            let state = if round % 2 == 0 {
                "critical"
            } else {
                "healthy"
            };
            input.push_str(&sample(&format!("n{n}"), round * 2, state));
            input.push('\n');
        }
    }
    let mut seed: u64 = std::process::id().into();
    let mut saw_file = 0;
    let mut last = Vec::new();
    for _ in 0..60 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let delay = Duration::from_millis(5 + (seed >> 33) % 150);
        let mut child = breaker(&state)
            .arg("-c")
            .arg(&cfg)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let feed = input.clone();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(feed.as_bytes());
        });
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        let _ = writer.join();
        if let Ok(bytes) = std::fs::read(&state) {
            let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "corrupt after SIGKILL: {e}: {}",
                    String::from_utf8_lossy(&bytes)
                )
            });
            assert_eq!(v["format"], "ugro-breaker");
            if bytes != last {
                saw_file += 1;
                last = bytes;
            }
        }
    }
    assert!(
        saw_file >= 3,
        "the kills must land while the file is being rewritten (saw {saw_file} versions)"
    );
    let s = status_json(&state);
    assert!(!s["nodes"].as_array().unwrap().is_empty());
}

#[test]
fn corrupt_or_foreign_state_exits_78_and_is_left_untouched() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("breaker.json");
    for bad in [
        &b"{\"format\":\"ugro-breaker\",\"version\":1,\"data\":{\"nodes\":"[..],
        br#"{"format":"ugro-breaker","version":99,"data":{}}"#,
        br#"{"format":"ugro-alert","version":1,"data":{}}"#,
    ] {
        std::fs::write(&state, bad).unwrap();
        for args in [&[][..], &["status"][..], &["reset", "n1"][..]] {
            let mut c = breaker(&state);
            c.args(args);
            let r = run(c, &lines(&[sample("n1", 0, "critical")]));
            assert_eq!(r.code, 78, "{args:?}: {}", r.stderr);
            assert!(
                r.stderr.contains(&state.display().to_string()),
                "{}",
                r.stderr
            );
            assert!(r.stderr.contains("--reset-state"), "{}", r.stderr);
            assert!(r.out.is_empty());
            assert_eq!(std::fs::read(&state).unwrap(), bad, "file touched");
        }
    }
    let mut c = breaker(&state);
    c.arg("--reset-state");
    let r = run(c, &lines(&[sample("n1", 0, "critical")]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(node(&status_json(&state), "n1")["consecutive_failures"], 1);
}

#[test]
fn operator_commands_change_the_state_and_print_transitions() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("breaker.json");
    let mut c = breaker(&state);
    c.args(["force-open", "gpu-07"]);
    let r = run(c, "");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.out.len(), 1);
    let t = &r.out[0];
    assert_eq!(
        (t["kind"].as_str(), t["from"].as_str(), t["to"].as_str()),
        (Some("transition"), Some("closed"), Some("forced_open"))
    );
    assert_eq!(t["reason"], "operator_force_open");

    let r = run(
        breaker(&state),
        &lines(&[
            sample("gpu-07", 0, "healthy"),
            sample("gpu-08", 0, "healthy"),
        ]),
    );
    assert_eq!(r.out.len(), 1, "gpu-07 held");
    assert_eq!(r.out[0]["node"], "gpu-08");

    let mut c = breaker(&state);
    c.arg("status");
    let r = run(c, "");
    assert_eq!(r.code, 0);
    let row = r.stdout.lines().find(|l| l.starts_with("gpu-07")).unwrap();
    assert!(row.contains("forced_open"), "{}", r.stdout);
    assert!(r.stdout.starts_with("NODE"), "{}", r.stdout);

    let mut c = breaker(&state);
    c.args(["reset", "gpu-07"]);
    let r = run(c, "");
    assert_eq!(r.out[0]["to"], "closed");
    assert_eq!(node(&status_json(&state), "gpu-07")["state"], "closed");

    let mut c = breaker(&state);
    c.args(["forget", "gpu-08"]);
    assert_eq!(run(c, "").code, 0);
    let s = status_json(&state);
    assert_eq!(s["nodes"].as_array().unwrap().len(), 1, "{s}");

    for bad in ["-rf", "../etc", "a b", "*"] {
        let mut c = breaker(&state);
        c.args(["reset", "--", bad]);
        assert_eq!(run(c, "").code, 64, "{bad}");
    }
}

#[test]
fn bad_lines_are_reported_and_skipped_with_status_65() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("breaker.json");
    let input = format!(
        "{}\nnot json\n{{\"v\":1,\"kind\":\"sample\",\"ts\":\"2026-11-28T00:00:00Z\",\"node\":\"n2\"}}\n{}\n",
        sample("n1", 0, "healthy"),
        sample("n1", 1, "healthy")
    );
    let r = run(breaker(&state), &input);
    assert_eq!(r.code, 65);
    assert_eq!(r.out.len(), 2);
    assert!(r.stderr.contains("ugro-breaker: line 2: "), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("ugro-breaker: line 3: sample without `score`"),
        "{}",
        r.stderr
    );
    let mut c = breaker(&state);
    c.arg("--strict");
    let r = run(c, &input);
    assert_eq!(r.code, 65);
    assert_eq!(r.out.len(), 1);
}

#[test]
fn config_errors_name_the_file_and_line() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("breaker.json");
    let cfg = d.path().join("b.yaml");
    std::fs::write(&cfg, "failure_threshold: 3\nfleet_guard:\n  threshold: 2\n").unwrap();
    let mut c = breaker(&state);
    c.arg("-c").arg(&cfg);
    let r = run(c, "");
    assert_eq!(r.code, 78);
    assert!(
        r.stderr.contains("b.yaml:3: fleet_guard.threshold"),
        "{}",
        r.stderr
    );
    let mut c = breaker(&state);
    c.arg("-c").arg(d.path().join("missing.yaml"));
    assert_eq!(run(c, "").code, 66);
    assert!(!state.exists(), "no state written when the config is bad");
}

#[test]
fn pass_open_flag_annotates_held_records() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("breaker.json");
    let mut c = breaker(&state);
    c.args(["force-open", "n1"]);
    run(c, "");
    let mut c = breaker(&state);
    c.arg("--pass-open");
    let r = run(c, &lines(&[sample("n1", 0, "healthy")]));
    assert_eq!(r.out[0]["breaker"]["state"], "forced_open");
}

#[test]
fn a_long_run_writes_its_state_after_transitions_not_only_at_the_end() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("breaker.json");
    let cfg = d.path().join("b.yaml");
    std::fs::write(&cfg, "persist_interval: 0s\n").unwrap();
    let mut child = breaker(&state)
        .arg("-c")
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = lines(&[
        sample("n1", 0, "critical"),
        sample("n1", 10, "critical"),
        sample("n1", 20, "critical"),
    ]);
    stdin.write_all(input.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let mut opened = false;
    for _ in 0..200 {
        if let Ok(bytes) = std::fs::read(&state) {
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            if v["data"]["nodes"]["n1"]["state"] == "open" {
                opened = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(opened, "state not written while the input was still open");
}

#[test]
fn status_answers_while_a_long_run_holds_the_state_lock() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("b.json");
    // A first run leaves a state file with one node in it.
    let line = r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n1","score":{"state":"critical","action":"reboot","components":{},"reasons":[],"summary":"x"}}"#;
    let out = assert_cmd::Command::cargo_bin("ugro-breaker")
        .unwrap()
        .arg("--state")
        .arg(&state)
        .write_stdin(format!("{line}\n"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Now something (a running ugro-watch, say) holds the lock for a long time.
    let _held = ugro_support::state::StateLock::acquire(&state).unwrap();
    let started = std::time::Instant::now();
    let out = assert_cmd::Command::cargo_bin("ugro-breaker")
        .unwrap()
        .args(["status", "--format", "json", "--state"])
        .arg(&state)
        .timeout(std::time::Duration::from_secs(20))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "status blocked or failed after {:?}: {}",
        started.elapsed(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(node(&v, "n1")["consecutive_failures"], 1, "{v}");
}

#[test]
fn a_record_from_the_future_is_a_bad_line_and_poisons_no_clock() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("b.json");
    let future = json!({
        "v": 1, "kind": "sample", "ts": "2100-01-01T00:00:00Z", "node": "n1",
        "score": {"state": "critical", "action": "none", "components": {}, "reasons": [], "summary": ""},
    })
    .to_string();
    let r = run(
        breaker(&state),
        &lines(&[
            future,
            sample("n1", 0, "critical"),
            sample("n1", 10, "critical"),
        ]),
    );
    assert_eq!(r.code, 65, "{}", r.stderr);
    assert!(
        r.stderr.contains("line 1: ts 2100-01-01T00:00:00")
            && r.stderr.contains("ahead of this host's clock"),
        "{}",
        r.stderr
    );
    assert_eq!(r.out.len(), 2);
    let st = status_json(&state);
    assert_eq!(node(&st, "n1")["consecutive_failures"], 2, "{st}");
}

#[test]
fn operator_commands_against_a_live_run_are_queued_and_applied_in_its_stream() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("b.json");
    let mut child = breaker(&state)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let trips = lines(&[
        sample("n1", 0, "critical"),
        sample("n1", 10, "critical"),
        sample("n1", 20, "critical"),
    ]);
    stdin.write_all(trips.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let start = std::time::Instant::now();
    // Probing with try_acquire takes the lock for an instant when it is free: harmless here,
    // the filter then simply waits for it.
    while ugro_support::state::StateLock::try_acquire(&state)
        .unwrap()
        .is_some()
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "filter never locked"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The filter holds the lock for as long as its input is open; reset must not wait for it.
    let out = assert_cmd::Command::cargo_bin("ugro-breaker")
        .unwrap()
        .args(["reset", "n1", "--state"])
        .arg(&state)
        .env("UGRO_LOG", "warn")
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "reset blocked or failed: {err}");
    assert!(err.contains("queued"), "{err}");
    assert!(out.stdout.is_empty());
    std::thread::sleep(Duration::from_millis(700));
    stdin
        .write_all(lines(&[sample("n1", 30, "healthy")]).as_bytes())
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recs: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tail: Vec<(String, String)> = recs[recs.len() - 2..]
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_owned(),
                r.get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or(r["breaker"]["state"].as_str().unwrap_or(""))
                    .to_owned(),
            )
        })
        .collect();
    assert_eq!(
        tail,
        [
            ("transition".to_owned(), "operator_reset".to_owned()),
            ("sample".to_owned(), "closed".to_owned())
        ]
    );
    assert_eq!(node(&status_json(&state), "n1")["state"], "closed");
    assert!(!ugro_breaker::ops::pending(&state));
}

/// A run (no command), `status` and an operator command on `state`, each bounded so that a
/// blocking open fails the test instead of hanging it.
fn every_entry(state: &Path) -> Vec<(Vec<&'static str>, i32, String)> {
    [&[][..], &["status"][..], &["reset", "n1"][..]]
        .into_iter()
        .map(|args| {
            let mut c = breaker(state);
            c.args(args);
            let out = assert_cmd::Command::from_std(c)
                .write_stdin(lines(&[sample("n1", 0, "critical")]))
                .timeout(std::time::Duration::from_secs(60))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            (args.to_vec(), out.status.code().unwrap_or(-1), stderr)
        })
        .collect()
}

#[test]
fn node_names_in_a_state_file_are_checked_on_load() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("breaker.json");
    assert_eq!(
        run(breaker(&state), &lines(&[sample("n1", 0, "critical")])).code,
        0
    );
    let good = std::fs::read_to_string(&state).unwrap();
    for evil in ["../../etc/passwd", "$(reboot)"] {
        let bad = good.replace("\"n1\"", &format!("{evil:?}"));
        std::fs::write(&state, &bad).unwrap();
        for (args, code, stderr) in every_entry(&state) {
            assert_eq!(code, 78, "{evil} {args:?}: {stderr}");
            assert!(stderr.contains("invalid node name"), "{stderr}");
        }
        assert_eq!(
            std::fs::read_to_string(&state).unwrap(),
            bad,
            "left untouched"
        );
    }
}

#[test]
fn a_symlinked_state_file_is_followed_and_the_link_kept() {
    let d = tempfile::tempdir().unwrap();
    let real = d.path().join("real.json");
    let link = d.path().join("link.json");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    assert_eq!(
        run(breaker(&link), &lines(&[sample("n1", 0, "critical")])).code,
        0
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(node(&status_json(&real), "n1")["consecutive_failures"], 1);
}

#[test]
fn a_journal_with_a_bad_byte_is_kept_aside_and_never_blocks_a_run() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("breaker.json");
    let journal = d.path().join("breaker.json.ops");
    std::fs::write(&journal, b"{\"node\":\"n\xff\"}\n").unwrap();
    let r = run(breaker(&state), &lines(&[sample("n1", 0, "critical")]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("breaker.json.ops.corrupt"),
        "{}",
        r.stderr
    );
    assert!(d.path().join("breaker.json.ops.corrupt").exists());
    let mut c = breaker(&state);
    c.arg("--reset-state");
    assert_eq!(run(c, &lines(&[sample("n1", 0, "critical")])).code, 0);
}
