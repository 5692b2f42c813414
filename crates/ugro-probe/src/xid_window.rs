//! The XIDs a probe keeps for its lookback window, bounded during an XID storm.
//!
//! A sample lists at most [`MAX_XIDS_LISTED`](crate::xid::MAX_XIDS_LISTED) XIDs per GPU and
//! counts the rest, so the window keeps, per PCI address, only that many events in full and
//! only counts of the older ones, grouped in slices of a sixteenth of the lookback. A storm
//! of thousands of XID 13 a minute then holds a few dozen events per GPU instead of every
//! event of the last ten minutes. The count of older events is exact except at the window's
//! trailing edge, where a slice is counted until its newest event leaves the window (at most
//! lookback/16 of overcount, and only when more than the listed number occurred).

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use ugro_types::{Timestamp, Xid};

use crate::xid::PciKey;

/// Distinct PCI addresses kept apart (a node has at most 16 GPUs and a few NVSwitches). XIDs
/// naming further addresses, which only a corrupt or forged log produces, share the
/// "unattributed" slot.
pub const MAX_ADDRESSES: usize = 64;

/// How many slices the lookback is counted in.
const SLICES: u32 = 16;

/// Counts of events no longer kept in full, by slice.
#[derive(Debug, Clone, Copy)]
struct Slice {
    start: Timestamp,
    newest: Timestamp,
    count: u64,
}

#[derive(Debug, Default)]
struct Slot {
    /// The most recent events, oldest first, with their arrival number.
    recent: VecDeque<(u64, Xid)>,
    /// Older events still in the window, counted.
    older: VecDeque<Slice>,
    /// Older events without a time (plain replay lines): always in the window.
    timeless: u64,
}

impl Slot {
    fn count_older(&mut self, ts: Option<Timestamp>, width: Duration) {
        let Some(ts) = ts else {
            self.timeless += 1;
            return;
        };
        match self.older.back_mut() {
            Some(s) if ts < s.start.add(width) => {
                s.count += 1;
                s.newest = s.newest.max(ts);
            }
            _ => self.older.push_back(Slice {
                start: ts,
                newest: ts,
                count: 1,
            }),
        }
    }

    fn older_count(&self) -> u64 {
        self.timeless + self.older.iter().map(|s| s.count).sum::<u64>()
    }
}

/// What the window holds now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct XidRead {
    /// The events kept in full, in log order.
    pub xids: Vec<Xid>,
    /// Per PCI address (`None`: no or unknown address), events in the window that are
    /// counted but no longer kept.
    pub older: Vec<(Option<PciKey>, u64)>,
}

/// The bounded lookback window.
#[derive(Debug)]
pub struct XidWindow {
    lookback: Duration,
    keep: usize,
    slots: HashMap<Option<PciKey>, Slot>,
    arrivals: u64,
}

impl XidWindow {
    /// A window over `lookback` keeping `keep` events per PCI address in full.
    pub fn new(lookback: Duration, keep: usize) -> Self {
        XidWindow {
            lookback,
            keep: keep.max(1),
            slots: HashMap::new(),
            arrivals: 0,
        }
    }

    /// Forgets everything (a replay file is read whole again).
    pub fn clear(&mut self) {
        self.slots.clear();
    }

    fn slice_width(&self) -> Duration {
        (self.lookback / SLICES).max(Duration::from_millis(1))
    }

    /// Adds one event, in log order.
    pub fn push(&mut self, x: Xid) {
        let mut key = x.pci_bus_id.as_deref().and_then(PciKey::parse);
        if key.is_some() && !self.slots.contains_key(&key) && self.slots.len() > MAX_ADDRESSES {
            key = None;
        }
        let width = self.slice_width();
        let keep = self.keep;
        let slot = self.slots.entry(key).or_default();
        slot.recent.push_back((self.arrivals, x));
        self.arrivals += 1;
        if slot.recent.len() > keep
            && let Some((_, old)) = slot.recent.pop_front()
        {
            slot.count_older(old.ts, width);
        }
    }

    /// Drops what was logged before `now − lookback`.
    pub fn expire(&mut self, now: Timestamp) {
        let cutoff = now.sub(self.lookback);
        for slot in self.slots.values_mut() {
            slot.recent
                .retain(|(_, x)| x.ts.is_none_or(|t| t >= cutoff));
            while slot.older.front().is_some_and(|s| s.newest < cutoff) {
                slot.older.pop_front();
            }
        }
        self.slots
            .retain(|_, s| !s.recent.is_empty() || s.older_count() > 0);
    }

    /// The events kept and the counts of the others.
    pub fn snapshot(&self) -> XidRead {
        let mut kept: Vec<&(u64, Xid)> = self.slots.values().flat_map(|s| &s.recent).collect();
        kept.sort_by_key(|(n, _)| *n);
        XidRead {
            xids: kept.into_iter().map(|(_, x)| x.clone()).collect(),
            older: self
                .slots
                .iter()
                .map(|(k, s)| (*k, s.older_count()))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }

    /// Events kept in full plus count slices: what the window's memory grows with.
    pub fn entries(&self) -> usize {
        self.slots
            .values()
            .map(|s| s.recent.len() + s.older.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xid(bus: &str, n: u64, ts: i64) -> Xid {
        Xid {
            code: 13,
            pci_bus_id: Some(format!("PCI:0000:{bus}:00")),
            ts: Some(Timestamp(ts)),
            message: Some(format!("n={n}")),
            boot_id: None,
            seq: Some(n),
        }
    }

    fn older_of(r: &XidRead, bus: &str) -> u64 {
        let k = PciKey::parse(&format!("0000:{bus}:00"));
        r.older
            .iter()
            .find(|(key, _)| *key == k)
            .map_or(0, |(_, n)| *n)
    }

    #[test]
    fn a_storm_keeps_a_bounded_number_of_entries_and_counts_the_rest() {
        // 10 minutes of XID 13 at 100 per second on two GPUs: 120 000 events.
        let mut w = XidWindow::new(Duration::from_secs(600), 64);
        let mut peak = 0;
        for i in 0..60_000u64 {
            let ts = i64::try_from(i * 10).unwrap();
            w.push(xid("ab", 2 * i, ts));
            w.push(xid("5d", 2 * i + 1, ts));
            if i % 1000 == 0 {
                w.expire(Timestamp(ts));
                peak = peak.max(w.entries());
            }
        }
        w.expire(Timestamp(600_000));
        peak = peak.max(w.entries());
        assert!(peak <= 2 * (64 + 17), "{peak} entries kept");
        let r = w.snapshot();
        assert_eq!(r.xids.len(), 128);
        // Every event is either listed or counted.
        assert_eq!(older_of(&r, "ab") + 64, 60_000);
        assert_eq!(older_of(&r, "5d") + 64, 60_000);
        // The most recent are the ones kept, in log order.
        assert_eq!(r.xids.last().unwrap().seq, Some(119_999));
        assert!(r.xids.windows(2).all(|p| p[0].seq < p[1].seq));
    }

    #[test]
    fn counted_events_leave_with_the_window() {
        let mut w = XidWindow::new(Duration::from_secs(160), 2);
        for i in 0..100u64 {
            w.push(xid("ab", i, i64::try_from(i * 1000).unwrap()));
        }
        // At t = 200 s the window starts at 40 s: events 40..=99 are in it, 2 kept.
        w.expire(Timestamp(200_000));
        let r = w.snapshot();
        let counted = older_of(&r, "ab");
        // Slices are 10 s wide: at most one slice's worth counted beyond the exact 58.
        assert!((58..=68).contains(&counted), "{counted}");
        w.expire(Timestamp(400_000));
        assert_eq!(w.snapshot(), XidRead::default());
        assert_eq!(w.entries(), 0);
    }

    #[test]
    fn forged_addresses_beyond_the_limit_share_one_slot() {
        let mut w = XidWindow::new(Duration::from_secs(600), 4);
        for i in 0..10_000u64 {
            let bus = format!("{:02x}", i % 256);
            let mut x = xid(&bus, i, 0);
            x.pci_bus_id = Some(format!("PCI:{:04x}:{bus}:00", i / 256));
            w.push(x);
        }
        assert!(
            w.entries() <= (MAX_ADDRESSES + 2) * (4 + 17),
            "{}",
            w.entries()
        );
        let r = w.snapshot();
        let total: u64 = r.older.iter().map(|(_, n)| n).sum::<u64>() + r.xids.len() as u64;
        assert_eq!(total, 10_000);
    }

    #[test]
    fn lines_without_a_time_are_always_in_the_window() {
        let mut w = XidWindow::new(Duration::from_secs(1), 1);
        for i in 0..3 {
            let mut x = xid("ab", i, 0);
            x.ts = None;
            w.push(x);
        }
        w.expire(Timestamp(1_000_000));
        let r = w.snapshot();
        assert_eq!(r.xids.len(), 1);
        assert_eq!(older_of(&r, "ab"), 2);
    }
}
