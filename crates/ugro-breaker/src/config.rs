//! The breaker's YAML configuration (`-c FILE`). Keys are resilience4j's parameter names in
//! snake case where the concept is the same.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ugro_support::config::{ConfigError, Range, load_yaml};

/// How a scored record counts for its node's breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Counts as a failure (towards the threshold; fails a half-open trial).
    Failure,
    /// Counts as a success (resets the consecutive failures; passes a half-open trial).
    Success,
    /// Neither counts nor resets; passes through (or is held) like any other record.
    Ignore,
}

/// The fleet guard: too many nodes failing at once blames the observer, not the nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetGuardConfig {
    /// Off: every breaker trips on its own failures whatever the rest of the fleet does.
    pub enabled: bool,
    /// The share of known nodes (0–1) that must be failing, strictly exceeded, to suppress a trip.
    pub threshold: f64,
    /// How recent (in record time) a node's last failure or trip must be for it to count as failing.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Below this many known nodes the guard is off (in a fleet of two, one bad node is half).
    pub min_known_nodes: u32,
}

impl Default for FleetGuardConfig {
    fn default() -> Self {
        FleetGuardConfig {
            enabled: true,
            threshold: 0.5,
            window: Duration::from_secs(60),
            min_known_nodes: 3,
        }
    }
}

/// Everything the breaker can be told. `Default` is the built-in behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failures that open a closed breaker. (resilience4j counts a failure rate
    /// over a count-based window; a window of N calls at a 100 % rate is exactly this.)
    pub failure_threshold: u32,
    /// How long a breaker stays open before it lets a trial through.
    #[serde(with = "humantime_serde")]
    pub wait_duration_in_open_state: Duration,
    /// Successful trial records needed in half-open to close again; any failure reopens.
    pub permitted_number_of_calls_in_half_open_state: u32,
    /// Multiply the open time after each failed trial.
    pub enable_exponential_backoff: bool,
    /// The factor for each failed trial.
    pub exponential_backoff_multiplier: f64,
    /// The cap on the open time.
    #[serde(with = "humantime_serde")]
    pub exponential_max_wait_duration_in_open_state: Duration,
    /// Move open breakers to half-open as soon as the stream's time passes their trial time
    /// (any node's record, or a tick), instead of on the node's own next record.
    pub automatic_transition_from_open_to_half_open_enabled: bool,
    /// How a `degraded` score counts.
    pub degraded: Outcome,
    /// How an `unknown` score counts when the node was reachable (missing sections).
    pub unknown: Outcome,
    /// How a sample counts whose `unreachable` is set (its score is `unknown`).
    pub unreachable: Outcome,
    /// A record this much older than its node's newest record is stale: passed (or held) but
    /// not counted (a smaller gap is merely out of order, likewise not counted).
    #[serde(with = "humantime_serde")]
    pub max_record_age: Duration,
    /// A record whose ts is more than this ahead of this host's clock is rejected as a bad
    /// line (it would otherwise move time forward for everyone); `0s` turns the check off.
    #[serde(with = "humantime_serde")]
    pub max_clock_skew: Duration,
    /// Annotate records of open nodes and pass them instead of holding them back.
    pub pass_open: bool,
    /// Trip times kept per node.
    pub trip_history_size: usize,
    /// The window "N trips in …" is counted over.
    #[serde(with = "humantime_serde")]
    pub trip_window: Duration,
    /// In long runs, the least wall-clock time between state writes after a change; `0s` writes
    /// after every transition. End of input always writes.
    #[serde(with = "humantime_serde")]
    pub persist_interval: Duration,
    /// The fleet guard.
    pub fleet_guard: FleetGuardConfig,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: 3,
            wait_duration_in_open_state: Duration::from_secs(300),
            permitted_number_of_calls_in_half_open_state: 1,
            enable_exponential_backoff: true,
            exponential_backoff_multiplier: 2.0,
            exponential_max_wait_duration_in_open_state: Duration::from_secs(3600),
            automatic_transition_from_open_to_half_open_enabled: false,
            degraded: Outcome::Success,
            unknown: Outcome::Ignore,
            unreachable: Outcome::Failure,
            max_record_age: Duration::from_secs(600),
            max_clock_skew: Duration::from_secs(300),
            pass_open: false,
            trip_history_size: 20,
            trip_window: Duration::from_secs(7 * 86_400),
            persist_interval: Duration::from_secs(1),
            fleet_guard: FleetGuardConfig::default(),
        }
    }
}

impl BreakerConfig {
    /// Loads `path`, or the defaults for `None`. Errors name the file, the line and the field.
    pub fn load(path: Option<&Path>) -> Result<BreakerConfig, crate::Error> {
        let Some(path) = path else {
            return Ok(BreakerConfig::default());
        };
        let (cfg, text): (BreakerConfig, String) = load_yaml(path)?;
        // Each value in its range first, then the relations between them.
        cfg.check_ranges()
            .map_err(|(field, msg)| ConfigError::invalid(path, &text, &field, msg))?;
        cfg.validate()
            .map_err(|(field, msg)| ConfigError::invalid(path, &text, field, msg))?;
        Ok(cfg)
    }

    /// Upper bounds (issue 15): a wait of centuries overflows the clock arithmetic, a trip
    /// history of a billion entries is memory per node.
    pub fn check_ranges(&self) -> Result<(), (String, String)> {
        let day = Duration::from_secs(86_400);
        let wait = Range::new(Duration::ZERO, 365 * day);
        [
            Range::new(1, 1_000_000).check("failure_threshold", self.failure_threshold),
            wait.check(
                "wait_duration_in_open_state",
                self.wait_duration_in_open_state,
            ),
            Range::new(1, 1_000_000).check(
                "permitted_number_of_calls_in_half_open_state",
                self.permitted_number_of_calls_in_half_open_state,
            ),
            Range::new(1.0, 1000.0).check(
                "exponential_backoff_multiplier",
                self.exponential_backoff_multiplier,
            ),
            wait.check(
                "exponential_max_wait_duration_in_open_state",
                self.exponential_max_wait_duration_in_open_state,
            ),
            wait.check("max_record_age", self.max_record_age),
            Range::new(Duration::ZERO, day).check("max_clock_skew", self.max_clock_skew),
            Range::new(1, 10_000).check("trip_history_size", self.trip_history_size),
            wait.check("trip_window", self.trip_window),
            Range::new(Duration::ZERO, day).check("persist_interval", self.persist_interval),
            wait.check("fleet_guard.window", self.fleet_guard.window),
        ]
        .into_iter()
        .collect()
    }

    /// Checks the values serde cannot: ranges and their relations.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.failure_threshold == 0 {
            return Err(("failure_threshold", "must be at least 1".into()));
        }
        if self.wait_duration_in_open_state.is_zero() {
            return Err((
                "wait_duration_in_open_state",
                "must be longer than 0s".into(),
            ));
        }
        if self.permitted_number_of_calls_in_half_open_state == 0 {
            return Err((
                "permitted_number_of_calls_in_half_open_state",
                "must be at least 1".into(),
            ));
        }
        if !(self.exponential_backoff_multiplier.is_finite()
            && self.exponential_backoff_multiplier >= 1.0)
        {
            return Err((
                "exponential_backoff_multiplier",
                "must be a number of at least 1".into(),
            ));
        }
        if self.exponential_max_wait_duration_in_open_state < self.wait_duration_in_open_state {
            return Err((
                "exponential_max_wait_duration_in_open_state",
                "must not be shorter than wait_duration_in_open_state".into(),
            ));
        }
        if self.trip_history_size == 0 {
            return Err(("trip_history_size", "must be at least 1".into()));
        }
        let g = &self.fleet_guard;
        if !(g.threshold.is_finite() && (0.0..1.0).contains(&g.threshold)) {
            return Err((
                "fleet_guard.threshold",
                "must be a share from 0 up to (not including) 1".into(),
            ));
        }
        if g.window.is_zero() {
            return Err(("fleet_guard.window", "must be longer than 0s".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<BreakerConfig, crate::Error> {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("b.yaml");
        std::fs::write(&p, text).unwrap();
        BreakerConfig::load(Some(&p))
    }

    #[test]
    fn values_beyond_their_range_are_refused_naming_line_field_and_value() {
        for (text, want) in [
            (
                "failure_threshold: 3\ntrip_history_size: 1000000000\n",
                ":2: trip_history_size: 1000000000 is out of range",
            ),
            (
                "wait_duration_in_open_state: 1000years\n",
                ":1: wait_duration_in_open_state: 1000years",
            ),
            (
                "exponential_backoff_multiplier: 1e300\n",
                ":1: exponential_backoff_multiplier: 1e300",
            ),
        ] {
            let e = load_text(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn the_example_file_spells_out_the_defaults() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("breaker.example.yaml");
        assert_eq!(
            BreakerConfig::load(Some(&p)).unwrap(),
            BreakerConfig::default()
        );
    }

    #[test]
    fn partial_file_keeps_defaults_for_the_rest() {
        let c = load_text("failure_threshold: 5\nfleet_guard:\n  window: 2m\n").unwrap();
        assert_eq!(c.failure_threshold, 5);
        assert_eq!(c.fleet_guard.window, Duration::from_secs(120));
        assert_eq!(c.fleet_guard.threshold, 0.5);
        assert_eq!(c.wait_duration_in_open_state, Duration::from_secs(300));
    }

    #[test]
    fn bad_values_name_line_and_field() {
        let e = load_text("degraded: success\nfailure_threshold: 0\n").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("b.yaml:2: failure_threshold"), "{m}");
        let e = load_text("wait_duration_in_open_state: soon\n").unwrap_err();
        assert!(
            e.to_string().contains(":1: wait_duration_in_open_state"),
            "{e}"
        );
        let e = load_text("failureThreshold: 3\n").unwrap_err();
        assert!(e.to_string().contains("failureThreshold"), "{e}");
    }

    #[test]
    fn cap_below_base_wait_is_refused() {
        let e = load_text(
            "wait_duration_in_open_state: 10m\nexponential_max_wait_duration_in_open_state: 5m\n",
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains(":2: exponential_max_wait_duration_in_open_state"),
            "{e}"
        );
    }
}
