//! Test-only: a straightforward O(n · bins) restatement of the Bfd packer (candidates, best fit,
//! choice of the winner, post-pass), and tests that `bfd::pack` gives exactly its plan. It pins
//! the packs and their order, so speed work on `bfd` cannot change a plan unnoticed.
//!
//! The tree's tie rule is stated here as a stamp: among bins with the same room (the same cell),
//! the one put back into the tree last is taken (the head of the cell's list). This holds where
//! cells are single room values: limits below 2^16 with few enough (primary, secondary) pairs, or
//! no secondary check at all; the generators below stay there.

use super::{Cost, Entry, Limits, PackList, bfd, rng, rng::SplitMix64};

#[derive(Clone, Copy)]
struct Item {
    idx: u32,
    p: u32,
    s: u32,
}

/// Open bins: room, whether the tree holds it, and when it was last put in.
struct Bins {
    room: Vec<(u32, u32)>,
    in_tree: Vec<bool>,
    stamp: Vec<u64>,
    clock: u64,
    cap: (u32, u32),
    min: (u32, u32),
    ignore_s: bool,
}

impl Bins {
    fn usable(&self, r: (u32, u32)) -> bool {
        r.0 >= self.min.0 && r.1 >= self.min.1
    }

    /// Puts bin `b` back with room `r` (if any item could still fit it).
    fn put(&mut self, b: usize, r: (u32, u32)) {
        self.room[b] = r;
        self.in_tree[b] = self.usable(r);
        self.clock += 1;
        self.stamp[b] = self.clock;
    }

    /// Least primary room, then least secondary room (unless it is never checked), then the
    /// latest put in.
    fn best_fit(&self, it: Item) -> Option<usize> {
        (0..self.room.len())
            .filter(|&b| self.in_tree[b] && self.room[b].0 >= it.p && self.room[b].1 >= it.s)
            .min_by_key(|&b| {
                let s = if self.ignore_s { 0 } else { self.room[b].1 };
                (self.room[b].0, s, std::cmp::Reverse(self.stamp[b]))
            })
    }
}

fn run(sorted: &[Item], b: &mut Bins) -> Vec<usize> {
    let mut bin_at = Vec::new();
    for &it in sorted {
        let k = match b.best_fit(it) {
            Some(k) => k,
            None => {
                b.room.push(b.cap);
                b.in_tree.push(false);
                b.stamp.push(0);
                b.room.len() - 1
            }
        };
        let r = b.room[k];
        b.put(k, (r.0 - it.p, r.1 - it.s));
        bin_at.push(k);
    }
    bin_at
}

/// The post-pass: lightest bins first, emptied when all their items fit elsewhere.
fn post_pass(sorted: &[Item], b: &mut Bins, bin_at: &mut [usize]) -> Vec<bool> {
    let nb = b.room.len();
    let mut gone = vec![false; nb];
    if nb < 2 {
        return gone;
    }
    let members: Vec<Vec<usize>> = (0..nb)
        .map(|k| (0..sorted.len()).filter(|&i| bin_at[i] == k).collect())
        .collect();
    let (cp, cs) = (u128::from(b.cap.0), u128::from(b.cap.1));
    let mut order: Vec<(u128, usize)> = (0..nb)
        .map(|k| {
            let r = b.room[k];
            let w = u128::from(b.cap.0 - r.0) * cs + u128::from(b.cap.1 - r.1) * cp;
            (w, k)
        })
        .collect();
    order.sort_unstable();
    let mut touched = vec![false; nb];
    let mut failures = 0;
    for &(_, k) in &order {
        if failures >= 256 {
            break;
        }
        if touched[k] {
            continue;
        }
        let own = b.room[k];
        b.in_tree[k] = false;
        let mut moves = Vec::new();
        let mut ok = true;
        for &i in &members[k] {
            let Some(t) = b.best_fit(sorted[i]) else {
                ok = false;
                break;
            };
            let old = b.room[t];
            b.put(t, (old.0 - sorted[i].p, old.1 - sorted[i].s));
            moves.push((i, t, old));
        }
        if ok {
            for &(i, t, _) in &moves {
                bin_at[i] = t;
                touched[t] = true;
            }
            gone[k] = true;
            failures = 0;
        } else {
            for &(_, t, old) in moves.iter().rev() {
                b.put(t, old);
            }
            if b.usable(own) {
                b.put(k, own);
            }
            failures += 1;
        }
    }
    gone
}

/// The pack-by-pack fill (`fill::fill`): open a pack, add the item that leaves the least
/// normalized room (smallest max, then smallest sum; equal ranks: more tiles, then the lower
/// sample index) until none fits. `seeded`: each pack first takes the item with the most tokens
/// (then the most tiles, then the lower sample index). Items in placement order and the pack of
/// each.
fn fill_run(
    items: &[Item],
    cap: (u32, u32),
    seeded: bool,
) -> (Vec<Item>, Vec<usize>, Vec<(u32, u32)>) {
    let mut left: Vec<Item> = items.to_vec();
    let (mut placed, mut bin_at, mut rooms) = (Vec::new(), Vec::new(), Vec::new());
    let (cp, cs) = (u64::from(cap.0), u64::from(cap.1));
    while !left.is_empty() {
        let mut room = cap;
        if seeded {
            let k = (0..left.len())
                .min_by_key(|&k| (std::cmp::Reverse((left[k].p, left[k].s)), left[k].idx))
                .expect("items left");
            let it = left.remove(k);
            room = (room.0 - it.p, room.1 - it.s);
            placed.push(it);
            bin_at.push(rooms.len());
        }
        loop {
            let pick = (0..left.len())
                .filter(|&k| left[k].p <= room.0 && left[k].s <= room.1)
                .min_by_key(|&k| {
                    let a = u64::from(room.0 - left[k].p) * cs;
                    let b = u64::from(room.1 - left[k].s) * cp;
                    (a.max(b), a + b, std::cmp::Reverse(left[k].s), left[k].idx)
                });
            let Some(k) = pick else { break };
            let it = left.remove(k);
            room = (room.0 - it.p, room.1 - it.s);
            placed.push(it);
            bin_at.push(rooms.len());
        }
        rooms.push(room);
    }
    (placed, bin_at, rooms)
}

/// The `k` smallest token counts of the items of tile count `c` in `left`, ascending (fewer
/// when fewer are left).
fn smallest(left: &[Item], c: u32, k: usize) -> Vec<u64> {
    let mut v: Vec<u64> = left
        .iter()
        .filter(|it| it.s == c)
        .map(|it| u64::from(it.p))
        .collect();
    v.sort_unstable();
    v.truncate(k);
    v
}

/// The pattern search (`pattern::Search::choose`) by enumeration: every multiset of tile counts
/// whose total fits `tiles` and whose slots, each tile count's k slots at its k smallest token
/// counts left, fit `tokens`; the largest total; among those, the most of the tile count holding
/// the most tiles left (ties: the larger count), then the next. Tile counts largest first.
fn pattern_choose(left: &[Item], tokens: u64, tiles: u64) -> Vec<u32> {
    let classes = left.iter().map(|it| it.s).max().unwrap_or(0) as usize + 1;
    let mut count = vec![0u64; classes];
    left.iter().for_each(|it| count[it.s as usize] += 1);
    let mut order: Vec<usize> = (1..classes).filter(|&c| count[c] > 0).collect();
    order.sort_by_key(|&c| std::cmp::Reverse((count[c] * c as u64, c)));
    // Per tile count of the order, the cost of k slots: its k smallest token counts.
    let costs: Vec<Vec<u64>> = order
        .iter()
        .map(|&c| {
            let mut acc = vec![0u64];
            for p in smallest(left, c as u32, usize::MAX) {
                acc.push(acc[acc.len() - 1] + p);
            }
            acc
        })
        .collect();
    // Every feasible multiset as counts in `order`; the best by (total, counts in order).
    fn walk(
        i: usize,
        (order, costs): (&[usize], &[Vec<u64>]),
        room: (u64, u64),
        ks: &mut Vec<u64>,
        best: &mut Option<(u64, Vec<u64>)>,
        total: u64,
    ) {
        if i == order.len() {
            if total > 0 && best.as_ref().is_none_or(|b| (total, &*ks) > (b.0, &b.1)) {
                *best = Some((total, ks.clone()));
            }
            return;
        }
        let c = order[i] as u64;
        for (k, &cost) in costs[i].iter().enumerate() {
            let k = k as u64;
            if k * c > room.1 || cost > room.0 {
                break;
            }
            ks.push(k);
            let left = (room.0 - cost, room.1 - k * c);
            walk(i + 1, (order, costs), left, ks, best, total + k * c);
            ks.pop();
        }
    }
    let mut best = None;
    walk(
        0,
        (&order, &costs),
        (tokens, tiles),
        &mut Vec::new(),
        &mut best,
        0,
    );
    let mut slots = Vec::new();
    if let Some((_, ks)) = best {
        for (&c, &k) in order.iter().zip(&ks) {
            slots.extend(std::iter::repeat_n(c as u32, k as usize));
        }
    }
    slots.sort_unstable_by(|a, b| b.cmp(a));
    slots
}

/// What `pattern::Pool::plan` keeps per slot: each run of k equal tile counts its k smallest
/// token counts, the largest for its first slot; `None` when a run lacks items or the kept
/// tokens pass `tokens`.
fn pattern_plan(left: &[Item], slots: &[u32], tokens: u64) -> Option<Vec<u64>> {
    let mut reserve = Vec::new();
    let mut j = 0;
    while j < slots.len() {
        let k = slots[j..].iter().take_while(|&&x| x == slots[j]).count();
        let mut v = smallest(left, slots[j], k);
        if v.len() < k {
            return None;
        }
        v.reverse();
        reserve.extend(v);
        j += k;
    }
    (reserve.iter().sum::<u64>() <= tokens).then_some(reserve)
}

/// The pattern candidate (`pattern::pattern_fill`, then best fit by tokens of the rest): items in
/// placement order and the bin of each; the bins go to `b` (pattern packs first, in pack order).
fn pattern_run(items: &[Item], cap: (u32, u32), b: &mut Bins) -> (Vec<Item>, Vec<usize>) {
    let mut left: Vec<Item> = items.to_vec();
    let (mut placed, mut bin_at, mut rooms) = (Vec::new(), Vec::new(), Vec::new());
    // Fills one pack's slots: each takes the most tokens that leave the later slots what the
    // plan kept for them (equal sizes: the lower sample index).
    let fill = |slots: &[u32],
                reserve: &[u64],
                room: u64,
                left: &mut Vec<Item>,
                placed: &mut Vec<Item>| {
        let mut room = room;
        let mut taken = 0;
        for j in 0..slots.len() {
            let after: u64 = reserve[j + 1..].iter().sum();
            let Some(budget) = room.checked_sub(after) else {
                continue;
            };
            let pick = (0..left.len())
                .filter(|&k| left[k].s == slots[j] && u64::from(left[k].p) <= budget)
                .min_by_key(|&k| (std::cmp::Reverse(left[k].p), left[k].idx));
            if let Some(k) = pick {
                let it = left.remove(k);
                room -= u64::from(it.p);
                placed.push(it);
                taken += 1;
            }
        }
        taken
    };
    let tokens = u64::from(cap.0);
    let mut large: Vec<Item> = left
        .iter()
        .copied()
        .filter(|it| 2 * u64::from(it.p) > tokens)
        .collect();
    large.sort_by_key(|it| (std::cmp::Reverse((it.p, it.s)), it.idx));
    for big in large {
        let start = placed.len();
        left.retain(|it| it.idx != big.idx);
        placed.push(big);
        let room = tokens - u64::from(big.p);
        let slots = pattern_choose(&left, room, u64::from(cap.1 - big.s));
        if let Some(reserve) = pattern_plan(&left, &slots, room) {
            fill(&slots, &reserve, room, &mut left, &mut placed);
        }
        bin_at.resize(placed.len(), rooms.len());
        rooms.push(placed_room(&placed[start..], cap));
    }
    let mut slots: Vec<u32> = Vec::new();
    while left.iter().any(|it| it.s > 0) {
        let mut plan = pattern_plan(&left, &slots, tokens).filter(|_| !slots.is_empty());
        if rooms.len() % 16 == 0 || plan.is_none() {
            slots = pattern_choose(&left, tokens, u64::from(cap.1));
            plan = pattern_plan(&left, &slots, tokens).filter(|_| !slots.is_empty());
        }
        let Some(reserve) = plan else { break };
        let start = placed.len();
        if fill(&slots, &reserve, tokens, &mut left, &mut placed) == 0 {
            break;
        }
        bin_at.resize(placed.len(), rooms.len());
        rooms.push(placed_room(&placed[start..], cap));
    }
    for (k, r) in rooms.into_iter().enumerate() {
        b.room.push(cap);
        b.in_tree.push(false);
        b.stamp.push(0);
        b.put(k, r);
    }
    // The rest by tokens, then tiles, descending; sample order among equal sizes.
    left.sort_by_key(|it| (std::cmp::Reverse((it.p, it.s)), it.idx));
    bin_at.extend(run(&left, b));
    placed.extend(left);
    (placed, bin_at)
}

/// The room a pack of `items` leaves.
fn placed_room(items: &[Item], cap: (u32, u32)) -> (u32, u32) {
    items.iter().fold(cap, |r, it| (r.0 - it.p, r.1 - it.s))
}

/// A candidate's run: bin count, item order, bins, the bin of each position, tiles primary.
type Outcome = (usize, Vec<Item>, Bins, Vec<usize>, bool);

/// One pack of the reference plan: members (any order), summed (tokens, tiles), oversize.
type OwnedPack = (Vec<u32>, (u64, u64), bool);

/// The packs in this order as a [`PackList`], to compare with `bfd::pack`.
fn to_list(packs: Vec<OwnedPack>) -> PackList {
    let mut list = PackList::new();
    for (samples, cost, oversize) in packs {
        list.push(&samples, cost, oversize);
    }
    list
}

/// The reference plan of `bfd::pack`, in creation order (before the shuffle), and the kind of
/// the winning candidate (see `cands` below; 0 when there is none).
fn reference_pack(entries: &[Entry], limits: Limits) -> (Vec<OwnedPack>, u8) {
    let fit: Vec<Item> = entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| match *e {
            Entry::Fits(c) => Some(Item {
                idx: i as u32,
                p: c.tokens,
                s: c.tiles,
            }),
            _ => None,
        })
        .collect();
    let sum_tok: u128 = fit.iter().map(|it| u128::from(it.p)).sum();
    let sum_til: u128 = fit.iter().map(|it| u128::from(it.s)).sum();
    let tiles_fuller = sum_til * u128::from(limits.tokens) > sum_tok * u128::from(limits.tiles);
    // (tiles primary, kind: 0 BFD by size, 1 by sum, 2 by max, 3 fill, 4 pattern, 5 seeded fill)
    let mut cands = Vec::new();
    if !limits.unlimited_tiles() && limits.tokens != u32::MAX {
        // The pattern applies below 64 tile counts, T ≤ 255 and 2^22 (tiles, tokens) cells,
        // when tiles are fuller and the tile-bearing items' mean tile count is at most T / 3.
        let max_tiles = fit.iter().map(|it| it.s).max().unwrap_or(0);
        let max_tokens = fit.iter().map(|it| it.p).max().unwrap_or(0);
        let with_tiles = fit.iter().filter(|it| it.s > 0).count() as u128;
        if tiles_fuller
            && max_tiles < 64
            && limits.tiles <= 255
            && (max_tiles as usize + 1) * (max_tokens as usize + 1) <= 1 << 22
            && with_tiles > 0
            && 3 * sum_til <= with_tiles * u128::from(limits.tiles)
        {
            cands.push((false, 4));
        }
        // The fill applies below 64 tile counts, 2^22 (tiles, tokens) cells and a product of
        // the limits below 2^31, when Σtokens/L and Σtiles/T are within a factor 1.25.
        let (tok, til) = (
            sum_tok * u128::from(limits.tiles),
            sum_til * u128::from(limits.tokens),
        );
        if !fit.is_empty()
            && max_tiles < 64
            && (max_tiles as usize + 1) * (max_tokens as usize + 1) <= 1 << 22
            && u64::from(limits.tokens) * u64::from(limits.tiles) < 1 << 31
            && tok.max(til) * 4 <= tok.min(til) * 5
        {
            cands.push((false, 5));
            cands.push((false, 3));
        }
        cands.push((tiles_fuller, 1));
        cands.push((tiles_fuller, 2));
    }
    cands.push((false, 0));
    let mut best: Option<Outcome> = None;
    let mut winner = 0;
    let need = |sum: u128, cap: u32| sum.div_ceil(u128::from(cap));
    let bound = need(sum_tok, limits.tokens).max(need(sum_til, limits.tiles));
    for (tiles_primary, kind) in cands {
        // A candidate at the lower bound ends the search.
        if best.as_ref().is_some_and(|b| b.0 as u128 <= bound) {
            break;
        }
        let items: Vec<Item> = fit
            .iter()
            .map(|&it| {
                if tiles_primary {
                    Item {
                        idx: it.idx,
                        p: it.s,
                        s: it.p,
                    }
                } else {
                    it
                }
            })
            .collect();
        let cap = if tiles_primary {
            (limits.tiles, limits.tokens)
        } else {
            (limits.tokens, limits.tiles)
        };
        let min = items
            .iter()
            .fold((u32::MAX, u32::MAX), |m, it| (m.0.min(it.p), m.1.min(it.s)));
        let max_s = items.iter().map(|it| it.s).max().unwrap_or(0);
        let sum_s: u128 = items.iter().map(|it| u128::from(it.s)).sum();
        let (cp, cs) = (u128::from(cap.0), u128::from(cap.1));
        let key = |it: &Item| {
            let (p, s) = (u128::from(it.p), u128::from(it.s));
            match kind {
                0 => p * (u128::from(max_s) + 1) + s,
                1 => p * cs + s * cp,
                _ => (p * cs).max(s * cp),
            }
        };
        let mut bins = Bins {
            room: Vec::new(),
            in_tree: Vec::new(),
            stamp: Vec::new(),
            clock: 0,
            cap,
            min,
            ignore_s: sum_s <= u128::from(cap.1),
        };
        let (sorted, bin_at) = if kind == 4 {
            pattern_run(&items, cap, &mut bins)
        } else if kind == 3 || kind == 5 {
            let (placed, bin_at, rooms) = fill_run(&items, cap, kind == 5);
            // Its bins go into the tree for the post-pass in pack order.
            for (k, r) in rooms.into_iter().enumerate() {
                bins.room.push(cap);
                bins.in_tree.push(false);
                bins.stamp.push(0);
                bins.put(k, r);
            }
            (placed, bin_at)
        } else {
            let mut sorted = items;
            // Equal keys: larger primary, then larger secondary first; then sample order (stable).
            sorted.sort_by_key(|it| std::cmp::Reverse((key(it), it.p, it.s)));
            let bin_at = run(&sorted, &mut bins);
            (sorted, bin_at)
        };
        let count = bins.room.len();
        if best.as_ref().is_none_or(|b| count < b.0) {
            best = Some((count, sorted, bins, bin_at, tiles_primary));
            winner = kind;
        }
    }
    let mut packs = Vec::new();
    if let Some((_, sorted, mut bins, mut bin_at, tiles_primary)) = best {
        let gone = post_pass(&sorted, &mut bins, &mut bin_at);
        for (k, &r) in bins.room.iter().enumerate() {
            if gone[k] {
                continue;
            }
            let samples: Vec<u32> = (0..sorted.len())
                .filter(|&i| bin_at[i] == k)
                .map(|i| sorted[i].idx)
                .collect();
            let used = (u64::from(bins.cap.0 - r.0), u64::from(bins.cap.1 - r.1));
            let cost = if tiles_primary {
                (used.1, used.0)
            } else {
                used
            };
            packs.push((samples, cost, false));
        }
    }
    for (i, e) in entries.iter().enumerate() {
        if let Entry::Alone(c) = *e {
            packs.push((
                vec![i as u32],
                (u64::from(c.tokens), u64::from(c.tiles)),
                true,
            ));
        }
    }
    (packs, winner)
}

/// Random entries under small limits (cells stay single room values), with many repeated sizes so
/// that the tie rule decides often; some samples are over a limit and go alone.
fn random_case(r: &mut SplitMix64) -> (Vec<Entry>, Limits) {
    let limits = Limits {
        tokens: 1 + r.below(300) as u32,
        tiles: if r.below(4) == 0 {
            u32::MAX
        } else {
            1 + r.below(30) as u32
        },
    };
    let palette: Vec<Cost> = (0..1 + r.below(12))
        .map(|_| {
            let t = r.below(limits.tokens as usize + 1) as u32;
            let g = r.below(limits.tiles.min(30) as usize + 1) as u32;
            Cost::new(t >> r.below(3), g >> r.below(3))
        })
        .collect();
    let n = r.below(500);
    let entries = (0..n)
        .map(|_| {
            let c = if r.below(2) == 0 {
                palette[r.below(palette.len())]
            } else {
                Cost::new(
                    r.below(limits.tokens as usize + 2) as u32,
                    r.below(limits.tiles.min(30) as usize + 2) as u32,
                )
            };
            if c.fits(limits) {
                Entry::Fits(c)
            } else {
                Entry::Alone(c)
            }
        })
        .collect();
    (entries, limits)
}

#[test]
fn bfd_equals_the_reference_on_random_cases() {
    let mut r = SplitMix64::new(2026);
    let mut wins = [0usize; 6];
    for _ in 0..1500 {
        let (entries, limits) = random_case(&mut r);
        let seed = r.next_u64();
        let (got, _) = bfd::pack(&entries, limits, seed);
        let (mut want, winner) = reference_pack(&entries, limits);
        wins[usize::from(winner)] += 1;
        rng::shuffle(&mut want, seed);
        assert_eq!(got, to_list(want), "{limits:?} {entries:?}");
    }
    // Every kind of candidate won some cases, so each path was compared.
    assert!(wins.iter().all(|&w| w > 0), "wins per kind {wins:?}");
}

/// A few thousand samples of the benchmark's kind of mix (InternVL tiles, long text) at the
/// benchmark's limits: realistic shapes where the candidates differ and the post-pass works.
#[test]
fn bfd_equals_the_reference_on_a_realistic_mix() {
    let mut r = SplitMix64::new(7);
    for limits in [
        Limits {
            tokens: 8192,
            tiles: 16,
        },
        Limits {
            tokens: 4096,
            tiles: 24,
        },
        Limits::tokens_only(8192),
    ] {
        let entries: Vec<Entry> = (0..3000)
            .map(|_| {
                let c = match r.below(4) {
                    0..2 => {
                        let tiles = [1, 3, 4, 5, 7, 9, 13][r.below(7)];
                        Cost::new(256 * tiles + 2 + r.below(1500) as u32, tiles)
                    }
                    2 => {
                        let tiles = 2 + r.below(10) as u32;
                        Cost::new(256 * tiles + 6 + r.below(800) as u32, tiles)
                    }
                    _ => Cost::new(16 + r.below(6000) as u32, 0),
                };
                if c.fits(limits) {
                    Entry::Fits(c)
                } else {
                    Entry::Alone(c)
                }
            })
            .collect();
        let (mut want, _) = reference_pack(&entries, limits);
        rng::shuffle(&mut want, 3);
        assert_eq!(
            bfd::pack(&entries, limits, 3).0,
            to_list(want),
            "{limits:?}"
        );
    }
}

/// The benchmark's mix (benches/pack.rs): 60% single-image, 15% multi-image, 25% text-only.
pub(super) fn bench_mix(n: usize, seed: u64) -> Vec<Cost> {
    let mut r = SplitMix64::new(seed);
    let uniform = |r: &mut SplitMix64| (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    let lognormal = |r: &mut SplitMix64, mu: f64, lo: f64, hi: f64| {
        let (u1, u2) = (uniform(r).max(1e-12), uniform(r));
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        (mu + z).exp().clamp(lo, hi) as u32
    };
    let tiles = |r: &mut SplitMix64, max_grid: u32| {
        let k = [1, 2, 3, 4, 5, 6, 8, 9, 10, 12][r.below(10)].min(max_grid.max(1));
        if k == 1 { 1 } else { k + 1 }
    };
    (0..n)
        .map(|_| match r.below(20) {
            0..12 => {
                let t = tiles(&mut r, 12);
                Cost::new(256 * t + 2 + lognormal(&mut r, 5.5, 8.0, 6000.0), t)
            }
            12..15 => {
                let images = 2 + r.below(5) as u32;
                let t: u32 = (0..images).map(|_| tiles(&mut r, 12 / images)).sum();
                Cost::new(
                    256 * t + 2 * images + lognormal(&mut r, 5.0, 8.0, 4000.0),
                    t,
                )
            }
            _ => Cost::new(lognormal(&mut r, 6.5, 16.0, 12000.0), 0),
        })
        .collect()
}

/// FNV-1a over a whole plan: every pack in order (members, sums, flag) and every placement.
pub(super) fn fingerprint(plan: &super::PackPlan) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut eat = |x: u64| {
        for b in x.to_le_bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    };
    for p in &plan.packs {
        eat(p.samples.len() as u64);
        p.samples.iter().for_each(|&s| eat(u64::from(s)));
        eat(u64::from(p.tokens) << 32 | u64::from(p.tiles) << 1 | u64::from(p.oversize));
    }
    for pl in &plan.placements {
        eat(pl.pack().map_or(u64::MAX, u64::from));
    }
    h
}

/// Whole plans on 200k samples of the benchmark's mix, pinned by fingerprints: big pools,
/// bucketed cells (limits over 2^16) and the shuffle included, which the reference above does
/// not reach. Taken 2026-11-30 when equal keys got their size tie rule (larger primary, then
/// larger secondary first); (8192, none), whose plan did not change, still holds the pin of the
/// 2026-11-29 Bfd, from before the speed work.
/// (16384, 48) re-taken when the pack-by-pack fill became a candidate and won there; (16384, 32)
/// added with the pattern candidate (tiles bind there); (8192, 24) re-taken 2026-12-01 when the
/// seeded fill became a candidate and won there.
#[test]
fn bfd_plans_equal_the_pinned_fingerprints() {
    let costs = bench_mix(200_000, 7);
    let cases = [
        (8192, 16),
        (8192, 24),
        (16384, 48),
        (16384, 32),
        (8192, u32::MAX),
        (100_000, 5000),
    ];
    let mut got = Vec::new();
    for (tokens, tiles) in cases {
        let plan = super::plan_packs(
            &costs,
            Limits { tokens, tiles },
            super::Algo::Bfd,
            super::OversizePolicy::Alone,
            &|_| None,
            1,
        )
        .expect("valid settings");
        got.push(fingerprint(&plan));
    }
    let want = [
        0x330f_39d2_ccc1_aaed,
        0xe4c2_94b7_a5cc_27c0,
        0x03b2_d9b9_3a70_5227,
        0xd8b4_f4f7_a4a4_2f89,
        0xcb3f_fe2b_50c6_9cc0,
        0x1430_0931_c7d5_bba8,
    ];
    assert_eq!(got, want, "{got:#x?}");
}
