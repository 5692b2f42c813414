//! Helpers for the cross-tool tests: locating the built binaries and decoding output.
#![allow(clippy::expect_used)] // test support: a panic is the failing test's report

use std::path::{Path, PathBuf};

#[path = "support/slurm.rs"]
pub mod slurm;

#[path = "support/alertmanager.rs"]
pub mod alertmanager;

/// A child process that is killed (SIGKILL) and reaped when this is dropped or `kill`ed, so a
/// daemon a test started never outlives the test, whichever assertion fails first.
#[derive(Debug, Default)]
pub struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    /// Takes charge of `child`.
    pub fn new(child: std::process::Child) -> KillOnDrop {
        KillOnDrop(Some(child))
    }

    /// The child while it has not been killed.
    pub fn get(&self) -> Option<&std::process::Child> {
        self.0.as_ref()
    }

    /// SIGKILL and reap, now (no goodbye to anyone); nothing once done.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The path of a workspace binary built next to this test (`cargo build --workspace` first).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace` before the cross-tool tests",
        p.display()
    );
    p
}

/// Decodes JSON lines, panicking with the offending line.
pub fn records(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The UGRO_REQUIRE_REAL rule for tests that drive a real component (sshd, Alertmanager,
/// promtool, pdsh): a missing one fails the test when `UGRO_REQUIRE_REAL=1` (as scripts/test.sh
/// and CI set it) and skips it with a message otherwise. Returns whether to go on.
pub fn require(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    assert!(
        std::env::var_os("UGRO_REQUIRE_REAL").is_none_or(|v| v != "1"),
        "{what} is missing and UGRO_REQUIRE_REAL=1"
    );
    eprintln!("skipped: {what} is missing");
    false
}

/// The ports [`free_port`] draws from: below Linux's default ephemeral range (32768-60999),
/// which `bind(:0)` and every outgoing connection's source port come from.
const TEST_PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A loopback port that was free a moment ago, and never handed out before in this process.
/// Tests run in parallel and bind the port later (a slurmd, an Alertmanager, a webhook started
/// again after an outage): ports from `bind(:0)` came back twice within a run often enough that
/// one test cluster's slurmctld pinged another's slurmd and a webhook found its port taken (CI,
/// 2026-12-02). So a port is drawn at random from [`TEST_PORTS`], checked by binding, and
/// remembered.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let span = u64::from(TEST_PORTS.end - TEST_PORTS.start);
    for _ in 0..10_000 {
        // A new RandomState has new keys: its empty hash is a fresh random number.
        let draw = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let port = TEST_PORTS.start + u16::try_from(draw % span).unwrap_or(0);
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free loopback port in {TEST_PORTS:?}")
}

/// A GPU fixture shipped with ugro-probe.
pub fn gpu_fixture(name: &str) -> PathBuf {
    root().join("crates/ugro-probe/fixtures").join(name)
}

/// `ugro-probe --gpu-fixture FIXTURE` as node `gpu-node-1`, its CPU reading kept in
/// `state_dir`, with `args`: the sample it wrote (the run must succeed).
pub fn probe_fixture(state_dir: &Path, fixture: &str, args: &[&str]) -> Vec<u8> {
    let probe = std::process::Command::new(bin("ugro-probe"))
        .arg("--gpu-fixture")
        .arg(gpu_fixture(fixture))
        .arg("--cpu-state-file")
        .arg(state_dir.join("cpu.json"))
        .args(["--node", "gpu-node-1"])
        .args(args)
        .output()
        .expect("run ugro-probe");
    assert!(
        probe.status.success(),
        "probe: {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    probe.stdout
}

/// Runs workspace binary `tool` with `args` and `input` on stdin. The input is written from
/// another thread, so a tool that writes before it has read everything cannot deadlock, and one
/// that stops reading early is not this helper's failure.
pub fn run_tool(tool: &str, args: &[&str], input: &[u8]) -> std::process::Output {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(bin(tool))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the tool");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for the tool");
    writer.join().expect("stdin writer");
    out
}

/// Seconds since boot (kernel-log timestamps in tests are made from it).
pub fn uptime_s() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .expect("/proc/uptime")
}

/// Writes a script and makes it executable.
pub fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// What `promtool check metrics` finds in `text`: its problem lines (empty when clean). `None`
/// when promtool is missing and the test may skip (see [`require`]). A parse error (promtool's
/// status 1) fails the calling test at once: nothing else about such text is worth checking.
pub fn promtool_lint(text: &str) -> Option<Vec<String>> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            require(&format!("promtool ({e})"), false);
            return None;
        }
    };
    let mut stdin = child.stdin.take().expect("promtool stdin");
    let input = text.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("promtool runs");
    writer
        .join()
        .expect("writer")
        .expect("promtool reads its input");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => Some(Vec::new()),
        Some(3) => Some(said.lines().map(str::to_owned).collect()),
        _ => panic!("promtool check metrics: {:?}: {said}", out.status),
    }
}

/// `promtool check metrics` passes on `text`.
pub fn assert_promtool_clean(text: &str) {
    if let Some(problems) = promtool_lint(text) {
        assert!(problems.is_empty(), "promtool check metrics: {problems:#?}");
    }
}

/// `promtool check metrics` on text with dcgm-exporter's names: the only findings allowed are
/// those dcgm-exporter's own names carry (its `modelName` label is camelCase, its counters have
/// no `_total`, one is called `..._COUNTER`), kept so that DCGM dashboards work unchanged.
/// Anything about a ugro name, or any other finding, fails.
pub fn assert_promtool_dcgm(text: &str) {
    let Some(problems) = promtool_lint(text) else {
        return;
    };
    let inherent = [
        "label names should be written in 'snake_case' not 'camelCase'",
        "counter metrics should have \"_total\" suffix",
        "metric name should not include type 'counter'",
    ];
    for p in &problems {
        let dcgm = p.starts_with("DCGM_FI_");
        assert!(
            dcgm && inherent.iter().any(|i| p.ends_with(i)),
            "promtool finding beyond dcgm-exporter's own naming: {p}\nall: {problems:#?}"
        );
    }
}
