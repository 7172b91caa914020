//! Which token counts are present per tile count: a two-level bitset per tile count, for the
//! pack-by-pack candidates of [`super::bfd`] ([`super::fill`], [`super::pattern`]), which ask
//! "the largest token count ≤ x with items left, for this tile count" once per step.

/// Token counts present per tile count: a two-level bitset each.
pub(super) struct Presence {
    /// 64-bit words of the lower level per tile count, and of the upper level.
    w0: usize,
    w1: usize,
    bits0: Vec<u64>,
    bits1: Vec<u64>,
}

impl Presence {
    pub(super) fn new(classes: usize, max_p: u32) -> Self {
        let w0 = (max_p as usize) / 64 + 1;
        let w1 = w0.div_ceil(64);
        Self {
            w0,
            w1,
            bits0: vec![0; classes * w0],
            bits1: vec![0; classes * w1],
        }
    }

    pub(super) fn set(&mut self, s: usize, p: u32) {
        let w = p as usize / 64;
        self.bits0[s * self.w0 + w] |= 1 << (p % 64);
        self.bits1[s * self.w1 + w / 64] |= 1 << (w % 64);
    }

    pub(super) fn clear(&mut self, s: usize, p: u32) {
        let w = p as usize / 64;
        let word = &mut self.bits0[s * self.w0 + w];
        *word &= !(1 << (p % 64));
        if *word == 0 {
            self.bits1[s * self.w1 + w / 64] &= !(1 << (w % 64));
        }
    }

    #[inline]
    pub(super) fn has(&self, s: usize, p: u32) -> bool {
        let w = p as usize / 64;
        w < self.w0 && self.bits0[s * self.w0 + w] & (1 << (p % 64)) != 0
    }

    /// The largest token count ≤ `x` present for tile count `s`.
    #[inline]
    pub(super) fn pred(&self, s: usize, x: u32) -> Option<u32> {
        let (l0, l1) = (
            &self.bits0[s * self.w0..(s + 1) * self.w0],
            &self.bits1[s * self.w1..(s + 1) * self.w1],
        );
        let x = (x as usize).min(self.w0 * 64 - 1);
        let w = x / 64;
        let here = l0[w] & (u64::MAX >> (63 - x % 64));
        if here != 0 {
            return Some((w * 64 + 63 - here.leading_zeros() as usize) as u32);
        }
        // The highest non-empty lower word below `w`, from the upper level.
        let (mut u, mut mask) = (w / 64, (1u64 << (w % 64)) - 1);
        loop {
            let upper = l1[u] & mask;
            if upper != 0 {
                let w = u * 64 + 63 - upper.leading_zeros() as usize;
                return Some((w * 64 + 63 - l0[w].leading_zeros() as usize) as u32);
            }
            if u == 0 {
                return None;
            }
            u -= 1;
            mask = u64::MAX;
        }
    }

    /// The smallest token count present for tile count `s`.
    pub(super) fn min(&self, s: usize) -> Option<u32> {
        self.succ(s, 0)
    }

    /// The smallest token count ≥ `x` present for tile count `s`.
    pub(super) fn succ(&self, s: usize, x: u32) -> Option<u32> {
        let (l0, l1) = (
            &self.bits0[s * self.w0..(s + 1) * self.w0],
            &self.bits1[s * self.w1..(s + 1) * self.w1],
        );
        let w = x as usize / 64;
        if w >= self.w0 {
            return None;
        }
        let here = l0[w] & (u64::MAX << (x % 64));
        if here != 0 {
            return Some((w * 64 + here.trailing_zeros() as usize) as u32);
        }
        // The lowest non-empty lower word above `w`, from the upper level.
        let (mut u, mut mask) = (w / 64, u64::MAX.checked_shl(w as u32 % 64 + 1).unwrap_or(0));
        loop {
            let upper = l1[u] & mask;
            if upper != 0 {
                let w = u * 64 + upper.trailing_zeros() as usize;
                return Some((w * 64 + l0[w].trailing_zeros() as usize) as u32);
            }
            u += 1;
            if u >= self.w1 {
                return None;
            }
            mask = u64::MAX;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::rng::SplitMix64;

    #[test]
    fn queries_equal_a_scan_of_the_present_counts() {
        let mut r = SplitMix64::new(11);
        for case in 0..200 {
            let max_p = r.below(20_000) as u32;
            let classes = 1 + r.below(4);
            let mut p = Presence::new(classes, max_p);
            let mut present = vec![vec![false; max_p as usize + 1]; classes];
            for _ in 0..r.below(300) {
                let (s, x) = (r.below(classes), r.below(max_p as usize + 1));
                if r.below(3) == 0 {
                    p.clear(s, x as u32);
                    present[s][x] = false;
                } else {
                    p.set(s, x as u32);
                    present[s][x] = true;
                }
            }
            for (s, present) in present.iter().enumerate() {
                let want_min = present.iter().position(|&b| b).map(|x| x as u32);
                assert_eq!(p.min(s), want_min, "case {case} class {s}");
                for _ in 0..50 {
                    let x = r.below(max_p as usize + 100) as u32;
                    let want = (0..=x.min(max_p)).rev().find(|&q| present[q as usize]);
                    assert_eq!(p.pred(s, x), want, "case {case} class {s} x {x}");
                    let up = (x..=max_p).find(|&q| present[q as usize]);
                    assert_eq!(p.succ(s, x), up, "case {case} class {s} x {x}");
                    assert_eq!(p.has(s, x), x <= max_p && present[x as usize]);
                }
            }
        }
    }
}
