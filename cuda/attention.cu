// Fused self-attention for the bf16 path of src/backend/cuda/tensor.rs (FlashAttention-2's
// scheme): per block, 64 queries of one (sequence, head) pair against all keys in tiles of 64,
// scores and probabilities only in registers, softmax online (running max and sum per row),
// q·kᵀ and p·v on the tensor cores (mma.sync m16n8k16, bf16 operands, f32 accumulation). No
// [seq, seq] score matrix is ever written, and q, k, v are read straight from the projection's
// f32 output `qkv [batch·seq, 3·dim]` (bias added, rounded to bf16 on the way into shared
// memory); the result goes straight to the heads-concatenated rows `out [batch·seq, dim]`.
//
// Grid (ceil(seq / 64), heads, batch): the query tiles of one pair are neighbours in launch
// order, so the pair's keys and values are read from L2 after the first tile. Block: 4 warps,
// each owning 16 query rows. Dynamic shared memory: q, k and v tiles of 64 x hdp bf16 each
// (hdp = head_dim rounded up to 16, at most 128: 48 KB), zero-padded past head_dim and seq;
// v transposed, so that every fragment is read as whole 32-bit pairs.
//
// Tensor-core fragments follow the PTX ISA layouts for m16n8k16 (groupID g = lane / 4,
// t = lane % 4); the score fragment of two neighbouring 8-key tiles is exactly the A fragment
// of the p·v product, so probabilities never leave registers. The CPU emulator of the tests
// (tests/common/cuda_emu.h) runs this file with its own mma; sm_80 or newer runs the PTX.
//
// No headers (NVRTC compiles this file alone, after cuda/common.cuh).

#define Q_TILE 64
#define K_TILE 64
#define WARPS 4
#define HDP_MAX 128

// Two bf16 values in one register, the first in the low half (the fragment order).
__device__ __forceinline__ unsigned int pack(unsigned short lo, unsigned short hi) {
    return (unsigned int)lo | ((unsigned int)hi << 16);
}

// Two neighbouring bf16 values of a tile as one register (one shared-memory load): `p` is at an
// even element of a row whose byte offset is a multiple of 4; little-endian puts p[0] low.
__device__ __forceinline__ unsigned int pair_at(const unsigned short* p) {
    return *(const unsigned int*)p;
}

// d = a·b + c on the tensor cores for this warp (see the header).
__device__ __forceinline__ void mma_bf16(float d[4], const unsigned int a[4],
                                         const unsigned int b[2], const float c[4]) {
#ifdef VLMPREP_CUDA_EMULATOR
    emu::mma_m16n8k16_bf16(d, a, b, c);
#elif __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%10,%11,%12,%13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]),
          "f"(c[1]), "f"(c[2]), "f"(c[3]));
#else
    // The host launches this kernel only on sm_80 or newer.
    __trap();
#endif
}

// Loads rows [first, first + 64) of one part (0 q, 1 k, 2 v) of head h into a 64 x hdp bf16
// tile, or its transpose (hdp x 64, for v: the p·v fragments then pair neighbouring keys):
// bias added, zeros past head_dim and past the sequence.
__device__ __forceinline__ void load_tile(unsigned short* tile, const float* __restrict__ qkv,
                                          const float* __restrict__ bias, long long seq_base,
                                          int first, int seq, int part, int h, int head_dim,
                                          int hdp, int dim, bool transpose) {
    const int col0 = part * dim + h * head_dim;
    for (int i = threadIdx.x; i < 64 * hdp; i += blockDim.x) {
        const int r = i / hdp, d = i - (i / hdp) * hdp;
        const int s = first + r;
        float v = 0.f;
        if (s < seq && d < head_dim) {
            v = qkv[(seq_base + s) * 3LL * dim + col0 + d];
            if (bias) v += bias[col0 + d];
        }
        tile[transpose ? d * K_TILE + r : i] = bf16_bits(v);
    }
}

extern "C" __global__ void flash_attention(const float* __restrict__ qkv,
                                           const float* __restrict__ bias,
                                           float* __restrict__ out, int seq, int heads,
                                           int head_dim, float scale) {
    extern __shared__ unsigned short smem[];
    const int hdp = (head_dim + 15) & ~15;
    unsigned short* qs = smem;
    unsigned short* ks = smem + Q_TILE * hdp;
    unsigned short* vs = ks + K_TILE * hdp;
    const int q0 = blockIdx.x * Q_TILE, h = blockIdx.y;
    const long long b = blockIdx.z;
    const int dim = heads * head_dim;
    const long long seq_base = b * seq;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int n_k16 = hdp / 16;         // k-steps of q·kᵀ over head_dim
    const int n_d8 = (head_dim + 7) / 8;  // 8-wide column tiles of the output
    const float zscale = scale * 1.4426950408889634f;  // scores to the log2 domain

    load_tile(qs, qkv, bias, seq_base, q0, seq, 0, h, head_dim, hdp, dim, false);
    __syncthreads();
    // This warp's 16 query rows as A fragments, one per 16 columns of head_dim.
    const int r0 = warp * 16 + g, r1 = r0 + 8;
    unsigned int qa[HDP_MAX / 16][4];
#pragma unroll
    for (int kk = 0; kk < HDP_MAX / 16; ++kk) {
        if (kk < n_k16) {
            const int c = kk * 16 + 2 * t;
            qa[kk][0] = pair_at(qs + r0 * hdp + c);
            qa[kk][1] = pair_at(qs + r1 * hdp + c);
            qa[kk][2] = pair_at(qs + r0 * hdp + c + 8);
            qa[kk][3] = pair_at(qs + r1 * hdp + c + 8);
        }
    }
    float o[HDP_MAX / 8][4];
#pragma unroll
    for (int nt = 0; nt < HDP_MAX / 8; ++nt) o[nt][0] = o[nt][1] = o[nt][2] = o[nt][3] = 0.f;
    // Running max (log2 domain) and this thread's share of the running sum, rows r0 and r1.
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};

    for (int k0 = 0; k0 < seq; k0 += K_TILE) {
        __syncthreads();  // every warp is done with the previous k and v tiles
        load_tile(ks, qkv, bias, seq_base, k0, seq, 1, h, head_dim, hdp, dim, false);
        load_tile(vs, qkv, bias, seq_base, k0, seq, 2, h, head_dim, hdp, dim, true);
        __syncthreads();

        // Scores of 16 rows x 64 keys: 8 tiles of 8 keys.
        float sc[K_TILE / 8][4];
#pragma unroll
        for (int nt = 0; nt < K_TILE / 8; ++nt) {
            sc[nt][0] = sc[nt][1] = sc[nt][2] = sc[nt][3] = 0.f;
            const unsigned short* krow = ks + (nt * 8 + g) * hdp;
#pragma unroll
            for (int kk = 0; kk < HDP_MAX / 16; ++kk) {
                if (kk < n_k16) {
                    const int c = kk * 16 + 2 * t;
                    const unsigned int kb[2] = {pair_at(krow + c), pair_at(krow + c + 8)};
                    mma_bf16(sc[nt], qa[kk], kb, sc[nt]);
                }
            }
        }
        // To the log2 domain; keys past the sequence get no weight.
        float mx[2] = {NEG_INF, NEG_INF};
#pragma unroll
        for (int nt = 0; nt < K_TILE / 8; ++nt) {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int key = k0 + nt * 8 + 2 * t + (i & 1);
                const float z = key < seq ? sc[nt][i] * zscale : NEG_INF;
                sc[nt][i] = z;
                mx[i >> 1] = fmaxf(mx[i >> 1], z);
            }
        }
        float alpha[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            // the row's 64 scores are spread over the 4 lanes of a quad
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(FULL_MASK, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(FULL_MASK, mx[r], 2));
            const float m_new = fmaxf(m[r], mx[r]);
            alpha[r] = exp2f(m[r] - m_new);  // 0 on the first tile (m = -inf)
            m[r] = m_new;
            l[r] *= alpha[r];
        }
#pragma unroll
        for (int nt = 0; nt < HDP_MAX / 8; ++nt) {
            o[nt][0] *= alpha[0];
            o[nt][1] *= alpha[0];
            o[nt][2] *= alpha[1];
            o[nt][3] *= alpha[1];
        }
#pragma unroll
        for (int nt = 0; nt < K_TILE / 8; ++nt) {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const float p = exp2f(sc[nt][i] - m[i >> 1]);
                sc[nt][i] = p;
                l[i >> 1] += p;
            }
        }
        // o += p·v: the probabilities of keys 16j..16j+15 are the A fragment of step j.
#pragma unroll
        for (int j = 0; j < K_TILE / 16; ++j) {
            const unsigned int pa[4] = {
                pack(bf16_bits(sc[2 * j][0]), bf16_bits(sc[2 * j][1])),
                pack(bf16_bits(sc[2 * j][2]), bf16_bits(sc[2 * j][3])),
                pack(bf16_bits(sc[2 * j + 1][0]), bf16_bits(sc[2 * j + 1][1])),
                pack(bf16_bits(sc[2 * j + 1][2]), bf16_bits(sc[2 * j + 1][3])),
            };
#pragma unroll
            for (int nt = 0; nt < HDP_MAX / 8; ++nt) {
                if (nt < n_d8) {
                    // v is stored transposed: keys 2t, 2t+1 (and +8) of column nt·8 + g are
                    // neighbours
                    const unsigned short* vcol = vs + (nt * 8 + g) * K_TILE + j * 16 + 2 * t;
                    const unsigned int vb[2] = {pair_at(vcol), pair_at(vcol + 8)};
                    mma_bf16(o[nt], pa, vb, o[nt]);
                }
            }
        }
    }

    // The sums over the quad, then the normalized rows, heads concatenated.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l[r] += __shfl_xor_sync(FULL_MASK, l[r], 1);
        l[r] += __shfl_xor_sync(FULL_MASK, l[r], 2);
    }
    const float inv[2] = {1.f / l[0], 1.f / l[1]};
#pragma unroll
    for (int nt = 0; nt < HDP_MAX / 8; ++nt) {
        if (nt < n_d8) {
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int s = q0 + (i < 2 ? r0 : r1);
                const int d = nt * 8 + 2 * t + (i & 1);
                if (s < seq && d < head_dim) {
                    out[(seq_base + s) * dim + h * head_dim + d] = o[nt][i] * inv[i >> 1];
                }
            }
        }
    }
}
