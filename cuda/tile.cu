//! Fused resize + tile + normalize into the batch tensor (driven by src/backend/cuda/tile.rs).
//!
//! Pillow-style separable convolution in two launches per batch, in Pillow 13's pass order for
//! each (image, target size): vertical first when the height shrinks by more than twice as many
//! pixels as the width (`pillow_resample::vertical_pass_first`), else horizontal first.
//!   tile_first_pass:  the first axis of every (image, target) pair, resampled into an RGB8
//!                     scratch image (in_h x resized width, or resized height x in_w); rounded
//!                     and clamped to u8 as Pillow does between its passes, so the second pass
//!                     sees the same intermediate values as the Pillow reference.
//!   tile_second_pass: every output pixel of every tile, resampled along the other axis from
//!                     that scratch at the tile's rows/columns of the full resize, then written
//!                     once at its final offset in the batch tensor: u8 HWC, or CHW through a
//!                     per-level encoding table (the host computes the normalized value of each u8
//!                     level and its f32/f16/bf16 bits with the CPU's exact arithmetic, so float
//!                     outputs match bit for bit given equal levels and no float conversion or
//!                     fast-math division happens here).
//!
//! Kernel weights are computed on the host (Pillow's precompute_coeffs, normalized in f64, stored
//! as f32): `pos` holds per output position (first source index, tap count, weight offset).
//! Both launches are one flat 1-D grid over all jobs of the batch: each job owns a contiguous
//! range of blocks (its `block_start`), found by binary search, so one launch covers images and
//! tiles of any size without idle blocks. Blocks are 32 x 8 threads: x across output columns
//! (coalesced scratch/output accesses), y across rows.

#define TILE_BX 32
#define TILE_BY 8

// First-pass job: one (image, target size) pair. 9 x i64 per job.
#define FJ_SRC 0         // device pointer of the RGB8 source image
#define FJ_IN_W 1        // source width (its row pitch in pixels)
#define FJ_OUT_W 2       // scratch width: the target width, or in_w when vertical first
#define FJ_OUT_H 3       // scratch rows: in_h, or the target height when vertical first
#define FJ_COEF 4        // index in `pos` of output position 0 of the first pass's axis
#define FJ_SCRATCH 5     // byte offset of the job's scratch image (FJ_OUT_H x FJ_OUT_W x 3)
#define FJ_BLOCK0 6      // first block of the job in the flat grid
#define FJ_BLOCKS_X 7    // blocks across FJ_OUT_W
#define FJ_VFIRST 8      // 1: the first pass is the vertical one
#define FJ_FIELDS 9

// Second-pass job: one output tile. 11 x i64 per job.
#define SJ_SCRATCH 0     // byte offset of the scratch image the tile reads
#define SJ_INTER_W 1     // width of that scratch image
#define SJ_X0 2          // tile origin in the full resize
#define SJ_Y0 3
#define SJ_TW 4          // tile size
#define SJ_TH 5
#define SJ_COEF 6        // index in `pos` of output position 0 of the second pass's axis
#define SJ_OUT 7         // byte offset of the tile in the batch tensor
#define SJ_BLOCK0 8
#define SJ_BLOCKS_X 9
#define SJ_VFIRST 10     // 1: the first pass was vertical, so this one is horizontal
#define SJ_FIELDS 11

// Round half up and clamp to a level: Pillow's (acc + half) >> bits then clip8.
__device__ __forceinline__ unsigned int to_level(float acc) {
    float r = floorf(acc + 0.5f);
    r = fminf(fmaxf(r, 0.0f), 255.0f);
    return (unsigned int)r;
}

extern "C" __global__ void tile_first_pass(const long long* __restrict__ jobs, int njobs,
                                           const int* __restrict__ pos,
                                           const float* __restrict__ weights,
                                           unsigned char* __restrict__ scratch) {
    const long long b = blockIdx.x;
    const int j = find_job(jobs, njobs, FJ_FIELDS, FJ_BLOCK0, b);
    const long long* job = jobs + (long long)j * FJ_FIELDS;
    const long long local = b - job[FJ_BLOCK0];
    const long long bx = job[FJ_BLOCKS_X];
    const long long x = (local % bx) * TILE_BX + threadIdx.x;
    const long long row = (local / bx) * TILE_BY + threadIdx.y;
    const long long in_w = job[FJ_IN_W];
    const long long out_w = job[FJ_OUT_W];
    if (x >= out_w || row >= job[FJ_OUT_H]) {
        return;
    }
    const bool vfirst = job[FJ_VFIRST] != 0;
    // Taps run down the source column x, or along the source row `row`.
    const int* p = pos + (job[FJ_COEF] + (vfirst ? row : x)) * 3;
    const int start = p[0], count = p[1], woff = p[2];
    const unsigned char* base = (const unsigned char*)job[FJ_SRC];
    const unsigned char* src =
        base + (vfirst ? (long long)start * in_w + x : row * in_w + start) * 3;
    const long long stride = vfirst ? in_w * 3 : 3;
    const float* w = weights + woff;
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f;
    for (int k = 0; k < count; ++k) {
        const float wk = w[k];
        const unsigned char* s = src + k * stride;
        a0 += wk * (float)s[0];
        a1 += wk * (float)s[1];
        a2 += wk * (float)s[2];
    }
    unsigned char* dst = scratch + job[FJ_SCRATCH] + (row * out_w + x) * 3;
    dst[0] = (unsigned char)to_level(a0);
    dst[1] = (unsigned char)to_level(a1);
    dst[2] = (unsigned char)to_level(a2);
}

// dtype: 0 u8 (HWC levels), 1 f32, 2 f16, 3 bf16 (CHW, `enc[c * 256 + level]` holds the element's
// bits: all 32 for f32, the low 16 for f16/bf16).
extern "C" __global__ void tile_second_pass(const long long* __restrict__ jobs, int njobs,
                                            const int* __restrict__ pos,
                                            const float* __restrict__ weights,
                                            const unsigned char* __restrict__ scratch,
                                            unsigned char* __restrict__ out, int dtype,
                                            const unsigned int* __restrict__ enc) {
    const long long b = blockIdx.x;
    const int j = find_job(jobs, njobs, SJ_FIELDS, SJ_BLOCK0, b);
    const long long* job = jobs + (long long)j * SJ_FIELDS;
    const long long local = b - job[SJ_BLOCK0];
    const long long bx = job[SJ_BLOCKS_X];
    const long long x = (local % bx) * TILE_BX + threadIdx.x;
    const long long y = (local / bx) * TILE_BY + threadIdx.y;
    const long long tw = job[SJ_TW];
    const long long th = job[SJ_TH];
    if (x >= tw || y >= th) {
        return;
    }
    const long long inter_w = job[SJ_INTER_W];
    const long long fx = job[SJ_X0] + x, fy = job[SJ_Y0] + y;  // position in the full resize
    const bool vfirst = job[SJ_VFIRST] != 0;
    // Taps run along scratch row fy (the first pass was vertical), or down scratch column fx.
    const int* p = pos + (job[SJ_COEF] + (vfirst ? fx : fy)) * 3;
    const int start = p[0], count = p[1], woff = p[2];
    const unsigned char* col = scratch + job[SJ_SCRATCH] +
                               (vfirst ? fy * inter_w + start : (long long)start * inter_w + fx) * 3;
    const long long stride = vfirst ? 3 : inter_w * 3;
    const float* w = weights + woff;
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f;
    for (int k = 0; k < count; ++k) {
        const float wk = w[k];
        const unsigned char* s = col + k * stride;
        a0 += wk * (float)s[0];
        a1 += wk * (float)s[1];
        a2 += wk * (float)s[2];
    }
    const unsigned int l0 = to_level(a0), l1 = to_level(a1), l2 = to_level(a2);
    unsigned char* tile = out + job[SJ_OUT];
    const long long i = y * tw + x;
    if (dtype == 0) {
        tile[i * 3] = (unsigned char)l0;
        tile[i * 3 + 1] = (unsigned char)l1;
        tile[i * 3 + 2] = (unsigned char)l2;
    } else {
        const long long plane = tw * th;
        if (dtype == 1) {
            unsigned int* t = (unsigned int*)tile;
            t[i] = enc[l0];
            t[plane + i] = enc[256 + l1];
            t[2 * plane + i] = enc[512 + l2];
        } else {
            unsigned short* t = (unsigned short*)tile;
            t[i] = (unsigned short)enc[l0];
            t[plane + i] = (unsigned short)enc[256 + l1];
            t[2 * plane + i] = (unsigned short)enc[512 + l2];
        }
    }
}
