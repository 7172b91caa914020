// Fused resize + tile + normalize of a whole batch into the batch tensor, in one dispatch
// (driven by src/backend/wgpu/tile.rs).
//
// One invocation writes one u32 word of the batch tensor: 4 u8 levels, 2 f16/bf16 halves or one
// f32. A word may straddle two tiles (tile sizes need not be multiples of 4 bytes), so each
// element finds its own tile by binary search over the jobs' first elements; every word is
// written by exactly one invocation, so no atomics and no partial-word races.
//
// Each element is one output pixel's channel, resampled separably with the CPU backend's
// integer arithmetic (fast_image_resize's u8 convolution; the host computes its coefficients
// for each tile's own crop box, see src/backend/wgpu/fir_fixed.rs): for each horizontal tap
// column, 2^(p-1) + the vertical taps' sum in i32, shifted right by p and clamped to a u8 level
// (the CPU's u8 intermediate image); then the same over those levels with the horizontal
// weights. Integer sums are exact, so the levels equal the CPU's bit for bit. `pos` holds per
// output position (first source index, taps, weight offset). The level is mapped to the output
// element through a host-made table `enc[c * 256 + level]` (the CPU's exact normalize
// arithmetic and f16/bf16 rounding), so float outputs equal the CPU's too.
//
// Two passes, for strong downscales on drivers with a loop limit (Mesa llvmpipe stops every
// loop of an invocation after 65,535 iterations in total): a tile whose job names an
// intermediate (J_INTER) has its u8 intermediate (the vertical sums, for every source column
// its horizontal windows touch) computed first by `tile_vertical`, one invocation per level,
// and `tile_batch` then only runs the horizontal taps over those stored levels. Same integer
// arithmetic, same levels; taps per invocation become vk (first pass) and hk (second) instead
// of hk x vk.

// `tile_vertical` reads n_jobs as the number of `vjobs` and total_words as the number of
// intermediate levels.
struct Params {
    n_jobs: u32,
    total_elems: u32,
    total_words: u32,
    // 0 u8, 1 f32, 2 f16 or bf16 (the bits come from `enc`)
    dtype: u32,
    // invocations per row of the 2-D dispatch grid (x groups × 256)
    row_stride: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

// Per tile: first element in the batch, source byte offset, source width, tile width, tile
// height, `pos` index of the tile's output column 0 / row 0, precision (fraction bits) of the
// horizontal / vertical weights, word offset of its intermediate in `inter` (NO_INTER: none,
// single pass), first source column of the intermediate and its width.
const J_START: u32 = 0u;
const J_SRC: u32 = 1u;
const J_IN_W: u32 = 2u;
const J_TW: u32 = 3u;
const J_TH: u32 = 4u;
const J_HCOEF: u32 = 5u;
const J_VCOEF: u32 = 6u;
const J_HPREC: u32 = 7u;
const J_VPREC: u32 = 8u;
const J_INTER: u32 = 9u;
const J_SPAN0: u32 = 10u;
const J_SPANW: u32 = 11u;
const J_FIELDS: u32 = 12u;
const NO_INTER: u32 = 0xffffffffu;

@group(0) @binding(0) var<uniform> params: Params;
// RGB8 pixels of every image of the batch, back to back, 4 bytes per word (little-endian).
@group(0) @binding(1) var<storage, read> src: array<u32>;
@group(0) @binding(2) var<storage, read> jobs: array<u32>;
@group(0) @binding(3) var<storage, read> pos: array<u32>;
@group(0) @binding(4) var<storage, read> weights: array<i32>;
@group(0) @binding(5) var<storage, read> enc: array<u32>;
@group(0) @binding(6) var<storage, read_write> out: array<u32>;
// Intermediate levels of two-pass tiles: per tile, rows x span columns x 3 channels.
@group(0) @binding(7) var<storage, read_write> inter: array<u32>;
// Indices of the two-pass jobs, in increasing order of their J_INTER.
@group(0) @binding(8) var<storage, read> vjobs: array<u32>;

fn src_byte(i: u32) -> i32 {
    return i32((src[i >> 2u] >> ((i & 3u) * 8u)) & 0xffu);
}

// The CPU's clip: drop the `prec` fraction bits (arithmetic shift: a negative sum stays
// negative) and clamp to a level. The half was added up front.
fn to_level(acc: i32, prec: u32) -> i32 {
    return clamp(acc >> prec, 0, 255);
}

// The job (tile) holding batch element `e`: the last job whose first element is <= e.
fn find_job(e: u32) -> u32 {
    var lo = 0u;
    var hi = params.n_jobs - 1u;
    while (lo < hi) {
        let mid = (lo + hi + 1u) >> 1u;
        if (jobs[mid * J_FIELDS + J_START] <= e) {
            lo = mid;
        } else {
            hi = mid - 1u;
        }
    }
    return lo;
}

// The level of channel `c` of pixel (x, y) of tile `j`.
fn level(j: u32, c: u32, x: u32, y: u32) -> u32 {
    let base = j * J_FIELDS;
    let hp = (jobs[base + J_HCOEF] + x) * 3u;
    let vp = (jobs[base + J_VCOEF] + y) * 3u;
    let hstart = pos[hp];
    let hcount = pos[hp + 1u];
    let hw = pos[hp + 2u];
    let vstart = pos[vp];
    let vcount = pos[vp + 1u];
    let vw = pos[vp + 2u];
    let hprec = jobs[base + J_HPREC];
    let vprec = jobs[base + J_VPREC];
    var acc = 1i << (hprec - 1u);
    let inter_at = jobs[base + J_INTER];
    if (inter_at != NO_INTER) {
        // Second pass of a two-pass tile: the vertical sums are already levels in `inter`.
        let row = inter_at + (y * jobs[base + J_SPANW] + hstart - jobs[base + J_SPAN0]) * 3u + c;
        for (var i = 0u; i < hcount; i += 1u) {
            acc += weights[hw + i] * i32(inter[row + i * 3u]);
        }
        return u32(to_level(acc, hprec));
    }
    let row_bytes = jobs[base + J_IN_W] * 3u;
    let origin = jobs[base + J_SRC] + c;
    for (var i = 0u; i < hcount; i += 1u) {
        let col = origin + (hstart + i) * 3u;
        var v = 1i << (vprec - 1u);
        for (var k = 0u; k < vcount; k += 1u) {
            v += weights[vw + k] * src_byte(col + (vstart + k) * row_bytes);
        }
        acc += weights[hw + i] * to_level(v, vprec);
    }
    return u32(to_level(acc, hprec));
}

// The output bits of batch element `e` (u8: the level; floats: its encoding).
fn element(e: u32) -> u32 {
    let j = find_job(e);
    let base = j * J_FIELDS;
    let local = e - jobs[base + J_START];
    let tw = jobs[base + J_TW];
    let th = jobs[base + J_TH];
    if (params.dtype == 0u) {
        // HWC
        let p = local / 3u;
        return level(j, local % 3u, p % tw, p / tw);
    }
    // CHW
    let plane = tw * th;
    let c = local / plane;
    let p = local % plane;
    return enc[c * 256u + level(j, c, p % tw, p / tw)];
}

@compute @workgroup_size(256)
fn tile_batch(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = gid.y * params.row_stride + gid.x;
    if (w >= params.total_words) {
        return;
    }
    var word = 0u;
    if (params.dtype == 1u) {
        word = element(w);
    } else if (params.dtype == 2u) {
        for (var k = 0u; k < 2u; k += 1u) {
            let e = w * 2u + k;
            if (e < params.total_elems) {
                word |= (element(e) & 0xffffu) << (16u * k);
            }
        }
    } else {
        for (var k = 0u; k < 4u; k += 1u) {
            let e = w * 4u + k;
            if (e < params.total_elems) {
                word |= (element(e) & 0xffu) << (8u * k);
            }
        }
    }
    out[w] = word;
}

// The two-pass job holding intermediate level `w`: the last of `vjobs` whose intermediate
// starts at or before it.
fn find_vjob(w: u32) -> u32 {
    var lo = 0u;
    var hi = params.n_jobs - 1u;
    while (lo < hi) {
        let mid = (lo + hi + 1u) >> 1u;
        if (jobs[vjobs[mid] * J_FIELDS + J_INTER] <= w) {
            lo = mid;
        } else {
            hi = mid - 1u;
        }
    }
    return vjobs[lo];
}

// First pass of two-pass tiles: one intermediate level per invocation, the vertical taps of
// one source column at one output row, clipped to a level exactly as in `level`.
@compute @workgroup_size(256)
fn tile_vertical(@builtin(global_invocation_id) gid: vec3<u32>) {
    let w = gid.y * params.row_stride + gid.x;
    if (w >= params.total_words) {
        return;
    }
    let j = find_vjob(w);
    let base = j * J_FIELDS;
    let local = w - jobs[base + J_INTER];
    let c = local % 3u;
    let p = local / 3u;
    let span_w = jobs[base + J_SPANW];
    let sx = jobs[base + J_SPAN0] + p % span_w;
    let y = p / span_w;
    let vp = (jobs[base + J_VCOEF] + y) * 3u;
    let vstart = pos[vp];
    let vcount = pos[vp + 1u];
    let vw = pos[vp + 2u];
    let vprec = jobs[base + J_VPREC];
    let row_bytes = jobs[base + J_IN_W] * 3u;
    let col = jobs[base + J_SRC] + c + sx * 3u;
    var v = 1i << (vprec - 1u);
    for (var k = 0u; k < vcount; k += 1u) {
        v += weights[vw + k] * src_byte(col + (vstart + k) * row_bytes);
    }
    inter[w] = u32(to_level(v, vprec));
}
