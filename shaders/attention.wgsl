// Softmax attention of the SigLIP towers (driven by src/backend/wgpu/tensor.rs): multi-head
// self-attention over packed q|k|v rows, and the attention-pooling head (one learned query
// shared by every sequence), both as one kernel with strides.
//
// One workgroup per (query row, head, sequence): the query is staged in workgroup memory, the
// 64 invocations score the keys in strides (scores kept in workgroup memory, up to MAX_SEQ),
// reduce the max and the sum of the exponentials together, then each output dimension is the
// probability-weighted sum of the values. No scores leave the workgroup.

struct Params {
    // queries per sequence, keys per sequence, heads, head width
    seq_q: u32,
    seq_k: u32,
    heads: u32,
    head_dim: u32,
    // q: row stride, rows per sequence (0: one query row shared by all), column of head 0
    q_stride: u32,
    q_rows: u32,
    q_col: u32,
    // kv: row stride, column of head 0's keys, column of head 0's values
    kv_stride: u32,
    k_col: u32,
    v_col: u32,
    // out: row stride (the model width)
    out_stride: u32,
    // 1/√head_dim as f32 bits
    scale_bits: u32,
    // workgroups per row of the 2-D dispatch grid
    groups_x: u32,
    // workgroups with work: sequences × heads × seq_q
    total_groups: u32,
    _pad1: u32,
    _pad2: u32,
}

const WG: u32 = 64u;
const MAX_SEQ: u32 = 2048u;
const MAX_HEAD_DIM: u32 = 256u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> kv: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> scores: array<f32, MAX_SEQ>;
var<workgroup> qs: array<f32, MAX_HEAD_DIM>;
var<workgroup> red: array<f32, WG>;

// Tree reduction over `red` (max when `take_max`, else sum); every invocation gets the result.
fn reduce(lid: u32, v: f32, take_max: bool) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            if (take_max) {
                red[lid] = max(red[lid], red[lid + s]);
            } else {
                red[lid] = red[lid] + red[lid + s];
            }
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(64)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.y * params.groups_x + wid.x;
    let per_seq = params.seq_q * params.heads;
    // Uniform across the workgroup: every invocation returns together, before any barrier.
    if (g >= params.total_groups) {
        return;
    }
    let seq_idx = g / per_seq;
    let rem = g % per_seq;
    let h = rem / params.seq_q;
    let qi = rem % params.seq_q;
    let hd = params.head_dim;
    let scale = bitcast<f32>(params.scale_bits);

    let q_row = seq_idx * params.q_rows + qi;
    let q_base = q_row * params.q_stride + params.q_col + h * hd;
    for (var d = lid; d < hd; d += WG) {
        qs[d] = q[q_base + d];
    }
    workgroupBarrier();

    let kv0 = seq_idx * params.seq_k;
    var local_max = -3.4028235e38;
    for (var j = lid; j < params.seq_k; j += WG) {
        let k_base = (kv0 + j) * params.kv_stride + params.k_col + h * hd;
        var s = 0.0;
        for (var d = 0u; d < hd; d += 1u) {
            s = fma(qs[d], kv[k_base + d], s);
        }
        s = s * scale;
        scores[j] = s;
        local_max = max(local_max, s);
    }
    let m = reduce(lid, local_max, true);
    var local_sum = 0.0;
    for (var j = lid; j < params.seq_k; j += WG) {
        let p = exp(scores[j] - m);
        scores[j] = p;
        local_sum += p;
    }
    let z = reduce(lid, local_sum, false);
    let out_base = (seq_idx * params.seq_q + qi) * params.out_stride + h * hd;
    for (var d = lid; d < hd; d += WG) {
        var acc = 0.0;
        for (var j = 0u; j < params.seq_k; j += 1u) {
            acc = fma(scores[j], kv[(kv0 + j) * params.kv_stride + params.v_col + h * hd + d], acc);
        }
        out[out_base + d] = acc / z;
    }
}
