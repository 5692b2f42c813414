//! `ugro-watch`: an adaptive, concurrent fleet monitor over persistent SSH sessions.
//!
//! One resident `ugro-probe --serve` per node, reached over one multiplexed SSH session (or a
//! local child, or any command that speaks the same one-line protocol); a poll is a newline
//! written and a line read. The scheduler ([`sched`]) adapts each node's interval to job
//! activity; the output is raw samples, or with `--pipeline` the records of
//! score → breaker → alert run in-process with the same libraries as the CLIs.
//!
//! Four jobs with queues between them, one module each:
//! - polling ([`poll`], transports in [`link`]): one task per node;
//! - the pipeline ([`pipeline`]): the stages on their own thread, fed by a bounded queue;
//! - delivery: the alert stage's receivers (ugro-alert);
//! - persistence ([`persist`]): state-directory writes on their own thread;
//! - with `--listen`, the fleet endpoint ([`endpoint`]): `/metrics` and `/healthz`, rendered
//!   and served on threads of their own.
//!
//! [`monitor`] is the live loop between them: the scheduler, the raw stream, `stats`.

pub mod activity;
pub mod clock;
pub mod config;
pub mod endpoint;
pub mod link;
pub mod monitor;
pub mod node_file;
pub mod persist;
pub mod pipeline;
pub mod poll;
pub mod sched;
pub mod shard;
pub mod view;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser, ValueEnum};
use ugro_support::config::ConfigError;
use ugro_support::state::StateError;
use ugro_types::Exit;
use ugro_types::io::WriteError;
use ugro_types::stage::StageError;

pub use config::Cluster;

const LONG_ABOUT: &str = "\
Watches a GPU fleet and writes one JSON `sample` record per node per poll to stdout, so that \
`ugro-watch -c cluster.yaml | ugro-score | ugro-breaker | ugro-alert` works; with --pipeline \
the three stages run in-process with the same configuration files and give the same output.

Transport: one persistent, multiplexed SSH session per node (the system `ssh` as ControlMaster, \
strict host-key checking against known_hosts unless `accept_new_host_keys: true`), and on it one \
resident `ugro-probe --serve`; a poll writes a newline and reads one line, so steady-state polls \
cost no handshake. Unless --no-deploy, a node without a ugro-probe whose SHA-256 matches the \
local binary gets a copy in ~/.cache/ugro/ugro-probe-<sha256>, verified on the node before use. \
`transport: local` runs the probe as a local child; `transport: {command: [argv]}` runs any \
program speaking the same protocol, no shell: {node} {host} {port} {user} and {expect_gpus} \
(the node's expected_gpus, empty when unset) are substituted, and an argument that is exactly \
{probe_args} becomes the probe.args list; nothing else is added, so a template that omits them \
does not pass expected_gpus or probe.args on (--check and start-up warn about it). When a node's \
`uname -m` differs from this machine's architecture, the local ugro-probe is not copied there: \
probe.path is run as it is on the node (and a failure says so).

A node that cannot be polled becomes a sample with `unreachable: {cause, message}` and no \
sections: cause `ssh` (session could not be opened or died; reconnects back off from \
intervals.reconnect_min to reconnect_max), `timeout` (no answer within `timeout`; the probe is \
restarted, the session kept) or `probe` (probe exited, could not start, or sent a bad line). \
A slow or hung node never delays the others.

Paths in the cluster file are relative to the file. Node names and hosts are checked so that \
nothing can reach ssh as an option (no leading '-', no user@ in a host). Without --pipeline, \
samples are still scored in-process (same score configuration) for the table, the state \
directory and the scheduler; the output stays raw. With --pipeline, the breaker and alert state \
files default to STATE_DIR/breaker.json and alert.json, else watch-breaker.json and \
watch-alert.json in ~/.local/state/ugro, never the shell tools' own files.

Scheduling: every node is polled at the base interval (5s) while busy (training processes, a \
GPU at or above activity.gpu_utilization_pct, listed by --jobs-cmd, or a fresh --activity-file) \
or not healthy by the scorer's verdict (ugro-score's state of its latest sample: degraded, \
critical, unknown — an unreachable node is unknown); after each idle sample of a healthy node \
its interval doubles up to the maximum (60s). A job start seen by --jobs-cmd or \
--activity-file (checked every base interval) brings the node back to the base interval at \
once. Polls are spread over `intervals.spread` of the base interval by a per-node phase. \
Nodes that are due are polled in the order they fell due, never in cluster-file order. At \
most `concurrency` polls are in flight, and nodes whose last poll timed out (suspects) hold at \
most a quarter of those slots together, so hung nodes cannot take the slots of healthy ones \
wherever they are listed (a suspect may then be polled later than its interval). The limit \
halves after a cycle in which more than 10% of the polls of non-suspect nodes timed out and \
grows back by an eighth per cycle without such timeouts; nodes that hang poll after poll do \
not keep it down. With --pipeline, a node whose breaker is open is polled at the longest \
interval (intervals.max) and when its trial is due: those polls are the evidence of recovery \
that lets ugro-alert resolve the node's alerts within a poll of it rather than at the trial (the \
breaker stays open until the trial; its wait is not shortened).

Jobs and queues: polling (one task per node), the pipeline (score → breaker → alert, or the \
scorer alone without --pipeline, on a thread of its own fed by a bounded queue of --queue \
records), delivery (ugro-alert's receivers, behind the alert stage) and persistence (the state \
directory, on a thread of its own). Nothing on the polling path waits for a network call, a \
child process, fsync or a full queue. When the pipeline queue is full (stdout blocked, a slow \
disk under the breaker's or alert's state file, a stage delivering slowly), polling goes on: \
records wait in a backlog in which a node's newer sample replaces its older waiting one (and a \
newer tick, stats record or node list the older one), counted as pipeline_superseded; error \
records are never replaced. The state-directory queue holds one pending content per file, the \
newest (older ones counted as state_superseded).

Time: the stages run on record time under the tick rule of ugro(7). The watcher writes a \
`tick` record (node `*`, tool `ugro-watch`, nothing but the time) into its raw stream every \
--tick (1s); each stage runs its timers (alert group_wait/group_interval/repeat_interval, the \
breaker's automatic half-open) when a tick reaches it, as the shell filters do for the ticks \
in their input. So `ugro-watch --pipeline` writes byte for byte what `ugro-watch | ugro-score \
| ugro-breaker | ugro-alert` writes for the same raw stream (--tee FILE keeps a copy of it, \
which --replay takes). The table and the state directory are updated once per tick.

Output: JSON lines when stdout is not a terminal, a live table on a terminal (coloured unless \
NO_COLOR is set). With --pipeline, stdout carries what the last stage writes (alert records), \
exactly as the shell pipeline would; the table and the state directory still see every score \
and breaker state. A `stats` record (node `*`, tool `ugro-watch`) every --stats-every, at \
exit, and whenever the state becomes unwritable or writable again: cycles (finished in the \
period), cycle_ms / cycle_ms_max / last_cycle_ms (first dispatch to last answer of a cycle), \
probes, probes_per_s, failures, timeouts, ssh_failures, probe_failures, interval_ms / \
interval_max_ms (shortest and longest current node interval), concurrency_limit, in_flight, \
suspects_in_flight, nodes, nodes_unreachable, pipeline_queue / pipeline_backlog (now), \
pipeline_queue_max (deepest in the period), pipeline_capacity, pipeline_superseded (samples \
replaced in the backlog, in all), with --pipeline the alert stage's delivery workers \
(delivery_queue and spooled: notifications waiting in memory and in the spool now; \
delivery_failed, delivery_dropped since start; delivery: each receiver's figures, refreshed \
once per tick), stage_state_failures (failed writes of the breaker's or alert's state file in the \
period), with --state-dir state_queue, state_writes, state_write_failures, state_superseded, \
then state_unwritable (true or false) and state_error (the failure, while unwritable), \
rss_kb. --state-dir keeps, per node, the latest sample, score, breaker state, last alert and \
a bounded history (nodes/<node>.json; a name longer than 200 bytes is cut to 180 and followed by \
~ and 16 hex digits of its SHA-256, so the file name fits 255 bytes), plus fleet.json and \
stats.json, each replaced atomically, and the scorer's history (score.json: XID windows, the GPU \
count, rates; see ugro-score --state), so a restarted watcher still knows them, with or without \
--pipeline; directories are mode 0700, files 0600.

Fleet endpoint: --listen ADDR serves, over HTTP/1.1 without TLS or authentication, /metrics \
(Prometheus text format 0.0.4, the names of contrib/README.md: every node's probe readings, \
score, components, state, reasons, action, breaker state, last poll time, poll duration, poll \
failures and unreachable cause; the firing alerts; the watcher's nodes, cycle time, polls, \
failures by cause, worst poll lateness since the previous render, polls in flight and the \
concurrency limit, queue depths and capacities, alert delivery per receiver, render time and \
RSS) and /healthz (JSON; 200 while healthy, else 503 with status loop_stalled when the loop \
has not run for 5 ticks and at least 10s, polling_stalled when no cycle finished in twice the \
base interval plus the timeout beyond that, or state_unwritable). ADDR is IP:PORT, \
[IPv6]:PORT, localhost:PORT or a bare PORT (127.0.0.1); an address other than loopback is \
refused unless --listen-non-loopback. The endpoint is a consumer of the watcher's records and \
never on the polling path: the pipeline and the loop leave the newest sample, breaker state, \
poll figures and alert state per node and fingerprint in a mailbox (bounded by the fleet, \
never waits); a metrics thread applies it and renders at most once per --metrics-cache (1s; \
scrapes in between get the same body, scrapes during a render wait for it), keeping the body \
gzip-compressed (it is served as is to clients that accept gzip, inflated on the fly to the \
others); a server thread answers at most 32 connections at once, one request each, headers \
within 10s and the whole response within 60s, so a stalled scraper holds only its own \
connection. Both threads run at nice 10 where allowed. A node removed by a reload leaves the \
body with its alerts. A node exposed both here and by a node_exporter textfile is counted \
twice by the contrib rules: use one source per node.

Faults of this host: when the state directory or the breaker's or alert's state file cannot be \
written (disk full, read-only, removed), polling and alerting go on. The failure is logged, \
becomes an `error` record and a stats record with state_unwritable: true (which ugro-alert \
turns into the WatcherStateUnwritable alert), and writes are retried (the state directory \
with a backoff of 1s doubling to 30s, the state files every tick) until they succeed, which \
a stats record with state_unwritable: false reports (resolving the alert). A failed write \
leaves the previous file as it was. If the state still cannot be written at exit, the status \
is 74. The state directory and the state files' lock files must be creatable at start-up.

Shards and replicas: --shard I/N (or `shard: I/N` in the cluster file; 1-based) keeps the \
nodes that rendezvous hashing of their names gives to shard I: every shard j weighs every node \
(SHA-256 of the name mixed with j), the heaviest wins, so all watchers agree without talking, \
and going from N to N+1 shards moves only the nodes the new shard wins (about 1/(N+1)). \
--check lists every node of the file with its shard and `watched` (whether this shard polls \
it); a shard left with no node refuses to start. Replicas are watchers started with the same \
shard: each polls the same nodes and keeps its own state (the state directory, the scorer's, \
breaker's and alert's state files, its spool: give each replica its own), and each posts to every \
member of an Alertmanager cluster (an alertmanager receiver listing all of them), which \
deduplicates the page. Slurm actions stay single: slurm_drain with `lease:` (see ugro-alert(1)) \
drains or resumes a node only while holding that node's lease in its Slurm Comment. See \
docs/scale.md for sizing.

SSH control sockets live in a private directory (mode 0700, random name) under $TMPDIR, or, \
when $TMPDIR is too long for a Unix socket path, under $XDG_RUNTIME_DIR or /tmp.

Signals: SIGINT/SIGTERM finish the polls in flight, close the probes and sessions, flush the \
pipeline and the state (a second signal stops at once; SSH failures of polls in flight at that \
moment are not reported, since a terminal's Ctrl-C also ends the ssh control masters); SIGHUP reloads the cluster file (a bad \
file is reported and the running configuration kept); the command-line --interval, \
--max-interval, --timeout, --concurrency, --activity-file and --jobs-cmd still override it. \
Nodes whose connection settings are unchanged keep their session and resident probe (new \
timing — intervals, timeout — applies to them at their next poll); changed nodes are \
reconnected, added SSH nodes are deployed to like the first ones (unless --no-deploy). A closed stdout stops quietly with status 0.";

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "ugro-watch",
    version,
    about = "Adaptive concurrent GPU fleet monitor over persistent SSH sessions",
    long_about = LONG_ABOUT
)]
pub struct Cli {
    /// The cluster file (nodes, SSH defaults, probe, intervals, pipeline files).
    #[arg(
        short = 'c',
        long,
        value_name = "FILE",
        env = "UGRO_CLUSTER",
        conflicts_with = "local"
    )]
    pub cluster: Option<PathBuf>,

    /// Monitor this machine without SSH (a local resident ugro-probe); no cluster file needed.
    #[arg(long)]
    pub local: bool,

    /// Run score → breaker → alert in-process and write their output instead of raw samples.
    #[arg(long)]
    pub pipeline: bool,

    /// ugro-score configuration for --pipeline (overrides the cluster file's pipeline.score).
    #[arg(long, value_name = "FILE")]
    pub score_config: Option<PathBuf>,

    /// ugro-breaker configuration for --pipeline.
    #[arg(long, value_name = "FILE")]
    pub breaker_config: Option<PathBuf>,

    /// ugro-alert configuration for --pipeline.
    #[arg(long, value_name = "FILE")]
    pub alert_config: Option<PathBuf>,

    /// Breaker state file for --pipeline [default: STATE_DIR/breaker.json, else
    /// ~/.local/state/ugro/watch-breaker.json].
    #[arg(long, value_name = "FILE")]
    pub breaker_state: Option<PathBuf>,

    /// Alert state file for --pipeline [default: STATE_DIR/alert.json, else
    /// ~/.local/state/ugro/watch-alert.json].
    #[arg(long, value_name = "FILE")]
    pub alert_state: Option<PathBuf>,

    /// The scorer's history for --pipeline (XID windows, GPU counts, rates; see ugro-score
    /// --state) [default: STATE_DIR/score.json, else ~/.local/state/ugro/watch-score.json].
    /// Replicas on one host need their own, as with --breaker-state and --alert-state.
    #[arg(long, value_name = "FILE")]
    pub score_state: Option<PathBuf>,

    /// Keep per-node state files here (latest sample, score, breaker, last alert, history).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// History entries kept per node [default: state.history, 60].
    #[arg(long, value_name = "N")]
    pub history: Option<usize>,

    /// Period of `stats` records; 0 turns them off, except those saying the state became
    /// unwritable or writable again [default: state.stats_every, 60s].
    #[arg(long, value_name = "DURATION", value_parser = ugro_support::cli::parse_duration)]
    pub stats_every: Option<Duration>,

    /// Base interval (busy or degraded nodes) [default: intervals.base, 5s].
    #[arg(long, value_name = "DURATION", value_parser = ugro_support::cli::parse_duration)]
    pub interval: Option<Duration>,

    /// Longest interval (idle, healthy nodes) [default: intervals.max, 60s].
    #[arg(long, value_name = "DURATION", value_parser = ugro_support::cli::parse_duration)]
    pub max_interval: Option<Duration>,

    /// Per-node poll timeout [default: timeout, 10s].
    #[arg(long, value_name = "DURATION", value_parser = ugro_support::cli::parse_duration)]
    pub timeout: Option<Duration>,

    /// Most polls in flight at once [default: concurrency, 64].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrency: Option<u32>,

    /// A file whose recent modification means jobs are running on the whole fleet.
    #[arg(long, value_name = "PATH")]
    pub activity_file: Option<PathBuf>,

    /// A command printing busy node names (hostlists expanded), run every base interval;
    /// split on whitespace, no shell. Example: "squeue -h -t R -o %N".
    #[arg(long, value_name = "CMD")]
    pub jobs_cmd: Option<String>,

    /// Do not copy ugro-probe to nodes; run probe.path as it is there.
    #[arg(long)]
    pub no_deploy: bool,

    /// Only nodes with this tag (repeatable).
    #[arg(long, value_name = "TAG")]
    pub tag: Vec<String>,

    /// Poll only shard I of N (1-based): the nodes that rendezvous hashing of their names
    /// gives to shard I, so adding a shard moves about 1/N of the nodes [default: the cluster
    /// file's shard, else all nodes]. Replicas are watchers started with the same shard.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<shard::Shard>,

    /// Stop after this many base-interval cycles (and the polls in flight).
    #[arg(long, value_name = "N")]
    pub cycles: Option<u64>,

    /// Read a recorded raw stream from FILE (`-` = stdin) instead of polling, and handle it as
    /// if just polled (pipeline, state directory, output), through the filters' own run loop: a
    /// bad line is reported as `TOOL: line N: cause` and the exit status is then 65.
    #[arg(long, value_name = "FILE", conflicts_with = "local")]
    pub replay: Option<PathBuf>,

    /// Period of `tick` records in the raw stream, which run the stages' timers (the tick rule
    /// of ugro(7)), and of table and state-directory updates.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_tick)]
    pub tick: Duration,

    /// Also append the raw stream (what enters the pipeline: samples, ticks, stats, errors) to
    /// FILE (created mode 0600), for `--replay` or the shell filters later.
    #[arg(long, value_name = "FILE")]
    pub tee: Option<PathBuf>,

    /// Capacity of the pipeline queue, in records (see "Jobs and queues").
    #[arg(long, value_name = "N", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..))]
    pub queue: u32,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,

    /// Stop --replay at the first bad line.
    #[arg(long)]
    pub strict: bool,

    #[command(flatten)]
    pub kinds: ugro_support::cli::KindsArg,

    /// Check the cluster file, print the nodes as JSON lines, and exit.
    #[arg(long)]
    pub check: bool,

    /// Serve the fleet's metrics (`/metrics`, Prometheus text) and the watcher's health
    /// (`/healthz`, JSON) over HTTP on ADDR: IP:PORT, [IPv6]:PORT, localhost:PORT, or a bare
    /// PORT (on 127.0.0.1). Only a loopback address unless --listen-non-loopback. See "Fleet
    /// endpoint".
    #[arg(long, value_name = "ADDR", value_parser = endpoint::parse_listen, conflicts_with_all = ["replay", "check"])]
    pub listen: Option<std::net::SocketAddr>,

    /// Allow --listen on an address other than loopback (the endpoint has no authentication or
    /// TLS, and its body names every node and GPU: put a proxy or a firewall in front).
    #[arg(long, requires = "listen")]
    pub listen_non_loopback: bool,

    /// Metric names the endpoint writes: ugro's own, or also dcgm-exporter's names and labels
    /// for the GPU readings both have (as ugro-probe and ugro-score --metric-names).
    #[arg(long, value_enum, default_value_t = ugro_metrics::Names::Ugro)]
    pub metric_names: ugro_metrics::Names,

    /// How long a rendered /metrics body is served again before a scrape renders a new one.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = ugro_support::cli::parse_duration)]
    pub metrics_cache: Duration,
}

fn parse_tick(s: &str) -> Result<Duration, String> {
    let d = ugro_support::cli::parse_duration(s)?;
    if d < Duration::from_millis(10) {
        return Err("--tick must be at least 10ms".into());
    }
    Ok(d)
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A table on a terminal, JSON lines otherwise.
    Auto,
    /// JSON lines.
    Json,
    /// The live table.
    Table,
}

/// The clap command, for man pages.
pub fn command() -> clap::Command {
    Cli::command()
}

/// What can stop the watcher.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad cluster or stage configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A state file or the state directory.
    #[error(transparent)]
    State(#[from] StateError),
    /// A pipeline stage failed.
    #[error(transparent)]
    Stage(StageError),
    /// Writing the output.
    #[error(transparent)]
    Write(WriteError),
    /// Bad usage.
    #[error("{0}")]
    Usage(String),
    /// Something needed is missing.
    #[error("{0}")]
    Unavailable(String),
    /// I/O.
    #[error("{0}")]
    Io(std::io::Error),
    /// A pipeline stage could not be set up.
    #[error("{stage}: {message}")]
    StageSetup {
        /// Which.
        stage: &'static str,
        /// Why.
        message: String,
        /// Exit status.
        exit: Exit,
    },
}

impl ugro_types::ToolError for Error {
    fn exit(&self) -> Exit {
        match self {
            Error::Config(e) => e.exit(),
            Error::State(e) => e.exit(),
            Error::Stage(e) => e.exit(),
            Error::Write(e) => e.exit(),
            Error::Usage(_) => Exit::Usage,
            Error::Unavailable(_) => Exit::Unavailable,
            Error::Io(_) => Exit::IoErr,
            Error::StageSetup { exit, .. } => *exit,
        }
    }
}

fn hostname() -> String {
    let n = rustix::system::uname();
    let name = n.nodename().to_string_lossy().into_owned();
    if ugro_types::validate_node(&name).is_ok() && !name.is_empty() {
        name
    } else {
        "localhost".into()
    }
}

/// Runs the tool.
pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    let mut cluster = match (&cli.cluster, cli.local, &cli.replay) {
        (Some(p), _, _) => Cluster::load(p)?,
        (None, true, _) => Cluster::local(&hostname()),
        (None, false, Some(_)) => Cluster::local("replay"),
        (None, false, None) => {
            return Err(Error::Usage(
                "give a cluster file (-c FILE) or --local to watch this machine".into(),
            ));
        }
    };
    let overrides = Overrides::from_cli(&cli)?;
    if cli.check {
        overrides.apply_settings(&mut cluster)?;
        let sharding = overrides.shard.or(cluster.shard);
        return check(&cluster, sharding);
    }
    overrides.apply(&mut cluster)?;
    for w in cluster.warnings() {
        tracing::warn!("{w}");
    }
    let mut setup = setup(&cli, &cluster)?;
    if let Some(path) = &cli.replay {
        return replay(setup, path, cli.kinds.options(cli.strict));
    }
    let endpoint = start_endpoint(&cli)?;
    setup.metrics = endpoint.as_ref().map(endpoint::Endpoint::feed);
    let opts = monitor::LiveOpts {
        cycles: cli.cycles,
        deploy: !cli.no_deploy,
        overrides,
        cluster_path: cli.cluster.clone(),
        tags: cli.tag.clone(),
        stats_every: cli.stats_every.unwrap_or(cluster.state.stats_every),
        tick: cli.tick,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Io)?;
    let exit = rt.block_on(async {
        let deps = monitor::Deps {
            clock: Arc::new(clock::TokioClock::system()),
            transport: Arc::new(poll::SystemTransport),
            control: signals()?,
        };
        monitor::run(cluster, opts, setup, deps).await
    })?;
    // Tasks that did not finish in time must not keep the process alive.
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(exit.into())
}

/// SIGINT and SIGTERM ask to stop, SIGHUP to reload.
fn signals() -> Result<tokio::sync::mpsc::UnboundedReceiver<monitor::Control>, Error> {
    use monitor::Control;
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for (kind, what) in [
        (SignalKind::interrupt(), Control::Stop),
        (SignalKind::terminate(), Control::Stop),
        (SignalKind::hangup(), Control::Reload),
    ] {
        let mut s = signal(kind).map_err(Error::Io)?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                if tx.send(what).is_err() {
                    break;
                }
            }
        });
    }
    Ok(rx)
}

/// The pipeline thread's stages and output, from the command line and the cluster file.
pub fn setup(cli: &Cli, cluster: &Cluster) -> Result<monitor::Setup, Error> {
    let table = match cli.format {
        Format::Json => false,
        Format::Table => true,
        Format::Auto => std::io::stdout().is_terminal() && cli.replay.is_none(),
    };
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let state_dir = cli.state_dir.clone().or_else(|| cluster.state.dir.clone());
    let counters = Arc::new(pipeline::Counters::default());
    let stages = if cli.pipeline {
        pipeline::build(cli, cluster, state_dir.as_deref(), &counters)?
    } else {
        pipeline::scorer(cli, cluster, state_dir.as_deref())?
    };
    let tee = match &cli.tee {
        None => None,
        Some(p) => {
            use std::os::unix::fs::OpenOptionsExt;
            // Samples describe the hosts: private like the state files.
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(p)
                .map_err(|e| Error::Usage(format!("--tee {}: {e}", p.display())))?;
            Some(Box::new(f) as Box<dyn std::io::Write + Send>)
        }
    };
    Ok(monitor::Setup {
        metrics: None,
        stages,
        output: pipeline::Output {
            out: None,
            tee,
            table,
            color,
        },
        state_dir,
        history: cli.history.unwrap_or(cluster.state.history),
        queue: usize::try_from(cli.queue).unwrap_or(usize::MAX),
        counters,
    })
}

/// `--listen`: checks the address and starts serving (the address is bound before polling
/// starts, so a port in use stops the watcher at once). The caller keeps the endpoint for the
/// run and gives [`monitor::Setup::metrics`] its feed; dropping it stops serving.
pub fn start_endpoint(cli: &Cli) -> Result<Option<endpoint::Endpoint>, Error> {
    let Some(addr) = cli.listen else {
        return Ok(None);
    };
    endpoint::check_listen(addr, cli.listen_non_loopback).map_err(Error::Usage)?;
    let opts = endpoint::Options {
        listen: addr,
        names: cli.metric_names,
        cache: cli.metrics_cache,
    };
    endpoint::Endpoint::start(&opts)
        .map(Some)
        .map_err(|e| Error::Unavailable(format!("--listen {addr}: {e}")))
}

/// The command-line settings that replace cluster-file values; kept for the whole run so a
/// SIGHUP reload applies them again on top of the reloaded file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--interval`.
    pub interval: Option<Duration>,
    /// `--max-interval`.
    pub max_interval: Option<Duration>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
    /// `--concurrency`.
    pub concurrency: Option<u32>,
    /// `--activity-file`.
    pub activity_file: Option<PathBuf>,
    /// `--jobs-cmd`, split.
    pub jobs_cmd: Option<Vec<String>>,
    /// `--shard`.
    pub shard: Option<shard::Shard>,
}

impl Overrides {
    /// The overrides given on a command line.
    pub fn from_cli(cli: &Cli) -> Result<Overrides, Error> {
        let jobs_cmd = match &cli.jobs_cmd {
            None => None,
            Some(cmd) => {
                let argv: Vec<String> = cmd.split_whitespace().map(str::to_owned).collect();
                if argv.is_empty() {
                    return Err(Error::Usage("--jobs-cmd is empty".into()));
                }
                Some(argv)
            }
        };
        if cli.timeout.is_some_and(|d| d.is_zero()) {
            return Err(Error::Usage("--timeout must be more than 0".into()));
        }
        Ok(Overrides {
            interval: cli.interval,
            max_interval: cli.max_interval,
            timeout: cli.timeout,
            concurrency: cli.concurrency,
            activity_file: cli.activity_file.clone(),
            jobs_cmd,
            shard: cli.shard,
        })
    }

    /// Puts the overrides into a (freshly loaded) cluster and keeps only its shard's nodes.
    pub fn apply(&self, c: &mut Cluster) -> Result<(), Error> {
        self.apply_settings(c)?;
        shard::select(c, self.shard)
    }

    /// Puts the overrides into a (freshly loaded) cluster, all nodes kept.
    pub fn apply_settings(&self, c: &mut Cluster) -> Result<(), Error> {
        if let Some(d) = self.interval {
            c.intervals.base = d;
        }
        if let Some(d) = self.max_interval {
            c.intervals.max = d;
        } else if c.intervals.max < c.intervals.base {
            c.intervals.max = c.intervals.base;
        }
        if c.intervals.base.is_zero() || c.intervals.max < c.intervals.base {
            return Err(Error::Usage(
                "--interval must be more than 0 and --max-interval at least --interval".into(),
            ));
        }
        if let Some(d) = self.timeout {
            c.timeout = d;
        }
        if let Some(n) = self.concurrency {
            c.concurrency = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let Some(f) = &self.activity_file {
            c.activity.file = Some(f.clone());
        }
        if let Some(argv) = &self.jobs_cmd {
            c.activity.jobs_cmd = Some(argv.clone());
        }
        Ok(())
    }
}

fn check(c: &Cluster, sharding: Option<shard::Shard>) -> Result<ExitCode, Error> {
    for w in c.warnings() {
        tracing::warn!("{w}");
    }
    let mut out = ugro_types::io::RecordWriter::new(std::io::stdout());
    for n in &c.nodes {
        let t = match c.transport_of(n) {
            config::TransportConf::Ssh => serde_json::json!("ssh"),
            config::TransportConf::Local => serde_json::json!("local"),
            config::TransportConf::Command(a) => {
                serde_json::json!({"command": config::expand_argv(a, n, &c.ssh, &c.probe.args)})
            }
        };
        let mut rec = serde_json::json!({
            "node": n.name,
            "host": n.host(),
            "port": n.port.or(c.ssh.port),
            "user": n.user.as_ref().or(c.ssh.user.as_ref()),
            "tags": n.tags,
            "expected_gpus": n.expected_gpus,
            "transport": t,
        });
        if let (Some(s), Some(m)) = (sharding, rec.as_object_mut()) {
            let owner = shard::owner(&n.name, s.count);
            m.insert("shard".into(), format!("{owner}/{}", s.count).into());
            m.insert("watched".into(), (owner == s.index).into());
        }
        match out.write_record(&rec) {
            Ok(()) => {}
            Err(WriteError::Closed) => break,
            Err(e) => return Err(Error::Write(e)),
        }
    }
    Ok(Exit::Ok.into())
}

/// `--replay`: the recorded stream through the pipeline's processor, driven by the filters'
/// own run loop (line numbers, bad lines, `--strict`, exit 65).
fn replay(
    setup: monitor::Setup,
    path: &std::path::Path,
    opts: ugro_types::stage::Options,
) -> Result<ExitCode, Error> {
    let input: Box<dyn std::io::BufRead> = if path.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let f = std::fs::File::open(path).map_err(|e| {
            Error::Config(ConfigError::Read {
                path: path.to_owned(),
                source: e,
            })
        })?;
        Box::new(std::io::BufReader::new(f))
    };
    let persister = match &setup.state_dir {
        Some(d) => Some(persist::Persister::open(d, Box::new(|_| {}))?),
        None => None,
    };
    let views = view::Views::new(setup.history, setup.state_dir.is_some());
    let stages = match setup.stages {
        pipeline::Stages::Chain(c, t) => pipeline::Stages::Chain(c.strict(opts.strict), t),
        s => s,
    };
    let mut p = pipeline::Processor::new(
        stages,
        setup.output,
        views,
        persister.as_ref().map(persist::Persister::queue),
        setup.counters,
    );
    // The processor writes its own output; the run loop's writer stays unused.
    let mut unused = ugro_types::io::RecordWriter::new(std::io::sink());
    let r = ugro_types::stage::run("ugro-watch", opts, input, &mut unused, &mut p);
    drop(p);
    let closed = persister.map_or(Ok(()), persist::Persister::close);
    let exit = r.map_err(Error::Stage)?;
    closed?;
    Ok(exit.into())
}
