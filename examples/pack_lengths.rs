//! Packs a file of per-sample costs with the chosen algorithms and limits and prints the
//! efficiency, balance and speed of each as JSON (one object per line). Used by
//! benches/pack_baselines.py for the BENCHMARKS.md table.
//!
//! Input: one sample per line, `tokens tiles` (whitespace-separated integers).
//!
//! ```sh
//! cargo run --release --example pack_lengths -- costs.txt \
//!     --limits 8192x16,8192x24,8192x- --algos bfd,online:1024,ordered --world 8 --seed 0
//! ```
//! `LxT` is a token limit and a tile limit; `-` for T means no tile limit. Oversize samples
//! are packed alone (`--oversize drop` drops them) and counted.

use std::time::Instant;

use vlmprep::pack::{
    Algo, CostModel, Limits, OversizePolicy, balance_steps, balance_steps_windowed, emitted_steps,
    lower_bound, pack_costs, plan_packs, spread_bound, step_spread,
};
use vlmprep::pack::{Cost, Placement};

fn parse_limits(s: &str) -> Result<Limits, String> {
    let (l, t) = s
        .split_once('x')
        .ok_or_else(|| format!("limits `{s}`: want LxT"))?;
    let tokens = l.parse().map_err(|e| format!("limits `{s}`: {e}"))?;
    let tiles = if t == "-" {
        u32::MAX
    } else {
        t.parse().map_err(|e| format!("limits `{s}`: {e}"))?
    };
    Ok(Limits { tokens, tiles })
}

fn parse_algo(s: &str) -> Result<Algo, String> {
    match s.split_once(':') {
        None if s == "bfd" => Ok(Algo::Bfd),
        None if s == "ordered" => Ok(Algo::Ordered),
        Some(("online", b)) => Ok(Algo::Online {
            buffer: b.parse().map_err(|e| format!("algo `{s}`: {e}"))?,
        }),
        _ => Err(format!("algo `{s}`: want bfd, online:B or ordered")),
    }
}

fn algo_name(a: Algo) -> String {
    match a {
        Algo::Bfd => "bfd".into(),
        Algo::Online { buffer } => format!("online:{buffer}"),
        Algo::Ordered => "ordered".into(),
    }
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut file = None;
    let mut limits = vec![Limits::tokens_only(8192)];
    let mut algos = vec![Algo::Bfd];
    let (mut world, mut seed, mut repeat) = (8usize, 0u64, 3usize);
    let mut policy = OversizePolicy::Alone;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--limits" => {
                limits = val()?
                    .split(',')
                    .map(parse_limits)
                    .collect::<Result<_, _>>()?;
            }
            "--algos" => {
                algos = val()?
                    .split(',')
                    .map(parse_algo)
                    .collect::<Result<_, _>>()?
            }
            "--world" => world = val()?.parse().map_err(|e| format!("--world: {e}"))?,
            "--seed" => seed = val()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--repeat" => repeat = val()?.parse().map_err(|e| format!("--repeat: {e}"))?,
            "--oversize" => {
                policy = match val()?.as_str() {
                    "drop" => OversizePolicy::Drop,
                    "alone" => OversizePolicy::Alone,
                    o => return Err(format!("--oversize {o}: want drop or alone")),
                }
            }
            f if !f.starts_with("--") && file.is_none() => file = Some(f.to_string()),
            o => return Err(format!("unknown argument {o}")),
        }
    }
    let file = file.ok_or("usage: pack_lengths FILE [--limits LxT,..] [--algos ..]")?;
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
    let mut costs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut f = line.split_whitespace().map(str::parse::<u32>);
        match (f.next(), f.next()) {
            (Some(Ok(tokens)), Some(Ok(tiles))) => costs.push(Cost { tokens, tiles }),
            (None, _) => {}
            _ => return Err(format!("{file}:{}: want `tokens tiles`", n + 1)),
        }
    }

    let model = CostModel::default();
    for &lim in &limits {
        let fitting: Vec<Cost> = costs.iter().copied().filter(|c| c.fits(lim)).collect();
        let bound = lower_bound(fitting.iter().copied(), lim);
        for &algo in &algos {
            let mut best = f64::INFINITY;
            let mut plan = None;
            for _ in 0..repeat.max(1) {
                let t0 = Instant::now();
                let p = plan_packs(&costs, lim, algo, policy, &|_| None, seed)
                    .map_err(|e| e.to_string())?;
                best = best.min(t0.elapsed().as_secs_f64());
                plan = Some(p);
            }
            let plan = plan.ok_or("no run")?;
            let normal: Vec<_> = plan.packs.iter().filter(|p| !p.oversize).collect();
            let violations = normal
                .iter()
                .filter(|p| p.tokens > lim.tokens || p.tiles > lim.tiles)
                .count();
            let sum_tok: u64 = normal.iter().map(|p| u64::from(p.tokens)).sum();
            let sum_til: u64 = normal.iter().map(|p| u64::from(p.tiles)).sum();
            let n = normal.len().max(1) as f64;
            let pc = pack_costs(&plan, &costs, &model);
            let emitted = step_spread(&emitted_steps(plan.packs.len(), world), &pc);
            let balanced = step_spread(&balance_steps(&plan, &costs, &model, world, seed), &pc);
            let windowed = step_spread(
                &balance_steps_windowed(&plan, &costs, &model, world, 64 * world, seed),
                &pc,
            );
            let dropped = plan
                .placements
                .iter()
                .filter(|p| **p == Placement::Dropped)
                .count();
            let out = serde_json::json!({
                "file": file,
                "samples": costs.len(),
                "limits": { "tokens": lim.tokens, "tiles": if lim.unlimited_tiles() { None } else { Some(lim.tiles) } },
                "algo": algo_name(algo),
                "packs": normal.len(),
                "oversize_packs": plan.packs.len() - normal.len(),
                "dropped": dropped,
                "lower_bound": bound,
                "ratio": normal.len() as f64 / bound.max(1) as f64,
                "token_efficiency": sum_tok as f64 / (n * f64::from(lim.tokens)),
                "tile_fill": if lim.unlimited_tiles() { None } else { Some(sum_til as f64 / (n * f64::from(lim.tiles))) },
                "max_tokens": normal.iter().map(|p| p.tokens).max(),
                "max_tiles": normal.iter().map(|p| p.tiles).max(),
                "violations": violations,
                "world": world,
                "spread_emitted": emitted,
                "spread_balanced": balanced,
                "spread_windowed": windowed,
                "spread_bound": spread_bound(&pc, world),
                "seconds": best,
                "samples_per_s": costs.len() as f64 / best,
            });
            println!("{out}");
        }
    }
    Ok(())
}
