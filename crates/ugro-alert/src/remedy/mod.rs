//! Remediation for a slurm_drain receiver with a `remediation:` section: the loop from a
//! drained node back to service. The receiver drains a node with a critical alert; this
//! controller then holds it:
//!
//! 1. waiting: until Slurm reports it drained by ugro with no job on it (asked every
//!    `poll_interval`);
//! 2. running: the argv for the alert's recommended action (`reset_gpu: [...]`), reason
//!    `ugro: remedy <action> running: <fault>`;
//! 3. verifying: `healthy_polls` healthy samples in a row (reason `... verifying: ...`), then
//!    the optional `check` argv;
//! 4. resumed (`State=RESUME`), or failed: drained with the reason updated, tried again after
//!    `retry_after`; `failures` failures within `failure_window`, or a fault that comes back
//!    after `recurrences` remediations within `recurrence_window`, make it need service
//!    (`Reason=ugro: needs service: ...`, alert NodeNeedsService) until an operator releases
//!    it (`ugro-alert release NODE`).
//!
//! Before a node is drained at all the quarantine budget ([`budget`]) is asked. Decisions are
//! pure functions of record time and the outcomes of the pool ([`worker`]), which does all
//! the waiting. The state lives in `<state>.remedy`, beside the alert state.
//!
//! With replicas (the receiver's `lease:`), each replica keeps all of this state for itself
//! and shares only what Slurm holds: the node's state, its reason (which names the phase) and
//! the lease in its Comment ([`crate::deliver::lease`]). Every job takes or renews the lease
//! first; one that finds another replica's lease does nothing, and the node is marked
//! [`Follows`]: left to that replica, asked about every `poll_interval`, let go once Slurm
//! shows it resumed. When that lease expires, the next job takes the node over from where its
//! reason says the holder left it ([`worker::Found`]), so a remediation that ran is not run
//! again.

pub mod budget;
pub mod cli;
pub mod config;
mod worker;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use ugro_support::journal;
use ugro_support::state::{StateError, StateLock};
use ugro_types::{Action, Alert, AlertStatus, HealthState, Timestamp};

pub use config::RemedyConfig;
pub use worker::{OUTPUT_KEPT_BYTES, RunRecord};

use crate::config::{AlertConfig, ReceiverKind};
use crate::deliver::{MAX_REASON_BYTES, Transport, drain_reason, note};
use crate::engine::{Notification, RemedyAlert};
use crate::rules::Input;
use budget::{BudgetState, Verdict};
use worker::{Job, Outcome, Pool, Runner};

/// Remediation state file format name.
pub const STATE_FORMAT: &str = "ugro-alert-remedy";
/// Its version.
pub const STATE_VERSION: u32 = 1;
/// Alert: a node that remediation gave up on.
pub const NODE_NEEDS_SERVICE: &str = "NodeNeedsService";
/// Alert: the quarantine budget tripped.
pub const BUDGET_EXHAUSTED: &str = "QuarantineBudgetExhausted";

/// The remediation state file beside an alert state file.
pub fn state_path(alert_state: &Path) -> PathBuf {
    let mut s = alert_state.as_os_str().to_owned();
    s.push(".remedy");
    PathBuf::from(s)
}

/// Where a held node is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Phase {
    /// Until Slurm says it is drained with no job; asked again at `next`.
    Waiting {
        /// Next question.
        next: Timestamp,
    },
    /// The remediation runs.
    Running,
    /// Counting healthy polls.
    Verifying {
        /// Since (the end of the remediation).
        since: Timestamp,
        /// Healthy polls in a row.
        healthy: u32,
        /// Whether a remediation ran (else the node recovers on its own: no timeout).
        remediated: bool,
    },
    /// The check and the resume run.
    Resuming,
    /// Failed; the next attempt at `retry_at`.
    Failed {
        /// When.
        retry_at: Timestamp,
    },
    /// For a person.
    NeedsService {
        /// Why.
        why: String,
    },
}

/// A node ugro drained and has not given back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// Where it is.
    pub phase: Phase,
    /// `GpuXidFatal gpu=3 xid=79`: what the drain reason names, the key for recurrences.
    pub fault: String,
    /// The recommended action.
    pub action: Action,
    /// The GPU, when the alert names one.
    pub gpu: Option<u32>,
    /// That GPU's PCI bus id, from the node's samples.
    pub pci_bus_id: Option<String>,
    /// When it was taken.
    pub since: Timestamp,
    /// With replicas: another replica holds the node's lease, so this one does nothing to it
    /// and follows it as Slurm shows it (asking again every `poll_interval`) until that
    /// replica resumes it or its lease expires (then this one takes the node over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<Follows>,
}

/// Another replica's hold on a node, as the last job found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Follows {
    /// The replica.
    pub holder: String,
    /// Its lease's end, Unix seconds.
    pub until: u64,
    /// Whether Slurm showed the node drained under that lease (so that not drained later
    /// means that replica resumed it).
    pub seen_drained: bool,
    /// When to ask again.
    pub next: Timestamp,
}

/// What ugro remembers of a node across episodes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Failed remediations and verifications.
    #[serde(default)]
    pub failures: Vec<Timestamp>,
    /// Remediations that ran, with the fault they were for.
    #[serde(default)]
    pub remediations: Vec<(Timestamp, String)>,
    /// The last program run (remediation or check), shown in the next alert.
    #[serde(default)]
    pub last_run: Option<RunRecord>,
}

/// The state file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RemedyState {
    /// Nodes held.
    #[serde(default)]
    pub held: BTreeMap<String, Held>,
    /// Per node.
    #[serde(default)]
    pub history: BTreeMap<String, History>,
    /// The quarantine budget.
    #[serde(default)]
    pub budget: BudgetState,
    /// Nodes seen in samples (the budget's share is of these).
    #[serde(default)]
    pub known: BTreeSet<String>,
    /// Nodes the budget kept from being drained, with the alert that asked: drained when the
    /// budget is re-armed if still critical (the engine does not notify an unchanged group
    /// again before repeat_interval).
    #[serde(default)]
    pub refused: BTreeMap<String, Alert>,
}

/// An operator's command, through the journal beside the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// Re-arm the quarantine budget.
    BudgetReset,
    /// Let go of a node (after a person serviced it); ugro no longer holds it.
    Release {
        /// The node.
        node: String,
    },
}

/// Queues an operator command for the run that holds `alert_state` (or the next one).
pub fn enqueue(alert_state: &Path, cmd: &Command) -> Result<(), StateError> {
    journal::enqueue(&state_path(alert_state), cmd)
}

/// The controller of one slurm_drain receiver.
#[derive(Debug)]
pub struct Remedy {
    cfg: RemedyConfig,
    receiver: String,
    act: bool,
    st: RemedyState,
    lock: StateLock,
    pool: Pool,
    /// Nodes with a job in the pool.
    in_flight: BTreeSet<String>,
    /// Dry run: nodes whose plan was printed.
    noted: BTreeSet<String>,
    alerts: Vec<RemedyAlert>,
    changed: bool,
    /// PCI bus ids per GPU from each node's last critical sample, for `{pci_bus_id}` when
    /// the node is taken (its drain is decided after the sample).
    bus_ids: BTreeMap<String, BTreeMap<u32, String>>,
    /// In [`Remedy::finish`]: the receiver's drains have been delivered.
    finishing: bool,
    /// The longest a job may take.
    longest: Duration,
    /// With a lease: when each node's lease was last taken or renewed (record time), so
    /// that a node this replica verifies keeps its lease (`Job::Renew`).
    leased_at: BTreeMap<String, Timestamp>,
    /// The receiver's lease ttl, when it has a lease.
    lease_ttl: Option<Duration>,
}

/// Cuts a reason to what Slurm keeps.
fn fit(mut r: String) -> String {
    if r.len() > MAX_REASON_BYTES {
        let mut cut = MAX_REASON_BYTES;
        while !r.is_char_boundary(cut) {
            cut -= 1;
        }
        r.truncate(cut);
    }
    r
}

fn is_critical(a: &Alert) -> bool {
    a.labels.get("severity").map(String::as_str) == Some("critical")
}

fn within(now: Timestamp, t: Timestamp, window: Duration) -> bool {
    now.since(t) <= window
}

#[derive(Deserialize)]
struct Devices {
    #[serde(default)]
    gpu: Option<DeviceList>,
}

#[derive(Deserialize)]
struct DeviceList {
    #[serde(default)]
    devices: Vec<Device>,
}

#[derive(Deserialize)]
struct Device {
    index: u32,
    #[serde(default)]
    pci_bus_id: Option<String>,
}

/// The PCI bus ids of the GPUs in a sample line, by index.
fn bus_ids(line: &str) -> BTreeMap<u32, String> {
    let Ok(d) = serde_json::from_str::<Devices>(line) else {
        return BTreeMap::new();
    };
    d.gpu
        .map(|g| g.devices)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|d| Some((d.index, d.pci_bus_id?)))
        .collect()
}

impl Remedy {
    /// The controller for the first slurm_drain receiver with a `remediation:` section, if
    /// any; its state is `<alert_state>.remedy`, locked for the life of the run.
    pub fn open(
        cfg: &AlertConfig,
        alert_state: &Path,
        transport: Arc<dyn Transport>,
    ) -> Result<Option<Remedy>, StateError> {
        let Some((name, act, scontrol, timeout, env, rc, lease)) =
            cfg.receivers.values().find_map(|r| match &r.kind {
                ReceiverKind::SlurmDrain {
                    act,
                    scontrol,
                    timeout,
                    env,
                    remedy: Some(rc),
                    lease,
                } => Some((&r.name, *act, scontrol, timeout, env, rc, lease)),
                _ => None,
            })
        else {
            return Ok(None);
        };
        let lock = StateLock::acquire(&state_path(alert_state))?;
        let mut st: RemedyState = lock.read(STATE_FORMAT, STATE_VERSION)?.unwrap_or_default();
        // A run that ended (or died) with a job out: redo that step.
        for h in st.held.values_mut() {
            h.phase = match std::mem::replace(&mut h.phase, Phase::Running) {
                Phase::Running => Phase::Waiting { next: h.since },
                Phase::Resuming => Phase::Verifying {
                    since: h.since,
                    healthy: rc.healthy_polls,
                    remediated: false,
                },
                p => p,
            };
        }
        let sc = timeout.unwrap_or(cfg.delivery.timeout);
        // A remediation job asks scontrol twice around its program; a resume, twice after the
        // check; with a lease, up to five times more and the settle wait.
        let longest = match lease {
            Some(l) => rc.timeout.max(rc.check_timeout) + sc * 8 + l.settle,
            None => rc.timeout.max(rc.check_timeout) + sc * 3,
        };
        let runner = Runner {
            scontrol: scontrol.clone(),
            scontrol_timeout: timeout.unwrap_or(cfg.delivery.timeout),
            timeout: rc.timeout,
            check_timeout: rc.check_timeout,
            inherit: env.clone(),
            transport,
            lease: lease.clone(),
        };
        let pool =
            Pool::start(runner, rc.parallel, cfg.delivery.queue_size.max(1)).map_err(|source| {
                StateError::Io {
                    path: state_path(alert_state),
                    source,
                }
            })?;
        Ok(Some(Remedy {
            cfg: (**rc).clone(),
            receiver: name.clone(),
            act,
            st,
            lock,
            pool,
            in_flight: BTreeSet::new(),
            noted: BTreeSet::new(),
            alerts: Vec::new(),
            changed: false,
            bus_ids: BTreeMap::new(),
            finishing: false,
            longest,
            leased_at: BTreeMap::new(),
            lease_ttl: lease.as_ref().map(|l| l.ttl),
        }))
    }

    /// The receiver it serves.
    pub fn receiver(&self) -> &str {
        &self.receiver
    }

    /// The state (tests, status).
    pub fn state(&self) -> &RemedyState {
        &self.st
    }

    /// Jobs out in the pool (the depth of its queue and what runs).
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Alerts to fire or resolve, for the engine.
    pub fn take_alerts(&mut self) -> Vec<RemedyAlert> {
        std::mem::take(&mut self.alerts)
    }

    /// Writes the state file if it changed.
    pub fn save(&mut self) -> Result<(), StateError> {
        if self.changed {
            self.lock.write(STATE_FORMAT, STATE_VERSION, &self.st)?;
            self.changed = false;
        }
        Ok(())
    }

    /// A notification for the receiver, before it is queued: a firing critical alert of a
    /// node not yet held asks the budget; one it refuses is taken out (the node is not
    /// drained). Nodes let in are held from now on. Returns whether anything changed.
    pub fn admit(&mut self, n: &mut Notification, now: Timestamp) {
        let mut refused: BTreeSet<String> = BTreeSet::new();
        let mut firing: BTreeSet<String> = BTreeSet::new();
        // The alert the receiver would name in its reason (the most specific one).
        let nodes: Vec<(String, Alert)> = crate::deliver::slurm::nodes_of(n)
            .into_iter()
            .filter(|(_, f, _)| *f)
            .map(|(node, _, a)| (node.to_owned(), a.clone()))
            .collect();
        for (node, a) in nodes {
            firing.insert(node.clone());
            if self.st.held.contains_key(&node) {
                continue;
            }
            if !self.take(&node, &a, now) {
                refused.insert(node.clone());
                self.st.refused.insert(node, a);
            }
        }
        if !self.act {
            self.release_recovered(n, &firing);
        }
        if !refused.is_empty() {
            n.alerts
                .retain(|a| a.labels.get("node").is_none_or(|x| !refused.contains(x)));
        }
    }

    /// A dry run drains nothing, so a node whose alerts resolved is simply let go.
    fn release_recovered(&mut self, n: &Notification, firing: &BTreeSet<String>) {
        for a in n.alerts.iter().filter(|a| is_critical(a)) {
            if let Some(node) = a.labels.get("node")
                && a.status == AlertStatus::Resolved
                && !firing.contains(node)
                && self.st.held.remove(node).is_some()
            {
                self.noted.remove(node);
                self.changed = true;
            }
        }
    }

    /// Holds `node` for alert `a` if the budget lets it; false when it does not.
    fn take(&mut self, node: &str, a: &Alert, now: Timestamp) -> bool {
        let held: BTreeSet<String> = self.st.held.keys().cloned().collect();
        let verdict = self
            .st
            .budget
            .admit(&self.cfg.budget, node, &held, self.st.known.len(), now);
        self.changed = true;
        match verdict {
            Verdict::Drain => {}
            Verdict::Exhausted => {
                note(&format!(
                    "remedy: quarantine budget exhausted: {node} not drained (ugro-alert budget reset re-arms it)"
                ));
                return false;
            }
            Verdict::Trips { used, cap } => {
                note(&format!(
                    "remedy: quarantine budget exhausted ({used} of {cap} nodes held within {}): {node} and later faults not drained until ugro-alert budget reset",
                    humantime::format_duration(self.cfg.budget.window)
                ));
                self.budget_alert(node, used, cap);
                return false;
            }
        }
        let reason = drain_reason(node, a);
        let fault = reason
            .strip_prefix("ugro: ")
            .and_then(|r| r.split_once(": ").map(|x| x.0))
            .unwrap_or(&reason)
            .to_owned();
        let action = a
            .annotations
            .get("action")
            .and_then(|s| match s.as_str() {
                "hardware_inspection" => Some(Action::HardwareInspection),
                s => config::action_of(s),
            })
            .unwrap_or(Action::None);
        let gpu: Option<u32> = a.labels.get("gpu").and_then(|g| g.parse().ok());
        let pci_bus_id = gpu.and_then(|g| self.bus_ids.get(node)?.get(&g).cloned());
        let mut h = Held {
            phase: Phase::Waiting { next: now },
            fault,
            action,
            gpu,
            pci_bus_id,
            since: now,
            follows: None,
        };
        if let Some(why) = self.recurred(node, &h.fault, now) {
            h.phase = Phase::NeedsService { why };
        } else if action == Action::HardwareInspection {
            h.phase = Phase::NeedsService {
                why: "the recommended action is hardware_inspection".into(),
            };
        }
        let needs = matches!(h.phase, Phase::NeedsService { .. });
        self.st.held.insert(node.to_owned(), h);
        if needs {
            self.needs_service(node);
        }
        true
    }

    /// Why a fault that returned after enough remediations needs service.
    fn recurred(&self, node: &str, fault: &str, now: Timestamp) -> Option<String> {
        let h = self.st.history.get(node)?;
        let n = h
            .remediations
            .iter()
            .filter(|(t, f)| f == fault && within(now, *t, self.cfg.recurrence_window))
            .count();
        (n >= self.cfg.recurrences as usize).then(|| {
            format!(
                "returned after {n} remediations within {}",
                humantime::format_duration(self.cfg.recurrence_window)
            )
        })
    }

    fn budget_alert(&mut self, node: &str, used: usize, cap: usize) {
        let mut ann = BTreeMap::new();
        ann.insert(
            "summary".into(),
            format!("quarantine budget exhausted: {used} of {cap} nodes held; ugro drains no more"),
        );
        ann.insert(
            "description".into(),
            format!(
                "{node} was not drained. So many faults within {} may be a fleet problem (driver, cooling, a broken check). Look, then re-arm with: ugro-alert budget reset",
                humantime::format_duration(self.cfg.budget.window)
            ),
        );
        ann.insert("action".into(), "none".into());
        self.alerts.push(RemedyAlert {
            name: BUDGET_EXHAUSTED,
            node: None,
            severity: "critical",
            firing: true,
            annotations: ann,
        });
    }

    /// A sample: counts healthy polls of nodes being verified, and learns the PCI bus id of
    /// a held node's GPU.
    pub fn sample(&mut self, input: &Input<'_>, line: &str) {
        let rec = &input.record;
        let node = rec.node.as_ref();
        if !self.st.known.contains(node) {
            self.st.known.insert(node.to_owned());
            self.changed = true;
        }
        let critical = rec.score.as_ref().map(|s| s.state) == Some(HealthState::Critical);
        if !critical && self.st.refused.remove(node).is_some() {
            self.changed = true;
        }
        // Only critical samples can lead to a drain; parsing their devices is rare work.
        if critical {
            self.bus_ids.insert(node.to_owned(), bus_ids(line));
        }
        let Some(h) = self.st.held.get_mut(node) else {
            return;
        };
        if h.pci_bus_id.is_none()
            && let Some(g) = h.gpu
            && let Some(id) = self.bus_ids.get(node).and_then(|m| m.get(&g))
        {
            h.pci_bus_id = Some(id.clone());
        }
        if let Phase::Verifying { healthy, .. } = &mut h.phase {
            let ok = !rec.unreachable
                && rec.score.as_ref().map(|s| s.state) == Some(HealthState::Healthy);
            *healthy = if ok { *healthy + 1 } else { 0 };
            self.changed = true;
        }
    }

    /// Takes operator commands and outcomes, then starts what is due at `now`.
    pub fn advance(&mut self, now: Timestamp) {
        if journal::pending(self.lock.path()) {
            self.commands(now);
        }
        for (node, o) in self.pool.outcomes() {
            self.outcome(&node, o, now);
        }
        // A node taken at this very time was only just handed to the receiver to drain: it is
        // looked at from the next tick (or the end of the run, once drains are delivered), not
        // raced.
        let fresh = |h: &Held| h.since == now && matches!(h.phase, Phase::Waiting { .. });
        let due: Vec<String> = self
            .st
            .held
            .iter()
            .filter(|(n, h)| !self.in_flight.contains(*n) && (self.finishing || !fresh(h)))
            .map(|(n, _)| n.clone())
            .collect();
        for node in due {
            self.step(&node, now);
            self.renew(&node, now);
        }
    }

    /// A node this replica verifies (or waits to retry) runs no job for a while; its lease
    /// is renewed at a third of its ttl so that the other replica does not take it over.
    fn renew(&mut self, node: &str, now: Timestamp) {
        let Some(ttl) = self.lease_ttl else {
            return;
        };
        let Some(h) = self.st.held.get(node) else {
            return;
        };
        let quiet = matches!(h.phase, Phase::Verifying { .. } | Phase::Failed { .. });
        let recent = self
            .leased_at
            .get(node)
            .is_some_and(|t| now.since(*t) < ttl / 3);
        if !self.act || !quiet || h.follows.is_some() || self.in_flight.contains(node) || recent {
            return;
        }
        self.submit(node, now, Job::Renew);
    }

    /// The end of a run: steps as far as they go. A job out is waited for up to the longest
    /// it may take (remediation and check timeouts, and scontrol's), since a remediation the
    /// run walked away from would be started again by the next one.
    pub fn finish(&mut self, now: Timestamp) {
        let deadline = Instant::now() + self.longest;
        self.finishing = true;
        loop {
            self.advance(now);
            if self.in_flight.is_empty() {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.pool.wait(left) {
                Some((node, o)) => self.outcome(&node, o, now),
                None => {
                    tracing::warn!(
                        "remedy: {} job(s) still running at the end of the run; the next run redoes them",
                        self.in_flight.len()
                    );
                    return;
                }
            }
        }
    }

    fn commands(&mut self, now: Timestamp) {
        let cmds = match journal::take::<Command>(self.lock.path()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("remedy: operator commands not read: {e}");
                return;
            }
        };
        for c in cmds {
            self.changed = true;
            match c {
                Command::BudgetReset => {
                    note("remedy: quarantine budget re-armed (budget reset)");
                    let held: BTreeSet<String> = self.st.held.keys().cloned().collect();
                    self.st.budget.reset(&held);
                    self.alerts.push(RemedyAlert {
                        name: BUDGET_EXHAUSTED,
                        node: None,
                        severity: "critical",
                        firing: false,
                        annotations: BTreeMap::new(),
                    });
                    self.drain_refused(now);
                }
                Command::Release { node } => {
                    if self.st.held.remove(&node).is_some() {
                        note(&format!("remedy: {node} released by the operator"));
                    }
                    if let Some(h) = self.st.history.get_mut(&node) {
                        h.failures.clear();
                    }
                    self.resolve_needs_service(&node);
                }
            }
        }
    }

    /// After a reset: the nodes the budget spared that are still critical are drained now,
    /// as far as the budget lets them.
    fn drain_refused(&mut self, now: Timestamp) {
        for (node, a) in std::mem::take(&mut self.st.refused) {
            if self.st.held.contains_key(&node) || !self.take(&node, &a, now) {
                continue;
            }
            let reason = drain_reason(&node, &a);
            if !self.act {
                note(&format!(
                    "slurm_drain dry run (use --act): would drain {node}: {reason}"
                ));
                continue;
            }
            note(&format!("remedy: {node} drained after the budget reset"));
            self.submit(&node, now, Job::Reason(reason));
        }
    }

    fn resolve_needs_service(&mut self, node: &str) {
        self.alerts.push(RemedyAlert {
            name: NODE_NEEDS_SERVICE,
            node: Some(node.to_owned()),
            severity: "critical",
            firing: false,
            annotations: BTreeMap::new(),
        });
    }

    fn submit(&mut self, node: &str, now: Timestamp, job: Job) -> bool {
        let takeover = self
            .st
            .held
            .get(node)
            .and_then(|h| h.follows.as_ref())
            .map(|f| f.seen_drained);
        let ok = self.pool.submit(node, now, job, takeover);
        if ok {
            self.in_flight.insert(node.to_owned());
            self.leased_at.insert(node.to_owned(), now);
        }
        ok
    }

    fn values<'a>(
        &self,
        node: &'a str,
        h: &'a Held,
        gpu: &'a str,
    ) -> [(&'a str, Option<&'a str>); 4] {
        [
            ("node", Some(node)),
            ("gpu", h.gpu.map(|_| gpu)),
            ("pci_bus_id", h.pci_bus_id.as_deref()),
            ("action", Some(h.action.as_str())),
        ]
    }

    /// The remediation argv for a held node: None when its action has none configured;
    /// Err when a placeholder has no value (a GPU for a fault of the whole node).
    fn argv(&self, node: &str, h: &Held, t: &config::Template) -> Result<Vec<String>, String> {
        let gpu = h.gpu.map(|g| g.to_string()).unwrap_or_default();
        ugro_support::template::expand(&t.argv, &self.values(node, h, &gpu))
    }

    fn step(&mut self, node: &str, now: Timestamp) {
        let Some(h) = self.st.held.get(node).cloned() else {
            return;
        };
        if h.follows.as_ref().is_some_and(|f| now < f.next) {
            return;
        }
        match h.phase {
            Phase::Waiting { next } if now >= next => self.start(node, &h, now),
            Phase::Failed { retry_at } if now >= retry_at => {
                self.set_phase(node, Phase::Waiting { next: now });
                if let Some(h) = self.st.held.get(node).cloned() {
                    self.start(node, &h, now);
                }
            }
            Phase::Verifying {
                healthy,
                since,
                remediated,
            } => {
                if healthy >= self.cfg.healthy_polls {
                    self.resume(node, &h, now);
                } else if remediated && now.since(since) > self.cfg.verify_timeout {
                    let why = format!(
                        "not healthy for {} polls in a row within {} of the remediation",
                        self.cfg.healthy_polls,
                        humantime::format_duration(self.cfg.verify_timeout)
                    );
                    self.failed(node, now, why);
                }
            }
            _ => {}
        }
    }

    fn set_phase(&mut self, node: &str, p: Phase) {
        if let Some(h) = self.st.held.get_mut(node) {
            h.phase = p;
            self.changed = true;
        }
    }

    /// Starts the remediation of a waiting node (or its verification when its action has no
    /// argv).
    fn start(&mut self, node: &str, h: &Held, now: Timestamp) {
        let Some(t) = self.cfg.actions.get(&h.action).cloned() else {
            self.set_phase(
                node,
                Phase::Verifying {
                    since: now,
                    healthy: 0,
                    remediated: false,
                },
            );
            return;
        };
        let argv = match self.argv(node, h, &t) {
            Ok(a) => a,
            Err(e) => {
                self.failed(node, now, format!("remediation {}: {e}", h.action.as_str()));
                return;
            }
        };
        if !self.act {
            if self.noted.insert(node.to_owned()) {
                note(&format!(
                    "remedy dry run (use --act): once {node} is drained with no job, would run: {}; then resume it after {} healthy polls",
                    argv.join(" "),
                    self.cfg.healthy_polls
                ));
            }
            return;
        }
        let reason = fit(format!(
            "ugro: remedy {} running: {}",
            h.action.as_str(),
            h.fault
        ));
        if self.submit(node, now, Job::Remediate { argv, reason }) {
            self.set_phase(node, Phase::Running);
        }
    }

    fn resume(&mut self, node: &str, h: &Held, now: Timestamp) {
        let check = match &self.cfg.check {
            Some(t) => match self.argv(node, h, t) {
                Ok(a) => Some(a),
                Err(e) => {
                    self.failed(node, now, format!("verify.check: {e}"));
                    return;
                }
            },
            None => None,
        };
        if !self.act {
            note(&format!(
                "remedy dry run (use --act): {node} verified: would resume it"
            ));
            return;
        }
        if self.submit(node, now, Job::Resume { check }) {
            self.set_phase(node, Phase::Resuming);
        }
    }

    fn outcome(&mut self, node: &str, o: Outcome, now: Timestamp) {
        self.in_flight.remove(node);
        self.changed = true;
        let Some(h) = self.st.held.get(node).cloned() else {
            return;
        };
        let again = Phase::Waiting {
            next: now.add(self.cfg.poll_interval),
        };
        if let Some(f) = &h.follows
            && !matches!(o, Outcome::Leased(_) | Outcome::Error(_))
        {
            note(&format!(
                "remedy: {node}: the lease of replica {} expired: this replica takes the node over as Slurm shows it",
                f.holder
            ));
            if let Some(x) = self.st.held.get_mut(node) {
                x.follows = None;
            }
        }
        match o {
            Outcome::Leased(other) => self.follow(node, &h, other, now),
            Outcome::Found(f) => self.adopt(node, &h, f, now),
            Outcome::Renewed => {}
            Outcome::NotReady(why) => {
                tracing::info!("remedy: {node} not ready for remediation: {why}");
                if matches!(h.phase, Phase::Running) {
                    self.set_phase(node, again);
                }
            }
            Outcome::Error(e) => {
                tracing::warn!("remedy: {node}: {e}");
                match h.phase {
                    Phase::Running => self.set_phase(node, again),
                    Phase::Resuming => self.set_phase(
                        node,
                        Phase::Verifying {
                            since: h.since,
                            healthy: self.cfg.healthy_polls,
                            remediated: false,
                        },
                    ),
                    _ => {}
                }
            }
            Outcome::Released(why) => {
                note(&format!("remedy: {node} let go: {why}"));
                self.st.held.remove(node);
            }
            Outcome::Ran(rec) => self.ran(node, &h, rec, now),
            Outcome::ReasonSet => {}
            Outcome::CheckFailed(rec) => {
                let why = format!("check failed ({})", rec.brief());
                self.history(node).last_run = Some(rec);
                self.failed(node, now, why);
            }
            Outcome::Resumed(rec) => {
                note(&format!("remedy: {node} verified and resumed"));
                if let Some(r) = rec {
                    self.history(node).last_run = Some(r);
                }
                self.st.held.remove(node);
            }
        }
    }

    /// Another replica holds the node's lease: this one leaves the node to it, asks again
    /// after `poll_interval`, and lets go once that replica has resumed it.
    fn follow(&mut self, node: &str, h: &Held, o: worker::Other, now: Timestamp) {
        let drained = o.state.to_ascii_uppercase().contains("DRAIN");
        let seen = h.follows.as_ref().is_some_and(|f| f.seen_drained);
        if seen && !drained {
            note(&format!(
                "remedy: {node}: back in service (State={}) under the lease of replica {}: let go",
                o.state, o.holder
            ));
            self.st.held.remove(node);
            return;
        }
        if h.follows.as_ref().is_none_or(|f| f.holder != o.holder) {
            note(&format!(
                "remedy: {node}: replica {} holds its lease until {} (unix): the node is that replica's; this one does nothing to it and follows it (State={})",
                o.holder, o.until, o.state
            ));
        }
        let phase = match &h.phase {
            Phase::Running => Phase::Waiting {
                next: now.add(self.cfg.poll_interval),
            },
            Phase::Resuming => Phase::Verifying {
                since: h.since,
                healthy: self.cfg.healthy_polls,
                remediated: false,
            },
            p => p.clone(),
        };
        self.set_phase(node, phase);
        if let Some(x) = self.st.held.get_mut(node) {
            x.follows = Some(Follows {
                holder: o.holder,
                until: o.until,
                seen_drained: seen || drained,
                next: now.add(self.cfg.poll_interval),
            });
        }
    }

    /// The node's reason says where the replica before left it: carry on from there rather
    /// than remediate again.
    fn adopt(&mut self, node: &str, h: &Held, f: worker::Found, now: Timestamp) {
        match f {
            worker::Found::Verifying => {
                note(&format!(
                    "remedy: {node}: Slurm says another replica remediated it: verifying, not remediating again"
                ));
                self.remediated(node, &h.fault, now);
                self.verify_remediated(node, now);
            }
            worker::Found::Failed(why) => {
                note(&format!(
                    "remedy: {node}: Slurm says another replica's remediation failed ({why}): counted, retried after retry_after"
                ));
                self.fail(node, now, format!("on another replica: {why}"), false);
            }
            worker::Found::NeedsService(why) => {
                let why = why
                    .strip_prefix(&format!("{}: ", h.fault))
                    .unwrap_or(&why)
                    .to_owned();
                self.set_phase(node, Phase::NeedsService { why });
                self.needs_service(node);
            }
        }
    }

    fn history(&mut self, node: &str) -> &mut History {
        self.st.history.entry(node.to_owned()).or_default()
    }

    /// A remediation of `fault` at `now`, for the recurrence count.
    fn remediated(&mut self, node: &str, fault: &str, now: Timestamp) {
        let window = self.cfg.recurrence_window.max(self.cfg.failure_window);
        let hist = self.history(node);
        hist.remediations.retain(|(t, _)| within(now, *t, window));
        hist.remediations.push((now, fault.to_owned()));
    }

    fn verify_remediated(&mut self, node: &str, now: Timestamp) {
        self.set_phase(
            node,
            Phase::Verifying {
                since: now,
                healthy: 0,
                remediated: true,
            },
        );
    }

    fn ran(&mut self, node: &str, h: &Held, rec: RunRecord, now: Timestamp) {
        let ok = rec.ok();
        let brief = rec.brief();
        self.remediated(node, &h.fault, now);
        self.history(node).last_run = Some(rec);
        if !ok {
            self.failed(
                node,
                now,
                format!("remediation {} failed ({brief})", h.action.as_str()),
            );
            return;
        }
        note(&format!(
            "remedy: {node}: {} ran ({brief}); verifying",
            h.action.as_str()
        ));
        self.verify_remediated(node, now);
        let reason = fit(format!(
            "ugro: remedy {} verifying: {}",
            h.action.as_str(),
            h.fault
        ));
        self.submit(node, now, Job::Reason(reason));
    }

    /// A failed remediation or verification: drained with the reason updated, tried again
    /// after `retry_after`, or escalated.
    fn failed(&mut self, node: &str, now: Timestamp, why: String) {
        self.fail(node, now, why, true);
    }

    /// As [`Remedy::failed`]; `tell` false when Slurm's reason says so already (a failure
    /// found there, of another replica).
    fn fail(&mut self, node: &str, now: Timestamp, why: String, tell: bool) {
        let Some(h) = self.st.held.get(node).cloned() else {
            return;
        };
        let window = self.cfg.failure_window;
        let limit = self.cfg.failures as usize;
        let hist = self.history(node);
        hist.failures.retain(|t| within(now, *t, window));
        hist.failures.push(now);
        let count = hist.failures.len();
        note(&format!("remedy: {node}: {why}"));
        if count >= limit {
            let why = format!(
                "{count} failed remediations within {}: {why}",
                humantime::format_duration(window)
            );
            self.set_phase(node, Phase::NeedsService { why });
            self.needs_service(node);
            return;
        }
        self.set_phase(
            node,
            Phase::Failed {
                retry_at: now.add(self.cfg.retry_after),
            },
        );
        let reason = fit(format!(
            "ugro: remedy {} failed: {}: {why}",
            h.action.as_str(),
            h.fault
        ));
        if self.act && tell {
            self.submit(node, now, Job::Reason(reason));
        }
    }

    /// Escalation: the node stays drained for a person, and NodeNeedsService fires with the
    /// last program's output.
    fn needs_service(&mut self, node: &str) {
        let Some(h) = self.st.held.get(node).cloned() else {
            return;
        };
        let Phase::NeedsService { why } = &h.phase else {
            return;
        };
        let reason = fit(format!("ugro: needs service: {}: {why}", h.fault));
        note(&format!("remedy: {node} needs service: {why}"));
        if self.act {
            let now = h.since;
            self.submit(node, now, Job::Reason(reason));
        }
        let last = self.st.history.get(node).and_then(|x| x.last_run.as_ref());
        let mut desc = why.clone();
        if let Some(r) = last {
            desc.push_str(&format!(
                "\nlast run: {} ({})\n{}",
                r.argv.join(" "),
                r.brief(),
                r.output.trim_end()
            ));
        }
        let mut ann = BTreeMap::new();
        ann.insert(
            "summary".into(),
            format!("{node} needs service: {}", h.fault),
        );
        ann.insert("description".into(), desc);
        ann.insert("action".into(), Action::HardwareInspection.as_str().into());
        if let Some(r) = last {
            ann.insert("remediation_output".into(), r.output.clone());
        }
        self.alerts.push(RemedyAlert {
            name: NODE_NEEDS_SERVICE,
            node: Some(node.to_owned()),
            severity: "critical",
            firing: true,
            annotations: ann,
        });
    }
}

#[cfg(test)]
mod tests;
