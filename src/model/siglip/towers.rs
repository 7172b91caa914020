//! SigLIP's two towers as weights on a backend plus a forward pass in [`TensorOps`].
//!
//! Both towers are pre-LN transformer encoders (LN → attention → residual, LN → MLP →
//! residual). The vision tower embeds patches with a strided convolution (im2col + linear),
//! adds learned positions, and pools with one learned probe query attending over all patches
//! (PyTorch `nn.MultiheadAttention`), then a residual MLP. The text tower embeds tokens and
//! positions, and pools the *last* position (padding included: SigLIP was trained that way),
//! then a linear head.
//!
//! Weights are converted to f32 and uploaded once at load; q, k and v projections are
//! concatenated into one `[3·d, d]` matrix so each layer runs one GEMM for them.

use crate::backend::tensor::{Activation, TensorOps};
use crate::error::Result;
use crate::model::siglip::config::{SiglipConfig, TowerConfig};
use crate::model::weights::Weights;

/// Reads tensors under a name prefix and uploads them.
struct Loader<'a, B: TensorOps> {
    ops: &'a B,
    weights: &'a Weights,
}

impl<'a, B: TensorOps> Loader<'a, B> {
    /// A `[rows, cols]` matrix from a tensor stored with exactly `shape`.
    fn matrix(&self, name: &str, shape: &[usize], rows: usize, cols: usize) -> Result<B::Matrix> {
        let data = self.weights.f32(name, shape)?;
        self.ops.upload(&data, rows, cols)
    }

    /// A 1-D tensor of `n` values as a `[1, n]` row.
    fn row(&self, name: &str, n: usize) -> Result<B::Matrix> {
        self.matrix(name, &[n], 1, n)
    }

    /// A `[out, in]` matrix (an embedding table; linear weights go through [`Linear::new`]).
    fn weight(&self, name: &str, out: usize, inp: usize) -> Result<B::Matrix> {
        self.matrix(name, &[out, inp], out, inp)
    }

    /// Several tensors of the given shapes stacked along rows into one matrix (q/k/v fusion).
    fn stacked(&self, names: &[String], rows_each: usize, cols: usize) -> Result<B::Matrix> {
        let mut all = Vec::with_capacity(names.len() * rows_each * cols);
        for name in names {
            let shape: &[usize] = if cols == 1 {
                &[rows_each]
            } else {
                &[rows_each, cols]
            };
            all.extend(self.weights.f32(name, shape)?);
        }
        if cols == 1 {
            self.ops.upload(&all, 1, names.len() * rows_each)
        } else {
            self.ops.upload(&all, names.len() * rows_each, cols)
        }
    }
}

/// A linear layer: weight `[out, in]`, bias `[1, out]`.
struct Linear<M> {
    w: M,
    b: M,
}

impl<M> Linear<M> {
    /// A layer of weight `w` (readied for the backend's GEMM) and bias `b`.
    fn new<B: TensorOps<Matrix = M>>(ops: &B, w: M, b: M) -> Result<Self> {
        Ok(Linear {
            w: ops.prepare_linear_weight(w)?,
            b,
        })
    }

    fn load<B: TensorOps<Matrix = M>>(
        l: &Loader<B>,
        prefix: &str,
        out: usize,
        inp: usize,
    ) -> Result<Self> {
        Linear::new(
            l.ops,
            l.weight(&format!("{prefix}.weight"), out, inp)?,
            l.row(&format!("{prefix}.bias"), out)?,
        )
    }

    fn forward<B: TensorOps<Matrix = M>>(&self, ops: &B, x: &M) -> Result<M> {
        ops.linear(x, &self.w, Some(&self.b))
    }

    /// `acc += forward(x)`, without the temporary where the backend can.
    fn forward_add<B: TensorOps<Matrix = M>>(&self, ops: &B, acc: &mut M, x: &M) -> Result<()> {
        ops.linear_add_assign(acc, x, &self.w, Some(&self.b))
    }
}

/// Layer norm parameters.
struct Norm<M> {
    gamma: M,
    beta: M,
    eps: f32,
}

impl<M> Norm<M> {
    fn load<B: TensorOps<Matrix = M>>(
        l: &Loader<B>,
        prefix: &str,
        d: usize,
        eps: f64,
    ) -> Result<Self> {
        Ok(Norm {
            gamma: l.row(&format!("{prefix}.weight"), d)?,
            beta: l.row(&format!("{prefix}.bias"), d)?,
            eps: eps as f32,
        })
    }

    fn forward<B: TensorOps<Matrix = M>>(&self, ops: &B, x: &M) -> Result<M> {
        ops.layer_norm(x, &self.gamma, &self.beta, self.eps)
    }
}

/// fc1 → activation → fc2.
struct Mlp<M> {
    fc1: Linear<M>,
    fc2: Linear<M>,
    act: Activation,
}

impl<M> Mlp<M> {
    fn load<B: TensorOps<Matrix = M>>(
        l: &Loader<B>,
        prefix: &str,
        t: &TowerConfig,
    ) -> Result<Self> {
        Ok(Mlp {
            fc1: Linear::load(
                l,
                &format!("{prefix}.fc1"),
                t.intermediate_size,
                t.hidden_size,
            )?,
            fc2: Linear::load(
                l,
                &format!("{prefix}.fc2"),
                t.hidden_size,
                t.intermediate_size,
            )?,
            act: t.activation().map_err(crate::error::Error::Compute)?,
        })
    }

    /// `acc += forward(x)`: the MLP added onto the residual stream.
    fn forward_add<B: TensorOps<Matrix = M>>(&self, ops: &B, acc: &mut M, x: &M) -> Result<()> {
        let h = ops.linear_activate(x, &self.fc1.w, &self.fc1.b, self.act)?;
        self.fc2.forward_add(ops, acc, &h)
    }
}

/// One pre-LN encoder layer.
struct Layer<M> {
    norm1: Norm<M>,
    qkv: Linear<M>,
    out: Linear<M>,
    norm2: Norm<M>,
    mlp: Mlp<M>,
}

/// A stack of encoder layers.
pub(crate) struct Encoder<M> {
    layers: Vec<Layer<M>>,
    heads: usize,
}

impl<M> Encoder<M> {
    fn load<B: TensorOps<Matrix = M>>(
        l: &Loader<B>,
        prefix: &str,
        t: &TowerConfig,
    ) -> Result<Self> {
        let d = t.hidden_size;
        let layers = (0..t.num_hidden_layers)
            .map(|i| {
                let p = format!("{prefix}.layers.{i}");
                let proj = |s: &str, kind: &str| format!("{p}.self_attn.{s}_proj.{kind}");
                Ok(Layer {
                    norm1: Norm::load(l, &format!("{p}.layer_norm1"), d, t.layer_norm_eps)?,
                    qkv: Linear::new(
                        l.ops,
                        l.stacked(&["q", "k", "v"].map(|s| proj(s, "weight")), d, d)?,
                        l.stacked(&["q", "k", "v"].map(|s| proj(s, "bias")), d, 1)?,
                    )?,
                    out: Linear::load(l, &format!("{p}.self_attn.out_proj"), d, d)?,
                    norm2: Norm::load(l, &format!("{p}.layer_norm2"), d, t.layer_norm_eps)?,
                    mlp: Mlp::load(l, &format!("{p}.mlp"), t)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Encoder {
            layers,
            heads: t.num_attention_heads,
        })
    }

    /// Runs all layers over `x [batch × seq, d]`.
    fn forward<B: TensorOps<Matrix = M>>(
        &self,
        ops: &B,
        mut x: M,
        batch: usize,
        seq: usize,
    ) -> Result<M> {
        for layer in &self.layers {
            let h = layer.norm1.forward(ops, &x)?;
            // the q, k, v bias goes in with the attention's own pass over qkv (see
            // `TensorOps::self_attention_biased`), not in a pass of the projection's
            let qkv = ops.linear(&h, &layer.qkv.w, None)?;
            let attn = ops.self_attention_biased(qkv, &layer.qkv.b, batch, seq, self.heads)?;
            layer.out.forward_add(ops, &mut x, &attn)?;
            let h = layer.norm2.forward(ops, &x)?;
            layer.mlp.forward_add(ops, &mut x, &h)?;
        }
        Ok(x)
    }
}

/// The image tower.
pub(crate) struct VisionTower<M> {
    patch: Linear<M>,
    positions: M,
    encoder: Encoder<M>,
    post_norm: Norm<M>,
    /// The probe after the head's query projection: the same query for every image.
    probe_query: M,
    head_kv: Linear<M>,
    head_out: Linear<M>,
    head_norm: Norm<M>,
    head_mlp: Mlp<M>,
    heads: usize,
    image_size: usize,
    patch_size: usize,
}

impl<M> VisionTower<M> {
    pub(crate) fn load<B: TensorOps<Matrix = M>>(
        ops: &B,
        weights: &Weights,
        c: &SiglipConfig,
    ) -> Result<Self> {
        let l = Loader { ops, weights };
        let v = &c.vision;
        let (d, p) = (v.hidden_size, v.patch_size);
        let cols = v.num_channels * p * p;
        let n_pos = v.grid() * v.grid();
        let pre = "vision_model";
        let patch = Linear::new(
            ops,
            l.matrix(
                &format!("{pre}.embeddings.patch_embedding.weight"),
                &[d, v.num_channels, p, p],
                d,
                cols,
            )?,
            l.row(&format!("{pre}.embeddings.patch_embedding.bias"), d)?,
        )?;
        let positions = l.weight(
            &format!("{pre}.embeddings.position_embedding.weight"),
            n_pos,
            d,
        )?;
        let encoder = Encoder::load(&l, &format!("{pre}.encoder"), v)?;
        let post_norm = Norm::load(&l, &format!("{pre}.post_layernorm"), d, v.layer_norm_eps)?;
        let h = format!("{pre}.head");
        // nn.MultiheadAttention keeps q, k, v projections stacked in one in_proj [3d, d].
        let in_w = weights.f32(&format!("{h}.attention.in_proj_weight"), &[3 * d, d])?;
        let in_b = weights.f32(&format!("{h}.attention.in_proj_bias"), &[3 * d])?;
        let probe = ops.upload(&weights.f32(&format!("{h}.probe"), &[1, 1, d])?, 1, d)?;
        let q_proj = Linear {
            w: ops.upload(&in_w[..d * d], d, d)?,
            b: ops.upload(&in_b[..d], 1, d)?,
        };
        let probe_query = q_proj.forward(ops, &probe)?;
        let head_kv = Linear::new(
            ops,
            ops.upload(&in_w[d * d..], 2 * d, d)?,
            ops.upload(&in_b[d..], 1, 2 * d)?,
        )?;
        Ok(VisionTower {
            patch,
            positions,
            encoder,
            post_norm,
            probe_query,
            head_kv,
            head_out: Linear::load(&l, &format!("{h}.attention.out_proj"), d, d)?,
            head_norm: Norm::load(&l, &format!("{h}.layernorm"), d, v.layer_norm_eps)?,
            head_mlp: Mlp::load(&l, &format!("{h}.mlp"), v)?,
            heads: v.num_attention_heads,
            image_size: v.image_size,
            patch_size: p,
        })
    }

    /// Image features (`get_image_features`) of `pixels [batch, 3·side·side]` (CHW, normalized).
    pub(crate) fn forward<B: TensorOps<Matrix = M>>(&self, ops: &B, pixels: &M) -> Result<M> {
        let (batch, _) = ops.dims(pixels);
        let side = self.image_size;
        let patches = ops.patchify(pixels, 3, side, side, self.patch_size)?;
        let mut x = self.patch.forward(ops, &patches)?;
        ops.add_periodic_rows(&mut x, &self.positions)?;
        let seq = (side / self.patch_size).pow(2);
        let x = self.encoder.forward(ops, x, batch, seq)?;
        let x = self.post_norm.forward(ops, &x)?;
        let kv = self.head_kv.forward(ops, &x)?;
        let pooled = ops.pooled_attention(&self.probe_query, &kv, batch, seq, self.heads)?;
        let mut y = self.head_out.forward(ops, &pooled)?;
        let h = self.head_norm.forward(ops, &y)?;
        self.head_mlp.forward_add(ops, &mut y, &h)?;
        Ok(y)
    }
}

/// The text tower.
pub(crate) struct TextTower<M> {
    tokens: M,
    positions: M,
    encoder: Encoder<M>,
    final_norm: Norm<M>,
    head: Linear<M>,
    seq: usize,
}

impl<M> TextTower<M> {
    pub(crate) fn load<B: TensorOps<Matrix = M>>(
        ops: &B,
        weights: &Weights,
        c: &SiglipConfig,
    ) -> Result<Self> {
        let l = Loader { ops, weights };
        let t = &c.text;
        let d = t.hidden_size;
        let pre = "text_model";
        Ok(TextTower {
            tokens: l.weight(
                &format!("{pre}.embeddings.token_embedding.weight"),
                t.vocab_size,
                d,
            )?,
            positions: l.weight(
                &format!("{pre}.embeddings.position_embedding.weight"),
                t.max_position_embeddings,
                d,
            )?,
            encoder: Encoder::load(&l, &format!("{pre}.encoder"), t)?,
            final_norm: Norm::load(&l, &format!("{pre}.final_layer_norm"), d, t.layer_norm_eps)?,
            head: Linear::load(&l, &format!("{pre}.head"), c.text_projection(), d)?,
            seq: t.max_position_embeddings,
        })
    }

    /// Text features (`get_text_features`) of `ids` (`batch × seq` ids, each row padded).
    pub(crate) fn forward<B: TensorOps<Matrix = M>>(&self, ops: &B, ids: &[u32]) -> Result<M> {
        if !ids.len().is_multiple_of(self.seq) {
            return Err(crate::error::Error::Compute(format!(
                "{} text ids are not whole rows of {}",
                ids.len(),
                self.seq
            )));
        }
        let batch = ids.len() / self.seq;
        let mut x = ops.gather_rows(&self.tokens, ids)?;
        ops.add_periodic_rows(&mut x, &self.positions)?;
        let x = self.encoder.forward(ops, x, batch, self.seq)?;
        // layer norm is per row, so pooling first and normalizing only the pooled rows is exact
        let last = ops.strided_rows(&x, self.seq - 1, self.seq, batch)?;
        let last = self.final_norm.forward(ops, &last)?;
        self.head.forward(ops, &last)
    }
}
