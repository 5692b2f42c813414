//! Shards: which nodes of the cluster file this watcher polls (`--shard I/N`, `shard:`).
//!
//! Assignment is by rendezvous (highest-random-weight) hashing of the node name: every shard
//! `j` of `1..=N` gives a node the weight `w(name, j)`, and the node belongs to the shard with
//! the highest weight. A shard's weights do not depend on N, so going from N to N+1 shards
//! moves exactly the nodes for which the new shard wins (about 1/(N+1) of them), all onto the
//! new shard, and removing the last shard moves only its own nodes. No node list, no
//! coordination: every watcher (and `--check`) computes the same answer from the name alone.
//!
//! The weight must be the same on every host and in every release, so it is built from
//! SHA-256 of the name (not `std`'s randomly keyed hasher), mixed with the shard number by
//! SplitMix64's finaliser so that N weights per node cost one digest.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Shard `index` of `count` (1-based: `1/2` and `2/2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    /// Which one, 1..=count.
    pub index: u32,
    /// How many.
    pub count: u32,
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("shard {s:?}: expected I/N with 1 <= I <= N, e.g. 1/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if index == 0 || count == 0 || index > count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl TryFrom<String> for Shard {
    type Error = String;
    fn try_from(s: String) -> Result<Shard, String> {
        s.parse()
    }
}

impl<'de> serde::Deserialize<'de> for Shard {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Shard, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// SplitMix64's output function: a bijective 64-bit mixer with full avalanche.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn name_hash(name: &str) -> u64 {
    let d = Sha256::digest(name.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// The shard (1-based) of `count` that owns the node `name`.
pub fn owner(name: &str, count: u32) -> u32 {
    let h = name_hash(name);
    (1..=count.max(1))
        .max_by_key(|&j| (mix(h ^ mix(u64::from(j))), std::cmp::Reverse(j)))
        .unwrap_or(1)
}

impl Shard {
    /// Whether this shard owns the node `name`.
    pub fn owns(&self, name: &str) -> bool {
        owner(name, self.count) == self.index
    }
}

/// Keeps only the nodes of `over` (the command line's shard), else of the cluster file's
/// `shard:`; nothing to do without either. A shard left without nodes is an error: a watcher
/// that polls nothing would look healthy while watching no one.
pub fn select(c: &mut crate::Cluster, over: Option<Shard>) -> Result<(), crate::Error> {
    let Some(s) = over.or(c.shard) else {
        return Ok(());
    };
    c.shard = Some(s);
    let all = c.nodes.len();
    c.nodes.retain(|n| s.owns(&n.name));
    if c.nodes.is_empty() {
        return Err(crate::Error::Usage(format!(
            "shard {s} has none of the cluster file's {all} nodes (fewer nodes than shards?)"
        )));
    }
    tracing::debug!("shard {s}: {} of {all} nodes", c.nodes.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four standard deviations of the count of `n` fair draws with probability `p`: a truly
    /// random assignment strays further with probability about 6e-5.
    fn four_sigma(n: usize, p: f64) -> f64 {
        4.0 * (n as f64 * p * (1.0 - p)).sqrt()
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("gpu-{i:05}")).collect()
    }

    #[test]
    fn shard_is_parsed_one_based_and_nonsense_is_refused() {
        assert_eq!("2/4".parse(), Ok(Shard { index: 2, count: 4 }));
        assert_eq!(Shard { index: 1, count: 1 }.to_string(), "1/1");
        for bad in ["0/4", "5/4", "1/0", "1", "a/b", "1/2/3", "-1/2", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn every_node_has_exactly_one_shard_and_the_answer_is_stable() {
        for name in names(500) {
            let owners: Vec<u32> = (1..=5)
                .filter(|&i| Shard { index: i, count: 5 }.owns(&name))
                .collect();
            assert_eq!(owners.len(), 1, "{name}: {owners:?}");
        }
        // Pinned: a release that changed the hash would reshuffle every running fleet.
        let got: Vec<u32> = ["gpu-01", "gpu-02", "gpu-03", "node-a", "x"]
            .iter()
            .map(|n| owner(n, 4))
            .collect();
        assert_eq!(got, PINNED_OWNERS_OF_4);
    }

    const PINNED_OWNERS_OF_4: [u32; 5] = [4, 3, 4, 1, 1];

    #[test]
    fn shards_are_balanced_within_four_sigma_of_a_fair_draw() {
        let all = names(10_000);
        for count in [2u32, 3, 4, 8, 16] {
            let mut per = vec![0usize; count as usize];
            for n in &all {
                per[(owner(n, count) - 1) as usize] += 1;
            }
            let p = 1.0 / f64::from(count);
            let fair = all.len() as f64 * p;
            let tolerance = four_sigma(all.len(), p);
            for (i, &k) in per.iter().enumerate() {
                let off = (k as f64 - fair).abs();
                assert!(
                    off <= tolerance,
                    "{count} shards: shard {} has {k} (fair {fair}, tolerance {tolerance})",
                    i + 1
                );
            }
        }
    }

    #[test]
    fn adding_a_shard_moves_about_one_in_n_plus_one_nodes_and_only_onto_the_new_one() {
        let all = names(10_000);
        for count in [1u32, 2, 3, 4, 8, 15] {
            let mut moved = 0usize;
            for n in &all {
                let (before, after) = (owner(n, count), owner(n, count + 1));
                if before != after {
                    assert_eq!(after, count + 1, "{n} moved between old shards");
                    moved += 1;
                }
            }
            let p = 1.0 / f64::from(count + 1);
            let expect = all.len() as f64 * p;
            let tolerance = four_sigma(all.len(), p);
            assert!(
                (moved as f64 - expect).abs() <= tolerance,
                "{count}->{}: moved {moved}, expected {expect} ± {tolerance}",
                count + 1
            );
        }
    }

    #[test]
    fn removing_the_last_shard_moves_only_its_nodes() {
        let all = names(2_000);
        for n in &all {
            let (before, after) = (owner(n, 4), owner(n, 3));
            if before != 4 {
                assert_eq!(before, after, "{n}");
            }
        }
    }
}
