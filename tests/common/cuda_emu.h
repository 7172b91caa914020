// CUDA kernel emulator for the tests (driven by tests/common/cuda_emu.rs): the kernel sources
// under cuda/ are compiled as C++ with this header in front and run on the CPU, so their logic
// (indexing, job lookup, rounding, reductions) is checked in CI where there is no GPU.
//
// Two ways to run a launch:
// - block-synchronous (the general one): one block at a time, every thread of the block an OS
//   thread, so __syncthreads is a real barrier and warp shuffles exchange values through a
//   per-warp slot array between two per-warp barriers; the same threads then move on to the
//   next block after a block-wide barrier (static __shared__ arrays are reused block to block).
// - independent (fast, for kernels whose threads never cooperate): blocks spread over a few
//   worker threads, each running its block's threads one after another. __syncthreads or a
//   shuffle there aborts with a message instead of computing something wrong.
// What this does not model: the GPU memory model and races between blocks, fast-math
// approximations (exp2f, rsqrtf and division are exact here), FTZ, and timing. One launch at a
// time per loaded module.
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <barrier>
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#define VLMPREP_CUDA_EMULATOR 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
};

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
dim3 blockDim;
dim3 gridDim;

namespace emu {

struct Warp {
    explicit Warp(std::ptrdiff_t lanes) : bar(lanes) {}
    std::barrier<> bar;
    uint64_t slot[32];
    // Operands of a warp-wide matrix multiply-accumulate (mma_m16n8k16_bf16).
    float a[16][16];
    float b[16][8];
};

struct Launch {
    std::unique_ptr<std::barrier<>> block_bar;
    std::vector<std::unique_ptr<Warp>> warps;
    std::vector<std::max_align_t> dynamic_shared;
};

Launch current;
std::mutex one_launch_at_a_time;
thread_local unsigned flat_thread;
thread_local bool independent = false;

[[noreturn]] inline void refuse(const char* what) {
    std::fprintf(stderr,
                 "cuda_emu: %s in a launch run as independent threads; this kernel needs the "
                 "block-synchronous launch\n",
                 what);
    std::abort();
}

inline void* dynamic_shared() { return current.dynamic_shared.data(); }

inline void sync_block() {
    if (independent) refuse("__syncthreads");
    current.block_bar->arrive_and_wait();
}

// Lane `lane ^ mask` of this thread's warp sees `v`; lanes past a partial warp read their own.
template <class T>
T shfl_xor(T v, int mask) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>);
    if (independent) refuse("a warp shuffle");
    Warp& w = *current.warps[flat_thread / 32];
    const unsigned lane = flat_thread % 32;
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    w.slot[lane] = bits;
    w.bar.arrive_and_wait();
    const unsigned lanes = (unsigned)std::min<uint64_t>(
        32, (uint64_t)blockDim.x * blockDim.y * blockDim.z - (flat_thread / 32) * 32);
    const unsigned from = lane ^ (unsigned)mask;
    T out = v;
    if (from < lanes) std::memcpy(&out, &w.slot[from], sizeof(T));
    w.bar.arrive_and_wait();
    return out;
}

inline float bf16_to_float(uint32_t bits16) {
    const uint32_t f = bits16 << 16;
    float out;
    std::memcpy(&out, &f, 4);
    return out;
}

// PTX `mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32` for one warp: D = A·B + C with A
// 16x16 bf16 (row), B 16x8 bf16 (col), C and D 16x8 f32, each lane holding its fragment in the
// PTX ISA's layout (groupID = lane / 4, t = lane % 4): A's four registers hold (row, col) pairs
// (g, 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..), the lower 16 bits the first; B's two
// hold (k, n) = (2t..2t+1, g) and (2t+8..2t+9, g); C's and D's four floats are (g, 2t),
// (g, 2t+1), (g+8, 2t), (g+8, 2t+1). The products are summed in f32 in k order. The kernels'
// tensor-core code is only as right as this reading of the layout, which only a GPU confirms
// (tests/cuda_tensor.rs).
inline void mma_m16n8k16_bf16(float d[4], const uint32_t a[4], const uint32_t b[2],
                              const float c[4]) {
    if (independent) refuse("mma.sync");
    Warp& w = *current.warps[flat_thread / 32];
    const unsigned lane = flat_thread % 32, g = lane / 4, t = lane % 4;
    for (int r = 0; r < 4; ++r) {
        const unsigned row = g + ((r & 1) ? 8 : 0), col = 2 * t + ((r & 2) ? 8 : 0);
        w.a[row][col] = bf16_to_float(a[r] & 0xffffu);
        w.a[row][col + 1] = bf16_to_float(a[r] >> 16);
    }
    for (int r = 0; r < 2; ++r) {
        const unsigned k = 2 * t + (r ? 8 : 0);
        w.b[k][g] = bf16_to_float(b[r] & 0xffffu);
        w.b[k + 1][g] = bf16_to_float(b[r] >> 16);
    }
    w.bar.arrive_and_wait();
    for (int i = 0; i < 4; ++i) {
        const unsigned row = g + (i >= 2 ? 8 : 0), col = 2 * t + (i & 1);
        float acc = 0.f;
        for (int k = 0; k < 16; ++k) acc += w.a[row][k] * w.b[k][col];
        d[i] = c[i] + acc;
    }
    w.bar.arrive_and_wait();
}

template <class... A, std::size_t... I>
void call(void (*kernel)(A...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<std::remove_cv_t<A>*>(args[I])...);
}

inline uint3 unflatten(uint64_t i, unsigned x, unsigned y) {
    return uint3{(unsigned)(i % x), (unsigned)(i / x % y), (unsigned)(i / ((uint64_t)x * y))};
}

// cuLaunchKernel's contract: `args[i]` points at the value of parameter i.
template <class... A>
void launch(void (*kernel)(A...), const unsigned* grid, const unsigned* block, std::size_t shared,
            void** args, bool run_independent) {
    std::lock_guard<std::mutex> guard(one_launch_at_a_time);
    gridDim = dim3{grid[0], grid[1], grid[2]};
    blockDim = dim3{block[0], block[1], block[2]};
    const unsigned threads = block[0] * block[1] * block[2];
    const uint64_t blocks = (uint64_t)grid[0] * grid[1] * grid[2];
    current.dynamic_shared.assign((shared + sizeof(std::max_align_t) - 1) / sizeof(std::max_align_t),
                                  std::max_align_t{});
    auto run_thread = [&](unsigned t) {
        flat_thread = t;
        threadIdx = unflatten(t, block[0], block[1]);
        call(kernel, args, std::index_sequence_for<A...>{});
    };
    std::vector<std::thread> pool;
    if (run_independent) {
        std::atomic<uint64_t> next{0};
        const unsigned workers = std::max(1u, std::thread::hardware_concurrency());
        for (unsigned w = 0; w < workers; ++w) {
            pool.emplace_back([&] {
                independent = true;
                for (uint64_t b; (b = next.fetch_add(1)) < blocks;) {
                    blockIdx = unflatten(b, grid[0], grid[1]);
                    for (unsigned t = 0; t < threads; ++t) run_thread(t);
                }
                independent = false;
            });
        }
    } else {
        current.block_bar = std::make_unique<std::barrier<>>(threads);
        current.warps.clear();
        for (unsigned first = 0; first < threads; first += 32) {
            current.warps.push_back(std::make_unique<Warp>(std::min(32u, threads - first)));
        }
        for (unsigned t = 0; t < threads; ++t) {
            pool.emplace_back([&, t] {
                for (uint64_t b = 0; b < blocks; ++b) {
                    blockIdx = unflatten(b, grid[0], grid[1]);
                    run_thread(t);
                    sync_block();
                }
            });
        }
    }
    for (auto& t : pool) t.join();
}

}  // namespace emu

inline void __syncthreads() { emu::sync_block(); }
template <class T>
T __shfl_xor_sync(unsigned, T v, int mask) {
    return emu::shfl_xor(v, mask);
}
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}
inline int __float_as_int(float f) {
    int i;
    std::memcpy(&i, &f, 4);
    return i;
}
inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline float __expf(float x) { return std::exp(x); }
inline float __fdividef(float a, float b) { return a / b; }
