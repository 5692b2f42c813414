//! Transports: how one poll reaches one node's resident probe.
//!
//! Every transport ends in a resident `ugro-probe --serve` (or something that behaves like it):
//! a poll writes a newline and reads one line. Connection set-up (SSH handshake, deploy, spawn)
//! happens once, not per poll, which is where the speed over pdsh comes from.
//!
//! Failures are sorted by cause, because the operator's next step differs:
//! `ssh` (the session could not be opened or died: network, sshd, keys, host key),
//! `timeout` (no answer within the per-node timeout; the probe is restarted) and
//! `probe` (the probe exited, could not be started, or answered something that is not a sample).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::config::{Cluster, NodeConf, TransportConf, expand_argv};

/// Why a poll produced no sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollError {
    /// The SSH session could not be opened or broke.
    Ssh(String),
    /// No answer within the timeout.
    Timeout(Duration),
    /// The probe failed.
    Probe(String),
}

impl PollError {
    /// The `unreachable.cause` value.
    pub fn cause(&self) -> &'static str {
        match self {
            PollError::Ssh(_) => "ssh",
            PollError::Timeout(_) => "timeout",
            PollError::Probe(_) => "probe",
        }
    }

    /// The `unreachable.message` value.
    pub fn message(&self) -> String {
        match self {
            PollError::Ssh(m) | PollError::Probe(m) => m.clone(),
            PollError::Timeout(d) => format!(
                "no answer within {}",
                humantime::format_duration(Duration::from_millis(
                    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
                ))
            ),
        }
    }
}

/// The local probe binary that agentless deploy copies.
#[derive(Debug, Clone)]
pub struct LocalProbe {
    /// Where it is.
    pub path: PathBuf,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
}

impl LocalProbe {
    /// Hashes the binary at `path`.
    pub fn open(path: &Path) -> std::io::Result<LocalProbe> {
        use sha2::Digest;
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        let mut h = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let sha256 = h
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        Ok(LocalProbe {
            path: path.to_owned(),
            sha256,
        })
    }
}

/// Finds `ugro-probe`: next to the running executable first (an installed or built set of
/// tools belongs together), then on PATH.
pub fn find_local_probe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let beside = exe.parent()?.join("ugro-probe");
    if beside.is_file() {
        return Some(beside);
    }
    // Test executables live one level down (target/debug/deps).
    if let Some(up) = exe.parent().and_then(Path::parent) {
        let p = up.join("ugro-probe");
        if p.is_file() {
            return Some(p);
        }
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("ugro-probe"))
        .find(|p| p.is_file())
}

/// The longest base directory a control socket fits under: a Unix socket path has room for
/// 107 bytes, and under the base come `ugro-XXXXXX/` (ours), `.ssh-connectionXXXXXX/` (the
/// openssh crate's), `master` and the `.XXXXXXXXXXXXXXXX` ssh appends while it binds: 58 bytes.
/// A few bytes are kept in hand.
pub const CONTROL_BASE_MAX: usize = 45;

/// A private directory (mode 0700, made atomically under a random name) for the SSH control
/// sockets, in the first of `$TMPDIR`, `$XDG_RUNTIME_DIR` and `/tmp` whose path is short enough
/// for a socket path, so a long TMPDIR does not make every SSH node unreachable.
pub fn control_dir() -> std::io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    let candidates = [
        Some(std::env::temp_dir()),
        runtime,
        Some(PathBuf::from("/tmp")),
    ];
    let mut last = None;
    for base in candidates.into_iter().flatten() {
        if !base.is_absolute() || base.as_os_str().len() > CONTROL_BASE_MAX {
            continue;
        }
        match tempfile::Builder::new()
            .prefix("ugro-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(&base)
        {
            Ok(d) => return Ok(d),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::other("no directory short enough for SSH control sockets")
    }))
}

/// Everything needed to (re)open one node's link.
#[derive(Debug, Clone)]
pub struct LinkSpec {
    /// Node name.
    pub node: String,
    /// How.
    pub kind: LinkKind,
}

/// The transport of a spec.
#[derive(Debug, Clone)]
pub enum LinkKind {
    /// A local resident child.
    Child {
        /// Program and arguments.
        argv: Vec<String>,
    },
    /// An SSH session with a resident probe on it.
    Ssh(Box<SshSpec>),
}

/// SSH settings of one node.
#[derive(Debug, Clone)]
pub struct SshSpec {
    /// Host.
    pub host: String,
    /// Port.
    pub port: Option<u16>,
    /// User.
    pub user: Option<String>,
    /// Key file.
    pub identity_file: Option<PathBuf>,
    /// known_hosts.
    pub known_hosts: Option<PathBuf>,
    /// ssh_config.
    pub config_file: Option<PathBuf>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// StrictHostKeyChecking=accept-new instead of yes.
    pub accept_new: bool,
    /// Private directory for control sockets.
    pub control_dir: PathBuf,
    /// Remote probe path (used as is with `--no-deploy`, or when its hash matches).
    pub probe_path: String,
    /// Arguments after the probe path.
    pub probe_args: Vec<String>,
    /// The binary to deploy, unless `--no-deploy`.
    pub deploy: Option<Arc<LocalProbe>>,
}

/// Builds a node's link spec from the cluster file.
pub fn spec_for(
    cluster: &Cluster,
    node: &NodeConf,
    local_probe: Option<&Path>,
    deploy: Option<&Arc<LocalProbe>>,
    control_dir: &Path,
) -> Result<LinkSpec, String> {
    let mut probe_args = vec!["--serve".to_owned(), "--node".to_owned(), node.name.clone()];
    if let Some(n) = node.expected_gpus {
        probe_args.push("--expect-gpus".into());
        probe_args.push(n.to_string());
    }
    probe_args.extend(cluster.probe.args.iter().cloned());
    let kind = match cluster.transport_of(node) {
        TransportConf::Command(t) => LinkKind::Child {
            argv: expand_argv(t, node, &cluster.ssh, &cluster.probe.args),
        },
        TransportConf::Local => {
            let p = local_probe.ok_or_else(|| {
                "ugro-probe not found next to ugro-watch or on PATH (needed by transport: local)"
                    .to_owned()
            })?;
            let mut argv = vec![p.to_string_lossy().into_owned()];
            argv.extend(probe_args);
            LinkKind::Child { argv }
        }
        TransportConf::Ssh => LinkKind::Ssh(Box::new(SshSpec {
            host: node.host().to_owned(),
            port: node.port.or(cluster.ssh.port),
            user: node.user.clone().or_else(|| cluster.ssh.user.clone()),
            identity_file: cluster.ssh.identity_file.clone(),
            known_hosts: cluster.ssh.known_hosts.clone(),
            config_file: cluster.ssh.config_file.clone(),
            connect_timeout: cluster.ssh.connect_timeout,
            accept_new: cluster.ssh.accept_new_host_keys,
            control_dir: control_dir.to_owned(),
            probe_path: cluster.probe.path.clone(),
            probe_args,
            deploy: deploy.cloned(),
        })),
    };
    Ok(LinkSpec {
        node: node.name.clone(),
        kind,
    })
}

enum Resident {
    Child {
        child: tokio::process::Child,
        stdin: tokio::process::ChildStdin,
        stdout: BufReader<tokio::process::ChildStdout>,
    },
    Remote {
        child: openssh::Child<Arc<openssh::Session>>,
        stdin: openssh::ChildStdin,
        stdout: BufReader<openssh::ChildStdout>,
    },
}

/// One node's connection state, owned by its worker task.
pub struct Link {
    spec: LinkSpec,
    timeout: Duration,
    reconnect_min: Duration,
    reconnect_max: Duration,
    session: Option<Arc<openssh::Session>>,
    remote_probe: Option<String>,
    /// Why the local binary was not deployed (architecture mismatch); added to probe errors.
    deploy_note: Option<String>,
    resident: Option<Resident>,
    backoff: Duration,
    retry_at: Option<Instant>,
    last_error: Option<PollError>,
    line: String,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("node", &self.spec.node)
            .field("connected", &self.resident.is_some())
            .finish()
    }
}

impl Link {
    /// A link that connects on its first poll.
    pub fn new(
        spec: LinkSpec,
        timeout: Duration,
        reconnect_min: Duration,
        reconnect_max: Duration,
    ) -> Self {
        Link {
            spec,
            timeout,
            reconnect_min,
            reconnect_max,
            session: None,
            remote_probe: None,
            deploy_note: None,
            resident: None,
            backoff: reconnect_min,
            retry_at: None,
            last_error: None,
            line: String::with_capacity(4096),
        }
    }

    /// New timeout and reconnect backoff (SIGHUP); the session and probe stay.
    pub fn set_timing(
        &mut self,
        timeout: Duration,
        reconnect_min: Duration,
        reconnect_max: Duration,
    ) {
        self.timeout = timeout;
        self.reconnect_min = reconnect_min;
        self.reconnect_max = reconnect_max;
        self.backoff = self.backoff.max(reconnect_min).min(reconnect_max);
    }

    /// One poll: the probe's reply line, or why there is none.
    pub async fn poll(&mut self) -> Result<String, PollError> {
        let r = self.poll_inner().await;
        match (r, &self.deploy_note) {
            (Err(PollError::Probe(m)), Some(note)) => {
                Err(PollError::Probe(format!("{m} ({note})")))
            }
            (r, _) => r,
        }
    }

    async fn poll_inner(&mut self) -> Result<String, PollError> {
        if self.resident.is_none() {
            if let (Some(at), Some(e)) = (self.retry_at, &self.last_error)
                && Instant::now() < at
            {
                return Err(e.clone());
            }
            let budget = self.connect_budget();
            let opened = match tokio::time::timeout(budget, self.open()).await {
                Ok(r) => r,
                Err(_) => Err(PollError::Ssh(format!(
                    "connecting took longer than {}",
                    humantime::format_duration(budget)
                ))),
            };
            if let Err(e) = opened {
                self.failed(e.clone());
                return Err(e);
            }
        }
        match tokio::time::timeout(self.timeout, self.exchange()).await {
            Ok(Ok(())) => {
                self.backoff = self.reconnect_min;
                self.retry_at = None;
                self.last_error = None;
                Ok(std::mem::take(&mut self.line))
            }
            Ok(Err(e)) => {
                let e = self.classify(e).await;
                self.failed(e.clone());
                Err(e)
            }
            Err(_) => {
                // The probe may answer late; that answer must not be read as the next poll's,
                // so this probe goes and a fresh one starts at the next poll. The SSH session
                // stays: a hung probe is not a dead network.
                self.drop_resident().await;
                Err(PollError::Timeout(self.timeout))
            }
        }
    }

    fn connect_budget(&self) -> Duration {
        match &self.spec.kind {
            // Handshake, deploy check (and maybe an upload), probe start.
            LinkKind::Ssh(s) => s.connect_timeout * 2 + self.timeout,
            LinkKind::Child { .. } => self.timeout,
        }
    }

    fn failed(&mut self, e: PollError) {
        let now = Instant::now();
        self.retry_at = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(self.reconnect_max);
        self.last_error = Some(e);
    }

    async fn open(&mut self) -> Result<(), PollError> {
        match self.spec.kind.clone() {
            LinkKind::Child { argv } => {
                let mut cmd = tokio::process::Command::new(&argv[0]);
                cmd.args(&argv[1..])
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .kill_on_drop(true);
                let mut child = cmd
                    .spawn()
                    .map_err(|e| PollError::Probe(format!("cannot start {}: {e}", argv[0])))?;
                let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                    return Err(PollError::Probe("child has no pipes".into()));
                };
                if let Some(err) = child.stderr.take() {
                    forward_stderr(self.spec.node.clone(), err);
                }
                self.resident = Some(Resident::Child {
                    child,
                    stdin,
                    stdout: BufReader::new(stdout),
                });
                Ok(())
            }
            LinkKind::Ssh(s) => {
                if self.session.is_none() {
                    self.session = Some(Arc::new(connect_ssh(&s).await?));
                    self.remote_probe = None;
                }
                let Some(session) = self.session.clone() else {
                    return Err(PollError::Ssh("no session".into()));
                };
                if self.remote_probe.is_none() {
                    self.deploy_note = None;
                    let p = match &s.deploy {
                        Some(local) => deploy(&session, &s.probe_path, local).await,
                        None => Ok(Deployed::Path(s.probe_path.clone())),
                    };
                    match p {
                        Ok(Deployed::Path(p)) => self.remote_probe = Some(p),
                        Ok(Deployed::ArchMismatch { remote }) => {
                            let note = format!(
                                "node is {remote}, the local ugro-probe is {}: not deployed, \
                                 running probe.path {:?} as it is on the node",
                                std::env::consts::ARCH,
                                s.probe_path
                            );
                            tracing::warn!(node = %self.spec.node, "{note}");
                            self.deploy_note = Some(note);
                            self.remote_probe = Some(s.probe_path.clone());
                        }
                        Err(e) => return Err(self.session_or(e).await),
                    }
                }
                let probe = self.remote_probe.clone().unwrap_or_default();
                let spawned = session
                    .clone()
                    .arc_command(probe)
                    .args(&s.probe_args)
                    .stdin(openssh::Stdio::piped())
                    .stdout(openssh::Stdio::piped())
                    .stderr(openssh::Stdio::piped())
                    .spawn()
                    .await;
                let mut child = match spawned {
                    Ok(c) => c,
                    Err(e) => {
                        let e = PollError::Probe(format!("starting the probe: {e}"));
                        return Err(self.session_or(e).await);
                    }
                };
                let (Some(stdin), Some(stdout)) = (child.stdin().take(), child.stdout().take())
                else {
                    return Err(PollError::Probe("remote child has no pipes".into()));
                };
                if let Some(err) = child.stderr().take() {
                    forward_stderr(self.spec.node.clone(), err);
                }
                self.resident = Some(Resident::Remote {
                    child,
                    stdin,
                    stdout: BufReader::new(stdout),
                });
                Ok(())
            }
        }
    }

    /// A failure on an open session is the session's fault if the session is gone.
    async fn session_or(&mut self, e: PollError) -> PollError {
        if let Some(s) = &self.session
            && let Err(se) = s.check().await
        {
            self.close_session().await;
            return PollError::Ssh(format!("session lost: {se}"));
        }
        e
    }

    async fn exchange(&mut self) -> Result<(), std::io::Error> {
        self.line.clear();
        let n = match self.resident.as_mut() {
            None => return Err(std::io::Error::other("not connected")),
            Some(Resident::Child { stdin, stdout, .. }) => {
                stdin.write_all(b"\n").await?;
                stdin.flush().await?;
                stdout.read_line(&mut self.line).await?
            }
            Some(Resident::Remote { stdin, stdout, .. }) => {
                stdin.write_all(b"\n").await?;
                stdin.flush().await?;
                stdout.read_line(&mut self.line).await?
            }
        };
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "probe closed its output",
            ));
        }
        while self.line.ends_with('\n') || self.line.ends_with('\r') {
            self.line.pop();
        }
        Ok(())
    }

    async fn classify(&mut self, io: std::io::Error) -> PollError {
        let resident = self.resident.take();
        match resident {
            None => PollError::Probe(io.to_string()),
            Some(Resident::Child {
                mut child, stdin, ..
            }) => {
                drop(stdin);
                let status = tokio::time::timeout(Duration::from_millis(500), child.wait()).await;
                match status {
                    Ok(Ok(st)) => PollError::Probe(format!("probe exited ({st})")),
                    _ => {
                        let _ = child.start_kill();
                        PollError::Probe(format!("probe: {io}"))
                    }
                }
            }
            Some(Resident::Remote { child, stdin, .. }) => {
                drop(stdin);
                let session_dead = match &self.session {
                    Some(s) => s.check().await.err(),
                    None => None,
                };
                if let Some(se) = session_dead {
                    drop(child);
                    self.close_session().await;
                    return PollError::Ssh(format!("session lost: {se}"));
                }
                match tokio::time::timeout(Duration::from_millis(500), child.wait()).await {
                    Ok(Ok(st)) if st.code() == Some(255) => {
                        PollError::Ssh(format!("ssh failed ({st})"))
                    }
                    Ok(Ok(st)) => {
                        // The probe may be a stale copy; check the deployment again.
                        self.remote_probe = None;
                        PollError::Probe(format!("remote probe exited ({st})"))
                    }
                    // The session answered the check above, so this is the command: exit 127
                    // (not found) or a probe killed by a signal.
                    Ok(Err(e @ openssh::Error::Remote(_))) => {
                        let probe = self.remote_probe.take().unwrap_or_default();
                        PollError::Probe(format!("remote probe {probe:?}: {}", flatten(&e)))
                    }
                    Ok(Err(e)) => {
                        self.close_session().await;
                        PollError::Ssh(format!("session lost: {e}"))
                    }
                    Err(_) => PollError::Probe(format!("probe: {io}")),
                }
            }
        }
    }

    async fn drop_resident(&mut self) {
        match self.resident.take() {
            None => {}
            Some(Resident::Child { mut child, .. }) => {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_millis(200), child.wait()).await;
            }
            Some(Resident::Remote { child, stdin, .. }) => {
                // Closing the channel gives the remote probe EOF; it exits once it is able to.
                drop(stdin);
                let _ = tokio::time::timeout(Duration::from_millis(200), child.disconnect()).await;
            }
        }
    }

    async fn close_session(&mut self) {
        self.remote_probe = None;
        if let Some(s) = self.session.take()
            && let Ok(s) = Arc::try_unwrap(s)
        {
            let _ = tokio::time::timeout(Duration::from_secs(2), s.close()).await;
        }
    }

    /// Ends the probe (EOF on its stdin) and closes the session.
    pub async fn close(mut self) {
        match self.resident.take() {
            None => {}
            Some(Resident::Child {
                mut child, stdin, ..
            }) => {
                drop(stdin);
                if tokio::time::timeout(Duration::from_secs(2), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
            }
            Some(Resident::Remote { child, stdin, .. }) => {
                drop(stdin);
                let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
            }
        }
        self.close_session().await;
    }
}

fn forward_stderr<R: tokio::io::AsyncRead + Unpin + Send + 'static>(node: String, r: R) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            tracing::warn!(node = %node, "probe: {l}");
        }
    });
}

async fn connect_ssh(s: &SshSpec) -> Result<openssh::Session, PollError> {
    let mut b = openssh::SessionBuilder::default();
    b.known_hosts_check(if s.accept_new {
        openssh::KnownHosts::Add
    } else {
        openssh::KnownHosts::Strict
    })
    .connect_timeout(s.connect_timeout)
    .server_alive_interval(Duration::from_secs(10))
    .control_directory(&s.control_dir);
    if let Some(u) = &s.user {
        b.user(u.clone());
    }
    if let Some(p) = s.port {
        b.port(p);
    }
    if let Some(k) = &s.identity_file {
        b.keyfile(k);
    }
    if let Some(k) = &s.known_hosts {
        b.user_known_hosts_file(k);
    }
    if let Some(c) = &s.config_file {
        b.config_file(c);
    }
    b.connect_mux(&s.host)
        .await
        .map_err(|e| PollError::Ssh(flatten(&e)))
}

fn flatten(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        let t = x.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = x.source();
    }
    s
}

// Prints the node's architecture, then the path of a probe whose SHA-256 matches: the per-user
// cache copy first, then the configured path. `sha256sum` is coreutils, present wherever a GNU
// userland is.
const CHECK: &str = r#"echo "arch $(uname -m 2>/dev/null)"
want="$2"; c="${XDG_CACHE_HOME:-$HOME/.cache}/ugro/ugro-probe-$want"
for f in "$c" "$(command -v -- "$1" 2>/dev/null)"; do
  if [ -n "$f" ] && [ -x "$f" ] && [ "$(sha256sum < "$f" | cut -d' ' -f1)" = "$want" ]; then
    echo "ok $f"; exit 0
  fi
done
echo "need $c""#;

// Receives the binary on stdin into a temporary file in the cache directory, verifies its
// SHA-256 there, and only then renames it into place, so a torn or altered copy is never run.
const UPLOAD: &str = r#"umask 077; f="$1"; want="$2"; d=$(dirname -- "$f")
mkdir -p -- "$d" || exit 1
t="$f.tmp.$$"
cat > "$t" || { rm -f -- "$t"; exit 1; }
got=$(sha256sum < "$t" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then rm -f -- "$t"; echo "sha256 mismatch: got $got" >&2; exit 3; fi
chmod 700 "$t" && mv -f -- "$t" "$f" && echo "$f""#;

/// What the deploy step settled on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Deployed {
    /// Run the probe at this remote path.
    Path(String),
    /// The node's architecture differs from this machine's: the local binary cannot run there.
    ArchMismatch {
        /// `uname -m` of the node.
        remote: String,
    },
}

/// The Rust name (`std::env::consts::ARCH`) of a `uname -m` machine name; `None` when unknown.
pub fn rust_arch(uname_m: &str) -> Option<&'static str> {
    Some(match uname_m.trim() {
        "x86_64" | "amd64" => "x86_64",
        "aarch64" | "arm64" | "aarch64_be" | "armv8b" | "armv8l" => "aarch64",
        "i386" | "i486" | "i586" | "i686" => "x86",
        m if m.starts_with("armv") => "arm",
        "ppc64" | "ppc64le" => "powerpc64",
        "ppc" => "powerpc",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "loongarch64" => "loongarch64",
        "mips64" => "mips64",
        "mips" => "mips",
        "sparc64" => "sparc64",
        _ => return None,
    })
}

/// Whether the local binary (built for `local_arch`) may be copied to a node whose `uname -m`
/// printed `remote`. An empty or unknown answer does not block deploy: the copy is still
/// verified by hash, and refusing would break nodes whose uname is merely unusual.
pub fn arch_allows_deploy(local_arch: &str, remote: &str) -> bool {
    match rust_arch(remote) {
        Some(r) => r == local_arch,
        None => true,
    }
}

/// Makes sure the node has a probe with the local binary's SHA-256 and returns its path.
async fn deploy(
    session: &Arc<openssh::Session>,
    configured: &str,
    local: &LocalProbe,
) -> Result<Deployed, PollError> {
    let out = session
        .command("sh")
        .arg("-c")
        .arg(CHECK)
        .arg("ugro-deploy")
        .arg(configured)
        .arg(&local.sha256)
        .stdin(openssh::Stdio::null())
        .stderr(openssh::Stdio::null())
        .output()
        .await
        .map_err(|e| PollError::Ssh(format!("deploy check: {}", flatten(&e))))?;
    let all = String::from_utf8_lossy(&out.stdout);
    let mut text = all.trim();
    if let Some(rest) = text.strip_prefix("arch ") {
        let (arch, rest) = rest.split_once('\n').unwrap_or((rest, ""));
        let arch = arch.trim();
        if !arch_allows_deploy(std::env::consts::ARCH, arch) {
            return Ok(Deployed::ArchMismatch {
                remote: arch.to_owned(),
            });
        }
        text = rest.trim();
    }
    if let Some(p) = text.strip_prefix("ok ") {
        return Ok(Deployed::Path(p.to_owned()));
    }
    let Some(target) = text.strip_prefix("need ") else {
        return Err(PollError::Probe(format!(
            "deploy check printed {text:?} ({})",
            out.status
        )));
    };
    let bytes = tokio::fs::read(&local.path)
        .await
        .map_err(|e| PollError::Probe(format!("reading {}: {e}", local.path.display())))?;
    let mut child = session
        .command("sh")
        .arg("-c")
        .arg(UPLOAD)
        .arg("ugro-deploy")
        .arg(target)
        .arg(&local.sha256)
        .stdin(openssh::Stdio::piped())
        .stdout(openssh::Stdio::piped())
        .stderr(openssh::Stdio::piped())
        .spawn()
        .await
        .map_err(|e| PollError::Ssh(format!("deploy: {}", flatten(&e))))?;
    if let Some(mut stdin) = child.stdin().take() {
        stdin
            .write_all(&bytes)
            .await
            .map_err(|e| PollError::Ssh(format!("deploy upload: {e}")))?;
        stdin
            .shutdown()
            .await
            .map_err(|e| PollError::Ssh(format!("deploy upload: {e}")))?;
    }
    drop(bytes);
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| PollError::Ssh(format!("deploy: {}", flatten(&e))))?;
    if !out.status.success() {
        return Err(PollError::Probe(format!(
            "deploying ugro-probe to {target} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    tracing::info!("deployed ugro-probe to {target}");
    Ok(Deployed::Path(target.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_have_their_wire_names() {
        assert_eq!(PollError::Ssh("x".into()).cause(), "ssh");
        assert_eq!(PollError::Probe("x".into()).cause(), "probe");
        let t = PollError::Timeout(Duration::from_millis(1500));
        assert_eq!(t.cause(), "timeout");
        assert_eq!(t.message(), "no answer within 1s 500ms");
    }

    #[test]
    fn control_dir_is_private_and_short_whatever_tmpdir_is() {
        use std::os::unix::fs::PermissionsExt;
        let d = control_dir().unwrap();
        let mode = std::fs::metadata(d.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(
            d.path().as_os_str().len() <= CONTROL_BASE_MAX + 12,
            "{:?}",
            d.path()
        );
    }

    #[test]
    fn local_probe_hash_is_sha256() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("bin");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            LocalProbe::open(&p).unwrap().sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn local_binary_is_deployed_only_to_nodes_of_the_same_architecture() {
        assert!(arch_allows_deploy("x86_64", "x86_64"));
        assert!(arch_allows_deploy("x86_64", "amd64\n"));
        assert!(arch_allows_deploy("aarch64", "arm64"));
        assert!(arch_allows_deploy("aarch64", "aarch64"));
        assert!(!arch_allows_deploy("x86_64", "aarch64"));
        assert!(!arch_allows_deploy("aarch64", "x86_64"));
        assert!(!arch_allows_deploy("x86_64", "i686"));
        assert!(!arch_allows_deploy("x86_64", "ppc64le"));
        // No answer (no uname) or an unheard-of name does not block deploy.
        assert!(arch_allows_deploy("x86_64", ""));
        assert!(arch_allows_deploy("x86_64", "vax"));
        assert_eq!(rust_arch("armv7l"), Some("arm"));
        assert!(arch_allows_deploy(
            std::env::consts::ARCH,
            match std::env::consts::ARCH {
                "x86_64" => "x86_64",
                "aarch64" => "aarch64",
                _ => "",
            }
        ));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn new_timing_applies_to_a_running_link_without_restarting_its_probe() {
        // The child prints its pid with every answer: the same pid means the same probe.
        let spec = LinkSpec {
            node: "n".into(),
            kind: LinkKind::Child {
                argv: vec![
                    "sh".into(),
                    "-c".into(),
                    "while read -r _; do echo $$; done".into(),
                ],
            },
        };
        let mut l = Link::new(
            spec,
            Duration::from_secs(30),
            Duration::ZERO,
            Duration::ZERO,
        );
        let first = l.poll().await.unwrap();
        l.set_timing(Duration::from_secs(20), Duration::ZERO, Duration::ZERO);
        assert_eq!(l.poll().await.unwrap(), first);
        assert_eq!(l.timeout, Duration::from_secs(20));
        l.close().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn shortened_timeout_applies_to_the_next_poll() {
        let hang = LinkSpec {
            node: "n".into(),
            kind: LinkKind::Child {
                argv: vec!["sleep".into(), "30".into()],
            },
        };
        let mut l = Link::new(
            hang,
            Duration::from_secs(60),
            Duration::ZERO,
            Duration::ZERO,
        );
        l.set_timing(Duration::from_millis(200), Duration::ZERO, Duration::ZERO);
        let t0 = std::time::Instant::now();
        let e = l.poll().await.unwrap_err();
        assert_eq!(e, PollError::Timeout(Duration::from_millis(200)));
        assert!(t0.elapsed() < Duration::from_secs(30));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn resident_child_answers_one_line_per_newline() {
        let spec = LinkSpec {
            node: "n".into(),
            kind: LinkKind::Child {
                argv: vec![
                    "sh".into(),
                    "-c".into(),
                    "i=0; while read -r _; do i=$((i+1)); echo \"{\\\"i\\\":$i}\"; done".into(),
                ],
            },
        };
        let mut l = Link::new(spec, Duration::from_secs(5), Duration::ZERO, Duration::ZERO);
        assert_eq!(l.poll().await.unwrap(), r#"{"i":1}"#);
        assert_eq!(l.poll().await.unwrap(), r#"{"i":2}"#);
        l.close().await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn hung_probe_times_out_and_exited_probe_is_a_probe_error() {
        let hang = LinkSpec {
            node: "n".into(),
            kind: LinkKind::Child {
                argv: vec!["sleep".into(), "30".into()],
            },
        };
        let mut l = Link::new(
            hang,
            Duration::from_millis(200),
            Duration::ZERO,
            Duration::ZERO,
        );
        assert_eq!(l.poll().await.unwrap_err().cause(), "timeout");
        let exits = LinkSpec {
            node: "n".into(),
            kind: LinkKind::Child {
                argv: vec!["sh".into(), "-c".into(), "exit 3".into()],
            },
        };
        let mut l = Link::new(
            exits,
            Duration::from_secs(5),
            Duration::ZERO,
            Duration::ZERO,
        );
        let e = l.poll().await.unwrap_err();
        assert_eq!(e.cause(), "probe");
        assert!(e.message().contains("exit"), "{}", e.message());
        let missing = LinkSpec {
            node: "n".into(),
            kind: LinkKind::Child {
                argv: vec!["/nonexistent/ugro-probe".into()],
            },
        };
        let mut l = Link::new(
            missing,
            Duration::from_secs(5),
            Duration::ZERO,
            Duration::ZERO,
        );
        assert_eq!(l.poll().await.unwrap_err().cause(), "probe");
    }
}
