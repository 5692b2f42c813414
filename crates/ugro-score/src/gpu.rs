//! The GPU component: the section's status, the node's GPU count against the PCI bus and its
//! own history, and each GPU's rules (temperature, power, throttling, ECC, row remapping,
//! PCIe, the driver's recovery action, XIDs, trends).

use ugro_types::view::{GpuSectionView, GpuView, SampleView, ThrottleReasons};
use ugro_types::{
    Action, Component, DeviceState, GpuScore, GpuStatus, Reason, ReasonCode, RecoveryAction,
    Timestamp, Xid,
};

use crate::config::ScoreConfig;
use crate::history::{GpuHistory, NodeHistory};
use crate::scorer::{ReasonExt, reason, round1, section_missing};
use crate::trends::trend_reasons;
use crate::xid::{XidScope, xid_reasons};

/// The history key of the XIDs that could not be attached to a GPU.
const UNATTRIBUTED: &str = "unattributed";

/// Whether a device carries anything to score: never "healthy" on no data.
fn gpu_has_readings(d: &GpuView<'_>) -> bool {
    d.state != DeviceState::Ok
        || d.utilization_pct.is_some()
        || d.temperature_c.is_some()
        || d.power_w.is_some()
        || d.throttle_reasons.is_some()
        || d.ecc.is_some()
        || d.remapped_rows.is_some()
        || d.recovery_action.is_some()
        || d.pcie.is_some()
        || !d.xids.is_empty()
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

fn why<'a>(g: &'a GpuSectionView<'_>) -> &'a str {
    g.reason.as_deref().unwrap_or("no reason given")
}

/// The GPU component score, `None` when the section is absent or has nothing to score.
pub(crate) fn gpu_component(
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
    if !status_rules(cfg, g, &mut scores, reasons, missing) {
        return None;
    }
    if g.status != GpuStatus::Failed {
        count_rules(cfg, s.ts, g, hist, in_order, &mut scores, reasons);
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
        let boots = xid_boots(hist, &d.xids);
        let gh = hist.gpu(pos, key);
        if in_order {
            gh.seen = s.ts.millis();
        }
        let score = score_gpu(cfg, s.ts, d, gh, in_order, &boots, reasons);
        gpu_scores.push(GpuScore {
            index: d.index,
            score: round1(score),
        });
        scores.push(score);
    }
    let mut comp = combine_gpus(&scores, cfg.gpu.worst_weight)?;
    if !g.unattributed_xids.is_empty() {
        let boots = xid_boots(hist, &g.unattributed_xids);
        let gh = hist.gpu(usize::MAX, UNATTRIBUTED);
        let scope = XidScope {
            cfg,
            now: s.ts,
            gpu: None,
            remaps: false,
            boots: &boots,
        };
        let (ded, _) = xid_reasons(&scope, &g.unattributed_xids, gh, reasons);
        comp -= ded;
    }
    Some(round1(comp.clamp(0.0, 100.0)))
}

/// Each XID's boot serial: its own boot id's, else the node's current boot (0 unknown).
fn xid_boots(hist: &mut NodeHistory, xids: &[Xid]) -> Vec<u32> {
    xids.iter()
        .map(|x| match x.boot_id.as_deref() {
            Some(b) => hist.boot_serial(b),
            None => hist.boot,
        })
        .collect()
}

/// The section's status; `false` when the component has nothing to score.
fn status_rules(
    cfg: &ScoreConfig,
    g: &GpuSectionView<'_>,
    scores: &mut Vec<f64>,
    reasons: &mut Vec<Reason>,
    missing: &mut bool,
) -> bool {
    match g.status {
        GpuStatus::Absent => {
            // GPUs on the bus but no NVML: a GPU node with a broken driver, not a CPU node.
            if let Some(n) = g.pci_devices.filter(|&n| n > 0) {
                reasons.push(missing_from_nvml(
                    n,
                    0,
                    format!("NVML is absent: {}", why(g)),
                ));
            }
            let msg = format!("no NVML on this host: {}", why(g));
            absent(cfg, reasons, missing, ReasonCode::GpuAbsent, msg)
        }
        GpuStatus::Failed => {
            reasons.push(
                reason(
                    ReasonCode::NvmlFailed,
                    Component::Gpu,
                    Action::Reboot,
                    100.0,
                    format!("NVML failed: {}", why(g)),
                )
                .fatal(),
            );
            scores.push(0.0);
            true
        }
        GpuStatus::Missing => {
            reasons.push(expected_missing(g, scores));
            true
        }
        // Devices listed with no reading at all would score 100 on nothing: missing data.
        GpuStatus::Ok if g.devices.is_empty() => absent(
            cfg,
            reasons,
            missing,
            ReasonCode::GpuNone,
            "NVML reports no GPUs".into(),
        ),
        GpuStatus::Ok if !g.devices.iter().any(gpu_has_readings) => absent(
            cfg,
            reasons,
            missing,
            ReasonCode::GpuNoReadings,
            "the GPU section lists devices but no readings".into(),
        ),
        GpuStatus::Ok => true,
    }
}

/// A required section with nothing to score: the state is unknown. Returns `false`.
fn absent(
    cfg: &ScoreConfig,
    reasons: &mut Vec<Reason>,
    missing: &mut bool,
    code: ReasonCode,
    message: String,
) -> bool {
    if cfg.require.gpu {
        *missing = true;
        reasons.push(reason(
            code,
            Component::Gpu,
            Action::CheckHost,
            0.0,
            message,
        ));
    }
    false
}

fn expected_missing(g: &GpuSectionView<'_>, scores: &mut Vec<f64>) -> Reason {
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
    r
}

fn missing_from_nvml(pci: u32, found: u32, why: String) -> Reason {
    reason(
        ReasonCode::GpuMissingFromNvml,
        Component::Gpu,
        Action::Reboot,
        100.0,
        format!("{pci} NVIDIA GPUs on the PCI bus, {found} in NVML: {why}"),
    )
    .value(found)
    .threshold(pci)
    .fatal()
}

/// The GPU count against the PCI bus (gpud's check) and against the most this node showed
/// within `history.gpu_count_window`, which needs no `expected_gpus`.
fn count_rules(
    cfg: &ScoreConfig,
    now: Timestamp,
    g: &GpuSectionView<'_>,
    hist: &mut NodeHistory,
    in_order: bool,
    scores: &mut Vec<f64>,
    reasons: &mut Vec<Reason>,
) {
    let found = g.found.unwrap_or(g.devices.len() as u32);
    let ok = g.status == GpuStatus::Ok;
    let mut flagged = false;
    if let Some(pci) = g.pci_devices.filter(|&p| p > found) {
        reasons.push(missing_from_nvml(
            pci,
            found,
            "a GPU fell off the bus or out of the driver".into(),
        ));
        if ok {
            scores.extend(std::iter::repeat_n(0.0, (pci - found) as usize));
        }
        flagged = true;
    }
    if !in_order {
        return;
    }
    let window_start = now.sub(cfg.history.gpu_count_window);
    match hist.max_gpus {
        Some((max, seen)) if found < max && seen >= window_start => {
            if ok && !flagged {
                reasons.push(
                    reason(
                        ReasonCode::GpuMissingSinceSeen,
                        Component::Gpu,
                        Action::Reboot,
                        100.0,
                        format!(
                            "{found} GPUs visible, {max} on this node at {seen} (within {})",
                            humantime::format_duration(cfg.history.gpu_count_window)
                        ),
                    )
                    .value(found)
                    .threshold(max)
                    .fatal(),
                );
                scores.extend(std::iter::repeat_n(0.0, (max - found) as usize));
            }
        }
        _ => hist.max_gpus = Some((found, now)),
    }
}

/// One GPU's score (0–100) and its reasons.
fn score_gpu(
    cfg: &ScoreConfig,
    now: Timestamp,
    d: &GpuView<'_>,
    hist: &mut GpuHistory,
    in_order: bool,
    boots: &[u32],
    reasons: &mut Vec<Reason>,
) -> f64 {
    let first = reasons.len();
    let remaps = d
        .remapped_rows
        .is_some_and(|r| r.pending.is_some() || r.failure.is_some() || r.correctable.is_some());
    let scope = XidScope {
        cfg,
        now,
        gpu: Some(d.index),
        remaps,
        boots,
    };
    if let Some(r) = device_state(d) {
        reasons.push(r);
        // XIDs (79 typically) still say why.
        xid_reasons(&scope, &d.xids, hist, reasons);
        return 0.0;
    }
    temperature_and_power(cfg, d, reasons);
    throttling(cfg, d, reasons);
    ecc(cfg, d, reasons);
    row_remap(cfg, d, reasons);
    pcie_link(cfg, d, reasons);
    recovery_action(cfg, d, reasons);
    xid_reasons(&scope, &d.xids, hist, reasons);
    if in_order {
        trend_reasons(cfg, now.millis(), d, hist, reasons);
    }
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

fn device_state(d: &GpuView<'_>) -> Option<Reason> {
    let (code, action, what) = match d.state {
        DeviceState::Ok => return None,
        DeviceState::Lost => (
            ReasonCode::GpuLost,
            Action::Reboot,
            "lost (fallen off the bus)",
        ),
        DeviceState::Error => (
            ReasonCode::GpuError,
            Action::ResetGpu,
            "NVML cannot query it",
        ),
    };
    let msg = format!("GPU {}: {what}", d.index);
    Some(
        reason(code, Component::Gpu, action, 100.0, msg)
            .gpu(Some(d.index))
            .fatal(),
    )
}

fn temperature_and_power(cfg: &ScoreConfig, d: &GpuView<'_>, reasons: &mut Vec<Reason>) {
    let r = &cfg.gpu;
    let idx = Some(d.index);
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
}

fn busy(cfg: &ScoreConfig, d: &GpuView<'_>) -> Option<bool> {
    d.utilization_pct.map(|u| u >= cfg.gpu.busy_utilization_pct)
}

fn throttling(cfg: &ScoreConfig, d: &GpuView<'_>, reasons: &mut Vec<Reason>) {
    let r = &cfg.gpu;
    let idx = Some(d.index);
    let Some(tr) = d.throttle_reasons else {
        return;
    };
    let hw_bits = ThrottleReasons::HW_SLOWDOWN
        | ThrottleReasons::HW_THERMAL_SLOWDOWN
        | ThrottleReasons::HW_POWER_BRAKE_SLOWDOWN;
    if tr.any(hw_bits) {
        let hw: Vec<&str> = tr.names_of(hw_bits).collect();
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
    if tr.any(ThrottleReasons::SW_THERMAL_SLOWDOWN) {
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
    if tr.any(ThrottleReasons::SW_POWER_CAP) && busy(cfg, d) == Some(false) {
        let u = d.utilization_pct.unwrap_or(0);
        reasons.push(
            reason(
                ReasonCode::GpuPowerCappedIdle,
                Component::Gpu,
                Action::CheckHost,
                r.sw_power_cap_idle_deduction,
                format!("GPU {}: power-capped at {u}% utilisation", d.index),
            )
            .gpu(idx)
            .value(u)
            .threshold(r.busy_utilization_pct),
        );
    }
}

fn ecc(cfg: &ScoreConfig, d: &GpuView<'_>, reasons: &mut Vec<Reason>) {
    let r = &cfg.gpu;
    let idx = Some(d.index);
    let Some(ecc) = &d.ecc else { return };
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
    if let Some(n) = ecc
        .corrected_volatile
        .filter(|&n| n >= r.ecc_corrected_warn)
    {
        let high = n >= r.ecc_corrected_high;
        let (action, deduction, threshold) = if high {
            (
                Action::HardwareInspection,
                r.ecc_corrected_high_deduction,
                r.ecc_corrected_high,
            )
        } else {
            (
                Action::None,
                r.ecc_corrected_warn_deduction,
                r.ecc_corrected_warn,
            )
        };
        reasons.push(
            reason(
                ReasonCode::EccCorrectedVolatile,
                Component::Gpu,
                action,
                deduction,
                format!(
                    "GPU {}: {n} corrected ECC errors since driver load",
                    d.index
                ),
            )
            .gpu(idx)
            .value(n)
            .threshold(threshold),
        );
    }
}

fn row_remap(cfg: &ScoreConfig, d: &GpuView<'_>, reasons: &mut Vec<Reason>) {
    let idx = Some(d.index);
    let Some(rr) = &d.remapped_rows else { return };
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
                cfg.gpu.remap_pending_deduction,
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

fn pcie_link(cfg: &ScoreConfig, d: &GpuView<'_>, reasons: &mut Vec<Reason>) {
    let r = &cfg.gpu;
    let idx = Some(d.index);
    let Some(pcie) = &d.pcie else { return };
    if busy(cfg, d) != Some(true) {
        return;
    }
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

/// The driver's own verdict (NVML field 230), as DCGM's driver-health watch reads it: a reset,
/// a reboot or drain-and-reset is a hard fail (DCGM: FAIL), drain P2P degrades (DCGM: WARN).
/// Values this build does not name are judged by their number in newer NVML headers.
fn recovery_action(cfg: &ScoreConfig, d: &GpuView<'_>, reasons: &mut Vec<Reason>) {
    let Some(a) = d.recovery_action else { return };
    let p2p = cfg.gpu.recovery_drain_p2p_deduction;
    let (action, fatal, deduction, what) = match a {
        RecoveryAction::None => return,
        RecoveryAction::GpuReset => (Action::ResetGpu, true, 100.0, "a GPU reset"),
        RecoveryAction::NodeReboot => (Action::Reboot, true, 100.0, "a node reboot"),
        RecoveryAction::DrainAndReset => (
            Action::ResetGpu,
            true,
            100.0,
            "draining the work, then a GPU reset",
        ),
        RecoveryAction::DrainP2p => (
            Action::RestartApp,
            false,
            p2p,
            "draining peer-to-peer traffic (stop the jobs using it), then a new reading",
        ),
        // NVML_GPU_RECOVERY_ACTION_RECOVER_IMEX_DOMAIN, _BUS_RESET, _SYSTEM_REBOOT.
        RecoveryAction::Unknown(5) => (
            Action::CheckNetwork,
            false,
            p2p,
            "recovering the IMEX domain",
        ),
        RecoveryAction::Unknown(6) => (Action::ResetGpu, true, 100.0, "a PCIe bus reset"),
        RecoveryAction::Unknown(7) => (Action::Reboot, true, 100.0, "a system reboot"),
        RecoveryAction::Unknown(_) => (
            Action::CheckHost,
            false,
            p2p,
            "an action this build does not know",
        ),
    };
    let mut r = reason(
        ReasonCode::GpuRecoveryAction,
        Component::Gpu,
        action,
        deduction,
        format!(
            "GPU {}: the driver's recovery action {a} asks for {what}",
            d.index
        ),
    )
    .gpu(Some(d.index))
    .value(a.to_string());
    if fatal {
        r = r.fatal();
    }
    reasons.push(r);
}
