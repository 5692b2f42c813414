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
pub mod output;
pub mod policy;
pub mod prom;
mod scorer;
mod stage_impl;
#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::field_reassign_with_default
)]
mod tests;

pub use config::{ScoreConfig, Weights};
pub use output::Format;
pub use policy::{XidPolicy, XidSeverity};
pub use scorer::{Scorer, combine_gpus};

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
little on an idle one; uncorrected ECC; row remap pending (action reboot) or failed; PCIe gen \
or width below its max while busy; PCIe replay counter growth since the node's previous \
sample; XIDs per the XID policy). The GPU component is 0.8 x the worst GPU + 0.2 x the mean \
(gpu.worst_weight), so one dead GPU of eight gives a GPU component of 17.5, not 87.5, and the \
node is at least degraded. A GPU that is expected but missing counts as a GPU scoring 0.

HARD FAILS. These make the state critical whatever the total (reason.fatal = true): a fatal \
XID, a GPU lost or unreadable (device state lost/error), gpu.status failed (NVML broken), \
gpu.status missing (fewer GPUs than expected), row-remap failure, uncorrected volatile ECC > 0.

UNKNOWN. The state is unknown (no total) when the data the score needs is missing: the node \
was unreachable (reason node_unreachable, action check_network), or a required section is \
absent (default required: gpu and host; gpu.status absent, no devices, devices without a single reading, or a host section without readings count as missing). \
Optional sections (network, processes) that are absent leave their component out and the \
total is taken over the remaining weights. A hard fail wins over unknown: a node with a dead \
GPU is critical even if its host section is missing. Nothing is healthy by default.

HISTORY. Replay-counter growth and XID count-in-window escalation compare with earlier \
samples of the same node and GPU (by UUID), in this process only, using record times (an XID without a kernel time cannot be told from its repeats in later samples, so it counts only within its own sample): the \
first sample of a GPU costs nothing; a sample older than the node's last one is scored \
without history. At most max_tracked_nodes nodes are remembered (least recently seen dropped).

CONFIGURATION. -c FILE (or UGRO_SCORE_CONFIG) is YAML; every key is optional and \
crates/ugro-score/score.example.yaml lists them with their defaults. Flags override the file.

XID POLICY. A YAML data file (meaning, severity fatal/warning/application, action, optional \
deduction and `escalate: {count, window}`) is built in; --xid-policy FILE (or xid_policy: in \
the config) is merged over it entry by entry, field by field.

OUTPUT AND EXIT STATUS. --format json (default): exit 0, or 65 when any line was rejected \
(each reported as `ugro-score: line N: cause`, good lines still scored). --format nagios \
(Monitoring Plugins guidelines): after the input is read, one status line `UGRO <STATE> - \
<node>: <summary> | <perfdata>` for the worst state seen (critical > unknown > degraded > \
healthy), which is also the exit status (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN); perfdata \
'score'=T;70:;40:;0;100 plus each component and GPU. With several samples the line reads \
`<n> nodes: <c> critical, <u> unknown, <d> degraded, <h> healthy; <worst node>: <summary>`, \
perfdata labels carry the node name ('gpu-01 score'), and one long-text line per node follows \
(no perfdata in it). -e/--exit-status gives JSON mode the same plugin exit. In these check \
modes a rejected line or an input with no sample makes the status at least UNKNOWN (the text \
says how many lines were bad; they are still reported on stderr), and a setup error (missing \
input file, bad configuration) is `UGRO UNKNOWN - <cause>` with status 3, so a monitoring \
system never reads a data error as OK and never sees 64-78; only an unparsable command line \
still exits 64. --format table prints a header and one aligned row per sample.

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

    #[command(flatten)]
    pub kinds: ugro_support::cli::KindsArg,
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
    let mut scorer = Scorer::with_format(cfg, cli.format);
    let mut out = RecordWriter::new(io::stdout().lock());
    let mut reader_bad = 0;
    let result = if cli.format == Format::Prometheus {
        run_prometheus(&cli, &mut scorer, &mut reader_bad)
    } else {
        let input = open_input(
            &cli,
            |f| Box::new(BufReader::with_capacity(1 << 16, f)),
            |s| Box::new(BufReader::with_capacity(1 << 16, s)),
        )?;
        stage::run_counted(
            TOOL,
            cli.kinds.options(cli.strict),
            input,
            &mut out,
            &mut scorer,
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
        let (worst, text) = output::nagios_report(
            &scorer.checks,
            scorer.checks_dropped,
            reader_bad,
            &scorer.cfg.thresholds,
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

/// The input file (or stdin), wrapped by `file` or `stdin`.
fn open_input(
    cli: &Cli,
    file: impl FnOnce(File) -> Box<dyn BufRead>,
    stdin: impl FnOnce(io::Stdin) -> Box<dyn BufRead>,
) -> Result<Box<dyn BufRead>, Error> {
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
    let input = open_input(
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
