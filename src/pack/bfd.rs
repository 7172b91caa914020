//! Offline best-fit-decreasing over two limits (tokens and tiles) in O(n log L).
//!
//! One dimension is "primary". Items go in a decreasing size order (equal keys: larger primary,
//! then larger secondary size first; equal sizes: lower index first).
//! Each goes into the open bin with the least primary room that still holds it in BOTH
//! dimensions; among bins with that same primary room, the one with the least secondary room that
//! fits. A segment tree indexed by remaining primary capacity answers that: each leaf holds the
//! bins with that much room, grouped by secondary room, and each node keeps the largest
//! secondary room below it, so the descent skips bins that have primary room but no secondary
//! room. [`pack`] runs a few (primary, order) candidates and two pack-by-pack ones (a greedy fill,
//! [`super::fill`], and tile patterns, [`super::pattern`]), and keeps the best.

use super::max_tree::MaxTree;
use super::{Entry, Limits, PackList, rng};
use super::{fill, pattern};

/// Capacities above 2^16 share leaves (buckets); the bucket holding the query is then checked
/// bin by bin, so answers stay exact, only "tightest" becomes approximate inside a bucket. The
/// tree is allocated per plan, so this also bounds its cost for huge limits (65536 leaves).
const MAX_LEAF_BITS: u32 = 16;

/// Most (primary leaf, secondary bucket) cells: the secondary room is bucketed too when the
/// product of both capacities is larger (huge or "none" limits), with the same exact check
/// inside a bucket. 2^21 cells are 8 MiB of list heads, zeroed lazily by the allocator.
const MAX_CELLS: usize = 1 << 21;

/// Index + 1 of a bin in an intrusive list; 0 is "none", so the heads start zeroed.
type Link = u32;

/// Segment tree over remaining primary capacity; see the module docs.
///
/// Flat: the bins of one (primary room, secondary room) cell are an intrusive list (`head`, and
/// the links in each [`Bin`], next to its room: one cache miss for both); per leaf, a
/// two-level bitset marks the non-empty secondary cells, so "the tightest secondary room ≥ s in
/// this leaf" is a couple of word scans; a 16-ary [`MaxTree`] over the leaves keeps the highest
/// non-empty secondary bucket below each node. No allocation after `new`.
///
/// While cells are exact, a best fit is always the head of its cell, so the lists are stacks and
/// only `next` is kept: a placement touches the chosen bin alone, not its list neighbours (each a
/// cache miss among hundreds of thousands of bins). [`CapacityTree::keep_prev_links`] fills in
/// `prev` before a pass that removes bins from the middle of lists.
struct CapacityTree {
    shift_p: u32,
    shift_s: u32,
    /// No bin can run out of secondary room (the items' secondary sizes sum to at most its
    /// limit, e.g. tiles with no tile limit): one cell per leaf, secondary never checked.
    ignore_s: bool,
    /// Secondary buckets per leaf, and 64-bit words of the two bitset levels per leaf.
    buckets: usize,
    w0: usize,
    w1: usize,
    /// Per leaf the highest non-empty secondary bucket, -1 when none.
    max_b: MaxTree,
    bits0: Vec<u64>,
    bits1: Vec<u64>,
    head: Vec<Link>,
    /// Whether the bins' `prev` links are kept (bucketed cells, or after
    /// [`CapacityTree::keep_prev_links`]).
    prev_kept: bool,
}

/// One bin: its remaining (primary, secondary) room and its links in the list of its cell of
/// the [`CapacityTree`] (index + 1; 0 is none).
#[derive(Clone, Copy, Default)]
struct Bin {
    rem: (u32, u32),
    next: Link,
    prev: Link,
}

impl CapacityTree {
    fn new(cap: (u32, u32), ignore_s: bool) -> Self {
        let bits_p = 32 - cap.0.leading_zeros();
        let shift_p = bits_p.saturating_sub(MAX_LEAF_BITS);
        let leaves = (cap.0 >> shift_p) as usize + 1;
        let max_buckets = (MAX_CELLS / leaves).max(1);
        let mut shift_s = 0;
        while (cap.1 >> shift_s) as usize + 1 > max_buckets {
            shift_s += 1;
        }
        let buckets = if ignore_s {
            1
        } else {
            (cap.1 >> shift_s) as usize + 1
        };
        let w0 = buckets.div_ceil(64);
        let w1 = w0.div_ceil(64);
        let mut t = Self {
            shift_p,
            shift_s,
            ignore_s,
            buckets,
            w0,
            w1,
            max_b: MaxTree::new(leaves),
            bits0: vec![0; leaves * w0],
            bits1: vec![0; leaves * w1],
            head: vec![0; leaves * buckets],
            prev_kept: false,
        };
        t.prev_kept = !t.exact();
        t
    }

    fn leaf(&self, rem_p: u32) -> usize {
        (rem_p >> self.shift_p) as usize
    }

    fn bucket(&self, rem_s: u32) -> usize {
        if self.ignore_s {
            0
        } else {
            (rem_s >> self.shift_s) as usize
        }
    }

    /// Whether the cells are single room values (no bin-by-bin check needed).
    fn exact(&self) -> bool {
        self.shift_p == 0 && (self.shift_s == 0 || self.ignore_s)
    }

    /// Puts `bin` into the cell of its room `bins[bin].rem`.
    fn insert(&mut self, bin: u32, bins: &mut [Bin]) {
        let rem = bins[bin as usize].rem;
        let (l, sb) = (self.leaf(rem.0), self.bucket(rem.1));
        let cell = l * self.buckets + sb;
        let old = self.head[cell];
        bins[bin as usize].next = old;
        if self.prev_kept {
            bins[bin as usize].prev = 0;
            if old != 0 {
                bins[old as usize - 1].prev = bin + 1;
            }
        }
        if old == 0 {
            self.bits0[l * self.w0 + sb / 64] |= 1 << (sb % 64);
            self.bits1[l * self.w1 + sb / 4096] |= 1 << ((sb / 64) % 64);
            if sb as i32 > self.max_b.get(l) {
                self.set_leaf(l, sb as i32);
            }
        }
        self.head[cell] = bin + 1;
    }

    /// Takes `bin` out of the cell of its room `bins[bin].rem`. Without `prev` links, `bin`
    /// must be the head of its cell (a best fit in exact cells always is).
    fn remove(&mut self, bin: u32, bins: &mut [Bin]) {
        let Bin { rem, next, prev } = bins[bin as usize];
        let (l, sb) = (self.leaf(rem.0), self.bucket(rem.1));
        let cell = l * self.buckets + sb;
        if !self.prev_kept {
            debug_assert_eq!(self.head[cell], bin + 1, "only a head can be popped");
            self.head[cell] = next;
        } else {
            if prev != 0 {
                bins[prev as usize - 1].next = next;
            } else {
                self.head[cell] = next;
            }
            if next != 0 {
                bins[next as usize - 1].prev = prev;
            }
        }
        if self.head[cell] == 0 {
            let w = l * self.w0 + sb / 64;
            self.bits0[w] &= !(1 << (sb % 64));
            if self.bits0[w] == 0 {
                self.bits1[l * self.w1 + sb / 4096] &= !(1 << ((sb / 64) % 64));
            }
            if sb as i32 == self.max_b.get(l) {
                let top = self.highest(l).map_or(-1, |x| x as i32);
                self.set_leaf(l, top);
            }
        }
    }

    /// Fills in the `prev` links of every list and keeps them from now on, so that any bin can
    /// be removed. `in_tree` tells the bins in the lists (the others' `next` is stale). Their
    /// `prev` is still 0 from [`Bin::default`]: set for each bin's successor in bin order, these
    /// are independent writes, not a walk along the lists (a cache miss per step).
    fn keep_prev_links(&mut self, bins: &mut [Bin], in_tree: impl Fn(&Bin) -> bool) {
        if self.prev_kept {
            return;
        }
        for b in 0..bins.len() {
            let (bin, next) = (bins[b], bins[b].next);
            if next != 0 && in_tree(&bin) {
                bins[next as usize - 1].prev = b as u32 + 1;
            }
        }
        self.prev_kept = true;
    }

    /// The highest non-empty secondary bucket of leaf `l`.
    fn highest(&self, l: usize) -> Option<usize> {
        let b1 = &self.bits1[l * self.w1..(l + 1) * self.w1];
        let i1 = b1.iter().rposition(|&w| w != 0)?;
        let i0 = i1 * 64 + 63 - b1[i1].leading_zeros() as usize;
        let w = self.bits0[l * self.w0 + i0];
        Some(i0 * 64 + 63 - w.leading_zeros() as usize)
    }

    /// The lowest non-empty secondary bucket ≥ `from` of leaf `l`.
    fn next_bucket(&self, l: usize, from: usize) -> Option<usize> {
        if from >= self.buckets {
            return None;
        }
        let b0 = &self.bits0[l * self.w0..(l + 1) * self.w0];
        let i0 = from / 64;
        let w = b0[i0] & (!0u64 << (from % 64));
        if w != 0 {
            return Some(i0 * 64 + w.trailing_zeros() as usize);
        }
        // The next non-empty word after i0, from the summary level.
        let b1 = &self.bits1[l * self.w1..(l + 1) * self.w1];
        let from0 = i0 + 1;
        let mut i1 = from0 / 64;
        if i1 >= self.w1 {
            return None;
        }
        let mut w1 = b1[i1] & (!0u64 << (from0 % 64));
        loop {
            if w1 != 0 {
                let j0 = i1 * 64 + w1.trailing_zeros() as usize;
                return Some(j0 * 64 + b0[j0].trailing_zeros() as usize);
            }
            i1 += 1;
            if i1 >= self.w1 {
                return None;
            }
            w1 = b1[i1];
        }
    }

    fn set_leaf(&mut self, leaf: usize, v: i32) {
        self.max_b.set(leaf, v);
    }

    /// The leftmost leaf at or after `lo` holding a bin in secondary bucket ≥ `need`.
    fn first_from(&self, lo: usize, need: usize) -> Option<usize> {
        self.max_b.first_from(lo, need as i32)
    }

    /// In leaf `l`, the bin of the lowest secondary bucket ≥ bucket(s) with room ≥ (p, s). In
    /// exact cells that is the head of the first non-empty cell; bucketed cells are checked bin
    /// by bin.
    fn find_in_leaf(&self, l: usize, p: u32, s: u32, bins: &[Bin]) -> Option<u32> {
        let mut sb = self.bucket(s);
        while let Some(c) = self.next_bucket(l, sb) {
            let mut at = self.head[l * self.buckets + c];
            if self.exact() {
                return Some(at - 1);
            }
            while at != 0 {
                let b = at - 1;
                let r = bins[b as usize].rem;
                if r.0 >= p && r.1 >= s {
                    return Some(b);
                }
                at = bins[b as usize].next;
            }
            sb = c + 1;
        }
        None
    }

    /// The tightest open bin with primary room ≥ `p` and secondary room ≥ `s` (exactly when
    /// cells are single room values; within a bucket otherwise).
    fn best_fit(&self, p: u32, s: u32, bins: &[Bin]) -> Option<u32> {
        let l0 = self.leaf(p);
        if let Some(b) = self.find_in_leaf(l0, p, s, bins) {
            return Some(b);
        }
        let need = self.bucket(s);
        let mut lo = l0 + 1;
        loop {
            let l = self.first_from(lo, need)?;
            // A leaf's bucket may hold only bins with secondary room < s: try the next leaf.
            if let Some(b) = self.find_in_leaf(l, p, s, bins) {
                return Some(b);
            }
            lo = l + 1;
        }
    }
}

/// One fitting item: sample index and its (primary, secondary) size.
#[derive(Clone, Copy, Default)]
struct Item {
    idx: u32,
    p: u32,
    s: u32,
}

/// The bins of one BFD run over items in one order: remaining room per bin, and the bin of the
/// item at each position of that order.
#[derive(Default)]
struct Run {
    bins: Vec<Bin>,
    bin_at: Vec<u32>,
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
    /// See [`CapacityTree::ignore_s`].
    ignore_s: bool,
}

impl Dims {
    fn usable(self, rem: (u32, u32)) -> bool {
        rem.0 >= self.min.0 && rem.1 >= self.min.1
    }
}

/// Best fit of `sorted` in that order; the tree is kept for [`empty_weak_bins`]. `bin_at` and
/// `bins` are buffers to reuse (their contents are replaced); `expect_bins` is reserved up front,
/// so the bins are not copied as they grow (fresh pages cost a fault each).
///
/// `give_up`: the run stops, returning the buffers back, as soon as it holds that many bins.
/// Bins are never closed, so such a run would end with at least that many: a candidate that
/// cannot win any more need not finish.
fn run(
    sorted: &SortedItems,
    d: Dims,
    (mut bin_at, mut bins): (Vec<u32>, Vec<Bin>),
    give_up: usize,
    expect_bins: usize,
) -> Result<(Run, CapacityTree), (Vec<u32>, Vec<Bin>)> {
    let mut tree = CapacityTree::new(d.cap, d.ignore_s);
    bin_at.clear();
    bin_at.reserve(sorted.len());
    bins.clear();
    bins.reserve(expect_bins);
    if !place(sorted, 0, d, &mut bins, &mut tree, &mut bin_at, give_up) {
        return Err((bin_at, bins));
    }
    let live = bins.len();
    let r = Run {
        gone: vec![false; bins.len()],
        bins,
        bin_at,
        live,
    };
    Ok((r, tree))
}

/// Best fit of `sorted[from..]` in that order into `bins` (the usable ones in `tree`), opening
/// bins as needed; each item's bin is pushed to `bin_at`. `false`: gave up, at `give_up` bins
/// (see [`run`]).
fn place(
    sorted: &SortedItems,
    from: usize,
    d: Dims,
    bins: &mut Vec<Bin>,
    tree: &mut CapacityTree,
    bin_at: &mut Vec<u32>,
    give_up: usize,
) -> bool {
    // Where cells are exact, a bin that took an item and still holds another of the same sizes
    // is that item's best fit again: it was the tightest that fitted, and it only got tighter.
    // A run of equal items then fills it without asking the tree.
    let fill_runs = tree.exact();
    let mut k = from;
    while k < sorted.len() {
        let it = sorted.get(k);
        let b = match tree.best_fit(it.p, it.s, bins) {
            Some(b) => {
                tree.remove(b, bins);
                b
            }
            None => {
                if bins.len() + 1 >= give_up {
                    return false;
                }
                bins.push(Bin {
                    rem: d.cap,
                    ..Bin::default()
                });
                (bins.len() - 1) as u32
            }
        };
        let rem = &mut bins[b as usize].rem;
        *rem = (rem.0 - it.p, rem.1 - it.s);
        bin_at.push(b);
        k += 1;
        while fill_runs && k < sorted.len() && rem.0 >= it.p && rem.1 >= it.s {
            let next = sorted.get(k);
            if (next.p, next.s) != (it.p, it.s) {
                break;
            }
            *rem = (rem.0 - it.p, rem.1 - it.s);
            bin_at.push(b);
            k += 1;
        }
        if d.usable(*rem) {
            tree.insert(b, bins);
        }
    }
    true
}

/// Post-pass: tries the bins from the least filled (normalized primary + secondary fill) up, and
/// empties one when all its items fit, best fit, into the room other bins have left in both
/// dimensions; otherwise its items stay. A bin that received items is not tried (its member list
/// here would be stale). Stops after a run of failures: the fuller bins rarely empty.
fn empty_weak_bins(r: &mut Run, tree: &mut CapacityTree, sorted: &SortedItems, d: Dims) {
    const GIVE_UP_AFTER: usize = 256;
    let nb = r.bins.len();
    if nb < 2 {
        return;
    }
    tree.keep_prev_links(&mut r.bins, |bin| d.usable(bin.rem));
    // Members per bin (positions in `sorted`, so each bin's list is size-descending), by a
    // counting sort.
    let mut start = vec![0u32; nb + 1];
    for &b in &r.bin_at {
        start[b as usize + 1] += 1;
    }
    for i in 0..nb {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut members = vec![0u32; sorted.len()];
    for (k, &b) in r.bin_at.iter().enumerate() {
        members[fill[b as usize] as usize] = k as u32;
        fill[b as usize] += 1;
    }
    // Fill normalized by both limits, cross-multiplied: exact in a u64 (half the bytes of a u128
    // to sort) while 2·L·T < 2^64, every limit short of huge ones; above, the low bits go.
    let (cp, cs) = (u128::from(d.cap.0), u128::from(d.cap.1));
    let shift = (128 - (2 * cp * cs).leading_zeros()).saturating_sub(64);
    let weight = |b: usize| {
        let (rp, rs) = r.bins[b].rem;
        let used = (u128::from(d.cap.0 - rp), u128::from(d.cap.1 - rs));
        ((used.0 * cs + used.1 * cp) >> shift) as u64
    };
    let mut cand: Vec<(u64, u32)> = (0..nb as u32).map(|b| (weight(b as usize), b)).collect();
    // Usually only the lightest few hundred bins are tried before the run of failures ends the
    // pass: sort them in chunks taken by partial selection, not all bins at once.
    let (mut next, mut sorted_to) = (0, 0);
    let mut touched = vec![false; nb];
    let mut moves: Vec<(u32, u32, (u32, u32))> = Vec::new();
    let mut failures = 0;
    while failures < GIVE_UP_AFTER && next < nb {
        if next == sorted_to {
            let take = (nb - next).min(4 * GIVE_UP_AFTER);
            let rest = &mut cand[next..];
            if take < rest.len() {
                rest.select_nth_unstable(take);
            }
            rest[..take].sort_unstable();
            sorted_to = next + take;
        }
        let b = cand[next].1 as usize;
        next += 1;
        if touched[b] {
            continue;
        }
        let own = r.bins[b].rem;
        if d.usable(own) {
            tree.remove(b as u32, &mut r.bins);
        }
        moves.clear();
        let mut ok = true;
        for &k in &members[start[b] as usize..start[b + 1] as usize] {
            let it = sorted.get(k as usize);
            let Some(t) = tree.best_fit(it.p, it.s, &r.bins) else {
                ok = false;
                break;
            };
            let old = r.bins[t as usize].rem;
            tree.remove(t, &mut r.bins);
            let rem = (old.0 - it.p, old.1 - it.s);
            r.bins[t as usize].rem = rem;
            if d.usable(rem) {
                tree.insert(t, &mut r.bins);
            }
            moves.push((k, t, old));
        }
        if ok {
            for &(k, t, _) in &moves {
                r.bin_at[k as usize] = t;
                touched[t as usize] = true;
            }
            r.gone[b] = true;
            r.live -= 1;
            failures = 0;
        } else {
            for &(_, t, old) in moves.iter().rev() {
                if d.usable(r.bins[t as usize].rem) {
                    tree.remove(t, &mut r.bins);
                }
                r.bins[t as usize].rem = old;
                if d.usable(old) {
                    tree.insert(t, &mut r.bins);
                }
            }
            if d.usable(own) {
                tree.insert(b as u32, &mut r.bins);
            }
            failures += 1;
        }
    }
}

/// Digit width of the radix sort: 2^11 counters fit in L1.
const RADIX_BITS: u32 = 11;

/// A BFD item order: size keys, all sorted descending.
#[derive(Clone, Copy)]
enum Order {
    /// Primary size, then secondary size.
    Size,
    /// Sizes normalized by the limits, summed: p/cap_p + s/cap_s.
    Sum,
    /// The larger normalized size: max(p/cap_p, s/cap_s).
    Max,
}

impl Order {
    /// The key of `it`, exact in integers: normalized sizes cross-multiplied by the limits;
    /// `max_s` is the largest secondary size of any item, so `Size` keys stay compact.
    fn key(self, it: Item, d: Dims, max_s: u32) -> u128 {
        let (p, s) = (u128::from(it.p), u128::from(it.s));
        let (cp, cs) = (u128::from(d.cap.0), u128::from(d.cap.1));
        match self {
            Order::Size => p * (u128::from(max_s) + 1) + s,
            Order::Sum => p * cs + s * cp,
            Order::Max => (p * cs).max(s * cp),
        }
    }
}

/// Where the fields of an item sit in one packed `u64`: from the top, the sort key, the sample
/// index, the primary size, the secondary size.
#[derive(Clone, Copy, Default)]
struct PackedLayout {
    /// Bits of the secondary size, the primary size and the index.
    s_bits: u32,
    p_bits: u32,
    idx_bits: u32,
}

impl PackedLayout {
    /// The layout for these widths, if the key fits above them.
    fn new(key_bits: u32, idx_bits: u32, p_bits: u32, s_bits: u32) -> Option<Self> {
        (key_bits <= 32 && key_bits + idx_bits + p_bits + s_bits <= 64).then_some(Self {
            s_bits,
            p_bits,
            idx_bits,
        })
    }

    fn key_shift(self) -> u32 {
        self.s_bits + self.p_bits + self.idx_bits
    }

    // A field of 0 bits (a key of 0, or an index of 0 when there is one sample) can sit at bit
    // 64, where a plain shift overflows. Such a field's value is 0 and its mask is 0, so a
    // wrapping shift (by 64 mod 64 = 0) writes and reads it correctly, at no cost.
    fn pack(self, key: u32, it: Item) -> u64 {
        let at = |x: u32, shift: u32| u64::from(x).wrapping_shl(shift);
        at(key, self.key_shift())
            | at(it.idx, self.s_bits + self.p_bits)
            | at(it.p, self.s_bits)
            | u64::from(it.s)
    }

    #[inline]
    fn unpack(self, w: u64) -> Item {
        let field = |shift: u32, bits: u32| (w.wrapping_shr(shift) & ((1u64 << bits) - 1)) as u32;
        Item {
            idx: field(self.s_bits + self.p_bits, self.idx_bits),
            p: field(self.s_bits, self.p_bits),
            s: field(0, self.s_bits),
        }
    }
}

/// Items in a BFD order. Where key, index and both sizes fit in 64 bits (every plan short of
/// huge limits and billions of samples) each item is one packed word: the radix passes then
/// move half the bytes of a (key, item) pair, and the sorted words are read in place, with no
/// copy-out pass.
enum SortedItems {
    Packed(Vec<u64>, PackedLayout),
    Plain(Vec<Item>),
}

impl Default for SortedItems {
    fn default() -> Self {
        SortedItems::Plain(Vec::new())
    }
}

impl SortedItems {
    fn len(&self) -> usize {
        match self {
            SortedItems::Packed(w, _) => w.len(),
            SortedItems::Plain(v) => v.len(),
        }
    }

    #[inline]
    fn get(&self, k: usize) -> Item {
        match self {
            SortedItems::Packed(w, layout) => layout.unpack(w[k]),
            SortedItems::Plain(v) => v[k],
        }
    }

    /// The packed word buffer, emptied, for reuse.
    fn into_words(self) -> Vec<u64> {
        match self {
            SortedItems::Packed(mut w, _) => {
                w.clear();
                w
            }
            SortedItems::Plain(_) => Vec::new(),
        }
    }
}

/// Bits needed to hold `x`.
fn bits_of(x: u32) -> u32 {
    32 - x.leading_zeros()
}

/// `items` sorted by `key` descending, ties in their current order (stable). `bounds`: no key is
/// below the first or above the second (keys grow with both sizes, so the keys of the smallest
/// and largest sizes will do; no pass over the items to find them); `max`: the largest (index,
/// primary, secondary) of any item. `spare`: a word buffer to sort into; `tmp`: the radix sort's
/// second buffer.
///
/// An LSD radix sort of packed words over only the key bits that vary (two passes for the keys
/// of the mixes in BENCHMARKS.md), instead of a comparison sort; the counts of every pass are
/// taken while the words are made, so each pass reads the items once. Key ranges wider than 32
/// bits, or fields too wide to pack, fall back to a comparison sort of plain items.
fn sort_desc(
    items: &[Item],
    key: impl Fn(Item) -> u128,
    bounds: (u128, u128),
    max: (u32, u32, u32),
    mut spare: Vec<u64>,
    tmp: &mut Vec<u64>,
) -> SortedItems {
    spare.clear();
    if items.is_empty() {
        // No sizes, so no meaningful bounds (the extremes of nothing are inverted).
        return SortedItems::Packed(spare, PackedLayout::default());
    }
    let (lo, hi) = bounds;
    let key_bits = 128 - (hi - lo).leading_zeros();
    let layout = PackedLayout::new(key_bits, bits_of(max.0), bits_of(max.1), bits_of(max.2));
    let Some(layout) = layout else {
        let mut a: Vec<(u128, u32)> = items
            .iter()
            .enumerate()
            .map(|(k, &it)| (hi - key(it), k as u32))
            .collect();
        a.sort_unstable();
        return SortedItems::Plain(a.iter().map(|&(_, k)| items[k as usize]).collect());
    };
    // Passes of equal width (e.g. 2 × 10 bits for 19 varying bits), at most 3 for 32 bits.
    let passes = key_bits.div_ceil(RADIX_BITS) as usize;
    let width = if passes == 0 {
        0
    } else {
        key_bits.div_ceil(passes as u32)
    };
    let mask = (1u64 << width) - 1;
    let mut count = [[0u32; 1 << RADIX_BITS]; 3];
    let base = layout.key_shift();
    // hi - key: ascending is key-descending.
    let a = &mut spare;
    a.extend(items.iter().map(|&it| {
        let w = layout.pack((hi - key(it)) as u32, it);
        for (p, c) in count.iter_mut().enumerate().take(passes) {
            c[((w >> (base + p as u32 * width)) & mask) as usize] += 1;
        }
        w
    }));
    if passes > 0 {
        tmp.resize(a.len(), 0);
        tmp.truncate(a.len());
    }
    for (p, c) in count.iter_mut().enumerate().take(passes) {
        let shift = base + p as u32 * width;
        let mut sum = 0;
        for c in c.iter_mut() {
            let here = *c;
            *c = sum;
            sum += here;
        }
        for &w in a.iter() {
            let d = ((w >> shift) & mask) as usize;
            tmp[c[d] as usize] = w;
            c[d] += 1;
        }
        std::mem::swap(a, tmp);
    }
    SortedItems::Packed(spare, layout)
}

/// The fitting entries: (sample index, cost).
fn fitting(entries: &[Entry]) -> impl Iterator<Item = (u32, super::Cost)> + '_ {
    entries.iter().enumerate().filter_map(|(i, e)| match *e {
        Entry::Fits(c) => Some((i as u32, c)),
        _ => None,
    })
}

/// Most (tokens, tiles) pairs for [`group_by_size_dense`]: 2^20 counters are 4 MiB.
const MAX_DENSE_SIZES: u64 = 1 << 20;

/// The fitting entries in size order, tokens then tiles descending, sample order within equal
/// sizes (what [`sort_desc`] by [`Order::Size`] gives), and the groups of equal sizes: by one
/// counting sort over every possible (tokens, tiles) pair, two passes over the entries, where
/// there are at most [`MAX_DENSE_SIZES`] pairs and the items pack into words (every limit short
/// of huge ones). `max`: the largest (index, tokens, tiles). `None`: use the general sort.
fn group_by_size_dense(
    entries: &[Entry],
    max: (u32, u32, u32),
) -> Option<(SortedItems, Vec<(u32, u32)>)> {
    let (stride, rows) = (u64::from(max.2) + 1, u64::from(max.1) + 1);
    // Both can be 2^32 (sizes of u32::MAX): their product would overflow a u64.
    if stride
        .checked_mul(rows)
        .is_none_or(|pairs| pairs > MAX_DENSE_SIZES)
    {
        return None;
    }
    let layout = PackedLayout::new(0, bits_of(max.0), bits_of(max.1), bits_of(max.2))?;
    // Bucket 0 holds the largest sizes.
    let bucket = |c: super::Cost| ((max.1 - c.tokens) * (max.2 + 1) + (max.2 - c.tiles)) as usize;
    let mut next = vec![0u32; (stride * rows) as usize];
    for (_, c) in fitting(entries) {
        next[bucket(c)] += 1;
    }
    let mut groups = Vec::new();
    let mut at = 0u32;
    for n in next.iter_mut() {
        let count = *n;
        if count > 0 {
            groups.push((at, at + count));
        }
        *n = at;
        at += count;
    }
    let mut words = vec![0u64; at as usize];
    for (idx, c) in fitting(entries) {
        let b = bucket(c);
        let item = Item {
            idx,
            p: c.tokens,
            s: c.tiles,
        };
        words[next[b] as usize] = layout.pack(0, item);
        next[b] += 1;
    }
    Some((SortedItems::Packed(words, layout), groups))
}

/// An item of these (primary, secondary) sizes, for computing the key of a size.
fn item_of(size: (u32, u32)) -> Item {
    Item {
        idx: 0,
        p: size.0,
        s: size.1,
    }
}

/// The runs of items of equal (primary, secondary) sizes in `sorted`, as position ranges.
fn size_groups(sorted: &SortedItems) -> Vec<(u32, u32)> {
    let mut groups: Vec<(u32, u32)> = Vec::new();
    let mut last = None;
    for k in 0..sorted.len() {
        let it = sorted.get(k);
        match groups.last_mut() {
            Some(g) if last == Some((it.p, it.s)) => g.1 = k as u32 + 1,
            _ => groups.push((k as u32, k as u32 + 1)),
        }
        last = Some((it.p, it.s));
    }
    groups
}

/// A candidate's item order from the size-sorted `base`: groups of equal sizes by `key`
/// descending, then primary size, then secondary size, descending (sizes after the swap of
/// a tiles-primary candidate, `swap`); within a group, sample order. A group's items are
/// interchangeable, so this is a BFD order like any key sort, with a fixed tie rule; and it costs
/// a sort of the groups and one copy of the items instead of a radix sort of all items per
/// candidate. `max`: the largest (index, primary, secondary) after the swap; `spare`: a word
/// buffer to fill.
fn arrange(
    base: &SortedItems,
    groups: &[(u32, u32)],
    swap: bool,
    key: impl Fn(Item) -> u128,
    max: (u32, u32, u32),
    spare: Vec<u64>,
) -> SortedItems {
    let orient = |it: Item| {
        if swap {
            Item {
                idx: it.idx,
                p: it.s,
                s: it.p,
            }
        } else {
            it
        }
    };
    let mut order: Vec<(u128, u32, u32, u32)> = groups
        .iter()
        .enumerate()
        .map(|(g, &(a, _))| {
            let it = orient(base.get(a as usize));
            (key(it), it.p, it.s, g as u32)
        })
        .collect();
    // (key, p, s) is distinct per group, so the group index never decides.
    order.sort_unstable_by(|x, y| y.cmp(x));
    let positions = order.iter().flat_map(|&(.., g)| {
        let (a, b) = groups[g as usize];
        a as usize..b as usize
    });
    gather(base, positions, orient, max, spare)
}

/// The items of `base` at `positions`, in that order, each through `orient`; `max` and `spare`
/// as for [`arrange`].
fn gather(
    base: &SortedItems,
    positions: impl Iterator<Item = usize>,
    orient: impl Fn(Item) -> Item,
    max: (u32, u32, u32),
    mut spare: Vec<u64>,
) -> SortedItems {
    spare.clear();
    match PackedLayout::new(0, bits_of(max.0), bits_of(max.1), bits_of(max.2)) {
        Some(layout) => {
            spare.reserve(base.len());
            spare.extend(positions.map(|k| layout.pack(0, orient(base.get(k)))));
            SortedItems::Packed(spare, layout)
        }
        None => SortedItems::Plain(positions.map(|k| orient(base.get(k))).collect()),
    }
}

/// A candidate's finished run: bins, their tree, the items in run order.
type Finished = (Run, CapacityTree, SortedItems);

/// The word, bin-of-item and bin buffers of a candidate that lost, for the next one.
type Spares = (Vec<u64>, Vec<u32>, Vec<Bin>);

/// The pack-by-pack candidates: [`fill`], plain and seeded with the largest item, and
/// [`pattern`].
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ByPack {
    Fill,
    SeededFill,
    Pattern,
}

/// A pack-by-pack candidate as a finished run: its packs as bins, in the order it made them,
/// then best fit (tokens primary, size order) of what it left, with a tree over the bins' rooms
/// for [`empty_weak_bins`]; `sorted` lists the items pack by pack, then the rest. Tokens are
/// primary. `Err` gives the buffers back when it cannot win (`give_up`, as for [`run`]) or does
/// not apply.
fn run_by_pack(
    kind: ByPack,
    base: &SortedItems,
    groups: &[(u32, u32)],
    d: Dims,
    max: (u32, u32, u32),
    give_up: usize,
    (spare, mut bin_at, mut bins): Spares,
) -> Result<Finished, Spares> {
    let sizes: Vec<(u32, u32, u32)> = groups
        .iter()
        .map(|&(a, b)| {
            let it = base.get(a as usize);
            (it.p, it.s, b - a)
        })
        .collect();
    let made = match kind {
        ByPack::Fill => fill::fill(&sizes, d.cap, give_up, false).map(|f| (f, false)),
        ByPack::SeededFill => fill::fill(&sizes, d.cap, give_up, true).map(|f| (f, false)),
        ByPack::Pattern => pattern::pattern_fill(&sizes, d.cap, give_up).map(|f| (f, true)),
    };
    let Some((filled, has_rest)) = made else {
        return Err((spare, bin_at, bins));
    };
    // Each group's items are taken in base (sample) order; what the packs did not take follows,
    // group by group in base order.
    let mut cursor: Vec<u32> = groups.iter().map(|g| g.0).collect();
    let mut positions: Vec<u32> = filled
        .picks
        .iter()
        .map(|&g| {
            let k = cursor[g as usize];
            cursor[g as usize] += 1;
            k
        })
        .collect();
    if has_rest {
        for (&(_, end), &from) in groups.iter().zip(&cursor) {
            positions.extend(from..end);
        }
    }
    let sorted = gather(
        base,
        positions.iter().map(|&k| k as usize),
        |it| it,
        max,
        spare,
    );
    drop(positions);
    bins.clear();
    bins.reserve(filled.ends.len() + filled.ends.len() / 64);
    bin_at.clear();
    bin_at.reserve(sorted.len());
    let mut start = 0usize;
    for &end in &filled.ends {
        let b = bins.len() as u32;
        let mut rem = d.cap;
        for k in start..end as usize {
            let it = sorted.get(k);
            rem = (rem.0 - it.p, rem.1 - it.s);
            bin_at.push(b);
        }
        bins.push(Bin {
            rem,
            ..Bin::default()
        });
        start = end as usize;
    }
    let mut tree = CapacityTree::new(d.cap, d.ignore_s);
    for b in 0..bins.len() as u32 {
        if d.usable(bins[b as usize].rem) {
            tree.insert(b, &mut bins);
        }
    }
    if !place(
        &sorted,
        start,
        d,
        &mut bins,
        &mut tree,
        &mut bin_at,
        give_up,
    ) {
        return Err((sorted.into_words(), bin_at, bins));
    }
    let live = bins.len();
    let r = Run {
        gone: vec![false; live],
        bins,
        bin_at,
        live,
    };
    Ok((r, tree, sorted))
}

/// Whether the pool fills both limits about equally: the larger of Σtokens/L and Σtiles/T at
/// most 1.25 times the smaller. Only then do the [`fill`] candidates run. Their edge is packs that
/// end near both limits; where one dimension's total is well over the other's, nearly every pack
/// is full in that one, the BFD orders fill it tightly, and on every such BENCHMARKS row (four,
/// 1.47–1.64 apart) the fill lost, while it won on three of the four rows within 1.10 (before
/// the seeded fill existed; that one won a fourth); skipping them there saves their time.
fn balanced_limits(sum_tok: u128, sum_til: u128, limits: Limits) -> bool {
    let tok = sum_tok * u128::from(limits.tiles);
    let til = sum_til * u128::from(limits.tokens);
    4 * tok.max(til) <= 5 * tok.min(til)
}

/// Whether the tile-bearing items are small against the tile limit: their mean tile count at
/// most a third of T (three or more per pack). Only then does the [`pattern`] candidate run. With
/// two to a pack (InternVL tiles under T = 16), a pattern is a pair and the tokens decide the
/// pairing more than the tile totals do; there it lost on both BENCHMARKS rows (by 1.7% and
/// 2.0%), and won every row with three or more (T ≥ 24).
fn many_per_pack(sum_til: u128, with_tiles: u128, limits: Limits) -> bool {
    with_tiles > 0 && 3 * sum_til <= with_tiles * u128::from(limits.tiles)
}

/// One candidate: a BFD run, with which dimension is primary (best fit is tightest in it first)
/// and the item order, or a pack-by-pack candidate ([`fill`] or [`pattern`], tokens primary).
#[derive(Clone, Copy)]
enum Candidate {
    Bfd { tiles_primary: bool, order: Order },
    ByPack(ByPack),
}

/// Packs the fitting entries by BFD and gives each `Alone` entry a pack of its own (made after the
/// BFD packs, in index order), then shuffles that creation order by `seed` ([`assemble`]).
///
/// With both limits set, it runs up to six candidates, in this order, and keeps the one with
/// the fewest packs (ties: the earlier), then runs [`empty_weak_bins`] on it: the tile patterns
/// of [`pattern::pattern_fill`] (where tiles are the fuller dimension and [`many_per_pack`];
/// under 64 tile counts and T ≤ 255); the pack-by-pack [`fill::fill`], seeded with the largest
/// item, then plain (where they apply: under 64 tile counts, and [`balanced_limits`]); BFD by
/// normalized sum and by normalized max, primary being the dimension the pool fills more of;
/// and plain BFD by tokens (tokens descending, tokens primary), so Bfd never uses more packs
/// than that classic packer (TRL's). With one limit only the last runs. A candidate at the lower bound max(⌈Σtokens/L⌉, ⌈Σtiles/T⌉) ends the search:
/// none can do better. On the BENCHMARKS mixes the winner's post-pass never changed its count, and
/// the post-pass of a losing candidate never made it win, so only the winner gets one.
///
/// Speed (issue 3): the items are sorted once, by size ([`group_by_size_dense`], a counting
/// sort; a radix sort for huge sizes), and each candidate orders the groups of equal sizes
/// ([`arrange`]); a run places a group's items into one bin while they fit
/// (exactly what the tree would choose); a candidate stops as soon as it holds as many bins as
/// the best so far (it could not win); buffers are reused across candidates. Only the first
/// decides plans (the tie rule among equal keys); the others change neither the winner nor its
/// bins.
///
/// Returns the packs and the pack of each entry (`u32::MAX`: none).
pub(super) fn pack(entries: &[Entry], limits: Limits, seed: u64) -> (PackList, Vec<u32>) {
    // Sums and the smallest and largest sizes, both dimensions, in one pass for all candidates.
    let (mut sum_tok, mut sum_til) = (0u128, 0u128);
    let (mut min, mut max) = ((u32::MAX, u32::MAX), (0, 0));
    let mut with_tiles = 0u128;
    for c in fitting(entries).map(|(_, c)| c) {
        sum_tok += u128::from(c.tokens);
        sum_til += u128::from(c.tiles);
        with_tiles += u128::from(c.tiles > 0);
        min = (min.0.min(c.tokens), min.1.min(c.tiles));
        max = (max.0.max(c.tokens), max.1.max(c.tiles));
    }
    // Σtiles/T > Σtokens/L, cross-multiplied to stay exact.
    let tiles_fuller = sum_til * u128::from(limits.tokens) > sum_tok * u128::from(limits.tiles);
    let mut cands = Vec::new();
    let both_limits = !limits.unlimited_tiles() && limits.tokens != u32::MAX;
    if both_limits {
        if tiles_fuller && many_per_pack(sum_til, with_tiles, limits) {
            cands.push(Candidate::ByPack(ByPack::Pattern));
        }
        // Where they run, the fills go first: they win most such pools, and the BFD runs
        // after a winner give up early (at its pack count) instead of finishing.
        if balanced_limits(sum_tok, sum_til, limits) {
            cands.push(Candidate::ByPack(ByPack::SeededFill));
            cands.push(Candidate::ByPack(ByPack::Fill));
        }
        for order in [Order::Sum, Order::Max] {
            cands.push(Candidate::Bfd {
                tiles_primary: tiles_fuller,
                order,
            });
        }
    }
    cands.push(Candidate::Bfd {
        tiles_primary: false,
        order: Order::Size,
    });
    let dims_of = |tiles_primary: bool| {
        let flip = |x: (u32, u32)| if tiles_primary { (x.1, x.0) } else { x };
        let (cap, min, max) = (flip((limits.tokens, limits.tiles)), flip(min), flip(max));
        let sum_s = if tiles_primary { sum_tok } else { sum_til };
        let ignore_s = sum_s <= u128::from(cap.1);
        (Dims { cap, min, ignore_s }, min, max)
    };
    let max_idx = entries.len().saturating_sub(1) as u32;
    // Sorted once, by size (tokens, then tiles, descending); each candidate then only orders
    // the groups of equal sizes (tens of thousands) and copies them out in that order.
    let (mut base, groups) = match group_by_size_dense(entries, (max_idx, max.0, max.1)) {
        Some(grouped) => grouped,
        None => {
            let fit: Vec<Item> = fitting(entries)
                .map(|(idx, c)| Item {
                    idx,
                    p: c.tokens,
                    s: c.tiles,
                })
                .collect();
            let (d, min, max) = dims_of(false);
            let key = |it: Item| Order::Size.key(it, d, max.1);
            let bounds = (key(item_of(min)), key(item_of(max)));
            let max = (max_idx, max.0, max.1);
            let base = sort_desc(&fit, key, bounds, max, Vec::new(), &mut Vec::new());
            let groups = size_groups(&base);
            (base, groups)
        }
    };
    // The buffers of the last losing candidate, reused by the next one.
    let mut spares: Spares = Default::default();
    let mut best: Option<(Run, CapacityTree, SortedItems, Dims, bool)> = None;
    let n_cands = cands.len();
    let bound = super::bound_of_sums(sum_tok, sum_til, limits);
    for (k, c) in cands.into_iter().enumerate() {
        if best.as_ref().is_some_and(|b| b.0.live as u128 <= bound) {
            // At the lower bound: no candidate can have fewer packs.
            break;
        }
        // A later candidate wins only with fewer bins than the best so far.
        let give_up = best.as_ref().map_or(usize::MAX, |b| b.0.live);
        // The first candidate's bins: the bound and some slack (the BENCHMARKS rows end 0–6%
        // over it; more only grows the vector once).
        let expect_bins = give_up
            .min(base.len())
            .min(bound as usize + bound as usize / 16 + 64);
        let (spare, spare_bin_at, spare_bins) = std::mem::take(&mut spares);
        let (ran, d, tiles_primary) = match c {
            Candidate::ByPack(kind) => {
                let (d, _, max) = dims_of(false);
                let max = (max_idx, max.0, max.1);
                let spares = (spare, spare_bin_at, spare_bins);
                let ran = run_by_pack(kind, &base, &groups, d, max, give_up, spares);
                (ran, d, false)
            }
            Candidate::Bfd {
                tiles_primary,
                order,
            } => {
                let (d, _, max) = dims_of(tiles_primary);
                let key = |it: Item| order.key(it, d, max.1);
                let max = (max_idx, max.0, max.1);
                // Plain BFD by tokens is the base order itself (its key is the base's, unique
                // per size): the last candidate takes it instead of a copy.
                let sorted = if k + 1 == n_cands && matches!(order, Order::Size) && !tiles_primary {
                    std::mem::take(&mut base)
                } else {
                    arrange(&base, &groups, tiles_primary, key, max, spare)
                };
                let ran = match run(&sorted, d, (spare_bin_at, spare_bins), give_up, expect_bins) {
                    Ok((r, tree)) => Ok((r, tree, sorted)),
                    Err((bin_at, bins)) => Err((sorted.into_words(), bin_at, bins)),
                };
                (ran, d, tiles_primary)
            }
        };
        match ran {
            Ok((r, tree, sorted)) if r.live < give_up => {
                if let Some((old, _, old_sorted, _, _)) =
                    best.replace((r, tree, sorted, d, tiles_primary))
                {
                    spares = (old_sorted.into_words(), old.bin_at, old.bins);
                }
            }
            Ok((r, _, sorted)) => spares = (sorted.into_words(), r.bin_at, r.bins),
            Err(back) => spares = back,
        }
    }
    drop((spares, base, groups));
    let Some((mut r, mut tree, sorted, d, tiles_primary)) = best else {
        let none = SortedItems::default();
        return assemble(entries, seed, &none, &Run::default(), (0, 0), false);
    };
    empty_weak_bins(&mut r, &mut tree, &sorted, d);
    drop(tree);
    assemble(entries, seed, &sorted, &r, d.cap, tiles_primary)
}

/// The plan's packs in their final order: creation order (the bins of `r` left after the
/// post-pass, in bin order, then a pack of its own for each `Alone` entry, in index order)
/// shuffled by `seed`, so a trainer does not see them sorted by size.
///
/// Each pack is made at its final position, from member lists grouped by that position: the
/// lists are read in order, and the packs' buffers lie in memory in the order the plan is read
/// and freed. Made in creation order and shuffled afterwards, every later pass over the plan, and
/// freeing it, jumped around the heap (a cache miss per pack, a large part of the packer's time
/// at a million samples).
fn assemble(
    entries: &[Entry],
    seed: u64,
    sorted: &SortedItems,
    r: &Run,
    cap: (u32, u32),
    tiles_primary: bool,
) -> (PackList, Vec<u32>) {
    let live: Vec<u32> = (0..r.bins.len() as u32)
        .filter(|&b| !r.gone[b as usize])
        .collect();
    let alone = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Entry::Alone(_)))
        .map(|(i, _)| i as u32);
    // Creation index -> sample of each alone pack.
    let alone: Vec<u32> = alone.collect();
    let count = live.len() + alone.len();
    // The same swaps on creation indices as on the packs themselves.
    let mut order: Vec<u32> = (0..count as u32).collect();
    rng::shuffle(&mut order, seed);
    let mut pos_of = vec![0u32; count];
    for (pos, &k) in order.iter().enumerate() {
        pos_of[k as usize] = pos as u32;
    }
    // Per final position, the pack's (tokens, tiles, oversize); per bin and per sample, the final
    // position of its pack (u32::MAX: dropped). Walked in creation order: scattered writes, not
    // scattered reads, which would each wait for a cache miss.
    let mut cost_at = vec![(0u32, 0u32, false); count];
    let mut pos_of_bin = vec![u32::MAX; r.bins.len()];
    let mut pack_of = vec![u32::MAX; entries.len()];
    for (&b, &pos) in live.iter().zip(&pos_of) {
        pos_of_bin[b as usize] = pos;
        let rem = r.bins[b as usize].rem;
        let used = (cap.0 - rem.0, cap.1 - rem.1);
        let (tokens, tiles) = if tiles_primary {
            (used.1, used.0)
        } else {
            used
        };
        cost_at[pos as usize] = (tokens, tiles, false);
    }
    for (&i, &pos) in alone.iter().zip(&pos_of[live.len()..]) {
        pack_of[i as usize] = pos;
        if let Entry::Alone(c) = entries[i as usize] {
            cost_at[pos as usize] = (c.tokens, c.tiles, true);
        }
    }
    for (k, &b) in r.bin_at.iter().enumerate() {
        pack_of[sorted.get(k).idx as usize] = pos_of_bin[b as usize];
    }
    // The samples grouped by final position with a counting sort over sample indices, so each
    // group comes out ascending.
    let mut start = vec![0u32; count + 1];
    for &p in &pack_of {
        if p != u32::MAX {
            start[p as usize + 1] += 1;
        }
    }
    for i in 0..count {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut members = vec![0u32; start[count] as usize];
    for (i, &p) in pack_of.iter().enumerate() {
        if p != u32::MAX {
            members[fill[p as usize] as usize] = i as u32;
            fill[p as usize] += 1;
        }
    }
    (PackList::from_parts(cost_at, start, members), pack_of)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::Cost;

    /// [`super::pack`] with the shuffle undone: packs in creation order.
    fn pack(entries: &[Entry], limits: Limits) -> PackList {
        const SEED: u64 = 9;
        let (shuffled, _) = super::pack(entries, limits, SEED);
        let mut order: Vec<usize> = (0..shuffled.len()).collect();
        rng::shuffle(&mut order, SEED);
        // Creation index -> position in the shuffled plan.
        let mut at = vec![0; shuffled.len()];
        for (pos, &k) in order.iter().enumerate() {
            at[k] = pos;
        }
        let mut created = PackList::new();
        for &pos in &at {
            let p = shuffled.get(pos).expect("a position of the plan");
            let cost = (u64::from(p.tokens), u64::from(p.tiles));
            created.push(p.samples, cost, p.oversize);
        }
        created
    }

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
        let members: Vec<&[u32]> = packs.iter().map(|p| p.samples).collect();
        assert_eq!(members, vec![&[0][..], &[1, 2][..]]);
        let second = packs.get(1).unwrap();
        assert_eq!((second.tokens, second.tiles), (16, 3));
    }

    #[test]
    fn best_fit_takes_the_tightest_bin() {
        // 6 and 4 open two bins (room 4 and 6); 4 goes into the one with room 4.
        let entries = fits(&[(6, 0), (7, 0), (4, 0)]);
        let packs = pack(&entries, Limits::tokens_only(10));
        let members: Vec<&[u32]> = packs.iter().map(|p| p.samples).collect();
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
                .any(|p| p.samples == [1, 2, 3] && p.tokens == limits.tokens)
        );
    }

    #[test]
    fn sizes_of_u32_max_in_both_dimensions_pack() {
        // Found by the packer fuzz target: the count of (tokens, tiles) pairs, 2^32 · 2^32,
        // overflowed a u64 before the dense grouping was refused.
        let limits = Limits {
            tokens: u32::MAX,
            tiles: u32::MAX - 1,
        };
        let entries = fits(&[(u32::MAX, 1), (1, u32::MAX - 1), (0, 0)]);
        let packs = pack(&entries, limits);
        let mut placed: Vec<u32> = packs.iter().flat_map(|p| p.samples.to_vec()).collect();
        placed.sort_unstable();
        assert_eq!(placed, [0, 1, 2]);
        assert_eq!(packs.len(), 2, "{packs:?}");
    }

    #[test]
    fn tree_first_from_finds_leftmost_feasible_leaf() {
        let mut t = CapacityTree::new((15, 15), false);
        let mut bins: Vec<Bin> = [(3, 1), (5, 9), (12, 4)]
            .map(|rem| Bin {
                rem,
                ..Bin::default()
            })
            .to_vec();
        for b in 0..3 {
            t.insert(b, &mut bins);
        }
        assert_eq!(t.first_from(0, 0), Some(3));
        assert_eq!(t.first_from(4, 0), Some(5));
        assert_eq!(t.first_from(0, 2), Some(5));
        assert_eq!(t.first_from(6, 5), None);
        assert_eq!(t.first_from(6, 4), Some(12));
        t.remove(1, &mut bins);
        assert_eq!(t.first_from(0, 2), Some(12));
    }

    /// Plain BFD by tokens, O(n · bins): tokens descending (then tiles, then index), each item
    /// into the bin with the least token room, then least tile room, that holds it in both.
    fn naive_bfd_by_tokens(c: &[(u32, u32)], limits: Limits) -> usize {
        let mut order: Vec<usize> = (0..c.len()).collect();
        order.sort_by_key(|&i| (!c[i].0, !c[i].1, i));
        let mut rooms: Vec<(u32, u32)> = Vec::new();
        for i in order {
            let (t, g) = c[i];
            let best = (0..rooms.len())
                .filter(|&b| rooms[b].0 >= t && rooms[b].1 >= g)
                .min_by_key(|&b| rooms[b]);
            match best {
                Some(b) => rooms[b] = (rooms[b].0 - t, rooms[b].1 - g),
                None => rooms.push((limits.tokens - t, limits.tiles - g)),
            }
        }
        rooms.len()
    }

    fn random_case(r: &mut crate::pack::rng::SplitMix64) -> (Vec<(u32, u32)>, Limits) {
        let limits = Limits {
            tokens: 20 + r.below(200) as u32,
            tiles: if r.below(4) == 0 {
                u32::MAX
            } else {
                1 + r.below(24) as u32
            },
        };
        let n = r.below(400);
        let c = (0..n)
            .map(|_| {
                let t = r.below(limits.tokens as usize + 1) as u32;
                let g = r.below(limits.tiles.min(24) as usize + 1) as u32;
                (t >> r.below(3), g >> r.below(3))
            })
            .collect();
        (c, limits)
    }

    /// Items numbered in order, tokens primary.
    fn items_of(c: &[(u32, u32)]) -> Vec<Item> {
        let item = |(i, &(p, s)): (usize, _)| Item {
            idx: i as u32,
            p,
            s,
        };
        c.iter().enumerate().map(item).collect()
    }

    #[test]
    fn tree_gives_the_exact_best_fit() {
        // The tokens-primary run counts exactly the bins of the naive BFD: bins with equal rooms
        // are interchangeable, so any wrong pick by the tree would show in some count.
        let mut r = crate::pack::rng::SplitMix64::new(11);
        for _ in 0..300 {
            let (c, limits) = random_case(&mut r);
            let items = items_of(&c);
            let sum_s: u64 = c.iter().map(|x| u64::from(x.1)).sum();
            let d = Dims {
                cap: (limits.tokens, limits.tiles),
                min: (
                    c.iter().map(|x| x.0).min().unwrap_or(0),
                    c.iter().map(|x| x.1).min().unwrap_or(0),
                ),
                ignore_s: sum_s <= u64::from(limits.tiles),
            };
            let max_s = c.iter().map(|x| x.1).max().unwrap_or(0);
            let key = |it| Order::Size.key(it, d, max_s);
            let hi = c.iter().map(|&(p, s)| key(Item { idx: 0, p, s })).max();
            let lo = c.iter().map(|&(p, s)| key(Item { idx: 0, p, s })).min();
            let max_p = c.iter().map(|x| x.0).max().unwrap_or(0);
            let sorted = sort_desc(
                &items,
                key,
                (lo.unwrap_or(0), hi.unwrap_or(0)),
                (c.len() as u32, max_p, max_s),
                Vec::new(),
                &mut Vec::new(),
            );
            let Ok((run, _)) = run(&sorted, d, Default::default(), usize::MAX, 0) else {
                panic!("no limit to give up at");
            };
            assert_eq!(
                run.live,
                naive_bfd_by_tokens(&c, limits),
                "{limits:?} {c:?}"
            );
        }
    }

    #[test]
    fn packed_layout_fields_may_sit_at_bit_64() {
        // Found by the packer fuzz target: index, primary and secondary of 32, 16 and 16 bits
        // leave no room for a key, and a key of 0 must not shift by 64.
        let layout = PackedLayout::new(0, 32, 16, 16).expect("fits 64 bits");
        let it = Item {
            idx: u32::MAX,
            p: 0xffff,
            s: 0x8001,
        };
        let back = layout.unpack(layout.pack(0, it));
        assert_eq!((back.idx, back.p, back.s), (it.idx, it.p, it.s));
        // Then one sample (index bits 0) with 32-bit sizes: the index sits at bit 64.
        let layout = PackedLayout::new(0, 0, 32, 32).expect("fits 64 bits");
        let it = Item {
            idx: 0,
            p: u32::MAX,
            s: 7,
        };
        let back = layout.unpack(layout.pack(0, it));
        assert_eq!((back.idx, back.p, back.s), (it.idx, it.p, it.s));
    }

    #[test]
    fn packed_radix_order_equals_the_comparison_sort() {
        // Same key-descending, index-ascending order whether the items are sorted as packed
        // words or (fields claimed too wide to pack) by the comparison-sort fallback; and each
        // candidate's order from the size groups (`arrange`, both representations) equals a
        // plain stable sort by (key, primary, secondary) descending.
        let mut r = crate::pack::rng::SplitMix64::new(3);
        for case in 0..200 {
            let (c, limits) = random_case(&mut r);
            let swap = case % 2 == 1;
            let c_oriented: Vec<(u32, u32)> = if swap {
                c.iter().map(|&(p, s)| (s, p)).collect()
            } else {
                c.clone()
            };
            let items = items_of(&c_oriented);
            let cap = if swap {
                (limits.tiles.min(1 << 20), limits.tokens)
            } else {
                (limits.tokens, limits.tiles.min(1 << 20))
            };
            let max = (
                c_oriented.iter().map(|x| x.0).max().unwrap_or(0),
                c_oriented.iter().map(|x| x.1).max().unwrap_or(0),
            );
            let d = Dims {
                cap,
                min: (0, 0),
                ignore_s: false,
            };
            let listed = |s: &SortedItems| -> Vec<(u32, u32, u32)> {
                (0..s.len())
                    .map(|k| s.get(k))
                    .map(|it| (it.idx, it.p, it.s))
                    .collect()
            };
            // The size-sorted base of `arrange`, always in the unswapped orientation.
            let base_items = items_of(&c);
            let base_max = (
                c.iter().map(|x| x.0).max().unwrap_or(0),
                c.iter().map(|x| x.1).max().unwrap_or(0),
            );
            let base_key = |it| Order::Size.key(it, d, base_max.1);
            let base = sort_desc(
                &base_items,
                base_key,
                (base_key(Item::default()), base_key(item_of(base_max))),
                (c.len() as u32, base_max.0, base_max.1),
                Vec::new(),
                &mut Vec::new(),
            );
            let groups = size_groups(&base);
            // The counting sort gives the same base and groups (these small sizes are dense).
            let dense = group_by_size_dense(&fits(&c), (c.len() as u32, base_max.0, base_max.1));
            let Some((dense_base, dense_groups)) = dense else {
                panic!("sizes up to {base_max:?} are dense");
            };
            assert_eq!(listed(&dense_base), listed(&base), "{limits:?}");
            assert_eq!(dense_groups, groups, "{limits:?}");
            for order in [Order::Size, Order::Sum, Order::Max] {
                let key = |it| order.key(it, d, max.1);
                let bounds = (key(Item::default()), key(item_of(max)));
                let sort = |widths| {
                    let s = sort_desc(&items, key, bounds, widths, Vec::new(), &mut Vec::new());
                    (matches!(s, SortedItems::Packed(..)), listed(&s))
                };
                let (packed, fast) = sort((c.len() as u32, max.0, max.1));
                let (plain, slow) = sort((u32::MAX, u32::MAX, u32::MAX));
                assert!(packed && (c.is_empty() || !plain));
                assert_eq!(fast, slow, "{limits:?} swap {swap}");
                assert_eq!(fast.len(), c.len());

                let mut want: Vec<Item> = items.clone();
                want.sort_by_key(|&it| std::cmp::Reverse((key(it), it.p, it.s)));
                let want: Vec<(u32, u32, u32)> =
                    want.iter().map(|it| (it.idx, it.p, it.s)).collect();
                for widths in [
                    (c.len() as u32, max.0, max.1),
                    (u32::MAX, u32::MAX, u32::MAX),
                ] {
                    let got = arrange(&base, &groups, swap, key, widths, Vec::new());
                    assert_eq!(listed(&got), want, "{limits:?} swap {swap}");
                }
            }
        }
    }

    #[test]
    fn never_more_packs_than_plain_bfd_by_tokens() {
        let mut r = crate::pack::rng::SplitMix64::new(5);
        for _ in 0..300 {
            let (c, limits) = random_case(&mut r);
            let packs = pack(&fits(&c), limits);
            assert!(
                packs.len() <= naive_bfd_by_tokens(&c, limits),
                "{limits:?} {c:?}"
            );
        }
    }
}
