//! A real Slurm cluster on loopback for tests: munged, slurmctld and N slurmd from Debian's
//! `slurm-wlm` 22.05 and `munge`, all in one temporary directory, torn down on drop.
//!
//! Layout and choices (tested with slurm-wlm 22.05.8 as root in a container without systemd):
//! - munged gets its own key (`mungekey`) and socket (`--socket`); slurm.conf names the socket in
//!   `AuthInfo=socket=…`, which auth/munge and cred/munge and the client commands all read.
//!   munged refuses a socket whose directories are not searchable by all, so the temporary
//!   directory is made 0755 (the key's directory stays 0700).
//! - Several slurmd share the host: each is started with `-N nX` and listens on its own `Port=`
//!   from the node line (Debian's build needs no `--enable-multiple-slurmd` for this); spool,
//!   pid and log files use `%n` so they do not collide. `SlurmdParameters=config_overrides`
//!   lets every node claim 2 CPUs whatever the runner has, so a 1-CPU job makes a node MIXED and
//!   an `--exclusive` one ALLOCATED.
//! - proctrack/linuxproc and task/none need no cgroups; SlurmUser and SlurmdUser are root.
//! - Readiness is polled (`scontrol show node` until every node has registered), never slept.
//! - Teardown kills each daemon's process group, then every process whose environment carries
//!   this cluster's `SLURM_CONF` (slurmstepd and job steps, which slurmd detaches), then munged.
//!   Daemons are started under `setpriv --pdeathsig KILL` from a keeper thread, so a test process
//!   killed outright (no drop) takes them with it.
//!
//! [`SlurmCluster::shared`] hands every test of one binary the same cluster while any of them
//! holds it; tests sharing it must use different nodes.
#![allow(clippy::expect_used)] // test support: a panic is the failing test's report

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, Weak, mpsc};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process, kill_process_group};

/// How long the cluster may take to come up, and a node to reach a state a test waits for.
const STARTUP: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

const DAEMONS: [&str; 5] = [
    "/usr/sbin/munged",
    "/usr/sbin/mungekey",
    "/usr/sbin/slurmctld",
    "/usr/sbin/slurmd",
    "/usr/bin/scontrol",
];

/// What to start.
#[derive(Debug, Clone)]
pub struct SlurmOptions {
    /// Number of nodes, named n1..nN.
    pub nodes: usize,
    /// Lines appended to slurm.conf (HealthCheckProgram=…, Prolog=…).
    pub extra_conf: Vec<String>,
}

impl Default for SlurmOptions {
    fn default() -> Self {
        SlurmOptions {
            nodes: 2,
            extra_conf: Vec::new(),
        }
    }
}

/// A node as `scontrol show node` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// `State=` as printed: `IDLE`, `IDLE+DRAIN`, `ALLOCATED+DRAIN`, `DOWN*`, …
    pub state: String,
    /// `Reason=` without Slurm's ` [user@time]` suffix.
    pub reason: Option<String>,
}

impl NodeInfo {
    /// Whether the node carries the DRAIN flag (DRAINING or DRAINED in sinfo's words).
    pub fn drained(&self) -> bool {
        self.state.split('+').any(|f| f == "DRAIN")
    }
}

/// A running cluster; dropping it stops every process it started.
#[derive(Debug)]
pub struct SlurmCluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
    nodes: Vec<String>,
    daemons: Vec<Child>,
    munged: Option<Child>,
    keeper: Keeper,
}

impl SlurmCluster {
    /// Whether Debian's slurm-wlm and munge are installed.
    pub fn installed() -> bool {
        DAEMONS.iter().all(|p| Path::new(p).exists())
    }

    /// Starts a cluster, or returns None (skipped) when Slurm is missing and
    /// `UGRO_REQUIRE_REAL` is not 1 (then a missing Slurm fails the test).
    pub fn start(opts: &SlurmOptions) -> Option<SlurmCluster> {
        if !crate::require("Slurm (slurm-wlm, munge)", Self::installed()) {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("ugro-slurm-")
            .tempdir()
            .expect("temporary directory");
        let mut c = SlurmCluster {
            conf: dir.path().join("slurm.conf"),
            nodes: (1..=opts.nodes).map(|i| format!("n{i}")).collect(),
            dir,
            daemons: Vec::new(),
            munged: None,
            keeper: Keeper::new(),
        };
        c.start_munged();
        c.write_conf(opts);
        c.start_slurm();
        Some(c)
    }

    /// The cluster every test of this binary shares while one of them holds it (default
    /// options with `nodes` nodes); None when skipped.
    pub fn shared(nodes: usize) -> Option<Arc<SlurmCluster>> {
        static SHARED: Mutex<Weak<SlurmCluster>> = Mutex::new(Weak::new());
        let mut slot = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = slot.upgrade().filter(|c| c.nodes.len() >= nodes) {
            return Some(c);
        }
        let c = Arc::new(Self::start(&SlurmOptions {
            nodes,
            ..SlurmOptions::default()
        })?);
        *slot = Arc::downgrade(&c);
        Some(c)
    }

    /// The slurm.conf path: `SLURM_CONF` for anything that talks to this cluster.
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// The cluster's temporary directory (tests may put their own files in it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Node names, n1..nN.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// A Slurm client command (scontrol, sbatch, …) with this cluster's `SLURM_CONF`.
    pub fn command(&self, prog: &str) -> Command {
        let mut cmd = Command::new(prog);
        cmd.env("SLURM_CONF", &self.conf).current_dir(self.dir());
        cmd
    }

    /// Runs a client command and returns its stdout; panics with its stderr when it fails.
    pub fn run(&self, prog: &str, args: &[&str]) -> String {
        let out = self.command(prog).args(args).output().expect(prog);
        assert!(
            out.status.success(),
            "{prog} {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A program in this cluster's directory that runs `real` with `SLURM_CONF` set, for
    /// callers that clear their environment (ugro-alert's slurm_drain today).
    pub fn wrapper(&self, real: &str) -> PathBuf {
        let name = Path::new(real).file_name().expect("program name");
        let bin = self.dir().join("bin");
        std::fs::create_dir_all(&bin).expect("bin directory");
        let path = bin.join(name);
        let script = format!(
            "#!/bin/sh\nSLURM_CONF='{}' exec '{real}' \"$@\"\n",
            self.conf.display()
        );
        crate::write_executable(&path, &script);
        path
    }

    /// The node's state and reason now.
    pub fn node(&self, name: &str) -> NodeInfo {
        parse_show_node(&self.run("scontrol", &["show", "node", name]))
            .unwrap_or_else(|| panic!("scontrol show node {name}: no State="))
    }

    /// sinfo's long state name for the node (`idle`, `drained`, `draining`, `mixed`, …).
    pub fn sinfo_state(&self, name: &str) -> String {
        self.run("sinfo", &["-h", "-N", "-n", name, "-o", "%T"])
            .trim()
            .to_owned()
    }

    /// Polls the node until `done` holds and returns it; panics after a minute with the
    /// last state seen.
    pub fn wait_node(&self, name: &str, what: &str, done: impl Fn(&NodeInfo) -> bool) -> NodeInfo {
        let deadline = Instant::now() + STARTUP;
        loop {
            let n = self.node(name);
            if done(&n) {
                return n;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never became {what}: last {n:?}"
            );
            std::thread::sleep(POLL);
        }
    }

    /// Drains a node with a reason, as an operator would.
    pub fn drain(&self, node: &str, reason: &str) {
        let reason = format!("Reason={reason}");
        self.run(
            "scontrol",
            &[
                "update",
                &format!("NodeName={node}"),
                "State=DRAIN",
                &reason,
            ],
        );
    }

    /// Returns a node to service.
    pub fn resume(&self, node: &str) {
        self.run(
            "scontrol",
            &["update", &format!("NodeName={node}"), "State=RESUME"],
        );
    }

    /// Submits a batch job of `sleep 300` to `node` (the whole node with `exclusive`, else one
    /// CPU of its two) and waits until it runs; returns the job id.
    pub fn submit(&self, node: &str, exclusive: bool) -> String {
        let mut args = vec![
            "--parsable",
            "-w",
            node,
            "-o",
            "/dev/null",
            "-J",
            "ugro-test",
        ];
        args.push(if exclusive { "--exclusive" } else { "-n1" });
        args.extend(["--wrap", "sleep 300"]);
        let id = self.run("sbatch", &args).trim().to_owned();
        let deadline = Instant::now() + STARTUP;
        while self.job_state(&id) != "RUNNING" {
            assert!(
                Instant::now() < deadline,
                "job {id} never started on {node}"
            );
            std::thread::sleep(POLL);
        }
        id
    }

    /// squeue's state of a job (`PENDING`, `RUNNING`, …; empty once it has left the queue).
    pub fn job_state(&self, id: &str) -> String {
        self.run("squeue", &["-h", "-j", id, "-o", "%T"])
            .trim()
            .to_owned()
    }

    /// Cancels a job and waits until it has left its node.
    pub fn cancel(&self, id: &str) {
        self.run("scancel", &[id]);
        let deadline = Instant::now() + STARTUP;
        while !matches!(self.job_state(id).as_str(), "" | "CANCELLED" | "COMPLETED") {
            assert!(Instant::now() < deadline, "job {id} was never cancelled");
            std::thread::sleep(POLL);
        }
    }

    /// The daemons' logs, for a failing test's message.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        let Ok(rd) = std::fs::read_dir(self.dir().join("log")) else {
            return all;
        };
        for e in rd.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            let _ = writeln!(all, "== {}", e.path().display());
            for l in tail.iter().rev() {
                let _ = writeln!(all, "{l}");
            }
        }
        all
    }

    fn start_munged(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let d = self.dir().to_owned();
        let key_dir = d.join("munge");
        for sub in ["munge", "run", "log", "state", "spool"] {
            std::fs::create_dir(d.join(sub)).expect("cluster directory");
        }
        let mode = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
        mode(&d, 0o755).expect("chmod cluster directory");
        mode(&key_dir, 0o700).expect("chmod munge directory");
        let key = key_dir.join("munge.key");
        let out = Command::new("/usr/sbin/mungekey")
            .arg("-c")
            .arg("-k")
            .arg(&key)
            .output()
            .expect("mungekey");
        assert!(out.status.success(), "mungekey: {out:?}");
        let socket = self.munge_socket();
        let args = [
            "-F".to_owned(),
            format!("--socket={}", socket.display()),
            format!("--key-file={}", key.display()),
            format!("--pid-file={}", d.join("run/munged.pid").display()),
            format!("--seed-file={}", key_dir.join("seed").display()),
            format!("--log-file={}", d.join("log/munged.log").display()),
        ];
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        self.munged = Some(self.spawn("/usr/sbin/munged", &args, "munged"));
        let deadline = Instant::now() + STARTUP;
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "munged never made its socket\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn munge_socket(&self) -> PathBuf {
        self.dir().join("run/munge.socket")
    }

    fn write_conf(&self, opts: &SlurmOptions) {
        let host = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
        let conf = slurm_conf(self.dir(), &self.munge_socket(), &host, opts);
        std::fs::write(&self.conf, conf).expect("slurm.conf");
    }

    fn start_slurm(&mut self) {
        let conf = self.conf.clone();
        let ctld = self.spawn(
            "/usr/sbin/slurmctld",
            &["-D".as_ref(), "-f".as_ref(), conf.as_os_str()],
            "slurmctld",
        );
        self.daemons.push(ctld);
        for n in self.nodes.clone() {
            std::fs::create_dir(self.dir().join("spool").join(&n)).expect("spool directory");
            let args = [
                "-D".as_ref(),
                "-N".as_ref(),
                n.as_ref(),
                "-f".as_ref(),
                conf.as_os_str(),
            ];
            let d = self.spawn("/usr/sbin/slurmd", &args, &format!("slurmd-{n}"));
            self.daemons.push(d);
        }
        self.wait_registered();
    }

    /// Waits until every node has registered: responding (no `*`) and not DOWN or UNKNOWN.
    fn wait_registered(&self) {
        let deadline = Instant::now() + STARTUP;
        for n in &self.nodes {
            loop {
                let out = self.command("scontrol").args(["show", "node", n]).output();
                let info = out
                    .ok()
                    .filter(|o| o.status.success())
                    .and_then(|o| parse_show_node(&String::from_utf8_lossy(&o.stdout)));
                if info.is_some_and(|i| registered(&i.state)) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {n} never registered\n{}",
                    self.logs()
                );
                std::thread::sleep(POLL);
            }
        }
    }

    /// Starts a daemon in its own process group with its output in log/<name>.out.
    fn spawn(&self, prog: &str, args: &[&OsStr], name: &str) -> Child {
        use std::os::unix::process::CommandExt;
        let log = std::fs::File::create(self.dir().join("log").join(format!("{name}.out")))
            .expect("daemon log");
        let err = log.try_clone().expect("daemon log");
        let mut cmd = with_pdeathsig(prog);
        cmd.args(args)
            .env("SLURM_CONF", &self.conf)
            .current_dir(self.dir())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0);
        self.keeper
            .spawn(cmd)
            .unwrap_or_else(|e| panic!("start {name}: {e}"))
    }
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = kill_process_group(Pid::from_child(d), Signal::KILL);
            let _ = d.wait();
        }
        // slurmstepd and job steps outlive slurmd by design; a few rounds catch any that
        // were forking while we looked.
        for _ in 0..5 {
            let left = processes_using(&self.conf);
            if left.is_empty() {
                break;
            }
            for p in left {
                if let Some(pid) = Pid::from_raw(p) {
                    let _ = kill_process(pid, Signal::KILL);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(mut m) = self.munged.take() {
            let _ = m.kill();
            let _ = m.wait();
        }
    }
}

/// Every process but this one whose environment sets `SLURM_CONF` to `conf`: the harness
/// gives it to every daemon, slurmd passes it on to slurmstepd and jobs inherit it.
pub fn processes_using(conf: &Path) -> Vec<i32> {
    let needle = format!("SLURM_CONF={}\0", conf.display());
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| u32::try_from(p).is_ok_and(|p| p != me))
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/environ"))
                .is_ok_and(|env| contains(&env, needle.as_bytes()))
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Whether a registered node's state is one a test can work with.
fn registered(state: &str) -> bool {
    !state.contains('*')
        && !state.contains("NOT_RESPONDING")
        && !state.starts_with("DOWN")
        && !state.starts_with("UNKNOWN")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Parses `scontrol show node` (multi-line form) into state and reason.
pub fn parse_show_node(text: &str) -> Option<NodeInfo> {
    let field = |key: &str| {
        text.lines()
            .map(str::trim_start)
            .find_map(|l| l.strip_prefix(key))
    };
    let state = field("State=")?.split_whitespace().next()?.to_owned();
    let reason = field("Reason=").map(|r| match r.rfind(" [") {
        Some(i) if r.ends_with(']') => r[..i].to_owned(),
        _ => r.to_owned(),
    });
    Some(NodeInfo { state, reason })
}

/// The slurm.conf of a loopback cluster in `dir`.
fn slurm_conf(dir: &Path, munge: &Path, host: &str, opts: &SlurmOptions) -> String {
    let d = dir.display();
    let ports: Vec<u16> = (0..opts.nodes.max(1)).map(|_| crate::free_port()).collect();
    let mut c = format!(
        "# Written by the ugro test harness (tests/support/slurm.rs).\n\
         ClusterName=ugrotest\n\
         SlurmctldHost=localhost(127.0.0.1)\n\
         SlurmctldPort={ctld}\n\
         SlurmdPort={first}\n\
         SlurmUser=root\n\
         SlurmdUser=root\n\
         AuthType=auth/munge\n\
         CredType=cred/munge\n\
         AuthInfo=socket={munge}\n\
         StateSaveLocation={d}/state\n\
         SlurmdSpoolDir={d}/spool/%n\n\
         SlurmctldPidFile={d}/run/slurmctld.pid\n\
         SlurmdPidFile={d}/run/slurmd-%n.pid\n\
         SlurmctldLogFile={d}/log/slurmctld.log\n\
         SlurmdLogFile={d}/log/slurmd-%n.log\n\
         ProctrackType=proctrack/linuxproc\n\
         TaskPlugin=task/none\n\
         SelectType=select/cons_tres\n\
         SelectTypeParameters=CR_Core\n\
         SchedulerType=sched/builtin\n\
         SlurmdParameters=config_overrides\n\
         JobAcctGatherType=jobacct_gather/none\n\
         AccountingStorageType=accounting_storage/none\n\
         MpiDefault=none\n\
         ReturnToService=2\n",
        ctld = crate::free_port(),
        first = ports[0],
        munge = munge.display(),
    );
    for (i, port) in ports.iter().enumerate() {
        let _ = writeln!(
            c,
            "NodeName=n{} NodeAddr=127.0.0.1 NodeHostname={host} Port={port} CPUs=2 State=UNKNOWN",
            i + 1
        );
    }
    let _ = writeln!(
        c,
        "PartitionName=test Nodes=n[1-{}] Default=YES MaxTime=INFINITE State=UP",
        opts.nodes
    );
    for l in &opts.extra_conf {
        let _ = writeln!(c, "{l}");
    }
    c
}

/// Starts processes from one thread that lives as long as the cluster: `setpriv --pdeathsig`
/// ties a daemon to the thread that forked it, and a test's own thread may end while another
/// test still uses a shared cluster.
#[derive(Debug)]
struct Keeper {
    tx: Option<mpsc::Sender<(Command, mpsc::Sender<std::io::Result<Child>>)>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Keeper {
    fn new() -> Keeper {
        let (tx, rx) = mpsc::channel::<(Command, mpsc::Sender<std::io::Result<Child>>)>();
        let thread = std::thread::spawn(move || {
            for (mut cmd, reply) in rx {
                let _ = reply.send(cmd.spawn());
            }
        });
        Keeper {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn spawn(&self, cmd: Command) -> std::io::Result<Child> {
        let (reply, rx) = mpsc::channel();
        self.tx
            .as_ref()
            .expect("keeper running")
            .send((cmd, reply))
            .map_err(|_| std::io::Error::other("keeper thread gone"))?;
        rx.recv()
            .map_err(|_| std::io::Error::other("keeper thread gone"))?
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A command for `prog` run through `setpriv --pdeathsig KILL` when util-linux has it.
fn with_pdeathsig(prog: &str) -> Command {
    const SETPRIV: &str = "/usr/bin/setpriv";
    if !Path::new(SETPRIV).exists() {
        return Command::new(prog);
    }
    let mut cmd = Command::new(SETPRIV);
    cmd.args(["--pdeathsig", "KILL", "--", prog]);
    cmd
}
