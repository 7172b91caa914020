// SigLIP tensor ops that cuBLAS does not cover, for src/backend/cuda/tensor.rs.
//
// Conventions: matrices are row-major f32; element counts are `long long` so that a large batch
// cannot overflow 32-bit indexing; elementwise kernels use grid-stride loops, so the host may
// cap the grid size. Compiled by NVRTC with --use_fast_math: `tanhf` and `expf` would then be
// hardware approximations (tanh.approx has ~1e-3 relative error), so GELU-tanh is written as
// x·sigmoid(2u) on exp2f, and softmax uses exp2f, whose fast form (ex2.approx) is accurate to
// ~2 ulp. No headers: NVRTC ships none we rely on; bf16 rounding (`bf16_bits`, on the bits) and
// the masks come from cuda/common.cuh.

// ---- reductions ---------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

// Sum over the whole block, returned to every thread. `scratch` holds 32 floats; the leading
// __syncthreads makes it safe to call twice in a row with the same scratch.
__device__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = (threadIdx.x < nwarps) ? scratch[threadIdx.x] : 0.f;
    if (warp == 0) {
        t = warp_sum(t);
        if (lane == 0) scratch[0] = t;
    }
    __syncthreads();
    return scratch[0];
}

__device__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float t = (threadIdx.x < nwarps) ? scratch[threadIdx.x] : NEG_INF;
    if (warp == 0) {
        t = warp_max(t);
        if (lane == 0) scratch[0] = t;
    }
    __syncthreads();
    return scratch[0];
}

// ---- layer norm ---------------------------------------------------------------------------

// One block per row (gridDim.x = rows, blockDim.x a multiple of 32, at most 1024). Two passes
// (mean, then the centred sum of squares) rather than E[x²]−E[x]², which cancels badly for rows
// with a large mean. Biased variance, as torch's LayerNorm. `yb`, when not null, also receives
// y in bf16: the operand the next GEMM needs, written here instead of in a pass of its own.
extern "C" __global__ void layer_norm(const float* __restrict__ x, const float* __restrict__ gamma,
                                      const float* __restrict__ beta, float* __restrict__ y,
                                      unsigned short* __restrict__ yb, int cols, float eps) {
    __shared__ float scratch[32];
    const long long row = blockIdx.x;
    const float* xr = x + row * cols;
    float* yr = y + row * cols;
    float s = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) s += xr[c];
    const float mean = block_sum(s, scratch) / (float)cols;
    float q = 0.f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float d = xr[c] - mean;
        q += d * d;
    }
    const float var = block_sum(q, scratch) / (float)cols;
    const float inv = rsqrtf(var + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        const float v = (xr[c] - mean) * inv * gamma[c] + beta[c];
        yr[c] = v;
        if (yb) yb[row * cols + c] = bf16_bits(v);
    }
}

// ---- elementwise ----------------------------------------------------------------------------

#define GRID_STRIDE(i, n)                                                             \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (long long)gridDim.x * blockDim.x)

// gelu_pytorch_tanh: 0.5·x·(1 + tanh(u)) = x / (1 + exp(−2u)), u = √(2/π)(x + 0.044715x³).
// exp(−2u) = 2^(−2u·log2 e). For large negative u the denominator overflows to +inf and the
// result is −0, which is what the exact formula rounds to.
__device__ __forceinline__ float gelu_tanh_of(float v) {
    const float k = 0.7978845608028654f;         // √(2/π)
    const float m2log2e = -2.8853900817779268f;  // −2·log2(e)
    const float u = k * (v + 0.044715f * v * v * v);
    return v / (1.f + exp2f(m2log2e * u));
}

// gelu (erf form): 0.5·x·(1 + erf(x/√2)). erff is not replaced by --use_fast_math.
__device__ __forceinline__ float gelu_erf_of(float v) {
    return 0.5f * v * (1.f + erff(v * 0.7071067811865476f));
}

extern "C" __global__ void gelu_tanh(float* x, long long n) {
    GRID_STRIDE(i, n) { x[i] = gelu_tanh_of(x[i]); }
}

extern "C" __global__ void gelu_erf(float* x, long long n) {
    GRID_STRIDE(i, n) { x[i] = gelu_erf_of(x[i]); }
}

// An MLP's first half after its GEMM (run without bias): y = act(y + bias[i mod cols]) in
// place, and the same values in bf16 into `yb`, the second GEMM's operand. act: 0 none,
// 1 gelu_pytorch_tanh, 2 gelu (erf). One pass instead of three (bias broadcast before the GEMM,
// the activation, the bf16 conversion).
extern "C" __global__ void bias_act_bf16(float* __restrict__ y, const float* __restrict__ bias,
                                         unsigned short* __restrict__ yb, long long n,
                                         long long cols, int act) {
    GRID_STRIDE(i, n) {
        float v = y[i] + bias[i % cols];
        if (act == 1) {
            v = gelu_tanh_of(v);
        } else if (act == 2) {
            v = gelu_erf_of(v);
        }
        y[i] = v;
        yb[i] = bf16_bits(v);
    }
}

// x += y.
extern "C" __global__ void add_assign(float* __restrict__ x, const float* __restrict__ y,
                                      long long n) {
    GRID_STRIDE(i, n) { x[i] += y[i]; }
}

// x[i] += table[i mod period]: position embeddings (period = table rows × cols) and bias rows
// (period = cols) alike.
extern "C" __global__ void add_periodic(float* __restrict__ x, const float* __restrict__ table,
                                        long long n, long long period) {
    GRID_STRIDE(i, n) { x[i] += table[i % period]; }
}

// y[i] = row[i mod cols]: every row set to the bias, for a GEMM to accumulate onto (beta = 1).
extern "C" __global__ void broadcast_row(float* __restrict__ y, const float* __restrict__ row,
                                         long long n, long long cols) {
    GRID_STRIDE(i, n) { y[i] = row[i % cols]; }
}

// out[i, :] = table[ids[i], :]. Ids are range-checked on the host before the launch; the check
// here only keeps a bad id from reading outside the table (it writes NaN instead).
extern "C" __global__ void gather_rows(const float* __restrict__ table,
                                       const unsigned int* __restrict__ ids,
                                       float* __restrict__ out, long long n, int cols,
                                       unsigned int table_rows) {
    GRID_STRIDE(i, n) {
        const long long r = i / cols;
        const int c = (int)(i - r * cols);
        const unsigned int id = ids[r];
        out[i] = id < table_rows ? table[(long long)id * cols + c] : __int_as_float(0x7fc00000);
    }
}

// out[i, :] = x[first + i·step, :] for i < count (n = count × cols); bounds checked on the host.
extern "C" __global__ void strided_rows(const float* __restrict__ x, float* __restrict__ out,
                                        long long n, int cols, long long first, long long step) {
    GRID_STRIDE(i, n) {
        const long long r = i / cols;
        const int c = (int)(i - r * cols);
        out[i] = x[(first + r * step) * cols + c];
    }
}

extern "C" __global__ void f32_to_bf16(const float* __restrict__ x,
                                       unsigned short* __restrict__ y, long long n) {
    GRID_STRIDE(i, n) { y[i] = bf16_bits(x[i]); }
}

// ---- batched bf16 attention (GemmPrecision::Bf16) -------------------------------------------
// qkv [batch·seq, 3·dim] (q, k, v side by side, heads concatenated) → three bf16 tensors
// [batch, heads, seq, head_dim], so that one strided-batched GEMM covers every (sequence, head)
// pair. `bias` [3·dim], when not null, is added on the way (the q, k, v projection then runs
// without it: no pass of its own). Threads run over qkv in its own order: reads are coalesced,
// writes are coalesced within each head's run of head_dim values.
extern "C" __global__ void split_heads_bf16(const float* __restrict__ qkv,
                                            const float* __restrict__ bias,
                                            unsigned short* __restrict__ q,
                                            unsigned short* __restrict__ k,
                                            unsigned short* __restrict__ v, long long n, int seq,
                                            int heads, int head_dim) {
    const int dim = heads * head_dim;
    GRID_STRIDE(i, n) {
        const long long row = i / (3 * dim);
        const int col = (int)(i - row * 3 * dim);
        const int part = col / dim;
        const int within = col - part * dim;
        const int h = within / head_dim;
        const int d = within - h * head_dim;
        const long long b = row / seq;
        const long long s = row - b * seq;
        const long long dst = ((b * heads + h) * seq + s) * head_dim + d;
        unsigned short* out = part == 0 ? q : (part == 1 ? k : v);
        out[dst] = bf16_bits(bias ? qkv[i] + bias[col] : qkv[i]);
    }
}

// softmax_rows, reading f32 scores and writing the probabilities as bf16 into `p` (same shape),
// the operand of the bf16 P·V product. Same arithmetic as softmax_rows up to the final store.
extern "C" __global__ void softmax_rows_to_bf16(const float* __restrict__ s,
                                                unsigned short* __restrict__ p, long long rows,
                                                int cols, float scale) {
    const float log2e = 1.4426950408889634f;
    const long long row = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;  // whole warps leave together: the shuffles below stay full
    const float* r = s + row * cols;
    unsigned short* o = p + row * cols;
    float m = NEG_INF;
    for (int c = lane; c < cols; c += 32) m = fmaxf(m, r[c]);
    m = warp_max(m) * scale;
    float sum = 0.f;
    for (int c = lane; c < cols; c += 32) sum += exp2f((r[c] * scale - m) * log2e);
    sum = warp_sum(sum);
    const float inv = 1.f / sum;
    for (int c = lane; c < cols; c += 32) o[c] = bf16_bits(exp2f((r[c] * scale - m) * log2e) * inv);
}

// [batch, heads, seq, head_dim] f32 → [batch·seq, heads·head_dim]: heads concatenated again.
// Threads run over the output in its order (coalesced writes).
extern "C" __global__ void merge_heads(const float* __restrict__ x, float* __restrict__ out,
                                       long long n, int seq, int heads, int head_dim) {
    const int dim = heads * head_dim;
    GRID_STRIDE(i, n) {
        const long long row = i / dim;
        const int col = (int)(i - row * dim);
        const int h = col / head_dim;
        const int d = col - h * head_dim;
        const long long b = row / seq;
        const long long s = row - b * seq;
        out[i] = x[((b * heads + h) * seq + s) * head_dim + d];
    }
}

// Convolution im2col: images [batch, C·H·W] (CHW) into patches
// [batch·(H/p)·(W/p), C·p·p], patches in row-major grid order, each flattened as (c, y, x).
// One thread per output element: writes are coalesced, reads run along image rows in p-long runs.
extern "C" __global__ void patchify(const float* __restrict__ img, float* __restrict__ out,
                                    long long n, int channels, int height, int width,
                                    int patch) {
    const int gx = width / patch, gy = height / patch;
    const int pp = patch * patch;
    const int cols = channels * pp;
    const long long img_len = (long long)channels * height * width;
    GRID_STRIDE(i, n) {
        const long long r = i / cols;
        const int col = (int)(i - r * cols);
        const long long b = r / (gy * gx);
        const int p = (int)(r - b * (gy * gx));
        const int py = p / gx, px = p - (p / gx) * gx;
        const int c = col / pp;
        const int rem = col - c * pp;
        const int y = rem / patch, xx = rem - (rem / patch) * patch;
        out[i] = img[b * img_len + (long long)c * height * width +
                     (long long)(py * patch + y) * width + px * patch + xx];
    }
}

// ---- attention ------------------------------------------------------------------------------

// In-place softmax of each row of `s [rows, cols]` after scaling by `scale` (> 0): one warp per
// row, 8 rows per 256-thread block. Matches the CPU: max of the raw row times scale, then
// exp(v·scale − max), then divided by the sum.
extern "C" __global__ void softmax_rows(float* s, long long rows, int cols, float scale) {
    const float log2e = 1.4426950408889634f;
    const long long row = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (row >= rows) return;  // whole warps leave together: the shuffles below stay full
    float* r = s + row * cols;
    float m = NEG_INF;
    for (int c = lane; c < cols; c += 32) m = fmaxf(m, r[c]);
    m = warp_max(m) * scale;
    float sum = 0.f;
    for (int c = lane; c < cols; c += 32) {
        const float e = exp2f((r[c] * scale - m) * log2e);
        r[c] = e;
        sum += e;
    }
    sum = warp_sum(sum);
    const float inv = 1.f / sum;
    for (int c = lane; c < cols; c += 32) r[c] *= inv;
}

// Attention pooling: one block per (sequence b = blockIdx.x, head h = blockIdx.y).
// q [1, dim] is shared by all sequences; kv [batch·seq, 2·dim] holds k then v; out [batch, dim].
// Dynamic shared memory: `seq` floats for the weights. Warps compute one score each (lanes
// along the head's columns, coalesced), then the block normalizes, then threads run over the
// head's output columns summing weighted v rows (coalesced across threads).
extern "C" __global__ void pooled_attention(const float* __restrict__ q,
                                            const float* __restrict__ kv,
                                            float* __restrict__ out, int seq, int dim,
                                            int head_dim, float scale) {
    extern __shared__ float w[];
    __shared__ float scratch[32];
    const float log2e = 1.4426950408889634f;
    const long long b = blockIdx.x;
    const int h = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    const long long row = 2LL * dim;
    const float* qh = q + (long long)h * head_dim;
    const float* base = kv + b * seq * row;
    for (int s = warp; s < seq; s += nwarps) {
        const float* k = base + s * row + (long long)h * head_dim;
        float p = 0.f;
        for (int d = lane; d < head_dim; d += 32) p += qh[d] * k[d];
        p = warp_sum(p);
        if (lane == 0) w[s] = p;
    }
    __syncthreads();
    float m = NEG_INF;
    for (int s = threadIdx.x; s < seq; s += blockDim.x) m = fmaxf(m, w[s]);
    m = block_max(m, scratch) * scale;
    float sum = 0.f;
    for (int s = threadIdx.x; s < seq; s += blockDim.x) {
        const float e = exp2f((w[s] * scale - m) * log2e);
        w[s] = e;
        sum += e;
    }
    // block_sum's barriers also order the w[] writes above before the reads below
    const float inv = 1.f / block_sum(sum, scratch);
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        const float* v = base + dim + (long long)h * head_dim + d;
        float acc = 0.f;
        for (int s = 0; s < seq; ++s) acc += w[s] * v[s * row];
        out[b * dim + (long long)h * head_dim + d] = acc * inv;
    }
}
