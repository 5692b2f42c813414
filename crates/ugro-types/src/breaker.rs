//! Records and annotations from `ugro-breaker`.

use serde::{Deserialize, Serialize};

use crate::{Kind, Timestamp};

/// Circuit-breaker states (resilience4j's names, in snake case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Records flow; failures are counted.
    Closed,
    /// The node is considered down; its records are held back until the trial time.
    Open,
    /// A limited number of trial records decide whether to close again.
    HalfOpen,
    /// The breaker is off: everything passes, nothing is counted.
    Disabled,
    /// Held open by an operator until reset.
    ForcedOpen,
    /// Counts and reports, but never trips.
    MetricsOnly,
}

impl BreakerState {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
            BreakerState::Disabled => "disabled",
            BreakerState::ForcedOpen => "forced_open",
            BreakerState::MetricsOnly => "metrics_only",
        }
    }
}

/// The annotation `ugro-breaker` adds to records it passes through, as `breaker`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerAnnotation {
    /// The node's breaker state after this record.
    pub state: BreakerState,
    /// Consecutive failures counted so far.
    pub consecutive_failures: u32,
    /// When the next trial is allowed (open states).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_trial_at: Option<Timestamp>,
}

/// A breaker state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// Schema version.
    pub v: u32,
    /// Always [`Kind::Transition`].
    pub kind: Kind,
    /// The `ts` of the record that caused the change (or the operator command's time).
    pub ts: Timestamp,
    /// Node.
    pub node: String,
    /// State before.
    pub from: BreakerState,
    /// State after.
    pub to: BreakerState,
    /// Why: `failure_threshold`, `trial_succeeded`, `trial_failed`, `wait_elapsed`, `operator_reset`,
    /// `operator_force_open`, `operator_disable`, `operator_metrics_only`, `operator_forget`.
    pub reason: String,
    /// Consecutive failures at the time of the change.
    pub consecutive_failures: u32,
    /// When the change took effect (same as `ts` except for `wait_elapsed`).
    pub at: Timestamp,
    /// When the next trial is due, for open states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_trial_at: Option<Timestamp>,
    /// How long the breaker stays open this time, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_for_ms: Option<u64>,
    /// Trips within the lemon window, including this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trips_in_window: Option<u32>,
    /// The lemon window, humantime (`7days`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trip_window: Option<String>,
    /// For people: "3 trips in 7 days".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<String>,
    /// The score state of the record that caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause_state: Option<crate::HealthState>,
    /// The recommended action of the record that caused it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause_action: Option<crate::Action>,
}

/// The fleet guard's verdict: too many nodes failing at once means the observer or the
/// network is at fault, so no breaker was opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    /// Schema version.
    pub v: u32,
    /// Always [`Kind::Fleet`].
    pub kind: Kind,
    /// When it was decided.
    pub ts: Timestamp,
    /// `*`.
    pub node: String,
    /// `suspect_observer`.
    pub verdict: String,
    /// Nodes that would have tripped within the window, in name order, at most
    /// [`crate::limits::MAX_ITEMS`] of them (a fleet-wide outage must not make a line of
    /// megabytes); `failing_count` says how many there were.
    pub failing: Vec<String>,
    /// How many nodes were failing (the length of `failing` before it was cut). Absent in
    /// records from builds before it was added: then it is `failing`'s length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_count: Option<u32>,
    /// Known nodes.
    pub known_nodes: u32,
    /// The configured share, 0–1.
    pub threshold: f64,
    /// The window, humantime.
    pub window: String,
    /// For people.
    pub message: String,
}
