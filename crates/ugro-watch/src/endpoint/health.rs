//! `/healthz`: whether the live loop is alive, polling cycles finish, and the state can be
//! written. Ages are taken on the monotonic clock at the time of the request (`now`), from
//! the heartbeat the loop leaves every `--tick`.

use std::time::{Duration, Instant};

use serde::Serialize;

/// What the loop last said about itself.
#[derive(Debug, Clone)]
pub struct Health {
    /// When the loop last ran its periodic work (it does every tick).
    pub alive: Instant,
    /// When a polling cycle last finished (the start, until the first one has).
    pub last_cycle: Instant,
    /// Cycles finished since the start.
    pub cycles: u64,
    /// Why the state directory or a stage's state file cannot be written, while it cannot.
    pub state_error: Option<String>,
    /// The loop's `--tick`.
    pub tick: Duration,
    /// What one cycle may take: the base interval plus the poll timeout.
    pub cycle_budget: Duration,
}

/// The answer, as `/healthz` writes it (JSON); HTTP 200 when `ok`, else 503.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    /// Everything works.
    #[serde(skip)]
    pub ok: bool,
    /// `ok`, or the first problem: `loop_stalled`, `polling_stalled`, `state_unwritable`.
    pub status: &'static str,
    /// Seconds since the loop last ran.
    pub loop_age_seconds: f64,
    /// Seconds since a polling cycle last finished.
    pub last_cycle_age_seconds: f64,
    /// Cycles finished.
    pub cycles: u64,
    /// Whether the state can be written.
    pub state_writable: bool,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_error: Option<String>,
}

impl Health {
    /// The heartbeat of a loop that is starting.
    pub fn starting(now: Instant) -> Health {
        Health {
            alive: now,
            last_cycle: now,
            cycles: 0,
            state_error: None,
            tick: Duration::from_secs(1),
            cycle_budget: Duration::from_secs(15),
        }
    }

    /// The loop is stalled when it has not run for five ticks (at least 10 s); polling is,
    /// when no cycle has finished for twice a cycle's budget beyond that.
    pub fn verdict(&self, now: Instant) -> Verdict {
        let loop_limit = (self.tick * 5).max(Duration::from_secs(10));
        let cycle_limit = self.cycle_budget * 2 + loop_limit;
        let loop_age = now.saturating_duration_since(self.alive);
        let cycle_age = now.saturating_duration_since(self.last_cycle);
        let status = if loop_age > loop_limit {
            "loop_stalled"
        } else if cycle_age > cycle_limit {
            "polling_stalled"
        } else if self.state_error.is_some() {
            "state_unwritable"
        } else {
            "ok"
        };
        Verdict {
            ok: status == "ok",
            status,
            loop_age_seconds: round_ms(loop_age),
            last_cycle_age_seconds: round_ms(cycle_age),
            cycles: self.cycles,
            state_writable: self.state_error.is_none(),
            state_error: self.state_error.clone(),
        }
    }
}

fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_loop_stuck_cycles_or_unwritable_state_are_unhealthy() {
        let t0 = Instant::now();
        let mut h = Health::starting(t0);
        h.cycle_budget = Duration::from_secs(15);
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(h.verdict(at(5)).status, "ok");
        assert!(h.verdict(at(5)).ok);
        // Ten seconds without a heartbeat (five ticks of 1 s, at least 10 s): stalled.
        assert_eq!(h.verdict(at(11)).status, "loop_stalled");
        h.alive = at(40);
        assert_eq!(
            h.verdict(at(40)).status,
            "ok",
            "cycles may take 2 × 15 s + 10 s"
        );
        h.alive = at(41);
        assert_eq!(h.verdict(at(41)).status, "polling_stalled");
        h.last_cycle = at(41);
        h.state_error = Some("No space left on device".into());
        let v = h.verdict(at(41));
        assert_eq!(
            (v.status, v.ok, v.state_writable),
            ("state_unwritable", false, false)
        );
        let json = serde_json::to_string(&v).unwrap();
        assert!(
            json.contains(r#""state_error":"No space left on device""#),
            "{json}"
        );
        assert!(!json.contains("\"ok\""), "{json}");
    }
}
