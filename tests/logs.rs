//! Log output on stderr, as cron mail, the journal and log shippers get it: no escape codes
//! unless stderr is a terminal (and NO_COLOR is unset), every line naming its tool, and one
//! JSON object per event with `UGRO_LOG_FORMAT=json`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the test's failure report

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};

use ugro_e2e::{bin, require, run_tool};

/// A directory with an alert configuration whose only receiver fails (so ugro-alert logs a
/// warning per attempt) and a scored sample to feed it.
fn failing_receiver() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("alert.yaml"),
        // One sample: it fires at once (no `for`), so the receiver is tried.
        "alert_rules: {'*': {for: 0}}\nroute:\n  receiver: fail\nreceivers:\n  - name: fail\n    exec:\n      \
         command: [/bin/false]\ndelivery:\n  backoff: 10ms\n",
    )
    .unwrap();
    let cpu = dir.path().join("cpu.json");
    let sample = Command::new(bin("ugro-probe"))
        .args([
            "--node",
            "gpu-01",
            "--no-gpu",
            "--cpu-window",
            "0",
            "--cpu-state-file",
        ])
        .arg(cpu)
        .output()
        .unwrap();
    assert!(sample.status.success(), "{sample:?}");
    let scored = run_tool("ugro-score", &[], &sample.stdout);
    assert!(scored.status.success(), "{scored:?}");
    std::fs::write(dir.path().join("scored.jsonl"), scored.stdout).unwrap();
    dir
}

/// Runs ugro-alert on the scored sample with stderr sent to a file, and returns that file.
fn alert_stderr_to_file(dir: &Path, env: &[(&str, &str)]) -> String {
    let err = dir.join("err");
    let status = Command::new(bin("ugro-alert"))
        .arg("-c")
        .arg(dir.join("alert.yaml"))
        .arg("--state")
        .arg(dir.join(format!("state-{}.json", env.len())))
        .stdin(File::open(dir.join("scored.jsonl")).unwrap())
        .stdout(Stdio::null())
        .stderr(File::create(&err).unwrap())
        .env_remove("NO_COLOR")
        .env_remove("UGRO_LOG_FORMAT")
        .envs(env.iter().copied())
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    std::fs::read_to_string(err).unwrap()
}

#[test]
fn log_lines_written_to_a_file_carry_no_escape_codes_and_name_the_tool() {
    let dir = failing_receiver();
    let err = alert_stderr_to_file(dir.path(), &[]);
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.len() >= 3, "expected a warning per attempt:\n{err}");
    for line in lines {
        assert!(!line.contains('\u{1b}'), "escape code in {line:?}");
        assert!(line.starts_with("ugro-alert: "), "{line:?}");
        assert!(line.contains(" WARN "), "{line:?}");
    }
}

/// Runs `command` on a pseudo-terminal (util-linux `script`) and returns what it printed.
fn on_a_terminal(command: &str, no_color: Option<&str>) -> String {
    let mut c = Command::new("script");
    c.args(["-qec", command, "/dev/null"])
        .stdin(Stdio::null())
        .env_remove("NO_COLOR")
        .env_remove("UGRO_LOG_FORMAT");
    if let Some(v) = no_color {
        c.env("NO_COLOR", v);
    }
    let out = c.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn log_lines_on_a_terminal_are_coloured_unless_no_color_is_set() {
    let have_script = Command::new("script").arg("--version").output().is_ok();
    if !require("script (util-linux)", have_script) {
        return;
    }
    let dir = failing_receiver();
    let d = dir.path().display();
    let alert = bin("ugro-alert");
    let cmd = |state: &str| {
        format!(
            "{} -c {d}/alert.yaml --state {d}/{state} < {d}/scored.jsonl > /dev/null",
            alert.display()
        )
    };
    let coloured = on_a_terminal(&cmd("tty.json"), None);
    assert!(coloured.contains("WARN"), "{coloured:?}");
    assert!(
        coloured.contains("\u{1b}["),
        "no colour on a terminal: {coloured:?}"
    );
    let empty = on_a_terminal(&cmd("tty-empty.json"), Some(""));
    assert!(
        empty.contains("\u{1b}["),
        "an empty NO_COLOR is unset: {empty:?}"
    );
    let plain = on_a_terminal(&cmd("tty-no-color.json"), Some("1"));
    assert!(plain.contains("WARN"), "{plain:?}");
    assert!(
        !plain.contains('\u{1b}'),
        "colour despite NO_COLOR: {plain:?}"
    );
}

/// One event as `UGRO_LOG_FORMAT=json` writes it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LogLine {
    tool: String,
    timestamp: String,
    level: String,
    message: String,
}

#[test]
fn json_log_format_writes_one_object_per_event() {
    let dir = failing_receiver();
    let err = alert_stderr_to_file(dir.path(), &[("UGRO_LOG_FORMAT", "json")]);
    let events: Vec<LogLine> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a log object ({e}): {l}")))
        .collect();
    assert!(events.len() >= 3, "{err}");
    for e in &events {
        assert_eq!(e.tool, "ugro-alert");
        assert_eq!(e.level, "WARN");
        assert!(e.message.starts_with("receiver fail: "), "{e:?}");
        assert!(ugro_types::Timestamp::parse(&e.timestamp).is_ok(), "{e:?}");
    }
}

#[test]
fn json_log_format_is_the_same_in_another_tool() {
    let dir = tempfile::tempdir().unwrap();
    // Resetting a node the breaker never saw changes nothing and says so as a warning.
    let out = Command::new(bin("ugro-breaker"))
        .arg("--state")
        .arg(dir.path().join("breaker.json"))
        .args(["reset", "gpu-01"])
        .env("UGRO_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    let event: LogLine = serde_json::from_str(err.trim()).unwrap_or_else(|e| panic!("{e}: {err}"));
    assert_eq!(
        (event.tool.as_str(), event.level.as_str()),
        ("ugro-breaker", "WARN")
    );
    assert!(event.message.contains("gpu-01"), "{event:?}");
}

#[test]
fn unknown_log_format_is_reported_and_text_written() {
    let dir = failing_receiver();
    let err = alert_stderr_to_file(dir.path(), &[("UGRO_LOG_FORMAT", "xml")]);
    let mut lines = err.lines();
    assert_eq!(
        lines.next(),
        Some("UGRO_LOG_FORMAT: unknown format \"xml\" (text, json); writing text")
    );
    assert!(lines.all(|l| l.starts_with("ugro-alert: ")), "{err}");
}
