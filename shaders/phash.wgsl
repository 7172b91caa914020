// The 32x32 grayscale image of the perceptual hash, for a batch of RGB8 images, in one dispatch
// (driven by src/backend/wgpu/phash.rs): Pillow's "L" conversion, then Pillow's LANCZOS resize
// to 32x32 in Pillow's own integer fixed point, so the result equals the CPU's
// (src/curate/phash.rs `gray32`, through src/image/pillow_resample.rs) bit for bit.
//
// One invocation computes one output pixel. Pillow resizes in two passes through an 8-bit
// intermediate; which pass runs first changes the rounding, so each image's job says which
// (Pillow 13's rule, decided on the host). The intermediate is never stored: for each tap of
// the second pass the invocation computes the first pass's value there (sum of weight x luma,
// plus half, shifted by 22 bits, clamped to 0..255), exactly the value Pillow stores. That
// redoes first-pass work shared between neighbouring pixels, which keeps this to one dispatch
// and no scratch buffer; the work per pixel is taps(x) x taps(y) lumas.
//
// An axis whose size is already 32 is not resampled by Pillow; the host gives it one tap of
// weight 2^22, which is exactly the identity.

struct Params {
    n_images: u32,
    // invocations per row of the 2-D dispatch grid (x groups x 256)
    row_stride: u32,
    _pad0: u32,
    _pad1: u32,
}

const SIDE: u32 = 32u;
const PRECISION: u32 = 22u;

// Per image: source byte offset, source width, 1 when the vertical pass runs first, `pos`
// index of output column 0 / output row 0.
const J_SRC: u32 = 0u;
const J_W: u32 = 1u;
const J_VFIRST: u32 = 2u;
const J_HCOEF: u32 = 3u;
const J_VCOEF: u32 = 4u;
const J_FIELDS: u32 = 5u;

@group(0) @binding(0) var<uniform> params: Params;
// RGB8 pixels of every image of the batch, back to back, 4 bytes per word (little-endian).
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read> jobs: array<u32>;
// Per output position: first source index, taps, offset of its first weight.
@group(0) @binding(3) var<storage, read> pos: array<u32>;
// Pillow's weights in 22-bit fixed point.
@group(0) @binding(4) var<storage, read> weights: array<i32>;
// One 32x32 image per input, one level per word.
@group(0) @binding(5) var<storage, read_write> out: array<u32>;

fn src_byte(i: u32) -> u32 {
    return (src[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu;
}

// Pillow's RGB -> "L": ITU-R 601-2 luma in 16-bit fixed point, rounded.
fn luma(origin: u32, width: u32, x: u32, y: u32) -> i32 {
    let i = origin + 3u * (y * width + x);
    let l = src_byte(i) * 19595u + src_byte(i + 1u) * 38470u + src_byte(i + 2u) * 7471u + 0x8000u;
    return i32(l >> 16u);
}

// Pillow's clip8: drop the fraction bits (the half was added up front), clamp to a level.
fn clip8(acc: i32) -> i32 {
    return clamp(acc >> PRECISION, 0, 255);
}

@compute @workgroup_size(256)
fn phash_gray32(@builtin(global_invocation_id) gid: vec3<u32>) {
    let e = gid.y * params.row_stride + gid.x;
    if (e >= params.n_images * SIDE * SIDE) {
        return;
    }
    let img = e / (SIDE * SIDE);
    let x = e % SIDE;
    let y = (e / SIDE) % SIDE;
    let base = img * J_FIELDS;
    let origin = jobs[base + J_SRC];
    let width = jobs[base + J_W];
    let hp = (jobs[base + J_HCOEF] + x) * 3u;
    let vp = (jobs[base + J_VCOEF] + y) * 3u;
    let hstart = pos[hp];
    let hcount = pos[hp + 1u];
    let hw = pos[hp + 2u];
    let vstart = pos[vp];
    let vcount = pos[vp + 1u];
    let vw = pos[vp + 2u];
    let half = 1i << (PRECISION - 1u);
    var acc = half;
    if (jobs[base + J_VFIRST] == 1u) {
        // Vertical pass first: the intermediate holds columns resampled to 32 rows.
        for (var i = 0u; i < hcount; i += 1u) {
            var t = half;
            for (var k = 0u; k < vcount; k += 1u) {
                t += weights[vw + k] * luma(origin, width, hstart + i, vstart + k);
            }
            acc += weights[hw + i] * clip8(t);
        }
    } else {
        // Horizontal pass first: the intermediate holds rows resampled to 32 columns.
        for (var k = 0u; k < vcount; k += 1u) {
            var t = half;
            for (var i = 0u; i < hcount; i += 1u) {
                t += weights[hw + i] * luma(origin, width, hstart + i, vstart + k);
            }
            acc += weights[vw + k] * clip8(t);
        }
    }
    out[e] = u32(clip8(acc));
}
