//! Pack-by-pack tile patterns, a candidate of [`super::bfd`] for pools whose tiles bind.
//!
//! Where Σtiles/T is well above Σtokens/L, nearly every pack ends full of tiles, and the pack
//! count is decided by how well the items' tile counts add up to T: a one-dimensional bin
//! packing over a handful of distinct sizes (InternVL's 1, 3, 4, …, 13). Greedy orders leave
//! packs a tile or two short once the small fillers are gone (about 2,000 of 22,685 packs on
//! BENCHMARKS' single 16384 × 32). This builds one pack at a time from a *pattern*, a multiset
//! of tile counts: the largest tile total ≤ T that the items left can make, and among the
//! patterns that make it, the one with the most of the tile count that holds the most tiles
//! left, then of the next, and so on. Taking from where most tiles are keeps the counts left in
//! proportion, so the last packs can still be completed; taking the largest tile counts first
//! (the "minimum bin slack" rule) used up the fillers early and left ~900 packs 4 tiles short
//! on mixed 16384 × 32.
//!
//! Tokens shape the pattern too: a pattern counts only if the smallest items it could take fit
//! the room (for k slots of a tile count, the k smallest token counts left of that count). The
//! search is a bounded knapsack over tile totals 0..=T keeping the fewest tokens per total.
//! Each slot, largest tile count first, then takes the item with the most tokens that leaves
//! the later slots those smallest items; a slot with no such item stays empty. (Reserving
//! k × the smallest count instead, which undercounts, left slots empty: 15,108 packs instead of
//! 15,092 on single 16384 × 48.)
//!
//! Items with more than half the token limit come first, largest first, a pack each (no two
//! share a pack), each pack completed by a pattern within its room: left to the end, the
//! largest found no room in packs already full of tiles. Items without tiles, and whatever the
//! patterns do not place, are left for best fit by tokens ([`super::bfd`]).
//!
//! A pattern is reused for the next pack while it stays feasible, and searched again every
//! [`RESEARCH_EVERY`] packs (the order of the tile counts moves as they are used) or when it
//! is not: a search is ~T²·log T steps, a pack a few presence queries.

use super::fill::{Filled, MAX_CLASSES, MAX_SIZES};
use super::presence::Presence;

/// Largest tile limit: the search's table is (tile counts) × (T + 1) entries.
const MAX_TILE_LIMIT: u32 = 255;

/// Packs between two searches while the pattern stays feasible. On the BENCHMARKS rows 1 to 64
/// gave pack counts within ±0.03% of each other (measured with an earlier token reserve,
/// k × the smallest, through a temporary switch not committed); 16 keeps the searches' cost
/// small.
const RESEARCH_EVERY: usize = 16;

/// No total: more tokens than any pack holds.
const UNREACHABLE: u64 = u64::MAX;

/// The pattern search (module docs): `table[i][r]` is the fewest tokens with which the first
/// `i` tile counts of the search's order make the total r (each count's k slots at its k
/// smallest token counts left), [`UNREACHABLE`] when they cannot.
#[derive(Debug, Clone)]
pub(super) struct Search {
    t: usize,
    table: Vec<u64>,
    /// Per tile count of the order, the prefix sums of its smallest token counts (k = 0..),
    /// flat, and where each count's sums start.
    sums: Vec<u64>,
    starts: Vec<usize>,
    smallest: Vec<u64>,
    /// The tile counts in the decomposition's order (a buffer kept across searches).
    order: Vec<usize>,
}

/// What the search reads: per tile count (1 ≤ c < [`TileCounts::classes`]) how many samples
/// are left and their smallest token counts.
pub(super) trait TileCounts {
    fn classes(&self) -> usize;
    fn count(&self, c: usize) -> u64;
    /// Appends the `k` smallest token counts of tile count `c`, ascending (fewer when fewer
    /// are left).
    fn smallest_into(&self, c: usize, k: usize, out: &mut Vec<u64>);
}

impl TileCounts for Pool {
    fn classes(&self) -> usize {
        self.count.len()
    }
    fn count(&self, c: usize) -> u64 {
        self.count[c]
    }
    fn smallest_into(&self, c: usize, k: usize, out: &mut Vec<u64>) {
        Pool::smallest_into(self, c, k, out);
    }
}

impl Search {
    pub(super) fn new(classes: usize, t: u32) -> Self {
        let t = t as usize;
        Self {
            t,
            table: vec![UNREACHABLE; (classes + 1) * (t + 1)],
            sums: Vec::new(),
            starts: Vec::new(),
            smallest: Vec::with_capacity(t),
            order: Vec::new(),
        }
    }

    /// The pattern for the items left in `pool` within (`tokens`, `tiles`), as tile counts
    /// largest first, into `slots`; empty when no item with tiles fits.
    pub(super) fn choose(
        &mut self,
        pool: &impl TileCounts,
        tokens: u64,
        tiles: usize,
        slots: &mut Vec<u32>,
    ) {
        let w = tiles.min(self.t) + 1;
        // The decomposition decides the tile counts in this order, each taking as many as
        // still let the rest complete the total: most tiles left first (ties: the larger tile
        // count). Walked backwards below, so the table's rows go in reverse.
        let mut order = std::mem::take(&mut self.order);
        order.clear();
        order.extend((1..pool.classes().min(w)).filter(|&c| pool.count(c) > 0));
        order.sort_unstable_by_key(|&c| (pool.count(c) * c as u64, c));
        self.sums.clear();
        self.starts.clear();
        for &c in &order {
            self.starts.push(self.sums.len());
            self.smallest.clear();
            pool.smallest_into(c, (w - 1) / c, &mut self.smallest);
            let mut acc = 0u64;
            self.sums.push(0);
            for &p in &self.smallest {
                acc += p;
                self.sums.push(acc);
            }
        }
        self.starts.push(self.sums.len());
        let rows = order.len() + 1;
        let table = &mut self.table[..rows * w];
        table[..w].fill(UNREACHABLE);
        table[0] = 0;
        for (i, &c) in order.iter().enumerate() {
            let (prev, row) = table[i * w..(i + 2) * w].split_at_mut(w);
            row.copy_from_slice(prev);
            let sums = &self.sums[self.starts[i]..self.starts[i + 1]];
            // row[r] = min over k of prev[r − k·c] + sums[k]; by k, each a pass over a shifted
            // slice with no dependency between totals (a min chain per total was the cost of
            // a search).
            for (k, &cost) in sums.iter().enumerate().skip(1) {
                let shift = k * c;
                if shift >= w {
                    break;
                }
                for (x, &p) in row[shift..].iter_mut().zip(&prev[..w - shift]) {
                    *x = (*x).min(p.saturating_add(cost));
                }
            }
        }
        slots.clear();
        let last = &table[(rows - 1) * w..rows * w];
        // No total reachable: no slots.
        let target = (1..w).rev().find(|&r| last[r] <= tokens).unwrap_or(0);
        let (mut rest, mut budget) = (target, tokens);
        for (i, &c) in order.iter().enumerate().rev() {
            if rest == 0 {
                break;
            }
            let prev = &table[i * w..(i + 1) * w];
            let sums = &self.sums[self.starts[i]..self.starts[i + 1]];
            let most = (sums.len() - 1).min(rest / c);
            let k = (0..=most)
                .rev()
                .find(|&k| prev[rest - k * c].saturating_add(sums[k]) <= budget)
                .unwrap_or(0);
            slots.extend(std::iter::repeat_n(c as u32, k));
            rest -= k * c;
            budget -= sums[k];
        }
        slots.sort_unstable_by(|a, b| b.cmp(a));
        self.order = order;
    }
}

/// What a pattern keeps per slot, into `out`: each run of k equal tile counts in `slots`
/// (largest first) its k smallest token counts in `src`, the largest of them for its first slot.
/// `false` when a run has fewer than k samples.
pub(super) fn keep_for_slots(src: &impl TileCounts, slots: &[u32], out: &mut Vec<u64>) -> bool {
    out.clear();
    for run in slots.chunk_by(|a, b| a == b) {
        let from = out.len();
        src.smallest_into(run[0] as usize, run.len(), out);
        if out.len() - from < run.len() {
            return false;
        }
        out[from..].reverse();
    }
    true
}

/// The items left: per size group, per tile count, and which token counts are present.
struct Pool {
    presence: Presence,
    group_at: Vec<u32>,
    stride: usize,
    left: Vec<u32>,
    /// Items left per tile count.
    count: Vec<u64>,
    /// Per slot of the pack being filled, the tokens kept for it ([`Pool::plan`]).
    reserve: Vec<u64>,
}

impl Pool {
    /// Takes one item of tile count `s` and token count `p` (present); returns its group.
    fn take(&mut self, s: usize, p: u32) -> u32 {
        let g = self.group_at[s * self.stride + p as usize];
        self.count[s] -= 1;
        let n = &mut self.left[g as usize];
        *n -= 1;
        if *n == 0 {
            self.presence.clear(s, p);
        }
        g
    }

    /// Appends to `out` the `k` smallest token counts of tile count `s`, item by item,
    /// ascending (fewer when fewer are left).
    fn smallest_into(&self, s: usize, k: usize, out: &mut Vec<u64>) {
        let mut need = k;
        let mut at = self.presence.min(s);
        while let Some(p) = at {
            if need == 0 {
                break;
            }
            let n = self.left[self.group_at[s * self.stride + p as usize] as usize] as usize;
            out.extend(std::iter::repeat_n(u64::from(p), n.min(need)));
            need -= n.min(need);
            at = p.checked_add(1).and_then(|q| self.presence.succ(s, q));
        }
    }

    /// Plans the pack of `slots` (tile counts, largest first, as [`Search::choose`] gives
    /// them): each run of k equal tile counts keeps its k smallest token counts, the largest of
    /// them for its first slot. Whether every slot has an item and the kept tokens fit
    /// `tokens`.
    fn plan(&mut self, slots: &[u32], tokens: u64) -> bool {
        let mut reserve = std::mem::take(&mut self.reserve);
        let fits =
            keep_for_slots(self, slots, &mut reserve) && reserve.iter().sum::<u64>() <= tokens;
        self.reserve = reserve;
        fits
    }

    /// Fills `slots` as [`Pool::plan`] planned them, within `room` tokens: each takes the item
    /// with the most tokens that leaves the later slots what was kept for them; picks go to
    /// `picks`. Returns how many slots took an item.
    fn fill_slots(&mut self, slots: &[u32], mut room: u64, picks: &mut Vec<u32>) -> usize {
        let mut need_after: u64 = self.reserve.iter().sum();
        let mut taken = 0;
        for (j, &c) in slots.iter().enumerate() {
            let s = c as usize;
            need_after -= self.reserve[j];
            let Some(budget) = room.checked_sub(need_after) else {
                continue;
            };
            let Some(p) = self
                .presence
                .pred(s, budget.min(u64::from(u32::MAX)) as u32)
            else {
                continue;
            };
            picks.push(self.take(s, p));
            room -= u64::from(p);
            taken += 1;
        }
        taken
    }
}

/// Builds packs of capacity `cap` = (tokens, tiles) by tile patterns from `groups`, one
/// (tokens, tiles, count) per size group (sizes distinct, each within `cap`). `None` when the
/// tile counts do not fit [`MAX_CLASSES`], the tile limit [`MAX_TILE_LIMIT`], the sizes
/// [`MAX_SIZES`], or as soon as `give_up` packs are open (a candidate that cannot win).
///
/// Items with more than half the token limit come first, largest first, one pack each (no two
/// share a pack; this is where best fit puts them too), each pack then completed by a pattern
/// within its room. Left to the end, the largest would find no room in packs already full of
/// tiles, and open packs with few tiles in them.
///
/// Deterministic: one group per size, so a slot's choice is one token count.
pub(super) fn pattern_fill(
    groups: &[(u32, u32, u32)],
    cap: (u32, u32),
    give_up: usize,
) -> Option<Filled> {
    let max_s = groups.iter().map(|g| g.1).max()?;
    let max_p = groups.iter().map(|g| g.0).max()?;
    if max_s >= MAX_CLASSES || cap.1 > MAX_TILE_LIMIT {
        return None;
    }
    let classes = max_s as usize + 1;
    let stride = max_p as usize + 1;
    if classes * stride > MAX_SIZES {
        return None;
    }
    let mut pool = Pool {
        presence: Presence::new(classes, max_p),
        group_at: vec![u32::MAX; classes * stride],
        stride,
        left: Vec::with_capacity(groups.len()),
        count: vec![0; classes],
        reserve: Vec::with_capacity(cap.1 as usize),
    };
    for (g, &(p, s, n)) in groups.iter().enumerate() {
        pool.left.push(n);
        if n == 0 {
            continue;
        }
        pool.group_at[s as usize * stride + p as usize] = g as u32;
        pool.presence.set(s as usize, p);
        pool.count[s as usize] += u64::from(n);
    }
    let mut with_tiles: u64 = pool.count[1..].iter().sum();
    let mut out = Filled {
        picks: Vec::with_capacity(with_tiles as usize),
        ends: Vec::new(),
    };
    let tokens = u64::from(cap.0);
    let mut search = Search::new(classes, cap.1);
    let mut slots: Vec<u32> = Vec::with_capacity(cap.1 as usize);
    // The large items, largest first (sizes are distinct, so the order is fixed).
    let mut large: Vec<(u32, u32, u32)> = groups
        .iter()
        .filter(|g| u64::from(g.0) * 2 > tokens && g.2 > 0)
        .copied()
        .collect();
    large.sort_unstable_by_key(|g| std::cmp::Reverse((g.0, g.1)));
    for &(p, s, n) in &large {
        for _ in 0..n {
            if out.ends.len() + 1 >= give_up {
                return None;
            }
            let before = out.picks.len();
            out.picks.push(pool.take(s as usize, p));
            let room = (tokens - u64::from(p), (cap.1 - s) as usize);
            search.choose(&pool, room.0, room.1, &mut slots);
            if pool.plan(&slots, room.0) {
                pool.fill_slots(&slots, room.0, &mut out.picks);
            }
            with_tiles -= out.picks[before..]
                .iter()
                .filter(|&&g| groups[g as usize].1 > 0)
                .count() as u64;
            out.ends.push(out.picks.len() as u32);
        }
    }
    slots.clear();
    while with_tiles > 0 {
        if out.ends.len() + 1 >= give_up {
            return None;
        }
        let due = out.ends.len().is_multiple_of(RESEARCH_EVERY);
        if due || slots.is_empty() || !pool.plan(&slots, tokens) {
            search.choose(&pool, tokens, cap.1 as usize, &mut slots);
            // The search's pattern fits by the same smallest token counts the plan keeps, so
            // the plan holds and the first slot takes an item; empty: no item with tiles fits.
            if slots.is_empty() || !pool.plan(&slots, tokens) {
                break;
            }
        }
        let taken = pool.fill_slots(&slots, tokens, &mut out.picks);
        if taken == 0 {
            break;
        }
        with_tiles -= taken as u64;
        out.ends.push(out.picks.len() as u32);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::super::fill::groups_of;
    use super::*;
    use crate::pack::rng::SplitMix64;

    /// Every pack within both limits and non-empty, no group used more than it holds, and placed
    /// exactly the items with tiles and the tile-less ones over half the token limit.
    fn check(groups: &[(u32, u32, u32)], cap: (u32, u32), f: &Filled) {
        let mut used = vec![0u32; groups.len()];
        let mut start = 0;
        for &end in &f.ends {
            assert!(end as usize > start, "an empty pack");
            let (mut tok, mut til) = (0u64, 0u64);
            for &g in &f.picks[start..end as usize] {
                used[g as usize] += 1;
                tok += u64::from(groups[g as usize].0);
                til += u64::from(groups[g as usize].1);
            }
            assert!(
                tok <= u64::from(cap.0) && til <= u64::from(cap.1),
                "{tok} {til} {cap:?}"
            );
            start = end as usize;
        }
        assert_eq!(start, f.picks.len());
        for (g, &(p, s, n)) in groups.iter().enumerate() {
            let want = if s > 0 || 2 * u64::from(p) > u64::from(cap.0) {
                n
            } else {
                0
            };
            assert_eq!(used[g], want, "group {g} {:?}", groups[g]);
        }
    }

    #[test]
    fn packs_fit_and_place_every_item_with_tiles() {
        let mut r = SplitMix64::new(31);
        for _ in 0..300 {
            let cap = (1 + r.below(3000) as u32, 1 + r.below(60) as u32);
            let n = r.below(300);
            let items: Vec<(u32, u32)> = (0..n)
                .map(|_| {
                    let s = r.below(cap.1 as usize + 1) as u32 >> r.below(3);
                    (r.below(cap.0 as usize + 1) as u32 >> r.below(4), s)
                })
                .collect();
            let groups = groups_of(&items);
            if let Some(f) = pattern_fill(&groups, cap, usize::MAX) {
                check(&groups, cap, &f);
            } else {
                assert!(items.is_empty());
            }
        }
    }

    /// A pool made of packs whose tile counts sum exactly to T, tokens loose: the patterns find
    /// such packs again (the lower bound, Σtiles/T, or one more).
    #[test]
    fn a_pool_of_exact_packs_packs_at_the_bound() {
        let mut r = SplitMix64::new(8);
        let palette = [1u32, 3, 4, 5, 7, 9, 10, 13];
        let (t, packs) = (32u32, 500);
        let mut items = Vec::new();
        for _ in 0..packs {
            let mut room = t;
            while room > 0 {
                let fits: Vec<u32> = palette.iter().copied().filter(|&c| c <= room).collect();
                let c = fits[r.below(fits.len())];
                items.push((256 * c + r.below(600) as u32, c));
                room -= c;
            }
        }
        let cap = (1 << 15, t);
        let groups = groups_of(&items);
        let f = pattern_fill(&groups, cap, usize::MAX).expect("applies");
        check(&groups, cap, &f);
        assert!(f.ends.len() <= packs + 1, "{} packs", f.ends.len());
    }

    /// InternVL's tile counts drawn independently, with the frequencies of the BENCHMARKS mixes
    /// (1 tile 10%, 7 tiles 25%, 13 tiles 17%, ...), tokens loose: the patterns reach the bound,
    /// Σtiles/T, or one more. (Taking the largest tile counts first instead ends 2 over it here.)
    #[test]
    fn independent_internvl_tile_counts_pack_at_the_bound() {
        let mut r = SplitMix64::new(9);
        // (tile count, weight in percent)
        let freq = [
            (1u32, 10),
            (3, 10),
            (4, 5),
            (5, 10),
            (6, 2),
            (7, 25),
            (9, 10),
            (10, 8),
            (11, 3),
            (13, 17),
        ];
        let items: Vec<(u32, u32)> = (0..20_000)
            .map(|_| {
                let mut x = r.below(100);
                let &(c, _) = freq
                    .iter()
                    .find(|&&(_, w)| {
                        let hit = x < w;
                        x = x.saturating_sub(w);
                        hit
                    })
                    .expect("weights sum to 100");
                (256 * c + 2 + r.below(400) as u32, c)
            })
            .collect();
        let cap = (1 << 15, 32);
        let bound = items
            .iter()
            .map(|it| u64::from(it.1))
            .sum::<u64>()
            .div_ceil(32) as usize;
        let groups = groups_of(&items);
        let f = pattern_fill(&groups, cap, usize::MAX).expect("applies");
        check(&groups, cap, &f);
        assert!(
            f.ends.len() <= bound + 1,
            "{} packs, bound {bound}",
            f.ends.len()
        );
    }

    #[test]
    fn refuses_what_it_does_not_cover_and_gives_up() {
        let groups = [(10, 2, 100)];
        // 100 items of 2 tiles into packs of 8 tiles: 25 packs.
        let all = pattern_fill(&groups, (1000, 8), usize::MAX).unwrap();
        assert_eq!(all.ends.len(), 25);
        assert!(pattern_fill(&groups, (1000, 8), 25).is_none());
        assert!(pattern_fill(&groups, (1000, 8), 26).is_some());
        assert!(pattern_fill(&[(1, 64, 1)], (10, 100), usize::MAX).is_none());
        assert!(pattern_fill(&groups, (1000, 256), usize::MAX).is_none());
        assert!(pattern_fill(&[(1 << 22, 1, 1)], (1 << 22, 1), usize::MAX).is_none());
        assert!(pattern_fill(&[], (10, 10), usize::MAX).is_none());
    }
}
