// The perceptual hash from the 32x32 gray images already on the device (written by
// `phash_gray32` of phash.wgsl), driven by src/backend/wgpu/phash.rs: the 8x8 low-frequency
// DCT-II block in f32, the median of its 64 values, the hash and the flipped hash, with the bit
// order of src/curate/phash.rs (`hash_of_block`: bit = coefficient > median, row-major, first
// bit most significant; flipped = the same block with odd horizontal frequencies negated).
//
// One workgroup of 64 invocations per image; invocation i owns coefficient i = 8k + l (k the
// vertical, l the horizontal frequency). Per invocation: 16 + 16 + 64 + 64 loop iterations
// (and 64 more on invocation 0), far below llvmpipe's 65,535.
//
// ## Bit equality with the CPU's f64 arithmetic
//
// The CPU computes the block in f64; here it is f32, so a coefficient can land on the other
// side of the median only when it is within the rounding error of it. Each invocation therefore
// carries a rigorous bound e_i on |g_i - D_i|, where g_i is this shader's coefficient and D_i
// the CPU's, and raises an `uncertain` flag when a bit could differ; the host recomputes
// flagged images with the CPU code. Derivation (u = 2^-23: WGSL only promises one of the two
// floats next to the exact result, so one ulp, not half; each + and * below is one rounding,
// or none when the compiler fuses them into an fma, which only removes error terms. The bound
// assumes the driver keeps the program's order of additions; one that reassociated the sums
// would void it, and the tests, which check every bound against the CPU, would show it):
//
// Input. Levels x are integers 0..255; the shader uses x' = x - 128 (exact, in -128..127).
// This changes only the DC coefficient, by exactly 128 * 32 * 32 = 131072, because every
// other row of the DCT matrix sums to 0; it keeps partial sums small. The cosines c[k][n] =
// cos(pi k (2n+1) / 64) are computed on the host in f64 and rounded to f32: |c^ - c| <=
// 2^-24 |c^| + 2^-52 <= u |c^| (every |c| >= sin(pi/64) > 2^-5).
//
// Symmetry. c[k][31-n] = (-1)^k c[k][n], so each 32-term sum is a 16-term sum of
// c[k][m] * y[m], y[m] = v[m] + (-1)^k v[31-m]. In pass 1 the y are integers (exact).
//
// Running error of one 16-term dot product s^ = fl(sum c^_j y^_j) with partial sums s^_j and
// products p^_j = fl(c^_j y^_j): the exact s = sum c_j y_j differs by at most
//   u |s^_j| per addition                           (rounding of each partial sum)
// + u |p^_j| per product                            (rounding of each product)
// + u |p^_j| (1+u) per term                         (table error: |c^ - c| <= u |c^|)
// + u |p^_j| (1+u)^2 per term, pass 2 only          (rounding of y^ = t^_a +- t^_b)
// + (1+u) |c^_j| (E_a + E_b) per term, pass 2 only  (pass-1 errors of t^_a, t^_b)
// so  |s^ - s| <= u * sum_j (|s^_j| + 3 |p^_j|) * (1+u)^2 + (1+u) * sum_j |c^_j| (E_a + E_b).
// The shader sums those non-negative terms in f32 alongside the dot product (a running error
// bound: data-dependent, much tighter than an a priori one); a sum of at most 64 non-negative
// terms is low by at most a factor 1 - 64u, so multiplying the sums by SAFETY = 1.01 covers
// that and the (1+u)^2 factors with a wide margin.
//   Pass 1, t^[k][n] (8 x 32 values): E[k][n] = SAFETY * u * sum_m (|s^_m| + 3 |p^_m|).
//   Pass 2, g[k][l]: e = SAFETY * (u * sum_n (|s^_n| + 3 |p^_n|) + sum_n |c^| (E_a + E_b)),
//   plus u |g| for the DC's + 131072, plus ETA = 2^-10.
// ETA covers the CPU's own f64 error (at most ~1e-8 for 0..255 inputs: 33 roundings of 2^-53
// on sums of at most 32 * 32 * 255), the f64 rounding of its median, and flushed subnormals.
// A priori worst case, for scale: |y| <= 256 in pass 1, so E <= 1.01u (256 * 136 + 3 * 4096)
// ~ 0.006; |y| <= 8192 in pass 2, so e <= 1.01 (u (8192 * 136 + 3 * 16 * 8192) + 16 * 2 *
// 0.006) + u 261120 + ETA ~ 0.41. The running bounds are usually a few times smaller.
//
// Median. med = (s_31 + s_32) / 2 of the sorted values (0-based ranks), like numpy. If
// |D_j - g_j| <= e_j for all j and emax = max_j e_j, then for a = s_k(g):
//   |s_k(D) - a| <= M_k = max { e_j : |g_j - a| <= emax },
// whichever elements change places. Proof: the k+1 elements of rank <= k in g have D_j <=
// g_j + e_j, which is < a when g_j < a - emax and <= a + M_k otherwise, and the (k+1)-th
// smallest D is at most the largest of any k+1 of them; symmetrically from above with the
// 64 - k elements of rank >= k. So the DC's large bound, far from the median, does not count,
// and an ambiguous order of the 32nd and 33rd values needs no case of its own (it moves the
// median by at most M). The shader takes M = the largest e_j with g_j within 2 emax of s_31 or
// s_32 (a window at least as wide as needed despite the rounding of the distances). The
// computed median m^ = fl(s_31 + s_32) / 2 is off by at most u |m^|. Hence
//   |(D_i - D_med) - (g_i - m^)| <= e_i + M + u |m^| (+ the CPU median's rounding, < ETA),
// and the CPU bit D_i > D_med equals g_i > m^ whenever |fl(g_i - m^)| exceeds
//   thr = SAFETY * (e_i + M + u |m^|) + ETA
// (SAFETY also absorbs the roundings of fl(g_i - m^) and of thr itself). Otherwise the
// coefficient is uncertain. The flipped hash negates odd-l coefficients exactly (same e_i),
// with its own median and M, and is checked the same way.

struct Params {
    n_images: u32,
    // workgroups per row of the 2-D dispatch grid
    row_groups: u32,
    // 1: also write each image's 64 coefficients and their bounds to `detail`
    want_detail: u32,
    _pad: u32,
}

const SIDE: u32 = 32u;
const HALF: u32 = 16u;
const BLOCK: u32 = 8u;
const N: u32 = 64u;
// 2^-23: one ulp, relative.
const U: f32 = 1.1920929e-7;
const SAFETY: f32 = 1.01;
// 2^-10
const ETA: f32 = 0.0009765625;
// 128 * 32 * 32: the DC of a flat image of 128, taken out by centering the levels.
const DC_SHIFT: f32 = 131072.0;
// Words per image in `out`: hash high, hash low, flipped high, flipped low, flags.
const OUT_WORDS: u32 = 5u;

@group(0) @binding(0) var<uniform> params: Params;
// One 32x32 image per input, one level per word (phash_gray32's output).
@group(0) @binding(1) var<storage, read> gray: array<u32>;
// cos(pi k (2n+1) / 64), [k][n], 8 x 32, rounded from f64 on the host.
@group(0) @binding(2) var<storage, read> cosines: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<u32>;
// Per image: 64 coefficients, then their 64 error bounds (only with want_detail).
@group(0) @binding(4) var<storage, read_write> detail: array<f32>;

var<workgroup> t: array<f32, 256>;
var<workgroup> t_err: array<f32, 256>;
var<workgroup> coef: array<f32, 64>;
var<workgroup> coef_flip: array<f32, 64>;
var<workgroup> err: array<f32, 64>;
var<workgroup> sorted: array<f32, 64>;
var<workgroup> sorted_flip: array<f32, 64>;
// Per coefficient: bit 0 hash bit, bit 1 its uncertainty, bit 2 flipped bit, bit 3 its
// uncertainty.
var<workgroup> bits: array<u32, 64>;

// Four centered levels of row m, columns n .. n+3.
fn row4(base: u32, m: u32, n: u32) -> vec4<f32> {
    let i = base + m * SIDE + n;
    let v = vec4<i32>(i32(gray[i]), i32(gray[i + 1u]), i32(gray[i + 2u]), i32(gray[i + 3u]));
    return vec4<f32>(v - vec4<i32>(128));
}

fn sign_of(freq: u32) -> f32 {
    return select(1.0, -1.0, (freq & 1u) == 1u);
}

@compute @workgroup_size(64)
fn phash_dct(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let img = wid.y * params.row_groups + wid.x;
    // Uniform across the workgroup, so returning before the barriers is allowed.
    if (img >= params.n_images) {
        return;
    }
    let base = img * SIDE * SIDE;
    let k = li / BLOCK;

    // Pass 1, down the columns: t[k][n] for this invocation's k and 4 columns n0..n0+3.
    let n0 = (li % BLOCK) * 4u;
    let sk = sign_of(k);
    var s = vec4<f32>(0.0);
    var mu = vec4<f32>(0.0);
    for (var m = 0u; m < HALF; m += 1u) {
        let c = cosines[k * SIDE + m];
        // Integers of at most 256 in magnitude: exact.
        let y = row4(base, m, n0) + sk * row4(base, SIDE - 1u - m, n0);
        let p = c * y;
        s += p;
        mu += abs(s) + 3.0 * abs(p);
    }
    let e1 = SAFETY * U * mu;
    for (var j = 0u; j < 4u; j += 1u) {
        t[k * SIDE + n0 + j] = s[j];
        t_err[k * SIDE + n0 + j] = e1[j];
    }
    workgroupBarrier();

    // Pass 2, along the rows: g[k][l].
    let l = li % BLOCK;
    let sl = sign_of(l);
    var acc = 0.0;
    var mu2 = 0.0;
    var carried = 0.0;
    for (var n = 0u; n < HALF; n += 1u) {
        let c = cosines[l * SIDE + n];
        let a = k * SIDE + n;
        let b = k * SIDE + SIDE - 1u - n;
        let y = t[a] + sl * t[b];
        let p = c * y;
        acc += p;
        mu2 += abs(acc) + 3.0 * abs(p);
        carried += abs(c) * (t_err[a] + t_err[b]);
    }
    var g = acc;
    var e = SAFETY * (U * mu2 + carried) + ETA;
    if (li == 0u) {
        g = acc + DC_SHIFT;
        e += SAFETY * U * abs(g);
    }
    let gf = g * sign_of(l);
    coef[li] = g;
    coef_flip[li] = gf;
    err[li] = e;
    workgroupBarrier();

    // Ranks (ties broken by index, so the ranks are a permutation) place each value in the
    // sorted arrays; the largest bound is gathered in the same loop.
    var r = 0u;
    var rf = 0u;
    var emax = 0.0;
    for (var j = 0u; j < N; j += 1u) {
        let v = coef[j];
        let vf = coef_flip[j];
        r += select(0u, 1u, v < g || (v == g && j < li));
        rf += select(0u, 1u, vf < gf || (vf == gf && j < li));
        emax = max(emax, err[j]);
    }
    sorted[r] = g;
    sorted_flip[rf] = gf;
    workgroupBarrier();

    // The median's error: the largest bound among coefficients near the 32nd and 33rd values
    // (see the header; the window is 2 emax wide so that rounding cannot shrink it below emax).
    let a = sorted[31];
    let b = sorted[32];
    let af = sorted_flip[31];
    let bf = sorted_flip[32];
    var m_err = 0.0;
    var m_err_f = 0.0;
    for (var j = 0u; j < N; j += 1u) {
        let v = coef[j];
        let vf = coef_flip[j];
        if (abs(v - a) <= 2.0 * emax || abs(v - b) <= 2.0 * emax) {
            m_err = max(m_err, err[j]);
        }
        if (abs(vf - af) <= 2.0 * emax || abs(vf - bf) <= 2.0 * emax) {
            m_err_f = max(m_err_f, err[j]);
        }
    }
    let med = (a + b) * 0.5;
    let med_f = (af + bf) * 0.5;
    let thr = SAFETY * (e + m_err + U * abs(med)) + ETA;
    let thr_f = SAFETY * (e + m_err_f + U * abs(med_f)) + ETA;
    bits[li] = select(0u, 1u, g > med)
        | select(0u, 2u, !(abs(g - med) > thr))
        | select(0u, 4u, gf > med_f)
        | select(0u, 8u, !(abs(gf - med_f) > thr_f));
    if (params.want_detail == 1u) {
        detail[img * 2u * N + li] = g;
        detail[img * 2u * N + N + li] = e;
    }
    workgroupBarrier();

    if (li == 0u) {
        // Coefficient j is bit 63 - j of the u64: bit 31 - j % 32 of the high word (j < 32)
        // or of the low word.
        var h_hi = 0u;
        var h_lo = 0u;
        var f_hi = 0u;
        var f_lo = 0u;
        var flags = 0u;
        for (var j = 0u; j < N; j += 1u) {
            let shift = 31u - j % 32u;
            let b = bits[j];
            if (j < 32u) {
                h_hi |= (b & 1u) << shift;
                f_hi |= ((b >> 2u) & 1u) << shift;
            } else {
                h_lo |= (b & 1u) << shift;
                f_lo |= ((b >> 2u) & 1u) << shift;
            }
            flags |= ((b >> 1u) & 1u) | (((b >> 3u) & 1u) << 1u);
        }
        let o = img * OUT_WORDS;
        out[o] = h_hi;
        out[o + 1u] = h_lo;
        out[o + 2u] = f_hi;
        out[o + 3u] = f_lo;
        out[o + 4u] = flags;
    }
}
