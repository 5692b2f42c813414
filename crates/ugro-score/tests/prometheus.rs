//! `ugro-score --format prometheus`: one exposition of the latest scored sample per node,
//! rewritten as records arrive, checked with promtool.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use assert_cmd::cargo::CommandCargoExt;
use ugro_types::{Sample, Unreachable};

fn busy(node: &str) -> Sample {
    let p = format!("{}/fixtures/h200-busy.jsonl", env!("CARGO_MANIFEST_DIR"));
    let mut s: Sample = serde_json::from_str(std::fs::read_to_string(p).unwrap().trim()).unwrap();
    s.node = node.into();
    s
}

fn line(s: &Sample) -> String {
    serde_json::to_string(s).unwrap() + "\n"
}

fn score(args: &[&str]) -> Command {
    let mut c = Command::cargo_bin("ugro-score").unwrap();
    c.args(["--format", "prometheus"]).args(args);
    c.env_remove("UGRO_SCORE_CONFIG");
    c
}

fn run(args: &[&str], input: &str) -> std::process::Output {
    let mut all = vec!["--format", "prometheus"];
    all.extend_from_slice(args);
    ugro_e2e::run_tool("ugro-score", &all, input.as_bytes())
}

fn fleet() -> String {
    let mut hot = busy("hot");
    if let Some(g) = hot.gpu.as_mut() {
        g.devices[0].remapped_rows.as_mut().unwrap().pending = Some(true);
    }
    let mut gone = Sample::new("gone", busy("x").ts);
    gone.unreachable = Some(Unreachable {
        cause: "ssh".into(),
        message: "connection timed out".into(),
    });
    // An earlier sample of "ok" is replaced by its later one.
    let mut old = busy("ok");
    old.ts = ugro_types::Timestamp(old.ts.millis() - 60_000);
    [old, busy("ok"), hot, gone].iter().map(line).collect()
}

#[test]
fn every_node_appears_once_with_score_state_and_probe_readings_and_passes_promtool() {
    let out = run(&[], &fleet());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.matches("# TYPE ugro_node_state gauge").count(),
        1,
        "one block: {text}"
    );
    for want in [
        "ugro_node_state{node=\"ok\",state=\"healthy\"} 1",
        "ugro_node_state{node=\"hot\",state=\"degraded\"} 1",
        "ugro_node_state{node=\"gone\",state=\"unknown\"} 1",
        "ugro_node_unreachable{node=\"gone\",cause=\"ssh\"} 1",
        "ugro_node_action{node=\"gone\",action=\"check_network\"} 1",
    ] {
        assert!(text.lines().any(|l| l == want), "missing {want}\n{text}");
    }
    let ts: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("ugro_probe_timestamp_seconds{node=\"ok\"}"))
        .collect();
    assert_eq!(ts.len(), 1, "the latest sample only: {ts:?}");
    assert!(
        text.contains(
            "ugro_node_reason{node=\"hot\",code=\"row_remap_pending\",family=\"row_remap\""
        )
    );
    assert!(text.contains("ugro_gpu_utilization_percent{node=\"ok\",gpu=\"0\""));
    ugro_e2e::assert_promtool_clean(&text);

    let dcgm = run(&["--metric-names", "dcgm"], &fleet());
    let text = String::from_utf8(dcgm.stdout).unwrap();
    assert!(
        text.contains("DCGM_FI_DEV_ROW_REMAP_PENDING{gpu=\"0\",UUID=\""),
        "{text}"
    );
    assert!(text.contains(",Hostname=\"hot\",DCGM_FI_DRIVER_VERSION=\"580.159.04\"} 1"));
    ugro_e2e::assert_promtool_dcgm(&text);
}

#[test]
fn the_exposition_is_rewritten_when_the_input_pauses_not_only_at_its_end() {
    let mut child = score(&[])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // Reads until the block that has `want`, returning its lines from the first HELP.
    let mut read_until = |want: &str| {
        let mut block = Vec::new();
        loop {
            let mut l = String::new();
            assert!(
                stdout.read_line(&mut l).unwrap() > 0,
                "output ended before {want}"
            );
            if l.starts_with("# HELP ugro_probe_timestamp_seconds") {
                block.clear();
            }
            let done = l.trim_end() == want;
            block.push(l);
            if done {
                return block;
            }
        }
    };
    stdin.write_all(line(&busy("a")).as_bytes()).unwrap();
    stdin.flush().unwrap();
    read_until("ugro_node_state_severity{node=\"a\"} 0");
    // The process is still waiting for input: the second record gets a block of its own,
    // which holds both nodes.
    stdin.write_all(line(&busy("b")).as_bytes()).unwrap();
    stdin.flush().unwrap();
    let block = read_until("ugro_node_state_severity{node=\"b\"} 0");
    assert!(
        block
            .iter()
            .any(|l| l.starts_with("ugro_probe_timestamp_seconds{node=\"a\"}")),
        "{block:?}"
    );
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn output_replaces_the_file_and_leaves_nothing_else_in_its_directory() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("ugro.prom");
    std::fs::write(&file, "stale 1\n").unwrap();
    let out = run(&["--output", file.to_str().unwrap()], &fleet());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains("stale"));
    assert!(text.contains("ugro_node_state{node=\"hot\",state=\"degraded\"} 1"));
    ugro_e2e::assert_promtool_clean(&text);
    let names: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["ugro.prom"]);
}

#[test]
fn output_errors_name_the_cause() {
    let bad_dir = run(&["--output", "/nonexistent/dir/ugro.prom"], &fleet());
    assert_eq!(bad_dir.status.code(), Some(74));
    assert!(String::from_utf8_lossy(&bad_dir.stderr).contains("/nonexistent/dir"));
    let out = Command::cargo_bin("ugro-score")
        .unwrap()
        .args(["--output", "x.prom"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format prometheus"));
}

#[test]
fn a_bad_line_is_reported_and_the_good_ones_still_rendered() {
    let input = format!("{}{{\"v\":1,\"kind\":\"sample\"}}\n", fleet());
    let out = run(&[], &input);
    assert_eq!(out.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 5"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("node=\"hot\""));
}
