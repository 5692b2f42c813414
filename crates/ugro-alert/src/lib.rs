//! ugro-alert: turns scored samples, breaker transitions and fleet verdicts into alerts with
//! Alertmanager's lifecycle (fingerprints, grouping, group_wait / group_interval /
//! repeat_interval, silences, inhibition, a notification log), routes them through a YAML
//! routing tree and delivers them to stdout, programs, webhooks, Alertmanager, Slack or
//! Slurm.

use std::io::BufReader;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use ugro_support::config::ConfigError;
use ugro_support::state::StateError;
use ugro_types::Exit;
use ugro_types::io::RecordWriter;
use ugro_types::stage::StageError;

pub mod config;
pub mod deliver;
pub mod engine;
pub mod flap;
pub mod matcher;
pub mod pending;
pub mod remedy;
pub mod rules;
pub mod stage;

pub use config::AlertConfig;
pub use stage::AlertStage;

const LONG_ABOUT: &str = "\
Reads ugro records on stdin (scored samples from ugro-score, passed-through samples, \
transitions and fleet verdicts from ugro-breaker) and writes kind=alert records on stdout for \
the stdout receiver. Other receivers deliver as side effects. Records of other kinds (alert, \
stats, error, tick; unknown kinds with --pass-unknown-kinds, otherwise bad lines) are consumed, not echoed; a tick runs the timers to its time. A sample without `score` is rejected.

ALERTS (labels: alertname, node, gpu where it applies, severity, plus global.external_labels; \
annotations: summary, description, action, runbook_url = global.runbook_url/<alertname>):
  NodeCritical (critical) / NodeDegraded (warning): the node's score state. Not raised while \
the node's own GPU alerts below, active already, name every present reason of the sample (as \
an inhibit rule with equal: [node] would, decided per sample): a fatal XID pages as \
GpuXidFatal alone, not GpuXidFatal + NodeCritical. A reason without an alert of its own (a \
second cause) raises it; once fired it stays until it clears. global.builtin_inhibit_rules: \
false turns this off with the built-in inhibit rules below.
  GpuXidFatal, GpuXid, GpuRowRemapFailure, GpuRowRemapPending, GpuEccErrors, GpuThermal, \
GpuThrottled, GpuPcieDegraded, GpuLost: one per GPU and family, from score reasons whose code \
contains xid, remap, ecc, temp/thermal, throttl/slowdown, pcie, lost/missing; raised only \
while the node is degraded or critical; severity critical if the reason is fatal or the node \
critical. GpuRowRemapPending (row_remap_pending: a GPU reset applies it) is apart from \
GpuRowRemapFailure (hardware service). An XID alert stays firing after its XID left the \
probe's lookback while the node is degraded or critical with a reason for that GPU, or with \
GPUs missing (a GPU that fell off the bus): GpuXidFatal resolves with GpuLost, when the GPU \
is back.
  GpuFailurePredicted (warning, label predicted=\"true\"): score reasons with predicted: true \
(ugro-score's trends: ecc_corrected_rate, pcie_replay_rate, row_remap_correctable_growth, \
gpu_temperature_rising, xid_rate), one per GPU, never under the name of a present fault and \
never critical; annotations trend (the codes), rate, threshold and window (the first trend's \
value, threshold and window), summary and description from the reasons' messages. A node \
degraded by predictions alone raises no NodeDegraded and does not count as unhealthy. \
Route them apart with a matcher on the label, before the routes that page, e.g. routes: \
[{matchers: ['predicted=\"true\"'], receiver: hardware-tickets, group_by: [node], \
repeat_interval: 24h}]; under the default route they are warnings of the node's group.
  NodeUnreachable (critical): an unreachable sample. It inhibits that node's other alerts \
(except NodeCircuitOpen); alerts the node had stay as they were until it reports again.
  NodeDataMissing (warning): state unknown on a reachable node.
  NodeCircuitOpen (info): breaker open/forced_open (transition or breaker annotation); \
resolved when the breaker closes (half_open is a trial and keeps it firing).
  ClusterDegraded (critical): a fleet record (for cluster_window), or more than \
cluster_degraded_share (0.5) of the nodes seen within cluster_window (5m) with a node alert \
active (after its `for`), with at least cluster_min_nodes (4) known. While more than the share \
are merely unhealthy (degraded, critical, unknown or unreachable) it is pending and holds back \
the node alerts it would inhibit, so a fleet-wide event pages once. It inhibits \
NodeDegraded/NodeCritical/NodeUnreachable/NodeDataMissing/NodeCircuitOpen/NodeFlapping, so one \
alert replaces N; GPU hardware alerts still go out.
  NodeFlapping (warning): flap detection (see TIMING).
  Watchdog (severity none): always firing when global.watchdog is true.
  WatcherStateUnwritable (warning): a ugro-watch stats record with state_unwritable: true \
(its state directory or state files cannot be written; description: the failure); resolved \
by one with false.
A recovery is the resolved notification of the original alert (its labels, severity included, are its identity \
and do not change). global.resolve_timeout (default 0 = off) resolves alerts no record \
confirmed for that long.

TIMING (alert_rules, flap_detection; the state of each condition is in --state, so one cron \
run per poll notifies byte for byte what one stream of the same records does): each alert \
raised from samples is pending until its condition has held for its rule's `for` (Prometheus \
semantics), a number of samples in a row (`for: 3`, `for: 3 samples`) or record time (`for: \
90s`), and, once firing, resolves when it has been clear for its keep_firing_for (hysteresis). \
Built in: NodeCritical, GpuXidFatal, GpuLost, GpuEccErrors, GpuRowRemapFailure and \
NodeUnreachable for: 3, keep_firing_for: 1 (a one-sample blip or two-sample burst never pages; \
a hard fault pages 2 polls after it starts; the second clear sample resolves); the other \
sample alerts for: 4, keep_firing_for: 2. NodeDegraded and NodeCritical are one condition, so \
the time a node was degraded counts towards critical. Set them with alert_rules: {\"*\": {for: \
N}, GpuThermal: {for: 2m, keep_firing_for: 1}}; event alerts (NodeCircuitOpen, \
ClusterDegraded, Watchdog, NodeFlapping, WatcherStateUnwritable) have no `for`. Samples of an \
unreachable or data-less node leave its other conditions as they were. Flap detection as \
Nagios Core does it: the node's last flap_detection.samples (21) states (ok, degraded, \
critical, unreachable, as its active alerts say), the weighted share of state changes (0.75 \
for the oldest to 1.25 for the newest); at high_threshold (20 %) the node is flapping: one \
NodeFlapping, notified at once, and its warning alerts stay as they are (no per-state pages) \
until the share falls to low_threshold (5 %); then they catch up with its state and \
NodeFlapping resolves. As in Nagios, where flapping suppresses notifications but event \
handlers still run, a flapping node's critical alerts (hard faults: a critical node, GPU lost, \
fatal XID, uncorrected ECC, unreachable) are never held back: they fire and resolve on time, \
so slurm_drain and remediation still act on them (a critical alert that softens to a warning \
resolves, and the warning waits). flap_detection: {enabled: false} turns it off. Keep NodeUnreachable's and NodeCritical's `for` at or below \
ugro-breaker's failure_threshold (both 3 by default): the records an open breaker holds back \
never reach this stage, so a longer `for` would wait for the breaker's trial.

LIFECYCLE: Alertmanager semantics and names: route.group_by (default [node, severity]: one \
group per node and severity, so a node failing is never held behind another node's \
group_interval, and ClusterDegraded, which has no node label, is one group of its own), \
group_wait 0s (the `for` keeps blips out), group_interval 5m, repeat_interval 4h, send_resolved \
true, resolved_at_once true (a group whose alerts have all resolved is notified at once, not \
at its next group_interval; false: Alertmanager's behaviour); the notification \
log (firing/resolved fingerprint sets per group and receiver) decides like Alertmanager's \
DedupStage. Time is record time (`ts`); the one exception: a record stamped more than \
global.max_clock_skew (5m; 0s turns the check off) ahead of this host's clock is rejected as \
a bad line (\"line N: ts … is 2h ahead of this host's clock\") and moves no timer, since record \
time never goes back. The state (alerts, groups, notification log, timers) lives in --state, \
locked, written atomically, mode 0600. END OF INPUT (cron): group_wait counts as elapsed for \
groups never notified, so a one-shot run notifies at once; groups already notified keep \
group_interval and repeat_interval as Alertmanager does (their timers are in the state file, \
so a later run fires them on schedule: a node joining a notified group is notified after \
group_interval, not by the next run). global.flush_on_exit: false or --no-flush-on-exit waits \
for group_wait too.

SILENCES AND INHIBITION: silences (--silences or silences_file) in Alertmanager's shape \
[{matchers: [{name, value, isRegex, isEqual}], startsAt, endsAt, createdBy, comment}]; \
inhibit_rules with source_matchers, target_matchers, equal. A muted alert is left out of its \
group's notification. An alert that was notified firing, then silenced, then resolved while \
still silenced: its resolved notification is NOT sent (Alertmanager behaviour); set \
global.notify_resolved_when_silenced: true to send it anyway. Exception: slurm_drain \
receivers. A node ugro drained (remembered in the state file) is resumed once it has no \
critical alert firing, muted or not, even when the resolved alert is silenced or inhibited \
(for example by ClusterDegraded or NodeUnreachable); muting only stops new drains. A long run \
re-reads the silences file when it changes (checked every 10 s of record time).

RECEIVERS: stdout; exec {command: [argv], timeout, env: [NAME]} (no shell; webhook v4 JSON on \
stdin; UGRO_ALERT_ID, _RECEIVER, _GROUP_KEY, _STATUS, _COUNT, _FIRING, _RESOLVED, _NODES, \
_ALERTNAMES; exit 0 = delivered, 65 (EX_DATAERR) = refused for good, anything else or a timeout \
= retried; when it exits or times out, whatever it left running in its process group is \
killed, except what moved to a session of its own with setsid); webhook {url_env|url_file|url, max_alerts, bearer_token_env|file} (Alertmanager \
webhook v4, header X-Ugro-Notification-Id); alertmanager {urls, resend_interval 1m} (POST \
/api/v2/alerts to every instance, each with its own worker and its own delivery state, on every \
change and every resend interval, endsAt = now + 4 x resend_interval for firing alerts and the \
resolve time for resolved ones; resolved alerts are re-sent for 15 min as Prometheus does, and \
to an instance that missed the resolve until it accepts it or its copy has expired (the endsAt \
it last accepted), so that an HA peer never pages FIRING after the other paged RESOLVED; it gets \
every alert its route matches, muted or not, like Prometheus: silence in Alertmanager; an \
instance that cannot be reached is tried again at the next resend interval, by this run or the \
next one; one that answers 4xx other than 408/429 is not sent that batch again); slack \
{url_env|url_file, channel}; slurm_drain {act, scontrol, timeout, env: [NAME]}: on a critical \
firing alert with a node label runs `scontrol update NodeName=N State=DRAIN Reason=ugro: \
<alertname> gpu=<i> xid=<n>: <summary>` (gpu= and xid= where known, the summary without what \
they already say, no quotes or control characters, at most 255 bytes: Slurm's accounting \
stores reasons as tinytext) unless the node is DOWN or already drained; when the node has no \
critical alert left firing runs `scontrol update NodeName=N State=RESUME`, only if the node is \
drained, not DOWN, and its reason starts with `ugro:`. Nodes are handled one by one: a node \
Slurm does not know or an invalid request (scontrol says \"not found\" or \"Invalid\") is \
reported once and not retried, and never holds back another node; a failure to reach \
slurmctld is retried for the nodes still to do. Dry run (prints on stderr) unless act: true or \
--act. Route slurm_drain with group_by: [node]. With replicas (two watchers of one shard, each \
with its own state), give slurm_drain `lease: {holder, ttl, settle}` (holder: this replica's \
name, default the host name; ttl 2m; settle 2s): before it drains or resumes a node it takes \
the node's lease, the word `ugro-lease:<holder>:<unix-until>` at the end of the node's Slurm \
Comment (an operator's text before it is kept), by Fischer's timed protocol (read; write within \
settle/2; wait settle; act only if it is still ours), and reads the node again under it; a lease \
another replica holds, unexpired, is a retryable failure, so a dead holder's action is taken \
over once its lease expires (within ttl), against the node's state then. Keep the replicas' \
clocks in step far closer than ttl.

REMEDIATION (slurm_drain with a remediation: section; README \"Slurm: remediation\"): ugro holds \
each node it drains; once Slurm says it is drained with our reason and no job, it runs \
remediation.actions.<recommended action> (argv, no shell; {node} {gpu} {pci_bus_id} {action}; \
timeout 10m; output tail kept in <state>.remedy), then resumes it after verify.healthy_polls (3) \
healthy polls in a row and verify.check (exit 0); the receiver itself no longer resumes. A \
failure keeps it drained with the reason updated and is retried after retry_after (10m); \
escalate.failures (2) within failure_window (7d), or a fault back after recurrences (2) \
remediations within recurrence_window (24h), or the action hardware_inspection: Reason=ugro: \
needs service: ..., alert NodeNeedsService (critical), until `ugro-alert release NODE`. \
budget (max_percent 50 of the nodes seen, max_nodes, window 5m): the node that would go past it \
is not drained, QuarantineBudgetExhausted fires once, and nothing more is drained or remediated \
until `ugro-alert budget reset`. Nothing runs without --act. With replicas (the receiver's lease:) every remediation job takes or renews the node's lease before it touches Slurm or runs a program (the remediation, a reason, the check, the resume; the remediation and the check hold it for their timeout beyond ttl), and a replica renews the lease of a node it verifies every ttl/3. A replica that finds another's unexpired lease does nothing to the node: it says so on stderr, marks the node `follows` in <state>.remedy, asks again every poll_interval, and lets go once Slurm shows the node resumed; when that lease expires it takes the node over from where Slurm's reason says the holder left it: `verifying` is verified without remediating again (counted as a remediation), `failed` counts as a failure and is retried after retry_after, `needs service` stays drained with NodeNeedsService, anything else is remediated. Shared through Slurm: the node's state, its reason and the lease in its Comment; per replica: the rest of <state>.remedy (phases and timers, healthy-poll counts, failure and remediation history, the last program's output, the quarantine budget, the nodes seen).

DELIVERY: the stage never waits on delivery. Each receiver other than stdout has its own worker \
thread (Alertmanager: one per instance) behind a queue of delivery.queue_size (1024) \
notifications; a newer notification of a group replaces a queued or spooled older one (it \
carries the group's whole state; resolved alerts of the older one are carried over), and one \
that finds the queue full is dropped, logged and counted (dropped) in a long run, or written to \
the spool at end of input. A worker writes each notification to the spool before its first \
attempt (--spool-dir, default <state>.spool; bounded by spool_max_entries 1000 and \
spool_max_bytes 16MiB, the oldest dropped with an error logged) and removes it only after \
success, so a crash, a timeout or the end of the run loses nothing (a crash between success and \
removal can repeat one notification: X-Ugro-Notification-Id / UGRO_ALERT_ID let receivers \
drop it). Failures: permanent (HTTP 4xx other than 408 and 429, an exec receiver's exit 65, a \
node Slurm does not know) are reported once and dropped, and do not hold back what follows; \
retryable ones (timeouts, connection errors, 5xx, 408, 429, other exits) make that receiver \
back off (delivery.backoff 500ms doubling to max_backoff 30s for delivery.attempts 3 failures \
in a row, then every spool_retry_interval 30s) and keep their order per group. Each attempt \
has delivery.timeout (10s; exec and slurm_drain: their own timeout). END OF INPUT: the run \
delivers for at most delivery.budget (20s; attempts are cut to what is left of it, and an \
attempt started before the end of input keeps its own timeout, so a run ends within about \
max(budget, timeout)), then leaves the rest in the spool for the next run, says so on stderr \
and exits 0. The spool is safe to share between concurrent runs (--spool-dir given to runs \
with different --state files): entry names are unique (<receiver>+<ms>-<pid>-<seq>.json, \
never overwritten), an entry is locked while it is sent, and every run retries what it finds \
there, including other runs' entries; entries for receivers a run's configuration lacks are \
left alone. The spool directory is created mode 0700 and refused if another user owns it or \
group or others may write to it. Secrets come from url_env/url_file, never argv. Programs \
(exec receivers, scontrol) run with a cleared environment: only PATH, HOME, LANG, LC_ALL, TZ, \
UGRO_ALERT_* and the names the receiver's env lists (env: [SLURM_CONF]) are passed on, so \
tokens in ugro-alert's environment do not reach them.";

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "ugro-alert",
    version,
    about = "Alertmanager-grade alerts from ugro records: grouping, dedup, silences, routing, receivers",
    long_about = LONG_ABOUT
)]
pub struct Cli {
    /// Configuration file (YAML): global, delivery, route, receivers, inhibit_rules,
    /// silences_file. Without it everything goes to stdout grouped by alertname.
    #[arg(short, long, value_name = "FILE", env = "UGRO_ALERT_CONFIG")]
    pub config: Option<PathBuf>,
    /// State file (alerts, groups, notification log). Default:
    /// $XDG_STATE_HOME/ugro/alert.json, else ~/.local/state/ugro/alert.json, else
    /// $TMPDIR/ugro-UID/alert.json (refused with status 78 unless that directory is the
    /// user's own, mode 0700).
    #[arg(long, value_name = "FILE", global = true)]
    pub state: Option<PathBuf>,
    /// Silences file (YAML or JSON list, Alertmanager's silence shape); replaces
    /// silences_file.
    #[arg(long, value_name = "FILE")]
    pub silences: Option<PathBuf>,
    /// Spool directory for undelivered notifications; runs with different --state files may
    /// share one. Default: <state>.spool.
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Let slurm_drain receivers really run scontrol update (default: dry run).
    #[arg(long)]
    pub act: bool,
    /// At end of input, wait for group_wait too instead of treating it as elapsed.
    #[arg(long)]
    pub no_flush_on_exit: bool,
    /// Delete the state file (under its lock) before starting.
    #[arg(long)]
    pub reset_state: bool,
    /// Validate the configuration (and silences) and exit.
    #[arg(long)]
    pub check_config: bool,
    /// Stop at the first bad input line.
    #[arg(long)]
    pub strict: bool,

    #[command(flatten)]
    pub kinds: ugro_support::cli::KindsArg,

    /// An operator command for remediation instead of a run.
    #[command(subcommand)]
    pub command: Option<remedy::cli::Cmd>,
}

/// The clap command, for man pages.
pub fn command() -> clap::Command {
    Cli::command()
}

/// Errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// State file.
    #[error(transparent)]
    State(#[from] StateError),
    /// Spool directory.
    #[error("spool directory {path}: {source}")]
    Spool {
        /// Directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Processing.
    #[error(transparent)]
    Stage(#[from] StageError),
}

impl ugro_types::ToolError for Error {
    fn exit(&self) -> Exit {
        match self {
            Error::Config(e) => e.exit(),
            Error::State(e) => e.exit(),
            Error::Spool { .. } => Exit::IoErr,
            Error::Stage(e) => e.exit(),
        }
    }
}

/// The default state file.
pub fn default_state() -> Result<PathBuf, StateError> {
    Ok(ugro_support::state::default_state_dir()?.join("alert.json"))
}

/// Runs the tool.
pub fn run(cli: Cli) -> Result<ExitCode, Error> {
    if let Some(cmd) = &cli.command {
        let state = match &cli.state {
            Some(s) => s.clone(),
            None => default_state()?,
        };
        return Ok(remedy::cli::run(cmd, &state)?);
    }
    let mut cfg = AlertConfig::load(cli.config.as_deref())?;
    if let Some(s) = &cli.silences {
        cfg.load_silences(s)?;
    }
    if cli.check_config {
        return Ok(Exit::Ok.into());
    }
    if let Some(d) = cli.spool_dir {
        cfg.delivery.spool_dir = Some(d);
    }
    cfg.set_act(cli.act);
    if cli.no_flush_on_exit {
        cfg.global.flush_on_exit = false;
    }
    let state = match cli.state {
        Some(s) => s,
        None => default_state()?,
    };
    if cli.reset_state {
        ugro_support::state::reset(&state)?;
    }
    let mut stage = AlertStage::open(cfg, &state)?;
    let stdin = std::io::stdin();
    let mut out = RecordWriter::new(std::io::stdout().lock());
    match ugro_types::stage::run(
        "ugro-alert",
        cli.kinds.options(cli.strict),
        BufReader::new(stdin.lock()),
        &mut out,
        &mut stage,
    ) {
        Ok(exit) => Ok(exit.into()),
        Err(e) if e.exit() == Exit::Ok => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
    }
}
