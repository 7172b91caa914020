//! The tiny random-weight SigLIP embedded in the binary, for `vlmprep demo` and for `embed`
//! without `--model`. It is model A of tests/fixtures/siglip/make_siglip.py (transformers
//! `SiglipModel`, hidden 32, 2 layers, 32×32 images in 8-pixel patches, a 180-piece
//! SentencePiece vocabulary). Its weights are random: its embeddings and scores mean nothing.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The demo model's files, as a Hugging Face folder holds them.
const FILES: [(&str, &[u8]); 5] = [
    (
        "config.json",
        include_bytes!("../../../tests/fixtures/siglip/tiny-a/config.json"),
    ),
    (
        "model.safetensors",
        include_bytes!("../../../tests/fixtures/siglip/tiny-a/model.safetensors"),
    ),
    (
        "preprocessor_config.json",
        include_bytes!("../../../tests/fixtures/siglip/tiny-a/preprocessor_config.json"),
    ),
    (
        "spiece.model",
        include_bytes!("../../../tests/fixtures/siglip/tiny-a/spiece.model"),
    ),
    (
        "tokenizer_config.json",
        include_bytes!("../../../tests/fixtures/siglip/tiny-a/tokenizer_config.json"),
    ),
];

/// What to tell a user whose run used the demo model.
pub const DEMO_MODEL_WARNING: &str = "the built-in demo SigLIP has RANDOM weights: its \
     embeddings and scores mean nothing (pass --model DIR with a real SigLIP checkpoint)";

/// Writes the demo model as a folder `dir/demo-siglip` and returns its path.
pub fn write_demo_model(dir: &Path) -> Result<PathBuf> {
    let folder = dir.join("demo-siglip");
    std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
    for (name, bytes) in FILES {
        let path = folder.join(name);
        std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
    }
    Ok(folder)
}
