//! `ugro-probe`: one node's GPU, kernel-log, host, network and process health as `sample`
//! records (JSON lines) or Prometheus text.
//!
//! The collectors live in [`gpu`]/[`nvml`] (NVML readings and their conversion, shared with
//! `--gpu-fixture`), [`xid`] (kernel log), [`host`], [`net`] and [`procs`]; [`probe::Probe`]
//! runs them on threads under time budgets and keeps NVML open between samples.

pub mod boot;
pub mod gpu;
pub mod host;
pub mod net;
pub mod nvml;
pub mod output;
pub mod pci;
pub mod probe;
pub mod procs;
pub mod xid;
pub mod xid_window;

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{CommandFactory, Parser, ValueEnum};
use serde::Deserialize;
use ugro_metrics::Names;
use ugro_support::cli::parse_duration;
use ugro_support::config::{ConfigError, Range};
use ugro_types::Exit;
use ugro_types::io::WriteError;

use output::Output;
use ugro_support::output::EmitError;

pub use probe::{Budgets, GpuSource, Probe, ProbeConfig};

const LONG_ABOUT: &str = "\
Collects one node's health and writes it as a `sample` record (one JSON line) for \
ugro-score, or as Prometheus text for node_exporter's textfile collector.

Collectors: GPUs through NVML (initialised once per process), XIDs from the kernel log \
(/dev/kmsg) attached to GPUs by PCI bus id, host CPU/load/memory/swap/uptime and local disks, \
network interfaces, InfiniBand ports and TCP reachability of --peer targets, and process-table \
health with training processes.

Choices an operator should know:
  * No NVIDIA library: gpu.status is \"absent\" with the loader's message, the rest of the sample \
is produced, and the exit status is 0. The library loads but NVML fails (driver not loaded, \
driver/library version mismatch, no permission): \"failed\". With --expect-gpus N, fewer GPUs \
is \"missing\", and no library at all is \"failed\".
  * A value the node cannot provide (NVML NotSupported, unreadable file) is left out and named \
in the section's `absent` map with the reason; it is never reported as 0.
  * Every collector runs on its own thread under its own time budget (--budget NAME=DUR). One \
that runs over is abandoned and listed once in `errors` with timed_out and its duration (and \
once in `collectors` with ok=false); its section is left out and the others still emit. An \
answer that arrives after the budget is discarded, even while other collectors still run. A \
hung collector is not started again while it hangs.
  * Disks: one entry per local filesystem (bind mounts of the same device once). Pseudo and \
memory filesystems (proc, sysfs, cgroup, tmpfs, squashfs, ...) are never reported; network \
filesystems (nfs, cifs, lustre, gpfs, ceph, sshfs, 9p, virtiofs, ...) only with \
--include-network-fs, since a dead server would hang statvfs. The disk collector has its own \
budget: a hung mount is named in the timeout error.
  * CPU % never sleeps in one-shot mode when a previous /proc/stat reading is available: it is \
kept in a small per-user state file ($XDG_STATE_HOME/ugro/probe-cpu.json) and used when it is \
at least 1 s and at most --cpu-state-max-age old. Otherwise the probe measures over \
--cpu-window (default 100ms; 0 reports cpu_pct absent instead). Resident modes (--serve, \
--interval) keep the reading in memory and neither read nor write the state file: their first \
sample measures over --cpu-window.
  * XIDs: /dev/kmsg is read from the oldest record still in the ring buffer and only XIDs \
within --xid-lookback (default 10m) are reported. In --serve/--interval modes the handle \
stays open and only new records are read. Each XID carries its identity, boot_id (from \
/proc/sys/kernel/random/boot_id) and seq (the kmsg record's sequence number), and a time \
derived once from the record's microseconds since boot and the kernel's boot time (btime in \
/proc/stat): two probes, a restarted probe and the next cron run report the same record with \
the same boot_id, seq and ts. btime is whole seconds, so ts may be up to 1 s early, and it \
moves if the wall clock is stepped; identity never does. A --kmsg-file replay keeps the \
records' sequence numbers and is taken to be of this boot unless --boot-id names another \
(--boot-id is refused for the live log). An unreadable kernel log (dmesg_restrict without \
CAP_SYSLOG) is not an error: each GPU's absent.xids gives the reason and the xid collector \
shows ok=false. Whenever the log was not read (unreadable, xid collector timed out, --no-xid \
without fixture kmsg lines) absent.xids says why, on every GPU and in gpu.absent, and \
Prometheus output leaves the XID count series out rather than writing 0. At most the 64 most \
recent XIDs are listed per GPU and for unattributed ones; the number left out is in the \
device's absent.xids_truncated (gpu.absent.unattributed_xids_truncated), and the Prometheus \
counts include them. A resident probe keeps only those 64 per PCI address in memory during an \
XID storm and counts older ones in slices of a sixteenth of the lookback, so the number left \
out can include up to lookback/16 of events just older than the window. Lines of a \
--kmsg-file without the kmsg header carry no time and no sequence number (no identity) and \
are always reported.
  * recovery_action per GPU is the driver's own verdict, NVML field 230 \
(NVML_FI_DEV_GET_GPU_RECOVERY_ACTION, as DCGM's driver-health watch reads it): none, \
gpu_reset, node_reboot, drain_p2p, drain_and_reset, or unknown_N for a value this build does \
not name. Drivers before r570 and boards without it: absent, with absent.recovery_action.
  * gpu.pci_devices counts NVIDIA (vendor 0x10de) display-class (0x03xx) functions under \
--sys-root/bus/pci/devices without NVML, so a GPU that dropped out of NVML (found) or a driver \
that does not load is still visible; NVSwitches and HDMI audio functions are not counted. It \
is read with fixtures too: fixtures replay NVML, not the PCI bus.
  * pcie_throughput is not read: it costs about 21 ms per call per GPU.
  * --serve reads stdin and writes one sample per input line, exiting at end of input: this is \
how ugro-watch keeps one resident probe per node.
  * --format prometheus writes ugro's metric names (contrib/README.md lists every family); \
--metric-names dcgm also writes dcgm-exporter's names and labels (gpu, UUID, pci_bus_id, \
device, modelName, Hostname, DCGM_FI_DRIVER_VERSION) for utilisation, framebuffer, \
temperature, power, XID, ECC, remapped rows, PCIe replays and clock-event reasons, so DCGM \
dashboards work on the same data. --output FILE writes each sample to FILE instead of \
stdout, replacing it atomically (temporary file in the same directory, mode 0644, rename; \
no fsync), so node_exporter's textfile collector never reads half a file; with --interval \
the file is rewritten every interval.

Exit status: 0 (also without GPUs), 64 usage, 66 missing fixture/config file, 65 unusable \
fixture, 74 write error, 78 bad configuration.";

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One `sample` JSON line per sample.
    Json,
    /// Prometheus text exposition (textfile collector).
    Prometheus,
}

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "ugro-probe",
    version,
    about = "Probe one node's GPUs, kernel-log XIDs, host, network and processes",
    long_about = LONG_ABOUT
)]
pub struct Cli {
    /// YAML configuration file with the same keys as the long options (snake_case).
    #[arg(short, long, env = "UGRO_PROBE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Node name in records [default: the host name].
    #[arg(long)]
    pub node: Option<String>,
    /// Output format [default: json].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Names in Prometheus output: ugro's own, or dcgm = ugro's plus dcgm-exporter's names and
    /// labels for the GPU readings both have [default: ugro].
    #[arg(long, value_enum, value_name = "NAMES")]
    pub metric_names: Option<Names>,
    /// Write each sample to FILE instead of standard output, replacing it atomically (temp
    /// file in the same directory, mode 0644, rename): for node_exporter's textfile collector.
    #[arg(short, long, value_name = "FILE", conflicts_with = "serve")]
    pub output: Option<PathBuf>,
    /// Write a sample every DUR until stopped (or --count samples).
    #[arg(long, value_parser = parse_duration, value_name = "DUR", conflicts_with = "serve")]
    pub interval: Option<Duration>,
    /// With --interval: stop after N samples.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Resident mode: one sample per line read on stdin; exit at end of input.
    #[arg(long)]
    pub serve: bool,
    /// Number of GPUs this node should have; fewer visible makes gpu.status "missing".
    #[arg(long, value_name = "N")]
    pub expect_gpus: Option<u32>,
    /// Replay recorded GPU readings instead of NVML (see fixtures/README.md).
    #[arg(long, value_name = "FILE")]
    pub gpu_fixture: Option<PathBuf>,
    /// Do not collect GPUs at all.
    #[arg(long, conflicts_with = "gpu_fixture")]
    pub no_gpu: bool,
    /// Read kernel-log lines from FILE instead of /dev/kmsg (replay, tests).
    #[arg(long, value_name = "PATH")]
    pub kmsg_file: Option<PathBuf>,
    /// The boot a --kmsg-file replay (or a fixture's kmsg lines) was recorded in, as
    /// /proc/sys/kernel/random/boot_id wrote it [default: this host's boot id].
    #[arg(long, value_name = "UUID")]
    pub boot_id: Option<String>,
    /// Where sysfs is mounted: network interfaces, InfiniBand ports and the PCI GPU count are
    /// read under it (a container with the host's /sys elsewhere, tests) [default: /sys].
    #[arg(long, value_name = "DIR")]
    pub sys_root: Option<PathBuf>,
    /// Do not read the kernel log.
    #[arg(long)]
    pub no_xid: bool,
    /// Report XIDs logged within this long before the sample [default: 10m].
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    pub xid_lookback: Option<Duration>,
    /// TCP peer to check (host:port); repeatable.
    #[arg(long = "peer", value_name = "HOST:PORT")]
    pub peers: Vec<String>,
    /// Connect timeout per peer [default: 1s].
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    pub peer_timeout: Option<Duration>,
    /// Training command-line pattern (substring); repeatable; replaces the defaults
    /// (torchrun, torch.distributed, deepspeed, accelerate launch, megatron, horovodrun, mpirun).
    #[arg(long = "training-pattern", value_name = "TEXT")]
    pub training_patterns: Vec<String>,
    /// Also report network filesystems.
    #[arg(long)]
    pub include_network_fs: bool,
    /// Measuring window when no recent previous CPU reading exists; 0 = report cpu_pct absent.
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    pub cpu_window: Option<Duration>,
    /// Use a previous CPU reading only if it is at most this old [default: 5m].
    #[arg(long, value_parser = parse_duration, value_name = "DUR")]
    pub cpu_state_max_age: Option<Duration>,
    /// Previous-CPU-reading file for one-shot runs (unused with --serve/--interval)
    /// [default: $XDG_STATE_HOME/ugro/probe-cpu.json].
    #[arg(long, value_name = "FILE")]
    pub cpu_state_file: Option<PathBuf>,
    /// Collector time budget, NAME=DUR (gpu 5s, xid 1s, host 1s, disks 2s, network 3s,
    /// processes 2s); repeatable.
    #[arg(long = "budget", value_name = "NAME=DUR")]
    pub budgets: Vec<String>,
}

/// The configuration file: the same keys as the long options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    node: Option<String>,
    format: Option<Format>,
    metric_names: Option<Names>,
    output: Option<PathBuf>,
    #[serde(default, with = "humantime_opt")]
    interval: Option<Duration>,
    expect_gpus: Option<u32>,
    gpu_fixture: Option<PathBuf>,
    no_gpu: Option<bool>,
    kmsg_file: Option<PathBuf>,
    boot_id: Option<String>,
    sys_root: Option<PathBuf>,
    no_xid: Option<bool>,
    #[serde(default, with = "humantime_opt")]
    xid_lookback: Option<Duration>,
    #[serde(default)]
    peers: Vec<String>,
    #[serde(default, with = "humantime_opt")]
    peer_timeout: Option<Duration>,
    training_patterns: Option<Vec<String>>,
    include_network_fs: Option<bool>,
    #[serde(default, with = "humantime_opt")]
    cpu_window: Option<Duration>,
    #[serde(default, with = "humantime_opt")]
    cpu_state_max_age: Option<Duration>,
    cpu_state_file: Option<PathBuf>,
    #[serde(default)]
    budgets: std::collections::BTreeMap<String, String>,
}

mod humantime_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| humantime_parse(&s).map_err(serde::de::Error::custom))
            .transpose()
    }

    fn humantime_parse(s: &str) -> Result<Duration, String> {
        ugro_support::cli::parse_duration(s)
    }
}

/// The clap command, for man pages.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A bad option value.
    #[error("{0}")]
    Usage(String),
    /// A bad option value found in the configuration file.
    #[error("{0}")]
    BadConfig(String),
    /// The GPU fixture.
    #[error(transparent)]
    Probe(#[from] probe::ProbeError),
    /// Output.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The `--output` file.
    #[error(transparent)]
    Output(#[from] ugro_support::output::OutputError),
    /// Reading stdin in --serve.
    #[error("reading stdin: {0}")]
    Stdin(std::io::Error),
    /// The default CPU state directory cannot be used.
    #[error(transparent)]
    State(#[from] ugro_support::state::StateError),
}

impl ugro_types::ToolError for Error {
    fn exit(&self) -> Exit {
        match self {
            Error::Config(e) => e.exit(),
            Error::Usage(_) => Exit::Usage,
            Error::State(e) => e.exit(),
            Error::BadConfig(_) => Exit::Config,
            Error::Probe(probe::ProbeError::Fixture(gpu::FixtureError::Read {
                source, ..
            })) if source.kind() == std::io::ErrorKind::NotFound => Exit::NoInput,
            Error::Probe(probe::ProbeError::Fixture(gpu::FixtureError::Read { .. })) => Exit::IoErr,
            Error::Probe(_) => Exit::DataErr,
            Error::Write(e) => e.exit(),
            Error::Output(e) => e.exit(),
            Error::Stdin(_) => Exit::IoErr,
        }
    }
}

fn hostname() -> String {
    let u = rustix::system::uname();
    u.nodename().to_string_lossy().into_owned()
}

/// The mode and format, resolved from flags and file.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// Probe configuration.
    pub probe: ProbeConfig,
    /// Output format.
    pub format: Format,
    /// Prometheus names.
    pub names: Names,
    /// `--output`.
    pub output: Option<PathBuf>,
    /// `--interval`.
    pub interval: Option<Duration>,
}

/// A collector's time budget.
const BUDGET: Range<Duration> = Range::new(Duration::from_millis(10), Duration::from_secs(3600));

/// The file's durations, each within what a probe run can use (issue 15).
fn check_file_ranges(f: &FileConfig) -> Result<(), (String, String)> {
    let ms10 = Duration::from_millis(10);
    let hour = Duration::from_secs(3600);
    let day = Duration::from_secs(86_400);
    let opt = |r: Range<Duration>, field: &str, v: Option<Duration>| {
        v.map_or(Ok(()), |v| r.check(field, v))
    };
    [
        opt(Range::new(ms10, day), "interval", f.interval),
        opt(
            Range::new(ms10, Duration::from_secs(60)),
            "peer_timeout",
            f.peer_timeout,
        ),
        opt(Range::new(ms10, hour), "cpu_window", f.cpu_window),
        opt(
            Range::new(Duration::ZERO, 30 * day),
            "cpu_state_max_age",
            f.cpu_state_max_age,
        ),
        opt(
            Range::new(Duration::ZERO, 365 * day),
            "xid_lookback",
            f.xid_lookback,
        ),
        Range::new(0, 4096).check("expect_gpus", f.expect_gpus.unwrap_or(0)),
    ]
    .into_iter()
    .collect()
}

/// Merges the command line over the configuration file (flags win).
pub fn resolve(cli: &Cli) -> Result<Resolved, Error> {
    let (file, text): (FileConfig, String) = match &cli.config {
        Some(p) => ugro_support::config::load_yaml(p)?,
        None => (FileConfig::default(), String::new()),
    };
    // A value from the file is reported at its line (`file:line: field: ...`, exit 78).
    let file_bad = |field: &str, msg: String| match &cli.config {
        Some(p) => Error::Config(ConfigError::invalid(p, &text, field, msg)),
        None => Error::BadConfig(format!("{field}: {msg}")),
    };
    check_file_ranges(&file).map_err(|(f, m)| file_bad(&f, m))?;
    let node = cli
        .node
        .clone()
        .or(file.node.clone())
        .unwrap_or_else(hostname);
    ugro_types::validate_node(&node).map_err(|e| {
        if cli.node.is_some() {
            Error::Usage(format!("--node: {e}"))
        } else {
            file_bad("node", format!("node name {node:?}: {e}"))
        }
    })?;
    let gpu = if cli.no_gpu || (file.no_gpu == Some(true) && cli.gpu_fixture.is_none()) {
        GpuSource::Off
    } else if let Some(f) = cli.gpu_fixture.clone().or(file.gpu_fixture.clone()) {
        GpuSource::Fixture(f)
    } else {
        GpuSource::Nvml
    };
    let kmsg = if cli.no_xid || file.no_xid == Some(true) {
        None
    } else {
        match cli.kmsg_file.clone().or(file.kmsg_file.clone()) {
            Some(p) if !xid::is_device(&p) => Some(xid::KmsgSource::File(p)),
            _ => Some(xid::KmsgSource::Device),
        }
    };
    let boot_id = resolve_boot_id(cli, &file, kmsg.as_ref(), &gpu)?;
    let mut budgets = Budgets::default();
    for (k, v) in &file.budgets {
        let field = format!("budgets.{k}");
        let d = parse_duration(v).map_err(|e| file_bad(&field, e))?;
        BUDGET.check(&field, d).map_err(|(f, m)| file_bad(&f, m))?;
        if !budgets.set(k, d) {
            return Err(file_bad(
                &field,
                "unknown collector (gpu, xid, host, disks, network, processes)".into(),
            ));
        }
    }
    for b in &cli.budgets {
        let (k, v) = b
            .split_once('=')
            .ok_or_else(|| Error::Usage(format!("--budget {b}: want NAME=DUR")))?;
        let d = parse_duration(v).map_err(|e| Error::Usage(format!("--budget {b}: {e}")))?;
        if !budgets.set(k, d) {
            return Err(Error::Usage(format!(
                "--budget {b}: unknown collector (gpu, xid, host, disks, network, processes)"
            )));
        }
    }
    let peer_timeout = cli
        .peer_timeout
        .or(file.peer_timeout)
        .unwrap_or(Duration::from_secs(1));
    let mut peers = file.peers.clone();
    peers.extend(cli.peers.iter().cloned());
    for p in &peers {
        if !p.contains(':') {
            return Err(Error::Usage(format!("--peer {p}: want HOST:PORT")));
        }
    }
    // The network collector must outlive its peers' connect timeout.
    if !peers.is_empty() && budgets.network < peer_timeout + Duration::from_millis(500) {
        budgets.network = peer_timeout + Duration::from_millis(500);
    }
    let patterns = if !cli.training_patterns.is_empty() {
        cli.training_patterns.clone()
    } else if let Some(p) = file.training_patterns.clone() {
        p
    } else {
        procs::DEFAULT_PATTERNS
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    };
    let interval = cli.interval.or(file.interval);
    // Resident modes keep the previous reading in memory: rewriting a file every sample
    // would only cost a lock and a rename per sample and race other probes for nothing.
    let resident = cli.serve || interval.is_some();
    let state_file = match cli.cpu_state_file.clone().or(file.cpu_state_file.clone()) {
        _ if resident => None,
        Some(p) => Some(p),
        None => Some(ugro_support::state::default_state_dir()?.join("probe-cpu.json")),
    };
    let cpu = host::CpuConfig {
        state_file,
        max_age: cli
            .cpu_state_max_age
            .or(file.cpu_state_max_age)
            .unwrap_or(Duration::from_secs(300)),
        min_window: Duration::from_secs(1),
        window: cli
            .cpu_window
            .or(file.cpu_window)
            .unwrap_or(Duration::from_millis(100)),
    };
    if interval.is_some_and(|d| d.is_zero()) {
        return Err(Error::Usage("--interval must be more than 0".into()));
    }
    Ok(Resolved {
        probe: ProbeConfig {
            node,
            gpu,
            expect_gpus: cli.expect_gpus.or(file.expect_gpus),
            kmsg,
            boot_id,
            xid_lookback: cli
                .xid_lookback
                .or(file.xid_lookback)
                .unwrap_or(Duration::from_secs(600)),
            cpu,
            include_network_fs: cli.include_network_fs || file.include_network_fs == Some(true),
            peers,
            peer_timeout,
            patterns,
            budgets,
            proc_root: PathBuf::from("/proc"),
            sys_root: cli
                .sys_root
                .clone()
                .or(file.sys_root.clone())
                .unwrap_or_else(|| PathBuf::from("/sys")),
        },
        format: cli.format.or(file.format).unwrap_or(Format::Json),
        names: cli.metric_names.or(file.metric_names).unwrap_or_default(),
        output: cli.output.clone().or(file.output.clone()),
        interval,
    })
}

/// `--boot-id`: only for a replayed log, whose boot may not be this host's. The live
/// `/dev/kmsg` is always this boot's, so naming another would forge every event's identity.
fn resolve_boot_id(
    cli: &Cli,
    file: &FileConfig,
    kmsg: Option<&xid::KmsgSource>,
    gpu: &GpuSource,
) -> Result<Option<String>, Error> {
    let Some(id) = cli.boot_id.clone().or(file.boot_id.clone()) else {
        return Ok(None);
    };
    let bad = |m: String| {
        if cli.boot_id.is_some() {
            Error::Usage(format!("--boot-id: {m}"))
        } else {
            Error::BadConfig(format!("boot_id: {m}"))
        }
    };
    let replay =
        matches!(kmsg, Some(xid::KmsgSource::File(_))) || matches!(gpu, GpuSource::Fixture(_));
    if !replay {
        return Err(bad(
            "only with --kmsg-file or --gpu-fixture: the live kernel log is this boot's".into(),
        ));
    }
    boot::validate_boot_id(&id).map(Some).map_err(bad)
}

impl From<EmitError> for Error {
    fn from(e: EmitError) -> Self {
        match e {
            EmitError::Write(e) => Error::Write(e),
            EmitError::File(e) => Error::Output(e),
        }
    }
}

/// Runs the tool.
pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    let r = resolve(&cli)?;
    if cli.serve && r.output.is_some() {
        return Err(Error::BadConfig(
            "output: not with --serve (its samples go to the watcher on stdout)".into(),
        ));
    }
    let probe = Probe::new(r.probe)?;
    let mut out = Output::new(r.format, r.names, r.output);
    let res = if cli.serve {
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        loop {
            // Only the newlines matter: the request's bytes are skipped unread, so a non-UTF-8
            // byte or a runaway line costs neither an error nor memory.
            match lock.skip_until(b'\n') {
                Ok(0) => break,
                Ok(_) => {
                    let s = probe.sample(ugro_types::Timestamp::now());
                    out.emit(&s)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::Stdin(e)),
            }
        }
        Ok(())
    } else if let Some(every) = r.interval {
        let start = Instant::now();
        let mut n: u64 = 0;
        loop {
            let s = probe.sample(ugro_types::Timestamp::now());
            out.emit(&s)?;
            n += 1;
            if cli.count.is_some_and(|c| n >= c) {
                break;
            }
            // Ticks are anchored to the start so a slow sample does not shift later ones.
            let next = start + every.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX));
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        Ok(())
    } else {
        let s = probe.sample(ugro_types::Timestamp::now());
        out.emit(&s)
    };
    match res {
        Ok(()) | Err(EmitError::Write(WriteError::Closed)) => Ok(Exit::Ok.into()),
        Err(e) => Err(e.into()),
    }
}
