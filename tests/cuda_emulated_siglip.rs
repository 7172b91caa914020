//! The SigLIP kernels of `cuda/siglip.cu`, run by the CPU emulator (tests/common/cuda_emu.h):
//! each against the CPU backend's op where there is one, else against what its comment in the
//! .cu file says it computes (softmax in f64, bf16 rounding by `half`, the index maps). Shapes
//! are chosen to reach every branch of the indexing: rows longer and shorter than a block or a
//! warp, partial last blocks, grid-stride loops with fewer threads than elements, heads wider
//! than a warp. On a GPU, tests/cuda_tensor.rs compares the same ops through `CudaBackend`.
//!
//! Skips (printing why) without a C++ compiler, unless `VLMPREP_REQUIRE_CXX=1`.
#![cfg(feature = "cuda")]

mod common;
use common::cuda_emu::{EmuModule, arg, family};
use common::parity::{Rng, assert_close};

use vlmprep::backend::CpuBackend;
use vlmprep::backend::cuda::kernels::KernelFamily;
use vlmprep::backend::tensor::{Activation, TensorOps};

fn siglip() -> Option<&'static EmuModule> {
    family(KernelFamily::Siglip)
}

/// A grid-stride elementwise launch: 3 blocks of 64 threads, fewer than the elements.
const STRIDE_GRID: (u32, u32, u32) = (3, 1, 1);
const STRIDE_BLOCK: (u32, u32, u32) = (64, 1, 1);

fn to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn softmax_f64(row: &[f32], scale: f64) -> Vec<f64> {
    let m = row
        .iter()
        .map(|&v| f64::from(v) * scale)
        .fold(f64::MIN, f64::max);
    let e: Vec<f64> = row
        .iter()
        .map(|&v| (f64::from(v) * scale - m).exp())
        .collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

fn bf16_to_f32(bits: &[u16]) -> Vec<f32> {
    bits.iter()
        .map(|&b| half::bf16::from_bits(b).to_f32())
        .collect()
}

#[test]
fn layer_norm_matches_the_cpu() {
    let Some(m) = siglip() else { return };
    let mut rng = Rng::new(1);
    // cols below, between and above the block's 64 threads; a large mean to test the two passes
    for cols in [5i32, 100, 300] {
        let rows = 3usize;
        let n = rows * cols as usize;
        let x: Vec<f32> = rng.vec(n, 2.0).iter().map(|v| v + 40.0).collect();
        let gamma = rng.vec(cols as usize, 1.0);
        let beta = rng.vec(cols as usize, 0.5);
        let mut y = vec![f32::NAN; n];
        let mut yb = vec![0u16; n];
        let eps = 1e-6f32;
        let (xp, gp, bp, yp) = (x.as_ptr(), gamma.as_ptr(), beta.as_ptr(), y.as_mut_ptr());
        // the bf16 copy is asked for in all but the first case (a null pointer skips it)
        let ybp = if cols == 5 {
            std::ptr::null_mut()
        } else {
            yb.as_mut_ptr()
        };
        // SAFETY: layer_norm(x, gamma, beta, y, yb, cols, eps), one block per row.
        unsafe {
            m.launch(
                "layer_norm",
                (rows as u32, 1, 1),
                (64, 1, 1),
                0,
                &[
                    arg(&xp),
                    arg(&gp),
                    arg(&bp),
                    arg(&yp),
                    arg(&ybp),
                    arg(&cols),
                    arg(&eps),
                ],
            )
        };
        let c = |v: &[f32], rows| CpuBackend.upload(v, rows, v.len() / rows).unwrap();
        let want = CpuBackend
            .layer_norm(&c(&x, rows), &c(&gamma, 1), &c(&beta, 1), eps)
            .unwrap();
        assert_close(
            &format!("layer_norm cols {cols}"),
            &y,
            &CpuBackend.download(&want).unwrap(),
            1e-5,
        );
        let want_bits: Vec<u16> = y
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_bits())
            .collect();
        if cols == 5 {
            assert!(yb.iter().all(|&b| b == 0), "null bf16 output written");
        } else {
            assert_eq!(yb, want_bits, "layer_norm bf16 copy, cols {cols}");
        }
    }
}

#[test]
fn softmax_rows_match_in_f32_and_bf16() {
    let Some(m) = siglip() else { return };
    let mut rng = Rng::new(2);
    // 5 rows, 2 per 64-thread block: the last block's second warp has no row and leaves.
    let (rows, cols, scale) = (5i64, 77i32, 0.125f32);
    let n = (rows * i64::from(cols)) as usize;
    let s = rng.vec(n, 30.0);
    let want: Vec<f64> = s
        .chunks(cols as usize)
        .flat_map(|r| softmax_f64(r, f64::from(scale)))
        .collect();
    let grid = ((rows as u32).div_ceil(2), 1, 1);
    let mut p = vec![0u16; n];
    let (sp, pp) = (s.as_ptr(), p.as_mut_ptr());
    // SAFETY: softmax_rows_to_bf16(s, p, rows, cols, scale); one warp per row.
    unsafe {
        m.launch(
            "softmax_rows_to_bf16",
            grid,
            (64, 1, 1),
            0,
            &[arg(&sp), arg(&pp), arg(&rows), arg(&cols), arg(&scale)],
        )
    };
    // bf16 keeps 8 significant bits: relative error up to 2^-9 per element.
    assert_close(
        "softmax_rows_to_bf16",
        &bf16_to_f32(&p),
        &to_f32(&want),
        4e-3,
    );
    let mut inplace = s.clone();
    let ip = inplace.as_mut_ptr();
    // SAFETY: softmax_rows(s, rows, cols, scale), in place.
    unsafe {
        m.launch(
            "softmax_rows",
            grid,
            (64, 1, 1),
            0,
            &[arg(&ip), arg(&rows), arg(&cols), arg(&scale)],
        )
    };
    assert_close("softmax_rows", &inplace, &to_f32(&want), 1e-6);
}

#[test]
fn pooled_attention_matches_the_cpu() {
    let Some(m) = siglip() else { return };
    let mut rng = Rng::new(3);
    // head_dim 40 > a warp's 32 lanes; seq 37 not a multiple of the 2 warps.
    let (batch, heads, seq, head_dim) = (2usize, 3usize, 37i32, 40i32);
    let dim = heads as i32 * head_dim;
    let scale = 1.0 / (head_dim as f32).sqrt();
    let q = rng.vec(dim as usize, 1.0);
    let kv = rng.vec(batch * seq as usize * 2 * dim as usize, 1.0);
    let mut out = vec![f32::NAN; batch * dim as usize];
    let (qp, kvp, op) = (q.as_ptr(), kv.as_ptr(), out.as_mut_ptr());
    // SAFETY: pooled_attention(q, kv, out, seq, dim, head_dim, scale); `seq` floats of dynamic
    // shared memory.
    unsafe {
        m.launch(
            "pooled_attention",
            (batch as u32, heads as u32, 1),
            (64, 1, 1),
            seq as usize * 4,
            &[
                arg(&qp),
                arg(&kvp),
                arg(&op),
                arg(&seq),
                arg(&dim),
                arg(&head_dim),
                arg(&scale),
            ],
        )
    };
    let (dim, seq) = (dim as usize, seq as usize);
    let want = CpuBackend
        .pooled_attention(
            &CpuBackend.upload(&q, 1, dim).unwrap(),
            &CpuBackend.upload(&kv, batch * seq, 2 * dim).unwrap(),
            batch,
            seq,
            heads,
        )
        .unwrap();
    assert_close(
        "pooled_attention",
        &out,
        &CpuBackend.download(&want).unwrap(),
        1e-5,
    );
}

#[test]
fn gelu_forms_match_the_cpu() {
    let Some(m) = siglip() else { return };
    let mut x: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) / 50.0).collect();
    x.extend([-100.0, -30.0, 30.0, 100.0, 0.0]);
    let n = x.len() as i64;
    let cpu = |act| {
        let mut m = CpuBackend.upload(&x, 1, x.len()).unwrap();
        CpuBackend.activate(&mut m, act).unwrap();
        CpuBackend.download(&m).unwrap()
    };
    for (kernel, act) in [
        ("gelu_tanh", Activation::GeluTanh),
        ("gelu_erf", Activation::GeluErf),
    ] {
        let mut y = x.clone();
        let yp = y.as_mut_ptr();
        // SAFETY: gelu_*(x, n), in place, grid-stride.
        unsafe { m.launch_independent(kernel, STRIDE_GRID, STRIDE_BLOCK, &[arg(&yp), arg(&n)]) };
        assert_close(kernel, &y, &cpu(act), 1e-6);
        // far negative inputs go to (minus) zero, not NaN
        assert!(
            y[1000] == 0.0 && y[1001].abs() < 1e-30,
            "{kernel}: {:?}",
            &y[1000..]
        );
    }
}

/// One grid-stride launch of `kernel` over `args` (its threads never cooperate).
fn stride_launch(m: &EmuModule, kernel: &str, args: &[*mut std::ffi::c_void]) {
    // SAFETY: each caller passes `kernel`'s parameter types in order, with buffers of the
    // sizes its `n` implies.
    unsafe { m.launch_independent(kernel, STRIDE_GRID, STRIDE_BLOCK, args) };
}

#[test]
fn row_ops_match_the_cpu() {
    let Some(m) = siglip() else { return };
    let mut rng = Rng::new(4);
    let (rows, cols) = (8usize, 13usize); // 2 sequences of 4 positions
    let n = (rows * cols) as i64;
    let x = rng.vec(rows * cols, 1.0);
    let y = rng.vec(rows * cols, 1.0);
    let table = rng.vec(4 * cols, 1.0);
    let cpu = |v: &[f32], r: usize| CpuBackend.upload(v, r, v.len() / r).unwrap();

    let mut sum = x.clone();
    let (sp, yp) = (sum.as_mut_ptr(), y.as_ptr());
    stride_launch(m, "add_assign", &[arg(&sp), arg(&yp), arg(&n)]);
    let mut want = cpu(&x, rows);
    CpuBackend.add_assign(&mut want, &cpu(&y, rows)).unwrap();
    assert_eq!(sum, CpuBackend.download(&want).unwrap(), "add_assign");

    // position embeddings: a period of the 4 rows of a sequence
    let mut with_pos = x.clone();
    let (pp, tp, period) = (with_pos.as_mut_ptr(), table.as_ptr(), (4 * cols) as i64);
    stride_launch(
        m,
        "add_periodic",
        &[arg(&pp), arg(&tp), arg(&n), arg(&period)],
    );
    let mut want = cpu(&x, rows);
    CpuBackend
        .add_periodic_rows(&mut want, &cpu(&table, 4))
        .unwrap();
    assert_eq!(
        with_pos,
        CpuBackend.download(&want).unwrap(),
        "add_periodic"
    );

    let mut broadcast = vec![f32::NAN; rows * cols];
    let (bp, rp, c) = (broadcast.as_mut_ptr(), table.as_ptr(), cols as i64);
    stride_launch(m, "broadcast_row", &[arg(&bp), arg(&rp), arg(&n), arg(&c)]);
    assert!(
        broadcast.chunks(cols).all(|r| r == &table[..cols]),
        "broadcast_row"
    );

    // an embedding lookup; id 4 is past the 4-row table and reads as NaN, not out of bounds
    let ids = [3u32, 0, 2, 4, 1];
    let mut gathered = vec![0f32; ids.len() * cols];
    let (tp, ip, gp) = (table.as_ptr(), ids.as_ptr(), gathered.as_mut_ptr());
    let (gn, gc, trows) = ((ids.len() * cols) as i64, cols as i32, 4u32);
    stride_launch(
        m,
        "gather_rows",
        &[
            arg(&tp),
            arg(&ip),
            arg(&gp),
            arg(&gn),
            arg(&gc),
            arg(&trows),
        ],
    );
    let good = [3u32, 0, 2];
    let want = CpuBackend
        .download(&CpuBackend.gather_rows(&cpu(&table, 4), &good).unwrap())
        .unwrap();
    assert_eq!(gathered[..3 * cols], want[..], "gather_rows");
    assert!(
        gathered[3 * cols..4 * cols].iter().all(|v| v.is_nan()),
        "bad id"
    );
    assert_eq!(
        gathered[4 * cols..],
        table[cols..2 * cols],
        "gather_rows after a bad id"
    );

    // rows 1, 4, 7
    let mut picked = vec![0f32; 3 * cols];
    let (xp, op) = (x.as_ptr(), picked.as_mut_ptr());
    let (pn, pc, first, step) = ((3 * cols) as i64, cols as i32, 1i64, 3i64);
    stride_launch(
        m,
        "strided_rows",
        &[
            arg(&xp),
            arg(&op),
            arg(&pn),
            arg(&pc),
            arg(&first),
            arg(&step),
        ],
    );
    let want = CpuBackend.strided_rows(&cpu(&x, rows), 1, 3, 3).unwrap();
    assert_eq!(picked, CpuBackend.download(&want).unwrap(), "strided_rows");
}

#[test]
fn patchify_matches_the_cpu_with_an_edge_remainder() {
    let Some(m) = siglip() else { return };
    // 2 images of 3 x 30 x 44 in patches of 14: a 2 x 3 grid, the remainder dropped.
    let (batch, channels, height, width, patch) = (2usize, 3i32, 30i32, 44i32, 14i32);
    let img_len = (channels * height * width) as usize;
    let images = Rng::new(5).vec(batch * img_len, 1.0);
    let cols = (channels * patch * patch) as usize;
    let patches = batch * (height / patch * (width / patch)) as usize;
    let mut out = vec![f32::NAN; patches * cols];
    let (ip, op, n) = (images.as_ptr(), out.as_mut_ptr(), (patches * cols) as i64);
    stride_launch(
        m,
        "patchify",
        &[
            arg(&ip),
            arg(&op),
            arg(&n),
            arg(&channels),
            arg(&height),
            arg(&width),
            arg(&patch),
        ],
    );
    let want = CpuBackend
        .patchify(
            &CpuBackend.upload(&images, batch, img_len).unwrap(),
            channels as usize,
            height as usize,
            width as usize,
            patch as usize,
        )
        .unwrap();
    assert_eq!(out, CpuBackend.download(&want).unwrap());
}

#[test]
fn bf16_conversion_and_head_layouts() {
    let Some(m) = siglip() else { return };
    // round to nearest even at the halfway points, infinities, NaN stays NaN, subnormals
    let mut x: Vec<f32> = vec![
        1.0 + 1.0 / 256.0, // halfway, rounds down to even
        1.0 + 3.0 / 256.0, // halfway, rounds up to even
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        f32::MAX, // rounds to inf, as half does
        1e-40,
        -0.0,
    ];
    x.extend(Rng::new(6).vec(200, 1e3));
    let mut bits = vec![0u16; x.len()];
    let (xp, bp, n) = (x.as_ptr(), bits.as_mut_ptr(), x.len() as i64);
    stride_launch(m, "f32_to_bf16", &[arg(&xp), arg(&bp), arg(&n)]);
    for (i, (&v, &b)) in x.iter().zip(&bits).enumerate() {
        let want = half::bf16::from_f32(v);
        if v.is_nan() {
            assert!(
                half::bf16::from_bits(b).is_nan(),
                "element {i}: NaN became {b:#x}"
            );
        } else {
            assert_eq!(b, want.to_bits(), "element {i}: {v}");
        }
    }

    // [batch·seq, 3·dim] → q, k, v [batch, heads, seq, head_dim] in bf16, and back for f32
    let (batch, seq, heads, head_dim) = (2usize, 5i32, 3i32, 4i32);
    let dim = (heads * head_dim) as usize;
    let rows = batch * seq as usize;
    let qkv = Rng::new(7).vec(rows * 3 * dim, 1.0);
    let qkv_bias = Rng::new(9).vec(3 * dim, 1.0);
    let (seq_u, heads_u, hd) = (seq as usize, heads as usize, head_dim as usize);
    let head_major =
        |b: usize, h: usize, s: usize, d: usize| ((b * heads_u + h) * seq_u + s) * hd + d;
    // without a bias (null), then with the projection's bias added on the way
    for with_bias in [false, true] {
        let mut parts = vec![vec![0u16; rows * dim]; 3];
        let (qp, kp, vp) = (
            parts[0].as_mut_ptr(),
            parts[1].as_mut_ptr(),
            parts[2].as_mut_ptr(),
        );
        let bias_ptr = if with_bias {
            qkv_bias.as_ptr()
        } else {
            std::ptr::null()
        };
        let (src, n) = (qkv.as_ptr(), (rows * 3 * dim) as i64);
        stride_launch(
            m,
            "split_heads_bf16",
            &[
                arg(&src),
                arg(&bias_ptr),
                arg(&qp),
                arg(&kp),
                arg(&vp),
                arg(&n),
                arg(&seq),
                arg(&heads),
                arg(&head_dim),
            ],
        );
        for (part, got) in parts.iter().enumerate() {
            for b in 0..batch {
                for s in 0..seq_u {
                    for h in 0..heads_u {
                        for d in 0..hd {
                            let col = part * dim + h * hd + d;
                            let mut v = qkv[(b * seq_u + s) * 3 * dim + col];
                            if with_bias {
                                v += qkv_bias[col];
                            }
                            assert_eq!(
                                got[head_major(b, h, s, d)],
                                half::bf16::from_f32(v).to_bits(),
                                "bias {with_bias} part {part} b {b} s {s} h {h} d {d}"
                            );
                        }
                    }
                }
            }
        }
    }
    // merge_heads inverts the head-major layout of an f32 tensor
    let heads_major = Rng::new(8).vec(rows * dim, 1.0);
    let mut merged = vec![f32::NAN; rows * dim];
    let (hp, mp, n) = (
        heads_major.as_ptr(),
        merged.as_mut_ptr(),
        (rows * dim) as i64,
    );
    stride_launch(
        m,
        "merge_heads",
        &[
            arg(&hp),
            arg(&mp),
            arg(&n),
            arg(&seq),
            arg(&heads),
            arg(&head_dim),
        ],
    );
    for b in 0..batch {
        for s in 0..seq_u {
            for h in 0..heads_u {
                for d in 0..hd {
                    assert_eq!(
                        merged[(b * seq_u + s) * dim + h * hd + d],
                        heads_major[head_major(b, h, s, d)]
                    );
                }
            }
        }
    }
}

#[test]
fn bias_act_bf16_matches_the_cpus_linear_activate() {
    let Some(m) = siglip() else { return };
    let mut rng = Rng::new(10);
    let (n, k, out) = (7usize, 19usize, 45usize);
    let x = rng.vec(n * k, 1.0);
    let w = rng.vec(out * k, 1.0);
    let bias = rng.vec(out, 1.0);
    let cpu = |v: &[f32], r: usize| CpuBackend.upload(v, r, v.len() / r).unwrap();
    // the GEMM without bias, as the CUDA path runs it before this kernel
    let gemm = CpuBackend.download(&CpuBackend.linear(&cpu(&x, n), &cpu(&w, out), None).unwrap());
    let gemm = gemm.unwrap();
    for (code, act) in [
        (0i32, None),
        (1, Some(Activation::GeluTanh)),
        (2, Some(Activation::GeluErf)),
    ] {
        let mut y = gemm.clone();
        let mut yb = vec![0u16; y.len()];
        let (yp, bp, ybp) = (y.as_mut_ptr(), bias.as_ptr(), yb.as_mut_ptr());
        let (len, cols) = (y.len() as i64, out as i64);
        stride_launch(
            m,
            "bias_act_bf16",
            &[
                arg(&yp),
                arg(&bp),
                arg(&ybp),
                arg(&len),
                arg(&cols),
                arg(&code),
            ],
        );
        let want = match act {
            Some(act) => CpuBackend
                .linear_activate(&cpu(&x, n), &cpu(&w, out), &cpu(&bias, 1), act)
                .unwrap(),
            None => CpuBackend
                .linear(&cpu(&x, n), &cpu(&w, out), Some(&cpu(&bias, 1)))
                .unwrap(),
        };
        assert_close(
            &format!("bias_act_bf16 act {code}"),
            &y,
            &CpuBackend.download(&want).unwrap(),
            1e-6,
        );
        let bits: Vec<u16> = y
            .iter()
            .map(|&v| half::bf16::from_f32(v).to_bits())
            .collect();
        assert_eq!(yb, bits, "act {code}: the bf16 copy is the rounded output");
    }
}

#[test]
fn flash_attention_matches_the_cpus_attention() {
    let Some(m) = family(KernelFamily::Attention) else {
        return;
    };
    let mut rng = Rng::new(11);
    // partial query and key tiles, several key tiles, head_dim not a multiple of 16 (so400m's
    // 72) or of 8, one of exactly 16; with the q, k, v bias and without
    for (batch, seq, heads, head_dim, with_bias) in [
        (2usize, 17i32, 3i32, 72i32, true),
        (1, 130, 2, 20, false),
        (1, 64, 1, 16, true),
        (2, 5, 2, 40, false),
    ] {
        let dim = (heads * head_dim) as usize;
        let rows = batch * seq as usize;
        let qkv = rng.vec(rows * 3 * dim, 2.0);
        let bias = rng.vec(3 * dim, 0.5);
        let mut out = vec![f32::NAN; rows * dim];
        let scale = 1.0 / (head_dim as f32).sqrt();
        let hdp = (head_dim as usize).div_ceil(16) * 16;
        let (qp, op) = (qkv.as_ptr(), out.as_mut_ptr());
        let bp = if with_bias {
            bias.as_ptr()
        } else {
            std::ptr::null()
        };
        let grid = ((seq as u32).div_ceil(64), heads as u32, batch as u32);
        // SAFETY: flash_attention(qkv, bias, out, seq, heads, head_dim, scale) with three
        // 64 x hdp bf16 tiles of dynamic shared memory; qkv holds rows x 3·dim, out rows x dim.
        unsafe {
            m.launch(
                "flash_attention",
                grid,
                (128, 1, 1),
                3 * 64 * hdp * 2,
                &[
                    arg(&qp),
                    arg(&bp),
                    arg(&op),
                    arg(&seq),
                    arg(&heads),
                    arg(&head_dim),
                    arg(&scale),
                ],
            )
        };
        let c = CpuBackend.upload(&qkv, rows, 3 * dim).unwrap();
        let (seq_u, heads_u) = (seq as usize, heads as usize);
        let want = if with_bias {
            let b = CpuBackend.upload(&bias, 1, 3 * dim).unwrap();
            CpuBackend.self_attention_biased(c, &b, batch, seq_u, heads_u)
        } else {
            CpuBackend.self_attention(&c, batch, seq_u, heads_u)
        }
        .unwrap();
        // bf16 q, k, v and probabilities, f32 sums: as the cuBLAS bf16 path
        assert_close(
            &format!("flash_attention b{batch} s{seq} h{heads} d{head_dim} bias {with_bias}"),
            &out,
            &CpuBackend.download(&want).unwrap(),
            1e-2,
        );
    }
}
