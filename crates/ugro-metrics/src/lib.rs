//! Prometheus text exposition of ugro records, shared by `ugro-probe --format prometheus`,
//! `ugro-score --format prometheus` and ugro-watch's scrape endpoint.
//!
//! * [`catalog`]: every family (name, type, labels, source, HELP) — the one list the
//!   renderers write and contrib/README.md documents.
//! * [`render_sample`]: one sample's probe readings (ugro-probe).
//! * [`Renderer`]: any number of nodes ([`NodeView`]: sample, score, breaker, polls), the
//!   firing alerts and the watcher's health ([`fleet`]) into one exposition, each family once.
//! * [`table::NodeTable`]: the latest sample, breaker state and firing alerts per node, fed
//!   record lines; renders through [`Renderer`].
//!
//! ugro's own names are always written; [`Names::Dcgm`] adds dcgm-exporter's names and labels
//! for the readings both have ([`dcgm`](crate::catalog::Source::Dcgm) families).

pub mod catalog;
mod dcgm;
pub mod expo;
pub mod fleet;
mod sample;
mod score;
pub mod table;

use ugro_types::Sample;
use ugro_types::view::BreakerView;

pub use catalog::{CATALOG, Kind, Metric, Source};
pub use expo::{Exposition, Labels};
pub use fleet::{DeliveryStats, FiringAlert, PollStats, QueueStats, WatcherStats};
pub use table::NodeTable;

/// Which names to write (`--metric-names`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Names {
    /// ugro's own names only.
    #[default]
    Ugro,
    /// ugro's names, and dcgm-exporter's names and labels for the GPU readings both have.
    Dcgm,
}

/// What is known about one node.
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    /// The node name (the `node` label).
    pub node: &'a str,
    /// Its latest sample, scored or not.
    pub sample: Option<&'a Sample>,
    /// Its breaker state.
    pub breaker: Option<BreakerView>,
    /// The watcher's view of its polls.
    pub poll: Option<&'a PollStats>,
}

/// Builds one exposition from many nodes.
#[derive(Debug, Default)]
pub struct Renderer {
    e: Exposition,
    names: Names,
}

impl Renderer {
    /// An empty exposition writing `names`.
    pub fn new(names: Names) -> Self {
        Renderer {
            e: Exposition::new(),
            names,
        }
    }

    /// Adds a node: probe readings, reachability and score when there is a sample, breaker
    /// and poll series when known, DCGM's names when asked for.
    pub fn node(&mut self, n: &NodeView<'_>) {
        let labels = Labels::new().with("node", n.node);
        if let Some(s) = n.sample {
            sample::sample(&mut self.e, &labels, s);
            score::reachability(&mut self.e, &labels, s);
            if let Some(sc) = &s.score {
                score::score(&mut self.e, &labels, s, sc);
            }
        }
        if let Some(b) = &n.breaker {
            score::breaker(&mut self.e, &labels, b);
        }
        if let Some(p) = n.poll {
            fleet::poll(&mut self.e, &labels, p);
        }
        if let (Some(s), Names::Dcgm) = (n.sample, self.names) {
            dcgm::sample(&mut self.e, s);
        }
    }

    /// Adds firing alerts.
    pub fn alerts<'a>(&mut self, alerts: impl IntoIterator<Item = &'a FiringAlert>) {
        fleet::alerts(&mut self.e, alerts);
    }

    /// Adds the watcher's own health.
    pub fn watcher(&mut self, w: &WatcherStats) {
        fleet::watcher(&mut self.e, w);
    }

    /// The text.
    pub fn render(&self) -> String {
        self.e.render()
    }

    /// The text's length in bytes.
    pub fn text_len(&self) -> usize {
        self.e.text_len()
    }

    /// Writes the text without building it in one piece (see [`Exposition::write_to`]).
    pub fn write_to(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        self.e.write_to(w)
    }
}

/// One sample's probe readings, as `ugro-probe --format prometheus` writes them (no
/// reachability or score series: the probe is on the node and scores nothing).
pub fn render_sample(s: &Sample, names: Names) -> String {
    let mut e = Exposition::new();
    sample::sample(&mut e, &Labels::new().with("node", &s.node), s);
    if names == Names::Dcgm {
        dcgm::sample(&mut e, s);
    }
    e.render()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;
