//! A 16-ary max tree over small integer values: "the leftmost position at or after `lo` whose
//! value is at least `need`", with point updates.
//!
//! BFD's capacity tree asks this once per item, over one value per remaining-room leaf (8193 of
//! them for an 8192-token limit). A binary segment tree answers in ~2·14 dependent steps up and
//! down; with 16 children per node (one 64-byte cache line of i32) the same walk is ≤ 2·4
//! steps, each a compare of 16 values that the compiler turns into a few SIMD compares and a
//! mask, so the search costs a handful of cache lines instead of a chain of ~28 loads.

/// Children per node.
const FANOUT: usize = 16;

/// Values at the leaves, per level the maximum of each group of [`FANOUT`] below. `EMPTY` pads
/// the last group of every level.
pub(super) struct MaxTree {
    /// `levels[0]` holds the leaves; `levels[k + 1][j]` = max of `levels[k][16j..16j + 16]`. The
    /// last level has a single group.
    levels: Vec<Vec<i32>>,
}

/// The value of a leaf with nothing in it (below every `need` asked for).
pub(super) const EMPTY: i32 = -1;

impl MaxTree {
    /// `leaves` positions, all [`EMPTY`].
    pub(super) fn new(leaves: usize) -> Self {
        let mut levels = Vec::new();
        let mut n = leaves.max(1);
        loop {
            levels.push(vec![EMPTY; n.div_ceil(FANOUT) * FANOUT]);
            if n <= FANOUT {
                break;
            }
            n = n.div_ceil(FANOUT);
        }
        Self { levels }
    }

    /// The value at leaf `i`.
    #[inline]
    pub(super) fn get(&self, i: usize) -> i32 {
        self.levels[0][i]
    }

    /// Sets leaf `i` to `v` and the maxima above it.
    pub(super) fn set(&mut self, mut i: usize, v: i32) {
        self.levels[0][i] = v;
        for k in 1..self.levels.len() {
            let g = i / FANOUT;
            let group = &self.levels[k - 1][g * FANOUT..(g + 1) * FANOUT];
            let m = group.iter().copied().fold(EMPTY, i32::max);
            if self.levels[k][g] == m {
                return; // the maxima above already agree
            }
            self.levels[k][g] = m;
            i = g;
        }
    }

    /// Bit j set where `group[j] >= need`.
    #[inline]
    fn mask(group: &[i32], need: i32) -> u32 {
        let mut m = 0u32;
        for (j, &x) in group.iter().enumerate() {
            m |= u32::from(x >= need) << j;
        }
        m
    }

    /// The leftmost leaf at or after `lo` whose value is ≥ `need`.
    pub(super) fn first_from(&self, lo: usize, need: i32) -> Option<usize> {
        let top = self.levels.len() - 1;
        let (mut k, mut pos) = (0, lo);
        // Up: in the group of `pos`, the first position from `pos` on; else the groups after it,
        // one level higher.
        loop {
            let level = &self.levels[k];
            if pos >= level.len() {
                return None;
            }
            let g = pos / FANOUT;
            let m = Self::mask(&level[g * FANOUT..(g + 1) * FANOUT], need) >> (pos % FANOUT)
                << (pos % FANOUT);
            if m != 0 {
                pos = g * FANOUT + m.trailing_zeros() as usize;
                break;
            }
            if k == top {
                return None;
            }
            (k, pos) = (k + 1, g + 1);
        }
        // Down: the first child at least `need`, which the parent's maximum guarantees.
        while k > 0 {
            k -= 1;
            let level = &self.levels[k];
            let m = Self::mask(&level[pos * FANOUT..(pos + 1) * FANOUT], need);
            debug_assert!(m != 0);
            pos = pos * FANOUT + m.trailing_zeros() as usize;
        }
        Some(pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::rng::SplitMix64;

    #[test]
    fn first_from_equals_a_linear_scan() {
        let mut r = SplitMix64::new(1);
        for leaves in [1, 2, 15, 16, 17, 255, 256, 257, 4097, 8193] {
            let mut tree = MaxTree::new(leaves);
            let mut plain = vec![EMPTY; leaves];
            for _ in 0..3000 {
                let i = r.below(leaves);
                let v = r.below(40) as i32 - 1;
                tree.set(i, v);
                plain[i] = v;
                let lo = r.below(leaves + 2);
                let need = r.below(40) as i32;
                let want = (lo..leaves).find(|&j| plain[j] >= need);
                assert_eq!(tree.first_from(lo, need), want, "{leaves} leaves");
                assert_eq!(tree.get(i), v);
            }
        }
    }
}
