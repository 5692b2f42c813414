//! Trend (predictive) rules over a GPU's history: corrected-ECC rate, PCIe replay rate against
//! DCGM's limit, growth of correctable remapped rows, the temperature's slope projected to the
//! slowdown temperature, and the XID rate. Each reason carries its rate (`value`), limit
//! (`threshold`), the span it was measured over (`window`) and `predicted: true`.
//!
//! A rate needs two readings at least the rule's `min_span` apart: a GPU's first sample (and the
//! first after a counter restarts, a reboot, or a gap that emptied the window) reports no rate.

use std::time::Duration;

use ugro_types::view::GpuView;
use ugro_types::{Action, Component, Reason, ReasonCode};

use crate::config::ScoreConfig;
use crate::history::{COUNTER_POINTS, GpuHistory, Series};
use crate::policy::XidSeverity;
use crate::scorer::{ReasonExt, reason};

const MINUTE: f64 = 60_000.0;
const HOUR: f64 = 3_600_000.0;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A span for people and the reason's `window`: whole seconds.
pub(crate) fn span_text(span_ms: i64) -> String {
    let secs = u64::try_from(span_ms.max(0) / 1000).unwrap_or(0);
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Adds a counter reading and returns its growth and span (ms) from the oldest reading kept,
/// when that span is at least `min_span`. A counter that went down restarted: a new baseline.
fn counter_growth(
    s: &mut Series<COUNTER_POINTS>,
    now: i64,
    v: u64,
    window: Duration,
    min_span: Duration,
) -> Option<(f64, i64)> {
    let v = v as f64;
    if s.last().is_some_and(|(t, last)| v < last || t > now) {
        s.clear();
    }
    let w = ms(window).max(1);
    s.push(now, v, (w / 4).max(1), w);
    let (t0, v0) = s.first()?;
    let span = now - t0;
    (span > 0 && span >= ms(min_span)).then_some((v - v0, span))
}

/// What a trend measured: its rate, the limit it was compared with, and over what span (ms).
struct Measure {
    rate: f64,
    limit: f64,
    span: i64,
}

fn predicted(
    code: ReasonCode,
    gpu: u32,
    action: Action,
    deduction: f64,
    message: String,
    m: Measure,
) -> Reason {
    reason(code, Component::Gpu, action, deduction, message)
        .gpu(Some(gpu))
        .value(round2(m.rate))
        .threshold(round2(m.limit))
        .predicted(span_text(m.span))
}

/// Every trend reason for one GPU of an in-order sample; `now` is the sample's time (ms).
pub(crate) fn trend_reasons(
    cfg: &ScoreConfig,
    now: i64,
    d: &GpuView<'_>,
    h: &mut GpuHistory,
    reasons: &mut Vec<Reason>,
) {
    pcie_replay(cfg, now, d, h, reasons);
    ecc_rate(cfg, now, d, h, reasons);
    remap_growth(cfg, now, d, h, reasons);
    temperature(cfg, now, d, h, reasons);
    xid_rate(cfg, now, d.index, h, reasons);
}

/// DCGM's replay limit per minute for the link as it runs now: ceil(per-lane rate x lanes).
fn replay_limit(cfg: &ScoreConfig, generation: Option<u32>, width: Option<u32>) -> Option<f64> {
    let table = &cfg.trends.replay_per_lane_per_minute;
    let (g, w) = (generation.filter(|&g| g > 0)?, width.filter(|&w| w > 0)?);
    let per_lane = table.get((g as usize).min(table.len()).checked_sub(1)?)?;
    Some((per_lane * f64::from(w)).ceil())
}

/// Above DCGM's rate: `pcie_replay_rate` (predicted); any other growth since the previous
/// sample: `pcie_replay_growth`.
fn pcie_replay(
    cfg: &ScoreConfig,
    now: i64,
    d: &GpuView<'_>,
    h: &mut GpuHistory,
    reasons: &mut Vec<Reason>,
) {
    let Some(pcie) = &d.pcie else { return };
    let Some(count) = pcie.replay_counter else {
        return;
    };
    let prev = h.replay.last().map(|(_, v)| v);
    let t = &cfg.trends;
    let growth = counter_growth(
        &mut h.replay,
        now,
        count,
        t.replay_window,
        t.replay_min_span,
    );
    let limit = replay_limit(cfg, pcie.generation, pcie.width);
    if let (Some((g, span)), Some(limit)) = (growth, limit) {
        let per_min = g / span as f64 * MINUTE;
        if per_min > limit {
            reasons.push(predicted(
                ReasonCode::PcieReplayRate,
                d.index,
                Action::HardwareInspection,
                cfg.gpu.replay_high_deduction,
                format!(
                    "GPU {}: {per_min:.1} PCIe replays per minute over {}, above DCGM's limit of {limit} for gen {} x{}",
                    d.index,
                    span_text(span),
                    pcie.generation.unwrap_or(0),
                    pcie.width.unwrap_or(0),
                ),
                Measure {
                    rate: per_min,
                    limit,
                    span,
                },
            ));
            return;
        }
    }
    // A smaller counter means the driver reloaded: a new baseline, no growth.
    if let Some(prev) = prev
        && count as f64 > prev
    {
        let grew = count - prev as u64;
        reasons.push(
            reason(
                ReasonCode::PcieReplayGrowth,
                Component::Gpu,
                Action::CheckHost,
                cfg.gpu.replay_growth_deduction,
                format!(
                    "GPU {}: PCIe replay counter grew by {grew} since the previous sample",
                    d.index
                ),
            )
            .gpu(Some(d.index))
            .value(grew)
            .threshold(limit.unwrap_or(1.0)),
        );
    }
}

fn ecc_rate(
    cfg: &ScoreConfig,
    now: i64,
    d: &GpuView<'_>,
    h: &mut GpuHistory,
    reasons: &mut Vec<Reason>,
) {
    let Some(count) = d.ecc.and_then(|e| e.corrected_volatile) else {
        return;
    };
    let t = &cfg.trends;
    let Some((g, span)) = counter_growth(&mut h.ecc, now, count, t.ecc_window, t.ecc_min_span)
    else {
        return;
    };
    let per_hour = g / span as f64 * HOUR;
    if per_hour > t.ecc_corrected_per_hour {
        reasons.push(predicted(
            ReasonCode::EccCorrectedRate,
            d.index,
            Action::HardwareInspection,
            t.deduction,
            format!(
                "GPU {}: {per_hour:.0} corrected ECC errors per hour over {} (limit {})",
                d.index,
                span_text(span),
                t.ecc_corrected_per_hour
            ),
            Measure {
                rate: per_hour,
                limit: t.ecc_corrected_per_hour,
                span,
            },
        ));
    }
}

fn remap_growth(
    cfg: &ScoreConfig,
    now: i64,
    d: &GpuView<'_>,
    h: &mut GpuHistory,
    reasons: &mut Vec<Reason>,
) {
    let Some(rows) = d.remapped_rows.and_then(|r| r.correctable) else {
        return;
    };
    let t = &cfg.trends;
    let Some((g, span)) = counter_growth(&mut h.remap, now, rows, t.remap_window, Duration::ZERO)
    else {
        return;
    };
    if g >= t.remap_growth as f64 && g > 0.0 {
        reasons.push(predicted(
            ReasonCode::RowRemapCorrectableGrowth,
            d.index,
            Action::HardwareInspection,
            t.deduction,
            format!(
                "GPU {}: {g:.0} more rows remapped for correctable errors in {} ({rows} in all)",
                d.index,
                span_text(span)
            ),
            Measure {
                rate: g,
                limit: t.remap_growth as f64,
                span,
            },
        ));
    }
}

/// Least-squares slope of `(ms, value)` points, per minute.
fn slope_per_minute(points: impl Iterator<Item = (i64, f64)> + Clone) -> Option<f64> {
    let n = points.clone().count() as f64;
    let t0 = points.clone().next()?.0;
    let (mut st, mut sv, mut stt, mut stv) = (0.0, 0.0, 0.0, 0.0);
    for (t, v) in points {
        let x = (t - t0) as f64 / MINUTE;
        st += x;
        sv += v;
        stt += x * x;
        stv += x * v;
    }
    let den = n * stt - st * st;
    (den > 0.0).then(|| (n * stv - st * sv) / den)
}

fn temperature(
    cfg: &ScoreConfig,
    now: i64,
    d: &GpuView<'_>,
    h: &mut GpuHistory,
    reasons: &mut Vec<Reason>,
) {
    let Some(temp) = d.temperature_c.map(f64::from) else {
        return;
    };
    let t = &cfg.trends;
    let w = ms(t.temperature_window).max(1);
    if h.temp.last().is_some_and(|(last, _)| last > now) {
        h.temp.clear();
    }
    h.temp.push(now, temp, (w / 8).max(1), w);
    // At most the first point is older than the window.
    let skip = usize::from(h.temp.first().is_some_and(|p| p.0 < now - w));
    let pts = h.temp.points().skip(skip);
    let span = pts.clone().next().map_or(0, |p| now - p.0);
    if pts.clone().count() < 3 || span < ms(t.temperature_min_span) {
        return;
    }
    let Some(slope) = slope_per_minute(pts) else {
        return;
    };
    let slow = d
        .temperature_slowdown_c
        .map_or(cfg.gpu.temperature_slowdown_default_c, f64::from);
    let rise = slope * span as f64 / MINUTE;
    if slope <= 0.0 || rise < t.temperature_min_rise_c || temp >= slow {
        return;
    }
    let minutes = (slow - temp) / slope;
    let horizon = t.temperature_horizon.as_secs_f64() / 60.0;
    if minutes <= horizon {
        reasons.push(predicted(
            ReasonCode::GpuTemperatureRising,
            d.index,
            Action::CheckHost,
            t.deduction,
            format!(
                "GPU {}: {temp} C rising {slope:.1} C/min over {}: slowdown at {slow} C in about {minutes:.1} min",
                d.index,
                span_text(span)
            ),
            Measure {
                rate: minutes,
                limit: horizon,
                span,
            },
        ));
    }
}

fn xid_rate(cfg: &ScoreConfig, now: i64, gpu: u32, h: &GpuHistory, reasons: &mut Vec<Reason>) {
    let t = &cfg.trends;
    let w = ms(t.xid_window).max(1);
    let events: u32 = h
        .xids
        .iter()
        .filter(|e| e.t >= now - w && e.t <= now)
        .filter(|e| cfg.policy.rule(e.code).0.severity != XidSeverity::Application)
        .map(|e| e.n)
        .sum();
    let per_hour = f64::from(events) / (w as f64 / HOUR);
    if events >= 2 && per_hour >= t.xid_per_hour {
        reasons.push(predicted(
            ReasonCode::XidRate,
            gpu,
            Action::CheckHost,
            t.deduction,
            format!(
                "GPU {gpu}: {events} XID events in {} ({per_hour:.1} per hour, limit {})",
                span_text(w),
                t.xid_per_hour
            ),
            Measure {
                rate: per_hour,
                limit: t.xid_per_hour,
                span: w,
            },
        ));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn dcgm_replay_limits_scale_with_generation_and_lanes() {
        let cfg = ScoreConfig::default();
        assert_eq!(replay_limit(&cfg, Some(5), Some(16)), Some(31.0));
        assert_eq!(replay_limit(&cfg, Some(4), Some(16)), Some(16.0));
        assert_eq!(replay_limit(&cfg, Some(3), Some(8)), Some(4.0));
        assert_eq!(
            replay_limit(&cfg, Some(9), Some(1)),
            Some(4.0),
            "capped at Gen6"
        );
        assert_eq!(replay_limit(&cfg, Some(0), Some(16)), None);
        assert_eq!(replay_limit(&cfg, Some(5), None), None);
    }

    #[test]
    fn a_least_squares_slope_of_a_line_is_its_slope() {
        let pts: Vec<(i64, f64)> = (0..5)
            .map(|i| (i * 60_000, 50.0 + 2.0 * i as f64))
            .collect();
        assert!((slope_per_minute(pts.iter().copied()).unwrap() - 2.0).abs() < 1e-9);
        assert_eq!(slope_per_minute(pts[..1].iter().copied()), None);
    }
}
