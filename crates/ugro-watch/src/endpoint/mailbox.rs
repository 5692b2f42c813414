//! The endpoint's queue: the newest entry per key, taken in the order the entries were put.
//!
//! A bounded channel would either make the feeding side wait when it is full (the polling
//! path must not) or drop entries (a dropped `resolved` would leave an alert firing forever).
//! Keeping one entry per key — a node's sample, breaker state and polls, an alert's
//! fingerprint, the node list, the watcher's figures — bounds the mailbox by the fleet and
//! its alerts, and an older entry that is replaced says nothing the newer one does not. The
//! entries are taken in the order they were put, so a breaker annotation followed by a
//! transition of the same node leaves the transition's state, as in the record stream.

use std::collections::HashMap;

use ugro_metrics::{FiringAlert, PollStats, WatcherStats};
use ugro_types::Score;
use ugro_types::view::BreakerView;

/// What an entry replaces: an older one with the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A node's sample.
    Sample(String),
    /// A node's breaker state.
    Breaker(String),
    /// A node's polls.
    Poll(String),
    /// An alert, by fingerprint.
    Alert(String),
    /// The node list.
    Nodes,
    /// The watcher's own figures.
    Watcher,
}

/// One entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Update {
    /// A sample line, and its score when the line does not carry one.
    Sample {
        /// The record.
        line: String,
        /// The scorer's verdict (raw mode).
        score: Option<Box<Score>>,
    },
    /// A breaker state.
    Breaker(BreakerView),
    /// Polls.
    Poll(PollStats),
    /// Firing, or resolved.
    Alert(Option<FiringAlert>),
    /// The nodes watched.
    Nodes(Vec<String>),
    /// The watcher's figures.
    Watcher(Box<WatcherStats>),
}

/// The newest entry per key.
#[derive(Debug, Default)]
pub struct Mailbox {
    seq: u64,
    pending: HashMap<Key, (u64, Update)>,
}

impl Mailbox {
    /// Puts an entry, replacing the one with the same key.
    pub fn put(&mut self, key: Key, update: Update) {
        self.seq += 1;
        self.pending.insert(key, (self.seq, update));
    }

    /// Entries waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether none is waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Everything waiting, in the order it was put; the mailbox is left empty.
    pub fn take(&mut self) -> Vec<(Key, Update)> {
        let mut all: Vec<(Key, (u64, Update))> =
            std::mem::take(&mut self.pending).into_iter().collect();
        all.sort_unstable_by_key(|(_, (seq, _))| *seq);
        all.into_iter().map(|(k, (_, u))| (k, u)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ugro_types::BreakerState;

    fn breaker(state: BreakerState) -> Update {
        Update::Breaker(BreakerView {
            state,
            consecutive_failures: 0,
            next_trial_at: None,
        })
    }

    #[test]
    fn the_newest_entry_per_key_is_kept_and_entries_come_out_in_the_order_put() {
        let mut m = Mailbox::default();
        let b = |n: &str| Key::Breaker(n.into());
        m.put(b("a"), breaker(BreakerState::Closed));
        m.put(Key::Nodes, Update::Nodes(vec!["a".into(), "b".into()]));
        m.put(b("b"), breaker(BreakerState::Open));
        m.put(b("a"), breaker(BreakerState::HalfOpen));
        for _ in 0..1000 {
            m.put(Key::Alert("f1".into()), Update::Alert(None));
        }
        assert_eq!(
            m.len(),
            4,
            "bounded by the keys, not by how often they change"
        );
        let got = m.take();
        let keys: Vec<&Key> = got.iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [&Key::Nodes, &b("b"), &b("a"), &Key::Alert("f1".into())]
        );
        assert_eq!(got[2].1, breaker(BreakerState::HalfOpen));
        assert!(m.is_empty());
    }
}
