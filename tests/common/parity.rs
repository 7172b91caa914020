//! Relative-error checks and deterministic test data for backend parity tests (the CUDA and
//! wgpu tensor tests compare against the CPU backend the same way).

/// xorshift64*: deterministic values in [-1, 1), never exactly zero.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let r = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40; // 24 bits
        let v = (r as f32 + 0.5) / (1u64 << 23) as f32 - 1.0;
        if v == 0.0 { 1e-3 } else { v }
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// ‖a − b‖ / ‖b‖, after checking the lengths and that `a` is all finite (a NaN poison left
/// in place fails here with its index).
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths");
    if let Some(i) = a.iter().position(|v| !v.is_finite()) {
        panic!("element {i} of {} is {}", a.len(), a[i]);
    }
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    let e = rel_err(got, want);
    eprintln!("{what}: relative error {e:.3e}");
    assert!(e <= tol, "{what}: relative error {e:.3e} > {tol:.0e}");
}
