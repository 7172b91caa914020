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
        let sizes = group_sizes(
            &sorted.iter().map(|&p| pc[p as usize]).collect::<Vec<_>>(),
            world,
        );
        let mut local: Vec<Vec<u32>> = Vec::with_capacity(sizes.len());
        let mut at = 0;
        for size in sizes {
            local.push(sorted[at..at + size].to_vec());
            at += size;
        }
        shuffle(
            &mut local,
            seed ^ (w as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        steps.extend(local);
    }
    steps
}

/// Cuts `c` (descending) into consecutive steps of `world`, except one short step of
/// `len % world` where it does least harm: a dynamic program over where the short step goes
/// minimizes the worst step's max/mean (then the sum of them). Cutting at fixed multiples of
/// `world` instead puts the cheapest packs, or a gap between two clusters of pack costs, in one
/// step: a pack that costs half of the others then weighs on a step of 3.
fn group_sizes(c: &[f64], world: usize) -> Vec<usize> {
    let n = c.len();
    let (q, r) = (n / world, n % world);
    if r == 0 || q == 0 {
        let mut v = vec![world; q];
        if r > 0 {
            v.push(r);
        }
        return v;
    }
    let mut pre = vec![0.0; n + 1];
    for (i, &x) in c.iter().enumerate() {
        pre[i + 1] = pre[i] + x;
    }
    let ratio = |at: usize, len: usize| {
        let mean = (pre[at + len] - pre[at]) / len as f64;
        if mean > 0.0 { c[at] / mean } else { 1.0 }
    };
    // best[s][k]: (worst, sum) of the best cut of the first k full steps, plus the short one when
    // s = 1; short_at[k]: how many full steps precede the short one in best[1][k].
    let add = |a: (f64, f64), r: f64| (a.0.max(r), a.1 + r);
    let better = |a: (f64, f64), b: (f64, f64)| a.0 < b.0 || (a.0 == b.0 && a.1 < b.1);
    let mut none = vec![(1.0f64, 0.0f64); q + 1];
    let mut short = vec![(f64::INFINITY, f64::INFINITY); q + 1];
    let mut short_at = vec![0usize; q + 1];
    short[0] = add((1.0, 0.0), ratio(0, r));
    for k in 1..=q {
        none[k] = add(none[k - 1], ratio((k - 1) * world, world));
        // The short step last (after k full steps) or a full step after an earlier short one.
        let last = add(none[k], ratio(k * world, r));
        let after = add(short[k - 1], ratio((k - 1) * world + r, world));
        if better(last, after) {
            short[k] = last;
            short_at[k] = k;
        } else {
            short[k] = after;
            short_at[k] = short_at[k - 1];
        }
    }
    let mut sizes = vec![world; q + 1];
    sizes[short_at[q]] = r;
    sizes
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
