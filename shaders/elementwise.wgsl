// The small ops of the SigLIP forward (driven by src/backend/wgpu/tensor.rs): layer norm (one
// workgroup per row), the GELU activations, residual adds, embedding gathers, row picks and the
// patch cut (im2col). Row-major f32 matrices throughout.
//
// Every entry point but layer_norm is one invocation per output element over a 2-D dispatch
// grid (`row_stride` invocations per grid row), so any size fits the per-dimension group limit.

struct Params {
    // output elements (or rows, for layer_norm)
    n: u32,
    // invocations per row of the 2-D dispatch grid
    row_stride: u32,
    // op-specific: cols / table rows / first / step / shape numbers; f32 values as bits
    a: u32,
    b: u32,
    c: u32,
    d: u32,
    e: u32,
    f: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read> aux: array<f32>;
@group(0) @binding(3) var<storage, read> ids: array<u32>;
@group(0) @binding(4) var<storage, read_write> dst: array<f32>;
@group(0) @binding(5) var<storage, read> aux2: array<f32>;

fn index(gid: vec3<u32>) -> u32 {
    return gid.y * params.row_stride + gid.x;
}

// tanh that cannot overflow exp (the argument is clamped where tanh is ±1 in f32 anyway).
fn tanh_safe(x: f32) -> f32 {
    let t = clamp(x, -15.0, 15.0);
    let e = exp(2.0 * t);
    return (e - 1.0) / (e + 1.0);
}

// erf, Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): close to f32 rounding for the GELU.
fn erf_approx(x: f32) -> f32 {
    let s = sign(x);
    let a = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
        + t * (-1.453152027 + t * 1.061405429))));
    return s * (1.0 - poly * exp(-a * a));
}

// dst = gelu_tanh(dst), in place.
@compute @workgroup_size(256)
fn gelu_tanh(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= params.n) {
        return;
    }
    let x = dst[i];
    dst[i] = 0.5 * x * (1.0 + tanh_safe(0.7978845608028654 * (x + 0.044715 * x * x * x)));
}

// dst = gelu_erf(dst), in place.
@compute @workgroup_size(256)
fn gelu_erf(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= params.n) {
        return;
    }
    let x = dst[i];
    dst[i] = 0.5 * x * (1.0 + erf_approx(x * 0.7071067811865476));
}

// dst += src, same shapes.
@compute @workgroup_size(256)
fn add_assign(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= params.n) {
        return;
    }
    dst[i] = dst[i] + src[i];
}

// dst[r, c] += src[r mod a, c]; b = cols.
@compute @workgroup_size(256)
fn add_periodic_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= params.n) {
        return;
    }
    let cols = params.b;
    let r = i / cols;
    dst[i] = dst[i] + src[(r % params.a) * cols + i % cols];
}

// dst[i, c] = src[ids[i], c]; b = cols (ids checked on the host).
@compute @workgroup_size(256)
fn gather_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= params.n) {
        return;
    }
    let cols = params.b;
    dst[i] = src[ids[i / cols] * cols + i % cols];
}

// dst[i, c] = src[a + i·c_step, c]; b = cols, c = step.
@compute @workgroup_size(256)
fn strided_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= params.n) {
        return;
    }
    let cols = params.b;
    dst[i] = src[(params.a + (i / cols) * params.c) * cols + i % cols];
}

// im2col: a = channels, b = height, c = width, d = patch; dst rows are patches in row-major
// grid order per image, each flattened as (channel, y, x).
@compute @workgroup_size(256)
fn patchify(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = index(gid);
    if (i >= params.n) {
        return;
    }
    let ch = params.a;
    let h = params.b;
    let w = params.c;
    let p = params.d;
    let gw = w / p;
    let gh = h / p;
    let row_len = ch * p * p;
    let row = i / row_len;
    let col = i % row_len;
    let img = row / (gh * gw);
    let cell = row % (gh * gw);
    let py = cell / gw;
    let px = cell % gw;
    let c = col / (p * p);
    let dy = (col / p) % p;
    let dx = col % p;
    dst[i] = src[img * ch * h * w + c * h * w + (py * p + dy) * w + px * p + dx];
}

var<workgroup> red: array<f32, 256>;

fn row_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

// Layer norm of each row (one workgroup per row, a = workgroups per grid row, b = cols,
// c = eps bits): (x − mean) / √(var + eps) · aux + aux2, biased variance, two passes (mean,
// then the squared deviations) for accuracy.
@compute @workgroup_size(256)
fn layer_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.y * params.a + wid.x;
    // Uniform per workgroup: all invocations leave together, before any barrier.
    if (row >= params.n) {
        return;
    }
    let cols = params.b;
    let base = row * cols;
    var s = 0.0;
    for (var c = lid; c < cols; c += 256u) {
        s += src[base + c];
    }
    let mean = row_sum(lid, s) / f32(cols);
    var v = 0.0;
    for (var c = lid; c < cols; c += 256u) {
        let d = src[base + c] - mean;
        v += d * d;
    }
    let var_ = row_sum(lid, v) / f32(cols);
    let inv = 1.0 / sqrt(var_ + bitcast<f32>(params.c));
    for (var c = lid; c < cols; c += 256u) {
        dst[base + c] = (src[base + c] - mean) * inv * aux[c] + aux2[c];
    }
}
