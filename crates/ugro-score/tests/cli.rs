//! The ugro-score binary: formats, exit statuses, bad lines, pass-through, closed stdout,
//! configuration errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::process::{Command as StdCommand, Stdio};

use assert_cmd::Command;
use serde_json::{Value, json};

fn fixture(name: &str) -> String {
    let p = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(p).unwrap().trim().to_owned()
}

fn busy() -> Value {
    serde_json::from_str(&fixture("h200-busy.jsonl")).unwrap()
}

/// The busy node with a fatal XID on its GPU.
fn critical() -> Value {
    let mut v = busy();
    v["node"] = json!("bad-node");
    v["gpu"]["devices"][0]["xids"] = json!([{"code": 79, "ts": "2026-11-28T16:38:00.000Z"}]);
    v
}

fn degraded() -> Value {
    let mut v = busy();
    v["node"] = json!("meh-node");
    v["gpu"]["devices"][0]["remapped_rows"]["pending"] = json!(true);
    v
}

fn unreachable() -> Value {
    json!({"v":1,"kind":"sample","ts":"2026-11-28T16:38:13.000Z","node":"gone",
           "unreachable":{"cause":"ssh","message":"connection timed out"}})
}

fn lines(vals: &[&Value]) -> String {
    vals.iter().map(|v| format!("{v}\n")).collect()
}

fn score() -> Command {
    let mut c = Command::cargo_bin("ugro-score").unwrap();
    c.env_remove("UGRO_SCORE_CONFIG");
    c
}

fn decode(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn json_mode_adds_score_and_keeps_every_other_field() {
    let mut v = busy();
    v["operator"] = json!({"note": "added with jq", "n": [1, 2, 3]});
    let other =
        json!({"v":1,"kind":"alert","ts":"2026-11-28T16:38:13.000Z","node":"x","labels":{"a":"b"}});
    let out = score()
        .write_stdin(lines(&[&v, &other]))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let recs = decode(&out);
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[0]["operator"], v["operator"]);
    assert_eq!(recs[0]["gpu"], v["gpu"]);
    assert_eq!(recs[0]["host"], v["host"]);
    assert_eq!(recs[0]["score"]["state"], "healthy");
    assert_eq!(recs[0]["score"]["total"], 100.0);
    assert_eq!(recs[1], other, "other kinds pass through unchanged");
}

#[test]
fn json_mode_reads_a_file_argument_and_scores_the_idle_fixture_healthy() {
    let p = format!("{}/fixtures/h200-idle.jsonl", env!("CARGO_MANIFEST_DIR"));
    let out = score()
        .arg(&p)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(decode(&out)[0]["score"]["state"], "healthy");
}

#[test]
fn missing_input_file_is_66() {
    score()
        .arg("/nonexistent/samples.jsonl")
        .assert()
        .code(66)
        .stderr(predicates::str::contains("/nonexistent/samples.jsonl"));
}

#[test]
fn bad_lines_are_reported_with_their_number_and_the_rest_goes_through() {
    let input = format!("{}\nnot json\n\n{}\n{{\"v\":1}}\n", busy(), busy());
    let a = score().write_stdin(input).assert().code(65);
    let o = a.get_output();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("ugro-score: line 2: "), "{err}");
    assert!(err.contains("ugro-score: line 5: "), "{err}");
    assert_eq!(decode(&o.stdout).len(), 2);
}

#[test]
fn strict_stops_at_the_first_bad_line() {
    let input = format!("{}\nnot json\n{}\n", busy(), busy());
    let a = score().arg("--strict").write_stdin(input).assert().code(65);
    assert_eq!(decode(&a.get_output().stdout).len(), 1);
}

fn nagios(input: String) -> (i32, Vec<String>) {
    let o = score()
        .args(["--format", "nagios"])
        .write_stdin(input)
        .output()
        .unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    (
        o.status.code().unwrap(),
        text.lines().map(str::to_owned).collect(),
    )
}

#[test]
fn nagios_lines_follow_the_plugin_guidelines_and_exit_by_worst_state() {
    let (code, out) = nagios(lines(&[&busy()]));
    assert_eq!(code, 0);
    assert_eq!(out.len(), 1);
    let l = &out[0];
    assert!(l.starts_with("UGRO OK - h200-vm: healthy 100.0"), "{l}");
    let (_, perf) = l.split_once(" | ").unwrap();
    let perf: Vec<&str> = perf.split(' ').collect();
    assert_eq!(perf[0], "'score'=100;70:;40:;0;100");
    // Each value's thresholds are the ones that decide the status: a GPU below 70 degrades.
    assert!(perf.contains(&"'gpu0'=100;70:;;0;100"), "{perf:?}");
    // 'label'=value[UOM];warn;crit;min;max, nothing else.
    for p in &perf {
        let (label, rest) = p.split_once('=').unwrap();
        assert!(label.starts_with('\'') && label.ends_with('\''), "{p}");
        assert_eq!(rest.split(';').count(), 5, "{p}");
    }

    // Several samples: one status line for the worst (the exit status), then a line per node.
    let (code, out) = nagios(lines(&[&busy(), &degraded()]));
    assert_eq!(code, 1, "{out:?}");
    assert!(
        out[0].starts_with("UGRO WARNING - 2 nodes: 0 critical, 0 unknown, 1 degraded, 1 healthy; meh-node: degraded"),
        "{}",
        out[0]
    );
    assert_eq!(out.len(), 3, "{out:?}");
    assert!(
        out[1].starts_with("meh-node: degraded") && out[2].starts_with("h200-vm: healthy"),
        "worst first: {out:?}"
    );
    assert!(
        out[1..].iter().all(|l| !l.contains('|')),
        "long text carries no perfdata: {out:?}"
    );
    let (_, perf) = out[0].split_once(" | ").unwrap();
    assert!(perf.contains("'h200-vm score'=100;70:;40:;0;100"), "{perf}");
    assert!(perf.contains("'meh-node score'="), "{perf}");
    assert_eq!(
        perf.matches("'h200-vm score'").count(),
        1,
        "labels are unique: {perf}"
    );

    let (code, out) = nagios(lines(&[&unreachable(), &degraded()]));
    assert_eq!(code, 3, "{out:?}");
    assert!(out[0].starts_with("UGRO UNKNOWN - 2 nodes"), "{}", out[0]);
    assert!(
        out[0].contains("'gone score'=U;70:;40:;0;100"),
        "{}",
        out[0]
    );

    let (code, out) = nagios(lines(&[&busy(), &critical(), &unreachable()]));
    assert_eq!(code, 2, "critical outranks unknown: {out:?}");
    assert!(
        out[0].starts_with("UGRO CRITICAL - 3 nodes: 1 critical, 1 unknown, 0 degraded, 1 healthy; bad-node: critical"),
        "{}",
        out[0]
    );
    assert!(out[0].contains("XID 79"), "{}", out[0]);
}

#[test]
fn nagios_with_bad_or_no_input_is_unknown_not_65() {
    let (code, out) = nagios(format!("{}\ngarbage\n", busy()));
    assert_eq!(code, 3);
    assert_eq!(out.len(), 1);
    assert!(
        out[0].starts_with("UGRO UNKNOWN - h200-vm: healthy"),
        "status word matches the exit: {}",
        out[0]
    );
    assert!(out[0].contains("; 1 bad input line |"), "{}", out[0]);
    let (code, out) = nagios(format!("{}\ngarbage\n", critical()));
    assert_eq!(code, 2);
    assert_eq!(out.len(), 1);
    assert!(out[0].starts_with("UGRO CRITICAL - "), "{}", out[0]);
    let (code, out) = nagios(String::new());
    assert_eq!(code, 3);
    assert_eq!(out, ["UGRO UNKNOWN - no samples in the input"]);
}

#[test]
fn check_modes_turn_setup_errors_into_unknown_with_a_status_line() {
    for args in [
        vec!["--format", "nagios", "/nonexistent/samples.jsonl"],
        vec!["--format", "nagios", "--weights", "gpu=2"],
        vec!["-e", "--weights", "gpu=2"],
    ] {
        let o = score().args(&args).write_stdin("").output().unwrap();
        assert_eq!(o.status.code(), Some(3), "{args:?}");
        let text = String::from_utf8(o.stdout).unwrap();
        assert!(text.starts_with("UGRO UNKNOWN - "), "{args:?}: {text}");
        assert_eq!(text.lines().count(), 1);
    }
    // Outside check modes the contract's statuses stand.
    score()
        .args(["--weights", "gpu=2"])
        .write_stdin("")
        .assert()
        .code(78);
}

#[test]
fn exit_status_flag_gives_json_mode_plugin_codes() {
    for (v, want) in [
        (busy(), 0),
        (degraded(), 1),
        (critical(), 2),
        (unreachable(), 3),
    ] {
        let a = score()
            .arg("-e")
            .write_stdin(lines(&[&v]))
            .assert()
            .code(want);
        let recs = decode(&a.get_output().stdout);
        assert!(recs[0]["score"].is_object());
    }
    // Without -e the JSON mode exits 0 whatever the health.
    score().write_stdin(lines(&[&critical()])).assert().code(0);
}

#[test]
fn table_format_prints_a_header_and_one_row_per_sample() {
    let o = score()
        .args(["-f", "table"])
        .write_stdin(lines(&[&busy(), &critical()]))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(o).unwrap();
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 3);
    assert!(rows[0].starts_with("NODE"));
    assert!(rows[1].starts_with("h200-vm") && rows[1].contains("healthy"));
    assert!(rows[2].contains("critical") && rows[2].contains("reboot"));
}

#[test]
fn bad_weights_flag_exits_78_naming_the_value() {
    score()
        .args(["--weights", "gpu=0.5"])
        .write_stdin("")
        .assert()
        .code(78)
        .stderr(predicates::str::contains("gpu=0.5"));
    score()
        .args(["--weights", "gpu=0.6,system=-0.1,network=0.4"])
        .write_stdin("")
        .assert()
        .code(78)
        .stderr(predicates::str::contains("system=-0.1"));
    score()
        .args(["--weights", "gpu=heavy"])
        .write_stdin("")
        .assert()
        .code(78)
        .stderr(predicates::str::contains("gpu=heavy"));
    // Valid weights change the total.
    let mut v = busy();
    v["gpu"]["devices"][0]["throttle_reasons"] = json!(["hw_slowdown"]);
    let o = score()
        .args(["--weights", "gpu=1,system=0,network=0,process=0"])
        .write_stdin(lines(&[&v]))
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(decode(&o)[0]["score"]["total"], 60.0);
}

#[test]
fn config_file_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("score.yaml");
    std::fs::write(&p, "thresholds:\n  critical: 40\nweights:\n  gpu: 0.9\n").unwrap();
    score()
        .arg("-c")
        .arg(&p)
        .write_stdin("")
        .assert()
        .code(78)
        .stderr(predicates::str::contains("score.yaml:3: weights: "))
        .stderr(predicates::str::contains("gpu=0.9"));
    std::fs::write(&p, "gpu:\n  busy_utilization_pct: many\n").unwrap();
    score()
        .arg("-c")
        .arg(&p)
        .write_stdin("")
        .assert()
        .code(78)
        .stderr(predicates::str::contains(
            "score.yaml:2: gpu.busy_utilization_pct",
        ));
    score()
        .args(["-c", "/nonexistent/score.yaml"])
        .write_stdin("")
        .assert()
        .code(66);
}

#[test]
fn config_file_and_site_xid_policy_change_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let pol = dir.path().join("site-xid.yaml");
    std::fs::write(
        &pol,
        "xids:\n  13:\n    severity: fatal\n    action: reset_gpu\n",
    )
    .unwrap();
    let mut v = busy();
    v["gpu"]["devices"][0]["xids"] = json!([{"code": 13}]);
    let o = score().write_stdin(lines(&[&v])).output().unwrap();
    assert_eq!(decode(&o.stdout)[0]["score"]["state"], "healthy");
    let o = score()
        .arg("--xid-policy")
        .arg(&pol)
        .write_stdin(lines(&[&v]))
        .output()
        .unwrap();
    assert_eq!(decode(&o.stdout)[0]["score"]["state"], "critical");
    let cfg = dir.path().join("score.yaml");
    std::fs::write(
        &cfg,
        "xid_policy: site-xid.yaml\nthresholds:\n  degraded: 80\n",
    )
    .unwrap();
    let o = score()
        .arg("-c")
        .arg(&cfg)
        .write_stdin(lines(&[&v]))
        .output()
        .unwrap();
    assert_eq!(decode(&o.stdout)[0]["score"]["state"], "critical");
}

#[test]
fn closed_stdout_is_a_quiet_exit_0() {
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("ugro-score"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let line = format!("{}\n", busy());
    let writer = std::thread::spawn(move || {
        for _ in 0..20_000 {
            if stdin.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 64];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let _ = writer.join();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "stderr: {err}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn other_kinds_pass_byte_for_byte_and_rescoring_keeps_user_numbers_exact() {
    // A record of another kind, with key order and number forms serde would normalise.
    let other = r#"{"z":1,"v":1,"kind":"transition","ts":"2026-11-28T00:00:00Z","node":"n1","big":12345678901234567890123,"f":1.10}"#;
    let o = score().write_stdin(format!("{other}\n")).output().unwrap();
    assert_eq!(String::from_utf8(o.stdout).unwrap(), format!("{other}\n"));

    // A sample that already has a score: the score is replaced, every other byte kept.
    let mut v = busy();
    v["score"] = json!({"stale": true});
    let mut line = serde_json::to_string(&v).unwrap();
    line.insert_str(line.len() - 1, r#","big":12345678901234567890123,"f":1.10"#);
    let o = score().write_stdin(format!("{line}\n")).output().unwrap();
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(
        out.contains(r#""big":12345678901234567890123,"f":1.10}"#),
        "{out}"
    );
    let rec = decode(out.as_bytes());
    assert!(rec[0]["score"]["state"].is_string(), "{}", rec[0]["score"]);
    assert!(rec[0]["score"].get("stale").is_none());
}

/// A 100-node input: every tenth node with a fatal XID, every tenth (offset) degraded.
fn hundred_nodes() -> String {
    let vals: Vec<Value> = (0..100)
        .map(|i| {
            let mut v = match i % 10 {
                3 => critical(),
                5 => degraded(),
                _ => busy(),
            };
            v["node"] = json!(format!("gpu-node-{i:03}"));
            v
        })
        .collect();
    lines(&vals.iter().collect::<Vec<_>>())
}

/// Perfdata tokens, split on the spaces outside quoted labels.
fn perf_tokens(first: &str) -> Vec<String> {
    let (_, perf) = first.split_once(" | ").unwrap();
    let (mut tokens, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in perf.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                tokens.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    tokens.push(cur);
    tokens
}

#[test]
fn a_hundred_node_check_fits_nagios_core_with_whole_tokens_and_says_what_it_left_out() {
    let o = score()
        .args(["--format", "nagios"])
        .write_stdin(hundred_nodes())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.len() < 8192, "{} bytes", o.stdout.len());
    let text = String::from_utf8(o.stdout).unwrap();
    let first = text.lines().next().unwrap();
    let tokens = perf_tokens(first);
    let perf_bytes: usize = tokens.iter().map(|t| t.len() + 1).sum();
    assert!(perf_bytes <= 5120, "{perf_bytes}");
    for t in &tokens {
        let (label, rest) = t.split_once('=').unwrap();
        assert!(
            label.starts_with('\'') && label.ends_with('\''),
            "cut token {t}"
        );
        assert_eq!(rest.split(';').count(), 5, "cut token {t}");
    }
    // Every node's score is kept before any detail, and the cut is said.
    assert_eq!(
        tokens.iter().filter(|t| t.contains(" score'=")).count(),
        100
    );
    let left: usize = first
        .split("perfdata: ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect(first);
    assert!(first.contains(&format!(
        "{left} of {} values left out",
        tokens.len() + left
    )));
    assert!(first.starts_with("UGRO CRITICAL - 100 nodes: 10 critical, 0 unknown, 10 degraded, 80 healthy; gpu-node-003"), "{first}");
    // Long text: worst first, the rest counted.
    let long: Vec<&str> = text.lines().skip(1).collect();
    assert!(long[0].starts_with("gpu-node-003: critical"), "{long:?}");
    let listed = long.iter().filter(|l| l.starts_with("gpu-node-")).count();
    assert!(
        long.last()
            .unwrap()
            .contains(&format!("({} more nodes not listed)", 100 - listed))
    );

    // A smaller cap keeps fewer whole tokens.
    let o = score()
        .args(["--format", "nagios", "--max-perfdata", "500"])
        .write_stdin(hundred_nodes())
        .output()
        .unwrap();
    let text = String::from_utf8(o.stdout).unwrap();
    let first = text.lines().next().unwrap();
    let perf_bytes: usize = perf_tokens(first).iter().map(|t| t.len() + 1).sum();
    assert!(perf_bytes <= 500, "{perf_bytes}");
    assert!(
        first.contains("values left out (--max-perfdata 500)"),
        "{first}"
    );
}

/// The status each perfdata value implies by its own warn/crit ranges (`N:` alerts below N,
/// `N` above N or below 0), the worst of them.
fn status_from_perfdata(first: &str) -> i32 {
    let alerts = |v: f64, r: &str| -> bool {
        if r.is_empty() {
            return false;
        }
        match r.split_once(':') {
            Some((a, "")) => v < a.parse::<f64>().unwrap(),
            Some(_) => panic!("range {r}"),
            None => v < 0.0 || v > r.parse::<f64>().unwrap(),
        }
    };
    perf_tokens(first)
        .iter()
        .map(|t| {
            let f: Vec<&str> = t.split_once('=').unwrap().1.split(';').collect();
            match f[0].parse::<f64>() {
                Err(_) => 3,
                Ok(v) if alerts(v, f[2]) => 2,
                Ok(v) if alerts(v, f[1]) => 1,
                Ok(_) => 0,
            }
        })
        .max_by_key(|s| [0, 1, 3, 2][*s as usize])
        .unwrap()
}

#[test]
fn perfdata_thresholds_say_the_status_the_check_exits_with() {
    for (input, want) in [
        (lines(&[&busy()]), 0),
        (lines(&[&degraded()]), 1),
        (lines(&[&critical()]), 2),
        (lines(&[&unreachable()]), 3),
        (lines(&[&busy(), &degraded(), &critical()]), 2),
    ] {
        let (code, out) = nagios(input);
        assert_eq!(code, want, "{out:?}");
        assert_eq!(status_from_perfdata(&out[0]), want, "{}", out[0]);
    }
}

#[test]
fn warning_and_critical_ranges_judge_the_score() {
    let run = |args: &[&str]| {
        let o = score()
            .args(["--format", "nagios"])
            .args(args)
            .write_stdin(lines(&[&busy()]))
            .output()
            .unwrap();
        let first = String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_owned();
        (o.status.code().unwrap(), first)
    };
    let (code, first) = run(&["-w", "101:", "--critical", "50:"]);
    assert_eq!(code, 1, "{first}");
    assert!(first.starts_with("UGRO WARNING - "), "{first}");
    assert!(first.contains("'score'=100;101:;50:;0;100"), "{first}");
    let (code, first) = run(&["-w", "101:", "--critical", "@90:100"]);
    assert_eq!(code, 2, "inside an @ range alerts: {first}");
    let (code, _) = run(&["-w", "~:100"]);
    assert_eq!(code, 0, "100 is inside ~:100");
}

#[test]
fn usage_errors_in_check_mode_are_unknown_with_the_cause() {
    for args in [
        vec!["--format", "nagios", "--bogus"],
        vec!["--format=nagios", "-w", "abc"],
        vec!["-e", "--max-perfdata", "1"],
    ] {
        let o = score().args(&args).write_stdin("").output().unwrap();
        assert_eq!(o.status.code(), Some(3), "{args:?}");
        let text = String::from_utf8(o.stdout).unwrap();
        assert!(
            text.starts_with("UGRO UNKNOWN - usage: "),
            "{args:?}: {text}"
        );
        assert_eq!(text.lines().count(), 1);
    }
    let o = score().arg("--bogus").write_stdin("").output().unwrap();
    assert_eq!(o.status.code(), Some(64), "outside check mode");
}

/// Two thousand lines over 50 nodes: good samples (some critical), broken JSON, a line that is
/// not UTF-8, an unknown kind, a record of another kind, blank lines.
fn mixed_stream() -> Vec<u8> {
    let mut input = Vec::new();
    for i in 0..2000u32 {
        let mut v = if i % 13 == 0 { critical() } else { busy() };
        v["node"] = json!(format!("node-{}", i % 50));
        let line = match i % 17 {
            3 => format!("{v}").replacen('}', "", 1).into_bytes(),
            5 => b"{\"v\":1,\"kind\":\"sample\",\"node\":\"\xff\"}".to_vec(),
            7 => br#"{"v":1,"kind":"Sample","ts":"2026-11-28T16:38:13.000Z","node":"x"}"#.to_vec(),
            9 => br#"{"v":1,"kind":"transition","ts":"2026-11-28T16:38:13.000Z","node":"x"}"#
                .to_vec(),
            11 => Vec::new(),
            _ => v.to_string().into_bytes(),
        };
        input.extend_from_slice(&line);
        input.push(b'\n');
    }
    input
}

#[test]
fn the_number_of_decoding_threads_changes_nothing_in_the_output_errors_or_state() {
    let input = mixed_stream();
    let dir = tempfile::tempdir().unwrap();
    let run = |threads: &str| {
        let state = dir.path().join(format!("state-{threads}.json"));
        let out = score()
            .args(["--threads", threads, "--state"])
            .arg(&state)
            .write_stdin(input.clone())
            .output()
            .unwrap();
        // Compared as JSON: the file's maps are written in no fixed order.
        let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
        (out, saved)
    };
    let (one, one_state) = run("1");
    assert_eq!(one.status.code(), Some(65));
    let errors = String::from_utf8_lossy(&one.stderr).lines().count();
    assert!(errors > 300, "{errors}");
    // Every non-blank line is a record out or a line reported.
    assert_eq!(decode(&one.stdout).len() + errors, 2000 - 117);
    assert!(String::from_utf8_lossy(&one.stderr).contains("ugro-score: line 4: expected"));
    // Reports in line order, as the lines are read (batches are read ahead).
    let numbers: Vec<u32> = String::from_utf8_lossy(&one.stderr)
        .lines()
        .map(|l| {
            l.split(": ").nth(1).unwrap()["line ".len()..]
                .parse()
                .unwrap()
        })
        .collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    for threads in ["2", "4"] {
        let (many, many_state) = run(threads);
        assert_eq!(many.status.code(), one.status.code(), "{threads}");
        assert!(many.stdout == one.stdout, "stdout with {threads} threads");
        assert_eq!(
            String::from_utf8_lossy(&many.stderr),
            String::from_utf8_lossy(&one.stderr)
        );
        assert!(many_state == one_state, "state file with {threads} threads");
    }
}
