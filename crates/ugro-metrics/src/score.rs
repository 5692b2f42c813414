//! What ugro-score and ugro-breaker add to a sample: score, state, components, reasons, action,
//! reachability and the breaker annotation.

use std::collections::BTreeMap;

use ugro_types::view::BreakerView;
use ugro_types::{Action, BreakerState, HealthState, Sample, Score};

use crate::catalog::*;
use crate::expo::{Exposition, Labels};

const STATES: [HealthState; 4] = [
    HealthState::Healthy,
    HealthState::Degraded,
    HealthState::Critical,
    HealthState::Unknown,
];

const ACTIONS: [Action; 7] = [
    Action::None,
    Action::CheckNetwork,
    Action::CheckHost,
    Action::RestartApp,
    Action::ResetGpu,
    Action::Reboot,
    Action::HardwareInspection,
];

const BREAKER_STATES: [BreakerState; 6] = [
    BreakerState::Closed,
    BreakerState::Open,
    BreakerState::HalfOpen,
    BreakerState::Disabled,
    BreakerState::ForcedOpen,
    BreakerState::MetricsOnly,
];

/// `ugro_node_reachable`, and `ugro_node_unreachable` with its cause while it is not.
pub(crate) fn reachability(e: &mut Exposition, node: &Labels, s: &Sample) {
    e.flag(&NODE_REACHABLE, node, Some(s.unreachable.is_none()));
    if let Some(u) = &s.unreachable {
        e.set(&NODE_UNREACHABLE, &node.and("cause", &u.cause), Some(1.0));
    }
}

/// The score's series. Per-GPU scores carry the GPU's UUID from the sample.
pub(crate) fn score(e: &mut Exposition, node: &Labels, s: &Sample, sc: &Score) {
    e.set(&NODE_SCORE, node, sc.total);
    let c = &sc.components;
    for (name, v) in [
        ("gpu", c.gpu),
        ("system", c.system),
        ("network", c.network),
        ("process", c.process),
    ] {
        e.set(&NODE_COMPONENT_SCORE, &node.and("component", name), v);
    }
    let devices = s.gpu.as_ref().map_or(&[][..], |g| &g.devices[..]);
    for g in &sc.gpus {
        let uuid = devices
            .iter()
            .find(|d| d.index == g.index)
            .and_then(|d| d.uuid.as_deref());
        let l = node
            .and("gpu", &g.index.to_string())
            .with("uuid", uuid.unwrap_or(""));
        e.set(&GPU_SCORE, &l, Some(g.score));
    }
    for st in STATES {
        e.flag(
            &NODE_STATE,
            &node.and("state", st.as_str()),
            Some(sc.state == st),
        );
    }
    e.set(
        &NODE_STATE_SEVERITY,
        node,
        Some(f64::from(sc.state.badness())),
    );
    for a in ACTIONS {
        e.flag(
            &NODE_ACTION,
            &node.and("action", a.as_str()),
            Some(sc.action == a),
        );
    }
    reasons(e, node, sc);
}

/// One `ugro_node_reason` series: the reasons with the same code, component and GPU (two full
/// disks) are one, their deductions summed, fatal if either is, with the more drastic action.
#[derive(Default)]
struct Merged {
    points: f64,
    fatal: bool,
    action: Action,
    family: Option<&'static str>,
}

fn reasons(e: &mut Exposition, node: &Labels, sc: &Score) {
    let mut merged: BTreeMap<(&str, &str, Option<u32>), Merged> = BTreeMap::new();
    for r in &sc.reasons {
        let key = (r.code.as_str(), r.component.as_str(), r.gpu);
        let m = merged.entry(key).or_default();
        m.family = r.code.family().map(|f| f.as_str());
        m.points += r.deduction;
        m.fatal |= r.fatal;
        m.action = m.action.max(r.action);
    }
    for ((code, component, gpu), m) in merged {
        let l = node
            .and("code", code)
            .and_opt("family", m.family)
            .with("component", component)
            .and_opt("gpu", gpu.map(|g| g.to_string()).as_deref())
            .with("fatal", if m.fatal { "true" } else { "false" })
            .with("action", m.action.as_str());
        e.set(&NODE_REASON, &l, Some(m.points));
    }
}

/// The breaker annotation's series.
pub(crate) fn breaker(e: &mut Exposition, node: &Labels, b: &BreakerView) {
    for st in BREAKER_STATES {
        e.flag(
            &BREAKER_STATE,
            &node.and("state", st.as_str()),
            Some(b.state == st),
        );
    }
    e.set(
        &BREAKER_FAILURES,
        node,
        Some(f64::from(b.consecutive_failures)),
    );
    let next = b.next_trial_at.map(|t| t.millis() as f64 / 1000.0);
    e.set(&BREAKER_NEXT_TRIAL, node, next);
}
