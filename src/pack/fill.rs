//! Pack-by-pack greedy fill over the whole pool, a candidate of [`super::bfd`].
//!
//! Best-fit-decreasing places item after item into whichever bin fits it best; this builds one
//! pack at a time instead: it opens a pack and keeps adding, from all items not yet placed, the
//! one that leaves the pack's normalized room `(a, b)` = (tokens left / L, tiles left / T)
//! smallest: the smallest `max(a, b)`, then the smallest `a + b` (the online packer's rule, which
//! fills whichever dimension has most room), until none fits; then the next pack. (Ranking by
//! `a² + b²` instead would have taken one other BENCHMARKS row, by 0.08%, and done worse on two
//! that this rule takes; not worth a second candidate's time.) Where the pool fills both limits
//! about equally it often needs fewer packs than every BFD order (BENCHMARKS.md, "Packing"); on
//! other mixes more, which is why it is one candidate among several.
//!
//! Seeded (a second candidate): each pack opens with the item with the most tokens left, then
//! fills greedily. The plain greedy takes the best fits first and strands large items at the end,
//! when the small ones that could complete their packs are gone; placing the largest while
//! fillers remain (FFD's intuition) took mixed 8192 × 24 from 25858 to 25763 packs, below the
//! online packer's 25776 (BENCHMARKS.md, "Packing"); where the plain greedy already ends at the
//! bound + 1 (mixed 16384 × 48) seeding loses, so both run.
//!
//! For one tile count, the item that leaves the least room is the one with the most tokens that
//! still fit, so a step asks each tile count present for its largest fitting token count (a
//! predecessor query in a two-level bitset over token counts) and compares those few. Items are
//! handled as size groups (all items of equal (tokens, tiles) are interchangeable), so the cost is
//! O(K) predecessor queries per placed item for K tile counts (at most [`MAX_CLASSES`]).

/// Most distinct tile counts: one bit per tile count in a `u64`, the counts that still hold items.
pub(super) const MAX_CLASSES: u32 = 64;

use super::presence::Presence;

/// Most (tile count, token count) cells of the group table: 2^22, 16 MiB, e.g. 64 tile counts
/// of up to 65,535 tokens. Larger sizes get no fill (a huge table per plan).
pub(super) const MAX_SIZES: usize = 1 << 22;

/// The packs built by [`fill`]: `picks` holds the size group of each placed item in placement
/// order, and pack `k` is `picks[ends[k - 1]..ends[k]]` (`ends[-1]` = 0).
pub(super) struct Filled {
    pub picks: Vec<u32>,
    pub ends: Vec<u32>,
}

/// Fills packs of capacity `cap` = (tokens, tiles) from `groups`, one (tokens, tiles, count) per
/// size group (sizes distinct, each within `cap`). `None` when the tile counts do not fit
/// [`MAX_CLASSES`], the sizes [`MAX_SIZES`], or the product of the limits reaches 2^31, or as
/// soon as `give_up` packs are open (a candidate that cannot win).
///
/// `seeded`: each pack opens with the item with the most tokens left (equal tokens: more tiles).
///
/// Deterministic: among items that rank equal, the one with more tiles is taken.
pub(super) fn fill(
    groups: &[(u32, u32, u32)],
    cap: (u32, u32),
    give_up: usize,
    seeded: bool,
) -> Option<Filled> {
    let max_s = groups.iter().map(|g| g.1).max()?;
    let max_p = groups.iter().map(|g| g.0).max()?;
    // Ranks are normalized rooms cross-multiplied by the limits: below 2^31 each, their sum
    // fits a u32 comfortably and a u64 surely.
    if max_s >= MAX_CLASSES || u64::from(cap.0) * u64::from(cap.1) >= 1 << 31 {
        return None;
    }
    let classes = max_s as usize + 1;
    let stride = max_p as usize + 1;
    // The (tiles, tokens) table: at most MAX_SIZES cells (16 MiB), or no fill.
    if classes * stride > MAX_SIZES {
        return None;
    }
    let mut presence = Presence::new(classes, max_p);
    // Group of each (tiles, tokens) size, and items left per group.
    let mut group_at = vec![u32::MAX; classes * stride];
    let mut left: Vec<u32> = Vec::with_capacity(groups.len());
    let mut class_mask = 0u64;
    let mut remaining = 0u64;
    for (g, &(p, s, n)) in groups.iter().enumerate() {
        left.push(n);
        if n == 0 {
            continue;
        }
        group_at[s as usize * stride + p as usize] = g as u32;
        presence.set(s as usize, p);
        class_mask |= 1 << s;
        remaining += u64::from(n);
    }
    // The most tokens present per tile count: what an empty pack's first step looks up.
    let mut top = [u32::MAX; MAX_CLASSES as usize];
    for (s, t) in top.iter_mut().enumerate().take(classes) {
        *t = presence.pred(s, u32::MAX).unwrap_or(u32::MAX);
    }
    let (cp, cs) = (u64::from(cap.0), u64::from(cap.1));
    // Places one item of size (p, s) (present): its group to `picks`, one fewer left, and the
    // group's size, then its tile count, gone from the presence once empty.
    let mut take = |picks: &mut Vec<u32>,
                    presence: &mut Presence,
                    class_mask: &mut u64,
                    top: &mut [u32; MAX_CLASSES as usize],
                    p: u32,
                    s: u32| {
        let g = group_at[s as usize * stride + p as usize];
        picks.push(g);
        let n = &mut left[g as usize];
        *n -= 1;
        if *n == 0 {
            presence.clear(s as usize, p);
            top[s as usize] = match presence.pred(s as usize, u32::MAX) {
                Some(q) => q,
                None => {
                    *class_mask &= !(1 << s);
                    u32::MAX
                }
            };
        }
    };
    let mut out = Filled {
        picks: Vec::with_capacity(remaining as usize),
        ends: Vec::new(),
    };
    while remaining > 0 {
        if out.ends.len() + 1 >= give_up {
            return None;
        }
        let mut room = cap;
        let mut known = top;
        // The seed: the most tokens left per tile count is `top`; every item fits an empty pack.
        let mut seed = seeded.then(|| {
            let mut mask = class_mask;
            let mut best = (0, 0);
            while mask != 0 {
                let s = 63 - mask.leading_zeros();
                mask &= !(1u64 << s);
                best = best.max((top[s as usize], s));
            }
            best
        });
        loop {
            let (p, s) = match seed.take() {
                Some(first) => first,
                None => {
                    // Tile counts that hold items and fit the pack's tile room.
                    let fits_s = if room.1 >= 63 {
                        u64::MAX
                    } else {
                        (1u64 << (room.1 + 1)) - 1
                    };
                    let mut mask = class_mask & fits_s;
                    let mut best: Option<((u64, u64), u32, u32)> = None;
                    // Most tiles first: the tile room an item leaves, `b`, bounds its rank
                    // from below and only grows as the tile count falls, so once `b` alone
                    // ranks worse than the best so far, no item with fewer tiles can win.
                    while mask != 0 {
                        let s = 63 - mask.leading_zeros();
                        mask &= !(1u64 << s);
                        // Normalized room left, cross-multiplied: a = (tokens left)·T,
                        // b = (tiles left)·L.
                        let b = u64::from(room.1 - s) * cp;
                        if best.is_some_and(|(r, ..)| b > r.0) {
                            break;
                        }
                        // The largest fitting token count of the last step is still the
                        // largest while it fits and is present: rooms only shrink within a
                        // pack and items only leave.
                        let cached = known[s as usize];
                        let p = if cached <= room.0 && presence.has(s as usize, cached) {
                            cached
                        } else {
                            match presence.pred(s as usize, room.0) {
                                Some(p) => p,
                                None => continue,
                            }
                        };
                        known[s as usize] = p;
                        let a = u64::from(room.0 - p) * cs;
                        let rank = (a.max(b), a + b);
                        if best.is_none_or(|(r, ..)| rank < r) {
                            best = Some((rank, p, s));
                        }
                    }
                    let Some((_, p, s)) = best else { break };
                    (p, s)
                }
            };
            take(
                &mut out.picks,
                &mut presence,
                &mut class_mask,
                &mut top,
                p,
                s,
            );
            remaining -= 1;
            room = (room.0 - p, room.1 - s);
        }
        out.ends.push(out.picks.len() as u32);
    }
    Some(out)
}

/// Test helper: the size groups (tokens, tiles, count) of `items`, sorted by size, as the
/// pack-by-pack candidates take them.
#[cfg(test)]
pub(super) fn groups_of(items: &[(u32, u32)]) -> Vec<(u32, u32, u32)> {
    let mut sizes: Vec<(u32, u32)> = items.to_vec();
    sizes.sort_unstable();
    let mut groups: Vec<(u32, u32, u32)> = Vec::new();
    for (p, s) in sizes {
        match groups.last_mut() {
            Some(g) if (g.0, g.1) == (p, s) => g.2 += 1,
            _ => groups.push((p, s, 1)),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::rng::SplitMix64;

    /// The same greedy, by brute force over every item left.
    fn naive(items: &[(u32, u32)], cap: (u32, u32), seeded: bool) -> Vec<Vec<(u32, u32)>> {
        let mut left: Vec<(u32, u32)> = items.to_vec();
        let mut packs = Vec::new();
        let (cp, cs) = (u64::from(cap.0), u64::from(cap.1));
        while !left.is_empty() {
            let mut room = cap;
            let mut pack = Vec::new();
            if seeded {
                // The most tokens, then the most tiles; every item fits an empty pack.
                let k = (0..left.len())
                    .max_by_key(|&k| left[k])
                    .expect("items left");
                let (p, s) = left.swap_remove(k);
                room = (room.0 - p, room.1 - s);
                pack.push((p, s));
            }
            loop {
                let best = left
                    .iter()
                    .enumerate()
                    .filter(|&(_, &(p, s))| p <= room.0 && s <= room.1)
                    .min_by_key(|&(_, &(p, s))| {
                        let a = u64::from(room.0 - p) * cs;
                        let b = u64::from(room.1 - s) * cp;
                        (a.max(b), a + b, std::cmp::Reverse(s))
                    })
                    .map(|(k, _)| k);
                let Some(k) = best else { break };
                let (p, s) = left.swap_remove(k);
                room = (room.0 - p, room.1 - s);
                pack.push((p, s));
            }
            packs.push(pack);
        }
        packs
    }

    #[test]
    fn equals_the_brute_force_greedy() {
        let mut r = SplitMix64::new(5);
        for case in 0..300 {
            let cap = (1 + r.below(3000) as u32, 1 + r.below(40) as u32);
            let n = r.below(200);
            let items: Vec<(u32, u32)> = (0..n)
                .map(|_| {
                    (
                        r.below(cap.0 as usize + 1) as u32,
                        r.below(cap.1 as usize + 1) as u32,
                    )
                })
                .collect();
            let groups = groups_of(&items);
            for seeded in [false, true] {
                let got = fill(&groups, cap, usize::MAX, seeded);
                let want = naive(&items, cap, seeded);
                let Some(got) = got else {
                    assert!(items.is_empty(), "case {case}: no fill for {n} items");
                    continue;
                };
                let mut start = 0;
                let got: Vec<Vec<(u32, u32)>> = got
                    .ends
                    .iter()
                    .map(|&e| {
                        let pack = got.picks[start..e as usize]
                            .iter()
                            .map(|&g| (groups[g as usize].0, groups[g as usize].1))
                            .collect();
                        start = e as usize;
                        pack
                    })
                    .collect();
                assert_eq!(got, want, "case {case}, seeded {seeded}");
            }
        }
    }

    #[test]
    fn gives_up_at_the_pack_count_and_refuses_many_tile_counts() {
        let groups = [(10, 1, 100)];
        // 100 items of 10 tokens into packs of 50 tokens: 20 packs.
        for seeded in [false, true] {
            let all = fill(&groups, (50, 100), usize::MAX, seeded).unwrap();
            assert_eq!(all.ends.len(), 20);
            assert!(fill(&groups, (50, 100), 20, seeded).is_none());
            assert!(fill(&groups, (50, 100), 21, seeded).is_some());
            assert!(fill(&[(1, 64, 1)], (10, 100), usize::MAX, seeded).is_none());
            assert!(fill(&groups, (1 << 26, 32), usize::MAX, seeded).is_none());
            // 2 tile counts of up to 2^22 tokens: a table over MAX_SIZES.
            assert!(fill(&[(1 << 22, 1, 1)], (1 << 22, 1), usize::MAX, seeded).is_none());
        }
    }
}
