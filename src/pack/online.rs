//! Streaming packer with bounded memory: holds at most `buffer` samples and emits a pack each
//! time the buffer is full, so a trainer can start before the pool has been read.
//!
//! Building one pack is a greedy fill. With normalized room `a = tokens left / L` and
//! `b = tiles left / T`, it repeatedly takes the buffered sample that leaves the smallest
//! `max(a', b')` (then the smallest `a' + b'`, then the oldest): it fills whichever dimension has
//! the most room while fitting both, so packs end near BOTH limits instead of running out of tiles
//! with tokens to spare. A limit that is "none" (`u32::MAX`) does not steer the choice.
//!
//! The buffer is indexed by tile count, each with a token-sorted list, so one pick costs
//! O(K log B) for K distinct tile counts (about 14 with InternVL tiling). To bound how long a
//! sample can wait, a sample older than `4·buffer` pushes seeds the next pack.

use std::collections::BTreeMap;

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
    /// Arrival number → (sample index, cost) of every buffered sample; its first key is the oldest.
    alive: BTreeMap<u64, (u32, Cost)>,
    /// Tile count → (tokens, arrival) of the buffered samples with that many tiles, ascending.
    by_tiles: BTreeMap<u32, Vec<(u32, u64)>>,
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
            alive: BTreeMap::new(),
            by_tiles: BTreeMap::new(),
        })
    }

    /// How many samples are buffered.
    pub fn len(&self) -> usize {
        self.alive.len()
    }

    /// Whether no sample is buffered.
    pub fn is_empty(&self) -> bool {
        self.alive.is_empty()
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
        self.alive.insert(seq, (index, cost));
        let list = self.by_tiles.entry(cost.tiles).or_default();
        // Arrival numbers grow, so (tokens, seq) lands after every equal-token entry.
        let at = list.partition_point(|&(t, _)| t <= cost.tokens);
        list.insert(at, (cost.tokens, seq));
        let full = self.alive.len() >= self.capacity;
        if full {
            self.emit(out);
        }
        full
    }

    /// Appends the packs of everything still buffered to `out`.
    pub fn finish(&mut self, out: &mut PackList) {
        while !self.alive.is_empty() {
            self.emit(out);
        }
    }

    fn take(&mut self, seq: u64) -> Option<(u32, Cost)> {
        let (index, cost) = self.alive.remove(&seq)?;
        if let Some(list) = self.by_tiles.get_mut(&cost.tiles) {
            let at = list.partition_point(|&e| e < (cost.tokens, seq));
            list.remove(at);
            if list.is_empty() {
                self.by_tiles.remove(&cost.tiles);
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
        let mut samples = Vec::new();
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
        let oldest = self.alive.first_key_value().map(|(&s, _)| s);
        if let Some(seq) = oldest.filter(|&s| self.next_seq - s > self.max_age) {
            add(self, seq, &mut room_t, &mut room_i);
        }
        loop {
            let mut best: Option<((f64, f64, u64), u64)> = None;
            for (&tiles, list) in self.by_tiles.range(..=room_i) {
                let end = list.partition_point(|&(tok, _)| tok <= room_t);
                if end == 0 {
                    continue;
                }
                // The largest token count that fits, and among equal ones the oldest.
                let tok = list[end - 1].0;
                let first = list.partition_point(|&(x, _)| x < tok);
                let seq = list[first].1;
                let a = f64::from(room_t - tok) * wt;
                let b = f64::from(room_i - tiles) * wi;
                let score = (a.max(b), a + b, seq);
                if best.is_none_or(|(s, _)| score < s) {
                    best = Some((score, seq));
                }
            }
            match best {
                Some((_, seq)) => add(self, seq, &mut room_t, &mut room_i),
                None => break,
            }
        }
        out.push(&samples, sums, false);
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
