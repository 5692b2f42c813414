//! ugro-score: turns `kind=sample` records into health scores.
//!
//! The library is what `ugro-watch --pipeline` reuses: [`ScoreConfig`] (the same YAML the CLI's
//! `-c` reads), [`Scorer`] (a [`ugro_types::stage::Stage`]) and [`Scorer::score_sample`].

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;

use clap::{CommandFactory, Parser};
use ugro_support::config::ConfigError;
use ugro_types::ToolError;
use ugro_types::io::{RecordWriter, WriteError};
use ugro_types::stage::{self, StageError};
use ugro_types::{Exit, HealthState, PluginStatus};

pub mod config;
mod gpu;
mod history;
pub mod nagios;
pub mod output;
pub mod policy;
pub mod prom;
mod scorer;
mod stage_impl;
pub mod state;
#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::field_reassign_with_default
)]
mod tests;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_history;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests_policy;
mod trends;
mod xid;

pub use config::{ScoreConfig, Weights};
pub use gpu::combine_gpus;
pub use output::Format;
pub use policy::{XidPolicy, XidSeverity};
pub use scorer::Scorer;

const TOOL: &str = "ugro-score";

const LONG_ABOUT: &str = "\
Reads JSON lines (ugro records) and scores every kind=sample record; records of the other kinds \
pass through unchanged, a kind this build does not know (a typo such as Sample) is a bad line \
unless --pass-unknown-kinds. A record naming a member twice, or with more than 256 GPUs, is a bad \
line (limits in ugro(7)). The default output is the input record with a `score` object added (every other \
field is kept as it was, in its order; an existing `score` is replaced). Only the fields the score reads \
are checked: a sample whose header (v, kind, ts, node) or scored fields have the wrong type is \
rejected; fields ugro-score does not read pass through unexamined.

SCORE. Four components score 0-100: gpu, system, network, process. Each rule that fires is a \
reason (code, component, gpu, value, threshold, deduction, fatal, action, message) and takes \
its deduction from its component. The total is the weighted sum (default gpu 0.4, system 0.3, \
network 0.2, process 0.1). States: critical below 40, degraded below 70, else healthy; a \
component below the critical threshold, or a single GPU below the degraded threshold, makes the \
node at least degraded whatever the weights and the other GPUs hide: in a collective job the \
slowest GPU sets the pace of all of them. So HW slowdown (40 points), a PCIe link below its max \
gen or width while busy (35 each), a row remap pending (70) or a GPU at its slowdown temperature \
(40) each make the node degraded on their own. The recommended action is the most drastic over the reasons (none < check_network < \
check_host < restart_app < reset_gpu < reboot < hardware_inspection).

GPUS. Each GPU scores on its own (temperature margin to its slowdown temperature or the \
configured default; power over its limit; hw_slowdown / hw_thermal_slowdown / \
hw_power_brake_slowdown (one deduction together), sw_thermal_slowdown; sw_power_cap costs \
nothing on a busy GPU (utilisation at or above gpu.busy_utilization_pct, default 50) and a \
little on an idle one; uncorrected ECC; corrected ECC since driver load (1 000: 10 points; \
100 000: 35 and hardware_inspection); row remap pending (action reboot) or failed; PCIe gen \
or width below its max while busy; PCIe replay counter growth since the node's previous \
sample; the driver's recovery_action; XIDs per the XID policy; the trends below). The GPU \
component is 0.8 x the worst GPU + 0.2 x the mean (gpu.worst_weight), so one dead GPU of eight \
gives a GPU component of 17.5, not 87.5, and the node is at least degraded. A GPU that is \
expected but missing counts as a GPU scoring 0.

DRIVER VERDICT. recovery_action (NVML field 230, as DCGM's driver watch reads it) is \
gpu_recovery_action: gpu_reset and drain_and_reset (action reset_gpu) and node_reboot (reboot) \
are hard fails; drain_p2p takes 40 points (restart_app: stop the jobs using peer-to-peer, the \
driver then re-evaluates), so the node is degraded. Values this build does not name are judged \
by their number in newer NVML headers: unknown_5 (recover the IMEX domain) 40 points, \
check_network; unknown_6 (PCIe bus reset) and unknown_7 (system reboot) hard fails; others 40 \
points, check_host.

GPU COUNT. More NVIDIA GPUs on the PCI bus (gpu.pci_devices) than NVML sees is \
gpu_missing_from_nvml (a hard fail, reboot; gpud's check); with gpu.status absent it says the \
driver is broken on a GPU node. Without expected_gpus, fewer GPUs than the most this node \
showed within history.gpu_count_window (7d) is gpu_missing_since_seen (a hard fail, reboot); \
each missing GPU counts as a GPU scoring 0.

HARD FAILS. These make the state critical whatever the total (reason.fatal = true): a fatal \
XID, a GPU lost or unreadable (device state lost/error), gpu.status failed (NVML broken), \
gpu.status missing (fewer GPUs than expected), fewer GPUs than on the PCI bus or than the \
node's recent maximum, a recovery action of gpu_reset, node_reboot or drain_and_reset, \
row-remap failure, uncorrected volatile ECC > 0.

UNKNOWN. The state is unknown (no total) when the data the score needs is missing: the node \
was unreachable (reason node_unreachable, action check_network), or a required section is \
absent (default required: gpu and host; gpu.status absent, no devices, devices without a single reading, or a host section without readings count as missing). \
Optional sections (network, processes) that are absent leave their component out and the \
total is taken over the remaining weights. A hard fail wins over unknown: a node with a dead \
GPU is critical even if its host section is missing. Nothing is healthy by default.

TRENDS (PREDICTED). Reasons with predicted: true, their rate in value, the limit in threshold \
and the span measured over in window, so alerting can route them apart from present faults \
(10 points each, trends.deduction): ecc_corrected_rate (corrected ECC per hour above 100 over \
up to 1h, hardware_inspection); pcie_replay_rate (replays per minute above DCGM's limit, \
ceil(per-lane rate x lanes) for the link's current gen and width: 0.15, 0.3, 0.48, 0.96, 1.92, \
3.84 per lane for Gen1-6, so 31 for Gen5 x16; measured over 1-10 minutes; 25 points, \
hardware_inspection; below the limit growth is pcie_replay_growth); \
row_remap_correctable_growth (a new correctable remapped row within 24h, \
hardware_inspection); gpu_temperature_rising (a least-squares slope over 5-15 minutes of at \
least three readings that rose 3 C or more and reaches the slowdown temperature within 10 \
minutes; value is the minutes left; check_host); xid_rate (6 or more non-application XID events \
per hour on one GPU, check_host). A rate needs two readings at least its minimum span apart: \
the first sample of a GPU, the first after a counter went down or the node's boot id changed, \
and a sample older than the node's last report no rate and cost nothing; the count rules \
(corrected ECC, replay growth) still apply to them.

HISTORY. Rates, trends, XID windows and the rules below compare with earlier samples of the \
same node and GPU (by UUID) using record times. An XID event counts once: by its identity \
(boot_id, seq) when the probe gives one, whichever probe process, restarted probe or run \
reported it; else by its kernel time; an XID with neither counts only within its own sample. \
The same fatal XID on the same GPU again within 24h is xid_recurring (hardware_inspection); \
the same XID (whose action is reset_gpu or reboot) seen again 2 or more reboots (boot ids) \
after its first sighting within 7d is xid_after_reboots (hardware_inspection), as gpud does; \
both are in the XID policy (recurrence, reboots). Without --state the history lives in this \
process only: a cron run that scores one sample per node has no rates, trends, windows, \
recurrence, reboots or GPU count history, and a one-shot XID counts only within its sample. \
With --state FILE (a bare --state: $XDG_STATE_HOME/ugro/score.json, else \
~/.local/state/ugro/score.json, as ugro-breaker's default; the cron and systemd pipelines use \
it) it is read at the start and written at the end (and every \
history.persist_interval, 30s, in a long run, by a writer thread); the file is locked for the \
run (a second run waits), replaced atomically, mode 0600, format ugro-score version 1 \
(ugro-watch keeps it as STATE_DIR/score.json; without --state-dir, --pipeline keeps it in \
~/.local/state/ugro/watch-score.json and raw mode in memory); a \
corrupt or foreign file exits 78 and is left untouched (--reset-state starts over). Bounds: \
max_tracked_nodes nodes (least recently seen dropped), nodes and GPUs not seen for \
history.max_age (7d, record time) forgotten, per GPU at most 256 XID events, 6 readings \
per counter and 11 of the temperature, per node 64 GPUs and 16 boots: about 3 KB per 8-GPU \
node.

CONFIGURATION. -c FILE (or UGRO_SCORE_CONFIG) is YAML; every key is optional and \
crates/ugro-score/score.example.yaml lists them with their defaults. Flags override the file.

XID POLICY. A YAML data file is built in (version 2, checked entry by entry against NVIDIA's \
Xid catalog for Ampere and newer, revision of 2025-10-29, cited in the file): meaning, the \
catalog bucket, severity fatal/warning/application, action, optional deduction, \
`escalate: {count, window}`, `message_rules` (the first whose `word` or `contains` matches the \
event's message gives its verdict: NVLink 5 XIDs 144-150 by the driver's Fatal/Nonfatal, XID \
154 by the recovery action it changes to), `defer_to_remapped_rows` (XIDs 63 and 64 are not \
scored on GPUs that report row remapping; the remapped-rows readings decide, as in gpud) and \
`reboot_threshold`. --xid-policy FILE (or xid_policy: in the config) is merged over it entry \
by entry, field by field; a site entry that states severity or action is final (it replaces \
the shipped message rules and deferral for that XID).

OUTPUT AND EXIT STATUS. --format json (default): exit 0, or 65 when any line was rejected \
(each reported as `ugro-score: line N: cause`, good lines still scored). --format nagios \
(Monitoring Plugins guidelines): after the input is read, one status line `UGRO <STATE> - \
<node>: <summary> | <perfdata>` for the worst state seen (critical > unknown > degraded > \
healthy), which is also the exit status (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN). A node is \
CRITICAL on a hard fail or when its score alerts against --critical (default `40:`, i.e. \
--critical-below), UNKNOWN without a score, WARNING when its score alerts against -w/--warning \
(default `70:`), a component is below --critical-below or a GPU below --degraded-below; ranges \
follow the guidelines ([@][start:][end], ~ for minus infinity: `70:` alerts below 70, `@0:50` \
inside 0-50; short -c stays --config, as in every ugro tool). Perfdata thresholds say the same: \
'score'=T;<warning>;<critical>;0;100, 'fatal'=N;;0;0; (only for a node with hard fails: any \
is critical), components ;<critical-below>:, GPUs ;<degraded-below>:. With several samples \
the line reads `<n> nodes: <c> critical, <u> unknown, <d> degraded, <h> healthy; <worst \
node>: <summary>`, perfdata labels carry the node name ('gpu-01 score'), after the counts \
('nodes', 'critical' (critical when above 0), 'unknown', 'degraded' (warning above 0), \
'healthy'); one long-text line per node follows (no perfdata in it), worst first. BOUNDED \
OUTPUT: Nagios Core's documented limit is 8192 bytes of plugin output with perfdata \
(MAX_PLUGIN_OUTPUT_LENGTH; paths and transports built to it cut anywhere past it), so the \
whole output stays under 8000 bytes. Perfdata is at most \
--max-perfdata bytes (default 5120: every node's score of a 100-node check), in whole values: \
the counts, then every node's score (and fatal) worst node first, then components and GPUs; \
when some do not fit the text says `perfdata: <k> of <n> values left out (--max-perfdata \
<bytes>)`. A summary longer than 300 bytes is shortened at a word (`...`); long-text lines \
stop where the limit would be passed, and a last line says `(<k> more nodes not listed)`. \
-e/--exit-status gives JSON mode the plugin exit (the -w/--critical ranges are for --format \
nagios). In these check modes a rejected line or an input with no sample makes the status at \
least UNKNOWN (the text says how many lines were bad; they are still reported on stderr), and \
a setup error (missing input file, bad configuration) or a command line that cannot be parsed \
is `UGRO UNKNOWN - <cause>` (`UGRO UNKNOWN - usage: <cause>`) with status 3, so a monitoring \
system never reads a data error as OK and never sees 64-78. --format table prints a header and one aligned row per sample.

PROMETHEUS. --format prometheus writes one Prometheus text exposition of the latest scored \
sample of every node seen (ugro-probe's metrics plus ugro_node_score, ugro_node_state, \
ugro_node_component_score, ugro_gpu_score, ugro_node_reason (points per code, family, \
component, GPU), ugro_node_action, ugro_node_reachable; ugro_node_breaker_state when the \
record carries ugro-breaker's annotation or a transition record is in the input; \
ugro_alert_firing for alert records in the input, until their resolved record). Names and \
labels are listed in contrib/README.md. --metric-names dcgm adds dcgm-exporter's names and \
labels for the GPU readings both have. The exposition is rewritten when the input pauses (no \
more input ready), at most once a second while records keep coming, and at end of input: to \
standard output, one whole exposition per rewrite, or with --output FILE to FILE, replaced \
atomically (temporary file in the same directory, mode 0644, rename) for node_exporter's \
textfile collector. A node stays in the exposition with its last values until ugro-score \
exits; ugro_probe_timestamp_seconds says how old they are. Outside check \
modes configuration errors exit 78 naming the bad value (and file:line: field for the config \
file).";

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "ugro-score",
    version,
    about = "Score ugro samples: component scores, hard-fail overrides, XID policy",
    long_about = LONG_ABOUT
)]
pub struct Cli {
    /// Input file of JSON lines (default: standard input).
    #[arg(value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// YAML configuration: weights, thresholds, rule parameters, xid_policy.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "FILE",
        env = "UGRO_SCORE_CONFIG"
    )]
    pub config: Option<PathBuf>,

    /// Component weights, e.g. gpu=0.4,system=0.3,network=0.2,process=0.1 (unnamed ones keep
    /// their configured value; the four must be >= 0 and sum to 1).
    #[arg(long, value_name = "NAME=W,...")]
    pub weights: Option<String>,

    /// Site XID policy merged over the built-in one (overrides the config's xid_policy).
    #[arg(long = "xid-policy", value_name = "FILE")]
    pub xid_policy: Option<PathBuf>,

    /// Total below which the state is critical (default 40).
    #[arg(long = "critical-below", value_name = "SCORE")]
    pub critical_below: Option<f64>,

    /// Total below which the state is degraded (default 70).
    #[arg(long = "degraded-below", value_name = "SCORE")]
    pub degraded_below: Option<f64>,

    /// Output format.
    #[arg(short = 'f', long, value_enum, default_value_t = Format::Json)]
    pub format: Format,

    /// Names in Prometheus output: ugro's own, or dcgm = ugro's plus dcgm-exporter's names and
    /// labels for the GPU readings both have.
    #[arg(long, value_enum, value_name = "NAMES", default_value_t = ugro_metrics::Names::Ugro)]
    pub metric_names: ugro_metrics::Names,

    /// With --format prometheus: write the exposition to FILE instead of standard output,
    /// replaced atomically (temp file in the same directory, mode 0644, rename) each time it is
    /// rewritten: for node_exporter's textfile collector.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Exit with the Monitoring Plugins status of the worst state seen (0-3), in JSON mode too.
    #[arg(short = 'e', long = "exit-status")]
    pub exit_status: bool,

    /// Stop at the first bad input line.
    #[arg(long)]
    pub strict: bool,

    /// Keep the history the rules need (rates, trends, XID windows, reboots, GPU counts) in
    /// FILE between runs: locked for the run, rewritten atomically (mode 0600) at the end.
    /// Without FILE: $XDG_STATE_HOME/ugro/score.json, else ~/.local/state/ugro/score.json.
    #[arg(long, value_name = "FILE")]
    pub state: Option<Option<PathBuf>>,

    /// Start the --state file over (it is removed under its lock first).
    #[arg(long = "reset-state", requires = "state")]
    pub reset_state: bool,

    /// Check mode: WARNING when the score alerts against RANGE (Monitoring Plugins syntax
    /// [@][start:][end]: `70:` warns below 70, `@0:70` inside 0-70); default `<degraded-below>:`.
    #[arg(
        short = 'w',
        long = "warning",
        value_name = "RANGE",
        allow_hyphen_values = true
    )]
    pub warning: Option<nagios::Range>,

    /// Check mode: CRITICAL when the score alerts against RANGE; default `<critical-below>:`.
    /// (Short -c stays --config, as in every ugro tool.)
    #[arg(long = "critical", value_name = "RANGE", allow_hyphen_values = true)]
    pub critical: Option<nagios::Range>,

    /// Check mode: bytes of perfdata on the status line at most (whole values, the worst nodes'
    /// scores first; the text says how many were left out). The whole output stays under 8000
    /// bytes, inside Nagios Core's documented 8192 (MAX_PLUGIN_OUTPUT_LENGTH).
    #[arg(long = "max-perfdata", value_name = "BYTES", default_value_t = nagios::DEFAULT_MAX_PERFDATA as u16,
          value_parser = clap::value_parser!(u16).range(64..=7000))]
    pub max_perfdata: u16,

    /// Threads that decode a backlog of input lines (scoring stays on one of them, in input
    /// order, so the output is the same whatever N; the others decode the next batch
    /// meanwhile). Default: the CPUs this process may use, at most 8. An idle stream's line
    /// is decoded and scored at once, without waiting for more.
    #[arg(long, value_name = "N")]
    pub threads: Option<std::num::NonZeroUsize>,

    #[command(flatten)]
    pub kinds: ugro_support::cli::KindsArg,
}

/// `--threads`, or its default: the CPUs available to this process, at most 8 (decoding
/// stops paying beyond that: scoring, on one thread, is then most of a line's cost).
fn decode_threads(cli: &Cli) -> std::num::NonZeroUsize {
    const MAX_DEFAULT: std::num::NonZeroUsize = std::num::NonZeroUsize::MIN.saturating_add(7);
    cli.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map_or(std::num::NonZeroUsize::MIN, |n| n.min(MAX_DEFAULT))
    })
}

/// The binary's entry point: in check mode (`--format nagios`, `-e`) a command line clap
/// cannot parse is `UGRO UNKNOWN - <cause>` with status 3, as a monitoring system expects;
/// otherwise the usual status 64.
pub fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match Cli::try_parse_from(&args) {
        Err(e) if e.use_stderr() && check_mode_args(&args) => {
            let _ = e.print();
            let cause = e.to_string();
            let cause = cause
                .lines()
                .next()
                .unwrap_or("")
                .trim_start_matches("error: ");
            let line = format!("UGRO UNKNOWN - usage: {}", cause.replace('|', "/"));
            let mut out = RecordWriter::new(io::stdout().lock());
            let _ = out.write_raw(line.as_bytes());
            PluginStatus::Unknown.into()
        }
        _ => ugro_support::cli::main(TOOL, run),
    }
}

/// Whether the raw arguments ask for a check (`--format nagios`, `-f nagios`, `-e`), read
/// without clap because clap has just refused them.
fn check_mode_args(args: &[std::ffi::OsString]) -> bool {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    args.iter().enumerate().any(|(i, a)| {
        let next_is_nagios = args.get(i + 1).is_some_and(|n| n == "nagios");
        a == "--exit-status"
            || a == "-e"
            || a == "--format=nagios"
            || a == "-fnagios"
            || ((a == "--format" || a == "-f") && next_is_nagios)
    })
}

/// The clap command, for man pages.
pub fn command() -> clap::Command {
    Cli::command()
}

/// What can stop ugro-score.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration or policy file is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A flag value is unusable.
    #[error("{0}")]
    Flag(String),
    /// The input file cannot be opened.
    #[error("{path}: {source}")]
    Input {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Reading, writing or a stage failure.
    #[error(transparent)]
    Stage(#[from] StageError),
    /// The --state file is unusable.
    #[error(transparent)]
    State(ugro_support::state::StateError),
    /// The Prometheus exposition could not be written.
    #[error(transparent)]
    Prometheus(#[from] ugro_support::output::EmitError),
}

impl ugro_types::ToolError for Error {
    fn exit(&self) -> Exit {
        match self {
            Error::Config(e) => e.exit(),
            Error::Flag(_) => Exit::Config,
            Error::Input { .. } => Exit::NoInput,
            Error::Stage(e) => e.exit(),
            Error::State(e) => e.exit(),
            Error::Prometheus(e) => e.exit(),
        }
    }
}

/// Builds the configuration from `-c` and the flags on top of it.
pub fn config_from(cli: &Cli) -> Result<ScoreConfig, Error> {
    let mut cfg = ScoreConfig::load(cli.config.as_deref())?;
    if let Some(p) = &cli.xid_policy {
        cfg.policy = XidPolicy::load_site(p)?;
    }
    if let Some(spec) = &cli.weights {
        config::parse_weights_flag(spec, &mut cfg.weights).map_err(Error::Flag)?;
        cfg.weights
            .validate()
            .map_err(|(_, m)| Error::Flag(format!("--weights: {m}")))?;
    }
    if let Some(c) = cli.critical_below {
        cfg.thresholds.critical = c;
    }
    if let Some(d) = cli.degraded_below {
        cfg.thresholds.degraded = d;
    }
    config::check_thresholds(&cfg.thresholds).map_err(|(_, m)| Error::Flag(m))?;
    Ok(cfg)
}

/// Runs the tool.
pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    let plugin_mode = cli.exit_status || cli.format == Format::Nagios;
    match check(cli) {
        Err(e) if plugin_mode && e.exit() != Exit::Ok => {
            // A check's caller reads the first line and a status of 0-3, never 64-78.
            let line = format!("UGRO UNKNOWN - {}", e.to_string().replace(['|', '\n'], " "));
            let mut out = RecordWriter::new(io::stdout().lock());
            let _ = out.write_raw(line.as_bytes());
            Ok(PluginStatus::Unknown.into())
        }
        r => r,
    }
}

fn check(cli: Cli) -> Result<ExitCode, Error> {
    let cfg = config_from(&cli)?;
    if cli.output.is_some() && cli.format != Format::Prometheus {
        return Err(Error::Flag(
            "--output: only with --format prometheus".into(),
        ));
    }
    let plugin_mode = cli.exit_status || cli.format == Format::Nagios;
    let mut scorer = match state_file(&cli).map_err(Error::State)? {
        Some(path) => {
            if cli.reset_state {
                ugro_support::state::reset(&path).map_err(Error::State)?;
            }
            Scorer::with_state(cfg, cli.format, &path).map_err(Error::State)?
        }
        None => Scorer::with_format(cfg, cli.format),
    };
    // Not the lock: the run loop runs on a decoding thread (the writer writes in large
    // batches, so taking the lock per write costs nothing).
    let mut out = RecordWriter::new(io::stdout());
    let mut reader_bad = 0;
    let result = if cli.format == Format::Prometheus {
        let r = run_prometheus(&cli, &mut scorer, &mut reader_bad);
        // The exposition stage does not finish the scorer: its history is saved here.
        scorer.save_state().map_err(Error::State)?;
        r
    } else {
        let input = read_source(&cli)?;
        stage::run_parallel(
            TOOL,
            cli.kinds.options(cli.strict),
            input,
            &mut out,
            &mut scorer,
            decode_threads(&cli),
            &mut reader_bad,
        )
    };
    if !plugin_mode {
        return Ok(result?.into());
    }
    match result {
        Ok(_) | Err(StageError::Read(ugro_types::io::ReadError::Strict(_))) => {}
        Err(e) => return Err(e.into()),
    }
    if cli.format == Format::Nagios {
        let opts = nagios::CheckOptions {
            warning: cli.warning.clone(),
            critical: cli.critical.clone(),
            max_perfdata: usize::from(cli.max_perfdata),
        };
        let (worst, text) = nagios::report(
            &scorer.checks,
            scorer.checks_dropped,
            reader_bad,
            &scorer.cfg.thresholds,
            &opts,
        );
        match out.write_raw(text.as_bytes()) {
            Ok(()) | Err(ugro_types::io::WriteError::Closed) => {}
            Err(e) => return Err(Error::Stage(e.into())),
        }
        return Ok(worst.plugin_status().into());
    }
    let mut worst = scorer.worst();
    if reader_bad > 0 || worst.is_none() {
        worst = Some(output::worse(worst, HealthState::Unknown));
    }
    Ok(worst.unwrap_or(HealthState::Unknown).plugin_status().into())
}

/// The --state file: the one named, or the default one for a bare `--state`.
fn state_file(cli: &Cli) -> Result<Option<PathBuf>, ugro_support::state::StateError> {
    match &cli.state {
        Some(None) => Ok(Some(
            ugro_support::state::default_state_dir()?.join("score.json"),
        )),
        Some(Some(p)) => Ok(Some(p.clone())),
        None => Ok(None),
    }
}

/// The input file (or stdin), for a reader on its own thread (it reads 64 KiB at a time: no
/// buffer in front).
fn read_source(cli: &Cli) -> Result<Box<dyn io::Read + Send>, Error> {
    open_input::<Box<dyn io::Read + Send>>(cli, |f| Box::new(f), |s| Box::new(s))
}

/// The input file (or stdin), wrapped by `file` or `stdin`.
fn open_input<T>(
    cli: &Cli,
    file: impl FnOnce(File) -> T,
    stdin: impl FnOnce(io::Stdin) -> T,
) -> Result<T, Error> {
    Ok(match &cli.input {
        Some(p) if p.as_os_str() != "-" => file(File::open(p).map_err(|source| Error::Input {
            path: p.clone(),
            source,
        })?),
        _ => stdin(io::stdin()),
    })
}

/// `--format prometheus`: the scorer's records go into a node table, rewritten when the input
/// pauses ([`prom`]). A rewrite that fails stops the run with that error.
fn run_prometheus(
    cli: &Cli,
    scorer: &mut Scorer,
    reader_bad: &mut u64,
) -> Result<Exit, StageError> {
    let sink = Rc::new(RefCell::new(prom::Sink::new(
        cli.metric_names,
        cli.output.clone(),
    )));
    let cap = 1 << 16;
    let input = open_input::<Box<dyn BufRead>>(
        cli,
        |f| {
            Box::new(BufReader::with_capacity(
                cap,
                prom::IdleReader::new(f, sink.clone()),
            ))
        },
        |s| {
            Box::new(BufReader::with_capacity(
                cap,
                prom::IdleReader::new(s, sink.clone()),
            ))
        },
    )
    .map_err(|e| StageError::Fatal {
        exit: e.exit(),
        message: e.to_string(),
    })?;
    let mut stage = prom::PromStage {
        scorer,
        sink: sink.clone(),
    };
    let mut none = RecordWriter::new(io::sink());
    let result = stage::run_counted(
        TOOL,
        cli.kinds.options(cli.strict),
        input,
        &mut none,
        &mut stage,
        reader_bad,
    );
    match sink.borrow_mut().failed.take() {
        Some(ugro_support::output::EmitError::Write(WriteError::Closed)) => Ok(Exit::Ok),
        Some(e) => {
            let e = Error::from(e);
            Err(StageError::Fatal {
                exit: e.exit(),
                message: e.to_string(),
            })
        }
        None => result,
    }
}
