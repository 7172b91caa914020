//! [`TensorOps`] on wgpu: the SigLIP forward as WGSL dispatches (`shaders/matmul.wgsl`,
//! `elementwise.wgsl`, `attention.wgsl`). Matrices stay in pooled device buffers between ops;
//! only [`TensorOps::download`] reads back. Shape checks are the CPU's own
//! ([`shapes`](crate::backend::shapes)), so both refuse the same inputs.

use std::sync::Arc;

use super::pool::PooledBuffer;
use super::{ShaderFamily, WgpuBackend, grid, wgpu_err};
use crate::backend::shapes;
use crate::backend::tensor::{Activation, TensorOps};
use crate::error::{Error, Result};

/// A row-major f32 matrix in a pooled device buffer.
pub struct WgpuMatrix {
    buf: PooledBuffer,
    rows: usize,
    cols: usize,
}

impl std::fmt::Debug for WgpuMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WgpuMatrix({}×{})", self.rows, self.cols)
    }
}

/// The dense ops of one [`WgpuBackend`].
#[derive(Debug, Clone)]
pub struct WgpuTensorOps {
    gpu: Arc<WgpuBackend>,
}

/// Invocations per workgroup of the element-wise entry points.
const WG: u64 = 256;
/// Keys per sequence the attention kernel holds in workgroup memory (MAX_SEQ there).
const MAX_SEQ: usize = 2048;
/// Widest head the attention kernel stages (MAX_HEAD_DIM there).
const MAX_HEAD_DIM: usize = 256;

fn u32_of(v: usize, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| Error::Compute(format!("{what} of {v} is past 32 bits")))
}

impl WgpuTensorOps {
    /// Tensor ops on `gpu`.
    pub fn new(gpu: Arc<WgpuBackend>) -> WgpuTensorOps {
        WgpuTensorOps { gpu }
    }

    /// The device they run on.
    pub fn backend(&self) -> &Arc<WgpuBackend> {
        &self.gpu
    }

    fn alloc(&self, rows: usize, cols: usize) -> Result<WgpuMatrix> {
        let n = rows
            .checked_mul(cols)
            .ok_or_else(|| Error::Compute(format!("a {rows}×{cols} matrix overflows")))?;
        Ok(WgpuMatrix {
            buf: self.gpu.storage((n as u64 * 4).max(4))?,
            rows,
            cols,
        })
    }

    /// One dispatch of an element-wise entry point over `n` outputs; `extra` are the params
    /// after `n` and `row_stride`.
    fn elementwise(
        &self,
        entry: &'static str,
        n: usize,
        extra: &[u32],
        buffers: &[(u32, &wgpu::Buffer)],
    ) -> Result<()> {
        let n32 = u32_of(n, "elements")?;
        let (gx, gy) = grid((n as u64).div_ceil(WG))?;
        let mut params = vec![n32, gx * WG as u32];
        params.extend_from_slice(extra);
        self.gpu
            .dispatch(ShaderFamily::Elementwise, entry, &params, buffers, (gx, gy))
    }

    /// `y (+)= x · wᵀ + b` into `y`; `accumulate` adds onto y's contents.
    fn matmul(
        &self,
        y: &WgpuMatrix,
        x: &WgpuMatrix,
        w: &WgpuMatrix,
        b: Option<&WgpuMatrix>,
        accumulate: bool,
    ) -> Result<()> {
        let (m, k, n) = (x.rows, x.cols, w.rows);
        let flags = u32::from(b.is_some()) | (u32::from(accumulate) << 1);
        let params = [
            u32_of(m, "rows")?,
            u32_of(n, "outputs")?,
            u32_of(k, "inputs")?,
            flags,
        ];
        let gx = n.div_ceil(64);
        let gy = m.div_ceil(64);
        if gx > super::MAX_GROUPS as usize || gy > super::MAX_GROUPS as usize {
            return Err(Error::Compute(format!(
                "linear of {m}×{k} by {n} outputs: too many blocks for one dispatch"
            )));
        }
        // Without a bias the binding still needs a buffer; the shader does not read it.
        let bias = b.map_or(x.buf.buffer(), |b| b.buf.buffer());
        self.gpu.dispatch(
            ShaderFamily::Matmul,
            "linear",
            &params,
            &[
                (1, x.buf.buffer()),
                (2, w.buf.buffer()),
                (3, bias),
                (4, y.buf.buffer()),
            ],
            (gx as u32, gy as u32),
        )
    }

    /// The attention kernel over `seqs` sequences (see shaders/attention.wgsl for the fields).
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &WgpuMatrix,
        kv: &WgpuMatrix,
        out: &WgpuMatrix,
        seqs: usize,
        seq_q: usize,
        seq_k: usize,
        heads: usize,
        strides: [usize; 7],
    ) -> Result<()> {
        let dim = out.cols;
        let hd = dim / heads;
        if seq_k > MAX_SEQ || hd > MAX_HEAD_DIM {
            return Err(wgpu_err(format!(
                "attention over {seq_k} keys with heads of {hd}: this kernel holds at most \
                 {MAX_SEQ} keys and heads of {MAX_HEAD_DIM}"
            )));
        }
        let total = seqs as u64 * heads as u64 * seq_q as u64;
        let (gx, gy) = grid(total)?;
        let [q_stride, q_rows, q_col, kv_stride, k_col, v_col, out_stride] = strides;
        let scale = 1.0 / (hd as f32).sqrt();
        let params = [
            u32_of(seq_q, "queries")?,
            u32_of(seq_k, "keys")?,
            u32_of(heads, "heads")?,
            u32_of(hd, "head width")?,
            u32_of(q_stride, "stride")?,
            u32_of(q_rows, "rows")?,
            u32_of(q_col, "column")?,
            u32_of(kv_stride, "stride")?,
            u32_of(k_col, "column")?,
            u32_of(v_col, "column")?,
            u32_of(out_stride, "stride")?,
            scale.to_bits(),
            gx,
            u32_of(total as usize, "workgroups")?,
        ];
        self.gpu.dispatch(
            ShaderFamily::Attention,
            "attention",
            &params,
            &[
                (1, q.buf.buffer()),
                (2, kv.buf.buffer()),
                (3, out.buf.buffer()),
            ],
            (gx, gy),
        )
    }
}

impl TensorOps for WgpuTensorOps {
    type Matrix = WgpuMatrix;

    /// The pHash shaders (`shaders/phash.wgsl`, `shaders/phash_dct.wgsl`, see [`super::phash`]).
    fn device_phash(
        &self,
        images: &[&crate::image::RgbImage],
    ) -> Option<Result<Vec<crate::curate::phash::PerceptualHash>>> {
        Some(self.gpu.phash_batch(images))
    }

    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<WgpuMatrix> {
        shapes::upload(data.len(), rows, cols)?;
        Ok(WgpuMatrix {
            buf: self.gpu.upload_f32(data)?,
            rows,
            cols,
        })
    }

    fn download(&self, m: &WgpuMatrix) -> Result<Vec<f32>> {
        let bytes = self
            .gpu
            .read_back(m.buf.buffer(), (m.rows * m.cols * 4) as u64)?;
        Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn dims(&self, m: &WgpuMatrix) -> (usize, usize) {
        (m.rows, m.cols)
    }

    fn linear(&self, x: &WgpuMatrix, w: &WgpuMatrix, b: Option<&WgpuMatrix>) -> Result<WgpuMatrix> {
        shapes::linear(self.dims(x), self.dims(w), b.map(|b| b.rows * b.cols))?;
        let y = self.alloc(x.rows, w.rows)?;
        self.matmul(&y, x, w, b, false)?;
        Ok(y)
    }

    fn linear_add_assign(
        &self,
        acc: &mut WgpuMatrix,
        x: &WgpuMatrix,
        w: &WgpuMatrix,
        b: Option<&WgpuMatrix>,
    ) -> Result<()> {
        shapes::linear_add_assign(
            self.dims(acc),
            self.dims(x),
            self.dims(w),
            b.map(|b| b.rows * b.cols),
        )?;
        self.matmul(acc, x, w, b, true)
    }

    fn layer_norm(
        &self,
        x: &WgpuMatrix,
        gamma: &WgpuMatrix,
        beta: &WgpuMatrix,
        eps: f32,
    ) -> Result<WgpuMatrix> {
        shapes::layer_norm(x.cols, gamma.rows * gamma.cols, beta.rows * beta.cols)?;
        let y = self.alloc(x.rows, x.cols)?;
        let (gx, gy) = grid(x.rows as u64)?;
        let params = [
            u32_of(x.rows, "rows")?,
            0,
            gx,
            u32_of(x.cols, "cols")?,
            eps.to_bits(),
        ];
        self.gpu.dispatch(
            ShaderFamily::Elementwise,
            "layer_norm",
            &params,
            &[
                (1, x.buf.buffer()),
                (2, gamma.buf.buffer()),
                (4, y.buf.buffer()),
                (5, beta.buf.buffer()),
            ],
            (gx, gy),
        )?;
        Ok(y)
    }

    fn activate(&self, x: &mut WgpuMatrix, act: Activation) -> Result<()> {
        let entry = match act {
            Activation::GeluTanh => "gelu_tanh",
            Activation::GeluErf => "gelu_erf",
        };
        self.elementwise(entry, x.rows * x.cols, &[], &[(4, x.buf.buffer())])
    }

    fn add_assign(&self, x: &mut WgpuMatrix, y: &WgpuMatrix) -> Result<()> {
        shapes::add(self.dims(x), self.dims(y))?;
        self.elementwise(
            "add_assign",
            x.rows * x.cols,
            &[],
            &[(1, y.buf.buffer()), (4, x.buf.buffer())],
        )
    }

    fn add_periodic_rows(&self, x: &mut WgpuMatrix, table: &WgpuMatrix) -> Result<()> {
        shapes::periodic_rows(self.dims(x), self.dims(table))?;
        self.elementwise(
            "add_periodic_rows",
            x.rows * x.cols,
            &[u32_of(table.rows, "rows")?, u32_of(x.cols, "cols")?],
            &[(1, table.buf.buffer()), (4, x.buf.buffer())],
        )
    }

    fn gather_rows(&self, table: &WgpuMatrix, ids: &[u32]) -> Result<WgpuMatrix> {
        shapes::gather_rows(table.rows, ids)?;
        let y = self.alloc(ids.len(), table.cols)?;
        let ids_buf = self.gpu.upload_words(ids)?;
        self.elementwise(
            "gather_rows",
            ids.len() * table.cols,
            &[0, u32_of(table.cols, "cols")?],
            &[
                (1, table.buf.buffer()),
                (3, ids_buf.buffer()),
                (4, y.buf.buffer()),
            ],
        )?;
        Ok(y)
    }

    fn strided_rows(
        &self,
        x: &WgpuMatrix,
        first: usize,
        step: usize,
        count: usize,
    ) -> Result<WgpuMatrix> {
        shapes::strided_rows(x.rows, first, step, count)?;
        let y = self.alloc(count, x.cols)?;
        self.elementwise(
            "strided_rows",
            count * x.cols,
            &[
                u32_of(first, "first row")?,
                u32_of(x.cols, "cols")?,
                u32_of(step, "step")?,
            ],
            &[(1, x.buf.buffer()), (4, y.buf.buffer())],
        )?;
        Ok(y)
    }

    fn self_attention(
        &self,
        qkv: &WgpuMatrix,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<WgpuMatrix> {
        let dim = shapes::self_attention(self.dims(qkv), batch, seq, heads)?;
        let out = self.alloc(batch * seq, dim)?;
        if batch == 0 || seq == 0 {
            return Ok(out);
        }
        let row = 3 * dim;
        self.attention(
            qkv,
            qkv,
            &out,
            batch,
            seq,
            seq,
            heads,
            [row, seq, 0, row, dim, 2 * dim, dim],
        )?;
        Ok(out)
    }

    fn pooled_attention(
        &self,
        q: &WgpuMatrix,
        kv: &WgpuMatrix,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<WgpuMatrix> {
        shapes::pooled_attention(self.dims(q), self.dims(kv), batch, seq, heads)?;
        let dim = q.cols;
        let out = self.alloc(batch, dim)?;
        if batch == 0 || seq == 0 {
            return Ok(out);
        }
        self.attention(
            q,
            kv,
            &out,
            batch,
            1,
            seq,
            heads,
            [dim, 0, 0, 2 * dim, 0, dim, dim],
        )?;
        Ok(out)
    }

    fn patchify(
        &self,
        images: &WgpuMatrix,
        channels: usize,
        height: usize,
        width: usize,
        patch: usize,
    ) -> Result<WgpuMatrix> {
        shapes::patchify(self.dims(images), channels, height, width, patch)?;
        let (gy, gx) = (height / patch, width / patch);
        let cols = channels * patch * patch;
        let y = self.alloc(images.rows * gy * gx, cols)?;
        self.elementwise(
            "patchify",
            y.rows * y.cols,
            &[
                u32_of(channels, "channels")?,
                u32_of(height, "height")?,
                u32_of(width, "width")?,
                u32_of(patch, "patch")?,
            ],
            &[(1, images.buf.buffer()), (4, y.buf.buffer())],
        )?;
        Ok(y)
    }
}
