//! Scoring one sample: the rules, the per-GPU combination, the hard-fail overrides and the
//! little history (PCIe replay counters, XID events) the scorer keeps per node and GPU.

use std::collections::HashMap;

use serde_json::Value;
use ugro_types::{
    Action, Component, Components, DeviceState, GpuScore, GpuStatus, HealthState, Reason,
    ReasonCode, Sample, Score, Timestamp, Xid,
};

use crate::config::ScoreConfig;
use crate::output::Format;
use crate::policy::XidSeverity;
use ugro_types::view::{GpuView, SampleView};

/// Builder helpers on [`Reason`] so each rule reads as one expression.
trait ReasonExt {
    fn gpu(self, i: Option<u32>) -> Self;
    fn value(self, v: impl Into<Value>) -> Self;
    fn threshold(self, v: impl Into<Value>) -> Self;
    fn fatal(self) -> Self;
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
}

fn reason(
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
        action,
        message,
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn pct(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        part / whole * 100.0
    } else {
        0.0
    }
}

/// What the scorer remembers about one GPU between samples.
#[derive(Debug, Default)]
struct GpuHistory {
    replay: Option<u64>,
    /// XID code → (event time ms, events at that time), newest last.
    xids: HashMap<u32, Vec<(i64, u32)>>,
}

#[derive(Debug, Default)]
struct NodeHistory {
    last_ts: Timestamp,
    /// By GPU UUID (`#index` without one). A node has a handful of GPUs in a stable order, so
    /// a positional guess and a short scan beat hashing 40-byte UUIDs on every sample.
    gpus: Vec<(String, GpuHistory)>,
}

impl NodeHistory {
    fn gpu(&mut self, hint: usize, key: &str) -> &mut GpuHistory {
        let pos = match self.gpus.get(hint) {
            Some((k, _)) if k == key => Some(hint),
            _ => self.gpus.iter().position(|(k, _)| k == key),
        };
        let pos = pos.unwrap_or_else(|| {
            self.gpus.push((key.to_owned(), GpuHistory::default()));
            self.gpus.len() - 1
        });
        &mut self.gpus[pos].1
    }
}

/// Scores samples. Keeps per-node history (bounded by `max_tracked_nodes`, oldest evicted) so
/// that PCIe replay growth and XID count-in-window rules can compare with earlier samples.
#[derive(Debug)]
pub struct Scorer {
    pub(crate) cfg: ScoreConfig,
    nodes: HashMap<String, NodeHistory>,
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

/// The history key of the XIDs that could not be attached to a GPU.
const UNATTRIBUTED: &str = "unattributed";

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
            nodes: HashMap::new(),
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
        self.nodes.len()
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

        // Look up before inserting: the common case must not allocate the key.
        if !self.nodes.contains_key(s.node.as_ref()) {
            self.make_room();
            self.nodes
                .insert(s.node.clone().into_owned(), NodeHistory::default());
        }
        let Some(hist) = self.nodes.get_mut(s.node.as_ref()) else {
            return finish(&self.cfg, Components::default(), Vec::new(), reasons, true);
        };
        // A sample older than the last one seen (a replayed or merged stream) must not be
        // compared with newer history: growth rules skip it and the history is left alone.
        let in_order = s.ts >= hist.last_ts;
        if in_order {
            hist.last_ts = s.ts;
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

    /// Keeps the history map bounded: when full, forgets the least recently seen tenth.
    fn make_room(&mut self) {
        let cap = self.cfg.max_tracked_nodes.max(1);
        if self.nodes.len() < cap {
            return;
        }
        let mut ages: Vec<(Timestamp, String)> = self
            .nodes
            .iter()
            .map(|(k, v)| (v.last_ts, k.clone()))
            .collect();
        ages.sort_unstable();
        let drop = (cap / 10).max(1).min(ages.len());
        for (_, k) in ages.into_iter().take(drop) {
            self.nodes.remove(&k);
        }
    }
}

fn section_missing(
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

/// Whether a device carries anything to score: never "healthy" on no data.
fn gpu_has_readings(d: &GpuView<'_>) -> bool {
    d.state != DeviceState::Ok
        || d.utilization_pct.is_some()
        || d.temperature_c.is_some()
        || d.power_w.is_some()
        || d.throttle_reasons.is_some()
        || d.ecc.is_some()
        || d.remapped_rows.is_some()
        || d.pcie.is_some()
        || !d.xids.is_empty()
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

/// Combines per-GPU scores, dominated by the worst GPU.
pub fn combine_gpus(scores: &[f64], worst_weight: f64) -> Option<f64> {
    if scores.is_empty() {
        return None;
    }
    let min = scores.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = scores.iter().sum::<f64>() / scores.len() as f64;
    Some(worst_weight * min + (1.0 - worst_weight) * mean)
}

fn gpu_component(
    cfg: &ScoreConfig,
    s: &SampleView<'_>,
    hist: &mut NodeHistory,
    in_order: bool,
    gpu_scores: &mut Vec<GpuScore>,
    reasons: &mut Vec<Reason>,
    missing: &mut bool,
) -> Option<f64> {
    let Some(g) = &s.gpu else {
        section_missing(s, "gpu", cfg.require.gpu, Component::Gpu, reasons, missing);
        return None;
    };
    let mut scores: Vec<f64> = Vec::with_capacity(g.devices.len());
    match g.status {
        GpuStatus::Absent => {
            if cfg.require.gpu {
                *missing = true;
                reasons.push(reason(
                    ReasonCode::GpuAbsent,
                    Component::Gpu,
                    Action::CheckHost,
                    0.0,
                    format!(
                        "no NVML on this host: {}",
                        g.reason.as_deref().unwrap_or("no reason given")
                    ),
                ));
            }
            return None;
        }
        GpuStatus::Failed => {
            reasons.push(
                reason(
                    ReasonCode::NvmlFailed,
                    Component::Gpu,
                    Action::Reboot,
                    100.0,
                    format!(
                        "NVML failed: {}",
                        g.reason.as_deref().unwrap_or("no reason given")
                    ),
                )
                .fatal(),
            );
            scores.push(0.0);
        }
        GpuStatus::Missing => {
            let found = g.found.unwrap_or(g.devices.len() as u32);
            let mut r = reason(
                ReasonCode::GpuMissing,
                Component::Gpu,
                Action::Reboot,
                100.0,
                format!(
                    "{found} GPUs visible, {} expected",
                    g.expected
                        .map_or_else(|| "more".to_owned(), |e| e.to_string())
                ),
            )
            .value(found)
            .fatal();
            if let Some(e) = g.expected {
                r = r.threshold(e);
                // A GPU that is not there counts as a GPU scoring 0.
                scores.extend(std::iter::repeat_n(0.0, e.saturating_sub(found) as usize));
            } else {
                scores.push(0.0);
            }
            reasons.push(r);
        }
        GpuStatus::Ok => {
            // Devices listed with no reading at all would score 100 on nothing: missing data.
            if !g.devices.is_empty() && !g.devices.iter().any(gpu_has_readings) {
                if cfg.require.gpu {
                    *missing = true;
                    reasons.push(reason(
                        ReasonCode::GpuNoReadings,
                        Component::Gpu,
                        Action::CheckHost,
                        0.0,
                        "the GPU section lists devices but no readings".into(),
                    ));
                }
                return None;
            }
            if g.devices.is_empty() {
                if cfg.require.gpu {
                    *missing = true;
                    reasons.push(reason(
                        ReasonCode::GpuNone,
                        Component::Gpu,
                        Action::CheckHost,
                        0.0,
                        "NVML reports no GPUs".into(),
                    ));
                }
                return None;
            }
        }
    }
    for (pos, d) in g.devices.iter().enumerate() {
        let index_key;
        let key = match &d.uuid {
            Some(u) => u.as_ref(),
            None => {
                index_key = format!("#{}", d.index);
                index_key.as_str()
            }
        };
        let gh = hist.gpu(pos, key);
        let score = score_gpu(cfg, s.ts, d, gh, in_order, reasons);
        gpu_scores.push(GpuScore {
            index: d.index,
            score: round1(score),
        });
        scores.push(score);
    }
    let mut comp = combine_gpus(&scores, cfg.gpu.worst_weight)?;
    if !g.unattributed_xids.is_empty() {
        let gh = hist.gpu(usize::MAX, UNATTRIBUTED);
        let (ded, _) = xid_reasons(cfg, s.ts, None, &g.unattributed_xids, gh, reasons);
        comp -= ded;
    }
    Some(round1(comp.clamp(0.0, 100.0)))
}

/// One GPU's score (0–100) and its reasons.
fn score_gpu(
    cfg: &ScoreConfig,
    now: Timestamp,
    d: &GpuView<'_>,
    hist: &mut GpuHistory,
    in_order: bool,
    reasons: &mut Vec<Reason>,
) -> f64 {
    let r = &cfg.gpu;
    let idx = Some(d.index);
    let first = reasons.len();
    match d.state {
        DeviceState::Ok => {}
        DeviceState::Lost => {
            reasons.push(
                reason(
                    ReasonCode::GpuLost,
                    Component::Gpu,
                    Action::Reboot,
                    100.0,
                    format!("GPU {}: lost (fallen off the bus)", d.index),
                )
                .gpu(idx)
                .fatal(),
            );
            // XIDs (79 typically) still say why.
            xid_reasons(cfg, now, idx, &d.xids, hist, reasons);
            return 0.0;
        }
        DeviceState::Error => {
            reasons.push(
                reason(
                    ReasonCode::GpuError,
                    Component::Gpu,
                    Action::ResetGpu,
                    100.0,
                    format!("GPU {}: NVML cannot query it", d.index),
                )
                .gpu(idx)
                .fatal(),
            );
            xid_reasons(cfg, now, idx, &d.xids, hist, reasons);
            return 0.0;
        }
    }
    let busy = d.utilization_pct.map(|u| u >= r.busy_utilization_pct);

    if let Some(t) = d.temperature_c {
        let t = f64::from(t);
        let slow = d
            .temperature_slowdown_c
            .map_or(r.temperature_slowdown_default_c, f64::from);
        let margin = slow - t;
        if margin < r.temperature_margin_c {
            let frac = if r.temperature_margin_c > 0.0 {
                ((r.temperature_margin_c - margin) / r.temperature_margin_c).clamp(0.0, 1.0)
            } else {
                1.0
            };
            reasons.push(
                reason(
                    ReasonCode::GpuTemperatureHigh,
                    Component::Gpu,
                    Action::CheckHost,
                    frac * r.temperature_deduction,
                    format!(
                        "GPU {}: {t} C is {margin} C from its slowdown temperature {slow} C",
                        d.index
                    ),
                )
                .gpu(idx)
                .value(t)
                .threshold(slow),
            );
        }
    }

    if let (Some(p), Some(limit)) = (d.power_w, d.power_limit_w) {
        let max = limit * (1.0 + r.power_over_limit_pct / 100.0);
        if limit > 0.0 && p > max {
            reasons.push(
                reason(
                    ReasonCode::GpuPowerOverLimit,
                    Component::Gpu,
                    Action::CheckHost,
                    r.power_deduction,
                    format!("GPU {}: drawing {p} W over its {limit} W limit", d.index),
                )
                .gpu(idx)
                .value(p)
                .threshold(limit),
            );
        }
    }

    if let Some(tr) = &d.throttle_reasons {
        let hw: Vec<&str> = tr
            .iter()
            .map(AsRef::as_ref)
            .filter(|t| {
                matches!(
                    *t,
                    "hw_slowdown" | "hw_thermal_slowdown" | "hw_power_brake_slowdown"
                )
            })
            .collect();
        if !hw.is_empty() {
            // hw_slowdown is reported together with its cause: one deduction for the group.
            reasons.push(
                reason(
                    ReasonCode::GpuHwSlowdown,
                    Component::Gpu,
                    Action::CheckHost,
                    r.hw_throttle_deduction,
                    format!("GPU {}: hardware slowdown ({})", d.index, hw.join(", ")),
                )
                .gpu(idx)
                .value(hw.join(",")),
            );
        }
        if tr.iter().any(|t| t == "sw_thermal_slowdown") {
            reasons.push(
                reason(
                    ReasonCode::GpuSwThermalSlowdown,
                    Component::Gpu,
                    Action::CheckHost,
                    r.sw_thermal_deduction,
                    format!("GPU {}: software thermal slowdown", d.index),
                )
                .gpu(idx)
                .value("sw_thermal_slowdown"),
            );
        }
        // At high utilisation the SW power cap is the GPU running at its power limit: normal.
        if tr.iter().any(|t| t == "sw_power_cap") && busy == Some(false) {
            reasons.push(
                reason(
                    ReasonCode::GpuPowerCappedIdle,
                    Component::Gpu,
                    Action::CheckHost,
                    r.sw_power_cap_idle_deduction,
                    format!(
                        "GPU {}: power-capped at {}% utilisation",
                        d.index,
                        d.utilization_pct.unwrap_or(0)
                    ),
                )
                .gpu(idx)
                .value(d.utilization_pct.unwrap_or(0))
                .threshold(r.busy_utilization_pct),
            );
        }
    }

    if let Some(ecc) = &d.ecc {
        if let Some(n) = ecc.uncorrected_volatile.filter(|&n| n > 0) {
            reasons.push(
                reason(
                    ReasonCode::EccUncorrectedVolatile,
                    Component::Gpu,
                    Action::ResetGpu,
                    100.0,
                    format!(
                        "GPU {}: {n} uncorrected ECC errors since driver load",
                        d.index
                    ),
                )
                .gpu(idx)
                .value(n)
                .threshold(0)
                .fatal(),
            );
        } else if let Some(n) = ecc.uncorrected_aggregate.filter(|&n| n > 0) {
            reasons.push(
                reason(
                    ReasonCode::EccUncorrectedAggregate,
                    Component::Gpu,
                    Action::None,
                    r.ecc_aggregate_deduction,
                    format!("GPU {}: {n} uncorrected ECC errors over its life", d.index),
                )
                .gpu(idx)
                .value(n)
                .threshold(0),
            );
        }
    }

    if let Some(rr) = &d.remapped_rows {
        if rr.failure == Some(true) {
            reasons.push(
                reason(
                    ReasonCode::RowRemapFailure,
                    Component::Gpu,
                    Action::HardwareInspection,
                    100.0,
                    format!(
                        "GPU {}: row remapping failed: the GPU needs service",
                        d.index
                    ),
                )
                .gpu(idx)
                .value(true)
                .fatal(),
            );
        }
        if rr.pending == Some(true) {
            reasons.push(
                reason(
                    ReasonCode::RowRemapPending,
                    Component::Gpu,
                    Action::Reboot,
                    r.remap_pending_deduction,
                    format!(
                        "GPU {}: row remap pending: a GPU reset or reboot applies it",
                        d.index
                    ),
                )
                .gpu(idx)
                .value(true),
            );
        }
    }

    if let Some(pcie) = &d.pcie {
        if busy == Some(true) {
            if let (Some(g), Some(max)) = (pcie.generation, pcie.max_gen)
                && g < max
            {
                reasons.push(
                    reason(
                        ReasonCode::PcieGenLow,
                        Component::Gpu,
                        Action::CheckHost,
                        r.pcie_gen_deduction,
                        format!("GPU {}: PCIe gen {g} of {max} while busy", d.index),
                    )
                    .gpu(idx)
                    .value(g)
                    .threshold(max),
                );
            }
            if let (Some(w), Some(max)) = (pcie.width, pcie.max_width)
                && w < max
            {
                reasons.push(
                    reason(
                        ReasonCode::PcieWidthLow,
                        Component::Gpu,
                        Action::HardwareInspection,
                        r.pcie_width_deduction,
                        format!("GPU {}: PCIe x{w} of x{max} while busy", d.index),
                    )
                    .gpu(idx)
                    .value(w)
                    .threshold(max),
                );
            }
        }
        if let Some(now_count) = pcie.replay_counter
            && in_order
        {
            if let Some(prev) = hist.replay {
                // A smaller counter means the driver reloaded: a new baseline, no growth.
                let growth = now_count.saturating_sub(prev);
                if growth > 0 {
                    let high = growth >= r.replay_high_growth;
                    reasons.push(
                            reason(
                                ReasonCode::PcieReplayGrowth,
                                Component::Gpu,
                                if high {
                                    Action::HardwareInspection
                                } else {
                                    Action::CheckHost
                                },
                                if high {
                                    r.replay_high_deduction
                                } else {
                                    r.replay_growth_deduction
                                },
                                format!(
                                    "GPU {}: PCIe replay counter grew by {growth} since the previous sample",
                                    d.index
                                ),
                            )
                            .gpu(idx)
                            .value(growth)
                            .threshold(if high { r.replay_high_growth } else { 1 }),
                        );
                }
            }
            hist.replay = Some(now_count);
        }
    }

    xid_reasons(cfg, now, idx, &d.xids, hist, reasons);
    let mut fatal = false;
    let mut total = 0.0;
    for rr in &reasons[first..] {
        fatal |= rr.fatal;
        total += rr.deduction;
    }
    if fatal {
        0.0
    } else {
        (100.0 - total).clamp(0.0, 100.0)
    }
}

/// Reasons for a set of XIDs, one per code; returns the summed deduction and whether any is fatal.
fn xid_reasons(
    cfg: &ScoreConfig,
    now: Timestamp,
    gpu: Option<u32>,
    xids: &[Xid],
    hist: &mut GpuHistory,
    reasons: &mut Vec<Reason>,
) -> (f64, bool) {
    if xids.is_empty() {
        return (0.0, false);
    }
    let mut codes: Vec<u32> = xids.iter().map(|x| x.code).collect();
    codes.sort_unstable();
    codes.dedup();
    let mut total = 0.0;
    let mut any_fatal = false;
    for code in codes {
        let (rule, listed) = cfg.policy.rule(code);
        let here: Vec<&Xid> = xids.iter().filter(|x| x.code == code).collect();
        let mut severity = rule.severity;
        let mut action = rule.action;
        let mut deduction = rule.deduction;
        let mut escalated = None;
        if let Some(esc) = &rule.escalate {
            let events = hist.xids.entry(code).or_default();
            // Group this sample's events by time; the probe's lookback repeats an event in
            // consecutive samples, so a time already stored keeps the larger count, not the sum.
            // An event without a time (a replayed log line) cannot be matched with its repeats
            // in later samples, so it is not remembered: it counts only within this sample.
            let untimed = here.iter().filter(|x| x.ts.is_none()).count();
            let mut by_ts: Vec<(i64, u32)> = Vec::new();
            for x in here.iter().filter_map(|x| x.ts) {
                let t = x.millis();
                match by_ts.iter_mut().find(|(ts, _)| *ts == t) {
                    Some(e) => e.1 += 1,
                    None => by_ts.push((t, 1)),
                }
            }
            for (t, n) in by_ts {
                match events.iter_mut().find(|(ts, _)| *ts == t) {
                    Some(e) => e.1 = e.1.max(n),
                    None => events.push((t, n)),
                }
            }
            let window_start = now.sub(esc.window).millis();
            events.retain(|(t, _)| *t >= window_start);
            if events.len() > 1024 {
                events.sort_unstable();
                let excess = events.len() - 1024;
                events.drain(..excess);
            }
            let count: u32 = events.iter().map(|(_, n)| *n).sum::<u32>()
                + u32::try_from(untimed).unwrap_or(u32::MAX);
            if count >= esc.count {
                if let Some(s) = esc.severity {
                    severity = s;
                }
                if let Some(a) = esc.action {
                    action = a;
                }
                escalated = Some((count, esc.window, esc.count));
            }
        }
        let fatal = severity == XidSeverity::Fatal;
        if fatal {
            deduction = deduction.max(100.0);
        }
        any_fatal |= fatal;
        total += deduction;
        let on = gpu.map_or_else(|| "unattributed GPU".to_owned(), |i| format!("GPU {i}"));
        let mut message = format!(
            "{on}: XID {code} ({}){}",
            rule.meaning,
            if listed { "" } else { ", not in the policy" }
        );
        if here.len() > 1 {
            message.push_str(&format!(", {} events", here.len()));
        }
        let code_name = match severity {
            XidSeverity::Fatal => ReasonCode::XidFatal,
            XidSeverity::Warning => ReasonCode::XidWarning,
            XidSeverity::Application => ReasonCode::XidApplication,
        };
        let mut r = reason(code_name, Component::Gpu, action, deduction, message)
            .gpu(gpu)
            .value(code);
        if let Some((count, window, threshold)) = escalated {
            r.message.push_str(&format!(
                "; seen {count} times in {} (escalation at {threshold})",
                humantime::format_duration(window)
            ));
            r = r.threshold(threshold);
        }
        if fatal {
            r = r.fatal();
        }
        reasons.push(r);
    }
    (total, any_fatal)
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

fn contains_ci(hay: &str, needle: &str) -> bool {
    hay.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
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
