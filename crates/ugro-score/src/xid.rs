//! XID reasons: each event judged by the policy (message rules, deferral to remapped rows),
//! remembered once by its identity, and escalated by history (count in window, the same fatal
//! XID again, the same XID after reboots).

use std::time::Duration;

use ugro_types::{Action, Component, Reason, ReasonCode, Timestamp, Xid};

use crate::config::ScoreConfig;
use crate::history::{GpuHistory, MAX_XID_EVENTS, XidEvent};
use crate::policy::{Verdict, XidRule, XidSeverity};
use crate::scorer::{ReasonExt, reason};

/// Where the XIDs of one GPU (or the unattributed ones) are scored.
pub(crate) struct XidScope<'a> {
    pub(crate) cfg: &'a ScoreConfig,
    /// The sample's time.
    pub(crate) now: Timestamp,
    /// The GPU's index (`None`: unattributed).
    pub(crate) gpu: Option<u32>,
    /// The GPU reports row remapping: XIDs that defer to it are not scored.
    pub(crate) remaps: bool,
    /// Each XID's boot serial, in the order of the XIDs (0: unknown).
    pub(crate) boots: &'a [u32],
}

/// One event of this sample, judged.
struct Judged<'a> {
    x: &'a Xid,
    boot: u32,
    rule: &'a XidRule,
    listed: bool,
    /// Which verdict: 0 the entry's, n the n-th message rule.
    verdict_of: usize,
    verdict: Verdict,
    meaning: &'a str,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Reasons for a set of XIDs, one per code and verdict; returns the summed deduction and
/// whether any is fatal.
pub(crate) fn xid_reasons(
    scope: &XidScope<'_>,
    xids: &[Xid],
    hist: &mut GpuHistory,
    reasons: &mut Vec<Reason>,
) -> (f64, bool) {
    if xids.is_empty() {
        return (0.0, false);
    }
    let mut judged = judge_all(scope, xids);
    record(scope, &judged, hist);
    judged.sort_by_key(|j| (j.x.code, j.verdict_of));
    let (mut total, mut any_fatal) = (0.0, false);
    for group in judged.chunk_by(|a, b| (a.x.code, a.verdict_of) == (b.x.code, b.verdict_of)) {
        let r = group_reason(scope, group, hist);
        any_fatal |= r.fatal;
        total += r.deduction;
        reasons.push(r);
    }
    (total, any_fatal)
}

fn judge_all<'a>(scope: &XidScope<'a>, xids: &'a [Xid]) -> Vec<Judged<'a>> {
    xids.iter()
        .enumerate()
        .filter_map(|(i, x)| {
            let (rule, listed) = scope.cfg.policy.rule(x.code);
            if rule.defer_to_remapped_rows && scope.remaps {
                return None;
            }
            let (verdict_of, verdict, meaning) = rule.judge(x.message.as_deref());
            Some(Judged {
                x,
                boot: scope.boots.get(i).copied().unwrap_or(0),
                rule,
                listed,
                verdict_of,
                verdict,
                meaning,
            })
        })
        .collect()
}

/// Remembers this sample's events: by identity (boot, seq) when they have one, else by kernel
/// time (a time already stored keeps the larger count, since the probe's lookback repeats an
/// event in consecutive samples). An event with neither cannot be told from its repeats in
/// later samples, so it is not remembered: it counts only within its own sample.
fn record(scope: &XidScope<'_>, judged: &[Judged<'_>], hist: &mut GpuHistory) {
    let now = scope.now.millis();
    let mut by_ts: Vec<(u32, i64, u32, u32)> = Vec::new();
    for j in judged {
        let x = j.x;
        match (x.identity(), x.ts) {
            (Some((_, seq)), ts) => {
                let known = hist
                    .xids
                    .iter()
                    .any(|e| e.seq == Some(seq) && e.boot == j.boot);
                if !known {
                    hist.xids.push(XidEvent {
                        code: x.code,
                        t: ts.map_or(now, Timestamp::millis),
                        boot: j.boot,
                        seq: Some(seq),
                        n: 1,
                    });
                }
            }
            (None, Some(ts)) => match by_ts
                .iter_mut()
                .find(|e| (e.0, e.1) == (x.code, ts.millis()))
            {
                Some(e) => e.2 += 1,
                None => by_ts.push((x.code, ts.millis(), 1, j.boot)),
            },
            (None, None) => {}
        }
    }
    for (code, t, n, boot) in by_ts {
        match hist
            .xids
            .iter_mut()
            .find(|e| e.seq.is_none() && (e.code, e.t) == (code, t))
        {
            Some(e) => e.n = e.n.max(n),
            None => hist.xids.push(XidEvent {
                code,
                t,
                boot,
                seq: None,
                n,
            }),
        }
    }
    forget_old(scope, hist);
}

fn forget_old(scope: &XidScope<'_>, hist: &mut GpuHistory) {
    let keep = scope
        .cfg
        .policy
        .longest_window()
        .max(scope.cfg.trends.xid_window);
    let cutoff = scope.now.millis().saturating_sub(ms(keep));
    hist.xids.retain(|e| e.t >= cutoff);
    if hist.xids.len() > MAX_XID_EVENTS {
        hist.xids.sort_by_key(|e| e.t);
        let excess = hist.xids.len() - MAX_XID_EVENTS;
        hist.xids.drain(..excess);
    }
}

/// Remembered events of `code` within `window` before now, plus this sample's events that
/// could not be remembered.
fn count_in_window(
    scope: &XidScope<'_>,
    group: &[Judged<'_>],
    hist: &GpuHistory,
    window: Duration,
) -> u32 {
    let code = group[0].x.code;
    let start = scope.now.millis().saturating_sub(ms(window));
    let stored: u32 = hist
        .xids
        .iter()
        .filter(|e| e.code == code && e.t >= start)
        .map(|e| e.n)
        .sum();
    let untracked = group
        .iter()
        .filter(|j| j.x.identity().is_none() && j.x.ts.is_none())
        .count();
    stored + u32::try_from(untracked).unwrap_or(u32::MAX)
}

/// Reboots between the first remembered sighting of `code` within the window and this one.
fn reboots_since_first(scope: &XidScope<'_>, group: &[Judged<'_>], hist: &GpuHistory) -> u32 {
    let code = group[0].x.code;
    let now_boot = group.iter().map(|j| j.boot).max().unwrap_or(0);
    let start = scope
        .now
        .millis()
        .saturating_sub(ms(scope.cfg.policy.reboots.window));
    let first = hist
        .xids
        .iter()
        .filter(|e| e.code == code && e.t >= start && e.boot > 0)
        .map(|e| e.boot)
        .min();
    match first {
        Some(b) if now_boot > b => now_boot - b,
        _ => 0,
    }
}

/// The reason for one group of events (same code, same verdict).
fn group_reason(scope: &XidScope<'_>, group: &[Judged<'_>], hist: &GpuHistory) -> Reason {
    let j = &group[0];
    let policy = &scope.cfg.policy;
    let mut v = j.verdict;
    let mut code_name = None;
    let mut notes = Vec::new();
    let mut threshold = None;
    let mut window = None;
    if let Some(esc) = &j.rule.escalate {
        let count = count_in_window(scope, group, hist, esc.window);
        if count >= esc.count {
            v.severity = esc.severity.unwrap_or(v.severity);
            v.action = esc.action.unwrap_or(v.action);
            notes.push(format!(
                "seen {count} times in {} (escalation at {})",
                humantime::format_duration(esc.window),
                esc.count
            ));
            threshold = Some(esc.count);
            window = Some(humantime::format_duration(esc.window).to_string());
        }
    }
    // The history rules look at the event's own verdict, not an escalated one: XID 94
    // escalating to fatal on its count is not also "the same fatal XID again".
    let own = j.verdict;
    if own.severity == XidSeverity::Fatal {
        let rec = &policy.recurrence;
        let count = count_in_window(scope, group, hist, rec.window);
        if count >= 2 {
            v.action = v.action.max(rec.action);
            code_name = Some(ReasonCode::XidRecurring);
            notes.push(format!(
                "again within {} ({count} events)",
                humantime::format_duration(rec.window)
            ));
            window = Some(humantime::format_duration(rec.window).to_string());
        }
    }
    if matches!(own.action, Action::ResetGpu | Action::Reboot) {
        let limit = j.rule.reboot_threshold.unwrap_or(policy.reboots.threshold);
        let reboots = reboots_since_first(scope, group, hist);
        if limit > 0 && reboots >= limit {
            v.action = v.action.max(policy.reboots.action);
            code_name = Some(ReasonCode::XidAfterReboots);
            notes.push(format!(
                "seen again {reboots} reboots after its first sighting"
            ));
            threshold = Some(limit);
            window = Some(humantime::format_duration(policy.reboots.window).to_string());
        }
    }
    build(scope, group, v, code_name, notes, threshold, window)
}

fn build(
    scope: &XidScope<'_>,
    group: &[Judged<'_>],
    mut v: Verdict,
    code_name: Option<ReasonCode>,
    notes: Vec<String>,
    threshold: Option<u32>,
    window: Option<String>,
) -> Reason {
    let j = &group[0];
    let fatal = v.severity == XidSeverity::Fatal;
    if fatal {
        v.deduction = v.deduction.max(100.0);
    }
    let on = scope
        .gpu
        .map_or_else(|| "unattributed GPU".to_owned(), |i| format!("GPU {i}"));
    let mut message = format!(
        "{on}: XID {} ({}){}",
        j.x.code,
        j.meaning,
        if j.listed { "" } else { ", not in the policy" }
    );
    if j.verdict_of > 0
        && let Some(m) = j.x.message.as_deref()
    {
        // The verdict came from the driver's words: show them.
        let m: String = m.chars().take(120).collect();
        message.push_str(&format!(": \"{m}\""));
    }
    if group.len() > 1 {
        message.push_str(&format!(", {} events", group.len()));
    }
    for n in notes {
        message.push_str("; ");
        message.push_str(&n);
    }
    let code_name = code_name.unwrap_or(match v.severity {
        XidSeverity::Fatal => ReasonCode::XidFatal,
        XidSeverity::Warning => ReasonCode::XidWarning,
        XidSeverity::Application => ReasonCode::XidApplication,
    });
    let mut r = reason(code_name, Component::Gpu, v.action, v.deduction, message)
        .gpu(scope.gpu)
        .value(j.x.code);
    if let Some(t) = threshold {
        r = r.threshold(t);
    }
    r.window = window;
    if fatal {
        r = r.fatal();
    }
    r
}
