//! The quarantine budget (NVSentinel's circuit breaker): ugro never holds more than its cap of
//! nodes drained within a sliding window. The node that would go past it trips the budget;
//! from then on no node is drained or remediated until an operator re-arms it
//! (`ugro-alert budget reset`), because so many faults at once are more likely a fleet problem
//! (a bad driver roll-out, a cooling failure, a broken check) than so many bad nodes.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use ugro_types::Timestamp;

use super::config::BudgetConfig;

/// What the budget remembers (in the remediation state file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BudgetState {
    /// Drains ugro made, with their time, for the window.
    #[serde(default)]
    pub drains: Vec<(String, Timestamp)>,
    /// When it tripped; None while armed.
    #[serde(default)]
    pub tripped: Option<Timestamp>,
    /// Nodes held when an operator re-armed it: they no longer count (the operator has seen
    /// them), so the reset lets new drains in at once.
    #[serde(default)]
    pub forgiven: BTreeSet<String>,
}

/// Whether a node may be drained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Yes (and it now counts against the budget).
    Drain,
    /// No: the budget tripped before.
    Exhausted,
    /// No: this node trips it now (`used` of `cap` nodes held).
    Trips {
        /// Nodes held or drained within the window.
        used: usize,
        /// The cap for the known nodes.
        cap: usize,
    },
}

impl BudgetState {
    /// Nodes that count against the budget at `now`: those held now and those drained within
    /// the window.
    pub fn used(&self, cfg: &BudgetConfig, held: &BTreeSet<String>, now: Timestamp) -> usize {
        self.counted(cfg, held, now).len()
    }

    fn counted<'a>(
        &'a self,
        cfg: &BudgetConfig,
        held: &'a BTreeSet<String>,
        now: Timestamp,
    ) -> BTreeSet<&'a str> {
        let mut nodes: BTreeSet<&str> = held
            .iter()
            .filter(|n| !self.forgiven.contains(*n))
            .map(String::as_str)
            .collect();
        for (n, t) in &self.drains {
            if now.since(*t) <= cfg.window {
                nodes.insert(n);
            }
        }
        nodes
    }

    /// Decides for `node` (not held now) with `known` nodes known, and records a drain.
    pub fn admit(
        &mut self,
        cfg: &BudgetConfig,
        node: &str,
        held: &BTreeSet<String>,
        known: usize,
        now: Timestamp,
    ) -> Verdict {
        self.drains.retain(|(_, t)| now.since(*t) <= cfg.window);
        self.forgiven.retain(|n| held.contains(n));
        if !cfg.enabled {
            self.drains.push((node.to_owned(), now));
            return Verdict::Drain;
        }
        if self.tripped.is_some() {
            return Verdict::Exhausted;
        }
        // A node drained again within the window takes no second place.
        let mut counted = self.counted(cfg, held, now);
        counted.remove(node);
        let used = counted.len();
        let cap = cfg.cap(known);
        if used + 1 > cap {
            self.tripped = Some(now);
            return Verdict::Trips { used, cap };
        }
        self.drains.push((node.to_owned(), now));
        Verdict::Drain
    }

    /// Re-arms it (the operator's `budget reset`): the window starts empty and the nodes
    /// `held` now stop counting.
    pub fn reset(&mut self, held: &BTreeSet<String>) {
        self.tripped = None;
        self.drains.clear();
        self.forgiven = held.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max_nodes: u32) -> BudgetConfig {
        BudgetConfig {
            max_percent: None,
            max_nodes: Some(max_nodes),
            ..BudgetConfig::default()
        }
    }

    #[test]
    fn the_node_past_the_cap_trips_it_and_nothing_drains_until_reset() {
        let c = cfg(2);
        let mut b = BudgetState::default();
        let mut held = BTreeSet::new();
        for n in ["a", "b"] {
            assert_eq!(b.admit(&c, n, &held, 10, Timestamp(0)), Verdict::Drain);
            held.insert(n.to_owned());
        }
        assert_eq!(
            b.admit(&c, "c", &held, 10, Timestamp(1)),
            Verdict::Trips { used: 2, cap: 2 }
        );
        assert_eq!(
            b.admit(&c, "d", &held, 10, Timestamp(2)),
            Verdict::Exhausted
        );
        // Reset while a and b are still held: they no longer count.
        b.reset(&held);
        assert_eq!(b.admit(&c, "d", &held, 10, Timestamp(3)), Verdict::Drain);
        held.insert("d".into());
        assert_eq!(b.admit(&c, "e", &held, 10, Timestamp(4)), Verdict::Drain);
        held.insert("e".into());
        assert!(matches!(
            b.admit(&c, "f", &held, 10, Timestamp(5)),
            Verdict::Trips { used: 2, cap: 2 }
        ));
    }

    #[test]
    fn drains_leave_the_window_after_it_but_held_nodes_keep_counting() {
        let c = cfg(1);
        let mut b = BudgetState::default();
        let held = BTreeSet::new();
        assert_eq!(b.admit(&c, "a", &held, 10, Timestamp(0)), Verdict::Drain);
        assert_eq!(
            b.admit(&c, "a", &held, 10, Timestamp(1)),
            Verdict::Drain,
            "the same node again takes no second place"
        );
        // 5 minutes later the drain of a (resumed since) no longer counts.
        let later = Timestamp(301_000);
        assert_eq!(b.admit(&c, "b", &held, 10, later), Verdict::Drain);
        let held: BTreeSet<String> = ["b".to_owned()].into();
        assert!(matches!(
            b.admit(&c, "c", &held, 10, Timestamp(700_000)),
            Verdict::Trips { used: 1, cap: 1 }
        ));
    }
}
