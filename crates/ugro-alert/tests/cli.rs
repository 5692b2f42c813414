//! The binary: cron-style runs with a state file, bad lines, configuration errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ugro_types::Timestamp;

fn alerts(out: &std::process::Output) -> Vec<(String, String, String)> {
    let mut v: Vec<_> = records(out)
        .iter()
        .map(|r| {
            assert_eq!(r["kind"], "alert");
            (
                r["labels"]["alertname"].as_str().unwrap().to_owned(),
                r["labels"]["node"].as_str().unwrap_or("").to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn successive_cron_runs_keep_pending_state_notify_once_then_resolve() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("alert.json");
    let st = state.to_str().unwrap();
    let t = Timestamp(1_795_000_000_000);
    let cron = |s: i64, state: &str, reasons: &str| {
        let out = run(
            &["--state", st],
            &sample("gpu-01", secs(t, s), state, reasons),
            &[],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    // Bad samples are pending (for: 3 samples), kept in the state file, not paged.
    let run1 = cron(0, "critical", XID);
    assert!(alerts(&run1).is_empty(), "a single sample never pages");
    assert!(alerts(&cron(15, "critical", XID)).is_empty(), "nor two");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&state).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let run2 = cron(30, "critical", XID);
    assert_eq!(
        alerts(&run2),
        // NodeCritical would repeat what GpuXidFatal names.
        [("GpuXidFatal".into(), "gpu-01".into(), "firing".into())],
        "the third sample in a row, in its own run, fires"
    );
    let rec = &records(&run2)[0];
    let labels: ugro_types::LabelSet = serde_json::from_value(rec["labels"].clone()).unwrap();
    assert_eq!(rec["fingerprint"], ugro_types::fingerprint_hex(&labels));

    assert!(
        alerts(&cron(300, "critical", XID)).is_empty(),
        "no repeat within repeat_interval"
    );
    assert!(
        alerts(&cron(600, "healthy", "")).is_empty(),
        "keep_firing_for: 1 sample"
    );
    assert_eq!(
        alerts(&cron(630, "healthy", "")),
        [("GpuXidFatal".into(), "gpu-01".into(), "resolved".into())],
        "the second healthy sample in a row (keep_firing_for: 1) resolves, in its own run"
    );
    assert!(alerts(&cron(900, "healthy", "")).is_empty());
}

#[test]
fn cron_runs_of_one_poll_each_skip_blips_like_a_stream() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("alert.json");
    let t = Timestamp(1_795_000_000_000);
    // n1: a one-sample blip then a two-sample burst; n2: a three-sample degraded spike; all
    // below their `for`.
    let polls = [
        ("critical", "healthy"),
        ("healthy", "degraded"),
        ("critical", "degraded"),
        ("critical", "degraded"),
        ("healthy", "healthy"),
    ];
    for (i, (a, b)) in polls.iter().enumerate() {
        let s = i as i64 * 30;
        let input = format!(
            "{}\n{}\n",
            sample("n1", secs(t, s), a, ""),
            sample("n2", secs(t, s), b, "")
        );
        let out = run(&["--state", st.to_str().unwrap()], &input, &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(alerts(&out).is_empty(), "poll {i}: {:?}", alerts(&out));
    }
}

#[test]
fn bad_lines_are_reported_counted_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let st = dir.path().join("s.json");
    let t = Timestamp(1_795_000_000_000);
    let input = format!(
        "not json\n{}\n{}\n{}\n",
        r#"{"v":1,"kind":"sample","ts":"2026-11-28T00:00:00Z","node":"n1"}"#,
        r#"{"v":1,"kind":"stats","ts":"2026-11-28T00:00:00Z","node":"n1","tool":"x","to":5}"#,
        // Three polls in a row: NodeCritical's `for`.
        [0, 30, 60]
            .map(|s| sample("n2", secs(t, s), "critical", ""))
            .join("\n")
    );
    let out = run(&["--state", st.to_str().unwrap()], &input, &[]);
    assert_eq!(out.status.code(), Some(65));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ugro-alert: line 1:"), "{err}");
    assert!(err.contains("line 2: sample has no score"), "{err}");
    assert!(
        !err.contains("line 3"),
        "other kinds are consumed quietly: {err}"
    );
    assert_eq!(
        alerts(&out),
        [("NodeCritical".into(), "n2".into(), "firing".into())]
    );
}

#[test]
fn configuration_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("alert.yaml");
    write(
        &cfg,
        "receivers:\n  - name: a\n    stdout: {}\nroute:\n  receiver: nobody\n",
    );
    let out = run(&["-c", cfg.to_str().unwrap(), "--check-config"], "", &[]);
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("alert.yaml:5: route.receiver: unknown receiver \"nobody\""),
        "{err}"
    );
}

#[test]
fn shipped_example_configurations_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples-config");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_owned();
        if name.starts_with("alert") && name.ends_with(".yaml") {
            let out = run(
                &["-c", p.to_str().unwrap(), "--check-config"],
                "",
                &[("SLACK_URL", "http://127.0.0.1:1/x")],
            );
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n >= 1);
    let sil = dir.join("silences.yaml");
    let out = run(
        &["--silences", sil.to_str().unwrap(), "--check-config"],
        "",
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_record_from_the_future_is_a_bad_line_and_the_next_run_is_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("alert.json");
    let st = state.to_str().unwrap();
    let t = Timestamp(1_795_000_000_000);
    let future = sample(
        "gpu-09",
        Timestamp::parse("2100-01-01T00:00:00Z").unwrap(),
        "critical",
        "",
    );
    let run1 = run(
        &["--state", st],
        &[
            future,
            sample("gpu-01", t, "critical", ""),
            sample("gpu-01", secs(t, 30), "critical", ""),
            sample("gpu-01", secs(t, 60), "critical", ""),
        ]
        .join("\n"),
        &[],
    );
    assert_eq!(run1.status.code(), Some(65));
    let err = String::from_utf8_lossy(&run1.stderr);
    assert!(
        err.contains("line 1: ts 2100-01-01T00:00:00")
            && err.contains("ahead of this host's clock"),
        "{err}"
    );
    assert_eq!(
        alerts(&run1),
        [("NodeCritical".into(), "gpu-01".into(), "firing".into())]
    );
    // Record time was not dragged to 2100: the node's recovery five minutes later resolves
    // (on its second healthy sample, keep_firing_for).
    let run2 = run(
        &["--state", st],
        &[300, 330]
            .map(|s| sample("gpu-01", secs(t, s), "healthy", ""))
            .join("\n"),
        &[],
    );
    assert!(
        run2.status.success(),
        "{}",
        String::from_utf8_lossy(&run2.stderr)
    );
    assert_eq!(
        alerts(&run2),
        [("NodeCritical".into(), "gpu-01".into(), "resolved".into())]
    );
}
