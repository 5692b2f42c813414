//! Flap detection as Nagios Core does it (base/flapping.c): the node's last `samples` (21)
//! states, the share of them that changed, each change weighted linearly from 0.75 (oldest)
//! to 1.25 (newest) so recent changes count more, as a percentage of the `samples - 1`
//! possible changes. A node starts flapping when that reaches `high_threshold` and stops when
//! it falls to `low_threshold`; in between it stays as it was (hysteresis). The states are
//! hard states (what the node's active alerts say, after `for`): Nagios records only hard
//! states and soft recoveries (check_for_service_flapping returns before recording a soft
//! non-OK state), so blips that never fire do not make a node flap. One difference: a sample
//! whose condition is still pending (Nagios's soft state) records ok here rather than nothing.

use serde::{Deserialize, Serialize};

/// Nagios's curve: the weight of the oldest and of the newest change.
const LOW_CURVE: f64 = 0.75;
const HIGH_CURVE: f64 = 1.25;

/// Flap detection settings (`flap_detection:` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlapConfig {
    /// Off: no NodeFlapping, nothing suppressed.
    pub enabled: bool,
    /// States kept per node (Nagios: 21).
    pub samples: usize,
    /// Percent state change at or below which a flapping node has settled (Nagios: 5.0).
    pub low_threshold: f64,
    /// Percent state change at or above which a node is flapping (Nagios: 20.0).
    pub high_threshold: f64,
}

impl Default for FlapConfig {
    fn default() -> Self {
        FlapConfig {
            enabled: true,
            samples: 21,
            low_threshold: 5.0,
            high_threshold: 20.0,
        }
    }
}

/// One node's state history, as persisted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Flap {
    /// One letter per sample, oldest first (`O` `W` `C` `U`: see
    /// [`crate::pending::hard_state`]).
    #[serde(default)]
    pub history: String,
    /// Flapping now.
    #[serde(default)]
    pub flapping: bool,
}

impl Flap {
    /// Records one sample's state; returns the new flapping state when it changed.
    pub fn record(&mut self, state: u8, cfg: &FlapConfig) -> Option<bool> {
        let n = cfg.samples.max(3);
        let letter = char::from(state);
        if self.history.is_empty() {
            // Nagios fills the history with the current state when detection starts.
            self.history = std::iter::repeat_n(letter, n).collect();
        } else {
            self.history.push(letter);
            while self.history.len() > n {
                self.history.remove(0);
            }
        }
        let p = self.percent(n);
        let now = if p >= cfg.high_threshold {
            true
        } else if p <= cfg.low_threshold {
            false
        } else {
            self.flapping
        };
        (now != self.flapping).then(|| {
            self.flapping = now;
            now
        })
    }

    /// The weighted percent state change over the last `n` states.
    pub fn percent(&self, n: usize) -> f64 {
        let h = self.history.as_bytes();
        let start = h.len().saturating_sub(n);
        let h = &h[start..];
        if h.len() < 3 {
            return 0.0;
        }
        let steps = (h.len() - 2) as f64;
        let changes: f64 = (1..h.len())
            .filter(|&x| h[x] != h[x - 1])
            .map(|x| (x - 1) as f64 * (HIGH_CURVE - LOW_CURVE) / steps + LOW_CURVE)
            .sum();
        changes * 100.0 / (h.len() - 1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(f: &mut Flap, states: &str) -> Vec<Option<bool>> {
        let cfg = FlapConfig::default();
        states.bytes().map(|s| f.record(s, &cfg)).collect()
    }

    #[test]
    fn one_change_at_the_newest_end_weighs_one_and_a_quarter() {
        let mut f = Flap::default();
        feed(&mut f, "O");
        feed(&mut f, "W");
        assert!((f.percent(21) - 1.25 * 100.0 / 20.0).abs() < 1e-9);
    }

    #[test]
    fn four_recent_changes_start_flapping_and_it_stops_only_below_the_low_threshold() {
        let mut f = Flap::default();
        let got = feed(&mut f, "OOOOOWWWOOWWWO");
        assert_eq!(got.iter().filter(|c| c.is_some()).count(), 1);
        assert_eq!(got.last(), Some(&Some(true)), "{got:?}");
        // Settling: the changes age and leave the window; between the thresholds nothing moves.
        let mut settled_after = None;
        for i in 0..30 {
            if let Some(false) = f.record(b'O', &FlapConfig::default()) {
                settled_after = Some(i + 1);
                break;
            }
            assert!(f.flapping);
        }
        let n = settled_after.expect("settles");
        assert!((10..=21).contains(&n), "settled after {n} stable samples");
    }

    #[test]
    fn a_steady_node_never_flaps() {
        let mut f = Flap::default();
        assert!(feed(&mut f, &"C".repeat(50)).iter().all(Option::is_none));
        assert_eq!(f.percent(21), 0.0);
    }
}
