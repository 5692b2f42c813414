//! The breaker itself: pure over records, time taken from each record's `ts`, no I/O. The
//! stage around it (`crate::stage`) adds the state file.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use ugro_types::stage::{Emit, StageError};
use ugro_types::view::{RecordView, ScoreHead};
use ugro_types::{
    BreakerAnnotation, BreakerState, Fleet, HealthState, Kind, SCHEMA_VERSION, SkewGuard,
    Timestamp, Transition,
};

use crate::config::{BreakerConfig, Outcome};

/// What the breaker reads of a line: the header, `score.state` and `score.action`, and whether
/// `unreachable` and `breaker` are there. Everything else is skipped without being built,
/// which keeps the breaker near `cat` speed on samples of several kilobytes.
type Line<'a> = RecordView<'a, ScoreHead, IgnoredAny>;

/// One node's breaker, as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeState {
    /// Current state.
    pub state: BreakerState,
    /// Consecutive counted failures.
    pub consecutive_failures: u32,
    /// Open: when the wait ends and the next record becomes the trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_trial_at: Option<Timestamp>,
    /// How long the breaker was opened for the last time (the base of the next backoff step);
    /// 0 once it has closed again.
    #[serde(default)]
    pub open_for_ms: u64,
    /// Successful trials so far in half-open.
    #[serde(default)]
    pub half_open_successes: u32,
    /// Newest record time seen for this node (older records are out of order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ts: Option<Timestamp>,
    /// Time of the last counted failure (fleet guard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_at: Option<Timestamp>,
    /// When it last went to open (fleet guard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<Timestamp>,
    /// When the current state began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// Trip times (closed → open), oldest first, bounded.
    #[serde(default)]
    pub trips: VecDeque<Timestamp>,
    /// Records held back while open, over the life of the state file.
    #[serde(default)]
    pub held: u64,
    /// Open, and a record since it opened counted as a success: its records pass until the
    /// next trial, so the alert stage sees the recovery and a new fault after it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
}

impl NodeState {
    fn new(state: BreakerState) -> Self {
        NodeState {
            state,
            consecutive_failures: 0,
            next_trial_at: None,
            open_for_ms: 0,
            half_open_successes: 0,
            last_ts: None,
            last_failure_at: None,
            opened_at: None,
            since: None,
            trips: VecDeque::new(),
            held: 0,
            recovered: false,
        }
    }

    /// The annotation a passed record of this node carries.
    pub fn annotation(&self) -> BreakerAnnotation {
        BreakerAnnotation {
            state: self.state,
            consecutive_failures: self.consecutive_failures,
            next_trial_at: match self.state {
                BreakerState::Open => self.next_trial_at,
                _ => None,
            },
        }
    }
}

/// Everything the state file holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BreakerData {
    /// Per node, in name order.
    pub nodes: BTreeMap<String, NodeState>,
    /// When the fleet guard last emitted a `fleet` record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_fleet_at: Option<Timestamp>,
}

/// What happened during a run, for the end-of-run log line and for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Records written (pass-through, annotated, transitions, fleet).
    pub passed: u64,
    /// Records of open nodes held back.
    pub held: u64,
    /// Records more than `max_record_age` older than their node's newest record (not counted).
    pub stale: u64,
    /// Records older than their node's newest record, by less than that (not counted).
    pub out_of_order: u64,
    /// Transition records emitted.
    pub transitions: u64,
    /// Trips the fleet guard stopped.
    pub suppressed_trips: u64,
    /// Fleet records emitted.
    pub fleet_records: u64,
}

/// An operator command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Back to closed, counters cleared (trip history kept).
    Reset,
    /// Held open until reset.
    ForceOpen,
    /// Everything passes, nothing is counted.
    Disable,
    /// Counted and reported, never trips.
    MetricsOnly,
    /// Removed from the state (a decommissioned node no longer counts as known).
    Forget,
}

impl Operation {
    fn target(self) -> BreakerState {
        match self {
            Operation::Reset => BreakerState::Closed,
            Operation::ForceOpen => BreakerState::ForcedOpen,
            Operation::Disable => BreakerState::Disabled,
            Operation::MetricsOnly => BreakerState::MetricsOnly,
            Operation::Forget => BreakerState::Closed,
        }
    }

    fn reason(self) -> &'static str {
        match self {
            Operation::Reset => "operator_reset",
            Operation::ForceOpen => "operator_force_open",
            Operation::Disable => "operator_disable",
            Operation::MetricsOnly => "operator_metrics_only",
            Operation::Forget => "operator_forget",
        }
    }
}

/// The per-node breakers over a record stream.
#[derive(Debug)]
pub struct Breaker {
    cfg: BreakerConfig,
    data: BreakerData,
    /// Newest record time of this run (automatic half-open is judged against it).
    newest: Option<Timestamp>,
    /// Refuses records from the future (max_clock_skew) on an injected wall clock.
    skew: SkewGuard,
    /// Earliest trial time among open nodes, for automatic half-open.
    next_deadline: Option<Timestamp>,
    counters: Counters,
    transitioned: bool,
    out: Vec<u8>,
    ann: Vec<u8>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// "7 days", "12 hours", "90 minutes"; humantime otherwise.
fn for_people(d: Duration) -> String {
    let s = d.as_secs();
    let unit = |n: u64, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    if d.subsec_nanos() == 0 && s > 0 {
        if s.is_multiple_of(86_400) {
            return unit(s / 86_400, "day");
        }
        if s.is_multiple_of(3_600) {
            return unit(s / 3_600, "hour");
        }
        if s.is_multiple_of(60) {
            return unit(s / 60, "minute");
        }
    }
    humantime::format_duration(d).to_string()
}

fn write_err(e: serde_json::Error) -> StageError {
    StageError::Write(e.into())
}

impl Breaker {
    /// A breaker over `data` (empty for a fresh state file).
    pub fn new(cfg: BreakerConfig, data: BreakerData) -> Self {
        let skew = SkewGuard::new(cfg.max_clock_skew);
        let next_deadline = data
            .nodes
            .values()
            .filter(|n| n.state == BreakerState::Open)
            .filter_map(|n| n.next_trial_at)
            .min();
        Breaker {
            cfg,
            data,
            newest: None,
            skew,
            next_deadline,
            counters: Counters::default(),
            transitioned: false,
            out: Vec::with_capacity(8192),
            ann: Vec::with_capacity(128),
        }
    }

    /// Replaces the wall clock (tests).
    pub fn with_clock(mut self, clock: fn() -> Timestamp) -> Self {
        self.skew = self.skew.with_clock(clock);
        self
    }

    /// The state to persist.
    pub fn data(&self) -> &BreakerData {
        &self.data
    }

    /// The configuration in use.
    pub fn config(&self) -> &BreakerConfig {
        &self.cfg
    }

    /// Counters of this run.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Whether a transition happened since the last call (the stage persists then).
    pub fn take_transitioned(&mut self) -> bool {
        std::mem::take(&mut self.transitioned)
    }

    fn classify(&self, score: ScoreHead, unreachable: bool) -> Outcome {
        match score.state {
            HealthState::Healthy => Outcome::Success,
            HealthState::Degraded => self.cfg.degraded,
            HealthState::Critical => Outcome::Failure,
            HealthState::Unknown if unreachable => self.cfg.unreachable,
            HealthState::Unknown => self.cfg.unknown,
        }
    }

    /// Handles one input line.
    pub fn process(&mut self, line: &str, emit: &mut Emit<'_>) -> Result<(), StageError> {
        let reject = |e: &dyn std::fmt::Display| StageError::Reject(e.to_string());
        let rec = Line::parse(line).map_err(|e| reject(&e))?;
        // One such record would otherwise make every later record of its node out of order.
        self.skew.check(rec.ts).map_err(|e| reject(&e))?;
        if rec.kind != Kind::Sample {
            self.counters.passed += 1;
            return emit(line.as_bytes()).map_err(StageError::from);
        }
        let Some(score) = rec.score else {
            return Err(StageError::Reject(
                "sample without `score` (pipe samples through ugro-score first)".into(),
            ));
        };
        let ts = rec.ts;
        let max_age = self.cfg.max_record_age;
        if self.newest.is_none_or(|n| ts > n) {
            self.newest = Some(ts);
        }
        if self.cfg.automatic_transition_from_open_to_half_open_enabled {
            let now = self.newest.unwrap_or(ts);
            self.advance(now, emit)?;
        }
        let node: &str = &rec.node;
        if !self.data.nodes.contains_key(node) {
            self.data
                .nodes
                .insert(node.to_owned(), NodeState::new(BreakerState::Closed));
        }
        let mut outcome = self.classify(score, rec.unreachable);
        let counted = {
            let n = self.node_mut(node)?;
            // Judged against the node's own newest record, so a node whose clock runs ahead
            // (within max_clock_skew) cannot make the other nodes' records stale.
            let older = n.last_ts.filter(|l| ts < *l);
            match older {
                None => n.last_ts = Some(ts),
                Some(l) if ts < l.sub(max_age) => self.counters.stale += 1,
                Some(_) => self.counters.out_of_order += 1,
            }
            older.is_none()
        };
        if !counted {
            outcome = Outcome::Ignore;
        }

        let mut state = self.node_mut(node)?.state;
        if state == BreakerState::Open && counted {
            let due = self.node_mut(node)?.next_trial_at.is_none_or(|t| t <= ts);
            if due {
                self.half_open(node, ts, emit)?;
                state = BreakerState::HalfOpen;
            }
        }

        match state {
            BreakerState::Disabled => {}
            // A recovery is evidence the alert stage needs to resolve within a poll, not
            // at the next trial (the breaker still decides: it stays open until then).
            BreakerState::Open if counted && outcome == Outcome::Success => {
                self.node_mut(node)?.recovered = true;
            }
            BreakerState::Open if self.node_mut(node)?.recovered => {}
            BreakerState::ForcedOpen | BreakerState::Open => {
                if !self.cfg.pass_open {
                    self.node_mut(node)?.held += 1;
                    self.counters.held += 1;
                    return Ok(());
                }
            }
            BreakerState::MetricsOnly => {
                let n = self.node_mut(node)?;
                match outcome {
                    Outcome::Failure => {
                        n.consecutive_failures = n.consecutive_failures.saturating_add(1);
                        n.last_failure_at = Some(ts);
                    }
                    Outcome::Success => n.consecutive_failures = 0,
                    Outcome::Ignore => {}
                }
            }
            BreakerState::HalfOpen => match outcome {
                Outcome::Failure => {
                    let backoff = self.cfg.enable_exponential_backoff;
                    let mult = self.cfg.exponential_backoff_multiplier;
                    let cap = ms(self.cfg.exponential_max_wait_duration_in_open_state);
                    let base = ms(self.cfg.wait_duration_in_open_state);
                    let n = self.node_mut(node)?;
                    n.consecutive_failures = n.consecutive_failures.saturating_add(1);
                    n.last_failure_at = Some(ts);
                    let next = if backoff && n.open_for_ms > 0 {
                        let grown = (n.open_for_ms as f64 * mult).round();
                        if grown >= cap as f64 {
                            cap
                        } else {
                            grown as u64
                        }
                    } else {
                        base
                    };
                    self.open(node, ts, next, "trial_failed", Some(score), false, emit)?;
                }
                Outcome::Success => {
                    let permitted = self.cfg.permitted_number_of_calls_in_half_open_state;
                    let n = self.node_mut(node)?;
                    n.half_open_successes += 1;
                    n.consecutive_failures = 0;
                    if n.half_open_successes >= permitted {
                        let from = n.state;
                        n.state = BreakerState::Closed;
                        n.half_open_successes = 0;
                        n.next_trial_at = None;
                        n.open_for_ms = 0;
                        n.since = Some(ts);
                        self.emit_transition(
                            node,
                            from,
                            "trial_succeeded",
                            ts,
                            ts,
                            Some(score),
                            emit,
                        )?;
                    }
                }
                Outcome::Ignore => {}
            },
            BreakerState::Closed => match outcome {
                Outcome::Failure => {
                    let threshold = self.cfg.failure_threshold;
                    let n = self.node_mut(node)?;
                    n.consecutive_failures = n.consecutive_failures.saturating_add(1);
                    n.last_failure_at = Some(ts);
                    if n.consecutive_failures >= threshold && self.fleet_allows(node, ts, emit)? {
                        let base = ms(self.cfg.wait_duration_in_open_state);
                        self.open(node, ts, base, "failure_threshold", Some(score), true, emit)?;
                    }
                }
                Outcome::Success => self.node_mut(node)?.consecutive_failures = 0,
                Outcome::Ignore => {}
            },
        }
        self.pass_annotated(line, node, rec.has_breaker, emit)
    }

    fn node_mut(&mut self, node: &str) -> Result<&mut NodeState, StageError> {
        self.data
            .nodes
            .get_mut(node)
            .ok_or_else(|| StageError::Fatal {
                exit: ugro_types::Exit::Software,
                message: format!("breaker state for {node} vanished"),
            })
    }

    fn pass_annotated(
        &mut self,
        line: &str,
        node: &str,
        has_breaker: bool,
        emit: &mut Emit<'_>,
    ) -> Result<(), StageError> {
        let ann = self.node_mut(node)?.annotation();
        self.counters.passed += 1;
        if has_breaker {
            let v = serde_json::to_value(&ann).map_err(write_err)?;
            let out = ugro_types::io::set_field(line, "breaker", v)
                .map_err(|e| StageError::Reject(e.to_string()))?;
            return emit(&out).map_err(StageError::from);
        }
        self.ann.clear();
        serde_json::to_writer(&mut self.ann, &ann).map_err(write_err)?;
        self.out.clear();
        if !ugro_types::io::splice_field(&mut self.out, line, "breaker", &self.ann) {
            return Err(StageError::Reject("not a JSON object".into()));
        }
        emit(&self.out).map_err(StageError::from)
    }

    /// Moves one open node to half-open because its wait is over.
    fn half_open(
        &mut self,
        node: &str,
        ts: Timestamp,
        emit: &mut Emit<'_>,
    ) -> Result<(), StageError> {
        let n = self.node_mut(node)?;
        let at = n.next_trial_at.unwrap_or(ts);
        n.state = BreakerState::HalfOpen;
        n.half_open_successes = 0;
        n.since = Some(at);
        self.emit_transition(node, BreakerState::Open, "wait_elapsed", ts, at, None, emit)
    }

    /// Automatic half-open: every open node whose trial time is not after `now`.
    fn advance(&mut self, now: Timestamp, emit: &mut Emit<'_>) -> Result<(), StageError> {
        if self.next_deadline.is_none_or(|d| d > now) {
            return Ok(());
        }
        let due: Vec<String> = self
            .data
            .nodes
            .iter()
            .filter(|(_, n)| {
                n.state == BreakerState::Open && n.next_trial_at.is_none_or(|t| t <= now)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for node in due {
            self.half_open(&node, now, emit)?;
        }
        self.next_deadline = self
            .data
            .nodes
            .values()
            .filter(|n| n.state == BreakerState::Open)
            .filter_map(|n| n.next_trial_at)
            .min();
        Ok(())
    }

    /// Lets stream time pass without a record (long runs): automatic half-open only.
    pub fn tick(&mut self, now: Timestamp, emit: &mut Emit<'_>) -> Result<(), StageError> {
        if self.cfg.automatic_transition_from_open_to_half_open_enabled {
            self.advance(now, emit)?;
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        node: &str,
        ts: Timestamp,
        open_for_ms: u64,
        reason: &str,
        cause: Option<ScoreHead>,
        is_trip: bool,
        emit: &mut Emit<'_>,
    ) -> Result<(), StageError> {
        let history = self.cfg.trip_history_size;
        let n = self.node_mut(node)?;
        let from = n.state;
        let until = ts.add(Duration::from_millis(open_for_ms));
        n.state = BreakerState::Open;
        n.recovered = false;
        n.open_for_ms = open_for_ms;
        n.next_trial_at = Some(until);
        n.half_open_successes = 0;
        n.opened_at = Some(ts);
        n.since = Some(ts);
        if is_trip {
            n.trips.push_back(ts);
            while n.trips.len() > history {
                n.trips.pop_front();
            }
        }
        if self.next_deadline.is_none_or(|d| until < d) {
            self.next_deadline = Some(until);
        }
        self.emit_transition(node, from, reason, ts, ts, cause, emit)
    }

    /// The fleet guard. Returns whether `node` may trip at `ts`; when it may not, emits a
    /// `fleet` record (at most one per window).
    fn fleet_allows(
        &mut self,
        node: &str,
        ts: Timestamp,
        emit: &mut Emit<'_>,
    ) -> Result<bool, StageError> {
        let g = &self.cfg.fleet_guard;
        if !g.enabled {
            return Ok(true);
        }
        let since = ts.sub(g.window);
        // A node counts as failing when it is tripping or one failure from it (opened within
        // the window, or at failure_threshold - 1 consecutive failures): a lone blip is not a
        // failing node, while nodes failing together in a probe round are counted before the
        // first of them reaches the threshold.
        let near = self.cfg.failure_threshold.saturating_sub(1).max(1);
        let mut known = 0u32;
        let mut failing: Vec<&str> = Vec::new();
        for (name, n) in &self.data.nodes {
            let is_failing = match n.state {
                BreakerState::Disabled => continue,
                BreakerState::ForcedOpen => false,
                BreakerState::Open => n.opened_at.is_some_and(|t| t >= since),
                BreakerState::Closed | BreakerState::HalfOpen | BreakerState::MetricsOnly => {
                    n.consecutive_failures >= near && n.last_failure_at.is_some_and(|t| t >= since)
                }
            };
            known += 1;
            if is_failing || name == node {
                failing.push(name);
            }
        }
        if known < g.min_known_nodes || (failing.len() as f64) <= g.threshold * f64::from(known) {
            return Ok(true);
        }
        self.counters.suppressed_trips += 1;
        let due = self
            .data
            .last_fleet_at
            .is_none_or(|last| ts >= last.add(g.window) || ts < last.sub(g.window));
        if due {
            let window = humantime::format_duration(g.window).to_string();
            let fleet = Fleet {
                v: SCHEMA_VERSION,
                kind: Kind::Fleet,
                ts,
                node: "*".into(),
                verdict: "suspect_observer".into(),
                message: format!(
                    "{} of {known} known nodes failing within {window}: suspect the observer or the network; no breaker opened",
                    failing.len()
                ),
                failing: failing
                    .iter()
                    .take(ugro_types::limits::MAX_ITEMS)
                    .map(|s| (*s).to_owned())
                    .collect(),
                failing_count: Some(u32::try_from(failing.len()).unwrap_or(u32::MAX)),
                known_nodes: known,
                threshold: g.threshold,
                window,
            };
            let bytes = serde_json::to_vec(&fleet).map_err(write_err)?;
            self.data.last_fleet_at = Some(ts);
            self.counters.fleet_records += 1;
            self.counters.passed += 1;
            emit(&bytes)?;
        }
        Ok(false)
    }

    #[allow(clippy::too_many_arguments)]
    fn emit_transition(
        &mut self,
        node: &str,
        from: BreakerState,
        reason: &str,
        ts: Timestamp,
        at: Timestamp,
        cause: Option<ScoreHead>,
        emit: &mut Emit<'_>,
    ) -> Result<(), StageError> {
        let t = {
            let n = self.data.nodes.get(node).ok_or_else(|| StageError::Fatal {
                exit: ugro_types::Exit::Software,
                message: format!("breaker state for {node} vanished"),
            })?;
            transition(&self.cfg, node, n, from, reason, ts, at, cause)
        };
        let bytes = serde_json::to_vec(&t).map_err(write_err)?;
        self.counters.transitions += 1;
        self.counters.passed += 1;
        self.transitioned = true;
        emit(&bytes).map_err(StageError::from)
    }

    /// Applies an operator command at wall-clock `now`; returns the transition, if the state
    /// changed. `reset` of a node never seen does nothing.
    pub fn operate(&mut self, node: &str, op: Operation, now: Timestamp) -> Option<Transition> {
        let cfg = &self.cfg;
        if op == Operation::Forget {
            self.transitioned |= self.data.nodes.remove(node).is_some();
            return None;
        }
        if op == Operation::Reset && !self.data.nodes.contains_key(node) {
            return None;
        }
        let n = self
            .data
            .nodes
            .entry(node.to_owned())
            .or_insert_with(|| NodeState::new(BreakerState::Closed));
        let from = n.state;
        let to = op.target();
        if op == Operation::Reset {
            // Reset is also the way out for a node whose clock ran ahead, so its time is forgotten.
            n.last_ts = None;
            n.last_failure_at = None;
            n.open_for_ms = 0;
        }
        if matches!(op, Operation::Reset | Operation::Disable) {
            n.consecutive_failures = 0;
        }
        n.state = to;
        n.next_trial_at = None;
        n.half_open_successes = 0;
        if from == to {
            return None;
        }
        n.since = Some(now);
        self.transitioned = true;
        Some(transition(cfg, node, n, from, op.reason(), now, now, None))
    }
}

#[allow(clippy::too_many_arguments)]
fn transition(
    cfg: &BreakerConfig,
    node: &str,
    n: &NodeState,
    from: BreakerState,
    reason: &str,
    ts: Timestamp,
    at: Timestamp,
    cause: Option<ScoreHead>,
) -> Transition {
    let window_start = at.sub(cfg.trip_window);
    let trips = n
        .trips
        .iter()
        .filter(|t| **t >= window_start && **t <= at)
        .count();
    let trips = u32::try_from(trips).unwrap_or(u32::MAX);
    let people = for_people(cfg.trip_window);
    let (trips_in_window, trip_window, history) = if trips > 0 {
        (
            Some(trips),
            Some(humantime::format_duration(cfg.trip_window).to_string()),
            Some(format!(
                "{trips} trip{} in {people}",
                if trips == 1 { "" } else { "s" }
            )),
        )
    } else {
        (None, None, None)
    };
    let open = n.state == BreakerState::Open;
    Transition {
        v: SCHEMA_VERSION,
        kind: Kind::Transition,
        ts,
        node: node.to_owned(),
        from,
        to: n.state,
        reason: reason.to_owned(),
        consecutive_failures: n.consecutive_failures,
        at,
        next_trial_at: if open { n.next_trial_at } else { None },
        open_for_ms: if open { Some(n.open_for_ms) } else { None },
        trips_in_window,
        trip_window,
        history,
        cause_state: cause.map(|c| c.state),
        cause_action: cause.and_then(|c| c.action),
    }
}

#[cfg(test)]
mod tests;
