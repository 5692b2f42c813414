//! Scoring one sample: the component rules, the hard-fail overrides and the state, action
//! and summary. GPU rules are in `crate::gpu`, XID rules in `crate::xid`, trends in
//! `crate::trends`; what is remembered between samples in `crate::history`.

use serde_json::Value;
use ugro_types::{
    Action, Component, Components, GpuScore, HealthState, Reason, ReasonCode, Sample, Score,
};

use crate::config::ScoreConfig;
use crate::gpu::gpu_component;
use crate::history::History;
use crate::output::Format;
use crate::policy::contains_ci;
use crate::state::StateStore;
use ugro_support::state::StateError;
use ugro_types::view::SampleView;

/// Builder helpers on [`Reason`] so each rule reads as one expression.
pub(crate) trait ReasonExt {
    fn gpu(self, i: Option<u32>) -> Self;
    fn value(self, v: impl Into<Value>) -> Self;
    fn threshold(self, v: impl Into<Value>) -> Self;
    fn fatal(self) -> Self;
    /// A prediction measured over `window`.
    fn predicted(self, window: String) -> Self;
}

impl ReasonExt for Reason {
    fn gpu(mut self, i: Option<u32>) -> Self {
        self.gpu = i;
        self
    }
    fn value(mut self, v: impl Into<Value>) -> Self {
        self.value = Some(v.into());
        self
    }
    fn threshold(mut self, v: impl Into<Value>) -> Self {
        self.threshold = Some(v.into());
        self
    }
    fn fatal(mut self) -> Self {
        self.fatal = true;
        self
    }
    fn predicted(mut self, window: String) -> Self {
        self.predicted = true;
        self.window = Some(window);
        self
    }
}

pub(crate) fn reason(
    code: ReasonCode,
    component: Component,
    action: Action,
    deduction: f64,
    message: String,
) -> Reason {
    Reason {
        code,
        component,
        gpu: None,
        value: None,
        threshold: None,
        deduction: round1(deduction),
        fatal: false,
        predicted: false,
        window: None,
        action,
        message,
    }
}

pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn pct(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        part / whole * 100.0
    } else {
        0.0
    }
}

/// Scores samples. Keeps per-node history (see `crate::history`: bounded by
/// `max_tracked_nodes` and `history.max_age`) so that rates, trends and XID windows can compare
/// with earlier samples; with a state file ([`Scorer::with_state`]) that history survives the
/// process.
#[derive(Debug)]
pub struct Scorer {
    pub(crate) cfg: ScoreConfig,
    pub(crate) history: History,
    pub(crate) state: Option<StateStore>,
    pub(crate) format: Format,
    pub(crate) worst: Option<HealthState>,
    pub(crate) samples: u64,
    pub(crate) header_done: bool,
    pub(crate) score_buf: Vec<u8>,
    pub(crate) out_buf: Vec<u8>,
    /// Nagios mode: the samples of this run, reported together at the end.
    pub(crate) checks: Vec<(String, Score)>,
    /// Nagios mode: samples beyond [`MAX_CHECKS`], counted but not kept.
    pub(crate) checks_dropped: u64,
}

/// A check run reports every node it saw; past this many only the counts are kept.
pub(crate) const MAX_CHECKS: usize = 10_000;

impl Scorer {
    /// A scorer with `cfg`.
    pub fn new(cfg: ScoreConfig) -> Scorer {
        Self::with_format(cfg, Format::Json)
    }

    /// A scorer whose [`ugro_types::stage::Stage`] output is `format` (JSON: the records with
    /// `score` added; nagios and table: text lines, other record kinds dropped).
    pub fn with_format(cfg: ScoreConfig, format: Format) -> Scorer {
        Scorer {
            cfg,
            history: History::default(),
            state: None,
            format,
            worst: None,
            samples: 0,
            header_done: false,
            score_buf: Vec::with_capacity(4096),
            out_buf: Vec::with_capacity(8192),
            checks: Vec::new(),
            checks_dropped: 0,
        }
    }

    /// A scorer whose history is kept in the state file `path` between runs (see
    /// `crate::state`): locked now (waiting for another run that holds it) and read, written at
    /// the end of input ([`ugro_types::stage::Stage::finish`], or when dropped) and, in a long
    /// run, every `history.persist_interval` by a writer thread.
    pub fn with_state(
        cfg: ScoreConfig,
        format: Format,
        path: &std::path::Path,
    ) -> Result<Scorer, StateError> {
        let (store, history) = StateStore::open(path, &cfg)?;
        let mut s = Self::with_format(cfg, format);
        s.history = history;
        s.state = Some(store);
        Ok(s)
    }

    /// Writes the history to the state file, if there is one, and waits for it.
    pub fn save_state(&mut self) -> Result<(), StateError> {
        match &mut self.state {
            Some(st) => st.close(&self.history, &self.cfg),
            None => Ok(()),
        }
    }

    /// Hands the state writer a snapshot when one is due (a long run).
    pub(crate) fn offer_state(&mut self) {
        if let Some(st) = &mut self.state {
            st.maybe_offer(&self.history, &self.cfg);
        }
    }

    /// The worst state scored so far (Monitoring Plugins order), `None` before any sample.
    pub fn worst(&self) -> Option<HealthState> {
        self.worst
    }

    /// Samples scored so far.
    pub fn samples(&self) -> u64 {
        self.samples
    }

    /// The configuration in use.
    pub fn config(&self) -> &ScoreConfig {
        &self.cfg
    }

    /// Nodes whose history is kept.
    pub fn tracked_nodes(&self) -> usize {
        self.history.nodes.len()
    }

    /// Scores one sample and updates the node's history.
    pub fn score_sample(&mut self, s: &Sample) -> Score {
        self.score_view(&SampleView::from_sample(s))
    }

    /// Scores the scorer's view of a sample (what the stage parses each line into).
    pub fn score_view(&mut self, s: &SampleView<'_>) -> Score {
        let mut reasons: Vec<Reason> = Vec::new();
        let mut missing = false;

        if let Some(u) = &s.unreachable {
            reasons.push(
                reason(
                    ReasonCode::NodeUnreachable,
                    Component::Network,
                    Action::CheckNetwork,
                    0.0,
                    format!("node unreachable ({}): {}", u.cause, u.message),
                )
                .value(u.cause.clone()),
            );
            return finish(&self.cfg, Components::default(), Vec::new(), reasons, true);
        }
        let Some(hist) = self.history.node(&s.node, self.cfg.max_tracked_nodes) else {
            return finish(&self.cfg, Components::default(), Vec::new(), reasons, true);
        };
        // A sample older than the last one seen (a replayed or merged stream) must not be
        // compared with newer history: rate rules skip it and the series are left alone.
        let in_order = s.ts >= hist.last_ts;
        if in_order {
            hist.last_ts = s.ts;
            if let Some(b) = s.host.as_ref().and_then(|h| h.boot_id.as_deref()) {
                hist.set_boot(b);
            }
        }

        let mut components = Components::default();
        let mut gpu_scores = Vec::new();
        components.gpu = gpu_component(
            &self.cfg,
            s,
            hist,
            in_order,
            &mut gpu_scores,
            &mut reasons,
            &mut missing,
        );
        components.system = match &s.host {
            Some(h) if host_has_readings(h) => Some(system_component(&self.cfg, h, &mut reasons)),
            _ => {
                section_missing(
                    s,
                    "host",
                    self.cfg.require.host,
                    Component::System,
                    &mut reasons,
                    &mut missing,
                );
                None
            }
        };
        components.network = match &s.network {
            Some(n) => Some(network_component(&self.cfg, n, &mut reasons)),
            None => {
                section_missing(
                    s,
                    "network",
                    self.cfg.require.network,
                    Component::Network,
                    &mut reasons,
                    &mut missing,
                );
                None
            }
        };
        components.process = match &s.processes {
            Some(p) => Some(process_component(&self.cfg, p, &mut reasons)),
            None => {
                section_missing(
                    s,
                    "processes",
                    self.cfg.require.process,
                    Component::Process,
                    &mut reasons,
                    &mut missing,
                );
                None
            }
        };
        finish(&self.cfg, components, gpu_scores, reasons, missing)
    }
}

impl Drop for Scorer {
    /// A run that stops early (closed stdout, an error) still keeps what it learned.
    fn drop(&mut self) {
        if let Err(e) = self.save_state() {
            tracing::warn!("{e}");
        }
    }
}

pub(crate) fn section_missing(
    s: &SampleView<'_>,
    collector: &str,
    required: bool,
    component: Component,
    reasons: &mut Vec<Reason>,
    missing: &mut bool,
) {
    let failed = s.errors.iter().find(|e| e.collector == collector);
    if !required && failed.is_none() {
        return;
    }
    let (present, code) = match collector {
        "host" => (s.host.is_some(), ReasonCode::HostDataMissing),
        "gpu" => (s.gpu.is_some(), ReasonCode::GpuDataMissing),
        "network" => (s.network.is_some(), ReasonCode::NetworkDataMissing),
        _ => (s.processes.is_some(), ReasonCode::ProcessesDataMissing),
    };
    let why = failed.map_or_else(
        || {
            if present {
                "the section has no readings"
            } else {
                "not in the sample"
            }
            .to_owned()
        },
        |e| format!("collector failed: {}", e.error),
    );
    reasons.push(reason(
        code,
        component,
        Action::CheckHost,
        0.0,
        format!("{collector} data missing: {why}"),
    ));
    if required {
        *missing = true;
    }
}

/// Whether a host section carries anything to score; an empty one counts as missing.
fn host_has_readings(h: &ugro_types::HostSection) -> bool {
    h.cpu_pct.is_some()
        || h.load.is_some()
        || h.memory_total_bytes.is_some()
        || h.memory_available_bytes.is_some()
        || h.swap_total_bytes.is_some()
        || !h.disks.is_empty()
}

fn system_component(
    cfg: &ScoreConfig,
    h: &ugro_types::HostSection,
    reasons: &mut Vec<Reason>,
) -> f64 {
    let r = &cfg.system;
    let first = reasons.len();
    let level = |v: f64, warn: f64, crit: f64| -> Option<(f64, f64)> {
        if v >= crit {
            Some((r.crit_deduction, crit))
        } else if v >= warn {
            Some((r.warn_deduction, warn))
        } else {
            None
        }
    };
    if let Some(c) = h.cpu_pct
        && c >= r.cpu_pct_warn
    {
        reasons.push(
            reason(
                ReasonCode::CpuSaturated,
                Component::System,
                Action::CheckHost,
                r.cpu_deduction,
                format!("CPU {c:.0}% busy"),
            )
            .value(round1(c))
            .threshold(r.cpu_pct_warn),
        );
    }
    if let (Some(total), Some(avail)) = (h.memory_total_bytes, h.memory_available_bytes)
        && total > 0
    {
        let p = pct(avail as f64, total as f64);
        let hit = if p < r.memory_available_crit_pct {
            Some((r.crit_deduction, r.memory_available_crit_pct))
        } else if p < r.memory_available_warn_pct {
            Some((r.warn_deduction, r.memory_available_warn_pct))
        } else {
            None
        };
        if let Some((ded, th)) = hit {
            reasons.push(
                reason(
                    ReasonCode::MemoryLow,
                    Component::System,
                    Action::CheckHost,
                    ded,
                    format!("{p:.1}% of memory available"),
                )
                .value(round1(p))
                .threshold(th),
            );
        }
    }
    if let (Some(total), Some(used)) = (h.swap_total_bytes, h.swap_used_bytes) {
        let p = pct(used as f64, total as f64);
        if total > 0 && p > r.swap_used_warn_pct {
            reasons.push(
                reason(
                    ReasonCode::SwapUsed,
                    Component::System,
                    Action::CheckHost,
                    r.warn_deduction,
                    format!("{p:.1}% of swap in use"),
                )
                .value(round1(p))
                .threshold(r.swap_used_warn_pct),
            );
        }
    }
    for d in &h.disks {
        if d.fstype
            .as_deref()
            .is_some_and(|f| r.ignore_fstypes.iter().any(|i| i == f))
        {
            continue;
        }
        // Like df's Use%: share of what users can have, not of the raw size.
        let usable = d.used_bytes.saturating_add(d.available_bytes);
        if usable > 0 {
            let p = pct(d.used_bytes as f64, usable as f64);
            if let Some((ded, th)) = level(p, r.disk_used_warn_pct, r.disk_used_crit_pct) {
                reasons.push(
                    reason(
                        ReasonCode::DiskFull,
                        Component::System,
                        Action::CheckHost,
                        ded,
                        format!("{} is {p:.1}% full", d.mount),
                    )
                    .value(round1(p))
                    .threshold(th),
                );
            }
        }
        if let Some(p) = d.inodes_used_pct
            && let Some((ded, th)) = level(p, r.disk_used_warn_pct, r.disk_used_crit_pct)
        {
            reasons.push(
                reason(
                    ReasonCode::InodesFull,
                    Component::System,
                    Action::CheckHost,
                    ded,
                    format!("{} has {p:.1}% of its inodes in use", d.mount),
                )
                .value(round1(p))
                .threshold(th),
            );
        }
    }
    if let (Some(load), Some(cpus)) = (h.load, h.cpus)
        && cpus > 0
    {
        // The 5-minute average: a data loader's burst should not flap the state.
        let per = load[1] / f64::from(cpus);
        let hit = if per > r.load_per_cpu_crit {
            Some((r.crit_deduction, r.load_per_cpu_crit))
        } else if per > r.load_per_cpu_warn {
            Some((r.warn_deduction, r.load_per_cpu_warn))
        } else {
            None
        };
        if let Some((ded, th)) = hit {
            reasons.push(
                reason(
                    ReasonCode::LoadHigh,
                    Component::System,
                    Action::CheckHost,
                    ded,
                    format!("5-minute load {:.1} per CPU", per),
                )
                .value((per * 100.0).round() / 100.0)
                .threshold(th),
            );
        }
    }
    component_score(&reasons[first..])
}

fn component_score(reasons: &[Reason]) -> f64 {
    let ded: f64 = reasons.iter().map(|r| r.deduction).sum();
    round1((100.0 - ded).clamp(0.0, 100.0))
}

fn name_matches(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => p == name,
    })
}

fn network_component(
    cfg: &ScoreConfig,
    n: &ugro_types::NetworkSection,
    reasons: &mut Vec<Reason>,
) -> f64 {
    let r = &cfg.network;
    let first = reasons.len();
    for i in &n.interfaces {
        let required = r.required_interfaces.iter().any(|x| x == &i.name);
        if !required && name_matches(&r.ignore_interfaces, &i.name) {
            continue;
        }
        let up = i.oper_state == "up" || (i.oper_state == "unknown" && i.carrier == Some(true));
        // Administratively down interfaces report no carrier at all (None): they are not in
        // use, so only a configured-up interface without link, or a required one, counts.
        let no_link = i.carrier == Some(false) || i.oper_state == "lowerlayerdown";
        if !up && (required || no_link) {
            reasons.push(
                reason(
                    ReasonCode::InterfaceDown,
                    Component::Network,
                    Action::CheckNetwork,
                    r.interface_deduction,
                    format!(
                        "interface {} is {}{}",
                        i.name,
                        i.oper_state,
                        if i.carrier == Some(false) {
                            ", no carrier"
                        } else {
                            ""
                        }
                    ),
                )
                .value(i.name.clone()),
            );
        }
    }
    for req in &r.required_interfaces {
        if !n.interfaces.iter().any(|i| &i.name == req) {
            reasons.push(
                reason(
                    ReasonCode::InterfaceMissing,
                    Component::Network,
                    Action::CheckNetwork,
                    r.interface_deduction,
                    format!("required interface {req} is not present"),
                )
                .value(req.clone()),
            );
        }
    }
    for p in &n.infiniband {
        // sysfs writes "4: ACTIVE" and "5: LinkUp"; tools may drop the number or the case.
        if contains_ci(&p.phys_state, "disabled") {
            continue;
        }
        let active = contains_ci(&p.state, "active");
        let link_up = contains_ci(&p.phys_state, "linkup");
        let port = || format!("{}:{}", p.device, p.port);
        if !active || !link_up {
            reasons.push(
                reason(
                    ReasonCode::IbPortDown,
                    Component::Network,
                    Action::CheckNetwork,
                    r.ib_port_deduction,
                    format!("InfiniBand {} is {} / {}", port(), p.state, p.phys_state),
                )
                .value(port()),
            );
        } else if let (Some(min), Some(rate)) = (r.ib_min_rate_gbps, p.rate_gbps)
            && rate < min
        {
            reasons.push(
                reason(
                    ReasonCode::IbRateLow,
                    Component::Network,
                    Action::CheckNetwork,
                    r.ib_rate_deduction,
                    format!("InfiniBand {} runs at {rate} Gb/s", port()),
                )
                .value(rate)
                .threshold(min),
            );
        }
    }
    for p in &n.peers {
        if !p.reachable {
            reasons.push(
                reason(
                    ReasonCode::PeerUnreachable,
                    Component::Network,
                    Action::CheckNetwork,
                    r.peer_unreachable_deduction,
                    format!(
                        "peer {} unreachable: {}",
                        p.target,
                        p.error.as_deref().unwrap_or("no error given")
                    ),
                )
                .value(p.target.clone()),
            );
        } else if let Some(ms) = p.latency_ms.filter(|&ms| ms > r.peer_latency_warn_ms) {
            reasons.push(
                reason(
                    ReasonCode::PeerLatencyHigh,
                    Component::Network,
                    Action::CheckNetwork,
                    r.peer_latency_deduction,
                    format!("peer {} answers in {ms:.1} ms", p.target),
                )
                .value(ms)
                .threshold(r.peer_latency_warn_ms),
            );
        }
    }
    component_score(&reasons[first..])
}

fn process_component(
    cfg: &ScoreConfig,
    p: &ugro_types::ProcessSection,
    reasons: &mut Vec<Reason>,
) -> f64 {
    let r = &cfg.process;
    let first = reasons.len();
    if let Some(z) = p.zombies.filter(|&z| z >= r.zombies_warn) {
        reasons.push(
            reason(
                ReasonCode::Zombies,
                Component::Process,
                Action::CheckHost,
                r.zombie_deduction,
                format!("{z} zombie processes"),
            )
            .value(z)
            .threshold(r.zombies_warn),
        );
    }
    if let Some(d) = p.d_state.filter(|&d| d >= r.d_state_warn) {
        reasons.push(
            reason(
                ReasonCode::DStateProcesses,
                Component::Process,
                Action::CheckHost,
                r.d_state_deduction,
                format!("{d} processes in uninterruptible sleep (D)"),
            )
            .value(d)
            .threshold(r.d_state_warn),
        );
    }
    for t in &p.training {
        match t.state.as_deref() {
            Some("D") => reasons.push(
                reason(
                    ReasonCode::TrainingProcessDState,
                    Component::Process,
                    Action::CheckHost,
                    r.training_d_deduction,
                    format!("training process {} ({}) is in D state", t.pid, t.command),
                )
                .value(t.pid),
            ),
            Some("Z") => reasons.push(
                reason(
                    ReasonCode::TrainingProcessZombie,
                    Component::Process,
                    Action::RestartApp,
                    r.training_zombie_deduction,
                    format!("training process {} ({}) is a zombie", t.pid, t.command),
                )
                .value(t.pid),
            ),
            _ => {}
        }
    }
    component_score(&reasons[first..])
}

/// Total, state, action and summary from the components and reasons.
fn finish(
    cfg: &ScoreConfig,
    components: Components,
    gpus: Vec<GpuScore>,
    mut reasons: Vec<Reason>,
    missing: bool,
) -> Score {
    let w = &cfg.weights;
    let present = [
        (components.gpu, w.gpu),
        (components.system, w.system),
        (components.network, w.network),
        (components.process, w.process),
    ];
    let (mut sum, mut wsum, mut min) = (0.0, 0.0, f64::INFINITY);
    let mut any = false;
    for (c, weight) in present {
        if let Some(c) = c {
            any = true;
            sum += c * weight;
            wsum += weight;
            min = min.min(c);
        }
    }
    let worst_gpu = gpus.iter().map(|g| g.score).fold(f64::INFINITY, f64::min);
    let fatal = reasons.iter().any(|r| r.fatal);
    let unknown = (missing || !any) && !fatal;
    let total = if unknown || !any {
        None
    } else if wsum > 0.0 {
        Some(round1(sum / wsum))
    } else {
        Some(round1(min))
    };
    let t = &cfg.thresholds;
    let state = if fatal {
        HealthState::Critical
    } else if unknown {
        HealthState::Unknown
    } else {
        let total = total.unwrap_or(0.0);
        if total < t.critical {
            HealthState::Critical
        } else if total < t.degraded || min < t.critical || worst_gpu < t.degraded {
            // A component in ruins, or one GPU that on its own would be degraded, degrades the
            // node however the weights and the other GPUs hide it: a collective job runs at the
            // pace of its slowest GPU.
            HealthState::Degraded
        } else {
            HealthState::Healthy
        }
    };
    if !any && !missing && !fatal {
        reasons.push(reason(
            ReasonCode::NoData,
            Component::System,
            Action::CheckHost,
            0.0,
            "the sample carries no section to score".into(),
        ));
    }
    // Most important first: what forces the state, then the most drastic action, then points.
    reasons.sort_by(|a, b| {
        b.fatal
            .cmp(&a.fatal)
            .then(b.action.cmp(&a.action))
            .then(b.deduction.total_cmp(&a.deduction))
    });
    let action = reasons.iter().map(|r| r.action).max().unwrap_or_default();
    let summary = summarize(state, total, &reasons);
    Score {
        total,
        state,
        action,
        components,
        gpus,
        reasons,
        summary,
    }
}

fn summarize(state: HealthState, total: Option<f64>, reasons: &[Reason]) -> String {
    let head = match total {
        Some(t) => format!("{} {t:.1}", state.as_str()),
        None => state.as_str().to_owned(),
    };
    match reasons.split_first() {
        None => format!("{head}: no deductions"),
        Some((top, [])) => format!("{head}: {}", top.message),
        Some((top, rest)) => format!("{head}: {} (+{} more)", top.message, rest.len()),
    }
}
