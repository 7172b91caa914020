//! Thread CPU time of one `plan_packs` call (Bfd) on the 1M-sample mix of `benches/pack.rs`,
//! and a fingerprint of the plan.
//!
//! Criterion's wall times swing by tens of percent on a shared machine; the CPU time of the
//! packing thread does not count the time slices other processes take (cache and memory
//! contention still show). The fingerprint (FNV-1a over every pack's samples, tokens and tiles,
//! in plan order) tells whether a change to the packer changed any plan.
//!
//! ```sh
//! cargo run --release --example pack_cpu_time -- [REPEATS (default 11)]
//! ```

#[path = "../benches/common/pack_mix.rs"]
mod pack_mix;

use vlmprep::pack::{Algo, Limits, OversizePolicy, PackPlan, plan_packs};

/// Seconds of CPU time this thread has used.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// FNV-1a over every pack's samples, then its tokens and tiles, then a separator.
fn fingerprint(plan: &PackPlan) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for pack in &plan.packs {
        let tail = [pack.tokens, pack.tiles, u32::MAX];
        for &x in pack.samples.iter().chain(&tail) {
            h = (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn main() -> Result<(), String> {
    let repeats: usize = match std::env::args().nth(1) {
        Some(s) => s.parse().map_err(|e| format!("REPEATS `{s}`: {e}"))?,
        None => 11,
    };
    if repeats == 0 {
        return Err("REPEATS must be at least 1".into());
    }
    let costs = pack_mix::mix(1_000_000, 7);
    let cases = [
        (
            "8192x16",
            Limits {
                tokens: 8192,
                tiles: 16,
            },
        ),
        ("8192x-", Limits::tokens_only(8192)),
    ];
    for (name, limits) in cases {
        let mut times = Vec::with_capacity(repeats);
        let mut last = None;
        for _ in 0..repeats {
            let t0 = thread_cpu_seconds();
            let plan = plan_packs(
                &costs,
                limits,
                Algo::Bfd,
                OversizePolicy::Alone,
                &|_| None,
                1,
            )
            .map_err(|e| e.to_string())?;
            times.push(thread_cpu_seconds() - t0);
            // Dropped outside the timed span, as a trainer keeps its plan.
            last = Some(plan);
        }
        let plan = last.expect("repeats >= 1");
        times.sort_by(f64::total_cmp);
        println!(
            "bfd {name}: {} packs, fingerprint {:016x}, CPU per plan min {:.1} ms, median {:.1} ms \
             ({:.2} M samples/s at the min)",
            plan.packs.len(),
            fingerprint(&plan),
            times[0] * 1e3,
            times[repeats / 2] * 1e3,
            costs.len() as f64 / times[0] / 1e6,
        );
    }
    Ok(())
}
