//! What the scorer remembers per node and GPU between samples: counter and temperature series
//! for the rates and trends, XID events by identity, the node's boots and its GPU count. The
//! same structure lives in memory for a stream and in the `--state` file between runs.
//!
//! Everything is bounded: nodes (`max_tracked_nodes`, least recently seen dropped), age (a node
//! or GPU not seen for `history.max_age` is forgotten), and per GPU the number of series points
//! and XID events (see the constants). Times are record times in milliseconds, never the wall
//! clock, so a replayed stream gives the same verdicts.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use ugro_types::Timestamp;

/// XID events kept per GPU (newest kept).
pub(crate) const MAX_XID_EVENTS: usize = 256;
/// Boots kept per node (newest kept).
pub(crate) const MAX_BOOTS: usize = 16;
/// GPUs kept per node (least recently seen dropped).
pub(crate) const MAX_GPUS: usize = 64;
/// Readings kept per counter series: a quarter window apart, one older, the newest.
pub(crate) const COUNTER_POINTS: usize = 6;
/// Readings kept of the temperature: an eighth of the window apart, one older, the newest.
pub(crate) const TEMPERATURE_POINTS: usize = 11;

/// A downsampled series of `(ms, value)` readings, at most `N`: a reading closer than
/// `spacing` to the one before the newest replaces the newest, so the newest point is always the
/// latest reading and the series spans its window with a handful of points. At most one point
/// older than the window is kept, as the base of a rate when samples are sparse. The points are
/// held inline, so a GPU's history is one block of memory: a fleet's history is touched on every
/// sample, and scattered allocations would cost a cache miss each.
///
/// Every reading is a whole number (a counter, whole °C). In the state file a series is one flat
/// array, `[t0, v0, dt1, v1, …]` (the first time in ms since the epoch, then each point's ms
/// after the one before): a tenth of the size of the pairs.
#[derive(Clone, Copy)]
pub(crate) struct Series<const N: usize> {
    len: usize,
    pts: [(i64, i64); N],
}

impl<const N: usize> Default for Series<N> {
    fn default() -> Self {
        Series {
            len: 0,
            pts: [(0, 0); N],
        }
    }
}

impl<const N: usize> PartialEq for Series<N> {
    fn eq(&self, other: &Self) -> bool {
        self.raw() == other.raw()
    }
}

impl<const N: usize> std::fmt::Debug for Series<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.raw()).finish()
    }
}

impl<const N: usize> Serialize for Series<N> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.len * 2))?;
        let mut prev = 0;
        for (i, &(t, v)) in self.raw().iter().enumerate() {
            seq.serialize_element(&if i == 0 { t } else { t - prev })?;
            seq.serialize_element(&v)?;
            prev = t;
        }
        seq.end()
    }
}

impl<'de, const N: usize> Deserialize<'de> for Series<N> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let flat: Vec<i64> = Vec::deserialize(d)?;
        if !flat.len().is_multiple_of(2) {
            return Err(serde::de::Error::custom(
                "a series has an odd number of numbers",
            ));
        }
        let mut s = Series::default();
        let mut t = 0;
        for (i, p) in flat.chunks_exact(2).enumerate() {
            t = if i == 0 { p[0] } else { t + p[0] };
            // A file from a build that kept more points: the newest N.
            s.append(t, p[1]);
        }
        Ok(s)
    }
}

impl<const N: usize> Series<N> {
    fn raw(&self) -> &[(i64, i64)] {
        &self.pts[..self.len]
    }

    fn append(&mut self, t: i64, v: i64) {
        if self.len == N {
            self.pts.copy_within(1.., 0);
            self.len -= 1;
        }
        self.pts[self.len] = (t, v);
        self.len += 1;
    }

    fn drop_front(&mut self, k: usize) {
        self.pts.copy_within(k..self.len, 0);
        self.len -= k;
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The points, oldest first, values as floating point for the arithmetic.
    pub(crate) fn points(&self) -> impl ExactSizeIterator<Item = (i64, f64)> + Clone + '_ {
        self.raw().iter().map(|&(t, v)| (t, v as f64))
    }

    pub(crate) fn first(&self) -> Option<(i64, f64)> {
        self.points().next()
    }

    pub(crate) fn last(&self) -> Option<(i64, f64)> {
        self.raw().last().map(|&(t, v)| (t, v as f64))
    }

    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// Adds the reading `v` (a whole number) at `t` (ms); see the type's docs for `spacing` and
    /// `window` (ms).
    pub(crate) fn push(&mut self, t: i64, v: f64, spacing: i64, window: i64) {
        let v = v.round() as i64;
        let n = self.len;
        if n >= 2 && t - self.pts[n - 2].0 < spacing {
            self.pts[n - 1] = (t, v);
        } else {
            self.append(t, v);
        }
        // Only the front can be older than the window: drop it while the next one is too (the
        // common case, the second point inside the window, costs one comparison).
        let start = t - window;
        if self.len >= 2 && self.pts[1].0 < start {
            let old = self.raw()[1..].iter().take_while(|p| p.0 < start).count();
            self.drop_front(old);
        }
    }
}

/// One XID event as remembered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct XidEvent {
    /// XID code.
    pub(crate) code: u32,
    /// Event time: the kernel's when the probe gave one, else when it was first seen.
    pub(crate) t: i64,
    /// The node's serial number for the boot it was logged in (0: unknown).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) boot: u32,
    /// kmsg sequence number: with `boot`, the event's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) seq: Option<u64>,
    /// Events without identity logged at the same time (the most seen in one sample).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub(crate) n: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

fn one() -> u32 {
    1
}

fn is_one(v: &u32) -> bool {
    *v == 1
}

/// What is remembered about one GPU.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct GpuHistory {
    /// Record time of the last sample that had this GPU.
    pub(crate) seen: i64,
    /// PCIe replay counter.
    #[serde(default, skip_serializing_if = "Series::is_empty")]
    pub(crate) replay: Series<COUNTER_POINTS>,
    /// Corrected volatile ECC errors.
    #[serde(default, skip_serializing_if = "Series::is_empty")]
    pub(crate) ecc: Series<COUNTER_POINTS>,
    /// Rows remapped for correctable errors.
    #[serde(default, skip_serializing_if = "Series::is_empty")]
    pub(crate) remap: Series<COUNTER_POINTS>,
    /// Temperature, °C.
    #[serde(default, skip_serializing_if = "Series::is_empty")]
    pub(crate) temp: Series<TEMPERATURE_POINTS>,
    /// XID events, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) xids: Vec<XidEvent>,
}

impl GpuHistory {
    /// Forgets the counters that restart with the driver (a reboot).
    pub(crate) fn driver_reloaded(&mut self) {
        self.replay.clear();
        self.ecc.clear();
    }
}

/// A boot the node was seen in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Boot {
    /// Serial number in order of first sighting, from 1.
    pub(crate) serial: u32,
    /// `/proc/sys/kernel/random/boot_id`.
    pub(crate) id: String,
}

/// What is remembered about one node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct NodeHistory {
    /// Time of the newest sample scored.
    pub(crate) last_ts: Timestamp,
    /// Boots seen, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) boots: Vec<Boot>,
    /// The serial of the boot of the newest sample (0: unknown).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) boot: u32,
    /// The most GPUs NVML showed, and when that count was last seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) max_gpus: Option<(u32, Timestamp)>,
    /// By GPU UUID (`#index` without one). A node has a handful of GPUs in a stable order, so
    /// a positional guess and a short scan beat hashing 40-byte UUIDs on every sample.
    #[serde(default)]
    pub(crate) gpus: Vec<(String, GpuHistory)>,
}

impl NodeHistory {
    /// The GPU's history, created on first sight; `hint` is its likely position.
    pub(crate) fn gpu(&mut self, hint: usize, key: &str) -> &mut GpuHistory {
        let pos = match self.gpus.get(hint) {
            Some((k, _)) if k == key => Some(hint),
            _ => self.gpus.iter().position(|(k, _)| k == key),
        };
        let pos = pos.unwrap_or_else(|| {
            if self.gpus.len() >= MAX_GPUS
                && let Some(old) = (0..self.gpus.len()).min_by_key(|&i| self.gpus[i].1.seen)
            {
                self.gpus.remove(old);
            }
            self.gpus.push((key.to_owned(), GpuHistory::default()));
            self.gpus.len() - 1
        });
        &mut self.gpus[pos].1
    }

    /// The serial for `id`, numbering a boot not seen before after all the others.
    pub(crate) fn boot_serial(&mut self, id: &str) -> u32 {
        if let Some(b) = self.boots.iter().rev().find(|b| b.id == id) {
            return b.serial;
        }
        let serial = self.boots.last().map_or(1, |b| b.serial + 1);
        self.boots.push(Boot {
            serial,
            id: id.to_owned(),
        });
        if self.boots.len() > MAX_BOOTS {
            self.boots.remove(0);
        }
        serial
    }

    /// Records the boot of an in-order sample; on a change, the volatile counters restart.
    pub(crate) fn set_boot(&mut self, id: &str) {
        let serial = self.boot_serial(id);
        if self.boot != 0 && serial != self.boot {
            for (_, g) in &mut self.gpus {
                g.driver_reloaded();
            }
        }
        self.boot = serial;
    }

    /// Forgets GPUs not seen since `cutoff`.
    fn prune(&mut self, cutoff: i64) {
        self.gpus.retain(|(_, g)| g.seen >= cutoff);
    }
}

/// Every node's history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct History {
    pub(crate) nodes: HashMap<String, NodeHistory>,
}

impl History {
    /// The node's history, created (making room first) on first sight. (Always `Some`: the
    /// second lookup is the price of not allocating the key on the common hit.)
    pub(crate) fn node(&mut self, name: &str, cap: usize) -> Option<&mut NodeHistory> {
        if !self.nodes.contains_key(name) {
            self.make_room(cap);
            self.nodes.insert(name.to_owned(), NodeHistory::default());
        }
        self.nodes.get_mut(name)
    }

    /// Keeps the map bounded: when full, forgets the least recently seen tenth.
    fn make_room(&mut self, cap: usize) {
        let cap = cap.max(1);
        if self.nodes.len() < cap {
            return;
        }
        let mut ages: Vec<(Timestamp, String)> = self
            .nodes
            .iter()
            .map(|(k, v)| (v.last_ts, k.clone()))
            .collect();
        ages.sort_unstable();
        let drop = (cap / 10).max(1).min(ages.len());
        for (_, k) in ages.into_iter().take(drop) {
            self.nodes.remove(&k);
        }
    }

    /// Forgets nodes and GPUs not seen within `max_age` of the newest sample of all, and keeps
    /// at most `cap` nodes: what is saved between runs.
    pub(crate) fn prune(&mut self, max_age: std::time::Duration, cap: usize) {
        let Some(newest) = self.nodes.values().map(|n| n.last_ts).max() else {
            return;
        };
        let cutoff = newest.sub(max_age);
        self.nodes.retain(|_, n| n.last_ts >= cutoff);
        for n in self.nodes.values_mut() {
            n.prune(cutoff.millis());
        }
        while self.nodes.len() > cap.max(1) {
            self.make_room(cap);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_series_keeps_the_newest_reading_and_spans_its_window_with_few_points() {
        let mut s = Series::<16>::default();
        // Every 5 s for 20 minutes, spacing 1 min, window 10 min.
        for i in 0..=240 {
            s.push(i * 5_000, i as f64, 60_000, 600_000);
        }
        let p: Vec<(i64, f64)> = s.points().collect();
        assert_eq!(s.last(), Some((1_200_000, 240.0)), "newest is the latest");
        // One a minute in the window, one older as the base, the newest.
        assert!(p.len() <= 13, "{} points", p.len());
        assert!(
            p[0].0 <= 1_200_000 - 600_000,
            "one point at or past the window"
        );
        assert!(
            p[1].0 >= 1_200_000 - 600_000,
            "only one older than the window"
        );
        // Full: the oldest goes.
        let mut small = Series::<3>::default();
        for i in 0..5 {
            small.push(i * 100, i as f64, 1, 1_000_000);
        }
        let p: Vec<i64> = small.points().map(|p| p.0).collect();
        assert_eq!(p, [200, 300, 400]);
    }

    #[test]
    fn a_series_is_saved_as_one_delta_encoded_array() {
        let mut s = Series::<8>::default();
        for (t, v) in [
            (1_800_000_000_000, 61.0),
            (1_800_000_060_000, 62.0),
            (1_800_000_120_000, 62.0),
        ] {
            s.push(t, v, 1, 1_000_000);
        }
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(text, "[1800000000000,61,60000,62,60000,62]");
        assert_eq!(serde_json::from_str::<Series<8>>(&text).unwrap(), s);
        assert!(serde_json::from_str::<Series<8>>("[1,2,3]").is_err());
    }

    #[test]
    fn boots_are_numbered_in_order_and_a_new_one_restarts_volatile_counters() {
        let mut n = NodeHistory::default();
        n.set_boot("a");
        n.gpu(0, "GPU-1").replay.push(0, 5.0, 1, 10);
        n.set_boot("a");
        assert!(!n.gpus[0].1.replay.is_empty());
        n.set_boot("b");
        assert!(n.gpus[0].1.replay.is_empty());
        assert_eq!((n.boot_serial("a"), n.boot_serial("b")), (1, 2));
        for i in 0..40 {
            n.boot_serial(&format!("x{i}"));
        }
        assert_eq!(n.boots.len(), MAX_BOOTS);
        assert_eq!(n.boot_serial("x39"), 42);
    }

    #[test]
    fn pruning_forgets_what_was_not_seen_within_the_age() {
        let mut h = History::default();
        let day = 86_400_000;
        h.node("old", 10).unwrap().last_ts = Timestamp(0);
        let n = h.node("new", 10).unwrap();
        n.last_ts = Timestamp(10 * day);
        n.gpu(0, "GPU-a").seen = 10 * day;
        n.gpu(1, "GPU-gone").seen = day;
        h.prune(std::time::Duration::from_secs(7 * 86_400), 10);
        assert!(!h.nodes.contains_key("old"));
        let keys: Vec<&str> = h.nodes["new"]
            .gpus
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["GPU-a"]);
    }
}
