//! Offline best-fit-decreasing over two limits (tokens and tiles) in O(n log L).
//!
//! One dimension is "primary": the one the pool fills more of, Σtokens/L against Σtiles/T. Items
//! go in decreasing primary size (ties: larger secondary first, then lower index). Each goes into
//! the open bin with the least primary room that still holds it in BOTH dimensions; among bins
//! with that same primary room, the one with the least secondary room that fits. A segment tree
//! indexed by remaining primary capacity answers that: each leaf holds the bins with that much
//! room (ordered by secondary room), and each node keeps the largest secondary room below it, so
//! the descent skips bins that have primary room but no secondary room.

use std::collections::BTreeSet;

use super::{Cost, Entry, Limits, Pack};

/// Capacities above 2^16 share leaves (buckets); the bucket holding the query is then checked
/// bin by bin, so answers stay exact, only "tightest" becomes approximate inside a bucket. The
/// tree is allocated per plan, so this also bounds its cost for huge limits (65536 leaves).
const MAX_LEAF_BITS: u32 = 16;

/// Segment tree over remaining primary capacity; see the module docs.
struct CapacityTree {
    shift: u32,
    size: usize,
    /// Per node: the largest secondary room of any bin below it, -1 when none.
    max_s: Vec<i64>,
    /// Per leaf: (secondary room, bin) of the bins whose primary room maps to the leaf.
    leaves: Vec<BTreeSet<(u32, u32)>>,
}

impl CapacityTree {
    fn new(cap_p: u32) -> Self {
        let bits = 32 - cap_p.leading_zeros();
        let shift = bits.saturating_sub(MAX_LEAF_BITS);
        let size = ((cap_p >> shift) as usize + 1).next_power_of_two();
        Self {
            shift,
            size,
            max_s: vec![-1; 2 * size],
            leaves: (0..size).map(|_| BTreeSet::new()).collect(),
        }
    }

    fn leaf(&self, rem_p: u32) -> usize {
        (rem_p >> self.shift) as usize
    }

    fn insert(&mut self, rem: (u32, u32), bin: u32) {
        let l = self.leaf(rem.0);
        self.leaves[l].insert((rem.1, bin));
        self.refresh(l);
    }

    fn remove(&mut self, rem: (u32, u32), bin: u32) {
        let l = self.leaf(rem.0);
        self.leaves[l].remove(&(rem.1, bin));
        self.refresh(l);
    }

    fn refresh(&mut self, leaf: usize) {
        let mut i = leaf + self.size;
        self.max_s[i] = self.leaves[leaf].last().map_or(-1, |&(s, _)| i64::from(s));
        i >>= 1;
        while i >= 1 {
            let m = self.max_s[2 * i].max(self.max_s[2 * i + 1]);
            if self.max_s[i] == m {
                break; // ancestors already agree
            }
            self.max_s[i] = m;
            i >>= 1;
        }
    }

    /// The leftmost leaf at or after `lo` holding a bin with secondary room ≥ `need`.
    fn first_from(&self, lo: usize, need: u32) -> Option<usize> {
        let need = i64::from(need);
        let mut i = lo + self.size;
        loop {
            if self.max_s[i] >= need {
                while i < self.size {
                    i *= 2;
                    if self.max_s[i] < need {
                        i += 1;
                    }
                }
                return Some(i - self.size);
            }
            // Climb while a right child, then step to the subtree just right of this one.
            while i & 1 == 1 {
                i >>= 1;
            }
            if i == 0 {
                return None;
            }
            i += 1;
        }
    }

    /// The tightest open bin with primary room ≥ `p` and secondary room ≥ `s`.
    fn best_fit(&self, p: u32, s: u32, bins: &[(u32, u32)]) -> Option<u32> {
        let mut lo = self.leaf(p);
        if self.shift > 0 {
            // The bucket holding p may hold bins with less than p of room: check each.
            let hit = self.leaves[lo]
                .range((s, 0)..)
                .find(|&&(_, b)| bins[b as usize].0 >= p);
            if let Some(&(_, b)) = hit {
                return Some(b);
            }
            lo += 1;
            if lo >= self.size {
                return None;
            }
        }
        let leaf = self.first_from(lo, s)?;
        self.leaves[leaf].range((s, 0)..).next().map(|&(_, b)| b)
    }
}

/// One fitting item: sample index and its (primary, secondary) size.
#[derive(Clone, Copy)]
struct Item {
    idx: u32,
    p: u32,
    s: u32,
}

/// The bins of one BFD run: remaining room per bin, and each item's bin (`u32::MAX` when none).
struct Run {
    bins: Vec<(u32, u32)>,
    bin_of: Vec<u32>,
    /// Bins emptied by the post-pass; left out of the plan.
    gone: Vec<bool>,
    live: usize,
}

/// Limits in (primary, secondary) order, and the smallest item sizes (a bin with less room than
/// these in either dimension can take no item, so it stays out of the tree).
#[derive(Clone, Copy)]
struct Dims {
    cap: (u32, u32),
    min: (u32, u32),
}

impl Dims {
    fn usable(self, rem: (u32, u32)) -> bool {
        rem.0 >= self.min.0 && rem.1 >= self.min.1
    }
}

/// Best fit of `items` in the given order, then [`empty_weak_bins`].
fn run(items: &[Item], order: &[u32], d: Dims, n: usize) -> Run {
    let mut tree = CapacityTree::new(d.cap.0);
    let mut bins: Vec<(u32, u32)> = Vec::new();
    let mut bin_of = vec![u32::MAX; n];
    for &k in order {
        let it = items[k as usize];
        let b = match tree.best_fit(it.p, it.s, &bins) {
            Some(b) => {
                tree.remove(bins[b as usize], b);
                b
            }
            None => {
                bins.push(d.cap);
                (bins.len() - 1) as u32
            }
        };
        let rem = &mut bins[b as usize];
        *rem = (rem.0 - it.p, rem.1 - it.s);
        if d.usable(*rem) {
            tree.insert(*rem, b);
        }
        bin_of[it.idx as usize] = b;
    }
    let live = bins.len();
    let mut r = Run {
        gone: vec![false; bins.len()],
        bins,
        bin_of,
        live,
    };
    empty_weak_bins(&mut r, &mut tree, items, d);
    r
}

/// Post-pass: tries the bins from the least filled (normalized primary + secondary fill) up, and
/// empties one when all its items fit, best fit, into the room other bins have left in both
/// dimensions; otherwise its items stay. A bin that received items is not tried (its member list
/// here would be stale). Stops after a run of failures: the fuller bins rarely empty.
fn empty_weak_bins(r: &mut Run, tree: &mut CapacityTree, items: &[Item], d: Dims) {
    const GIVE_UP_AFTER: usize = 256;
    let nb = r.bins.len();
    if nb < 2 {
        return;
    }
    // Members per bin (item positions), by a counting sort.
    let mut start = vec![0u32; nb + 1];
    for it in items {
        start[r.bin_of[it.idx as usize] as usize + 1] += 1;
    }
    for i in 0..nb {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut members = vec![0u32; items.len()];
    for (k, it) in items.iter().enumerate() {
        let b = r.bin_of[it.idx as usize] as usize;
        members[fill[b] as usize] = k as u32;
        fill[b] += 1;
    }
    let weight = |b: usize| {
        let (rp, rs) = r.bins[b];
        let used = (u128::from(d.cap.0 - rp), u128::from(d.cap.1 - rs));
        used.0 * u128::from(d.cap.1) + used.1 * u128::from(d.cap.0)
    };
    let mut cand: Vec<u32> = (0..nb as u32).collect();
    cand.sort_by_key(|&b| (weight(b as usize), b));
    let mut touched = vec![false; nb];
    let mut moves: Vec<(u32, u32, (u32, u32))> = Vec::new();
    let mut failures = 0;
    for &b in &cand {
        if failures >= GIVE_UP_AFTER {
            break;
        }
        let b = b as usize;
        if touched[b] {
            continue;
        }
        let own = r.bins[b];
        if d.usable(own) {
            tree.remove(own, b as u32);
        }
        let mut mine: Vec<Item> = members[start[b] as usize..start[b + 1] as usize]
            .iter()
            .map(|&k| items[k as usize])
            .collect();
        mine.sort_unstable_by_key(|it| (!it.p, !it.s, it.idx));
        moves.clear();
        let mut ok = true;
        for it in &mine {
            let Some(t) = tree.best_fit(it.p, it.s, &r.bins) else {
                ok = false;
                break;
            };
            let old = r.bins[t as usize];
            tree.remove(old, t);
            let rem = (old.0 - it.p, old.1 - it.s);
            r.bins[t as usize] = rem;
            if d.usable(rem) {
                tree.insert(rem, t);
            }
            moves.push((it.idx, t, old));
        }
        if ok {
            for &(idx, t, _) in &moves {
                r.bin_of[idx as usize] = t;
                touched[t as usize] = true;
            }
            r.gone[b] = true;
            r.live -= 1;
            failures = 0;
        } else {
            for &(_, t, old) in moves.iter().rev() {
                let cur = r.bins[t as usize];
                if d.usable(cur) {
                    tree.remove(cur, t);
                }
                r.bins[t as usize] = old;
                if d.usable(old) {
                    tree.insert(old, t);
                }
            }
            if d.usable(own) {
                tree.insert(own, b as u32);
            }
            failures += 1;
        }
    }
}

/// Packs the fitting entries by BFD and gives each `Alone` entry a pack of its own (appended
/// after the BFD packs, in index order). Pack order here is creation order; the caller shuffles.
///
/// With both limits set, BFD runs under three orders (primary size; normalized sum; normalized
/// max) and the plan with the fewest packs is kept (ties: the earlier order).
pub(super) fn pack(entries: &[Entry], limits: Limits) -> Vec<Pack> {
    let (mut sum_tok, mut sum_til) = (0u128, 0u128);
    for e in entries {
        if let Entry::Fits(c) = e {
            sum_tok += u128::from(c.tokens);
            sum_til += u128::from(c.tiles);
        }
    }
    // Σtiles/T > Σtokens/L, cross-multiplied to stay exact.
    let tiles_primary = sum_til * u128::from(limits.tokens) > sum_tok * u128::from(limits.tiles);
    let dims = |c: Cost| {
        if tiles_primary {
            (c.tiles, c.tokens)
        } else {
            (c.tokens, c.tiles)
        }
    };
    let (cap_p, cap_s) = dims(Cost::new(limits.tokens, limits.tiles));

    let mut items: Vec<Item> = Vec::with_capacity(entries.len());
    let (mut min_p, mut min_s) = (u32::MAX, u32::MAX);
    for (i, e) in entries.iter().enumerate() {
        if let Entry::Fits(c) = *e {
            let (p, s) = dims(c);
            min_p = min_p.min(p);
            min_s = min_s.min(s);
            items.push(Item {
                idx: i as u32,
                p,
                s,
            });
        }
    }
    let d = Dims {
        cap: (cap_p, cap_s),
        min: (min_p, min_s),
    };
    // Sort keys: a descending size key complemented so that ascending order is size-descending,
    // then the item position: a total order, so runs are deterministic.
    let order_by = |key: &dyn Fn(Item) -> u64| -> Vec<u32> {
        let mut keys: Vec<u128> = items
            .iter()
            .enumerate()
            .map(|(k, &it)| (u128::from(!key(it)) << 32) | k as u128)
            .collect();
        keys.sort_unstable();
        keys.into_iter().map(|k| k as u32).collect()
    };
    let (cp, cs) = (u64::from(cap_p), u64::from(cap_s));
    let mut keys: Vec<Box<dyn Fn(Item) -> u64>> = vec![Box::new(|it: Item| {
        (u64::from(it.p) << 32) | u64::from(it.s)
    })];
    if !limits.unlimited_tiles() && limits.tokens != u32::MAX {
        // Sizes normalized by the limits, cross-multiplied: p/cap_p + s/cap_s and the max.
        keys.push(Box::new(move |it: Item| {
            u64::from(it.p) * cs + u64::from(it.s) * cp
        }));
        keys.push(Box::new(move |it: Item| {
            (u64::from(it.p) * cs).max(u64::from(it.s) * cp)
        }));
    }
    let mut best: Option<Run> = None;
    for key in &keys {
        let r = run(&items, &order_by(key.as_ref()), d, entries.len());
        if best.as_ref().is_none_or(|b| r.live < b.live) {
            best = Some(r);
        }
    }
    let Run {
        bins, bin_of, gone, ..
    } = best.unwrap_or(Run {
        bins: Vec::new(),
        bin_of: Vec::new(),
        gone: Vec::new(),
        live: 0,
    });

    // Group members per bin by a counting sort over sample indices: members come out ascending.
    let mut start = vec![0u32; bins.len() + 1];
    for &b in &bin_of {
        if b != u32::MAX {
            start[b as usize + 1] += 1;
        }
    }
    for i in 0..bins.len() {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut members = vec![0u32; start[bins.len()] as usize];
    for (i, &b) in bin_of.iter().enumerate() {
        if b != u32::MAX {
            members[fill[b as usize] as usize] = i as u32;
            fill[b as usize] += 1;
        }
    }
    let mut packs = Vec::with_capacity(bins.len());
    for (b, &rem) in bins.iter().enumerate() {
        if gone[b] {
            continue;
        }
        let samples = members[start[b] as usize..start[b + 1] as usize].to_vec();
        let (used_p, used_s) = (u64::from(cap_p - rem.0), u64::from(cap_s - rem.1));
        let cost = if tiles_primary {
            (used_s, used_p)
        } else {
            (used_p, used_s)
        };
        packs.push(Pack::new(samples, cost, false));
    }
    for (i, e) in entries.iter().enumerate() {
        if let Entry::Alone(c) = *e {
            let cost = (u64::from(c.tokens), u64::from(c.tiles));
            packs.push(Pack::new(vec![i as u32], cost, true));
        }
    }
    packs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fits(v: &[(u32, u32)]) -> Vec<Entry> {
        v.iter()
            .map(|&(t, i)| Entry::Fits(Cost::new(t, i)))
            .collect()
    }

    #[test]
    fn descent_skips_a_bin_with_token_room_but_no_tile_room() {
        // Tokens are primary (Σ 32/20 > Σ 11/8). After the first two items: bin 0 has 4 token
        // room and 0 tile room, bin 1 has 6 token room and 6 tile room. Item 2 (2 tokens,
        // 1 tile) best fits bin 0 on tokens alone, but only bin 1 has a tile left.
        let entries = fits(&[(16, 8), (14, 2), (2, 1)]);
        let packs = pack(
            &entries,
            Limits {
                tokens: 20,
                tiles: 8,
            },
        );
        let members: Vec<&[u32]> = packs.iter().map(|p| p.samples.as_slice()).collect();
        assert_eq!(members, vec![&[0][..], &[1, 2][..]]);
        assert_eq!((packs[1].tokens, packs[1].tiles), (16, 3));
    }

    #[test]
    fn best_fit_takes_the_tightest_bin() {
        // 6 and 4 open two bins (room 4 and 6); 4 goes into the one with room 4.
        let entries = fits(&[(6, 0), (7, 0), (4, 0)]);
        let packs = pack(&entries, Limits::tokens_only(10));
        let members: Vec<&[u32]> = packs.iter().map(|p| p.samples.as_slice()).collect();
        assert_eq!(members, vec![&[1][..], &[0, 2][..]]);
    }

    #[test]
    fn tiles_can_be_primary() {
        // Σtiles/T = 12/4 > Σtokens/L = 4/100.
        let entries = fits(&[(1, 3), (1, 1), (1, 2), (1, 2), (0, 4)]);
        let packs = pack(
            &entries,
            Limits {
                tokens: 100,
                tiles: 4,
            },
        );
        assert_eq!(packs.len(), 3);
        assert!(packs.iter().all(|p| p.tiles == 4));
    }

    #[test]
    fn huge_limits_use_buckets_and_stay_exact() {
        let limits = Limits {
            tokens: u32::MAX - 1,
            tiles: u32::MAX,
        };
        // 2^31 - 3: B + C + D fill a pack exactly, found across bucket boundaries.
        let big = u32::MAX / 2 - 2;
        let entries = fits(&[(big, 1), (big + 1, 1), (big, 2), (3, 0), (u32::MAX - 1, 0)]);
        let packs = pack(&entries, limits);
        for p in &packs {
            let sum: u64 = p
                .samples
                .iter()
                .map(|&i| match entries[i as usize] {
                    Entry::Fits(c) => u64::from(c.tokens),
                    _ => 0,
                })
                .sum();
            assert!(sum <= u64::from(limits.tokens), "{packs:?}");
            assert_eq!(sum, u64::from(p.tokens));
        }
        assert_eq!(packs.len(), 3);
        assert!(
            packs
                .iter()
                .any(|p| p.samples == vec![1, 2, 3] && p.tokens == limits.tokens)
        );
    }

    #[test]
    fn tree_first_from_finds_leftmost_feasible_leaf() {
        let mut t = CapacityTree::new(15);
        t.insert((3, 1), 0);
        t.insert((5, 9), 1);
        t.insert((12, 4), 2);
        assert_eq!(t.first_from(0, 0), Some(3));
        assert_eq!(t.first_from(4, 0), Some(5));
        assert_eq!(t.first_from(0, 2), Some(5));
        assert_eq!(t.first_from(6, 5), None);
        assert_eq!(t.first_from(6, 4), Some(12));
        t.remove((5, 9), 1);
        assert_eq!(t.first_from(0, 2), Some(12));
    }
}
