// Helpers shared by every kernel family, put in front of each `.cu` file by
// src/backend/cuda/kernels.rs (NVRTC compiles each family alone, with no headers of its own).

#define FULL_MASK 0xffffffffu
#define NEG_INF __int_as_float(0xff800000)

// f32 → bf16 bits, round to nearest even; NaN stays a (quiet) NaN instead of rounding to inf.
__device__ __forceinline__ unsigned short bf16_bits(float v) {
    const unsigned int b = __float_as_uint(v);
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        return (unsigned short)((b >> 16) | 0x0040u);
    }
    return (unsigned short)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

// For launches that are one flat grid over the jobs of a batch, each job owning a contiguous
// run of blocks: the job owning flat block `b`, i.e. the last whose first block (field `first`
// of its `fields` i64s) is <= b. Jobs are in order and job 0 starts at block 0.
__device__ __forceinline__ int find_job(const long long* jobs, int njobs, int fields, int first,
                                        long long b) {
    int lo = 0, hi = njobs - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (jobs[(long long)mid * fields + first] <= b) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}
