//! `ugro-breaker`: one circuit breaker per node over scored ugro records, with state that
//! survives between cron runs.
//!
//! [`BreakerConfig`] and [`BreakerStage`] are what `ugro-watch --pipeline` reuses, so that the
//! in-process pipeline and the shell pipeline give the same records.

use std::io::{self, BufReader};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use ugro_support::config::ConfigError;
use ugro_support::state::StateError;
use ugro_types::io::{RecordWriter, WriteError};
use ugro_types::stage::StageError;
use ugro_types::{Exit, Timestamp};

pub mod config;
pub mod engine;
pub mod ops;
pub mod stage;
pub mod status;

pub use config::{BreakerConfig, FleetGuardConfig, Outcome};
pub use engine::{Breaker, BreakerData, Counters, NodeState, Operation};
pub use stage::{BreakerStage, STATE_FORMAT, STATE_VERSION};

const LONG_ABOUT: &str = "\
Reads scored records (the output of ugro-score) on standard input and keeps one circuit \
breaker per node, resilience4j style. Records are written to standard output as JSON lines.

Counting. A sample whose score.state is critical is a failure, healthy is a success. degraded \
counts as a success, unknown because the node was unreachable (the sample has `unreachable`) as \
a failure, and unknown for any other reason (missing sections) is ignored: it neither counts nor \
resets the count. All three are configurable (degraded, unreachable, unknown: failure, success \
or ignore). Records of other kinds pass through unchanged (a kind this build does not know only with \
--pass-unknown-kinds; otherwise it is a bad line); a sample without a score, or a record naming a \
member twice, is rejected.

States. closed: records pass, annotated with `breaker` {state, consecutive_failures, \
next_trial_at}; failure_threshold (3) consecutive failures open the breaker. open: the node's \
records are held back (counted in the state file; --pass-open annotates and passes them \
instead) for wait_duration_in_open_state (5m), from the first that counts as a success on: those \
pass, annotated open, so that ugro-alert resolves the node's conditions within a poll of its \
recovery and sees a new fault after it; they do not end the wait. The first record of the node at or after that \
time moves it to half_open (a transition with reason wait_elapsed, `at` = the end of the wait) \
and is the trial: permitted_number_of_calls_in_half_open_state (1) successes close it, one \
failure reopens it with the open time multiplied by exponential_backoff_multiplier (2) up to \
exponential_max_wait_duration_in_open_state (1h). With \
automatic_transition_from_open_to_half_open_enabled, the move to half_open happens as soon as \
any record's time passes the end of the wait. Operator states: disabled (everything passes, \
nothing counts), forced_open (held back until `reset`), metrics_only (counted and annotated, \
never trips); `forget` removes a node. Every change is a kind=transition record, emitted \
before the record that caused it; the causing record itself passes (it was admitted), annotated \
with the new state. In half_open, records that do not count (ignored outcomes, stale or out of \
order) pass annotated but do not decide the trial.

Time. Only the records' ts is used, so a recorded stream replays identically. A record older \
than the newest record already seen for its node is out of order, and stale when it is more \
than max_record_age (10m) older than that record (each node is judged against its own newest \
record, so a node whose clock runs ahead does not make other nodes' records stale). Neither is \
counted: each passes (or is held) with the node's current annotation and never ends an open \
wait. The one use of the wall clock on records: one stamped more than max_clock_skew (5m; 0s \
turns the check off) ahead of this host's clock is rejected as a bad line (\"line N: ts … is 1h \
ahead of this host's clock\") and changes no state, because a single such record would \
otherwise make every later record of its node out of order until `reset`. Operator commands \
use the wall clock.

Fleet guard. When a node would trip, the breaker counts the failing nodes: those tripping or \
one failure from it (at least failure_threshold - 1 consecutive failures, at least 1) whose last \
failure is within fleet_guard.window (1m) of the tripping record, plus open nodes that opened \
within that window, plus the node itself. A node with a single blip is not counted unless \
failure_threshold is 1 or 2; nodes failing together in one probe round are counted before the \
first of them reaches the threshold. If the known nodes (all in the \
state file except disabled ones) are at least fleet_guard.min_known_nodes (3) and failing nodes \
are more than fleet_guard.threshold (0.5) of them, the breaker is not opened (its count keeps \
growing; it is judged again at its next failure) and a kind=fleet record with verdict \
suspect_observer is emitted, at most one per window. This is the Kubernetes node controller's \
rule for a fully disrupted zone: when everything looks down, blame the observer.

Lemon history. Each node keeps its last trip_history_size (20) trip times (closed to open); \
transitions report the trips within trip_window (7 days) as trips_in_window and history \
(\"3 trips in 7 days\").

State. --state FILE (default $XDG_STATE_HOME/ugro/breaker.json or \
~/.local/state/ugro/breaker.json; with neither HOME nor XDG_STATE_HOME set, \
$TMPDIR/ugro-UID/breaker.json, refused with status 78 unless that directory is the user's own, \
mode 0700) holds every node's breaker. A run holds an exclusive lock on \
FILE.lock from start to end, so concurrent runs wait for each other and lose no update; the \
file is replaced atomically (temp file, fsync, rename), mode 0600, at the end of input and, in \
long runs, after transitions (at most once per persist_interval, 1s). A corrupt file or one of \
another format version stops the tool with status 78 and is left untouched; --reset-state \
deletes it and starts empty. `status` reads the last written version without the lock, so it \
answers while a long run holds it (and shows what that run last persisted). reset, \
force-open, disable, metrics-only and forget apply directly (and print the transition) when no \
run holds the lock; while one does (a filter on a pipe, ugro-watch), they append a line to \
FILE.ops under a lock of its own and exit at once; the running filter applies them on its next \
record (ugro-watch also on its next tick), at most 500 ms after they were queued, and writes \
their transitions into its own output. Commands still queued when that run ends are applied by \
the next one to open FILE. The same \
configuration file drives ugro-watch --pipeline (pass_open: true there is --pass-open here).

Configuration (-c FILE, YAML; every key optional): failure_threshold, \
wait_duration_in_open_state, permitted_number_of_calls_in_half_open_state, \
enable_exponential_backoff, exponential_backoff_multiplier, \
exponential_max_wait_duration_in_open_state, automatic_transition_from_open_to_half_open_enabled, \
degraded, unknown, unreachable, max_record_age, max_clock_skew, pass_open, trip_history_size, trip_window, \
persist_interval, fleet_guard {enabled, threshold, window, min_known_nodes}. Unknown keys are \
errors that name the file and line. breaker.example.yaml in the source lists them with their \
defaults.

Exit status: 0 ok, 64 usage, 65 some input lines rejected, 66 config file missing, 74 I/O \
error, 78 bad configuration or unusable state file.";

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "ugro-breaker",
    version,
    about = "Per-node circuit breaker over scored ugro records, with state that survives cron runs",
    long_about = LONG_ABOUT
)]
pub struct Cli {
    /// Operator command; without one, filter standard input to standard output.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// YAML configuration (keys: resilience4j's parameter names in snake case).
    #[arg(short = 'c', long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,

    /// State file [default: $XDG_STATE_HOME/ugro/breaker.json].
    #[arg(long, value_name = "FILE", global = true)]
    pub state: Option<PathBuf>,

    /// Delete the state file first and start from empty (the way out of a corrupt file).
    #[arg(long, global = true)]
    pub reset_state: bool,

    /// Pass records of open nodes, annotated, instead of holding them back.
    #[arg(long)]
    pub pass_open: bool,

    /// Stop at the first bad input line instead of reporting and skipping it.
    #[arg(long)]
    pub strict: bool,

    #[command(flatten)]
    pub kinds: ugro_support::cli::KindsArg,
}

/// Operator commands. Those that change a node apply directly when no run holds the state
/// file; while a long run (a filter on a pipe, ugro-watch) holds it, they are queued in
/// `<state>.ops` for that run to apply. `status` reads a snapshot.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show every node's breaker.
    Status {
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Close NODE's breaker and clear its counts (its trip history is kept). Prints the
    /// transition record, if the state changed.
    Reset {
        /// Node name.
        #[arg(value_parser = node_arg)]
        node: String,
    },
    /// Hold NODE's breaker open until `reset`. Prints the transition record.
    ForceOpen {
        /// Node name.
        #[arg(value_parser = node_arg)]
        node: String,
    },
    /// Turn NODE's breaker off: its records pass, nothing is counted, until `reset`.
    Disable {
        /// Node name.
        #[arg(value_parser = node_arg)]
        node: String,
    },
    /// Count and annotate NODE's records but never trip, until `reset`.
    MetricsOnly {
        /// Node name.
        #[arg(value_parser = node_arg)]
        node: String,
    },
    /// Remove NODE from the state file (a decommissioned node stops counting as known to the
    /// fleet guard). Its next record starts a fresh, closed breaker.
    Forget {
        /// Node name.
        #[arg(value_parser = node_arg)]
        node: String,
    },
}

/// `status` output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON document.
    Json,
}

fn node_arg(s: &str) -> Result<String, String> {
    ugro_types::validate_node(s)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            if s == "*" {
                Err("`*` names the fleet, not a node".into())
            } else {
                Ok(s.to_owned())
            }
        })
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
    /// State file.
    #[error(transparent)]
    State(#[from] StateError),
    /// While filtering.
    #[error(transparent)]
    Stage(#[from] StageError),
    /// Writing output.
    #[error(transparent)]
    Write(#[from] WriteError),
}

impl ugro_types::ToolError for Error {
    fn exit(&self) -> Exit {
        match self {
            Error::Config(e) => e.exit(),
            Error::State(e) => e.exit(),
            Error::Stage(e) => e.exit(),
            Error::Write(e) => e.exit(),
        }
    }
}

fn op_target(op: Operation) -> &'static str {
    match op {
        Operation::Reset => "closed (or never seen)",
        Operation::ForceOpen => "forced_open",
        Operation::Disable => "disabled",
        Operation::MetricsOnly => "metrics_only",
        Operation::Forget => "forgotten",
    }
}

/// The default state file.
pub fn default_state_file() -> Result<PathBuf, StateError> {
    Ok(ugro_support::state::default_state_dir()?.join("breaker.json"))
}

/// Runs the tool.
pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    let mut cfg = BreakerConfig::load(cli.config.as_deref())?;
    cfg.pass_open |= cli.pass_open;
    let state = match cli.state {
        Some(s) => s,
        None => default_state_file()?,
    };
    if cli.reset_state {
        ugro_support::state::reset(&state)?;
    }
    let mut out = RecordWriter::new(io::stdout().lock());
    let (node, op) = match cli.command {
        None => {
            let mut stage = BreakerStage::open(cfg, &state)?;
            let input = BufReader::with_capacity(1 << 16, io::stdin().lock());
            let r = ugro_types::stage::run(
                "ugro-breaker",
                cli.kinds.options(cli.strict),
                input,
                &mut out,
                &mut stage,
            );
            return match r {
                Ok(exit) => Ok(exit.into()),
                // Closed stdout: stop quietly; dropping the stage still saves the state.
                Err(e) if e.exit() == Exit::Ok => Ok(ExitCode::SUCCESS),
                Err(e) => Err(e.into()),
            };
        }
        Some(Command::Status { format }) => {
            // A snapshot, not the lock: status must answer while a long run (ugro-watch)
            // holds it.
            let data: BreakerData =
                ugro_support::state::read_snapshot(&state, STATE_FORMAT, STATE_VERSION)?
                    .unwrap_or_default();
            ugro_support::state::check_nodes(&state, data.nodes.keys().map(String::as_str))?;
            let text = status::render(&data, &cfg, &state, Timestamp::now(), format);
            return match out.write_text(&text) {
                Ok(()) | Err(WriteError::Closed) => Ok(ExitCode::SUCCESS),
                Err(e) => Err(e.into()),
            };
        }
        Some(Command::Reset { node }) => (node, Operation::Reset),
        Some(Command::ForceOpen { node }) => (node, Operation::ForceOpen),
        Some(Command::Disable { node }) => (node, Operation::Disable),
        Some(Command::MetricsOnly { node }) => (node, Operation::MetricsOnly),
        Some(Command::Forget { node }) => (node, Operation::Forget),
    };
    let Some(mut stage) = BreakerStage::try_open(cfg, &state)? else {
        // A long run (a filter on a pipe, ugro-watch) holds the state for its life: queue the
        // command for it instead of waiting for it to end.
        ops::enqueue(&state, &node, op, Timestamp::now())?;
        tracing::warn!(
            "{}: held by a running ugro-breaker or ugro-watch; {} {node} queued in {} (applied on its next record or tick, its transition goes into that run's output)",
            state.display(),
            ops::op_name(op),
            ops::journal_path(&state).display()
        );
        return Ok(ExitCode::SUCCESS);
    };
    match stage.operate(&node, op, Timestamp::now())? {
        Some(t) => match out.write_record(&t) {
            Ok(()) | Err(WriteError::Closed) => {}
            Err(e) => return Err(e.into()),
        },
        None if op == Operation::Forget => {}
        None => tracing::warn!("{node}: already {}; nothing to change", op_target(op)),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn node_arguments_are_validated() {
        assert!(node_arg("gpu-01").is_ok());
        for bad in ["*", "-x", "a/b", ""] {
            assert!(node_arg(bad).is_err(), "{bad:?}");
        }
    }
}
