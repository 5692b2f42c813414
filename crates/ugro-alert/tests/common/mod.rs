//! Shared helpers for the integration tests.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use ugro_types::Timestamp;

pub const XID: &str = r#"{"code":"xid_fatal","component":"gpu","gpu":3,"deduction":100,"fatal":true,"action":"reset_gpu","message":"XID 79 fell off the bus"}"#;
/// A second cause, without an alert of its own: with it, NodeCritical fires beside GpuXidFatal.
pub const DISK: &str = r#"{"code":"disk_full","component":"system","deduction":30,"action":"check_host","message":"/ 99% full"}"#;

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

/// What the test HTTP server does with a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Accepts and closes at once.
    Close,
    /// Answers 200.
    Ok,
    /// Reads the request and never answers (until the server is dropped).
    Hang,
    /// Answers with this status.
    Status(u16),
}

/// A small HTTP server on a loopback port that records what it is sent:
/// `(X-Ugro-Notification-Id, body)`.
pub struct Server {
    pub got: std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>,
    pub mode: std::sync::Arc<std::sync::Mutex<Mode>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub port: u16,
    handle: Option<std::thread::JoinHandle<()>>,
}

fn read_request(c: &std::net::TcpStream) -> Option<(String, Vec<u8>)> {
    use std::io::{BufRead, Read};
    let mut r = std::io::BufReader::new(c.try_clone().ok()?);
    let mut len = 0usize;
    let mut id = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let t = line.trim_end();
        if t.is_empty() {
            break;
        }
        let lower = t.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
        if lower.starts_with("x-ugro-notification-id:") {
            id = t.split(':').nth(1)?.trim().to_owned();
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((id, body))
}

impl Server {
    pub fn start(port: u16, mode: Mode) -> Server {
        use std::io::Write;
        use std::sync::atomic::Ordering;
        let l = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mode = std::sync::Arc::new(std::sync::Mutex::new(mode));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, m, s) = (got.clone(), mode.clone(), stop.clone());
        let handle = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !s.load(Ordering::Relaxed) {
                let Ok((c, _)) = l.accept() else {
                    continue;
                };
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let mode = *m.lock().unwrap();
                if mode == Mode::Close {
                    drop(c);
                    continue;
                }
                if mode == Mode::Hang {
                    // Accepted, and never answered.
                    held.push(c);
                    continue;
                }
                let g = g.clone();
                std::thread::spawn(move || {
                    let mut c = c;
                    let Some((id, body)) = read_request(&c) else {
                        return;
                    };
                    let status = match mode {
                        Mode::Status(code) => code,
                        _ => 200,
                    };
                    if status == 200 {
                        g.lock()
                            .unwrap()
                            .push((id, serde_json::from_slice(&body).unwrap()));
                    }
                    let head = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = c.write_all(head.as_bytes());
                });
            }
        });
        Server {
            got,
            mode,
            stop,
            port,
            handle: Some(handle),
        }
    }

    pub fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    pub fn got(&self) -> Vec<(String, serde_json::Value)> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Wakes the blocking accept.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Entries in a spool directory.
pub fn spooled(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".json"))
        })
        .count()
    })
}

/// Asserts that a run exited 0 and returns its stderr.
pub fn succeeded(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

/// Writes an ugro-alert configuration in which every condition fires on its first sample
/// and flap detection is off: the tests using it are about delivery, and feed one sample per
/// fault. The timing itself (`for`, flapping) is tested in the engine's tests and cli.rs.
pub fn write_config(path: &Path, yaml: &str) {
    write(
        path,
        &format!(
            "alert_rules: {{'*': {{for: 0, keep_firing_for: 0}}}}\nflap_detection: {{enabled: false}}\n{yaml}"
        ),
    );
}

/// Runs `ugro-alert -c cfg --state state --act` over `lines` with scontrol reaching the real
/// cluster `c` (its SLURM_CONF passed through the receiver's `env`); returns stderr.
pub fn act_on(
    c: &ugro_e2e::slurm::SlurmCluster,
    cfg: &Path,
    state: &Path,
    lines: &[String],
) -> String {
    let args = [
        "-c",
        cfg.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--act",
    ];
    let conf = c.conf().display().to_string();
    succeeded(&run(
        &args,
        &lines.join("\n"),
        &[("SLURM_CONF", conf.as_str())],
    ))
}

/// The node's Slurm `Comment` (where replicas keep their lease), empty when none.
pub fn comment(c: &ugro_e2e::slurm::SlurmCluster, node: &str) -> String {
    let show = c.run("scontrol", &["show", "node", node]);
    show.lines()
        .find_map(|l| l.trim().strip_prefix("Comment="))
        .unwrap_or("")
        .trim()
        .to_owned()
}

/// (holder, until) of the node's lease, from its comment.
pub fn lease(c: &ugro_e2e::slurm::SlurmCluster, node: &str) -> (String, u64) {
    let com = comment(c, node);
    let tok = com.split_whitespace().last().unwrap_or("");
    let (h, u) = tok
        .strip_prefix("ugro-lease:")
        .and_then(|t| t.rsplit_once(':'))
        .unwrap_or_else(|| panic!("{node}: no lease in comment {com:?}"));
    (h.to_owned(), u.parse().unwrap())
}
