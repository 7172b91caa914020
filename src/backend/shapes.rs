//! Shape checks of the [`TensorOps`](super::TensorOps), shared by every backend so that each
//! refuses exactly the same inputs with the same message (the CPU is the reference, and a GPU
//! backend must not accept what it refuses). Matrices are given as `(rows, cols)`.

use crate::error::{Error, Result};

/// `(rows, cols)` of a matrix.
pub(crate) type Dims = (usize, usize);

fn refuse(what: &str, detail: String) -> Error {
    Error::Compute(format!("{what}: {detail}"))
}

/// Host data of `len` values for a `rows × cols` matrix.
pub(crate) fn upload(len: usize, rows: usize, cols: usize) -> Result<()> {
    if rows.checked_mul(cols) != Some(len) {
        return Err(refuse("upload", format!("{len} values for {rows}×{cols}")));
    }
    Ok(())
}

/// `x [n, k] · w [out, k]ᵀ + b [out]`.
pub(crate) fn linear(x: Dims, w: Dims, bias_len: Option<usize>) -> Result<()> {
    let ((n, k), (out, wk)) = (x, w);
    if wk != k {
        return Err(refuse("linear", format!("x {n}×{k} against w {out}×{wk}")));
    }
    match bias_len {
        Some(len) if len != out => {
            Err(refuse("linear", format!("bias of {len} for {out} outputs")))
        }
        _ => Ok(()),
    }
}

/// `acc [n, out] += x [n, k] · w [out, k]ᵀ + b [out]`.
pub(crate) fn linear_add_assign(
    acc: Dims,
    x: Dims,
    w: Dims,
    bias_len: Option<usize>,
) -> Result<()> {
    let ((n, k), (out, wk)) = (x, w);
    if wk != k || acc != (n, out) || bias_len.is_some_and(|len| len != out) {
        return Err(refuse(
            "linear_add_assign",
            format!(
                "acc {}×{} += x {n}×{k} against w {out}×{wk}, bias {bias_len:?}",
                acc.0, acc.1
            ),
        ));
    }
    Ok(())
}

/// Layer norm over rows of `width` with `gamma` and `beta` of that many values.
pub(crate) fn layer_norm(width: usize, gamma_len: usize, beta_len: usize) -> Result<()> {
    if gamma_len != width || beta_len != width {
        return Err(refuse(
            "layer_norm",
            format!("width {width}, gamma {gamma_len} beta {beta_len}"),
        ));
    }
    Ok(())
}

/// `x += y`: equal shapes.
pub(crate) fn add(x: Dims, y: Dims) -> Result<()> {
    if x != y {
        return Err(refuse("add", format!("{}×{} + {}×{}", x.0, x.1, y.0, y.1)));
    }
    Ok(())
}

/// `x[r] += table[r mod table.rows]`: same width, a whole number of periods.
pub(crate) fn periodic_rows(x: Dims, table: Dims) -> Result<()> {
    if table.1 != x.1 || table.0 == 0 || !x.0.is_multiple_of(table.0) {
        return Err(refuse(
            "add_periodic_rows",
            format!("{}×{} += table {}×{}", x.0, x.1, table.0, table.1),
        ));
    }
    Ok(())
}

/// An embedding lookup: every id below the table's row count.
pub(crate) fn gather_rows(table_rows: usize, ids: &[u32]) -> Result<()> {
    match ids.iter().find(|&&id| id as usize >= table_rows) {
        Some(id) => Err(refuse(
            "gather_rows",
            format!("id {id} outside a table of {table_rows} rows"),
        )),
        None => Ok(()),
    }
}

/// Rows `first + step·i`, `i < count`, all inside `rows`.
pub(crate) fn strided_rows(rows: usize, first: usize, step: usize, count: usize) -> Result<()> {
    // Checked arithmetic: a huge step must be refused, not wrap around into range.
    let last = (count > 0).then(|| {
        (count - 1)
            .checked_mul(step)
            .and_then(|s| s.checked_add(first))
    });
    match last {
        Some(None) => Err(refuse(
            "strided_rows",
            format!("rows {first} + {step}·i, i < {count}, of {rows}"),
        )),
        Some(Some(last)) if last >= rows => Err(refuse(
            "strided_rows",
            format!("rows {first} + {step}·i, i < {count}, of {rows}"),
        )),
        _ => Ok(()),
    }
}

/// Self-attention over `qkv [batch·seq, 3·dim]` with `heads` dividing `dim`; returns `dim`.
pub(crate) fn self_attention(qkv: Dims, batch: usize, seq: usize, heads: usize) -> Result<usize> {
    let dim = qkv.1 / 3;
    if qkv.1 != 3 * dim || qkv.0 != batch * seq || heads == 0 || !dim.is_multiple_of(heads) {
        return Err(refuse(
            "self_attention",
            format!(
                "qkv {}×{} for batch {batch}, seq {seq}, {heads} heads",
                qkv.0, qkv.1
            ),
        ));
    }
    Ok(dim)
}

/// Self-attention of `qkv + bias` with one `bias [1, 3·dim]` for every row; returns `dim`.
pub(crate) fn self_attention_biased(
    qkv: Dims,
    bias: Dims,
    batch: usize,
    seq: usize,
    heads: usize,
) -> Result<usize> {
    let dim = self_attention(qkv, batch, seq, heads)?;
    if bias != (1, qkv.1) {
        return Err(refuse(
            "self_attention",
            format!("bias {}×{} for qkv {}×{}", bias.0, bias.1, qkv.0, qkv.1),
        ));
    }
    Ok(dim)
}

/// Attention pooling: one query row `q [1, dim]` against `kv [batch·seq, 2·dim]`.
pub(crate) fn pooled_attention(
    q: Dims,
    kv: Dims,
    batch: usize,
    seq: usize,
    heads: usize,
) -> Result<()> {
    let dim = q.1;
    if q.0 != 1
        || kv.1 != 2 * dim
        || kv.0 != batch * seq
        || heads == 0
        || !dim.is_multiple_of(heads)
    {
        return Err(refuse(
            "pooled_attention",
            format!(
                "q {}×{}, kv {}×{} for batch {batch}, seq {seq}, {heads} heads",
                q.0, q.1, kv.0, kv.1
            ),
        ));
    }
    Ok(())
}

/// Patchify of `images [batch, channels·height·width]` in `patch`-pixel squares (a remainder
/// at the edges is allowed: it is dropped, as the valid convolution drops it).
pub(crate) fn patchify(
    images: Dims,
    channels: usize,
    height: usize,
    width: usize,
    patch: usize,
) -> Result<()> {
    if patch == 0 || images.1 != channels * height * width {
        return Err(refuse(
            "patchify",
            format!(
                "{}×{} images as {channels}×{height}×{width} in {patch}-pixel patches",
                images.0, images.1
            ),
        ));
    }
    Ok(())
}

/// Where each image of a tile batch lies when their pixels are uploaded back to back.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))]
pub(crate) struct PackedRgbBatch {
    /// (width, height) of each image.
    pub sizes: Vec<(u32, u32)>,
    /// Byte offset of each image in the concatenation.
    pub offsets: Vec<u64>,
    /// Total bytes.
    pub total: u64,
}

/// The pixels of a tile batch laid back to back, as the GPU backends upload them: checks that
/// there is one plan per image and that each image holds `3 × w × h` bytes.
#[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))]
pub(crate) fn packed_rgb_batch(
    images: &[&crate::image::RgbImage],
    plans: usize,
) -> Result<PackedRgbBatch> {
    if images.len() != plans {
        return Err(Error::Resize(format!(
            "{} images but {plans} plans",
            images.len()
        )));
    }
    let mut sizes = Vec::with_capacity(images.len());
    let mut offsets = Vec::with_capacity(images.len());
    let mut total = 0u64;
    for img in images {
        let need = 3 * img.width as usize * img.height as usize;
        if img.data.len() != need {
            return Err(Error::Resize(format!(
                "{}x{} image holds {} bytes, needs {need}",
                img.width,
                img.height,
                img.data.len()
            )));
        }
        sizes.push((img.width, img.height));
        offsets.push(total);
        total += need as u64;
    }
    Ok(PackedRgbBatch {
        sizes,
        offsets,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_check_accepts_good_shapes_and_names_the_op_when_it_refuses() {
        assert!(upload(6, 2, 3).is_ok());
        assert!(upload(6, 3, 3).unwrap_err().to_string().contains("upload"));
        assert!(linear((4, 8), (3, 8), Some(3)).is_ok());
        assert!(
            linear((4, 8), (3, 7), None)
                .unwrap_err()
                .to_string()
                .contains("linear")
        );
        assert!(linear((4, 8), (3, 8), Some(2)).is_err());
        assert!(linear_add_assign((4, 3), (4, 8), (3, 8), None).is_ok());
        assert!(linear_add_assign((4, 2), (4, 8), (3, 8), None).is_err());
        assert!(layer_norm(5, 5, 4).is_err());
        assert!(add((2, 3), (3, 2)).is_err());
        assert!(periodic_rows((6, 4), (3, 4)).is_ok());
        assert!(periodic_rows((7, 4), (3, 4)).is_err());
        assert!(periodic_rows((6, 4), (0, 4)).is_err());
        assert!(gather_rows(3, &[0, 2]).is_ok());
        assert!(
            gather_rows(3, &[0, 3])
                .unwrap_err()
                .to_string()
                .contains("id 3")
        );
        assert!(strided_rows(10, 1, 4, 3).is_ok()); // rows 1, 5, 9
        assert!(strided_rows(10, 2, 4, 3).is_err()); // row 10
        assert!(strided_rows(10, 0, usize::MAX, 3).is_err()); // overflow, not a wrap
        assert!(strided_rows(0, 5, 1, 0).is_ok());
        assert_eq!(self_attention((10, 72), 2, 5, 3).unwrap(), 24);
        assert!(self_attention((10, 72), 2, 5, 5).is_err());
        assert_eq!(
            self_attention_biased((10, 72), (1, 72), 2, 5, 3).unwrap(),
            24
        );
        assert!(self_attention_biased((10, 72), (1, 71), 2, 5, 3).is_err());
        assert!(self_attention_biased((10, 72), (2, 72), 2, 5, 3).is_err());
        assert!(self_attention_biased((10, 72), (1, 72), 2, 5, 5).is_err());
        assert!(pooled_attention((1, 8), (6, 16), 2, 3, 2).is_ok());
        assert!(pooled_attention((2, 8), (6, 16), 2, 3, 2).is_err());
        assert!(patchify((2, 75), 3, 5, 5, 2).is_ok());
        assert!(patchify((2, 75), 3, 5, 5, 0).is_err());
    }
}
