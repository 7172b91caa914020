//! Streaming packer with bounded memory: holds at most `buffer` samples and emits a pack each
//! time the buffer is full, so a trainer can start before the pool has been read.
//!
//! Building one pack is a greedy fill. With normalized room `a = tokens left / L` and
//! `b = tiles left / T`, it repeatedly takes the buffered sample that leaves the smallest
//! `max(a', b')` (then the smallest `a' + b'`, then the oldest): it fills whichever dimension has
//! the most room while fitting both, so packs end near BOTH limits instead of running out of tiles
//! with tokens to spare. A limit that is "none" (`u32::MAX`) does not steer the choice.
//!
//! Where the buffer's tiles bind (Σtiles/T > Σtokens/L, three or more tile-bearing samples per
//! pack on average), a pack starts from a tile pattern instead, the rule of Bfd's pattern
//! candidate ([`super::pattern`]) applied to the buffer: the multiset of tile counts reaching the
//! largest total ≤ T whose smallest samples fit L, each slot taking the sample with the most
//! tokens that leaves the later slots theirs; the greedy then tops the pack up. On the BENCHMARKS
//! rows where it applies it takes 1–2% fewer packs (single 8192 × 24: 30825 → 30515 at buffer
//! 1024), at 0.5–1.0× the speed there (BENCHMARKS "Packing", samples/s of the stop-19 and
//! stop-20 runs).
//!
//! The buffer is indexed by tile count, each with a token-sorted list, so one pick costs
//! O(K log B) for K distinct tile counts (about 14 with InternVL tiling), fewer where the tile
//! room alone rules out the smaller tile counts; samples by arrival sit in a ring. To bound how
//! long a sample can wait, a sample older than `4·buffer` pushes seeds the next pack.

use std::collections::VecDeque;

use super::pattern::{Search, TileCounts, keep_for_slots};
use super::{Cost, Limits, PackList};
use crate::error::{Error, Result};

/// Streaming packer; see the module docs. Oversize samples (over a limit on their own) are
/// emitted at once as an oversize pack: apply the drop/truncate policy before pushing.
#[derive(Debug, Clone)]
pub struct OnlinePacker {
    limits: Limits,
    capacity: usize,
    max_age: u64,
    next_seq: u64,
    /// The buffered samples by arrival: (sample index, cost) of arrival
    /// [`OnlinePacker::first_seq`]` + i` at `i`, `None` once taken; the front is always a
    /// buffered sample (the oldest), or the ring is empty. A ring instead of an ordered map:
    /// arrivals only grow, so pushing is an append and taking a slot write.
    alive: VecDeque<Option<(u32, Cost)>>,
    /// How many samples are buffered (the `Some` slots of `alive`).
    buffered: usize,
    /// The buffered samples by tile count: (tiles, their (tokens, arrival) ascending), ordered by
    /// tiles, only tile counts with samples. A flat list: there are a few dozen tile counts at
    /// most in practice, and the greedy scans them all for every pick.
    by_tiles: Vec<(u32, Vec<(u32, u64)>)>,
    /// Σtokens, Σtiles and the number of tile-bearing samples in the buffer, for
    /// [`OnlinePacker::patterns_apply`].
    sums: (u128, u128, u128),
    /// The tile-pattern search, where the tile limit allows one (≤ 255).
    search: Option<Search>,
    /// A pattern's slots and the tokens kept for them, and the members of the pack being
    /// built: buffers reused across packs.
    scratch: (Vec<u32>, Vec<u64>),
    members: Vec<u32>,
}

impl OnlinePacker {
    /// A packer under `limits` that holds at most `buffer` samples (> 0).
    pub fn new(limits: Limits, buffer: usize) -> Result<Self> {
        limits.validate()?;
        if buffer == 0 {
            return Err(Error::PackSettings(
                "the online packer's buffer must hold at least one sample".into(),
            ));
        }
        Ok(Self {
            limits,
            capacity: buffer,
            max_age: 4 * buffer as u64,
            next_seq: 0,
            alive: VecDeque::new(),
            buffered: 0,
            by_tiles: Vec::new(),
            sums: (0, 0, 0),
            search: (limits.tiles <= MAX_PATTERN_TILES && limits.tokens != u32::MAX)
                .then(|| Search::new(limits.tiles as usize + 1, limits.tiles)),
            scratch: (Vec::new(), Vec::new()),
            members: Vec::new(),
        })
    }

    /// How many samples are buffered.
    pub fn len(&self) -> usize {
        self.buffered
    }

    /// Whether no sample is buffered.
    pub fn is_empty(&self) -> bool {
        self.buffered == 0
    }

    /// Adds sample `index` of cost `cost`; appends the pack this completes, if any, to `out`
    /// (the sample alone when it is over a limit, or a greedy pack when the buffer is full) and
    /// says whether it did.
    pub fn push(&mut self, index: u32, cost: Cost, out: &mut PackList) -> bool {
        if !cost.fits(self.limits) {
            let sums = (u64::from(cost.tokens), u64::from(cost.tiles));
            out.push_one(index, sums, true);
            return true;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.alive.push_back(Some((index, cost)));
        self.buffered += 1;
        self.count_in(cost, true);
        let list = match self.class_at(cost.tiles) {
            Ok(k) => &mut self.by_tiles[k].1,
            Err(k) => {
                self.by_tiles.insert(k, (cost.tiles, Vec::new()));
                &mut self.by_tiles[k].1
            }
        };
        // Arrival numbers grow, so (tokens, seq) lands after every equal-token entry.
        let at = list.partition_point(|&(t, _)| t <= cost.tokens);
        list.insert(at, (cost.tokens, seq));
        let full = self.buffered >= self.capacity;
        if full {
            self.emit(out);
        }
        full
    }

    /// Appends the packs of everything still buffered to `out`.
    pub fn finish(&mut self, out: &mut PackList) {
        while !self.is_empty() {
            self.emit(out);
        }
    }

    /// Where tile count `tiles` is (or would go) in `by_tiles`.
    fn class_at(&self, tiles: u32) -> std::result::Result<usize, usize> {
        self.by_tiles.binary_search_by_key(&tiles, |c| c.0)
    }

    /// The arrival of the ring's front: every arrival gets a slot and slots leave from the
    /// front only, so the ring holds exactly the arrivals since it.
    fn first_seq(&self) -> u64 {
        self.next_seq - self.alive.len() as u64
    }

    fn take(&mut self, seq: u64) -> Option<(u32, Cost)> {
        let slot = usize::try_from(seq.checked_sub(self.first_seq())?).ok()?;
        let (index, cost) = self.alive.get_mut(slot)?.take()?;
        self.buffered -= 1;
        // Keep the front a buffered sample: drop the taken slots before it.
        while self.alive.front().is_some_and(Option::is_none) {
            self.alive.pop_front();
        }
        self.count_in(cost, false);
        if let Ok(k) = self.class_at(cost.tiles) {
            let list = &mut self.by_tiles[k].1;
            let at = list.partition_point(|&e| e < (cost.tokens, seq));
            list.remove(at);
            if list.is_empty() {
                self.by_tiles.remove(k);
            }
        }
        Some((index, cost))
    }

    /// Builds one pack from the buffer (which must not be empty) and appends it to `out`.
    fn emit(&mut self, out: &mut PackList) {
        let (l, t) = (self.limits.tokens, self.limits.tiles);
        // A "none" limit gets no weight: only the other dimension steers.
        let wt = if l == u32::MAX {
            0.0
        } else {
            1.0 / f64::from(l)
        };
        let wi = if self.limits.unlimited_tiles() {
            0.0
        } else {
            1.0 / f64::from(t)
        };
        let (mut room_t, mut room_i) = (l, t);
        let mut samples = std::mem::take(&mut self.members);
        samples.clear();
        let mut sums = (0u64, 0u64);
        let mut add = |this: &mut Self, seq: u64, room_t: &mut u32, room_i: &mut u32| {
            let Some((index, cost)) = this.take(seq) else {
                return;
            };
            *room_t -= cost.tokens;
            *room_i -= cost.tiles;
            sums.0 += u64::from(cost.tokens);
            sums.1 += u64::from(cost.tiles);
            samples.push(index);
        };
        let oldest = (!self.alive.is_empty()).then(|| self.first_seq());
        if let Some(seq) = oldest.filter(|&s| self.next_seq - s > self.max_age) {
            add(self, seq, &mut room_t, &mut room_i);
        }
        // Where tiles bind, first a tile pattern (the offline candidate's rule, over the buffer),
        // then the greedy below tops the pack up.
        let patterns = self.patterns_apply();
        if let Some(mut search) = self.search.take_if(|_| patterns) {
            let (mut slots, mut kept) = std::mem::take(&mut self.scratch);
            let buffered = Buffered(&self.by_tiles);
            search.choose(&buffered, u64::from(room_t), room_i as usize, &mut slots);
            // The search only plans slots the buffer holds samples for, so the keep succeeds.
            if keep_for_slots(&buffered, &slots, &mut kept) {
                let mut need_after: u64 = kept.iter().sum();
                for (&c, &k) in slots.iter().zip(&kept) {
                    need_after -= k;
                    let Some(budget) = u64::from(room_t).checked_sub(need_after) else {
                        continue;
                    };
                    let budget = budget.min(u64::from(u32::MAX)) as u32;
                    if let Some(seq) = self.largest_fitting(c, budget) {
                        add(self, seq, &mut room_t, &mut room_i);
                    }
                }
            }
            self.scratch = (slots, kept);
            self.search = Some(search);
        }
        loop {
            // The best (max, sum, arrival) so far, and the list and token count it came from;
            // the arrival (the oldest of that token count, a second search) is only looked up
            // where the scores tie or at the end.
            let mut best: Option<((f64, f64), usize, u32)> = None;
            let mut best_seq: Option<u64> = None;
            let fits = self.by_tiles.partition_point(|c| c.0 <= room_i);
            // Most tiles first: the tile room a sample leaves, `b`, only grows as the tile
            // count falls and bounds its score from below, so once `b` alone is worse than the
            // best so far, no tile count left can win (nor tie).
            for (k, (tiles, list)) in self.by_tiles[..fits].iter().enumerate().rev() {
                let b = f64::from(room_i - tiles) * wi;
                if best.is_some_and(|(s, ..)| b > s.0) {
                    break;
                }
                // Without tile weight the score is the token room left alone: a list whose
                // largest sample has fewer tokens than the best's cannot win (nor tie).
                if wi == 0.0
                    && wt > 0.0
                    && best.is_some_and(|(.., btok)| list.last().is_none_or(|e| e.0 < btok))
                {
                    continue;
                }
                let Some(tok) = largest_token(list, room_t) else {
                    continue;
                };
                let a = f64::from(room_t - tok) * wt;
                let score = (a.max(b), a + b);
                // Some(the arrival, where it was looked up) when this list's sample is better.
                let better = match best {
                    None => Some(None),
                    Some((s, bk, btok)) => match score.partial_cmp(&s) {
                        Some(std::cmp::Ordering::Less) => Some(None),
                        Some(std::cmp::Ordering::Equal) => {
                            let seq = oldest_with(list, tok);
                            let held = *best_seq
                                .get_or_insert_with(|| oldest_with(&self.by_tiles[bk].1, btok));
                            (seq < held).then_some(Some(seq))
                        }
                        _ => None,
                    },
                };
                if let Some(seq) = better {
                    best = Some((score, k, tok));
                    best_seq = seq;
                }
            }
            match best {
                Some((_, k, tok)) => {
                    let seq = best_seq.unwrap_or_else(|| oldest_with(&self.by_tiles[k].1, tok));
                    add(self, seq, &mut room_t, &mut room_i)
                }
                None => break,
            }
        }
        out.push(&samples, sums, false);
        self.members = samples;
    }
}

/// The buffer as the pattern search reads it.
struct Buffered<'a>(&'a [(u32, Vec<(u32, u64)>)]);

impl Buffered<'_> {
    fn list(&self, c: usize) -> Option<&[(u32, u64)]> {
        let c = u32::try_from(c).ok()?;
        let k = self.0.binary_search_by_key(&c, |x| x.0).ok()?;
        Some(&self.0[k].1)
    }
}

impl TileCounts for Buffered<'_> {
    fn classes(&self) -> usize {
        self.0.last().map_or(0, |c| c.0 as usize + 1)
    }
    fn count(&self, c: usize) -> u64 {
        self.list(c).map_or(0, |l| l.len() as u64)
    }
    fn smallest_into(&self, c: usize, k: usize, out: &mut Vec<u64>) {
        if let Some(l) = self.list(c) {
            out.extend(l.iter().take(k).map(|&(tok, _)| u64::from(tok)));
        }
    }
}

/// Largest tile limit with tile patterns (the search's table grows with T²).
const MAX_PATTERN_TILES: u32 = 255;

/// The largest token count ≤ `room` in a token-sorted list.
fn largest_token(list: &[(u32, u64)], room: u32) -> Option<u32> {
    let end = list.partition_point(|&(tok, _)| tok <= room);
    Some(list.get(end.checked_sub(1)?)?.0)
}

/// The arrival of the oldest sample with `tok` tokens in a token-sorted list (which has one).
fn oldest_with(list: &[(u32, u64)], tok: u32) -> u64 {
    list[list.partition_point(|&(x, _)| x < tok)].1
}

impl OnlinePacker {
    /// Counts `cost` into (`add`) or out of the buffer's sums.
    fn count_in(&mut self, cost: Cost, add: bool) {
        let d = (
            u128::from(cost.tokens),
            u128::from(cost.tiles),
            u128::from(cost.tiles > 0),
        );
        if add {
            self.sums = (self.sums.0 + d.0, self.sums.1 + d.1, self.sums.2 + d.2);
        } else {
            self.sums = (self.sums.0 - d.0, self.sums.1 - d.1, self.sums.2 - d.2);
        }
    }

    /// Whether the buffer's tiles bind (Σtiles/T > Σtokens/L) with a mean tile count of at most
    /// T/3 among tile-bearing samples: where Bfd runs its pattern candidate, judged on the
    /// buffer.
    fn patterns_apply(&self) -> bool {
        let (l, t) = (
            u128::from(self.limits.tokens),
            u128::from(self.limits.tiles),
        );
        let (tok, til, n) = self.sums;
        til * l > tok * t && n > 0 && 3 * til <= n * t
    }

    /// The oldest of the samples of `tiles` tiles with the most tokens ≤ `room`.
    fn largest_fitting(&self, tiles: u32, room: u32) -> Option<u64> {
        let list = &self.by_tiles[self.class_at(tiles).ok()?].1;
        Some(oldest_with(list, largest_token(list, room)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_bounds_memory_and_finish_flushes() {
        let mut p = OnlinePacker::new(
            Limits {
                tokens: 10,
                tiles: 4,
            },
            3,
        )
        .unwrap();
        let mut packs = PackList::new();
        for i in 0..20u32 {
            let before = packs.len();
            let emitted = p.push(i, Cost::new(1 + i % 7, i % 3), &mut packs);
            assert_eq!(emitted, packs.len() == before + 1);
            assert!(p.len() < 3);
        }
        p.finish(&mut packs);
        assert!(p.is_empty());
        let mut all: Vec<u32> = packs.iter().flat_map(|p| p.samples.to_vec()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
        assert!(packs.iter().all(|p| p.tokens <= 10 && p.tiles <= 4));
    }

    #[test]
    fn fills_both_dimensions() {
        // An image-heavy sample and a text-heavy one complete each other; two of the same kind
        // would not fit together.
        let mut p = OnlinePacker::new(
            Limits {
                tokens: 100,
                tiles: 10,
            },
            8,
        )
        .unwrap();
        let costs = [
            Cost::new(40, 8),
            Cost::new(40, 8),
            Cost::new(60, 2),
            Cost::new(60, 2),
        ];
        let mut packs = PackList::new();
        for (i, &c) in costs.iter().enumerate() {
            p.push(i as u32, c, &mut packs);
        }
        p.finish(&mut packs);
        assert_eq!(packs.len(), 2);
        assert!(
            packs.iter().all(|p| p.tokens == 100 && p.tiles == 10),
            "{packs:?}"
        );
    }

    /// Tiles bind with several samples per pack: the tile patterns over the buffer make packs
    /// that add up to T (the max/sum greedy alone ends 11 packs, 0.3%, over the bound here).
    #[test]
    fn tile_bound_streams_pack_at_the_bound() {
        let limits = Limits {
            tokens: 1 << 15,
            tiles: 32,
        };
        let mut p = OnlinePacker::new(limits, 1024).unwrap();
        let mut r = crate::pack::rng::SplitMix64::new(4);
        let mut out = PackList::new();
        let mut tiles = 0u64;
        for i in 0..20_000u32 {
            let c = [1u32, 3, 4, 5, 7, 7, 9, 13][r.below(8)];
            tiles += u64::from(c);
            p.push(i, Cost::new(256 * c + r.below(400) as u32, c), &mut out);
        }
        p.finish(&mut out);
        let bound = tiles.div_ceil(32) as usize;
        assert!(
            out.iter()
                .all(|p| p.tokens <= limits.tokens && p.tiles <= 32)
        );
        assert!(out.len() <= bound + 2, "{} packs, bound {bound}", out.len());
    }

    /// Whole streams of the benchmark's mix, pinned by fingerprints (the plan's packs in
    /// order and every placement), so speed work on the packer cannot change a plan unnoticed:
    /// the max/sum greedy alone (8192 × 16, 8192 × 24 and 16384 × 48 at buffer 256, tokens
    /// only), with the tile patterns (16384 × 32), and samples over a limit. Taken 2026-12-01.
    #[test]
    fn online_plans_equal_the_pinned_fingerprints() {
        use crate::pack::bfd_reference::{bench_mix, fingerprint};
        use crate::pack::{Algo, OversizePolicy, plan_packs};
        let costs = bench_mix(100_000, 11);
        let cases = [
            (8192, 16, 1024),
            (8192, 24, 1024),
            (16384, 32, 1024),
            (16384, 48, 256),
            (8192, u32::MAX, 1024),
            (4096, 12, 64),
        ];
        let mut got = Vec::new();
        for (tokens, tiles, buffer) in cases {
            let limits = Limits { tokens, tiles };
            let algo = Algo::Online { buffer };
            let plan = plan_packs(&costs, limits, algo, OversizePolicy::Alone, &|_| None, 1)
                .expect("valid settings");
            got.push(fingerprint(&plan));
        }
        let want = [
            0x43d5_6014_21ff_9d8f,
            0xcb58_d302_44bb_4d16,
            0xb968_46f8_07b4_3093,
            0xb282_af86_ea06_b4c1,
            0x1ebd_a468_0031_2e7d,
            0xd857_073f_d8f5_b498,
        ];
        assert_eq!(got, want, "{got:#x?}");
    }

    #[test]
    fn oversize_is_emitted_alone_at_once() {
        let mut p = OnlinePacker::new(Limits::tokens_only(10), 4).unwrap();
        let mut out = PackList::new();
        assert!(!p.push(0, Cost::new(3, 0), &mut out));
        assert!(p.push(1, Cost::new(11, 0), &mut out));
        let alone = out.get(0).unwrap();
        assert!(out.len() == 1 && alone.oversize && alone.samples == [1]);
        assert_eq!(p.len(), 1);
    }
}
