//! Prometheus's `for` and `keep_firing_for` over a node's samples: a condition a sample asks
//! for is pending until it has held for its rule's `for` (a number of samples in a row, or a
//! duration of record time), then active; an active condition a sample no longer asks for
//! stays active for `keep_firing_for`, then clears. Pure: the engine turns what becomes
//! active or clears into fired and resolved alerts. The conditions live in the state file,
//! so a cron run per poll counts exactly as one long stream does.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use ugro_types::Timestamp;

use crate::rules::{AlertName, Want};

/// How long a condition must hold before it fires, or stay clear before it resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Samples in a row: `for: 2` fires on the second (0 and 1: on the first).
    Samples(u32),
    /// Record time since the first sample (Prometheus's `for: 30s`).
    Time(Duration),
}

impl Hold {
    /// Whether a condition seen `samples` times in a row since `since` has held long enough.
    fn met(self, samples: u32, since: Timestamp, now: Timestamp) -> bool {
        match self {
            Hold::Samples(n) => samples >= n,
            Hold::Time(d) => now.since(since) >= d,
        }
    }

    /// Whether a condition clear for `samples` samples since `since` has stayed clear long
    /// enough: `keep_firing_for: 1` keeps firing through one clear sample.
    fn cleared(self, samples: u32, since: Timestamp, now: Timestamp) -> bool {
        match self {
            Hold::Samples(n) => samples > n,
            Hold::Time(d) => now.since(since) >= d,
        }
    }
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hold::Samples(n) => write!(f, "{n} samples"),
            Hold::Time(d) => write!(f, "{}", humantime::format_duration(*d)),
        }
    }
}

/// One alert rule's timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Pending until the condition has held this long.
    pub hold: Hold,
    /// Still firing this long after the condition cleared.
    pub keep_firing_for: Hold,
}

impl Timing {
    /// The built-in timing of an alert (see [`AlertName::default_for`]).
    pub fn builtin(name: AlertName) -> Timing {
        Timing {
            hold: Hold::Samples(name.default_for()),
            keep_firing_for: Hold::Samples(name.default_keep_firing_for()),
        }
    }
}

/// One condition of a node, from its first sample until it clears.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cond {
    /// What the latest sample with the condition asked for (severity included).
    pub want: Want,
    /// First sample of this run of the condition.
    pub since: Timestamp,
    /// Samples in a row with the condition.
    pub samples: u32,
    /// `for` met and not cleared since.
    pub active: bool,
    /// Clear samples in a row (while active: the `keep_firing_for` count).
    #[serde(default)]
    pub clear_samples: u32,
    /// First clear sample of the current clear run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clear_since: Option<Timestamp>,
    /// What fires in the alert store for this condition (its identity, severity included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired: Option<Want>,
    /// A node-level condition (NodeDegraded / NodeCritical) whose sample's reasons the node's
    /// specific alerts all name already: it fires nothing (see [`cover`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub covered: bool,
}

impl Cond {
    fn new(want: Want, now: Timestamp) -> Cond {
        Cond {
            want,
            since: now,
            samples: 0,
            active: false,
            clear_samples: 0,
            clear_since: None,
            fired: None,
            covered: false,
        }
    }

    /// A condition that fires already (adopted from a state file of version 1).
    pub fn adopted(want: Want, now: Timestamp) -> Cond {
        Cond {
            samples: 1,
            active: true,
            fired: Some(want),
            ..Cond::new(want, now)
        }
    }

    /// The condition's identity within the node: its family (NodeDegraded and NodeCritical
    /// are one) and GPU, not its severity.
    fn key(w: &Want) -> (AlertName, Option<u32>) {
        (w.name.family(), w.gpu)
    }

    /// Gone: clear, and nothing of it fires.
    fn gone(&self) -> bool {
        !self.active && self.clear_since.is_some()
    }
}

/// What to do in the alert store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Fire this identity.
    Fire(Want),
    /// Resolve this identity.
    Resolve(Want),
}

/// Applies one sample: `present` is what it asks for; `frozen` conditions (those an
/// unreachable or data-less sample says nothing about) keep their state and count.
pub fn update(
    conds: &mut Vec<Cond>,
    present: &[Want],
    frozen: impl Fn(&Want) -> bool,
    timing: impl Fn(AlertName) -> Timing,
    now: Timestamp,
) {
    for c in conds.iter_mut() {
        let key = Cond::key(&c.want);
        match present.iter().find(|w| Cond::key(w) == key) {
            Some(w) => {
                if c.clear_since.is_some() && !c.active {
                    // Back after it cleared: a new run of the condition.
                    c.since = now;
                    c.samples = 0;
                }
                c.want = *w;
                c.samples = c.samples.saturating_add(1);
                c.clear_samples = 0;
                c.clear_since = None;
                c.active = c.active || timing(w.name).hold.met(c.samples, c.since, now);
            }
            None if frozen(&c.want) => {}
            None => {
                let since = *c.clear_since.get_or_insert(now);
                c.clear_samples = c.clear_samples.saturating_add(1);
                c.samples = 0;
                let keep = timing(c.want.name).keep_firing_for;
                if c.active && keep.cleared(c.clear_samples, since, now) {
                    c.active = false;
                }
            }
        }
    }
    for w in present {
        let key = Cond::key(w);
        if !conds.iter().any(|c| Cond::key(&c.want) == key) {
            let mut c = Cond::new(*w, now);
            c.samples = 1;
            c.active = timing(w.name).hold.met(1, now, now);
            conds.push(c);
        }
    }
}

/// One GPU alert's identity within a node: its name and GPU.
pub type Key = (AlertName, Option<u32>);

/// Alertmanager's inhibit rule with `equal: [node]`, decided per sample: the node-level
/// condition (NodeDegraded / NodeCritical), when this sample asks for it, is covered, and
/// fires nothing, while `named` (the specific alerts that name the sample's present reasons,
/// `None` when any present reason has no alert of its own) is not empty and each of them is
/// active. A second cause is therefore never hidden. One that fired already is not taken back,
/// and one the sample does not ask for (clearing, or frozen while the node is unreachable)
/// keeps what the last sample that asked for it decided.
pub fn cover(conds: &mut [Cond], present: &[Want], named: Option<&[Key]>) {
    let node = AlertName::NodeCritical;
    if !present.iter().any(|w| w.name.family() == node) {
        return;
    }
    let all_active = named.is_some_and(|keys| {
        !keys.is_empty()
            && keys.iter().all(|k| {
                conds
                    .iter()
                    .any(|c| c.active && (c.want.name, c.want.gpu) == *k)
            })
    });
    if let Some(c) = conds.iter_mut().find(|c| c.want.name.family() == node) {
        c.covered = all_active && c.fired.is_none();
    }
}

/// What a condition fires: its identity while active and not covered. On a `flapping` node
/// (Nagios: notifications suppressed, event handlers still run) warning alerts stay as they
/// are until it settles, but a critical condition still fires and resolves on time, so
/// slurm_drain and remediation act on a hard fault of a node that comes and goes; a critical
/// alert whose condition softened to a warning resolves, and the warning waits.
fn target(c: &Cond, flapping: bool) -> Option<Want> {
    let want = (c.active && !c.covered).then_some(c.want);
    if !flapping || want.is_some_and(|w| w.critical) {
        return want;
    }
    c.fired.filter(|f| !f.critical)
}

/// Brings what fires in line with what is active ([`target`]; `flapping`: the node's
/// warning alerts stay as they are). Conditions that are gone and fire nothing are dropped.
pub fn reconcile(conds: &mut Vec<Cond>, flapping: bool, out: &mut Vec<Change>) {
    for c in conds.iter_mut() {
        let want = target(c, flapping);
        if c.fired != want {
            if let Some(f) = c.fired {
                out.push(Change::Resolve(f));
            }
            if let Some(w) = want {
                out.push(Change::Fire(w));
            }
            c.fired = want;
        }
    }
    conds.retain(|c| !(c.gone() && c.fired.is_none()));
}

/// The node's state as its active node-level conditions say, for flap detection and the
/// cluster share (Nagios's hard state): `U` unreachable or data missing, `C` critical, `W`
/// degraded, `O` none of those.
pub fn hard_state(conds: &[Cond]) -> u8 {
    let mut s = b'O';
    for c in conds.iter().filter(|c| c.active) {
        let here = match c.want.name {
            AlertName::NodeUnreachable | AlertName::NodeDataMissing => b'U',
            AlertName::NodeCritical => b'C',
            AlertName::NodeDegraded => b'W',
            _ => continue,
        };
        let rank = |x: u8| match x {
            b'U' => 3,
            b'C' => 2,
            b'W' => 1,
            _ => 0,
        };
        if rank(here) > rank(s) {
            s = here;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_795_000_000_000;

    fn t(s: i64) -> Timestamp {
        Timestamp(T0 + s * 1000)
    }

    fn w(name: AlertName, critical: bool) -> Want {
        Want {
            name,
            gpu: None,
            critical,
        }
    }

    fn timing(hold: Hold, keep: Hold) -> impl Fn(AlertName) -> Timing {
        move |_| Timing {
            hold,
            keep_firing_for: keep,
        }
    }

    /// Feeds one sample per 5 s; returns the changes per sample.
    fn run(samples: &[&[Want]], hold: Hold, keep: Hold) -> Vec<Vec<Change>> {
        let mut conds = Vec::new();
        let mut all = Vec::new();
        for (i, p) in samples.iter().enumerate() {
            update(
                &mut conds,
                p,
                |_| false,
                timing(hold, keep),
                t(i as i64 * 5),
            );
            let mut out = Vec::new();
            reconcile(&mut conds, false, &mut out);
            all.push(out);
        }
        all
    }

    #[test]
    fn a_condition_fires_on_its_nth_sample_in_a_row_and_resolves_on_the_first_clear_one() {
        let d = w(AlertName::NodeDegraded, false);
        let got = run(&[&[d], &[d], &[d], &[]], Hold::Samples(3), Hold::Samples(0));
        assert_eq!(
            got,
            [
                vec![],
                vec![],
                vec![Change::Fire(d)],
                vec![Change::Resolve(d)]
            ]
        );
    }

    #[test]
    fn a_run_shorter_than_for_never_fires() {
        let d = w(AlertName::NodeDegraded, false);
        let got = run(
            &[&[d], &[d], &[], &[d], &[]],
            Hold::Samples(3),
            Hold::Samples(0),
        );
        assert!(got.iter().all(Vec::is_empty), "{got:?}");
    }

    #[test]
    fn a_duration_counts_record_time_from_the_first_sample() {
        let d = w(AlertName::NodeDegraded, false);
        let hold = Hold::Time(Duration::from_secs(10));
        let got = run(&[&[d], &[d], &[d]], hold, Hold::Samples(0));
        assert_eq!(got, [vec![], vec![], vec![Change::Fire(d)]]);
    }

    #[test]
    fn keep_firing_for_rides_out_one_clear_sample() {
        let d = w(AlertName::NodeDegraded, false);
        let got = run(
            &[&[d], &[], &[d], &[], &[]],
            Hold::Samples(0),
            Hold::Samples(1),
        );
        assert_eq!(
            got,
            [
                vec![Change::Fire(d)],
                vec![],
                vec![],
                vec![],
                vec![Change::Resolve(d)]
            ]
        );
    }

    #[test]
    fn degraded_to_critical_keeps_the_time_held_and_swaps_identities() {
        let d = w(AlertName::NodeDegraded, false);
        let c = w(AlertName::NodeCritical, true);
        let got = run(
            &[&[d], &[d], &[d], &[c]],
            Hold::Samples(3),
            Hold::Samples(0),
        );
        assert_eq!(got[2], [Change::Fire(d)]);
        assert_eq!(got[3], [Change::Resolve(d), Change::Fire(c)]);
    }

    #[test]
    fn frozen_conditions_keep_count_and_fire_state() {
        let d = w(AlertName::NodeDegraded, false);
        let u = w(AlertName::NodeUnreachable, true);
        let mut conds = Vec::new();
        let tm = timing(Hold::Samples(2), Hold::Samples(0));
        update(&mut conds, &[d], |_| false, &tm, t(0));
        update(
            &mut conds,
            &[u],
            |w| w.name != AlertName::NodeUnreachable,
            &tm,
            t(5),
        );
        update(&mut conds, &[d], |_| false, &tm, t(10));
        let mut out = Vec::new();
        reconcile(&mut conds, false, &mut out);
        assert_eq!(
            out,
            [Change::Fire(d)],
            "degraded held two samples around the gap"
        );
    }

    #[test]
    fn suppressed_conditions_change_nothing_until_released() {
        let d = w(AlertName::NodeDegraded, false);
        let mut conds = Vec::new();
        let tm = timing(Hold::Samples(0), Hold::Samples(0));
        update(&mut conds, &[d], |_| false, &tm, t(0));
        let mut out = Vec::new();
        reconcile(&mut conds, true, &mut out);
        assert!(out.is_empty());
        update(&mut conds, &[], |_| false, &tm, t(5));
        reconcile(&mut conds, true, &mut out);
        assert!(out.is_empty());
        assert!(
            conds.is_empty(),
            "a condition gone that never fired is dropped"
        );
    }

    #[test]
    fn a_flapping_node_still_fires_and_resolves_critical_conditions_but_holds_warnings() {
        let d = w(AlertName::NodeDegraded, false);
        let c = w(AlertName::NodeCritical, true);
        let thermal = w(AlertName::GpuThermal, false);
        let mut conds = Vec::new();
        let tm = timing(Hold::Samples(0), Hold::Samples(0));
        let mut step = |present: &[Want], i: i64| {
            update(&mut conds, present, |_| false, &tm, t(i));
            let mut out = Vec::new();
            reconcile(&mut conds, true, &mut out);
            out
        };
        assert_eq!(
            step(&[d, thermal], 0),
            Vec::<Change>::new(),
            "warnings wait"
        );
        assert_eq!(step(&[c, thermal], 1), [Change::Fire(c)], "critical fires");
        assert_eq!(
            step(&[d, thermal], 2),
            [Change::Resolve(c)],
            "softened: the critical resolves, the warning still waits"
        );
        assert_eq!(step(&[c], 3), [Change::Fire(c)]);
        assert_eq!(step(&[], 4), [Change::Resolve(c)]);
    }

    #[test]
    fn a_node_condition_whose_reasons_active_gpu_alerts_all_name_fires_nothing() {
        let d = w(AlertName::NodeDegraded, false);
        let thermal = Want {
            gpu: Some(2),
            ..w(AlertName::GpuThermal, false)
        };
        let key = (AlertName::GpuThermal, Some(2));
        let tm = timing(Hold::Samples(0), Hold::Samples(1));
        let mut conds = Vec::new();
        let mut step = |present: &[Want], named: Option<&[Key]>, i: i64| {
            update(&mut conds, present, |_| false, &tm, t(i));
            cover(&mut conds, present, named);
            let mut out = Vec::new();
            reconcile(&mut conds, false, &mut out);
            out
        };
        assert_eq!(
            step(&[d, thermal], Some(&[key]), 0),
            [Change::Fire(thermal)]
        );
        // Clearing (keep_firing_for) keeps the decision; no sample asks for NodeDegraded.
        assert_eq!(step(&[], None, 1), Vec::<Change>::new());
        assert_eq!(step(&[d, thermal], Some(&[key]), 2), Vec::<Change>::new());
        // A second cause without an alert of its own: the node alert fires.
        assert_eq!(step(&[d, thermal], None, 3), [Change::Fire(d)]);
        // Once fired, it stays until it clears.
        assert_eq!(step(&[d, thermal], Some(&[key]), 4), Vec::<Change>::new());
    }

    #[test]
    fn hard_state_ranks_unreachable_over_critical_over_degraded() {
        let mk = |name, active| Cond {
            active,
            ..Cond::new(w(name, false), t(0))
        };
        assert_eq!(hard_state(&[]), b'O');
        assert_eq!(hard_state(&[mk(AlertName::NodeDegraded, false)]), b'O');
        assert_eq!(
            hard_state(&[
                mk(AlertName::NodeDegraded, true),
                mk(AlertName::GpuThermal, true)
            ]),
            b'W'
        );
        assert_eq!(
            hard_state(&[
                mk(AlertName::NodeCritical, true),
                mk(AlertName::NodeUnreachable, true)
            ]),
            b'U'
        );
    }
}
