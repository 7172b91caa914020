//! Data-parallel balance: groups packs into steps of `world` packs (one per rank) whose compute
//! is alike, so no rank waits long for the slowest one, and measures how alike they are.
//!
//! Compute per pack ([`CostModel`]):
//! `cost = vit_per_tile·tiles + llm_per_token·tokens + attn_per_token_sq·Σ_samples len²`.
//! Packing is padding-free with per-sample attention masks, so attention grows with the square of
//! each member's length, not of the pack's: a pack of one 8k sample costs more than a pack of
//! sixteen 512-token samples with the same token count.

use super::rng::shuffle;
use super::{Cost, PackPlan};

/// Forward FLOPs per unit of a pack's cost; see the module docs for the formula.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct CostModel {
    /// FLOPs of the vision encoder per tile.
    pub vit_per_tile: f64,
    /// FLOPs of the language model per token, attention excluded.
    pub llm_per_token: f64,
    /// Attention FLOPs per squared sample length.
    pub attn_per_token_sq: f64,
}

impl Default for CostModel {
    /// An InternVL2-8B-like model: InternViT-300M over 1025 tokens per 448×448 tile
    /// (2·0.3e9·1025 ≈ 6.15e11 FLOPs per tile), a 7B LLM (2·7e9 = 1.4e10 FLOPs per token), and
    /// attention of 4·d·layers = 4·4096·32 ≈ 5.2e5 FLOPs per len² (QKᵀ and AV, 2·d each).
    fn default() -> Self {
        Self {
            vit_per_tile: 2.0 * 0.3e9 * 1025.0,
            llm_per_token: 2.0 * 7.0e9,
            attn_per_token_sq: 4.0 * 4096.0 * 32.0,
        }
    }
}

/// Each pack's compute under `model`; `costs` are the per-sample costs given to the planner.
pub fn pack_costs(plan: &PackPlan, costs: &[Cost], model: &CostModel) -> Vec<f64> {
    plan.packs
        .iter()
        .map(|p| {
            let sq: f64 = p
                .samples
                .iter()
                .filter_map(|&i| plan.packed_cost(costs, i as usize))
                .map(|c| f64::from(c.tokens) * f64::from(c.tokens))
                .sum();
            model.vit_per_tile * f64::from(p.tiles)
                + model.llm_per_token * f64::from(p.tokens)
                + model.attn_per_token_sq * sq
        })
        .collect()
}

/// Steps as the plan emits them: consecutive packs, `world` at a time (`world` 0 counts as 1).
pub fn emitted_steps(packs: usize, world: usize) -> Vec<Vec<u32>> {
    let ids: Vec<u32> = (0..packs as u32).collect();
    ids.chunks(world.max(1)).map(<[u32]>::to_vec).collect()
}

/// Balanced steps over the whole plan: packs sorted by compute, cut into steps of `world`
/// neighbours, step order shuffled by `seed`. Each step lists pack ids; the last may be short.
pub fn balance_steps(
    plan: &PackPlan,
    costs: &[Cost],
    model: &CostModel,
    world: usize,
    seed: u64,
) -> Vec<Vec<u32>> {
    balance_steps_windowed(plan, costs, model, world, usize::MAX, seed)
}

/// Like [`balance_steps`], but only within windows of `window` consecutive packs (rounded up to
/// a multiple of `world`): order changes only locally, for [`super::Algo::Ordered`] plans.
pub fn balance_steps_windowed(
    plan: &PackPlan,
    costs: &[Cost],
    model: &CostModel,
    world: usize,
    window: usize,
    seed: u64,
) -> Vec<Vec<u32>> {
    let world = world.max(1);
    let window = window.max(1).div_ceil(world).saturating_mul(world);
    let pc = pack_costs(plan, costs, model);
    let ids: Vec<u32> = (0..pc.len() as u32).collect();
    let mut steps = Vec::with_capacity(pc.len().div_ceil(world));
    for (w, win) in ids.chunks(window).enumerate() {
        let mut sorted = win.to_vec();
        // Descending compute, ties by id: a total order, so the result is deterministic.
        sorted.sort_by(|&a, &b| pc[b as usize].total_cmp(&pc[a as usize]).then(a.cmp(&b)));
        let mut local: Vec<Vec<u32>> = sorted.chunks(world).map(<[u32]>::to_vec).collect();
        shuffle(
            &mut local,
            seed ^ (w as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        steps.extend(local);
    }
    steps
}

/// How uneven steps are: per step, the slowest pack over the step's mean.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Spread {
    /// Mean over steps of max/mean.
    pub mean: f64,
    /// Worst step's max/mean.
    pub worst: f64,
}

/// The [`Spread`] of `steps` (pack ids) given each pack's compute; 1.0 for no steps.
pub fn step_spread(steps: &[Vec<u32>], pack_costs: &[f64]) -> Spread {
    let (mut sum, mut worst, mut n) = (0.0, 1.0f64, 0usize);
    for step in steps {
        let c: Vec<f64> = step
            .iter()
            .filter_map(|&p| pack_costs.get(p as usize).copied())
            .collect();
        let mean = c.iter().sum::<f64>() / c.len().max(1) as f64;
        if c.is_empty() || mean <= 0.0 {
            continue;
        }
        let r = c.iter().copied().fold(0.0, f64::max) / mean;
        sum += r;
        worst = worst.max(r);
        n += 1;
    }
    Spread {
        mean: if n == 0 { 1.0 } else { sum / n as f64 },
        worst,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{Algo, Limits, OversizePolicy, plan_packs};

    fn plan(costs: &[Cost], algo: Algo) -> PackPlan {
        plan_packs(
            costs,
            Limits {
                tokens: 100,
                tiles: 8,
            },
            algo,
            OversizePolicy::Drop,
            &|_| None,
            1,
        )
        .unwrap()
    }

    #[test]
    fn balanced_steps_cover_every_pack_once_and_even_out() {
        let costs: Vec<Cost> = (0..500u32)
            .map(|i| Cost::new(5 + (i * 37) % 90, (i * 7) % 5))
            .collect();
        let p = plan(&costs, Algo::Ordered);
        let model = CostModel::default();
        let pc = pack_costs(&p, &costs, &model);
        for steps in [
            balance_steps(&p, &costs, &model, 8, 3),
            balance_steps_windowed(&p, &costs, &model, 8, 64, 3),
        ] {
            let mut all: Vec<u32> = steps.iter().flatten().copied().collect();
            all.sort_unstable();
            assert_eq!(all, (0..p.packs.len() as u32).collect::<Vec<_>>());
            assert!(steps.iter().all(|s| !s.is_empty() && s.len() <= 8));
            let before = step_spread(&emitted_steps(p.packs.len(), 8), &pc);
            let after = step_spread(&steps, &pc);
            assert!(after.mean <= before.mean, "{before:?} {after:?}");
        }
        assert_eq!(
            balance_steps(&p, &costs, &model, 8, 3),
            balance_steps(&p, &costs, &model, 8, 3)
        );
    }

    #[test]
    fn windowed_steps_stay_local() {
        let costs: Vec<Cost> = (0..300u32).map(|i| Cost::new(30 + i % 50, 1)).collect();
        let p = plan(&costs, Algo::Ordered);
        let steps = balance_steps_windowed(&p, &costs, &CostModel::default(), 4, 16, 9);
        for (s, step) in steps.iter().enumerate() {
            // Steps of window w hold only packs of window w.
            let w = s / 4;
            assert!(step.iter().all(|&id| id as usize / 16 == w), "{s} {step:?}");
        }
    }

    #[test]
    fn spread_of_equal_packs_is_one() {
        let s = step_spread(&[vec![0, 1], vec![2]], &[2.0, 2.0, 5.0]);
        assert_eq!((s.mean, s.worst), (1.0, 1.0));
        assert_eq!(step_spread(&[], &[]).mean, 1.0);
    }
}
