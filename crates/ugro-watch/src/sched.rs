//! When to poll which node: pure logic over an injected clock, so it is tested (and the idle
//! figure computed) under fake time.
//!
//! Time is cut into cycles of one base interval. A node polled in cycle `c` is due again in
//! cycle `c + m`, where its multiplier `m` is 1 while the node is busy or degraded and doubles
//! after every idle, healthy sample up to `max / base` (5 s → 10 → 20 → 40 → 60 s with the
//! defaults). Within a cycle each node waits for its phase, a fixed offset derived from a hash
//! of its name, so polls spread over `spread × base` instead of bursting. A node is never
//! dispatched while its previous poll is in flight. A node whose breaker is open is held: polled
//! no more often than the longest interval (evidence of recovery, which the alert stage needs to
//! resolve within a poll of it, not at the trial) and when its trial is due.
//!
//! Fairness under faults. Nodes that are due go out in the order they fell due (their due time,
//! never their place in the cluster file), so a node waiting for a slot is served before one
//! that became due later. A node whose last poll timed out is a *suspect*: suspects together
//! hold at most a quarter of the slots (at least one), so hung nodes, wherever they are listed,
//! cannot take the slots healthy nodes need; a suspect waiting for a suspect slot is polled late
//! rather than a healthy node. At most `limit` polls are in flight; the limit halves after a
//! cycle in which more than a tenth of the polls of non-suspect nodes timed out (fresh timeouts:
//! the observer or its network is saturated), never below a quarter of the configured value,
//! and grows back by an eighth per cycle without fresh timeouts. Nodes that hang poll after
//! poll are the nodes' problem, not ours: their timeouts do not keep the limit down.

use std::collections::VecDeque;

pub use crate::clock::{Clock, FakeClock, TokioClock};

/// Scheduler settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedConf {
    /// Base interval, ms.
    pub base_ms: u64,
    /// Longest interval, ms.
    pub max_ms: u64,
    /// Share of the base interval polls are spread over.
    pub spread: f64,
    /// Configured concurrency limit.
    pub concurrency: usize,
}

impl SchedConf {
    fn max_mult(&self) -> u32 {
        u32::try_from((self.max_ms / self.base_ms.max(1)).max(1)).unwrap_or(u32::MAX)
    }
    fn min_limit(&self) -> usize {
        (self.concurrency / 4).max(1)
    }
}

/// What a finished poll says about its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Jobs are running there (training processes, busy GPUs, jobs command).
    pub active: bool,
    /// Not healthy: unreachable, failed probe, or a score below healthy.
    pub degraded: bool,
    /// The poll hit the per-node timeout.
    pub timed_out: bool,
    /// The poll produced no sample (unreachable).
    pub failed: bool,
}

/// One cycle's figures, handed out once all its polls have finished.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CycleSummary {
    /// Cycle number.
    pub cycle: u64,
    /// Polls dispatched.
    pub polls: u64,
    /// Polls that produced no sample.
    pub failures: u64,
    /// Polls that timed out.
    pub timeouts: u64,
    /// Polls of suspects (nodes whose previous poll had timed out).
    pub suspect_polls: u64,
    /// Timeouts among them.
    pub suspect_timeouts: u64,
    /// From the first dispatch to the last completion, ms (0 for an empty cycle).
    pub duration_ms: u64,
}

#[derive(Debug, Clone)]
struct NodeSched {
    phase_ms: u64,
    mult: u32,
    next_cycle: u64,
    in_flight: bool,
    hold_until: Option<u64>,
    removed: bool,
    polls: u64,
    urgent: bool,
    /// The last poll timed out.
    suspect: bool,
    /// The poll in flight was dispatched while the node was a suspect.
    dispatched_suspect: bool,
    /// The cycle of the last finished poll.
    polled_in: u64,
    /// When the last poll was dispatched (monotonic ms).
    dispatched_at: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct CycleAcc {
    sum: CycleSummary,
    first: Option<u64>,
    last: u64,
    open: u64,
    rolled: bool,
}

/// The scheduler.
#[derive(Debug, Clone)]
pub struct Scheduler {
    conf: SchedConf,
    started: bool,
    cycle: u64,
    cycle_start: u64,
    nodes: Vec<NodeSched>,
    in_flight: usize,
    suspects_in_flight: usize,
    limit: usize,
    open: VecDeque<CycleAcc>,
    finished: Vec<CycleSummary>,
    /// The worst lateness of a dispatch since [`Scheduler::take_max_lateness_ms`], ms.
    max_late_ms: u64,
}

/// FNV-1a of the node name: stable across runs and builds, so a node keeps its phase.
pub fn name_hash(name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

impl Scheduler {
    /// A scheduler with no nodes.
    pub fn new(conf: SchedConf) -> Self {
        let limit = conf.concurrency.max(1);
        Scheduler {
            conf,
            started: false,
            cycle: 0,
            cycle_start: 0,
            nodes: Vec::new(),
            in_flight: 0,
            suspects_in_flight: 0,
            limit,
            open: VecDeque::new(),
            finished: Vec::new(),
            max_late_ms: 0,
        }
    }

    /// Adds a node; returns its index. It is due in the current cycle. The slot of a removed
    /// node whose last poll has finished is used again, so reloads do not grow the table.
    pub fn add(&mut self, name: &str) -> usize {
        let window = phase_window(&self.conf);
        let node = NodeSched {
            phase_ms: name_hash(name) % (window + 1),
            mult: 1,
            next_cycle: self.cycle,
            in_flight: false,
            hold_until: None,
            removed: false,
            polls: 0,
            urgent: false,
            suspect: false,
            dispatched_suspect: false,
            polled_in: 0,
            dispatched_at: None,
        };
        if let Some(i) = self.nodes.iter().position(|n| n.removed && !n.in_flight) {
            self.nodes[i] = node;
            return i;
        }
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Slots in the table, live or free.
    pub fn slots(&self) -> usize {
        self.nodes.len()
    }

    /// Stops scheduling a node (its in-flight poll may still finish).
    pub fn remove(&mut self, idx: usize) {
        if let Some(n) = self.nodes.get_mut(idx) {
            n.removed = true;
        }
    }

    /// New settings (SIGHUP); phases are recomputed lazily by `add` only, which is fine:
    /// they stay within the old window until the node is re-added.
    pub fn reconfigure(&mut self, conf: SchedConf) {
        let max_mult = conf.max_mult();
        for n in &mut self.nodes {
            n.mult = n.mult.min(max_mult);
        }
        self.limit = self.limit.min(conf.concurrency).max(1);
        self.conf = conf;
    }

    /// The current concurrency limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The cycle `now` falls in.
    pub fn cycle_at(&self, now: u64) -> u64 {
        if !self.started {
            return self.cycle;
        }
        self.cycle + now.saturating_sub(self.cycle_start) / self.conf.base_ms.max(1)
    }

    /// Polls in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The current cycle number.
    pub fn cycle(&self) -> u64 {
        self.cycle
    }

    /// A node's current interval, ms.
    pub fn interval_ms(&self, idx: usize) -> u64 {
        self.nodes
            .get(idx)
            .map_or(0, |n| u64::from(n.mult) * self.conf.base_ms)
    }

    /// Shortest and longest interval over the live nodes, ms.
    pub fn interval_range_ms(&self) -> (u64, u64) {
        let mut lo = u64::MAX;
        let mut hi = 0;
        for n in self.nodes.iter().filter(|n| !n.removed) {
            let i = u64::from(n.mult) * self.conf.base_ms;
            lo = lo.min(i);
            hi = hi.max(i);
        }
        if hi == 0 { (0, 0) } else { (lo, hi) }
    }

    /// Polls dispatched to a node so far.
    pub fn polls_of(&self, idx: usize) -> u64 {
        self.nodes.get(idx).map_or(0, |n| n.polls)
    }

    /// Jobs started on a node (jobs command, activity file): back to the base interval and
    /// polled at once, without waiting for its phase.
    pub fn activate(&mut self, idx: usize) {
        let cycle = self.cycle;
        if let Some(n) = self.nodes.get_mut(idx) {
            n.mult = 1;
            if n.next_cycle > cycle {
                n.next_cycle = cycle;
                n.urgent = true;
            }
        }
    }

    /// The scorer's verdict on a node's latest sample, which arrives after its poll finished:
    /// a node that is not healthy goes back to the base interval at once (next poll one base
    /// interval after its last). A healthy verdict changes nothing until the next poll.
    pub fn set_degraded(&mut self, idx: usize, degraded: bool) {
        let Some(n) = self.nodes.get_mut(idx) else {
            return;
        };
        if degraded && n.mult > 1 {
            n.mult = 1;
            if !n.in_flight {
                n.next_cycle = n.next_cycle.min(n.polled_in + 1);
            }
        }
    }

    /// Whether a node currently runs at the base interval.
    pub fn is_base(&self, idx: usize) -> bool {
        self.nodes.get(idx).is_some_and(|n| n.mult == 1)
    }

    /// Holds a node (open breaker) until monotonic `until`, polling it meanwhile at the longest
    /// interval only; `None` releases it.
    pub fn hold(&mut self, idx: usize, until: Option<u64>) {
        if let Some(n) = self.nodes.get_mut(idx) {
            n.hold_until = until;
        }
    }

    fn roll(&mut self, now: u64) {
        let base = self.conf.base_ms.max(1);
        while now >= self.cycle_start + base {
            if let Some(acc) = self.open.back_mut().filter(|a| a.sum.cycle == self.cycle) {
                acc.rolled = true;
            } else {
                self.open.push_back(CycleAcc {
                    sum: CycleSummary {
                        cycle: self.cycle,
                        ..CycleSummary::default()
                    },
                    rolled: true,
                    ..CycleAcc::default()
                });
            }
            let behind = (now - self.cycle_start) / base;
            if behind > 2 {
                // Asleep (suspend, stopped process): skip the missed cycles rather than
                // replay them in a burst.
                self.cycle += behind;
                self.cycle_start += behind * base;
            } else {
                self.cycle += 1;
                self.cycle_start += base;
            }
        }
        self.settle();
    }

    fn settle(&mut self) {
        while let Some(front) = self.open.front() {
            if !(front.rolled && front.open == 0) {
                break;
            }
            let Some(acc) = self.open.pop_front() else {
                break;
            };
            let mut sum = acc.sum;
            if let Some(first) = acc.first {
                sum.duration_ms = acc.last.saturating_sub(first);
            }
            let fresh_polls = sum.polls - sum.suspect_polls;
            let fresh_timeouts = sum.timeouts - sum.suspect_timeouts;
            if fresh_polls > 0 && fresh_timeouts * 10 > fresh_polls {
                self.limit = (self.limit / 2).max(self.conf.min_limit());
            } else if sum.polls > 0 && fresh_timeouts == 0 && self.limit < self.conf.concurrency {
                self.limit = (self.limit + (self.limit / 8).max(1)).min(self.conf.concurrency);
            }
            self.finished.push(sum);
        }
    }

    /// The worst lateness (dispatch time against due time) since the last call, ms.
    pub fn take_max_lateness_ms(&mut self) -> u64 {
        std::mem::take(&mut self.max_late_ms)
    }

    /// Cycles whose polls have all finished since the last call.
    pub fn take_finished(&mut self) -> Vec<CycleSummary> {
        std::mem::take(&mut self.finished)
    }

    /// Suspects (nodes whose last poll timed out) in flight.
    pub fn suspects_in_flight(&self) -> usize {
        self.suspects_in_flight
    }

    /// Slots suspects may hold together.
    fn suspect_cap(&self) -> usize {
        (self.limit / 4).max(1)
    }

    /// When a node that is not in flight falls due (monotonic ms): an overdue node keeps the
    /// time it fell due, an activated one is due at once, a held one not before its hold ends or
    /// the longest interval after its last poll, whichever comes first.
    fn due_at(&self, n: &NodeSched, now: u64) -> u64 {
        let base = self.conf.base_ms.max(1);
        let at = if n.urgent && n.next_cycle <= self.cycle {
            now
        } else if n.next_cycle < self.cycle {
            (self.cycle_start + n.phase_ms).saturating_sub((self.cycle - n.next_cycle) * base)
        } else {
            self.cycle_start + (n.next_cycle - self.cycle) * base + n.phase_ms
        };
        let Some(hold) = n.hold_until else {
            return at;
        };
        let evidence = n
            .dispatched_at
            .map_or(at, |d| d.saturating_add(self.conf.max_ms));
        at.max(hold.min(evidence))
    }

    /// Nodes to poll now, earliest due first. Each is marked in flight until
    /// [`Scheduler::done`].
    pub fn due(&mut self, now: u64) -> Vec<usize> {
        if !self.started {
            self.started = true;
            self.cycle_start = now;
        }
        self.roll(now);
        let mut ready: Vec<(u64, usize)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| !n.removed && !n.in_flight && n.next_cycle <= self.cycle)
            .map(|(i, n)| (self.due_at(n, now), i))
            .filter(|(at, _)| *at <= now)
            .collect();
        ready.sort_unstable();
        let cap = self.suspect_cap();
        let cycle = self.cycle;
        let mut out = Vec::new();
        for (at, i) in ready {
            if self.in_flight >= self.limit {
                break;
            }
            let n = &mut self.nodes[i];
            if n.suspect && self.suspects_in_flight >= cap {
                continue;
            }
            self.max_late_ms = self.max_late_ms.max(now.saturating_sub(at));
            n.urgent = false;
            n.dispatched_at = Some(now);
            n.in_flight = true;
            n.dispatched_suspect = n.suspect;
            n.next_cycle = cycle;
            n.polls += 1;
            self.in_flight += 1;
            self.suspects_in_flight += usize::from(n.suspect);
            out.push(i);
        }
        if !out.is_empty() {
            let polls = out.len() as u64;
            let suspects = out
                .iter()
                .filter(|i| self.nodes[**i].dispatched_suspect)
                .count() as u64;
            let acc = self.acc(cycle);
            acc.sum.polls += polls;
            acc.sum.suspect_polls += suspects;
            acc.open += polls;
            acc.first.get_or_insert(now);
        }
        out
    }

    fn acc(&mut self, cycle: u64) -> &mut CycleAcc {
        if self.open.back().is_none_or(|a| a.sum.cycle != cycle) {
            self.open.push_back(CycleAcc {
                sum: CycleSummary {
                    cycle,
                    ..CycleSummary::default()
                },
                ..CycleAcc::default()
            });
        }
        let last = self.open.len() - 1;
        &mut self.open[last]
    }

    /// A poll dispatched by [`Scheduler::due`] finished.
    pub fn done(&mut self, idx: usize, outcome: Outcome, now: u64) {
        let max_mult = self.conf.max_mult();
        let Some(n) = self.nodes.get_mut(idx) else {
            return;
        };
        if !n.in_flight {
            return;
        }
        n.in_flight = false;
        self.in_flight = self.in_flight.saturating_sub(1);
        let was_suspect = n.dispatched_suspect;
        if was_suspect {
            self.suspects_in_flight = self.suspects_in_flight.saturating_sub(1);
        }
        n.suspect = outcome.timed_out;
        let polled_in = n.next_cycle;
        n.polled_in = polled_in;
        n.mult = if outcome.active || outcome.degraded {
            1
        } else {
            n.mult.saturating_mul(2).min(max_mult)
        };
        n.next_cycle = polled_in + u64::from(n.mult);
        if let Some(acc) = self.open.iter_mut().find(|a| a.sum.cycle == polled_in) {
            acc.open = acc.open.saturating_sub(1);
            acc.last = acc.last.max(now);
            acc.sum.failures += u64::from(outcome.failed);
            acc.sum.timeouts += u64::from(outcome.timed_out);
            if was_suspect {
                acc.sum.suspect_timeouts += u64::from(outcome.timed_out);
            }
        }
        self.settle();
    }

    /// When [`Scheduler::due`] may next have something to do (monotonic ms). Completions
    /// also wake the caller, so a full concurrency limit (or suspect share) waits for them.
    pub fn next_wake(&self, now: u64) -> u64 {
        if !self.started {
            return now;
        }
        let next_cycle_at = self.cycle_start + self.conf.base_ms.max(1);
        if self.in_flight >= self.limit {
            return next_cycle_at;
        }
        let suspects_full = self.suspects_in_flight >= self.suspect_cap();
        self.nodes
            .iter()
            .filter(|n| !(n.removed || n.in_flight || (n.suspect && suspects_full)))
            .map(|n| self.due_at(n, now))
            .fold(next_cycle_at, u64::min)
            .max(now)
    }
}

fn phase_window(conf: &SchedConf) -> u64 {
    let w = (conf.base_ms as f64 * conf.spread).floor();
    if w.is_finite() && w > 0.0 {
        w as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(concurrency: usize) -> SchedConf {
        SchedConf {
            base_ms: 5_000,
            max_ms: 60_000,
            spread: 0.5,
            concurrency,
        }
    }

    /// Runs a scheduler for `until` ms of fake time in 100 ms steps; every poll finishes
    /// `latency` ms after dispatch with `outcome(node, now)`.
    fn simulate(
        s: &mut Scheduler,
        until: u64,
        latency: u64,
        mut outcome: impl FnMut(usize, u64) -> Outcome,
    ) -> Vec<(usize, u64)> {
        let mut polls = Vec::new();
        let mut pending: Vec<(u64, usize)> = Vec::new();
        let mut now = 0;
        while now <= until {
            pending.sort_unstable();
            while let Some(&(t, i)) = pending.first() {
                if t > now {
                    break;
                }
                pending.remove(0);
                s.done(i, outcome(i, t), t);
            }
            for i in s.due(now) {
                polls.push((i, now));
                pending.push((now + latency, i));
            }
            now += 100;
        }
        polls
    }

    #[test]
    fn removed_slots_are_used_again_once_their_poll_has_finished() {
        let mut s = Scheduler::new(SchedConf {
            spread: 0.0,
            ..conf(64)
        });
        let a = s.add("a");
        let b = s.add("b");
        assert_eq!(s.due(0), vec![a, b]);
        s.done(b, Outcome::default(), 10);
        // `a` is still in flight: its slot must not go to a new node before it answers.
        s.remove(a);
        s.remove(b);
        let c = s.add("c");
        assert_eq!(c, b);
        let d = s.add("d");
        assert_eq!(d, 2);
        s.done(a, Outcome::default(), 20);
        assert_eq!(s.add("e"), a);
        // Replacing a node over and over (one reload each) keeps the table the same size.
        let mut idx = s.add("f");
        for _ in 0..100 {
            s.remove(idx);
            idx = s.add("f");
        }
        assert_eq!(s.slots(), 4);
        assert_eq!(s.in_flight(), 0);
    }

    #[test]
    fn idle_nodes_back_off_to_the_max_interval() {
        let mut s = Scheduler::new(conf(64));
        let a = s.add("gpu-01");
        let polls = simulate(&mut s, 3_600_000, 50, |_, _| Outcome::default());
        let times: Vec<u64> = polls.iter().filter(|p| p.0 == a).map(|p| p.1).collect();
        let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(&gaps[..5], &[10_000, 20_000, 40_000, 60_000, 60_000]);
        assert_eq!(s.interval_ms(a), 60_000);
        // Fixed 5 s polling would be 720 per hour.
        assert!(times.len() < 72, "{} polls", times.len());
    }

    #[test]
    fn busy_or_degraded_nodes_stay_at_the_base_interval() {
        let mut s = Scheduler::new(conf(64));
        let busy = s.add("busy");
        let sick = s.add("sick");
        let polls = simulate(&mut s, 60_000, 50, |i, _| Outcome {
            active: i == busy,
            degraded: i == sick,
            ..Outcome::default()
        });
        for node in [busy, sick] {
            let n = polls.iter().filter(|p| p.0 == node).count();
            assert!((12..=13).contains(&n), "node {node}: {n} polls");
        }
    }

    #[test]
    fn a_job_start_is_noticed_within_one_base_interval() {
        let mut s = Scheduler::new(conf(64));
        let a = s.add("gpu-01");
        simulate(&mut s, 600_000, 50, |_, _| Outcome::default());
        assert_eq!(s.interval_ms(a), 60_000);
        // A job starts at t = 600.05 s: the node is activated and must be polled within 5 s.
        let mut now = 600_050;
        s.activate(a);
        let mut polled_at = None;
        while now < 700_000 {
            if s.due(now).contains(&a) {
                polled_at = Some(now);
                break;
            }
            now += 100;
        }
        let t = polled_at.expect("never polled");
        assert!(t - 600_050 <= 5_000, "noticed after {} ms", t - 600_050);
    }

    #[test]
    fn degraded_sample_returns_to_base_at_once() {
        let mut s = Scheduler::new(conf(64));
        let a = s.add("n");
        let mut degraded_from = u64::MAX;
        let polls = simulate(&mut s, 400_000, 50, |_, t| Outcome {
            degraded: t >= degraded_from,
            ..Outcome::default()
        });
        let _ = polls;
        assert_eq!(s.interval_ms(a), 60_000);
        degraded_from = 0;
        let mut now = 400_100;
        let mut times = Vec::new();
        while now < 480_000 {
            for i in s.due(now) {
                times.push(now);
                s.done(
                    i,
                    Outcome {
                        degraded: degraded_from == 0,
                        ..Outcome::default()
                    },
                    now,
                );
            }
            now += 100;
        }
        let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| *g == 5_000), "{gaps:?}");
    }

    #[test]
    fn polls_spread_over_the_window_and_never_overlap() {
        let mut s = Scheduler::new(conf(1_000));
        for i in 0..200 {
            s.add(&format!("node-{i:03}"));
        }
        // Latency longer than the interval: a node must not be dispatched again while its
        // poll is in flight.
        let polls = simulate(&mut s, 20_000, 7_000, |_, _| Outcome {
            active: true,
            ..Outcome::default()
        });
        let first: Vec<u64> = polls.iter().filter(|p| p.1 < 5_000).map(|p| p.1).collect();
        assert_eq!(first.len(), 200);
        let early = first.iter().filter(|t| **t < 1_250).count();
        let late = first.iter().filter(|t| **t >= 1_250).count();
        assert!(early > 20 && late > 100, "early {early} late {late}");
        assert!(first.iter().all(|t| *t <= 2_500));
        for node in 0..200 {
            let t: Vec<u64> = polls.iter().filter(|p| p.0 == node).map(|p| p.1).collect();
            assert!(t.windows(2).all(|w| w[1] - w[0] >= 7_000), "{node}: {t:?}");
        }
    }

    #[test]
    fn concurrency_limit_caps_in_flight_polls() {
        let mut s = Scheduler::new(SchedConf {
            spread: 0.0,
            ..conf(10)
        });
        for i in 0..50 {
            s.add(&format!("n{i}"));
        }
        let got = s.due(0);
        assert_eq!(got.len(), 10);
        assert!(s.due(10).is_empty());
        s.done(got[0], Outcome::default(), 20);
        assert_eq!(s.due(20).len(), 1);
    }

    #[test]
    fn many_timeouts_halve_the_limit_and_clean_cycles_restore_it() {
        let mut s = Scheduler::new(SchedConf {
            spread: 0.0,
            ..conf(64)
        });
        for i in 0..64 {
            s.add(&format!("n{i}"));
        }
        let mut now = 0;
        let got = s.due(now);
        assert_eq!(got.len(), 64);
        now += 1_000;
        for (k, i) in got.into_iter().enumerate() {
            let timed_out = k < 20;
            s.done(
                i,
                Outcome {
                    timed_out,
                    failed: timed_out,
                    degraded: timed_out,
                    active: true,
                },
                now,
            );
        }
        now = 5_000;
        let again = s.due(now);
        let sums = s.take_finished();
        assert_eq!(sums[0].timeouts, 20);
        assert_eq!(sums[0].polls, 64);
        assert_eq!(sums[0].duration_ms, 1_000);
        assert_eq!(s.limit(), 32);
        assert_eq!(again.len(), 32);
        for i in again {
            s.done(
                i,
                Outcome {
                    active: true,
                    ..Outcome::default()
                },
                now + 50,
            );
        }
        // A few hung nodes (under a tenth) do not shrink it further; clean cycles grow it.
        for c in 1..40u64 {
            now = c * 5_000 + 10;
            let got = s.due(now);
            for i in got {
                s.done(
                    i,
                    Outcome {
                        active: true,
                        ..Outcome::default()
                    },
                    now + 50,
                );
            }
        }
        assert_eq!(s.limit(), 64, "{:?}", s.take_finished());
    }

    #[test]
    fn open_breaker_nodes_are_polled_at_the_longest_interval_until_their_trial() {
        let mut s = Scheduler::new(SchedConf {
            spread: 0.0,
            ..conf(64)
        });
        let a = s.add("a");
        let b = s.add("b");
        // a was polled once (the poll that opened its breaker), then held for 150 s.
        assert_eq!(s.due(0), vec![a, b]);
        s.done(a, Outcome::default(), 50);
        s.done(b, Outcome::default(), 50);
        s.hold(a, Some(150_000));
        let polls = simulate(&mut s, 200_000, 50, |_, _| Outcome {
            degraded: true,
            ..Outcome::default()
        });
        let a_times: Vec<u64> = polls.iter().filter(|p| p.0 == a).map(|p| p.1).collect();
        let b_count = polls.iter().filter(|p| p.0 == b).count();
        // Evidence polls a minute apart, then the trial when the hold ends; after that (still
        // held here: the pipeline would have released it) at most one a base interval.
        assert_eq!(&a_times[..3], &[60_000, 120_000, 150_000], "{a_times:?}");
        assert!(b_count >= 35, "{b_count}");
    }

    #[test]
    fn due_nodes_go_in_the_order_they_fell_due_not_their_list_order() {
        let mut s = Scheduler::new(SchedConf {
            spread: 0.0,
            ..conf(1)
        });
        let b = s.add("b");
        let a = s.add("a");
        let active = Outcome {
            active: true,
            ..Outcome::default()
        };
        assert_eq!(s.due(0), vec![b]);
        // b's poll outlasts the interval; a has waited since t = 0.
        s.done(b, active, 6_000);
        assert_eq!(s.due(6_000), vec![a], "the node waiting longest goes first");
        s.done(a, active, 6_100);
        assert_eq!(s.due(6_100), vec![b]);
    }

    #[test]
    fn suspects_hold_at_most_a_quarter_of_the_slots() {
        let mut s = Scheduler::new(SchedConf {
            spread: 0.0,
            ..conf(8)
        });
        let nodes: Vec<usize> = (0..16).map(|i| s.add(&format!("n{i:02}"))).collect();
        let hung = |i: usize| i < 8;
        let mut now = 0;
        // First cycle: nobody is a suspect yet; the hung half time out.
        while s.polls_of(nodes[15]) == 0 {
            for i in s.due(now) {
                s.done(
                    i,
                    Outcome {
                        active: true,
                        timed_out: hung(i),
                        failed: hung(i),
                        ..Outcome::default()
                    },
                    now + 10,
                );
            }
            now += 10;
        }
        now = 5_000;
        let got = s.due(now);
        let suspects = got.iter().filter(|i| hung(**i)).count();
        assert!(
            suspects <= (s.limit() / 4).max(1),
            "{suspects} suspects of {got:?}"
        );
        assert_eq!(s.suspects_in_flight(), suspects);
        assert_eq!(got.len() - suspects, (s.limit() - suspects).min(8));
    }

    #[test]
    fn nodes_that_keep_hanging_do_not_keep_the_limit_down() {
        let mut s = Scheduler::new(conf(64));
        for i in 0..200 {
            s.add(&format!("n{i:03}"));
        }
        // 30 nodes (15 %) time out at every poll, after the 3 s timeout.
        let mut pending: Vec<(u64, usize)> = Vec::new();
        let mut limits = Vec::new();
        let mut now = 0;
        while now < 120_000 {
            pending.sort_unstable();
            while pending.first().is_some_and(|p| p.0 <= now) {
                let (t, i) = pending.remove(0);
                let hung = i < 30;
                let o = Outcome {
                    active: true,
                    timed_out: hung,
                    failed: hung,
                    ..Outcome::default()
                };
                s.done(i, o, t);
            }
            for i in s.due(now) {
                pending.push((now + if i < 30 { 3_000 } else { 50 }, i));
            }
            limits.push(s.limit());
            now += 50;
        }
        assert!(
            limits.contains(&32),
            "the first cycle's fresh timeouts halve it"
        );
        assert_eq!(s.limit(), 64, "and it recovers");
    }

    #[test]
    fn a_late_unhealthy_verdict_brings_a_backed_off_node_back_to_the_base_interval() {
        let mut s = Scheduler::new(SchedConf {
            spread: 0.0,
            ..conf(64)
        });
        let a = s.add("a");
        simulate(&mut s, 200_000, 50, |_, _| Outcome::default());
        assert_eq!(s.interval_ms(a), 60_000);
        // Polled at t = 200 000 + …: the scorer's verdict on that sample comes a moment later.
        let mut now = 200_000;
        let polled = loop {
            if let Some(i) = s.due(now).first().copied() {
                s.done(i, Outcome::default(), now + 50);
                break now;
            }
            now += 100;
        };
        s.set_degraded(a, true);
        assert_eq!(s.interval_ms(a), 5_000);
        let mut next = polled + 100;
        while s.due(next).is_empty() {
            next += 100;
        }
        assert!(
            next - polled <= 5_100,
            "next poll {} ms later",
            next - polled
        );
    }
}
