//! The latest of everything per node, fed record lines in pipeline order: what
//! `ugro-score --format prometheus` writes and what a scrape endpoint serves.
//!
//! * `sample` records replace the node's sample (scored or not); a `breaker` annotation on
//!   one sets the node's breaker state, and a sample without one keeps the state it had.
//! * `transition` records set the breaker state (`to`, failures, next trial).
//! * `alert` records: firing adds the alert (by fingerprint), resolved removes it.
//! * Other kinds change nothing.
//!
//! Nodes stay until the table is dropped: a node that stops reporting keeps its last values,
//! and `ugro_probe_timestamp_seconds` shows how old they are (the contrib rules alert on it).

use std::collections::BTreeMap;

use serde::Deserialize;
use ugro_types::view::{AlertView, BreakerView, TransitionView};
use ugro_types::{Kind, RecordError, Sample, check_header, parse_header};

use crate::fleet::{FiringAlert, PollStats, WatcherStats};
use crate::{Names, NodeView, Renderer};

#[derive(Debug, Default)]
struct Entry {
    sample: Option<Sample>,
    breaker: Option<BreakerView>,
    poll: Option<PollStats>,
}

#[derive(Deserialize)]
struct Annotation {
    #[serde(default)]
    breaker: Option<BreakerView>,
}

/// The latest record of every node, and the alerts firing.
#[derive(Debug, Default)]
pub struct NodeTable {
    nodes: BTreeMap<String, Entry>,
    alerts: BTreeMap<String, FiringAlert>,
}

impl NodeTable {
    /// An empty table.
    pub fn new() -> Self {
        NodeTable::default()
    }

    /// Takes one record line; says whether anything changed. A line that is not a valid
    /// record of a kind the table reads is an error naming the cause, and changes nothing.
    pub fn ingest(&mut self, line: &str) -> Result<bool, RecordError> {
        // Samples are nearly every line: one typed pass reads them (the header check on the
        // result); the header alone is read only for the other kinds, or to name an error.
        let sample = serde_json::from_str::<Sample>(line);
        if let Ok(s) = &sample
            && s.kind == Kind::Sample
        {
            check_header(s.v, &s.node)?;
        }
        match sample {
            Ok(s) if s.kind == Kind::Sample => {
                // Only a line that names the key can carry the annotation: skip a second pass.
                let breaker = match line.contains("\"breaker\"") {
                    true => serde_json::from_str::<Annotation>(line)?.breaker,
                    false => None,
                };
                self.set_sample(s, breaker);
                Ok(true)
            }
            other => {
                let h = parse_header(line)?;
                match (h.kind, other) {
                    (Kind::Sample, Err(e)) => Err(e.into()),
                    (Kind::Transition, _) => Ok(self.transition(&h.node, line)?),
                    (Kind::Alert, _) => Ok(self.alert(line)?),
                    _ => Ok(false),
                }
            }
        }
    }

    fn transition(&mut self, node: &str, line: &str) -> Result<bool, RecordError> {
        let t = TransitionView::parse(line)?;
        let Some(b) = breaker_after(&t) else {
            return Ok(false);
        };
        self.set_breaker(node, b);
        Ok(true)
    }

    fn alert(&mut self, line: &str) -> Result<bool, RecordError> {
        let a = AlertView::parse(line)?;
        self.set_alert(&a.fingerprint, FiringAlert::from_record(&a));
        Ok(true)
    }

    /// Sets a node's breaker state (from an annotation, or [`breaker_after`] a transition).
    pub fn set_breaker(&mut self, node: &str, breaker: BreakerView) {
        self.nodes.entry(node.to_owned()).or_default().breaker = Some(breaker);
    }

    /// Sets the alert with this fingerprint firing, or (`None`) resolved.
    pub fn set_alert(&mut self, fingerprint: &str, firing: Option<FiringAlert>) {
        match firing {
            Some(f) => {
                self.alerts.insert(fingerprint.to_owned(), f);
            }
            None => {
                self.alerts.remove(fingerprint);
            }
        }
    }

    /// Keeps only the nodes for which `keep` holds (a watcher's reloaded node list), and the
    /// alerts of those nodes and the fleet-wide ones.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.nodes.retain(|n, _| keep(n));
        self.alerts
            .retain(|_, a| a.node.as_deref().is_none_or(&keep));
    }

    /// Sets a node's latest sample, and its breaker state when the record had one.
    pub fn set_sample(&mut self, sample: Sample, breaker: Option<BreakerView>) {
        let e = self.nodes.entry(sample.node.clone()).or_default();
        e.sample = Some(sample);
        if breaker.is_some() {
            e.breaker = breaker;
        }
    }

    /// Sets what the watcher knows of a node's polls.
    pub fn set_poll(&mut self, node: &str, poll: PollStats) {
        self.nodes.entry(node.to_owned()).or_default().poll = Some(poll);
    }

    /// Nodes known.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node is known.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The alerts firing.
    pub fn firing(&self) -> impl Iterator<Item = &FiringAlert> {
        self.alerts.values()
    }

    /// The exposition of every node (in name order), the firing alerts and, when given, the
    /// watcher's own health.
    pub fn render(&self, names: Names, watcher: Option<&WatcherStats>) -> String {
        self.renderer(names, watcher).render()
    }

    /// The same exposition, not yet written out (see [`Renderer::write_to`]).
    pub fn renderer(&self, names: Names, watcher: Option<&WatcherStats>) -> Renderer {
        let mut r = Renderer::new(names);
        for (node, e) in &self.nodes {
            r.node(&NodeView {
                node,
                sample: e.sample.as_ref(),
                breaker: e.breaker,
                poll: e.poll.as_ref(),
            });
        }
        r.alerts(self.alerts.values());
        if let Some(w) = watcher {
            r.watcher(w);
        }
        r
    }
}

/// The breaker state a transition record leaves its node in; `None` for a record without `to`.
pub fn breaker_after(t: &TransitionView<'_>) -> Option<BreakerView> {
    Some(BreakerView {
        state: t.to?,
        consecutive_failures: t.consecutive_failures.unwrap_or(0),
        next_trial_at: t.next_trial_at,
    })
}
