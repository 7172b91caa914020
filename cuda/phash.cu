// The perceptual hash's 32x32 grayscale image for a batch of RGB8 images (driven by
// src/backend/cuda/phash.rs): Pillow's "L" conversion, then Pillow's LANCZOS resize to 32x32 in
// Pillow's own 22-bit fixed point and pass order, so the result equals the CPU's
// (src/curate/phash.rs `gray32`) bit for bit. The host hashes the 1 KB result per image with the
// CPU's own f64 DCT, so the hashes equal the CPU's by construction.
//
// Two launches, as Pillow's two passes with their 8-bit intermediate:
//   phash_first_pass:  every intermediate value of every image (in_h x 32 when the horizontal
//                      pass runs first, 32 x in_w when the vertical one does), computed from the
//                      luma of the source pixels under its taps. The work is linear in the image
//                      size: each source pixel's luma is read by the few taps that cover it.
//   phash_second_pass: the 32x32 output of every image from its intermediate.
// The host decides the pass order (Pillow 13's rule) and computes every table.
//
// No headers: NVRTC compiles this file alone, and the CPU emulator of the tests compiles it too.

#define SIDE 32
#define PRECISION 22
#define THREADS 256

// Per image, 8 x i64.
#define PJ_SRC 0       // device pointer of the RGB8 image
#define PJ_W 1
#define PJ_H 2
#define PJ_VFIRST 3    // 1: Pillow resamples the columns (vertical pass) first
#define PJ_HCOEF 4     // `pos` index of output column 0 of the width -> 32 table
#define PJ_VCOEF 5     // `pos` index of output row 0 of the height -> 32 table
#define PJ_SCRATCH 6   // byte offset of the image's intermediate in `scratch`
#define PJ_BLOCK0 7    // first block of the image in phash_first_pass's flat grid
#define PJ_FIELDS 8

// Pillow's RGB -> "L": ITU-R 601-2 luma in 16-bit fixed point, rounded.
__device__ __forceinline__ int luma(const unsigned char* p) {
    return (int)(((unsigned int)p[0] * 19595u + (unsigned int)p[1] * 38470u +
                  (unsigned int)p[2] * 7471u + 0x8000u) >> 16);
}

// Pillow's clip8: the half was added up front; drop the fraction bits, clamp to a level.
__device__ __forceinline__ unsigned char clip8(int acc) {
    const int v = acc >> PRECISION;
    return (unsigned char)(v < 0 ? 0 : (v > 255 ? 255 : v));
}

extern "C" __global__ void phash_first_pass(const long long* __restrict__ jobs, int n_images,
                                            const unsigned int* __restrict__ pos,
                                            const int* __restrict__ weights,
                                            unsigned char* __restrict__ scratch) {
    const long long b = blockIdx.x;
    const int j = find_job(jobs, n_images, PJ_FIELDS, PJ_BLOCK0, b);
    const long long* job = jobs + (long long)j * PJ_FIELDS;
    const long long w = job[PJ_W], h = job[PJ_H];
    const bool vfirst = job[PJ_VFIRST] != 0;
    const long long e = (b - job[PJ_BLOCK0]) * THREADS + threadIdx.x;
    // The intermediate is `rows` x `cols`: in_h x 32, or 32 x in_w.
    const long long cols = vfirst ? w : SIDE;
    const long long rows = vfirst ? SIDE : h;
    if (e >= rows * cols) {
        return;
    }
    const long long row = e / cols, col = e - (e / cols) * cols;
    const unsigned char* src = (const unsigned char*)job[PJ_SRC];
    // Taps run down source column `col` to output row `row`, or along source row `row` to
    // output column `col`.
    const unsigned int* p = pos + (job[vfirst ? PJ_VCOEF : PJ_HCOEF] + (vfirst ? row : col)) * 3;
    const long long start = p[0];
    const unsigned int count = p[1];
    const int* k = weights + p[2];
    const unsigned char* first = vfirst ? src + (start * w + col) * 3 : src + (row * w + start) * 3;
    const long long stride = vfirst ? w * 3 : 3;
    int acc = 1 << (PRECISION - 1);
    for (unsigned int i = 0; i < count; ++i) {
        acc += k[i] * luma(first + i * stride);
    }
    scratch[job[PJ_SCRATCH] + e] = clip8(acc);
}

// SIDE * SIDE / THREADS = 4 blocks per image; `out` holds 1024 levels per image, row-major.
extern "C" __global__ void phash_second_pass(const long long* __restrict__ jobs,
                                             const unsigned int* __restrict__ pos,
                                             const int* __restrict__ weights,
                                             const unsigned char* __restrict__ scratch,
                                             unsigned char* __restrict__ out) {
    const long long img = blockIdx.x / (SIDE * SIDE / THREADS);
    const int e = (blockIdx.x % (SIDE * SIDE / THREADS)) * THREADS + threadIdx.x;
    const int x = e % SIDE, y = e / SIDE;
    const long long* job = jobs + img * PJ_FIELDS;
    const long long w = job[PJ_W];
    const bool vfirst = job[PJ_VFIRST] != 0;
    const unsigned char* inter = scratch + job[PJ_SCRATCH];
    // Taps run along intermediate row y (32 x in_w) to column x, or down intermediate column x
    // (in_h x 32) to row y.
    const unsigned int* p = pos + (job[vfirst ? PJ_HCOEF : PJ_VCOEF] + (vfirst ? x : y)) * 3;
    const long long start = p[0];
    const unsigned int count = p[1];
    const int* k = weights + p[2];
    const unsigned char* first = vfirst ? inter + y * w + start : inter + start * SIDE + x;
    const long long stride = vfirst ? 1 : SIDE;
    int acc = 1 << (PRECISION - 1);
    for (unsigned int i = 0; i < count; ++i) {
        acc += k[i] * (int)first[i * stride];
    }
    out[img * SIDE * SIDE + e] = clip8(acc);
}
