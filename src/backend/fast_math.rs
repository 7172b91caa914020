//! Vectorized f32 `exp`, tanh-GELU, row maximum and layer-norm rows over slices, for the CPU
//! forward's softmax, MLP and layer norms.
//!
//! libm's `expf`/`tanhf` are scalar calls: in a base-size SigLIP forward they took a fifth of
//! the time. These are written with plain arithmetic and bit tricks (no calls, no branches) so
//! that LLVM vectorizes the loops; each public function is compiled three times (AVX-512,
//! AVX2+FMA, baseline SSE2) and picks the widest the CPU has at run time.
//!
//! Accuracy: `exp` within ~2 ulp (1.5e-7 relative) on [-87, 88]; below -87 it returns ~1e-38
//! instead of a denormal or 0, which no softmax can tell apart after normalization. GELU built
//! on it is within ~2e-7 absolute of the libm version.

/// log2(e).
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln(2) split in a part exact in f32 and the rest (Cody–Waite), so `x - n·ln2` loses nothing.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// Adding 1.5·2^23 rounds an f32 of magnitude < 2^22 to an integer, which then sits in the
/// low mantissa bits: round-to-nearest and float→int in one add, without `round()` (a libm call
/// on baseline x86-64, which would stop vectorization).
const ROUND_MAGIC: f32 = 12_582_912.0;
/// The clamp keeps 2^n a normal float: n in [-126, 127].
const EXP_MIN: f32 = -87.0;
const EXP_MAX: f32 = 88.0;

/// e^x for one value; the body every slice function inlines.
#[inline(always)]
fn exp_one(x: f32) -> f32 {
    let x = x.clamp(EXP_MIN, EXP_MAX);
    let t = x * LOG2E + ROUND_MAGIC;
    let n = t - ROUND_MAGIC;
    let r = x - n * LN2_HI - n * LN2_LO;
    // e^r on |r| ≤ ln2/2 by its Taylor series to r^6: the next term is below 1.2e-7·e^r.
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // t's low mantissa bits hold n (offset by 0x4B40_0000); 2^n has the exponent field n + 127.
    let n_bits = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let scale = f32::from_bits((n_bits.wrapping_add(127) << 23) as u32);
    p * scale
}

/// tanh-form GELU of one value: 0.5·x·(1 + tanh(u)) with u = √(2/π)·(x + 0.044715·x³).
/// Since 1 + tanh(u) = 2/(1 + e^{−2u}), that is x/(1 + e^{−2u}): no cancellation for negative
/// x (where 1 + tanh(u) is tiny), no overflow (e^{−2u} is clamped to a finite value), and the
/// limits x and 0 at both ends.
#[inline(always)]
fn gelu_tanh_one(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let u = SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x);
    x / (1.0 + exp_one(-2.0 * u))
}

/// Defines `pub fn $name($xs: &mut [f32], …)` with per-ISA copies of `$body` and run-time
/// dispatch. The body is an ordinary loop; `target_feature` lets LLVM widen it.
macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident ($xs:ident $(, $arg:ident : $ty:ty)*) $body:block) => {
        $(#[$doc])*
        pub fn $name($xs: &mut [f32] $(, $arg: $ty)*) -> f32 {
            #[inline(always)]
            fn body($xs: &mut [f32] $(, $arg: $ty)*) -> f32 $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                fn avx512($xs: &mut [f32] $(, $arg: $ty)*) -> f32 {
                    body($xs $(, $arg)*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($xs: &mut [f32] $(, $arg: $ty)*) -> f32 {
                    body($xs $(, $arg)*)
                }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU has AVX-512F, checked on the line above.
                    return unsafe { avx512($xs $(, $arg)*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has AVX2 and FMA, checked above.
                    return unsafe { avx2($xs $(, $arg)*) };
                }
            }
            body($xs $(, $arg)*)
        }
    };
}

dispatch! {
    /// `xs[i] = e^(xs[i]·scale − shift)` in place; returns the sum of the results (a softmax's
    /// denominator).
    exp_scaled_sum(xs, scale: f32, shift: f32) {
        for v in xs.iter_mut() {
            *v = exp_one(*v * scale - shift);
        }
        // Sixteen partial sums: a single f32 accumulator is a serial chain that LLVM may not
        // reorder (it would change the rounding), which kept the whole loop scalar.
        let mut lanes = [0.0f32; 16];
        let mut chunks = xs.chunks_exact(16);
        for c in &mut chunks {
            for (l, v) in lanes.iter_mut().zip(c) {
                *l += v;
            }
        }
        lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
    }
}

dispatch! {
    /// tanh-form GELU in place (torch's `gelu(x, approximate="tanh")`); returns 0.
    gelu_tanh_in_place(xs) {
        for v in xs.iter_mut() {
            *v = gelu_tanh_one(*v);
        }
        0.0
    }
}

dispatch! {
    /// `xs[i] = gelu_tanh(xs[i] + bias[i])` in place over `min(xs.len(), bias.len())` values
    /// (one row of a linear layer's output and its bias); returns 0. The bias add rides on the
    /// activation's pass over the row, so the GEMM's output is read and written once here
    /// instead of once for the bias and once for the activation.
    bias_gelu_tanh_in_place(xs, bias: &[f32]) {
        for (v, b) in xs.iter_mut().zip(bias) {
            *v = gelu_tanh_one(*v + *b);
        }
        0.0
    }
}

dispatch! {
    /// The largest value of `xs` (−∞ for an empty slice; a NaN is skipped unless it comes
    /// first in its lane, where it stays: softmax rows hold none). Sixteen running maxima: one
    /// is a serial chain that stays scalar, and it was half of the softmax's time.
    max_of(xs) {
        let mut lanes = [f32::NEG_INFINITY; 16];
        let mut chunks = xs.chunks_exact(16);
        for c in &mut chunks {
            for (l, &v) in lanes.iter_mut().zip(c) {
                // a compare-and-select, which LLVM turns into a vector max (f32::max's NaN
                // rules would not vectorize as well)
                *l = if v > *l { v } else { *l };
            }
        }
        let tail = chunks.remainder().iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        lanes.iter().fold(tail, |m, &v| m.max(v))
    }
}

/// A sum in f64 of `f(v)` over `row` in eight partial sums: one f64 accumulator is a serial
/// chain of dependent adds; eight independent ones pipeline and vectorize.
#[inline(always)]
fn lane_sum(row: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut lanes = [0.0f64; 8];
    let mut chunks = row.chunks_exact(8);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += f(v);
        }
    }
    lanes.iter().sum::<f64>() + chunks.remainder().iter().map(|&v| f(v)).sum::<f64>()
}

dispatch! {
    /// One row of a layer norm: `out[i] = (row[i] − mean)/√(var + eps)·gamma[i] + beta[i]`
    /// over `out.len()` values (`row`, `gamma`, `beta` at least as long), biased variance; returns
    /// 0. The statistics are summed in f64 (the one place f32 would drift from torch), in two
    /// passes (mean, then squared deviations).
    layer_norm_row(out, row: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let row = &row[..out.len()];
        let d = row.len().max(1) as f64;
        let mean = lane_sum(row, f64::from) / d;
        let var = lane_sum(row, |v| {
            let c = f64::from(v) - mean;
            c * c
        }) / d;
        let inv = (1.0 / (var + f64::from(eps)).sqrt()) as f32;
        let mean = mean as f32;
        for (((o, &v), &g), &b) in out.iter_mut().zip(row).zip(gamma).zip(beta) {
            *o = (v - mean) * inv * g + b;
        }
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from -100 to 100 in uneven steps, plus edge cases.
    fn inputs() -> Vec<f32> {
        let mut v: Vec<f32> = (-20_000..=20_000).map(|i| i as f32 * 0.005_1).collect();
        v.extend([0.0, -0.0, 1e-30, -1e-30, 87.9, -86.9, 200.0, -200.0]);
        v
    }

    #[test]
    fn exp_matches_libm_to_a_few_ulp() {
        let xs = inputs();
        let mut got = xs.clone();
        exp_scaled_sum(&mut got, 1.0, 0.0);
        for (&x, &g) in xs.iter().zip(&got) {
            let want = f64::from(x).clamp(-87.0, 88.0).exp();
            let rel = ((f64::from(g) - want) / want).abs();
            assert!(rel < 3e-7, "exp({x}) = {g}, want {want} (rel {rel:e})");
        }
        // softmax-like inputs (≤ 0 after the shift): the returned sum is the sum of the values
        let mut row: Vec<f32> = (0..1000).map(|i| -(i as f32) * 0.03).collect();
        let sum = exp_scaled_sum(&mut row, 1.0, 0.0);
        let want_sum: f64 = (0..1000).map(|i| (-(i as f64) * 0.03).exp()).sum();
        assert!(((f64::from(sum) - want_sum) / want_sum).abs() < 1e-5);
    }

    #[test]
    fn exp_scaled_sum_applies_scale_and_shift() {
        let mut xs = vec![1.0f32, 2.0, 3.0];
        let sum = exp_scaled_sum(&mut xs, 0.5, 1.5);
        let want: Vec<f32> = [1.0f32, 2.0, 3.0]
            .iter()
            .map(|x| (x * 0.5 - 1.5).exp())
            .collect();
        for (g, w) in xs.iter().zip(&want) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
        assert!((sum - want.iter().sum::<f32>()).abs() < 1e-6);
    }

    #[test]
    fn bias_gelu_is_gelu_of_the_sum_bit_for_bit() {
        // same arithmetic in the same order as adding first, then gelu_tanh_in_place: the
        // fused pass must not change a single bit
        let xs = inputs();
        let bias: Vec<f32> = (0..xs.len())
            .map(|i| (i % 97) as f32 * 0.37 - 18.0)
            .collect();
        let mut want: Vec<f32> = xs.iter().zip(&bias).map(|(x, b)| x + b).collect();
        gelu_tanh_in_place(&mut want);
        let mut got = xs.clone();
        bias_gelu_tanh_in_place(&mut got, &bias);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.to_bits(), w.to_bits(), "value {i}: {g} vs {w}");
        }
    }

    #[test]
    fn max_of_is_the_maximum() {
        for n in [0usize, 1, 15, 16, 17, 196, 1000] {
            let mut xs: Vec<f32> = (0..n).map(|i| ((i * 7919) % 113) as f32 - 60.0).collect();
            let want = xs.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max_of(&mut xs), want, "n = {n}");
        }
        // the largest value in every position, lane and tail alike
        for at in 0..37 {
            let mut xs = vec![-5.0f32; 37];
            xs[at] = 3.5;
            assert_eq!(max_of(&mut xs), 3.5, "at {at}");
        }
    }

    #[test]
    fn layer_norm_row_matches_an_f64_reference() {
        for d in [1usize, 7, 8, 768, 1001] {
            let row: Vec<f32> = (0..d)
                .map(|i| ((i * 2654435761usize) % 1000) as f32 / 100.0 + 3.0)
                .collect();
            let gamma: Vec<f32> = (0..d).map(|i| 0.5 + (i % 13) as f32 * 0.1).collect();
            let beta: Vec<f32> = (0..d).map(|i| (i % 5) as f32 - 2.0).collect();
            let mut out = vec![0.0f32; d];
            layer_norm_row(&mut out, &row, &gamma, &beta, 1e-6);
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / d as f64;
            let var = row
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / d as f64;
            for i in 0..d {
                let want = (f64::from(row[i]) - mean) / (var + 1e-6).sqrt() * f64::from(gamma[i])
                    + f64::from(beta[i]);
                // f32 output of O(1) values: a few ulp of the larger of value and beta
                assert!(
                    (f64::from(out[i]) - want).abs() < 2e-6 * want.abs().max(2.0),
                    "d {d} i {i}: {} vs {want}",
                    out[i]
                );
            }
        }
    }

    #[test]
    fn gelu_matches_the_libm_formula() {
        let xs = inputs();
        let mut got = xs.clone();
        gelu_tanh_in_place(&mut got);
        for (&x, &g) in xs.iter().zip(&got) {
            let x64 = f64::from(x);
            let want =
                0.5 * x64 * (1.0 + (0.797_884_560_8 * (x64 + 0.044_715 * x64.powi(3))).tanh());
            let err = (f64::from(g) - want).abs();
            assert!(
                err <= 2e-7 * want.abs().max(1.0),
                "gelu({x}) = {g}, want {want}"
            );
        }
    }
}
