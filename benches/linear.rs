//! Criterion benches of the CPU linear layer at SigLIP-base's shapes (batch 32 of 196 image
//! tokens): the `gemm` crate on an unprepared weight against the packed GEMM
//! (`src/backend/cpu_gemm.rs`) on the same weight after `with_packed_gemm`, on one thread
//! and on two. Throughput is in multiply-adds (criterion's "elements"), so `Melem/s` / 1000 is
//! G multiply-adds/s. Each case alternates the two sides: old, new, then old and new again
//! under `-rerun` names, so a burst of load from other processes shows up as a disagreement.
//!
//! On one thread the two sides are also timed in thread CPU time (`-cputime`), which a busy
//! shared machine disturbs less than wall time.
//!
//! `cargo bench --bench linear` (filter with e.g. `-- 1t/`).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vlmprep::backend::{CpuBackend, CpuMatrix, TensorOps};

fn pseudo(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

/// CPU time of the calling thread.
fn thread_cpu_time() -> std::time::Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write; the clock id is a constant Linux knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn bench_linear(c: &mut Criterion) {
    let ops = CpuBackend;
    // (m, k, n, residual): qkv-sized (768 → 768 shown as out_proj), fc1, fc2 (+= residual)
    let shapes = [
        (6272, 768, 768, true),
        (6272, 768, 3072, false),
        (6272, 3072, 768, true),
    ];
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("a rayon pool");
        for &(m, k, n, residual) in &shapes {
            let x = ops.upload(&pseudo(m * k, 1), m, k).unwrap();
            let plain = ops.upload(&pseudo(n * k, 2), n, k).unwrap();
            let packed = plain.clone().with_packed_gemm();
            let b = ops.upload(&pseudo(n, 3), 1, n).unwrap();
            let mut acc = ops.upload(&pseudo(m * n, 4), m, n).unwrap();
            let mut g = c.benchmark_group(format!("linear/{threads}t/{m}x{k}x{n}"));
            g.throughput(Throughput::Elements((m * k * n) as u64));
            g.sample_size(10);
            g.warm_up_time(std::time::Duration::from_millis(500));
            g.measurement_time(std::time::Duration::from_secs(3));
            let mut run = |name: &str, w: &CpuMatrix| {
                g.bench_function(name, |bch| {
                    bch.iter(|| {
                        pool.install(|| {
                            if residual {
                                ops.linear_add_assign(&mut acc, black_box(&x), w, Some(&b))
                                    .unwrap();
                            } else {
                                black_box(ops.linear(black_box(&x), w, Some(&b)).unwrap());
                            }
                        })
                    })
                });
            };
            run("gemm-crate", &plain);
            run("packed", &packed);
            run("gemm-crate-rerun", &plain);
            run("packed-rerun", &packed);
            if threads == 1 {
                // The same one-thread product timed in the worker thread's CPU time: on a
                // machine shared with other jobs, time slices lost to them do not count.
                let mut cpu = |name: &str, w: &CpuMatrix| {
                    g.bench_function(name, |bch| {
                        bch.iter_custom(|iters| {
                            pool.install(|| {
                                let t0 = thread_cpu_time();
                                for _ in 0..iters {
                                    if residual {
                                        ops.linear_add_assign(&mut acc, black_box(&x), w, Some(&b))
                                            .unwrap();
                                    } else {
                                        black_box(ops.linear(black_box(&x), w, Some(&b)).unwrap());
                                    }
                                }
                                thread_cpu_time() - t0
                            })
                        })
                    });
                };
                cpu("gemm-crate-cputime", &plain);
                cpu("packed-cputime", &packed);
            }
            g.finish();
        }
    }
}

criterion_group!(benches, bench_linear);
criterion_main!(benches);
