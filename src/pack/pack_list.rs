//! The packs of a plan, stored flat: every pack's member list lies in one shared array.
//!
//! A million-sample plan has hundreds of thousands of packs. With a `Vec` per pack, making them
//! (one allocation and copy each) and freeing them was a quarter of Bfd's time (issue 3's
//! ≥ 5 M samples/s goal); here a plan is three allocations however many packs it holds. Packs are
//! read through [`Pack`], a borrowed view.

/// One packed sequence, as a view into a [`PackList`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Pack<'a> {
    /// Sample indices, ascending.
    pub samples: &'a [u32],
    /// Σ tokens of the members (truncated cost for truncated samples).
    pub tokens: u32,
    /// Σ tiles of the members.
    pub tiles: u32,
    /// A single sample over a limit ([`super::OversizePolicy::Alone`]); every other pack
    /// respects both limits.
    pub oversize: bool,
}

/// A pack's sums, stored apart from its members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Sums {
    tokens: u32,
    tiles: u32,
    oversize: bool,
}

/// Packs in order: pack `i`'s members are `members[start[i]..start[i + 1]]`, ascending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackList {
    sums: Vec<Sums>,
    /// One more entry than packs; `start[0] == 0`.
    start: Vec<u32>,
    members: Vec<u32>,
}

impl Default for PackList {
    fn default() -> Self {
        Self {
            sums: Vec::new(),
            start: vec![0],
            members: Vec::new(),
        }
    }
}

/// Saturates a sum to u32: sums of packs within the limits are bounded by the u32 limits, and an
/// oversize pack holds one sample, whose cost is u32.
fn sat(x: u64) -> u32 {
    u32::try_from(x).unwrap_or(u32::MAX)
}

impl PackList {
    /// No packs.
    pub fn new() -> Self {
        Self::default()
    }

    /// From the flat arrays, as a counting sort leaves them: `start` has one entry more than
    /// `sums` (tokens, tiles, oversize) and ends at `members.len()`; each pack's members are
    /// already ascending. Checked in debug builds.
    pub(super) fn from_parts(
        sums: Vec<(u32, u32, bool)>,
        start: Vec<u32>,
        members: Vec<u32>,
    ) -> Self {
        debug_assert_eq!(start.len(), sums.len() + 1);
        debug_assert_eq!(start.first(), Some(&0));
        debug_assert_eq!(start.last().map(|&s| s as usize), Some(members.len()));
        let list = Self {
            sums: sums
                .into_iter()
                .map(|(tokens, tiles, oversize)| Sums {
                    tokens,
                    tiles,
                    oversize,
                })
                .collect(),
            start,
            members,
        };
        debug_assert!(list.iter().all(|p| p.samples.is_sorted()));
        list
    }

    /// Number of packs.
    pub fn len(&self) -> usize {
        self.sums.len()
    }

    /// Whether there are no packs.
    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }

    /// Number of samples over all packs.
    pub fn total_members(&self) -> usize {
        self.members.len()
    }

    /// Pack `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<Pack<'_>> {
        let sums = *self.sums.get(i)?;
        let (a, b) = (self.start[i] as usize, self.start[i + 1] as usize);
        Some(Pack {
            samples: &self.members[a..b],
            tokens: sums.tokens,
            tiles: sums.tiles,
            oversize: sums.oversize,
        })
    }

    /// The packs in order.
    pub fn iter(&self) -> Packs<'_> {
        Packs {
            list: self,
            next: 0,
        }
    }

    /// Appends a pack of `samples` (any order; sorted here) whose summed cost is `cost`.
    pub fn push(&mut self, samples: &[u32], cost: (u64, u64), oversize: bool) {
        let from = self.members.len();
        self.members.extend_from_slice(samples);
        self.members[from..].sort_unstable();
        self.start.push(self.members.len() as u32);
        self.sums.push(Sums {
            tokens: sat(cost.0),
            tiles: sat(cost.1),
            oversize,
        });
    }

    /// Appends a pack of one sample.
    pub fn push_one(&mut self, sample: u32, cost: (u64, u64), oversize: bool) {
        self.push(&[sample], cost, oversize);
    }
}

impl<'a> IntoIterator for &'a PackList {
    type Item = Pack<'a>;
    type IntoIter = Packs<'a>;

    fn into_iter(self) -> Packs<'a> {
        self.iter()
    }
}

/// Iterator over the packs of a [`PackList`], in order.
#[derive(Clone)]
pub struct Packs<'a> {
    list: &'a PackList,
    next: usize,
}

impl<'a> Iterator for Packs<'a> {
    type Item = Pack<'a>;

    fn next(&mut self) -> Option<Pack<'a>> {
        let p = self.list.get(self.next)?;
        self.next += 1;
        Some(p)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.list.len() - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Packs<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_read_back_as_pushed_with_members_sorted() {
        let mut l = PackList::new();
        assert!(l.is_empty() && l.get(0).is_none());
        l.push(&[5, 2, 9], (30, 2), false);
        l.push_one(7, (100, 0), true);
        l.push(&[3, 1], (4, 1), false);
        l.push(&[], (0, 0), false);
        assert_eq!(l.len(), 4);
        assert_eq!(l.total_members(), 6);
        let packs: Vec<_> = l.iter().collect();
        assert_eq!(packs[0].samples, [2, 5, 9]);
        assert_eq!(
            (packs[0].tokens, packs[0].tiles, packs[0].oversize),
            (30, 2, false)
        );
        assert_eq!(packs[1].samples, [7]);
        assert!(packs[1].oversize);
        assert_eq!(packs[2].samples, [1, 3]);
        assert!(packs[3].samples.is_empty());
        assert_eq!(l.get(2), Some(packs[2]));
        assert_eq!((&l).into_iter().len(), 4);
    }

    #[test]
    fn sums_saturate_instead_of_wrapping() {
        let mut l = PackList::new();
        l.push_one(0, (u64::from(u32::MAX) + 5, 1), true);
        assert_eq!(l.get(0).map(|p| p.tokens), Some(u32::MAX));
    }

    #[test]
    fn from_parts_keeps_every_pack() {
        let a = PackList::from_parts(
            vec![(3, 1, false), (8, 0, true)],
            vec![0, 2, 3],
            vec![4, 6, 1],
        );
        let got: Vec<(Vec<u32>, u32, bool)> = a
            .iter()
            .map(|p| (p.samples.to_vec(), p.tokens, p.oversize))
            .collect();
        assert_eq!(got, vec![(vec![4, 6], 3, false), (vec![1], 8, true)]);
    }
}
