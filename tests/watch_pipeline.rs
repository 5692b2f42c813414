//! `ugro-watch --pipeline` gives the same records as
//! `ugro-score -c S | ugro-breaker -c B --state F1 | ugro-alert -c A --state F2`
//! on the same recorded input.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is the test's failure report

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use ugro_e2e::{bin, records, root};

fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().expect("writer");
    out
}

/// Records a live run: real probes on GPU fixtures (healthy, XID 79, pending row remap, a
/// missing GPU), a probe that exits and one that hangs, through the command transport.
fn record(dir: &std::path::Path) -> Vec<u8> {
    let probe = bin("ugro-probe");
    let fixtures = root().join("crates/ugro-probe/fixtures");
    let fake = root().join("crates/ugro-watch/tests/fixtures/fake-probe.sh");
    let real = |fixture: &str| {
        format!(
            "{{command: [{}, --serve, --node, '{{node}}', --gpu-fixture, {}]}}",
            probe.display(),
            fixtures.join(fixture).display()
        )
    };
    let yaml = format!(
        "intervals: {{base: 300ms, max: 300ms, spread: 0}}\ntimeout: 1s\nnodes:\n\
         \x20 - {{name: ok-1, transport: {ok}}}\n\
         \x20 - {{name: ok-2, transport: {ok}}}\n\
         \x20 - {{name: xid79, transport: {xid}}}\n\
         \x20 - {{name: remap, transport: {remap}}}\n\
         \x20 - {{name: seven, transport: {seven}}}\n\
         \x20 - {{name: exits, transport: {{command: [{fake}, '{{node}}', '0', exit]}}}}\n\
         \x20 - {{name: hangs, transport: {{command: [{fake}, '{{node}}', '0', hang]}}}}\n",
        ok = real("h200x8-idle.json"),
        xid = real("fault-xid79-gpu-lost.json"),
        remap = real("fault-remap-pending.json"),
        seven = real("fault-7-of-8.json"),
        fake = fake.display(),
    );
    std::fs::write(dir.join("cluster.yaml"), yaml).expect("cluster.yaml");
    let out = Command::new(bin("ugro-watch"))
        .args([
            "-c",
            "cluster.yaml",
            "--cycles",
            "10",
            "--stats-every",
            "1s",
        ])
        .current_dir(dir)
        .output()
        .expect("ugro-watch");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn in_process_pipeline_equals_the_shell_pipeline_on_recorded_input() {
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path();
    let recorded = record(dir);
    let input = records(&recorded);
    let nodes: std::collections::HashSet<&str> =
        input.iter().filter_map(|r| r["node"].as_str()).collect();
    assert!(nodes.len() >= 8, "recorded nodes: {nodes:?}");
    assert!(
        input
            .iter()
            .any(|r| r["node"] == "hangs" && r["unreachable"]["cause"] == "timeout")
    );
    assert!(input.iter().any(|r| r["kind"] == "stats"));
    std::fs::write(dir.join("recorded.jsonl"), &recorded).expect("write");
    std::fs::write(
        dir.join("breaker.yaml"),
        "failure_threshold: 2\nwait_duration_in_open_state: 1s\nenable_exponential_backoff: false\n",
    )
    .expect("breaker.yaml");
    std::fs::write(
        dir.join("alert.yaml"),
        "route:\n  receiver: stdout\n  group_wait: 1s\n",
    )
    .expect("alert.yaml");

    let watch = Command::new(bin("ugro-watch"))
        .args([
            "--replay",
            "recorded.jsonl",
            "--pipeline",
            "--breaker-config",
            "breaker.yaml",
            "--alert-config",
            "alert.yaml",
            "--breaker-state",
            "w-breaker.json",
            "--alert-state",
            "w-alert.json",
        ])
        .current_dir(dir)
        .output()
        .expect("ugro-watch --replay");
    assert!(
        watch.status.success(),
        "{}",
        String::from_utf8_lossy(&watch.stderr)
    );

    let scored = run_with_stdin(Command::new(bin("ugro-score")).current_dir(dir), &recorded);
    assert!(
        scored.status.success(),
        "{}",
        String::from_utf8_lossy(&scored.stderr)
    );
    let broken = run_with_stdin(
        Command::new(bin("ugro-breaker"))
            .args(["-c", "breaker.yaml", "--state", "s-breaker.json"])
            .current_dir(dir),
        &scored.stdout,
    );
    assert!(
        broken.status.success(),
        "{}",
        String::from_utf8_lossy(&broken.stderr)
    );
    let alerted = run_with_stdin(
        Command::new(bin("ugro-alert"))
            .args(["-c", "alert.yaml", "--state", "s-alert.json"])
            .current_dir(dir),
        &broken.stdout,
    );
    assert!(
        alerted.status.success(),
        "{}",
        String::from_utf8_lossy(&alerted.stderr)
    );

    let ours: Vec<Value> = records(&watch.stdout);
    let theirs: Vec<Value> = records(&alerted.stdout);
    assert!(!theirs.is_empty(), "the shell pipeline produced nothing");
    assert!(
        theirs.iter().any(|r| r["kind"] == "alert"),
        "no alert from a recording with failing nodes"
    );
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(a, b);
    }
    // The breaker state each side persisted agrees too.
    let state = |f: &str| -> Value {
        let v: Value =
            serde_json::from_slice(&std::fs::read(dir.join(f)).expect("state file")).expect("json");
        v["data"].clone()
    };
    assert_eq!(state("w-breaker.json"), state("s-breaker.json"));
}
