//! Test helpers: real sshd instances on loopback, the fake probe, locating built binaries,
//! and reading a running watcher's output.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use ugro_e2e::{free_port, require};

/// target/<profile>/
pub fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ugro-watch"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The workspace's ugro-probe binary, if built (`cargo build --workspace`).
pub fn probe_bin() -> Option<PathBuf> {
    let p = target_dir().join("ugro-probe");
    p.is_file().then_some(p)
}

/// The ugro-watch binary.
pub fn watch_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ugro-watch"))
}

/// The fake probe script.
pub fn fake_probe() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake-probe.sh")
}

/// A GPU fixture the real probe can read.
pub fn gpu_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../ugro-probe/fixtures")
        .join(name)
}

/// Kills a process and everything it started (sshd forks a process per connection, and those
/// call setsid, so a process group would miss them): children are found through /proc.
pub fn kill_tree(pid: u32) {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                    continue;
                };
                // The fields after the command name (which may contain spaces) start after ')'.
                let ppid = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|s| s.parse::<u32>().ok());
                if ppid == Some(parent) && !all.contains(&p) {
                    all.push(p);
                }
            }
        }
        i += 1;
    }
    for p in all {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(p.to_string())
            .status();
    }
}

/// One sshd process.
#[derive(Debug)]
pub struct Sshd {
    child: Option<Child>,
    config: PathBuf,
    pub ports: Vec<u16>,
}

impl Sshd {
    fn start(config: &Path, ports: &[u16]) -> Sshd {
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sshd");
        let s = Sshd {
            child: Some(child),
            config: config.to_owned(),
            ports: ports.to_vec(),
        };
        s.wait_listening();
        s
    }

    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for p in &self.ports {
            while std::net::TcpStream::connect(("127.0.0.1", *p)).is_err() {
                assert!(Instant::now() < deadline, "sshd did not listen on {p}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Kills this sshd and its sessions.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_tree(c.id());
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports with the same keys.
    pub fn restart(&mut self) {
        self.stop();
        let again = Sshd::start(&self.config, &self.ports);
        *self = again;
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Loopback sshd instances serving `n` node aliases: all but the last share one sshd, the last
/// has its own so it can be stopped alone.
#[derive(Debug)]
pub struct SshFleet {
    pub dir: tempfile::TempDir,
    pub shared: Sshd,
    pub own: Sshd,
    pub ports: Vec<u16>,
    pub key: PathBuf,
    pub known_hosts: PathBuf,
    pub cache: PathBuf,
}

fn keygen(path: &Path) {
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "ugro-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("ssh-keygen");
    assert!(st.success());
}

impl SshFleet {
    /// Whether sshd and ssh are installed.
    pub fn available() -> bool {
        Path::new("/usr/sbin/sshd").exists()
            && which("ssh").is_some()
            && which("ssh-keygen").is_some()
    }

    /// Starts the fleet.
    pub fn start(n: usize) -> SshFleet {
        SshFleet::start_with_env(n, "")
    }

    /// Starts the fleet with extra `NAME=VALUE` variables (space separated) in every session;
    /// they override sshd's defaults, PATH included.
    pub fn start_with_env(n: usize, env: &str) -> SshFleet {
        assert!(n >= 2);
        let dir = tempfile::Builder::new()
            .prefix("ugro-sshd-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        keygen(&d.join("host_key"));
        keygen(&d.join("user_key"));
        std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).expect("authorized_keys");
        let cache = d.join("cache");
        std::fs::create_dir_all(&cache).expect("cache dir");
        // Privilege separation needs this directory when sshd runs as root; the Debian
        // service creates it at boot, a container may not have it.
        if rustix_is_root() {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        // SHLVL=1: the shared root account's bash skips ~/.bashrc for the session commands
        // (bash reads it when run by sshd at shell level 1), so a slow dotfile on the test
        // host (pyenv init) is not what the tests time out on.
        let write_conf = |name: &str, ports: &[u16]| {
            let mut c = String::new();
            for p in ports {
                c.push_str(&format!("ListenAddress 127.0.0.1:{p}\n"));
            }
            c.push_str(&format!(
                "HostKey {hk}\nPidFile {d}/{name}.pid\nAuthorizedKeysFile {d}/authorized_keys\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUsePAM no\n\
                 StrictModes no\nLogLevel ERROR\nMaxStartups 200:30:400\nMaxSessions 50\n\
                 SetEnv XDG_CACHE_HOME={cache} SHLVL=1 {env}\n",
                hk = d.join("host_key").display(),
                d = d.display(),
                cache = cache.display(),
            ));
            let p = d.join(format!("{name}.conf"));
            std::fs::write(&p, c).expect("sshd config");
            p
        };
        let shared_conf = write_conf("shared", &ports[..n - 1]);
        let own_conf = write_conf("own", &ports[n - 1..]);
        let shared = Sshd::start(&shared_conf, &ports[..n - 1]);
        let own = Sshd::start(&own_conf, &ports[n - 1..]);
        let host_pub = std::fs::read_to_string(d.join("host_key.pub")).expect("host key");
        let host_pub = host_pub
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let mut kh = String::new();
        for p in &ports {
            kh.push_str(&format!("[127.0.0.1]:{p} {host_pub}\n"));
        }
        let known_hosts = d.join("known_hosts");
        std::fs::write(&known_hosts, kh).expect("known_hosts");
        SshFleet {
            key: d.join("user_key"),
            known_hosts,
            cache,
            shared,
            own,
            ports,
            dir,
        }
    }

    /// A cluster file for the fleet; `extra` is appended to the top level. The connect timeout
    /// is generous: eight sessions that connect and upload a debug probe at once on a loaded
    /// runner can take several seconds, and a stopped sshd refuses at once anyway.
    pub fn cluster_yaml(&self, extra: &str, probe_args: &[&str]) -> String {
        let mut y = format!(
            "ssh:\n  identity_file: {}\n  known_hosts: {}\n  connect_timeout: 15s\n",
            self.key.display(),
            self.known_hosts.display()
        );
        y.push_str("probe:\n  args: [");
        y.push_str(
            &probe_args
                .iter()
                .map(|a| format!("'{a}'"))
                .collect::<Vec<_>>()
                .join(", "),
        );
        y.push_str("]\n");
        y.push_str(extra);
        y.push_str("nodes:\n");
        for (i, p) in self.ports.iter().enumerate() {
            y.push_str(&format!(
                "  - name: node-{i}\n    host: 127.0.0.1\n    port: {p}\n"
            ));
        }
        y
    }
}

fn rustix_is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// A program on PATH.
pub fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

/// A running watcher whose stdout is read line by line in the background.
pub struct Running {
    pub child: Child,
    rx: mpsc::Receiver<(Instant, Value)>,
    pub seen: Vec<(Instant, Value)>,
}

impl Running {
    /// Starts `ugro-watch ARGS` with stdout piped.
    pub fn start(args: &[&str], cwd: &Path) -> Running {
        let mut child = Command::new(watch_bin())
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ugro-watch");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                if tx.send((Instant::now(), v)).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            rx,
            seen: Vec::new(),
        }
    }

    /// Reads records until `pred` holds over everything seen so far, or panics after `limit`.
    pub fn until(
        &mut self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&[(Instant, Value)]) -> bool,
    ) {
        let deadline = Instant::now() + limit;
        while !pred(&self.seen) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let tail: Vec<String> = self
                    .seen
                    .iter()
                    .rev()
                    .take(4)
                    .map(|(_, v)| v.to_string().chars().take(300).collect())
                    .collect();
                panic!(
                    "timed out waiting for {what}; {} records, last: {tail:#?}",
                    self.seen.len()
                );
            }
            if let Ok(r) = self.rx.recv_timeout(left.min(Duration::from_millis(200))) {
                self.seen.push(r);
            }
        }
    }

    /// Sends a signal.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }

    /// Waits for exit (after a signal) and drains the output.
    pub fn wait(mut self, limit: Duration) -> (std::process::ExitStatus, Vec<(Instant, Value)>) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                while let Ok(r) = self.rx.recv_timeout(Duration::from_millis(300)) {
                    self.seen.push(r);
                }
                return (st, std::mem::take(&mut self.seen));
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ugro-watch did not exit");
            }
            while let Ok(r) = self.rx.try_recv() {
                self.seen.push(r);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Samples of `node`.
pub fn samples_of<'a>(
    seen: &'a [(Instant, Value)],
    node: &'a str,
) -> impl Iterator<Item = &'a (Instant, Value)> {
    seen.iter()
        .filter(move |(_, v)| v["kind"] == "sample" && v["node"] == node)
}

/// Decodes JSON lines.
pub fn records(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}
