//! The side-effecting edge, injected so that delivery can be tested without a network: HTTP
//! POSTs and argv programs, and the two classes of failure delivery acts on.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};

/// Why a delivery attempt failed, and so what happens next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// This notification can never be delivered (HTTP 4xx other than 408 and 429, a node Slurm
    /// does not know, an invalid request): reported once and dropped, so that it does not hold
    /// back what follows.
    Permanent(String),
    /// It may work later (timeouts, connection errors, HTTP 5xx, 408 and 429, a program that
    /// failed): retried with backoff, in order per group.
    Retry(String),
}

impl Failure {
    /// What happened.
    pub fn message(&self) -> &str {
        match self {
            Failure::Permanent(m) | Failure::Retry(m) => m,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// The class of an HTTP status that is not 2xx: a request the receiver refused for good, or a
/// receiver that is busy or broken for now.
pub fn http_failure(status: u16, what: String) -> Failure {
    if (400..500).contains(&status) && status != 408 && status != 429 {
        Failure::Permanent(what)
    } else {
        Failure::Retry(what)
    }
}

/// A program to run (never through a shell).
#[derive(Debug, Clone)]
pub struct Exec<'a> {
    /// argv.
    pub argv: &'a [String],
    /// Variables set for it.
    pub env: Vec<(String, String)>,
    /// Names of variables of ours it inherits besides [`passes_env`]'s (the receiver's `env`).
    pub inherit: &'a [String],
    /// Its standard input.
    pub stdin: &'a [u8],
    /// It is killed, with its whole process group, after this long.
    pub timeout: Duration,
    /// Return its stdout and stderr (else stdout goes to our stderr: ours carries records).
    pub capture: bool,
}

/// What a program run produced.
#[derive(Debug, Clone, Default)]
pub struct ExecOutput {
    /// Exit status (None when killed by a signal).
    pub status: Option<i32>,
    /// Its stdout (with `capture`).
    pub stdout: String,
    /// Its stderr (with `capture`).
    pub stderr: String,
}

/// The side-effecting edge. Shared by the delivery workers, hence `Sync`.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// POSTs JSON; a non-2xx status is classified with [`http_failure`].
    fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<(), Failure>;
    /// Runs a program. `Err` when it could not be started or was killed at its timeout.
    fn exec(&self, req: &Exec<'_>) -> Result<ExecOutput, String>;
    /// Waits (a lease's settle time), so that a scripted transport can let time pass at once.
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// Whether a variable of ours reaches exec receivers and scontrol without being listed in the
/// receiver's `env`: the basics a program needs and `UGRO_ALERT_*`; everything else (tokens,
/// credentials) is withheld.
pub fn passes_env(name: &str) -> bool {
    matches!(name, "PATH" | "HOME" | "LANG" | "LC_ALL" | "TZ") || name.starts_with("UGRO_ALERT_")
}

/// HTTP through ureq (one agent, so connections to a receiver are reused), processes through
/// `std::process::Command` in their own process group.
#[derive(Debug)]
pub struct RealTransport {
    agent: ureq::Agent,
}

impl Default for RealTransport {
    fn default() -> Self {
        RealTransport {
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }
}

/// The host of a URL, without credentials: the URL itself may hold a token.
fn host_of(url: &str) -> String {
    url.split('/')
        .nth(2)
        .unwrap_or("?")
        .rsplit('@')
        .next()
        .unwrap_or("?")
        .to_owned()
}

fn redact(msg: &str, url: &str) -> String {
    if url.is_empty() {
        msg.to_owned()
    } else {
        msg.replace(url, "<url>")
    }
}

impl Transport for RealTransport {
    fn post(
        &self,
        url: &str,
        headers: &[(&str, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<(), Failure> {
        let mut req = self
            .agent
            .post(url)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .header("Content-Type", "application/json")
            .header(
                "User-Agent",
                concat!("ugro-alert/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let host = host_of(url);
        match req.send(body) {
            Ok(resp) if resp.status().is_success() => Ok(()),
            Ok(resp) => {
                let code = resp.status().as_u16();
                Err(http_failure(code, format!("POST to {host}: HTTP {code}")))
            }
            Err(e) => Err(Failure::Retry(format!(
                "POST to {host}: {}",
                redact(&e.to_string(), url)
            ))),
        }
    }

    fn exec(&self, req: &Exec<'_>) -> Result<ExecOutput, String> {
        let Some((prog, args)) = req.argv.split_first() else {
            return Err("empty command".into());
        };
        let mut cmd = Command::new(prog);
        // Its own process group, so that a timeout kills whatever the program started too.
        cmd.process_group(0);
        // Children see only what they need: our environment may hold receiver tokens.
        cmd.env_clear();
        for (k, v) in std::env::vars_os() {
            let name = k.to_string_lossy();
            if passes_env(&name) || req.inherit.iter().any(|n| *n == name) {
                cmd.env(&k, v);
            }
        }
        let out = |capture| {
            if capture {
                Stdio::piped()
            } else {
                Stdio::from(std::io::stderr())
            }
        };
        cmd.args(args)
            .envs(req.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(out(req.capture))
            .stderr(if req.capture {
                Stdio::piped()
            } else {
                Stdio::inherit()
            });
        let mut child = cmd.spawn().map_err(|e| format!("{prog}: {e}"))?;
        let input = req.stdin.to_vec();
        let writer = child.stdin.take().map(|mut w| {
            std::thread::spawn(move || {
                // The program may exit without reading its input; that is its business.
                let _ = w.write_all(&input);
            })
        });
        let stdout = child.stdout.take().map(read_all);
        let stderr = child.stderr.take().map(read_all);
        let exited = wait_exit(&child, req.timeout);
        // The leader is a zombie now (not yet reaped), so its group id cannot have been reused:
        // whatever it left behind, or was still running at the timeout, is killed with it.
        let _ = rustix::process::kill_process_group(Pid::from_child(&child), Signal::KILL);
        let status = child.wait().map_err(|e| format!("{prog}: {e}"))?;
        let exited = exited.map_err(|e| format!("{prog}: waiting for it: {e}"))?;
        if !exited {
            return Err(format!(
                "{prog}: killed after {}",
                humantime::format_duration(req.timeout)
            ));
        }
        if let Some(w) = writer {
            let _ = w.join();
        }
        let join =
            |h: Option<JoinHandle<String>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
        Ok(ExecOutput {
            status: status.code(),
            stdout: join(stdout),
            stderr: join(stderr),
        })
    }
}

fn read_all(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// Waits until `child` exits (true) or `timeout` passes (false), without reaping it: a pidfd
/// becomes readable when the process exits, so no polling loop is needed.
fn wait_exit(child: &Child, timeout: Duration) -> std::io::Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let pidfd =
        rustix::process::pidfd_open(Pid::from_child(child), rustix::process::PidfdFlags::empty())?;
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ts = Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) if left.is_zero() => return Ok(false),
            Ok(0) => {}
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_4xx_is_permanent_except_timeout_and_rate_limit() {
        let p = |c| matches!(http_failure(c, String::new()), Failure::Permanent(_));
        assert!(p(400) && p(401) && p(404) && p(422));
        assert!(!p(408) && !p(429) && !p(500) && !p(503));
    }

    #[test]
    fn url_credentials_never_reach_the_message() {
        assert_eq!(
            host_of("https://u:tok@hooks.example/x?t=1"),
            "hooks.example"
        );
    }
}
