//! Next-fit in stream order: samples keep their order, a pack closes when the next sample does
//! not fit either limit. For data whose order matters (curricula, documents split over samples).

use super::{Entry, Limits, PackList};

/// Packs `entries` in order; an `Alone` entry closes the open pack and gets one of its own, so
/// the packs stay in stream order.
pub(super) fn pack(entries: &[Entry], limits: Limits) -> PackList {
    let mut packs = PackList::new();
    let mut open: Vec<u32> = Vec::new();
    let mut sums = (0u64, 0u64);
    let (l, t) = (u64::from(limits.tokens), u64::from(limits.tiles));
    for (i, e) in entries.iter().enumerate() {
        match *e {
            Entry::Dropped => {}
            Entry::Fits(c) => {
                let (ct, ci) = (u64::from(c.tokens), u64::from(c.tiles));
                if !open.is_empty() && (sums.0 + ct > l || sums.1 + ci > t) {
                    packs.push(&open, sums, false);
                    open.clear();
                    sums = (0, 0);
                }
                open.push(i as u32);
                sums = (sums.0 + ct, sums.1 + ci);
            }
            Entry::Alone(c) => {
                if !open.is_empty() {
                    packs.push(&open, sums, false);
                    open.clear();
                    sums = (0, 0);
                }
                let own = (u64::from(c.tokens), u64::from(c.tiles));
                packs.push_one(i as u32, own, true);
            }
        }
    }
    if !open.is_empty() {
        packs.push(&open, sums, false);
    }
    packs
}
