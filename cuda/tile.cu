//! Fused resize + tile + normalize into the batch tensor (driven by src/backend/cuda/tile.rs).
//!
//! Pillow-style separable convolution in two launches per batch:
//!   tile_hpass: every source row of an image, resampled horizontally to the full resized width
//!               (or the thumbnail side) into an RGB8 scratch image; rounded and clamped to u8
//!               as Pillow and fast_image_resize do between their passes, so the vertical pass
//!               sees the same intermediate values as the CPU reference.
//!   tile_vpass: every output pixel of every tile, resampled vertically from that scratch at the
//!               tile's rows/columns of the full resize, then written once at its final offset in
//!               the batch tensor: u8 HWC, or CHW through a per-level encoding table (the host
//!               computes the normalized value of each u8 level and its f32/f16/bf16 bits with the
//!               CPU's exact arithmetic, so float outputs match bit for bit given equal levels and
//!               no float conversion or fast-math division happens here).
//!
//! Kernel weights are computed on the host (Pillow's precompute_coeffs, normalized in f64, stored
//! as f32): `pos` holds per output position (first source index, tap count, weight offset).
//! Both launches are one flat 1-D grid over all jobs of the batch: each job owns a contiguous
//! range of blocks (its `block_start`), found by binary search, so one launch covers images and
//! tiles of any size without idle blocks. Blocks are 32 x 8 threads: x across output columns
//! (coalesced scratch/output accesses), y across rows.

#define TILE_BX 32
#define TILE_BY 8

// Horizontal job: one (image, target width) pair. 8 x i64 per job.
#define HJ_SRC 0         // device pointer of the RGB8 source image
#define HJ_IN_W 1        // source width
#define HJ_IN_H 2        // source height (= rows produced)
#define HJ_OUT_W 3       // width resampled to
#define HJ_COEF 4        // index in `pos` of output column 0
#define HJ_SCRATCH 5     // byte offset of the job's scratch image (in_h x out_w x 3)
#define HJ_BLOCK0 6      // first block of the job in the flat grid
#define HJ_BLOCKS_X 7    // blocks across out_w
#define HJ_FIELDS 8

// Vertical job: one output tile. 10 x i64 per job.
#define VJ_SCRATCH 0     // byte offset of the scratch image the tile reads
#define VJ_INTER_W 1     // width of that scratch image (full resized width or thumbnail side)
#define VJ_X0 2          // tile origin in the full resize
#define VJ_Y0 3
#define VJ_TW 4          // tile size
#define VJ_TH 5
#define VJ_COEF 6        // index in `pos` of output row 0 of the full resize
#define VJ_OUT 7         // byte offset of the tile in the batch tensor
#define VJ_BLOCK0 8
#define VJ_BLOCKS_X 9
#define VJ_FIELDS 10

// The job owning flat block `b`: the last job whose first block is <= b (jobs are in order and
// job 0 starts at block 0).
__device__ __forceinline__ int find_job(const long long* jobs, int njobs, int fields, int first,
                                        long long b) {
    int lo = 0, hi = njobs - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (jobs[(long long)mid * fields + first] <= b) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}

// Round half up and clamp to a level: Pillow's (acc + half) >> bits then clip8.
__device__ __forceinline__ unsigned int to_level(float acc) {
    float r = floorf(acc + 0.5f);
    r = fminf(fmaxf(r, 0.0f), 255.0f);
    return (unsigned int)r;
}

extern "C" __global__ void tile_hpass(const long long* __restrict__ jobs, int njobs,
                                      const int* __restrict__ pos,
                                      const float* __restrict__ weights,
                                      unsigned char* __restrict__ scratch) {
    const long long b = blockIdx.x;
    const int j = find_job(jobs, njobs, HJ_FIELDS, HJ_BLOCK0, b);
    const long long* job = jobs + (long long)j * HJ_FIELDS;
    const long long local = b - job[HJ_BLOCK0];
    const long long bx = job[HJ_BLOCKS_X];
    const long long x = (local % bx) * TILE_BX + threadIdx.x;
    const long long row = (local / bx) * TILE_BY + threadIdx.y;
    const long long in_w = job[HJ_IN_W];
    const long long out_w = job[HJ_OUT_W];
    if (x >= out_w || row >= job[HJ_IN_H]) {
        return;
    }
    const int* p = pos + (job[HJ_COEF] + x) * 3;
    const int start = p[0], count = p[1], woff = p[2];
    const unsigned char* src =
        (const unsigned char*)job[HJ_SRC] + (row * in_w + start) * 3;
    const float* w = weights + woff;
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f;
    for (int k = 0; k < count; ++k) {
        const float wk = w[k];
        a0 += wk * (float)src[3 * k];
        a1 += wk * (float)src[3 * k + 1];
        a2 += wk * (float)src[3 * k + 2];
    }
    unsigned char* dst = scratch + job[HJ_SCRATCH] + (row * out_w + x) * 3;
    dst[0] = (unsigned char)to_level(a0);
    dst[1] = (unsigned char)to_level(a1);
    dst[2] = (unsigned char)to_level(a2);
}

// dtype: 0 u8 (HWC levels), 1 f32, 2 f16, 3 bf16 (CHW, `enc[c * 256 + level]` holds the element's
// bits: all 32 for f32, the low 16 for f16/bf16).
extern "C" __global__ void tile_vpass(const long long* __restrict__ jobs, int njobs,
                                      const int* __restrict__ pos,
                                      const float* __restrict__ weights,
                                      const unsigned char* __restrict__ scratch,
                                      unsigned char* __restrict__ out, int dtype,
                                      const unsigned int* __restrict__ enc) {
    const long long b = blockIdx.x;
    const int j = find_job(jobs, njobs, VJ_FIELDS, VJ_BLOCK0, b);
    const long long* job = jobs + (long long)j * VJ_FIELDS;
    const long long local = b - job[VJ_BLOCK0];
    const long long bx = job[VJ_BLOCKS_X];
    const long long x = (local % bx) * TILE_BX + threadIdx.x;
    const long long y = (local / bx) * TILE_BY + threadIdx.y;
    const long long tw = job[VJ_TW];
    const long long th = job[VJ_TH];
    if (x >= tw || y >= th) {
        return;
    }
    const long long inter_w = job[VJ_INTER_W];
    const int* p = pos + (job[VJ_COEF] + job[VJ_Y0] + y) * 3;
    const int start = p[0], count = p[1], woff = p[2];
    const unsigned char* col =
        scratch + job[VJ_SCRATCH] + ((long long)start * inter_w + job[VJ_X0] + x) * 3;
    const long long stride = inter_w * 3;
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
    unsigned char* tile = out + job[VJ_OUT];
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
