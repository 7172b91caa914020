//! A crash on purpose, for the resume tests: with `VLMPREP_TEST_CRASH=POINT:N` in the
//! environment, the N-th time a run reaches the named point the process aborts on the spot (no
//! unwinding, no cleanup, like a kill), so a test can check that the restarted run ends with the
//! same outputs as one never interrupted. Without the variable this is one cached lookup.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The point and count asked for, read once.
fn target() -> Option<&'static (String, usize)> {
    static TARGET: OnceLock<Option<(String, usize)>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let spec = std::env::var("VLMPREP_TEST_CRASH").ok()?;
            let (point, n) = spec.rsplit_once(':')?;
            Some((point.to_string(), n.parse().ok()?))
        })
        .as_ref()
}

/// Aborts the process if this is the N-th arrival at `point` asked for by `VLMPREP_TEST_CRASH`.
pub fn maybe_crash(point: &str) {
    static ARRIVALS: AtomicUsize = AtomicUsize::new(0);
    if let Some((wanted, n)) = target()
        && wanted == point
        && ARRIVALS.fetch_add(1, Ordering::SeqCst) + 1 == *n
    {
        eprintln!("VLMPREP_TEST_CRASH: aborting at {point} #{n}");
        std::process::abort();
    }
}
