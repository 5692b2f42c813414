//! Shared helpers for the integration tests.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use ugro_types::Timestamp;

pub const XID: &str = r#"{"code":"xid_fatal","component":"gpu","gpu":3,"deduction":100,"fatal":true,"action":"reset_gpu","message":"XID 79 fell off the bus"}"#;

/// A scored sample line.
pub fn sample(node: &str, ts: Timestamp, state: &str, reasons: &str) -> String {
    let node_json = serde_json::to_string(node).unwrap();
    format!(
        r#"{{"v":1,"kind":"sample","ts":"{ts}","node":{node_json},"score":{{"total":50,"state":"{state}","action":"reset_gpu","components":{{}},"reasons":[{reasons}],"summary":"score 50"}}}}"#
    )
}

pub fn secs(t: Timestamp, s: i64) -> Timestamp {
    Timestamp(t.0 + s * 1000)
}

/// Runs the binary with `args`, feeding `input`.
pub fn run(args: &[&str], input: &str, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("ugro-alert"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Decoded stdout records.
pub fn records(out: &Output) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

pub use ugro_e2e::{free_port, require};

pub fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}
