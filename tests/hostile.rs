//! Hostile input for every tool (issue 15): a generated, reproducible corpus of good lines
//! with mutated ones among them, and hostile configuration files. Each tool must not panic,
//! must pass every good line, must name each rejected line by its number, and must exit as
//! documented (65 for bad lines, 78 for bad configuration). Mutations are drawn from a fixed
//! seed, so a failure reproduces exactly; the seed and the offending line are in the message.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use ugro_e2e::{bin, records, root, run_tool};
use ugro_types::Timestamp;

const SEED: u64 = 0x1515_1515;

/// xorshift64*: small, deterministic, good enough to pick positions.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n.max(1)
    }
}

/// The ways a line is broken. Each one makes the line bad for every tool that reads it.
#[derive(Debug, Clone, Copy)]
enum Mutation {
    /// Cut short: a proper prefix of a JSON object never parses.
    Truncate,
    /// A control byte put in: not JSON inside a string or outside one.
    Control,
    /// A byte that is not UTF-8.
    NotUtf8,
    /// `kind` spelled wrong.
    KindTypo,
    /// A member named twice (a known one, then an unknown one).
    DuplicateNode,
    DuplicateOther,
    /// A fraction of a second without a digit.
    DotWithoutDigits,
}

const MUTATIONS: [Mutation; 7] = [
    Mutation::Truncate,
    Mutation::Control,
    Mutation::NotUtf8,
    Mutation::KindTypo,
    Mutation::DuplicateNode,
    Mutation::DuplicateOther,
    Mutation::DotWithoutDigits,
];

fn mutate(line: &str, m: Mutation, rng: &mut Rng) -> Vec<u8> {
    let mut b = line.as_bytes().to_vec();
    match m {
        Mutation::Truncate => b.truncate(1 + rng.below(b.len() - 1)),
        Mutation::Control => b.insert(rng.below(b.len()), 0x01),
        Mutation::NotUtf8 => b.insert(rng.below(b.len()), 0xff),
        Mutation::KindTypo => {
            let typo = ["\"Sample\"", "\"SAMPLE\"", "\"sample \""][rng.below(3)];
            b = line.replacen("\"sample\"", typo, 1).into_bytes();
        }
        Mutation::DuplicateNode => b = line.replacen('{', r#"{"node":"dup","#, 1).into_bytes(),
        Mutation::DuplicateOther => b = line.replacen('{', r#"{"x":1,"x":2,"#, 1).into_bytes(),
        Mutation::DotWithoutDigits => {
            let i = line.find("\"ts\":\"").expect("a ts") + 6;
            let end = i + line[i..].find('"').expect("ts ends");
            b = format!("{}2026-11-28T00:00:00.Z{}", &line[..i], &line[end..]).into_bytes();
        }
    }
    b
}

/// `n` good samples (the real H200 fixtures, one node each, a second apart, ending now).
fn good_samples(n: usize) -> Vec<String> {
    let dir = root().join("crates/ugro-score/fixtures");
    let busy = std::fs::read_to_string(dir.join("h200-busy.jsonl")).unwrap();
    let idle = std::fs::read_to_string(dir.join("h200-idle.jsonl")).unwrap();
    let base = [busy.trim(), idle.trim()];
    let now = Timestamp::now();
    (0..n)
        .map(|i| {
            let mut v: serde_json::Value = serde_json::from_str(base[i % 2]).unwrap();
            v["node"] = format!("gpu-{i:02}").into();
            let ts = now.sub(std::time::Duration::from_secs((n - i) as u64));
            v["ts"] = ts.to_string().into();
            v.to_string()
        })
        .collect()
}

/// The corpus: good lines with a mutated one after every other good line. Returns the input
/// and the 1-based numbers of the bad lines.
fn corpus(good: &[String], extra_bad: &[Vec<u8>]) -> (Vec<u8>, BTreeSet<u64>) {
    let mut rng = Rng(SEED);
    let (mut input, mut bad, mut n) = (Vec::new(), BTreeSet::new(), 0u64);
    let mut push = |line: &[u8], is_bad: bool, input: &mut Vec<u8>| {
        n += 1;
        input.extend_from_slice(line);
        input.push(b'\n');
        if is_bad {
            bad.insert(n);
        }
    };
    for (i, g) in good.iter().enumerate() {
        push(g.as_bytes(), false, &mut input);
        if i % 2 == 1 {
            let m = MUTATIONS[(i / 2) % MUTATIONS.len()];
            push(&mutate(g, m, &mut rng), true, &mut input);
        }
    }
    for b in extra_bad {
        push(b, true, &mut input);
    }
    (input, bad)
}

/// The line numbers a tool reported as rejected (`<tool>: line N: ...`).
fn rejected_lines(stderr: &str) -> BTreeSet<u64> {
    stderr
        .lines()
        .filter_map(|l| l.split_once(": line ")?.1.split_once(':')?.0.parse().ok())
        .collect()
}

fn check_stream(tool: &str, out: &Output, bad: &BTreeSet<u64>) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !stderr.contains("panicked"),
        "{tool} (seed {SEED:#x}): {stderr}"
    );
    assert_eq!(out.status.code(), Some(65), "{tool}: {stderr}");
    assert_eq!(
        &rejected_lines(&stderr),
        bad,
        "{tool} rejected lines: {stderr}"
    );
    stderr
}

/// A sample line with `n` GPUs.
fn many_gpus(n: usize) -> Vec<u8> {
    let gpus: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"index":{i},"state":"ok","uuid":"GPU-{i}"}}"#))
        .collect();
    format!(
        r#"{{"v":1,"kind":"sample","ts":"{}","node":"wide","gpu":{{"status":"ok","devices":[{}]}}}}"#,
        Timestamp::now(),
        gpus.join(",")
    )
    .into_bytes()
}

/// A scored line whose score has `n` GPU reasons.
fn many_reasons(n: usize) -> Vec<u8> {
    let reasons: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"component":"gpu","code":"gpu_lost","message":"lost","deduction":100,"gpu":{i},"fatal":true}}"#))
        .collect();
    format!(
        r#"{{"v":1,"kind":"sample","ts":"{}","node":"wide","score":{{"state":"critical","total":0,"action":"reset_gpu","components":{{}},"reasons":[{}],"summary":"x"}}}}"#,
        Timestamp::now(),
        reasons.join(",")
    )
    .into_bytes()
}

#[test]
fn score_rejects_each_mutated_line_by_number_and_scores_every_good_one() {
    let good = good_samples(30);
    let (input, bad) = corpus(&good, &[many_gpus(10_000)]);
    let out = run_tool("ugro-score", &[], &input);
    let stderr = check_stream("ugro-score", &out, &bad);
    assert!(stderr.contains("more than 256 GPUs"), "{stderr}");
    let recs = records(&out.stdout);
    let nodes: Vec<&str> = recs.iter().map(|r| r["node"].as_str().unwrap()).collect();
    let want: Vec<String> = (0..good.len()).map(|i| format!("gpu-{i:02}")).collect();
    assert_eq!(nodes, want, "every good line, in order");
    assert!(recs.iter().all(|r| r["score"]["state"].is_string()));
}

#[test]
fn score_passes_unknown_kinds_only_when_asked() {
    let line = good_samples(1)[0].replacen("\"sample\"", "\"site_inventory\"", 1);
    let input = format!("{line}\n");
    assert_eq!(
        run_tool("ugro-score", &[], input.as_bytes()).status.code(),
        Some(65)
    );
    let out = run_tool("ugro-score", &["--pass-unknown-kinds"], input.as_bytes());
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        input,
        "passed through unchanged"
    );
}

/// The corpus's good lines scored, for the tools after ugro-score.
fn scored(good: &[String]) -> Vec<String> {
    let input: String = good.iter().map(|l| format!("{l}\n")).collect();
    let out = run_tool("ugro-score", &[], input.as_bytes());
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn breaker_rejects_each_mutated_line_by_number_and_passes_every_good_one() {
    let good = scored(&good_samples(30));
    let (input, bad) = corpus(&good, &[]);
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("breaker.json");
    let out = run_tool(
        "ugro-breaker",
        &["--pass-open", "--state", state.to_str().unwrap()],
        &input,
    );
    check_stream("ugro-breaker", &out, &bad);
    let samples = records(&out.stdout)
        .into_iter()
        .filter(|r| r["kind"] == "sample")
        .count();
    assert_eq!(samples, good.len());
}

#[test]
fn alert_rejects_each_mutated_line_by_number_including_a_score_with_10000_reasons() {
    let good = scored(&good_samples(30));
    let (input, bad) = corpus(&good, &[many_reasons(10_000)]);
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("alert.json");
    let spool = d.path().join("spool");
    let out = run_tool(
        "ugro-alert",
        &[
            "--state",
            state.to_str().unwrap(),
            "--spool-dir",
            spool.to_str().unwrap(),
        ],
        &input,
    );
    let stderr = check_stream("ugro-alert", &out, &bad);
    assert!(stderr.contains("more than 4096 reasons"), "{stderr}");
}

/// Runs `tool` with `args` (and `{}` replaced by the file written from `text`).
fn with_file(tool: &str, args: &[&str], name: &str, text: &[u8], dir: &Path) -> (i32, String) {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    let file = file.to_str().unwrap();
    let out = Command::new(bin(tool))
        .args(args.iter().map(|a| if *a == "{}" { file } else { a }))
        .env("UGRO_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{tool}: {stderr}");
    (out.status.code().unwrap_or(-1), stderr)
}

/// A "billion laughs" document: nine levels of nine aliases, 387 million values from 500 bytes.
fn alias_bomb(key: &str) -> Vec<u8> {
    let mut t = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..9 {
        let p = format!("*a{}", i - 1);
        t.push_str(&format!("a{i}: &a{i} [{}]\n", vec![p; 9].join(", ")));
    }
    t.push_str(&format!("{key}: *a8\n"));
    t.into_bytes()
}

#[test]
fn hostile_configuration_files_exit_78_naming_file_line_and_field_in_every_tool() {
    let d = tempfile::tempdir().unwrap();
    let st = d.path().join("st");
    let state = st.to_str().unwrap();
    let cpu = d.path().join("cpu.json");
    let tools: [(&str, Vec<&str>); 5] = [
        ("ugro-score", vec!["-c", "{}"]),
        ("ugro-breaker", vec!["-c", "{}", "--state", state]),
        ("ugro-alert", vec!["--check-config", "-c", "{}"]),
        ("ugro-watch", vec!["--check", "--cluster", "{}"]),
        (
            "ugro-probe",
            vec![
                "--no-gpu",
                "--no-xid",
                "--cpu-state-file",
                cpu.to_str().unwrap(),
                "-c",
                "{}",
            ],
        ),
    ];
    let cases: [(&str, &[u8], i32, &str); 18] = [
        // Non-finite and out-of-range numbers.
        ("ugro-score", b"gpu:\n  hw_throttle_deduction: .nan\n", 78, ":2: gpu.hw_throttle_deduction"),
        ("ugro-score", b"gpu:\n  hw_throttle_deduction: -1e308\n", 78, "-1e308 is out of range"),
        ("ugro-score", b"network:\n  peer_latency_warn_ms: .inf\n", 78, ":2: network.peer_latency_warn_ms"),
        ("ugro-breaker", b"failure_threshold: 3\nexponential_backoff_multiplier: .nan\n", 78, ":2: exponential_backoff_multiplier"),
        ("ugro-alert", b"global:\n  cluster_degraded_share: .nan\n", 78, ":2: global.cluster_degraded_share"),
        ("ugro-alert", b"delivery:\n  attempts: 0\n", 78, ":2: delivery.attempts: 0 is out of range"),
        ("ugro-watch", b"nodes:\n  - name: a\nstate:\n  history: 99999999999\n", 78, ":4: state.history"),
        ("ugro-probe", b"budgets:\n  host: 2s\n  bogus: 1s\n", 78, ":3: budgets.bogus"),
        // List items named at their own line.
        ("ugro-alert", b"receivers:\n  - name: ok\n    stdout: {}\n  - name: \"bad name\"\n    stdout: {}\n", 78, ":4: receivers[1].name"),
        ("ugro-alert", b"route:\n  receiver: a\n  routes:\n    - receiver: a\n    - receiver: nope\nreceivers:\n  - name: a\n    stdout: {}\n", 78, ":5: route.routes[1].receiver"),
        ("ugro-watch", b"nodes:\n  - name: a\n  - name: b\n  - name: \"b/c\"\n", 78, ":4: nodes[2].name"),
        // A byte-order mark before two top-level keys is skipped, in every tool.
        ("ugro-score", b"\xef\xbb\xbfweights:\n  gpu: 0.4\n  system: 0.2\n  network: 0.2\n  process: 0.2\nthresholds:\n  critical: 40\n", 0, ""),
        ("ugro-breaker", b"\xef\xbb\xbffailure_threshold: 2\ntrip_history_size: 5\n", 0, ""),
        ("ugro-alert", b"\xef\xbb\xbfglobal:\n  cluster_min_nodes: 4\ndelivery:\n  attempts: 2\n", 0, ""),
        ("ugro-watch", b"\xef\xbb\xbfnodes:\n  - name: a\nconcurrency: 4\n", 0, ""),
        ("ugro-probe", b"\xef\xbb\xbfno_xid: true\nbudgets:\n  host: 2s\n", 0, ""),
        // Alias bombs are refused before they are built.
        ("ugro-alert", &[], 78, "alias"),
        ("ugro-watch", &[], 78, "alias"),
    ];
    for (tool, text, code, want) in cases {
        let args = &tools.iter().find(|(t, _)| *t == tool).unwrap().1;
        let text = match text {
            [] if tool == "ugro-alert" => alias_bomb("inhibit_rules"),
            [] => alias_bomb("nodes"),
            t => t.to_vec(),
        };
        let (got, stderr) = with_file(tool, args, "hostile.yaml", &text, d.path());
        assert_eq!(
            got,
            code,
            "{tool} {:?}: {stderr}",
            String::from_utf8_lossy(&text)
        );
        assert!(stderr.contains(want), "{tool}: want {want:?} in {stderr}");
        if code == 78 && want.starts_with(':') {
            assert!(stderr.contains(&format!("hostile.yaml{want}")), "{stderr}");
        }
    }
}

#[test]
fn state_paths_that_are_fifos_or_directories_exit_78_before_any_open_in_breaker_and_alert() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("fifo.json");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let dir = d.path().join("dir.json");
    std::fs::create_dir(&dir).unwrap();
    let spool = d.path().join("spool");
    for state in [&fifo, &dir] {
        let s = state.to_str().unwrap();
        // A run, and the breaker's status and operator commands, which open the state too.
        for (tool, args) in [
            ("ugro-breaker", vec!["--state", s]),
            ("ugro-breaker", vec!["--state", s, "status"]),
            ("ugro-breaker", vec!["--state", s, "reset", "n1"]),
            (
                "ugro-alert",
                vec!["--state", s, "--spool-dir", spool.to_str().unwrap()],
            ),
        ] {
            let out = run_tool(tool, &args, b"");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{tool} {args:?}: {stderr}");
            assert!(stderr.contains("regular file"), "{tool} {args:?}: {stderr}");
        }
    }
}

#[test]
fn an_alert_state_file_naming_a_bad_node_is_refused_with_78_and_left_untouched() {
    let d = tempfile::tempdir().unwrap();
    let state = d.path().join("alert.json");
    let spool = d.path().join("spool");
    let args = [
        "--state",
        state.to_str().unwrap(),
        "--spool-dir",
        spool.to_str().unwrap(),
    ];
    let line = format!("{}\n", scored(&good_samples(1))[0]);
    assert!(
        run_tool("ugro-alert", &args, line.as_bytes())
            .status
            .success()
    );
    let good = std::fs::read_to_string(&state).unwrap();
    assert!(good.contains("\"gpu-00\""), "{good}");
    for evil in ["../../etc/passwd", "$(reboot)"] {
        let bad = good.replace("\"gpu-00\"", &format!("{evil:?}"));
        std::fs::write(&state, &bad).unwrap();
        let out = run_tool("ugro-alert", &args, line.as_bytes());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{evil}: {stderr}");
        assert!(stderr.contains("invalid node name"), "{stderr}");
        assert_eq!(std::fs::read_to_string(&state).unwrap(), bad);
    }
}
