//! The perceptual dedup tier: all pairs of images whose perceptual hashes ([`super::phash`]) are
//! within Hamming distance `k`, found without comparing all pairs.
//!
//! Multi-index hashing (Norouzi, Punjani & Fleet, "Fast search in Hamming space with
//! multi-index hashing", CVPR 2012): the 64 bits are cut into `m` disjoint bands. If two hashes
//! differ in at most `k` bits, by pigeonhole some band differs in at most `⌊k/m⌋` bits
//! (with `m = k + 1`, some band is equal). Each band keeps a table from band value to the hashes
//! holding it; a query looks up every band value within `⌊k/m⌋` bits of its own band and checks
//! the full distance of what it finds. `m` is chosen per index from a cost model: few wide bands
//! make buckets small but need many probes per band, many narrow bands need one probe each but
//! return crowded buckets. With 1M hashes and `k = 8` that is 3 bands of 21–22 bits, each probed
//! within 2 bits: ~750 lookups and a few hundred candidates per query instead of 1M comparisons.
//!
//! A pair counts as duplicate when the hashes are within `k`, or one image's `flipped` hash is
//! within `k` of the other's hash (a mirrored copy).

use super::phash::{PerceptualHash, hamming};
use rayon::prelude::*;

/// The default Hamming threshold of the perceptual tier.
///
/// Chosen from the measurement in `tests/curate_tiers.rs` (table in BENCHMARKS.md, "Perceptual
/// dedup"; 240 planted originals): every re-encode (q 60–90), resize (50–90%) and flip lands
/// within 4 bits of its original, crops of up to 10% per side spread from 0 to 24 bits. Among
/// the 28,680 pairs of distinct originals, 1 pair is within 6–11 bits, 4 within 12, 11 within
/// 14, 32 within 16. At 10 the false-positive rate stays at its k = 6 level (3.5e-5) while half
/// of the crops are caught (28% at 8, 65% at 12 for 4× the false pairs). Distances are even:
/// every phash has exactly 32 bits set (bit = above the median of 64), so 11 equals 10.
pub const DEFAULT_MAX_DISTANCE: u32 = 10;

/// Relative cost of one table lookup against one full-hash comparison, for choosing bands.
const PROBE_COST: f64 = 4.0;

/// One band: bits `shift..shift + bits` of every hash, sorted by value, with a table on the
/// value's top `prefix_bits` bits pointing into the sorted entries.
#[derive(Debug, Clone)]
struct Band {
    shift: u32,
    bits: u32,
    /// Tolerated differing bits within this band (`⌊k/m⌋`).
    radius: u32,
    prefix_bits: u32,
    /// `2^prefix_bits + 1` offsets into `entries`.
    offsets: Vec<u32>,
    /// (band value, hash index), sorted.
    entries: Vec<(u32, u32)>,
}

impl Band {
    fn build(hashes: &[u64], shift: u32, bits: u32, radius: u32) -> Band {
        // About one entry per table slot, never more than 2^24 slots (64 MiB of offsets).
        let wanted = usize::BITS - hashes.len().max(1).leading_zeros();
        let prefix_bits = bits.min(wanted).min(24);
        let mut entries: Vec<(u32, u32)> = hashes
            .iter()
            .enumerate()
            .map(|(i, &h)| (band_value(h, shift, bits), i as u32))
            .collect();
        entries.par_sort_unstable();
        let slots = 1usize << prefix_bits;
        let mut offsets = vec![0u32; slots + 1];
        for &(v, _) in &entries {
            offsets[(v >> (bits - prefix_bits)) as usize + 1] += 1;
        }
        for s in 0..slots {
            offsets[s + 1] += offsets[s];
        }
        Band {
            shift,
            bits,
            radius,
            prefix_bits,
            offsets,
            entries,
        }
    }

    /// Calls `found` with the index of every hash whose band value is `value`.
    #[inline]
    fn lookup(&self, value: u32, found: &mut impl FnMut(u32)) {
        let slot = (value >> (self.bits - self.prefix_bits)) as usize;
        let bucket = &self.entries[self.offsets[slot] as usize..self.offsets[slot + 1] as usize];
        // The bucket is sorted by value: skip smaller values, stop at the first larger one.
        for &(v, i) in bucket {
            if v == value {
                found(i);
            } else if v > value {
                break;
            }
        }
    }

    /// Calls `found` for every hash whose band value is within `radius` bits of `query`'s.
    fn probe(&self, query: u64, found: &mut impl FnMut(u32)) {
        let value = band_value(query, self.shift, self.bits);
        for d in 0..=self.radius.min(self.bits) {
            // Every `bits`-bit mask with `d` ones, in increasing order (Gosper's hack).
            let mut mask: u64 = (1u64 << d) - 1;
            let end = 1u64 << self.bits;
            while mask < end {
                self.lookup(value ^ mask as u32, found);
                if mask == 0 {
                    break;
                }
                let low = mask & mask.wrapping_neg();
                let ripple = mask + low;
                mask = (((ripple ^ mask) >> 2) / low) | ripple;
            }
        }
    }
}

#[inline]
fn band_value(h: u64, shift: u32, bits: u32) -> u32 {
    ((h >> shift) & ((1u64 << bits) - 1)) as u32
}

fn binomial(n: u32, k: u32) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * f64::from(n - i) / f64::from(i + 1))
}

/// Widths of `m` bands covering 64 bits, as equal as possible (wider ones first).
fn band_widths(m: u32) -> impl Iterator<Item = u32> {
    (0..m).map(move |b| 64 / m + u32::from(b < 64 % m))
}

/// The band count with the lowest expected cost per query for `n` uniformly spread hashes, or
/// `None` when a linear scan is cheaper (tiny indexes, or thresholds so large that banding
/// cannot prune).
fn choose_bands(n: usize, max_distance: u32) -> Option<u32> {
    let n_f = n as f64;
    let mut best: Option<(f64, u32)> = None;
    // Bands of at most 32 bits (values are u32), so at least 2 of them.
    for m in 2..=(max_distance + 1).clamp(2, 64) {
        let radius = max_distance / m;
        let cost: f64 = band_widths(m)
            .map(|bits| {
                let probes: f64 = (0..=radius.min(bits)).map(|d| binomial(bits, d)).sum();
                probes * (PROBE_COST + n_f / 2f64.powi(bits as i32))
            })
            .sum();
        if best.is_none_or(|(c, _)| cost < c) {
            best = Some((cost, m));
        }
    }
    best.filter(|&(cost, _)| cost < n_f).map(|(_, m)| m)
}

/// A searchable set of 64-bit perceptual hashes.
#[derive(Debug, Clone)]
pub struct PerceptualIndex {
    hashes: Vec<u64>,
    max_distance: u32,
    /// Empty when a linear scan is cheaper.
    bands: Vec<Band>,
}

impl PerceptualIndex {
    /// Indexes `hashes` (their positions are the indices [`Self::matches`] returns) for queries
    /// within `max_distance` bits.
    ///
    /// # Panics
    /// With more than `u32::MAX` hashes (indices are `u32`, as in the rest of curation).
    pub fn new(hashes: &[u64], max_distance: u32) -> Self {
        assert!(
            u32::try_from(hashes.len()).is_ok(),
            "PerceptualIndex holds at most u32::MAX hashes"
        );
        let max_distance = max_distance.min(64);
        let bands = match choose_bands(hashes.len(), max_distance) {
            None => Vec::new(),
            Some(m) => {
                let radius = max_distance / m;
                let mut shift = 0;
                band_widths(m)
                    .map(|bits| {
                        let band = Band::build(hashes, shift, bits, radius);
                        shift += bits;
                        band
                    })
                    .collect()
            }
        };
        PerceptualIndex {
            hashes: hashes.to_vec(),
            max_distance,
            bands,
        }
    }

    /// Number of bands (0: queries scan linearly). For tests and diagnostics.
    pub fn band_count(&self) -> usize {
        self.bands.len()
    }

    /// Pushes onto `out` every index whose hash is within the threshold of `query` (unsorted,
    /// possibly repeated).
    fn collect(&self, query: u64, out: &mut Vec<u32>) {
        let k = self.max_distance;
        if self.bands.is_empty() {
            out.extend(
                self.hashes
                    .iter()
                    .enumerate()
                    .filter(|&(_, &h)| hamming(h, query) <= k)
                    .map(|(i, _)| i as u32),
            );
            return;
        }
        for band in &self.bands {
            band.probe(query, &mut |i| {
                if hamming(self.hashes[i as usize], query) <= k {
                    out.push(i);
                }
            });
        }
    }

    /// Indices whose hash is within the threshold of `query.hash` or of `query.flipped`,
    /// ascending.
    pub fn matches(&self, query: &PerceptualHash) -> Vec<u32> {
        let mut out = Vec::new();
        self.collect(query.hash, &mut out);
        if query.flipped != query.hash {
            self.collect(query.flipped, &mut out);
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Every pair `(i, j)`, `i < j`, of near duplicates among `hashes`: `hamming(hash_i, hash_j)`,
/// `hamming(flipped_i, hash_j)` or `hamming(hash_i, flipped_j)` is at most `max_distance`.
/// Sorted and without repeats; the same for any thread count.
///
/// # Panics
/// With more than `u32::MAX` hashes.
pub fn near_duplicate_pairs(hashes: &[PerceptualHash], max_distance: u32) -> Vec<(u32, u32)> {
    let plain: Vec<u64> = hashes.iter().map(|h| h.hash).collect();
    let index = PerceptualIndex::new(&plain, max_distance);
    let mut pairs: Vec<(u32, u32)> = hashes
        .par_iter()
        .enumerate()
        .fold(
            || (Vec::new(), Vec::new()),
            |(mut pairs, mut scratch): (Vec<(u32, u32)>, Vec<u32>), (i, q)| {
                let i = i as u32;
                scratch.clear();
                // Querying with `flipped_i` finds `hamming(flipped_i, hash_j)`; the third case,
                // `hamming(hash_i, flipped_j)`, is found when j is the query.
                index.collect(q.hash, &mut scratch);
                if q.flipped != q.hash {
                    index.collect(q.flipped, &mut scratch);
                }
                pairs.extend(
                    scratch
                        .iter()
                        .filter(|&&j| j != i)
                        .map(|&j| (i.min(j), i.max(j))),
                );
                (pairs, scratch)
            },
        )
        .map(|(pairs, _)| pairs)
        .reduce(Vec::new, |mut a, mut b| {
            a.append(&mut b);
            a
        });
    pairs.par_sort_unstable();
    pairs.dedup();
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*, enough to spread test hashes.
    fn rng(state: &mut u64) -> u64 {
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    #[test]
    fn band_choice_follows_the_pool_size() {
        // Tiny pools scan; a million hashes at k = 8 get 3 bands probed within 2 bits.
        assert_eq!(choose_bands(10, 8), None);
        assert_eq!(choose_bands(1_000_000, 8), Some(3));
        assert!(choose_bands(1_000_000, 0).is_some());
        assert_eq!(band_widths(3).collect::<Vec<_>>(), vec![22, 21, 21]);
        assert_eq!(band_widths(7).sum::<u32>(), 64);
    }

    #[test]
    fn banded_index_finds_planted_neighbours_among_random_hashes() {
        let mut s = 0x9e37_79b9_7f4a_7c15u64;
        let mut hashes: Vec<u64> = (0..50_000).map(|_| rng(&mut s)).collect();
        // Plant neighbours at every distance up to 12.
        for d in 0..=12u32 {
            let base = hashes[d as usize];
            let mut h = base;
            let mut flipped = 0;
            while flipped < d {
                let bit = 1u64 << (rng(&mut s) % 64);
                if (h ^ base) & bit == 0 {
                    h ^= bit;
                    flipped += 1;
                }
            }
            hashes.push(h);
        }
        let index = PerceptualIndex::new(&hashes, 8);
        assert!(index.band_count() >= 2);
        for d in 0..=12u32 {
            let q = PerceptualHash {
                hash: hashes[d as usize],
                flipped: hashes[d as usize],
            };
            let found = index.matches(&q);
            let brute: Vec<u32> = (0..hashes.len() as u32)
                .filter(|&j| hamming(hashes[j as usize], q.hash) <= 8)
                .collect();
            assert_eq!(found, brute, "distance {d}");
            assert_eq!(found.contains(&(50_000 + d)), d <= 8, "distance {d}");
        }
    }

    #[test]
    fn thresholds_of_64_and_more_match_everything() {
        let hashes = [0u64, u64::MAX, 0x5555_5555_5555_5555];
        let q = PerceptualHash {
            hash: 0,
            flipped: 0,
        };
        assert_eq!(PerceptualIndex::new(&hashes, 64).matches(&q), vec![0, 1, 2]);
        assert_eq!(
            PerceptualIndex::new(&hashes, 1000).matches(&q),
            vec![0, 1, 2]
        );
        assert!(PerceptualIndex::new(&[], 8).matches(&q).is_empty());
    }
}
