//! `TensorOps`: the dense operations a transformer encoder is written in, so that model code
//! (SigLIP's towers) is written once and every backend runs it.
//!
//! Tensors are row-major f32 matrices `[rows, cols]` living on the backend's device; a batch of
//! sequences is `[batch × seq, width]`. Weights use PyTorch's `[out, in]` layout, so that a
//! checkpoint's tensors are uploaded as they are stored. The set is deliberately small: each
//! op is one kernel on a GPU, and fusing (bias into GEMM, the three projections into one GEMM)
//! is decided by the model code, which keeps the ops simple to port.

use crate::error::Result;

/// The MLP activations model code asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu_pytorch_tanh`: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
    GeluTanh,
    /// `gelu`: 0.5·x·(1 + erf(x/√2)).
    GeluErf,
}

/// Dense f32 matrix operations on one device.
pub trait TensorOps: Sync {
    /// A device matrix `[rows, cols]`, row-major.
    type Matrix: Send + Sync;

    /// Copies host data to the device. `data.len()` must be `rows × cols`.
    fn upload(&self, data: &[f32], rows: usize, cols: usize) -> Result<Self::Matrix>;

    /// Copies a matrix back to the host, row-major.
    fn download(&self, m: &Self::Matrix) -> Result<Vec<f32>>;

    /// `(rows, cols)` of a matrix.
    fn dims(&self, m: &Self::Matrix) -> (usize, usize);

    /// Readies a `[out, in]` matrix that will only ever be the `w` of [`linear`](Self::linear)
    /// and [`linear_add_assign`](Self::linear_add_assign) (a model's weight, at load). The
    /// default returns it as it is; the CPU backend can pack it for its own GEMM (opt-in). The result is
    /// still an ordinary matrix of the same values for every other op.
    fn prepare_linear_weight(&self, w: Self::Matrix) -> Result<Self::Matrix> {
        Ok(w)
    }

    /// `x · wᵀ + b` for `x [n, in]`, `w [out, in]`, `b [1, out]`.
    fn linear(
        &self,
        x: &Self::Matrix,
        w: &Self::Matrix,
        b: Option<&Self::Matrix>,
    ) -> Result<Self::Matrix>;

    /// `acc += x · wᵀ + b`: a linear layer added onto the residual stream. The default goes
    /// through [`linear`](Self::linear) and [`add_assign`](Self::add_assign); a backend can do
    /// it without the temporary (the CPU accumulates the GEMM straight into `acc`).
    fn linear_add_assign(
        &self,
        acc: &mut Self::Matrix,
        x: &Self::Matrix,
        w: &Self::Matrix,
        b: Option<&Self::Matrix>,
    ) -> Result<()> {
        let y = self.linear(x, w, b)?;
        self.add_assign(acc, &y)
    }

    /// `act(x · wᵀ + b)`: a linear layer and its activation (an MLP's first half). The default
    /// runs [`linear`](Self::linear) then [`activate`](Self::activate); the CPU adds the bias
    /// in the activation's pass instead of filling the output with it before the GEMM, which
    /// saves one pass over the largest activation of the layer.
    fn linear_activate(
        &self,
        x: &Self::Matrix,
        w: &Self::Matrix,
        b: &Self::Matrix,
        act: Activation,
    ) -> Result<Self::Matrix> {
        let mut y = self.linear(x, w, Some(b))?;
        self.activate(&mut y, act)?;
        Ok(y)
    }

    /// Layer norm over each row: `(x − mean) / √(var + eps) · gamma + beta`, biased variance.
    fn layer_norm(
        &self,
        x: &Self::Matrix,
        gamma: &Self::Matrix,
        beta: &Self::Matrix,
        eps: f32,
    ) -> Result<Self::Matrix>;

    /// Applies an activation in place.
    fn activate(&self, x: &mut Self::Matrix, act: Activation) -> Result<()>;

    /// `x += y`, same shapes.
    fn add_assign(&self, x: &mut Self::Matrix, y: &Self::Matrix) -> Result<()>;

    /// `x[r] += table[r mod table.rows]`: position embeddings over a batch of sequences.
    fn add_periodic_rows(&self, x: &mut Self::Matrix, table: &Self::Matrix) -> Result<()>;

    /// The rows `table[ids[i]]`: an embedding lookup. An id out of range is an error.
    fn gather_rows(&self, table: &Self::Matrix, ids: &[u32]) -> Result<Self::Matrix>;

    /// Rows `first, first + step, first + 2·step, …` (`count` of them): one position per sequence.
    fn strided_rows(
        &self,
        x: &Self::Matrix,
        first: usize,
        step: usize,
        count: usize,
    ) -> Result<Self::Matrix>;

    /// Multi-head self-attention without mask: `qkv [batch × seq, 3·dim]` holds q, k, v side by
    /// side; returns softmax(q·kᵀ/√head_dim)·v per head, heads concatenated: `[batch × seq, dim]`.
    fn self_attention(
        &self,
        qkv: &Self::Matrix,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<Self::Matrix>;

    /// [`self_attention`](Self::self_attention) of `qkv + bias`, the bias `[1, 3·dim]` added to
    /// every row: the q, k, v projection then runs without its bias, and a backend that copies
    /// each head out of `qkv` (the CPU) adds it during that copy instead of in a pass of its
    /// own. The default adds it, then runs `self_attention`.
    fn self_attention_biased(
        &self,
        qkv: Self::Matrix,
        bias: &Self::Matrix,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<Self::Matrix> {
        let mut qkv = qkv;
        self.add_periodic_rows(&mut qkv, bias)?;
        self.self_attention(&qkv, batch, seq, heads)
    }

    /// Attention pooling: one query row `q [1, dim]`, shared by every sequence, against each
    /// sequence's keys and values `kv [batch × seq, 2·dim]` (k then v); returns `[batch, dim]`.
    fn pooled_attention(
        &self,
        q: &Self::Matrix,
        kv: &Self::Matrix,
        batch: usize,
        seq: usize,
        heads: usize,
    ) -> Result<Self::Matrix>;

    /// Cuts CHW images `[batch, channels·height·width]` into non-overlapping `patch × patch`
    /// squares: `[batch × (height/patch) × (width/patch), channels·patch·patch]`, patches in
    /// row-major grid order, each flattened as (channel, y, x) — a convolution's im2col. The
    /// grid is `height / patch` by `width / patch`, rounded down: a remainder at the bottom and
    /// right edges is dropped, as a stride-`patch` convolution without padding drops it.
    fn patchify(
        &self,
        images: &Self::Matrix,
        channels: usize,
        height: usize,
        width: usize,
        patch: usize,
    ) -> Result<Self::Matrix>;

    /// `imagehash.phash` of each image (and of its mirror) on this backend's device, for a
    /// backend with a kernel for it (wgpu); it must equal the CPU's
    /// [`phash`](crate::curate::phash::phash) bit for bit. `None` (the default) leaves hashing
    /// to the CPU. A backend that hashes answers `Some` for every batch, the empty one
    /// included, so `device_phash(&[]).is_some()` asks whether it does.
    fn device_phash(
        &self,
        images: &[&crate::image::RgbImage],
    ) -> Option<Result<Vec<crate::curate::phash::PerceptualHash>>> {
        let _ = images;
        None
    }
}
