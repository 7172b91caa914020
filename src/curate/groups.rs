//! Duplicate groups: union–find over sample indices, and the rule that keeps one member per
//! group. Every dedup tier reports pairs; this module turns them into connected components
//! (a chain a≈b≈c is one group even if a and c differ more than the threshold, as SemDeDup and
//! NeMo Curator do) and picks the survivor.

use serde::{Deserialize, Serialize};

/// Disjoint sets over `0..n` with path halving and union by size.
#[derive(Debug, Clone)]
pub struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    /// `n` singletons.
    pub fn new(n: usize) -> Self {
        Self {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.parent.len()
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    /// The representative of `i`'s set.
    pub fn find(&mut self, mut i: u32) -> u32 {
        while self.parent[i as usize] != i {
            let grandparent = self.parent[self.parent[i as usize] as usize];
            self.parent[i as usize] = grandparent;
            i = grandparent;
        }
        i
    }

    /// Merges the sets of `a` and `b`; returns true when they were apart.
    pub fn union(&mut self, a: u32, b: u32) -> bool {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return false;
        }
        let (big, small) = if self.size[ra as usize] >= self.size[rb as usize] {
            (ra, rb)
        } else {
            (rb, ra)
        };
        self.parent[small as usize] = big;
        self.size[big as usize] += self.size[small as usize];
        true
    }

    /// The groups with more than one member, each sorted ascending, ordered by their smallest
    /// member: a deterministic function of the pairs merged, whatever their order.
    pub fn groups(&mut self) -> Vec<Vec<u32>> {
        let n = self.parent.len();
        let mut by_root: Vec<Vec<u32>> = vec![Vec::new(); n];
        for i in 0..n as u32 {
            let root = self.find(i);
            by_root[root as usize].push(i);
        }
        let mut groups: Vec<Vec<u32>> = by_root.into_iter().filter(|g| g.len() > 1).collect();
        groups.sort_unstable_by_key(|g| g[0]);
        groups
    }
}

/// Which member of a duplicate group survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum KeepRule {
    /// The first in pool order (shards in input order, samples in shard order).
    #[default]
    First,
    /// The one with the most pixels (width × height).
    Largest,
    /// The one with the highest image–text relevance score.
    BestScore,
    /// The one least similar to its cluster's centroid (SemDeDup's rule: prototypical samples
    /// are the most redundant).
    LeastCentral,
}

/// What a keep rule may look at for one member. Missing values rank last.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct KeepInfo {
    /// Width × height of the image.
    pub pixels: Option<u64>,
    /// Relevance score (higher is better).
    pub score: Option<f32>,
    /// Cosine similarity to the cluster centroid (lower is kept under `least-central`).
    pub centrality: Option<f32>,
}

/// The member of `group` that `rule` keeps. Ties, and members without the value the rule needs,
/// fall back to pool order, so the choice never depends on anything but the inputs.
/// Returns `None` only for an empty group.
pub fn keeper(group: &[u32], rule: KeepRule, info: impl Fn(u32) -> KeepInfo) -> Option<u32> {
    // Larger key wins; the negated index makes the earliest sample win ties.
    let key = |i: u32| -> (bool, f64, i64) {
        let info = info(i);
        let value = match rule {
            KeepRule::First => Some(0.0),
            KeepRule::Largest => info.pixels.map(|p| p as f64),
            KeepRule::BestScore => info.score.filter(|s| !s.is_nan()).map(f64::from),
            KeepRule::LeastCentral => info
                .centrality
                .filter(|c| !c.is_nan())
                .map(|c| -f64::from(c)),
        };
        (value.is_some(), value.unwrap_or(0.0), -i64::from(i))
    };
    group.iter().copied().max_by(|&a, &b| {
        key(a)
            .partial_cmp(&key(b))
            .unwrap_or(std::cmp::Ordering::Equal)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_become_one_group_in_a_deterministic_order() {
        let mut a = UnionFind::new(8);
        for (x, y) in [(5, 6), (1, 3), (3, 7), (6, 0)] {
            a.union(x, y);
        }
        let mut b = UnionFind::new(8);
        for (x, y) in [(0, 6), (7, 3), (6, 5), (3, 1)] {
            b.union(x, y);
        }
        assert_eq!(a.groups(), vec![vec![0, 5, 6], vec![1, 3, 7]]);
        assert_eq!(a.groups(), b.groups());
        assert!(!a.union(7, 1), "already joined");
    }

    #[test]
    fn keep_rules_pick_the_member_they_name() {
        let infos = [
            KeepInfo {
                pixels: Some(100),
                score: Some(0.2),
                centrality: Some(0.9),
            },
            KeepInfo {
                pixels: Some(400),
                score: None,
                centrality: Some(0.5),
            },
            KeepInfo {
                pixels: Some(400),
                score: Some(0.7),
                centrality: Some(0.95),
            },
        ];
        let info = |i: u32| infos[i as usize];
        let group = [0, 1, 2];
        assert_eq!(keeper(&group, KeepRule::First, info), Some(0));
        // Two members share the most pixels: the earlier one wins the tie.
        assert_eq!(keeper(&group, KeepRule::Largest, info), Some(1));
        // A member without a score ranks below every scored one.
        assert_eq!(keeper(&group, KeepRule::BestScore, info), Some(2));
        assert_eq!(keeper(&group, KeepRule::LeastCentral, info), Some(1));
        assert_eq!(keeper(&[], KeepRule::First, info), None);
    }
}
