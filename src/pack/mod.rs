//! Packing: groups samples into padding-free sequences ("packs") of at most `L` tokens and at most
//! `T` image tiles, from each sample's exact [`Cost`]. Pure functions, no I/O: the planner that
//! computes costs from shards and the writer of packed output call [`plan_packs`].
//!
//! Three algorithms ([`Algo`]):
//! - [`Algo::Bfd`]: offline best-fit-decreasing over both limits with a segment tree over remaining
//!   capacity (O(n log L)), in a few item orders, a pack-by-pack greedy fill over the whole
//!   pool, and packs built from tile patterns that add up to the tile limit where tiles bind;
//!   the plan with the fewest packs wins. Packs are then shuffled by the seed so a trainer
//!   does not see them sorted by size.
//! - [`Algo::Online`]: a streaming packer with a bounded buffer ([`OnlinePacker`]), for a trainer
//!   that starts before the whole pool is read.
//! - [`Algo::Ordered`]: next-fit in stream order, for data whose order matters.
//!
//! What a sample's token sequence is: [`sample_text`] (its .txt/.json) and [`sequence`] (tokens,
//! labels, image placeholder spans).
//!
//! Samples over a limit follow an [`OversizePolicy`]. [`balance`] groups packs into data-parallel
//! steps of similar compute.
//!
//! Determinism: the same costs, settings and seed give the same plan (no hash-map order, no
//! threads). Samples inside a pack are listed in ascending index.

pub mod balance;
mod bfd;
#[cfg(test)]
mod bfd_reference;
mod fill;
mod max_tree;
mod online;
mod ordered;
mod pack_list;
mod pattern;
mod presence;
pub mod rng;
pub mod sample_cost;
mod sample_json;
pub mod sample_text;
pub mod sequence;

pub use balance::{
    CostModel, Spread, balance_steps, balance_steps_windowed, emitted_steps, pack_costs,
    spread_bound, step_spread,
};
pub use online::OnlinePacker;
pub use pack_list::{Pack, PackList, Packs};

use crate::error::{Error, Result};

/// What one sample costs: its sequence length in tokens and its image tiles (ViT inputs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize)]
pub struct Cost {
    /// Sequence length in tokens (text and image tokens together).
    pub tokens: u32,
    /// Image tiles fed to the vision encoder.
    pub tiles: u32,
}

impl Cost {
    /// A cost of `tokens` tokens and `tiles` tiles.
    pub const fn new(tokens: u32, tiles: u32) -> Self {
        Self { tokens, tiles }
    }

    /// Whether a pack holding only this sample respects both limits.
    pub const fn fits(self, limits: Limits) -> bool {
        self.tokens <= limits.tokens && self.tiles <= limits.tiles
    }
}

/// The most a pack may hold: `tokens` (the sequence length `L`) and `tiles` (`T`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Most tokens per pack; must be > 0.
    pub tokens: u32,
    /// Most tiles per pack; must be > 0. `u32::MAX` means no tile limit.
    pub tiles: u32,
}

impl Limits {
    /// A token limit with no tile limit.
    pub const fn tokens_only(tokens: u32) -> Self {
        Self {
            tokens,
            tiles: u32::MAX,
        }
    }

    /// Whether the tile limit is the "no limit" value.
    pub const fn unlimited_tiles(self) -> bool {
        self.tiles == u32::MAX
    }

    /// Refuses limits no pack can honor.
    pub fn validate(self) -> Result<()> {
        if self.tokens == 0 {
            return Err(Error::PackSettings("the token limit must be > 0".into()));
        }
        if self.tiles == 0 {
            return Err(Error::PackSettings(
                "the tile limit must be > 0 (u32::MAX for none)".into(),
            ));
        }
        Ok(())
    }
}

/// Which packing algorithm [`plan_packs`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algo {
    /// Offline best-fit-decreasing over both limits; packs shuffled by the seed.
    Bfd,
    /// Streaming packer holding at most `buffer` samples (> 0); packs in emission order.
    Online {
        /// How many samples the packer may hold back while it looks for good fits.
        buffer: usize,
    },
    /// Next-fit in stream order: a pack closes when the next sample does not fit.
    Ordered,
}

/// What happens to a sample whose own cost is over a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OversizePolicy {
    /// Leave it out ([`Placement::Dropped`]).
    Drop,
    /// Pack it with the cost the caller's `truncated` callback reports after cutting it to fit;
    /// dropped when the callback has none or the cut sample still does not fit.
    Truncate,
    /// Give it a pack of its own, marked [`Pack::oversize`].
    Alone,
}

/// Where sample `i` ended up: `PackPlan::placements[i]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Packed with its own cost into pack `pack`.
    Packed {
        /// Index into [`PackPlan::packs`].
        pack: u32,
    },
    /// Cut by the caller to `cost`, then packed into `pack`.
    Truncated {
        /// Index into [`PackPlan::packs`].
        pack: u32,
        /// The cost after truncation, which the pack's sums count.
        cost: Cost,
    },
    /// Over a limit, alone in `pack` (an oversize pack).
    Alone {
        /// Index into [`PackPlan::packs`].
        pack: u32,
    },
    /// Not packed.
    Dropped,
}

impl Placement {
    /// The pack this sample is in, if any.
    pub fn pack(self) -> Option<u32> {
        match self {
            Placement::Packed { pack }
            | Placement::Truncated { pack, .. }
            | Placement::Alone { pack } => Some(pack),
            Placement::Dropped => None,
        }
    }
}

/// The result of [`plan_packs`]: the packs in output order and where each sample went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackPlan {
    /// Packs in the order a trainer should consume them.
    pub packs: PackList,
    /// `placements[i]` says where sample `i` went.
    pub placements: Vec<Placement>,
}

impl PackPlan {
    /// The cost sample `i` is packed with (its own, or its truncated cost); `None` when dropped.
    pub fn packed_cost(&self, costs: &[Cost], i: usize) -> Option<Cost> {
        match self.placements.get(i)? {
            Placement::Packed { .. } | Placement::Alone { .. } => costs.get(i).copied(),
            Placement::Truncated { cost, .. } => Some(*cost),
            Placement::Dropped => None,
        }
    }
}

/// The lower bound on the number of packs for samples of these costs:
/// `max(ceil(Σtokens / L), ceil(Σtiles / T))`.
pub fn lower_bound(costs: impl IntoIterator<Item = Cost>, limits: Limits) -> u64 {
    let (mut tok, mut til) = (0u128, 0u128);
    for c in costs {
        tok += u128::from(c.tokens);
        til += u128::from(c.tiles);
    }
    u64::try_from(bound_of_sums(tok, til, limits)).unwrap_or(u64::MAX)
}

/// [`lower_bound`] from the sums Σtokens and Σtiles.
pub(crate) fn bound_of_sums(sum_tok: u128, sum_til: u128, limits: Limits) -> u128 {
    let need = |sum: u128, cap: u32| sum.div_ceil(u128::from(cap.max(1)));
    need(sum_tok, limits.tokens).max(need(sum_til, limits.tiles))
}

/// How a sample enters the packers, after the oversize policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Packed with this cost (its own or truncated).
    Fits(Cost),
    /// A pack of its own.
    Alone(Cost),
    /// Left out.
    Dropped,
}

/// Plans packs for samples of `costs` under `limits`.
///
/// `truncated(i)` is asked only under [`OversizePolicy::Truncate`], for oversize samples: the
/// cost of sample `i` after the caller cuts it to fit. `seed` fixes the shuffled pack order of
/// [`Algo::Bfd`] (the other algorithms keep stream order and ignore it).
///
/// Errors: a zero limit, a zero online buffer, more than `u32::MAX` samples.
pub fn plan_packs(
    costs: &[Cost],
    limits: Limits,
    algo: Algo,
    oversize: OversizePolicy,
    truncated: &dyn Fn(u32) -> Option<Cost>,
    seed: u64,
) -> Result<PackPlan> {
    limits.validate()?;
    if u32::try_from(costs.len()).is_err() {
        return Err(Error::PackSettings(format!(
            "{} samples: at most u32::MAX can be packed in one plan",
            costs.len()
        )));
    }
    let entries: Vec<Entry> = costs
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if c.fits(limits) {
                return Entry::Fits(c);
            }
            match oversize {
                OversizePolicy::Drop => Entry::Dropped,
                OversizePolicy::Alone => Entry::Alone(c),
                OversizePolicy::Truncate => match truncated(i as u32) {
                    Some(t) if t.fits(limits) => Entry::Fits(t),
                    _ => Entry::Dropped,
                },
            }
        })
        .collect();

    let (packs, pack_of) = match algo {
        // Bfd knows each sample's pack from its own assembly.
        Algo::Bfd => bfd::pack(&entries, limits, seed),
        Algo::Online { buffer } => {
            let mut packer = OnlinePacker::new(limits, buffer)?;
            let mut packs = PackList::new();
            for (i, e) in entries.iter().enumerate() {
                let cost = match *e {
                    Entry::Fits(c) | Entry::Alone(c) => c,
                    Entry::Dropped => continue,
                };
                packer.push(i as u32, cost, &mut packs);
            }
            packer.finish(&mut packs);
            let of = pack_of_samples(&packs, costs.len());
            (packs, of)
        }
        Algo::Ordered => {
            let packs = ordered::pack(&entries, limits);
            let of = pack_of_samples(&packs, costs.len());
            (packs, of)
        }
    };

    // The placements in sample order, from the pack of each sample: reading entries and costs in
    // pack order instead costs a cache miss per sample on big plans.
    let placements = pack_of
        .iter()
        .zip(&entries)
        .zip(costs)
        .map(|((&p, e), c)| match (p, *e) {
            (u32::MAX, _) => Placement::Dropped,
            (pack, Entry::Alone(_)) => Placement::Alone { pack },
            // A packed sample whose own cost is over a limit got in through truncation.
            (pack, Entry::Fits(t)) if !c.fits(limits) => Placement::Truncated { pack, cost: t },
            (pack, _) => Placement::Packed { pack },
        })
        .collect();
    Ok(PackPlan { packs, placements })
}

/// The pack of each of `n` samples (`u32::MAX`: in none), one scattered write per member.
fn pack_of_samples(packs: &PackList, n: usize) -> Vec<u32> {
    let mut pack_of = vec![u32::MAX; n];
    for (p, pack) in packs.iter().enumerate() {
        for &s in pack.samples {
            pack_of[s as usize] = p as u32;
        }
    }
    pack_of
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_trunc(_: u32) -> Option<Cost> {
        None
    }

    fn c(tokens: u32, tiles: u32) -> Cost {
        Cost::new(tokens, tiles)
    }

    const ALGOS: [Algo; 4] = [
        Algo::Bfd,
        Algo::Online { buffer: 1 },
        Algo::Online { buffer: 64 },
        Algo::Ordered,
    ];

    #[test]
    fn zero_limits_are_refused() {
        for limits in [
            Limits {
                tokens: 0,
                tiles: 4,
            },
            Limits {
                tokens: 4,
                tiles: 0,
            },
        ] {
            let r = plan_packs(&[], limits, Algo::Bfd, OversizePolicy::Drop, &no_trunc, 0);
            assert!(matches!(r, Err(Error::PackSettings(_))), "{r:?}");
        }
        let r = plan_packs(
            &[],
            Limits::tokens_only(8),
            Algo::Online { buffer: 0 },
            OversizePolicy::Drop,
            &no_trunc,
            0,
        );
        assert!(matches!(r, Err(Error::PackSettings(_))));
    }

    #[test]
    fn empty_input_gives_no_packs() {
        for algo in ALGOS {
            let plan = plan_packs(
                &[],
                Limits::tokens_only(8),
                algo,
                OversizePolicy::Drop,
                &no_trunc,
                1,
            )
            .unwrap();
            assert!(plan.packs.is_empty() && plan.placements.is_empty());
        }
    }

    #[test]
    fn zero_cost_samples_are_packed() {
        let costs = vec![c(0, 0); 10];
        for algo in ALGOS {
            let plan = plan_packs(
                &costs,
                Limits {
                    tokens: 4,
                    tiles: 1,
                },
                algo,
                OversizePolicy::Drop,
                &no_trunc,
                3,
            )
            .unwrap();
            assert!(
                plan.placements.iter().all(|p| p.pack().is_some()),
                "{algo:?}"
            );
            if algo != (Algo::Online { buffer: 1 }) {
                assert_eq!(plan.packs.len(), 1, "{algo:?}");
            }
        }
    }

    #[test]
    fn exact_fits_fill_packs() {
        // Four pairs that each fill 10 tokens and 2 tiles exactly.
        let costs = [
            c(7, 1),
            c(3, 1),
            c(6, 0),
            c(4, 2),
            c(5, 1),
            c(5, 1),
            c(9, 2),
            c(1, 0),
        ];
        let limits = Limits {
            tokens: 10,
            tiles: 2,
        };
        for algo in [Algo::Bfd, Algo::Online { buffer: 8 }] {
            let plan =
                plan_packs(&costs, limits, algo, OversizePolicy::Drop, &no_trunc, 0).unwrap();
            assert_eq!(plan.packs.len(), 4, "{algo:?}: {:?}", plan.packs);
            assert!(plan.packs.iter().all(|p| p.tokens == 10 && p.tiles <= 2));
        }
    }

    #[test]
    fn oversize_policies() {
        let costs = [c(5, 1), c(20, 1), c(5, 9), c(3, 1)];
        let limits = Limits {
            tokens: 10,
            tiles: 4,
        };
        let trunc = |i: u32| match i {
            1 => Some(c(10, 1)),
            2 => Some(c(5, 5)), // still over the tile limit: dropped
            _ => None,
        };
        for algo in ALGOS {
            let drop = plan_packs(&costs, limits, algo, OversizePolicy::Drop, &trunc, 0).unwrap();
            assert_eq!(drop.placements[1], Placement::Dropped);
            assert_eq!(drop.placements[2], Placement::Dropped);
            assert!(drop.placements[0].pack().is_some());

            let t = plan_packs(&costs, limits, algo, OversizePolicy::Truncate, &trunc, 0).unwrap();
            let Placement::Truncated { pack, cost } = t.placements[1] else {
                panic!("{:?}", t.placements[1]);
            };
            assert_eq!(cost, c(10, 1));
            assert_eq!(t.packs.get(pack as usize).unwrap().samples, [1]);
            assert_eq!(t.placements[2], Placement::Dropped);

            let alone =
                plan_packs(&costs, limits, algo, OversizePolicy::Alone, &no_trunc, 0).unwrap();
            for i in [1, 2] {
                let Placement::Alone { pack } = alone.placements[i] else {
                    panic!("{:?}", alone.placements[i]);
                };
                let p = alone.packs.get(pack as usize).unwrap();
                assert!(p.oversize && p.samples == [i as u32]);
                assert_eq!((p.tokens, p.tiles), (costs[i].tokens, costs[i].tiles));
            }
            assert_eq!(alone.packs.iter().filter(|p| p.oversize).count(), 2);
        }
    }

    #[test]
    fn ordered_is_next_fit_in_stream_order() {
        let costs = [c(6, 0), c(3, 0), c(2, 0), c(1, 3), c(1, 2), c(9, 0)];
        let plan = plan_packs(
            &costs,
            Limits {
                tokens: 10,
                tiles: 4,
            },
            Algo::Ordered,
            OversizePolicy::Drop,
            &no_trunc,
            0,
        )
        .unwrap();
        let members: Vec<Vec<u32>> = plan.packs.iter().map(|p| p.samples.to_vec()).collect();
        // 6+3 then 2 does not fit tokens; 2+1(3 tiles) then 1(2 tiles) does not fit tiles;
        // 1+9 fills the last pack exactly.
        assert_eq!(members, vec![vec![0, 1], vec![2, 3], vec![4, 5]]);
    }

    #[test]
    fn lower_bound_takes_the_binding_limit() {
        let costs = [c(10, 1), c(10, 7)];
        assert_eq!(
            lower_bound(
                costs,
                Limits {
                    tokens: 20,
                    tiles: 4
                }
            ),
            2
        );
        assert_eq!(
            lower_bound(
                costs,
                Limits {
                    tokens: 5,
                    tiles: 100
                }
            ),
            4
        );
        assert_eq!(lower_bound(costs, Limits::tokens_only(20)), 1);
    }
}
