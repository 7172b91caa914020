//! The crate's one error type, grouped by area. Variants carry the context a user needs to find the
//! problem (shard path, byte offset, sample key); library code returns these, never panics on data.

use std::path::PathBuf;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in vlmprep's library code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- files and inputs -------------------------------------------------------------------
    /// An operating-system I/O error on a named path.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An `--input` spec (path, glob, brace range) that cannot be expanded or matched nothing.
    #[error("input `{spec}`: {reason}")]
    InputSpec { spec: String, reason: String },

    // ---- shards -----------------------------------------------------------------------------
    /// A malformed tar shard; `offset` is the byte offset of the offending header or member.
    #[error("{}: byte {offset}: {reason}", shard.display())]
    Tar {
        shard: PathBuf,
        offset: u64,
        reason: String,
    },

    // ---- images -----------------------------------------------------------------------------
    /// The bytes are not a JPEG, PNG or WebP image.
    #[error("not a supported image (JPEG, PNG, WebP): {0}")]
    UnknownFormat(String),
    /// The header of a recognized format is malformed or truncated.
    #[error("bad {format} header: {reason}")]
    BadHeader {
        format: &'static str,
        reason: String,
    },
    /// The decoder failed on the entropy-coded data or pixel stream.
    #[error("{format} decode failed: {reason}")]
    Decode {
        format: &'static str,
        reason: String,
    },
    /// Refused from the header alone: a decompression bomb guard (`--max-pixels`).
    #[error("{width}x{height} = {} pixels exceeds the limit of {limit} (--max-pixels)", *width as u64 * *height as u64)]
    TooManyPixels { width: u32, height: u32, limit: u64 },

    // ---- text and token layout --------------------------------------------------------------
    /// A `tokenizer.json` that cannot be read or is not a valid Hugging Face tokenizer.
    #[error("tokenizer {}: {reason}", path.display())]
    Tokenizer { path: PathBuf, reason: String },
    /// The tokenizer failed on a text (rare: Hugging Face models refuse very few inputs).
    #[error("tokenizer {tokenizer}: cannot encode text: {reason}")]
    Encode { tokenizer: String, reason: String },
    /// A special token the sequence layout needs (e.g. `<img>`) is not in the tokenizer's vocab.
    #[error("tokenizer {tokenizer}: no token `{token}` in its vocabulary")]
    MissingToken { tokenizer: String, token: String },
    /// A sample's `.txt` / `.json` text cannot be used: bad UTF-8 or JSON, wrong types, unknown
    /// roles, labels of the wrong length, more image tags than images.
    #[error("sample text: {reason}")]
    SampleText { reason: String },

    // ---- tiling, resize, output -------------------------------------------------------------
    /// Settings that no tiling rule can honor (e.g. min tiles > max tiles).
    #[error("invalid tiling settings: {0}")]
    TilingSettings(String),
    /// The tiling rule refuses this image (its reference implementation raises on it, or the
    /// result would not fit); the sample cannot be planned under this rule.
    #[error("{width}x{height} image: cannot tile: {reason}")]
    TilingRefused {
        width: u32,
        height: u32,
        reason: crate::image::tiling::TilingRefusal,
    },
    /// A resize that could not run (zero size, buffer mismatch).
    #[error("resize: {0}")]
    Resize(String),
    /// Writing an output file failed for a reason other than I/O.
    #[error("{}: {reason}", path.display())]
    Output { path: PathBuf, reason: String },
    /// A table file (curation signals, manifest) that cannot be read as one: not parquet, a
    /// column missing or of the wrong type.
    #[error("table {}: {reason}", path.display())]
    Table { path: PathBuf, reason: String },

    // ---- curation ---------------------------------------------------------------------------
    /// Curation settings or state that cannot be used: a bad flag combination, a reference run
    /// made with another model, signals of a shard that disagree with its files.
    #[error("curate: {0}")]
    Curate(String),

    // ---- packing ----------------------------------------------------------------------------
    /// Packing settings that no packer can honor (a zero limit, a zero buffer, too many samples).
    #[error("invalid packing settings: {0}")]
    PackSettings(String),
    /// A plan file (`plan.parquet`, `plan.json`) that cannot be read or is not a vlmprep plan.
    #[error("plan {}: {reason}", path.display())]
    PlanFile { path: PathBuf, reason: String },

    // ---- models -----------------------------------------------------------------------------
    /// A model folder or file that cannot be used: missing file, unsupported config, bad JSON.
    #[error("model {}: {reason}", path.display())]
    Model { path: PathBuf, reason: String },
    /// A weight tensor that is missing, mis-shaped, of an unsupported dtype, or unreadable.
    #[error("model {}: tensor `{tensor}`: {reason}", path.display())]
    Tensor {
        path: PathBuf,
        tensor: String,
        reason: String,
    },
    /// A model computation that was handed inconsistent shapes (a bug or a bad config).
    #[error("model compute: {0}")]
    Compute(String),

    // ---- devices ----------------------------------------------------------------------------
    /// A compute device that cannot be used or failed: not compiled into this build, no driver,
    /// no GPU, a kernel that does not compile, a failed device call. `device` names the backend
    /// (`cuda`, `wgpu`), `reason` says what happened and, where it helps, what to do.
    #[error("{device}: {reason}")]
    Device {
        device: &'static str,
        reason: String,
    },

    // ---- curate: semantic dedup -------------------------------------------------------------
    /// Embeddings, an assignment or settings the semantic dedup tier cannot use (zero dim, a
    /// length that is not a multiple of dim, a non-finite or non-normalized row, too many
    /// clusters); the message names the input and the row.
    #[error("semantic dedup: {0}")]
    Semantic(String),
    // ---- serve (sidecar) --------------------------------------------------------------------
    /// The sidecar server or its resume state: bad rank/world, a state of another job, a socket
    /// or shared-memory failure, a protocol error from a client.
    #[error("serve: {0}")]
    Serve(String),
}

impl Error {
    /// A [`Error::Device`] error of the CUDA backend.
    pub fn cuda(reason: impl Into<String>) -> Self {
        Error::Device {
            device: "cuda",
            reason: reason.into(),
        }
    }

    /// Wraps an `std::io::Error` with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
