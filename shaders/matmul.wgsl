// Tiled matrix multiply of the linear layers: y = x · wᵀ (+ b) (+ y), with x [m, k], w [n, k]
// (PyTorch's [out, in] layout, as checkpoints store it), y [m, n]; row-major f32
// (driven by src/backend/wgpu/tensor.rs).
//
// A workgroup of 16 × 16 invocations computes a 64 × 64 block of y; each invocation a 4 × 4
// sub-block, from 64 × 16 slices of x and w staged in workgroup memory per step of 16 along k.
// Every x and w value is read from global memory once per block instead of once per output,
// and each staged value feeds 4 multiply-adds per invocation from registers.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    // bit 0: add the bias b; bit 1: add onto the existing y (the residual stream)
    flags: u32,
}

const BLOCK: u32 = 64u;
const KSTEP: u32 = 16u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

// Slices stored k-major ([kk][row]), so the inner loop reads 4 neighbouring rows at one kk.
var<workgroup> xs: array<f32, 1024>;
var<workgroup> ws: array<f32, 1024>;

@compute @workgroup_size(16, 16)
fn linear(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let row0 = wid.y * BLOCK;
    let col0 = wid.x * BLOCK;
    var acc: array<array<f32, 4>, 4>;
    for (var i = 0u; i < 4u; i += 1u) {
        for (var j = 0u; j < 4u; j += 1u) {
            acc[i][j] = 0.0;
        }
    }
    let steps = (params.k + KSTEP - 1u) / KSTEP;
    for (var s = 0u; s < steps; s += 1u) {
        let k0 = s * KSTEP;
        // 256 invocations stage 1024 values of each slice, 4 each, consecutive along k
        // (coalesced reads of a row).
        for (var r = 0u; r < 4u; r += 1u) {
            let idx = li + 256u * r;
            let row = idx / KSTEP;
            let kk = idx % KSTEP;
            let kg = k0 + kk;
            var xv = 0.0;
            if (row0 + row < params.m && kg < params.k) {
                xv = x[(row0 + row) * params.k + kg];
            }
            xs[kk * BLOCK + row] = xv;
            var wv = 0.0;
            if (col0 + row < params.n && kg < params.k) {
                wv = w[(col0 + row) * params.k + kg];
            }
            ws[kk * BLOCK + row] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < KSTEP; kk += 1u) {
            var a: array<f32, 4>;
            var c: array<f32, 4>;
            for (var i = 0u; i < 4u; i += 1u) {
                a[i] = xs[kk * BLOCK + lid.y * 4u + i];
                c[i] = ws[kk * BLOCK + lid.x * 4u + i];
            }
            for (var i = 0u; i < 4u; i += 1u) {
                for (var j = 0u; j < 4u; j += 1u) {
                    acc[i][j] = fma(a[i], c[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i += 1u) {
        let row = row0 + lid.y * 4u + i;
        if (row >= params.m) {
            continue;
        }
        for (var j = 0u; j < 4u; j += 1u) {
            let col = col0 + lid.x * 4u + j;
            if (col >= params.n) {
                continue;
            }
            var v = acc[i][j];
            if ((params.flags & 1u) != 0u) {
                v += b[col];
            }
            let o = row * params.n + col;
            if ((params.flags & 2u) != 0u) {
                v += y[o];
            }
            y[o] = v;
        }
    }
}
