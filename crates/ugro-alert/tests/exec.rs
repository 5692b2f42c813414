//! The exec receiver never involves a shell: hostile node names are refused, hostile text
//! travels as data, and the argv is exactly as configured.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use ugro_types::Timestamp;

const PWNED: &str = "/tmp/ugro-pwned";

#[test]
fn exec_receiver_gets_configured_argv_and_data_never_reaches_a_shell() {
    let _ = std::fs::remove_file(PWNED);
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    std::fs::create_dir(&rec).unwrap();
    let script = dir.path().join("record.sh");
    write(
        &script,
        // The directory is baked in: receivers see only PATH, HOME, locale, TZ, UGRO_ALERT_*
        // and what their `env` lists.
        &format!(
            "#!/bin/sh\nout=\"{}/$$\"\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > \"$out.argv\"\ncat > \"$out.stdin\"\nenv | grep '^UGRO_ALERT_' | sort > \"$out.env\"\nenv > \"$out.allenv\"\n",
            rec.display()
        ),
    );
    make_executable(&script);
    let cfg = dir.path().join("alert.yaml");
    let argv = [
        script.to_str().unwrap(),
        "--flag",
        "$(touch /tmp/ugro-pwned)",
        "-rf",
        "a b;c`touch /tmp/ugro-pwned`",
    ];
    write_config(
        &cfg,
        &format!(
            "route:\n  receiver: x\n  group_by: [alertname]\nreceivers:\n  - name: x\n    exec:\n      command: {}\n      timeout: 5s\n      env: [UGRO_TEST_PASSED]\n",
            serde_json::to_string(&argv).unwrap()
        ),
    );
    let state = dir.path().join("s.json");
    let t = Timestamp(1_795_000_000_000);
    let hostile_reason = r#"{"code":"xid_fatal","component":"gpu","gpu":0,"deduction":100,"fatal":true,"action":"reset_gpu","message":"$(touch /tmp/ugro-pwned); `touch /tmp/ugro-pwned`"}"#;
    let input = [
        sample("$(touch /tmp/ugro-pwned);x", t, "critical", ""),
        sample("-rf", t, "critical", ""),
        sample("gpu-01", t, "critical", hostile_reason),
    ]
    .join("\n");
    let out = run(
        &[
            "-c",
            cfg.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ],
        &input,
        &[
            ("UGRO_TEST_SECRET_TOKEN", "s3cr3t-value"),
            ("UGRO_TEST_PASSED", "listed"),
            ("SLACK_URL", "https://hooks.example/s3cr3t-value"),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(err.contains("line 1: invalid node name"), "{err}");
    assert!(err.contains("line 2: invalid node name"), "{err}");
    assert!(!std::path::Path::new(PWNED).exists(), "{PWNED} was created");

    let mut runs: Vec<_> = std::fs::read_dir(&rec)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "argv"))
        .collect();
    runs.sort();
    assert_eq!(
        runs.len(),
        1,
        "one run per group: GpuXidFatal (NodeCritical would repeat it)"
    );
    for p in runs {
        let got = std::fs::read_to_string(&p).unwrap();
        let got: Vec<&str> = got.lines().collect();
        assert_eq!(got, argv[1..], "argv changed");
        let stdin = std::fs::read_to_string(p.with_extension("stdin")).unwrap();
        let payload: serde_json::Value = serde_json::from_str(&stdin).unwrap();
        assert_eq!(payload["version"], "4");
        assert_eq!(payload["alerts"][0]["labels"]["node"], "gpu-01");
        let env = std::fs::read_to_string(p.with_extension("env")).unwrap();
        assert!(env.contains("UGRO_ALERT_NODES=gpu-01\n"), "{env}");
        assert!(env.contains("UGRO_ALERT_STATUS=firing\n"), "{env}");
        let all = std::fs::read_to_string(p.with_extension("allenv")).unwrap();
        assert!(
            !all.contains("s3cr3t-value"),
            "a secret of ugro-alert's environment reached the receiver: {all}"
        );
        assert!(all.lines().any(|l| l.starts_with("PATH=")), "{all}");
        assert!(all.contains("UGRO_TEST_PASSED=listed\n"), "{all}");
        if payload["groupLabels"]["alertname"] == "GpuXidFatal" {
            let desc = payload["alerts"][0]["annotations"]["description"]
                .as_str()
                .unwrap();
            assert!(
                desc.contains("$(touch /tmp/ugro-pwned); `touch /tmp/ugro-pwned`"),
                "{desc}"
            );
        }
    }
    assert!(!std::path::Path::new(PWNED).exists(), "{PWNED} was created");
}

#[test]
fn exec_receiver_is_killed_at_its_timeout_and_retried_from_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("slow.sh");
    let marker = dir.path().join("ran");
    write(
        &script,
        &format!("#!/bin/sh\necho x >> {}\nsleep 30\n", marker.display()),
    );
    make_executable(&script);
    let cfg = dir.path().join("alert.yaml");
    write_config(
        &cfg,
        &format!(
            "route:\n  receiver: x\nreceivers:\n  - name: x\n    exec:\n      command: [{}]\n      timeout: 200ms\ndelivery:\n  attempts: 2\n  backoff: 10ms\n",
            script.display()
        ),
    );
    let start = std::time::Instant::now();
    let err = run_one(dir.path(), &cfg);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "not killed at its timeout"
    );
    assert!(err.contains("killed after 200ms"), "{err}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap().lines().count(), 2);
    assert_eq!(
        std::fs::read_dir(dir.path().join("s.json.spool"))
            .unwrap()
            .count(),
        1
    );
}

/// Live (not zombie) processes in process group `pgid`.
fn live_in_group(pgid: i32) -> Vec<String> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 2 && f[2].parse() == Ok(pgid) && f[0] != "Z" {
            v.push(stat);
        }
    }
    v
}

/// Waits (on /proc, up to a guard) until the group has no live process; its members were
/// sent SIGKILL, so this takes as long as the kernel needs to reap them.
fn group_gone(pgid: i32) -> Result<(), Vec<String>> {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let live = live_in_group(pgid);
        if live.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > end {
            return Err(live);
        }
        std::thread::yield_now();
    }
}

/// One run of a critical sample through `cfg`; returns stderr.
fn run_one(dir: &std::path::Path, cfg: &std::path::Path) -> String {
    let state = dir.join("s.json");
    succeeded(&run(
        &[
            "-c",
            cfg.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ],
        &sample("n1", Timestamp(1_795_000_000_000), "critical", ""),
        &[],
    ))
}

fn leaves_no_process(body: &str, timeout: &str) {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("hook.sh");
    let pgid_file = dir.path().join("pgid");
    write(
        &script,
        &format!("#!/bin/sh\necho $$ > {}\n{body}\n", pgid_file.display()),
    );
    make_executable(&script);
    let cfg = dir.path().join("alert.yaml");
    write_config(
        &cfg,
        &format!(
            "route:\n  receiver: x\nreceivers:\n  - name: x\n    exec:\n      command: [{}]\n      timeout: {timeout}\ndelivery: {{attempts: 1}}\n",
            script.display()
        ),
    );
    run_one(dir.path(), &cfg);
    let pgid: i32 = std::fs::read_to_string(&pgid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if let Err(live) = group_gone(pgid) {
        panic!("processes left behind in group {pgid}: {live:#?}");
    }
}

#[test]
fn a_hung_exec_receiver_is_killed_with_its_whole_process_group() {
    leaves_no_process("sleep 301 &\nsh -c 'sleep 302; true' &\nsleep 303", "300ms");
}

#[test]
fn what_an_exec_receiver_leaves_running_when_it_exits_is_killed_too() {
    leaves_no_process("sleep 304 &\nexit 0", "10s");
}
