//! The packers' benchmark mix, shared by `benches/pack.rs` (criterion, wall time) and
//! `examples/pack_cpu_time.rs` (thread CPU time): 60% single-image, 15% multi-image, 25%
//! text-only samples, InternVL tiling, lognormal text.

use vlmprep::pack::Cost;
use vlmprep::pack::rng::SplitMix64;

fn uniform(r: &mut SplitMix64) -> f64 {
    (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// exp(N(mu, sigma)) by Box–Muller, clamped to `lo..=hi`.
fn lognormal(r: &mut SplitMix64, mu: f64, sigma: f64, lo: f64, hi: f64) -> u32 {
    let (u1, u2) = (uniform(r).max(1e-12), uniform(r));
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (mu + sigma * z).exp().clamp(lo, hi) as u32
}

/// Tiles of one image: InternVL grid of k tiles plus a thumbnail when k > 1.
fn image_tiles(r: &mut SplitMix64, max_grid: u32) -> u32 {
    const GRID: [u32; 10] = [1, 2, 3, 4, 5, 6, 8, 9, 10, 12];
    let k = GRID[r.below(GRID.len())].min(max_grid.max(1));
    if k == 1 { 1 } else { k + 1 }
}

pub fn mix(n: usize, seed: u64) -> Vec<Cost> {
    let mut r = SplitMix64::new(seed);
    (0..n)
        .map(|_| match r.below(20) {
            0..12 => {
                let tiles = image_tiles(&mut r, 12);
                let text = lognormal(&mut r, 5.5, 1.0, 8.0, 6000.0);
                Cost::new(256 * tiles + 2 + text, tiles)
            }
            12..15 => {
                let images = 2 + r.below(5) as u32;
                let tiles: u32 = (0..images).map(|_| image_tiles(&mut r, 12 / images)).sum();
                let text = lognormal(&mut r, 5.0, 1.0, 8.0, 4000.0);
                Cost::new(256 * tiles + 2 * images + text, tiles)
            }
            _ => Cost::new(lognormal(&mut r, 6.5, 1.0, 16.0, 12000.0), 0),
        })
        .collect()
}
