//! The CUDA `TensorOps` against the CPU reference: every op on random data of awkward shapes
//! (not multiples of 32), in fp32 GEMM mode to 1e-4 (relative, by norm) and in bf16 GEMM mode
//! to what bf16 operands allow; then both SigLIP towers of the tiny-a fixture end to end.
//!
//! Needs a GPU. Without one each test prints why and passes, unless `VLMPREP_REQUIRE_GPU=1`,
//! which turns a missing GPU into a failure (for the GPU CI job, where a skip would hide a
//! broken setup). Debug builds of the backend fill every fresh output with NaN, so an element a
//! kernel fails to write cannot pass as leftover memory.
#![cfg(feature = "cuda")]

mod common;

use common::cuda::gpu_or_skip;
use common::parity::{Rng, assert_close};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vlmprep::backend::cuda::tensor::{CudaTensorOps, GemmPrecision};
use vlmprep::backend::tensor::{Activation, TensorOps};
use vlmprep::backend::{CpuBackend, CpuMatrix};
use vlmprep::model::siglip::SiglipModel;

/// CUDA ops with the given GEMM precision, or `None` (skip) without a GPU. Once a GPU is
/// there, failing to set up cuBLAS or the kernels is a test failure.
fn cuda(precision: GemmPrecision) -> Option<CudaTensorOps> {
    let backend = Arc::new(gpu_or_skip()?);
    eprintln!("on {}", backend.device_name());
    Some(CudaTensorOps::with_precision(backend, precision).expect("CUDA tensor ops"))
}

/// The same host data on both backends.
fn both<G: TensorOps>(g: &G, data: &[f32], rows: usize, cols: usize) -> (CpuMatrix, G::Matrix) {
    (
        CpuBackend.upload(data, rows, cols).unwrap(),
        g.upload(data, rows, cols).unwrap(),
    )
}

const F32_TOL: f64 = 1e-4;
const BF16_TOL: f64 = 1e-2;

#[test]
fn upload_download_round_trip_and_bad_length() {
    let Some(g) = cuda(GemmPrecision::F32) else {
        return;
    };
    let data = Rng::new(1).vec(37 * 72, 1.0);
    let m = g.upload(&data, 37, 72).unwrap();
    assert_eq!(g.dims(&m), (37, 72));
    assert_eq!(g.download(&m).unwrap(), data);
    assert!(g.upload(&data, 36, 72).is_err());
    let empty = g.upload(&[], 0, 5).unwrap();
    assert!(g.download(&empty).unwrap().is_empty());
}

fn check_linear(precision: GemmPrecision, tol: f64) {
    let Some(g) = cuda(precision) else {
        return;
    };
    let mut rng = Rng::new(2);
    for (n, k, out) in [(37, 72, 45), (1, 33, 7), (130, 100, 97)] {
        let (cx, gx) = both(&g, &rng.vec(n * k, 1.0), n, k);
        let (cw, gw) = both(&g, &rng.vec(out * k, 0.5), out, k);
        let (cb, gb) = both(&g, &rng.vec(out, 1.0), 1, out);
        let want = CpuBackend.linear(&cx, &cw, Some(&cb)).unwrap();
        let got = g.linear(&gx, &gw, Some(&gb)).unwrap();
        assert_eq!(g.dims(&got), (n, out));
        let tag = format!("linear {precision:?} {n}x{k}x{out}");
        assert_close(&tag, &g.download(&got).unwrap(), &want.data, tol);
        // without bias, and a second time (bf16: the cached weight copy)
        let want = CpuBackend.linear(&cx, &cw, None).unwrap();
        for _ in 0..2 {
            let got = g.linear(&gx, &gw, None).unwrap();
            assert_close(
                &format!("{tag} no bias"),
                &g.download(&got).unwrap(),
                &want.data,
                tol,
            );
        }
    }
    let (_, x) = both(&g, &[1.0; 6], 2, 3);
    let (_, w) = both(&g, &[1.0; 4], 2, 2);
    assert!(g.linear(&x, &w, None).is_err());
    let (_, w) = both(&g, &[1.0; 6], 2, 3);
    let (_, b) = both(&g, &[1.0; 3], 1, 3);
    assert!(g.linear(&x, &w, Some(&b)).is_err());
}

#[test]
fn linear_f32_matches_cpu() {
    check_linear(GemmPrecision::F32, F32_TOL);
}

#[test]
fn linear_bf16_matches_cpu_within_bf16() {
    check_linear(GemmPrecision::Bf16, BF16_TOL);
}

#[test]
fn bf16_linear_is_exact_on_bf16_values_and_rounds_to_nearest_even() {
    let Some(g) = cuda(GemmPrecision::Bf16) else {
        return;
    };
    // multiples of 1/16 in [-2, 2] are exact in bf16, and their products' sums are exact in
    // f32: the bf16 path must then equal the CPU exactly, which pins down its layout
    let mut rng = Rng::new(3);
    let mut grid =
        |n: usize| -> Vec<f32> { (0..n).map(|_| (rng.next() * 32.0).round() / 16.0).collect() };
    let (n, k, out) = (37, 72, 45);
    let (cx, gx) = both(&g, &grid(n * k), n, k);
    let (cw, gw) = both(&g, &grid(out * k), out, k);
    let (cb, gb) = both(&g, &grid(out), 1, out);
    let want = CpuBackend.linear(&cx, &cw, Some(&cb)).unwrap();
    let got = g.download(&g.linear(&gx, &gw, Some(&gb)).unwrap()).unwrap();
    assert_close("bf16-exact linear", &got, &want.data, 1e-7);

    // 1 + 2⁻⁸ lies halfway between bf16 1 and 1 + 2⁻⁷: ties to even give 1. 1 + 3·2⁻⁸ lies
    // halfway between 1 + 2⁻⁷ (odd) and 1 + 2⁻⁶ (even): 1 + 2⁻⁶. 1 + 2⁻⁸ + 2⁻²⁰ is above
    // the tie: 1 + 2⁻⁷. Through an identity weight, the output is the rounded input.
    let x = [
        1.0 + 2f32.powi(-8),
        1.0 + 3.0 * 2f32.powi(-8),
        1.0 + 2f32.powi(-8) + 2f32.powi(-20),
    ];
    let eye = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
    let gx = g.upload(&x, 1, 3).unwrap();
    let gi = g.upload(&eye, 3, 3).unwrap();
    let got = g.download(&g.linear(&gx, &gi, None).unwrap()).unwrap();
    assert_eq!(
        got,
        vec![1.0, 1.0 + 2f32.powi(-6), 1.0 + 2f32.powi(-7)],
        "activation rounding"
    );
    // and the same for the weight side: x = identity row, w holds the values
    let w = [x[0], 0.0, 0.0, 0.0, x[1], 0.0, 0.0, 0.0, x[2]];
    let gw = g.upload(&w, 3, 3).unwrap();
    let ones = g.upload(&[1.0, 1.0, 1.0], 1, 3).unwrap();
    let got = g.download(&g.linear(&ones, &gw, None).unwrap()).unwrap();
    assert_eq!(
        got,
        vec![1.0, 1.0 + 2f32.powi(-6), 1.0 + 2f32.powi(-7)],
        "weight rounding"
    );
}

#[test]
fn bf16_weight_copy_follows_changes_to_the_weight() {
    let Some(g) = cuda(GemmPrecision::Bf16) else {
        return;
    };
    let mut rng = Rng::new(4);
    let (n, k, out) = (5, 40, 9);
    let xs = rng.vec(n * k, 1.0);
    let ws = rng.vec(out * k, 1.0);
    let delta = rng.vec(out * k, 1.0);
    let (cx, gx) = both(&g, &xs, n, k);
    let (mut cw, mut gw) = both(&g, &ws, out, k);
    let _ = g.linear(&gx, &gw, None).unwrap(); // makes the bf16 copy
    let (cd, gd) = both(&g, &delta, out, k);
    CpuBackend.add_assign(&mut cw, &cd).unwrap();
    g.add_assign(&mut gw, &gd).unwrap();
    let want = CpuBackend.linear(&cx, &cw, None).unwrap();
    let got = g.download(&g.linear(&gx, &gw, None).unwrap()).unwrap();
    assert_close(
        "linear after the weight changed",
        &got,
        &want.data,
        BF16_TOL,
    );
}

fn check_linear_add_assign(precision: GemmPrecision, tol: f64) {
    let Some(g) = cuda(precision) else {
        return;
    };
    let mut rng = Rng::new(5);
    let (n, k, out) = (37, 72, 45);
    let (cx, gx) = both(&g, &rng.vec(n * k, 1.0), n, k);
    let (cw, gw) = both(&g, &rng.vec(out * k, 0.5), out, k);
    let (cb, gb) = both(&g, &rng.vec(out, 1.0), 1, out);
    let start = rng.vec(n * out, 2.0);
    let (mut ca, mut ga) = both(&g, &start, n, out);
    CpuBackend
        .linear_add_assign(&mut ca, &cx, &cw, Some(&cb))
        .unwrap();
    g.linear_add_assign(&mut ga, &gx, &gw, Some(&gb)).unwrap();
    let tag = format!("linear_add_assign {precision:?}");
    assert_close(&tag, &g.download(&ga).unwrap(), &ca.data, tol);
    CpuBackend
        .linear_add_assign(&mut ca, &cx, &cw, None)
        .unwrap();
    g.linear_add_assign(&mut ga, &gx, &gw, None).unwrap();
    assert_close(
        &format!("{tag} no bias"),
        &g.download(&ga).unwrap(),
        &ca.data,
        tol,
    );
    // shapes that do not line up are errors, and leave the accumulator alone
    let wrong = rng.vec(n * (out + 1), 1.0);
    let mut gwrong = g.upload(&wrong, n, out + 1).unwrap();
    assert!(
        g.linear_add_assign(&mut gwrong, &gx, &gw, Some(&gb))
            .is_err()
    );
    assert_eq!(g.download(&gwrong).unwrap(), wrong);
}

#[test]
fn linear_add_assign_f32_matches_cpu() {
    check_linear_add_assign(GemmPrecision::F32, F32_TOL);
}

#[test]
fn linear_add_assign_bf16_matches_cpu_within_bf16() {
    check_linear_add_assign(GemmPrecision::Bf16, BF16_TOL);
}

#[test]
fn layer_norm_matches_cpu() {
    let Some(g) = cuda(GemmPrecision::F32) else {
        return;
    };
    let mut rng = Rng::new(6);
    // 72: fewer columns than threads; 1000: several strides per thread; 1: a degenerate row
    for (rows, cols) in [(37, 72), (5, 1000), (3, 1)] {
        // an offset per row, so the mean matters
        let data: Vec<f32> = (0..rows * cols)
            .map(|i| rng.next() * 2.0 + (i / cols) as f32 * 0.37)
            .collect();
        let (cx, gx) = both(&g, &data, rows, cols);
        let (cgam, ggam) = both(&g, &rng.vec(cols, 1.5), 1, cols);
        let (cbet, gbet) = both(&g, &rng.vec(cols, 1.0), 1, cols);
        let want = CpuBackend.layer_norm(&cx, &cgam, &cbet, 1e-6).unwrap();
        let got = g.layer_norm(&gx, &ggam, &gbet, 1e-6).unwrap();
        assert_eq!(g.dims(&got), (rows, cols));
        assert_close(
            &format!("layer_norm {rows}x{cols}"),
            &g.download(&got).unwrap(),
            &want.data,
            F32_TOL,
        );
    }
    let (_, x) = both(&g, &[1.0; 6], 2, 3);
    let (_, gam) = both(&g, &[1.0; 2], 1, 2);
    let (_, bet) = both(&g, &[1.0; 3], 1, 3);
    assert!(g.layer_norm(&x, &gam, &bet, 1e-6).is_err());
}

#[test]
fn activations_match_cpu() {
    let Some(g) = cuda(GemmPrecision::F32) else {
        return;
    };
    let mut data = Rng::new(7).vec(37 * 72, 6.0);
    // the tails: large negative (exp overflow path) and large positive inputs
    data.extend([-30.0, -12.0, -9.5, 9.5, 12.0, 30.0]);
    let n = data.len();
    for act in [Activation::GeluTanh, Activation::GeluErf] {
        let (mut c, mut x) = both(&g, &data, 1, n);
        CpuBackend.activate(&mut c, act).unwrap();
        g.activate(&mut x, act).unwrap();
        let got = g.download(&x).unwrap();
        assert_close(&format!("{act:?}"), &got, &c.data, F32_TOL);
        // and per element, so a few bad values cannot hide in the norm
        for (i, (a, b)) in got.iter().zip(&c.data).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                "{act:?}({}) = {a}, CPU {b}",
                data[i]
            );
        }
    }
}

#[test]
fn elementwise_and_row_ops_match_cpu() {
    let Some(g) = cuda(GemmPrecision::F32) else {
        return;
    };
    let mut rng = Rng::new(8);
    let (rows, cols) = (34, 72);
    let a = rng.vec(rows * cols, 1.0);
    let b = rng.vec(rows * cols, 1.0);

    // add_assign
    let (mut ca, mut ga) = both(&g, &a, rows, cols);
    let (cb, gb) = both(&g, &b, rows, cols);
    CpuBackend.add_assign(&mut ca, &cb).unwrap();
    g.add_assign(&mut ga, &gb).unwrap();
    assert_eq!(g.download(&ga).unwrap(), ca.data, "add_assign");
    let (_, wrong) = both(&g, &b[..cols * 2], 2, cols);
    assert!(g.add_assign(&mut ga, &wrong).is_err());

    // add_periodic_rows: a table of 17 rows over two sequences of 17
    let table = rng.vec(17 * cols, 1.0);
    let (ct, gt) = both(&g, &table, 17, cols);
    CpuBackend.add_periodic_rows(&mut ca, &ct).unwrap();
    g.add_periodic_rows(&mut ga, &gt).unwrap();
    assert_eq!(g.download(&ga).unwrap(), ca.data, "add_periodic_rows");
    let (_, t5) = both(&g, &table[..5 * cols], 5, cols);
    assert!(g.add_periodic_rows(&mut ga, &t5).is_err());

    // gather_rows, repeated and unordered ids
    let ids = [16u32, 0, 3, 3, 9, 16, 1];
    let want = CpuBackend.gather_rows(&ct, &ids).unwrap();
    let got = g.gather_rows(&gt, &ids).unwrap();
    assert_eq!(g.dims(&got), (ids.len(), cols));
    assert_eq!(g.download(&got).unwrap(), want.data, "gather_rows");
    assert!(g.gather_rows(&gt, &[0, 17]).is_err());
    let none = g.gather_rows(&gt, &[]).unwrap();
    assert_eq!(g.dims(&none), (0, cols));

    // strided_rows: the last position of each of two sequences of 17
    let want = CpuBackend.strided_rows(&ca, 16, 17, 2).unwrap();
    let got = g.strided_rows(&ga, 16, 17, 2).unwrap();
    assert_eq!(g.dims(&got), (2, cols));
    assert_eq!(g.download(&got).unwrap(), want.data, "strided_rows");
    let want = CpuBackend.strided_rows(&ca, 1, 3, 11).unwrap();
    let got = g.strided_rows(&ga, 1, 3, 11).unwrap();
    assert_eq!(g.download(&got).unwrap(), want.data, "strided_rows step 3");
    assert!(g.strided_rows(&ga, 16, 17, 3).is_err());
    assert!(g.strided_rows(&ga, 0, usize::MAX, 3).is_err());
}

#[test]
fn self_attention_matches_cpu() {
    let Some(g) = cuda(GemmPrecision::F32) else {
        return;
    };
    let mut rng = Rng::new(9);
    // (batch, seq, heads, dim): head_dim 24, 40, 1; seq 17, 70, 1
    for (batch, seq, heads, dim) in [(2, 17, 3, 72), (3, 70, 2, 80), (1, 1, 1, 1), (4, 5, 5, 5)] {
        let data = rng.vec(batch * seq * 3 * dim, 2.0);
        let (c, x) = both(&g, &data, batch * seq, 3 * dim);
        let want = CpuBackend.self_attention(&c, batch, seq, heads).unwrap();
        let got = g.self_attention(&x, batch, seq, heads).unwrap();
        assert_eq!(g.dims(&got), (batch * seq, dim));
        assert_close(
            &format!("self_attention b{batch} s{seq} h{heads} d{dim}"),
            &g.download(&got).unwrap(),
            &want.data,
            F32_TOL,
        );
    }
    let (_, x) = both(&g, &rng.vec(10 * 72, 1.0), 10, 72);
    assert!(g.self_attention(&x, 2, 4, 3).is_err()); // rows
    assert!(g.self_attention(&x, 2, 5, 5).is_err()); // 24 not divisible by 5
    assert!(g.self_attention(&x, 2, 5, 0).is_err());
    let (_, e) = both(&g, &[], 0, 72);
    assert_eq!(g.dims(&g.self_attention(&e, 0, 5, 3).unwrap()), (0, 24));
}

#[test]
fn self_attention_bf16_matches_cpu_within_bf16() {
    // The Bf16 path: bf16 q/k/v and probabilities, f32 scores and accumulation, every
    // (sequence, head) pair in one batched GEMM; then the fused kernel (cuda/attention.cu).
    // seq 729 / head_dim 72 is so400m-384's shape.
    let Some(g) = cuda(GemmPrecision::Bf16) else {
        return;
    };
    for flash in [false, true] {
        g.set_flash_attention(flash);
        let mut rng = Rng::new(19);
        for (batch, seq, heads, dim) in [
            (2, 17, 3, 72),
            (3, 70, 2, 80),
            (1, 1, 1, 1),
            (2, 729, 4, 288),
            (1, 130, 2, 40),
        ] {
            let data = rng.vec(batch * seq * 3 * dim, 2.0);
            let (c, x) = both(&g, &data, batch * seq, 3 * dim);
            let want = CpuBackend.self_attention(&c, batch, seq, heads).unwrap();
            let got = g.self_attention(&x, batch, seq, heads).unwrap();
            assert_eq!(g.dims(&got), (batch * seq, dim));
            assert_close(
                &format!("self_attention bf16 flash {flash} b{batch} s{seq} h{heads} d{dim}"),
                &g.download(&got).unwrap(),
                &want.data,
                BF16_TOL,
            );
        }
    }
}

#[test]
fn pooled_attention_matches_cpu() {
    let Some(g) = cuda(GemmPrecision::F32) else {
        return;
    };
    let mut rng = Rng::new(10);
    for (batch, seq, heads, dim) in [(3, 17, 3, 72), (2, 300, 4, 80), (1, 1, 1, 7)] {
        let (cq, gq) = both(&g, &rng.vec(dim, 2.0), 1, dim);
        let (ckv, gkv) = both(
            &g,
            &rng.vec(batch * seq * 2 * dim, 2.0),
            batch * seq,
            2 * dim,
        );
        let want = CpuBackend
            .pooled_attention(&cq, &ckv, batch, seq, heads)
            .unwrap();
        let got = g.pooled_attention(&gq, &gkv, batch, seq, heads).unwrap();
        assert_eq!(g.dims(&got), (batch, dim));
        assert_close(
            &format!("pooled_attention b{batch} s{seq} h{heads} d{dim}"),
            &g.download(&got).unwrap(),
            &want.data,
            F32_TOL,
        );
    }
    let (_, q) = both(&g, &[1.0; 72], 1, 72);
    let (_, kv) = both(&g, &rng.vec(10 * 144, 1.0), 10, 144);
    assert!(g.pooled_attention(&q, &kv, 2, 4, 3).is_err());
    assert!(g.pooled_attention(&q, &kv, 2, 5, 5).is_err());
}

#[test]
fn patchify_matches_cpu() {
    let Some(g) = cuda(GemmPrecision::F32) else {
        return;
    };
    let mut rng = Rng::new(11);
    // (2, 3, 30, 45, 7) and (2, 3, 384, 384, 14): sizes that are not multiples of the patch,
    // whose edge remainder is dropped (so400m-patch14-384).
    for (batch, c, h, w, p) in [
        (2, 3, 28, 42, 7),
        (1, 2, 4, 4, 2),
        (3, 3, 16, 16, 16),
        (2, 3, 30, 45, 7),
        (2, 3, 384, 384, 14),
    ] {
        let (ci, gi) = both(&g, &rng.vec(batch * c * h * w, 1.0), batch, c * h * w);
        let want = CpuBackend.patchify(&ci, c, h, w, p).unwrap();
        let got = g.patchify(&gi, c, h, w, p).unwrap();
        assert_eq!(g.dims(&got), (want.rows, want.cols));
        assert_eq!(
            g.download(&got).unwrap(),
            want.data,
            "patchify {batch}x{c}x{h}x{w}/{p}"
        );
    }
    let (_, i) = both(&g, &[1.0; 32], 1, 32);
    assert!(g.patchify(&i, 2, 4, 4, 0).is_err());
    assert!(g.patchify(&i, 3, 4, 4, 2).is_err());
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/siglip")
}

/// Both towers of tiny-a on the GPU against the CPU, on transformers' pixel values and ids;
/// `fused` picks the bf16 path's fused passes or the separate ones.
fn check_towers(precision: GemmPrecision, fused: bool, tol: f64) {
    let Some(g) = cuda(precision) else {
        return;
    };
    g.set_fused(fused);
    // the fused attention kernel with the fused passes, the cuBLAS products without
    g.set_flash_attention(fused);
    let dir = fixtures().join("tiny-a");
    let golden = fixtures().join("golden-a");
    let cpu = SiglipModel::load(&dir, CpuBackend).unwrap();
    let gpu = SiglipModel::load(&dir, g).unwrap();
    let pixels = common::load_f32(&golden.join("pixel_values.npy"));
    let want = cpu.image_features(&pixels).unwrap();
    let got = gpu.image_features(&pixels).unwrap();
    assert_close(
        &format!("image features {precision:?} fused {fused}"),
        &got,
        &want,
        tol,
    );
    let ids: Vec<u32> = common::load_i64(&golden.join("input_ids.npy"))
        .into_iter()
        .map(|v| v as u32)
        .collect();
    let want = cpu.text_features(&ids).unwrap();
    let got = gpu.text_features(&ids).unwrap();
    assert_close(
        &format!("text features {precision:?} fused {fused}"),
        &got,
        &want,
        tol,
    );
}

#[test]
fn tiny_a_towers_f32_match_cpu() {
    check_towers(GemmPrecision::F32, true, F32_TOL);
}

#[test]
fn tiny_a_towers_bf16_match_cpu_within_bf16() {
    // bf16 operands through several layers: looser than one GEMM
    check_towers(GemmPrecision::Bf16, true, 3e-2);
    check_towers(GemmPrecision::Bf16, false, 3e-2);
}

#[test]
fn fused_bf16_passes_match_cpu_and_never_use_a_stale_copy() {
    // The fused bf16 passes (layer norm's bf16 copy, bias + activation + bf16 after the first
    // MLP GEMM, the q/k/v bias added while splitting heads), then the same with them off.
    for fused in [true, false] {
        let Some(g) = cuda(GemmPrecision::Bf16) else {
            return;
        };
        g.set_fused(fused);
        let mut rng = Rng::new(23);
        let (n, k, out) = (37, 72, 45);
        let (cx, gx) = both(&g, &rng.vec(n * k, 1.0), n, k);
        let (cw, gw) = both(&g, &rng.vec(out * k, 0.5), out, k);
        let (cb, gb) = both(&g, &rng.vec(out, 0.5), 1, out);
        for act in [Activation::GeluTanh, Activation::GeluErf] {
            let want = CpuBackend.linear_activate(&cx, &cw, &cb, act).unwrap();
            let got = g.linear_activate(&gx, &gw, &gb, act).unwrap();
            let what = format!("linear_activate {act:?} fused {fused}");
            assert_close(&what, &g.download(&got).unwrap(), &want.data, BF16_TOL);
            // its bf16 copy feeds the next GEMM: the second linear of an MLP
            let (cw2, gw2) = both(&g, &rng.vec(k * out, 0.5), k, out);
            let want2 = CpuBackend.linear(&want, &cw2, None).unwrap();
            let got2 = g.linear(&got, &gw2, None).unwrap();
            let what = format!("MLP second linear {act:?} fused {fused}");
            assert_close(&what, &g.download(&got2).unwrap(), &want2.data, BF16_TOL);
        }
        // layer norm, changed in place, then a GEMM: the bf16 copy must follow the change
        let (cg, gg) = both(&g, &rng.vec(k, 1.0), 1, k);
        let (cbeta, gbeta) = both(&g, &rng.vec(k, 0.5), 1, k);
        let (cz, gz) = both(&g, &rng.vec(n * k, 1.0), n, k);
        let mut want = CpuBackend.layer_norm(&cx, &cg, &cbeta, 1e-6).unwrap();
        let mut got = g.layer_norm(&gx, &gg, &gbeta, 1e-6).unwrap();
        let direct = g.linear(&got, &gw, None).unwrap();
        let want_direct = CpuBackend.linear(&want, &cw, None).unwrap();
        let what = format!("layer norm then linear, fused {fused}");
        assert_close(
            &what,
            &g.download(&direct).unwrap(),
            &want_direct.data,
            BF16_TOL,
        );
        CpuBackend.add_assign(&mut want, &cz).unwrap();
        g.add_assign(&mut got, &gz).unwrap();
        let want_after = CpuBackend.linear(&want, &cw, None).unwrap();
        let got_after = g.linear(&got, &gw, None).unwrap();
        let what = format!("layer norm, add, then linear, fused {fused}");
        assert_close(
            &what,
            &g.download(&got_after).unwrap(),
            &want_after.data,
            BF16_TOL,
        );
        // self-attention with the q, k, v bias
        let (batch, seq, heads, dim) = (2, 17, 3, 72);
        let qkv = rng.vec(batch * seq * 3 * dim, 2.0);
        let bias = rng.vec(3 * dim, 1.0);
        let (cq, gq) = both(&g, &qkv, batch * seq, 3 * dim);
        let (cqb, gqb) = both(&g, &bias, 1, 3 * dim);
        let want = CpuBackend
            .self_attention_biased(cq, &cqb, batch, seq, heads)
            .unwrap();
        let got = g
            .self_attention_biased(gq, &gqb, batch, seq, heads)
            .unwrap();
        let what = format!("self_attention_biased fused {fused}");
        assert_close(&what, &g.download(&got).unwrap(), &want.data, BF16_TOL);
    }
}
