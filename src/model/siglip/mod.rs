//! SigLIP (`SiglipModel`, and fixed-resolution SigLIP 2 checkpoints that share it): a Hugging
//! Face folder loaded as it is, image and text features equal to transformers'
//! `get_image_features` / `get_text_features`, and the sigmoid pair score.
//!
//! The folder holds `config.json`, `model.safetensors` (or its sharded index),
//! `preprocessor_config.json` and a tokenizer (`spiece.model` or `tokenizer.json`). The forward
//! pass is written against [`TensorOps`], so each backend runs the same model code.

pub mod config;
pub mod demo_model;
pub mod preprocess;
pub mod text_input;
mod towers;

use std::path::{Path, PathBuf};

use crate::backend::tensor::TensorOps;
use crate::error::{Error, Result};
use crate::image::RgbImage;
use crate::model::weights::Weights;

pub use config::{ImagePreprocess, SiglipConfig};
pub use text_input::SiglipTextInput;

use towers::{TextTower, VisionTower};

/// A loaded SigLIP model on backend `B`.
pub struct SiglipModel<B: TensorOps> {
    /// Where it was loaded from (for messages).
    pub path: PathBuf,
    /// Both towers' shapes.
    pub config: SiglipConfig,
    /// What the image processor does.
    pub preprocess: ImagePreprocess,
    /// Captions to ids.
    pub text_input: SiglipTextInput,
    vision: VisionTower<B::Matrix>,
    text: TextTower<B::Matrix>,
    /// `logit_scale` as stored (the logit multiplies by its exp).
    pub logit_scale: f32,
    /// `logit_bias`.
    pub logit_bias: f32,
    ops: B,
}

impl<B: TensorOps> SiglipModel<B> {
    /// Loads a model folder onto `ops`.
    pub fn load(dir: &Path, ops: B) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Model {
                path: dir.to_path_buf(),
                reason: "not a folder (expected a Hugging Face model folder)".into(),
            });
        }
        let config = SiglipConfig::from_dir(dir)?;
        let preprocess = ImagePreprocess::from_dir(dir, &config)?;
        let pad_id = read_pad_id(dir);
        let text_input =
            SiglipTextInput::from_dir(dir, config.text.max_position_embeddings, pad_id)?;
        let weights = Weights::open_dir(dir)?;
        let vision = VisionTower::load(&ops, &weights, &config)?;
        let text = TextTower::load(&ops, &weights, &config)?;
        Ok(SiglipModel {
            path: dir.to_path_buf(),
            logit_scale: weights.scalar("logit_scale")?,
            logit_bias: weights.scalar("logit_bias")?,
            config,
            preprocess,
            text_input,
            vision,
            text,
            ops,
        })
    }

    /// The backend the model runs on.
    pub fn ops(&self) -> &B {
        &self.ops
    }

    /// Width of the embeddings.
    pub fn embed_dim(&self) -> usize {
        self.config.embed_dim()
    }

    /// Image features of preprocessed pixels: `pixels` holds `n` images, each
    /// `3 × side × side` CHW floats; returns `n × embed_dim` values.
    pub fn image_features(&self, pixels: &[f32]) -> Result<Vec<f32>> {
        let per = 3 * self.config.vision.image_size.pow(2);
        if !pixels.len().is_multiple_of(per) {
            return Err(Error::Compute(format!(
                "{} pixel values are not whole {per}-value images",
                pixels.len()
            )));
        }
        let x = self.ops.upload(pixels, pixels.len() / per, per)?;
        let y = self.vision.forward(&self.ops, &x)?;
        self.ops.download(&y)
    }

    /// Image features of decoded images (preprocessed here).
    pub fn embed_images(&self, images: &[&RgbImage]) -> Result<Vec<f32>> {
        let pixels = preprocess::pixel_values(images, &self.preprocess)?;
        self.image_features(&pixels)
    }

    /// Text features of token ids: whole rows of `max_position_embeddings` ids.
    pub fn text_features(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let y = self.text.forward(&self.ops, ids)?;
        self.ops.download(&y)
    }

    /// Text features of captions (tokenized here).
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<f32>> {
        let mut ids = Vec::with_capacity(texts.len() * self.text_input.max_len());
        for t in texts {
            ids.extend(self.text_input.encode(t)?);
        }
        self.text_features(&ids)
    }

    /// The logit of one image against one caption: cosine of the features × exp(scale) + bias.
    pub fn pair_logit(&self, image: &[f32], text: &[f32]) -> f32 {
        let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let dot: f32 = image.iter().zip(text).map(|(a, b)| a * b).sum();
        let cos = dot / (norm(image) * norm(text)).max(f32::MIN_POSITIVE);
        cos * self.logit_scale.exp() + self.logit_bias
    }
}

/// The sigmoid SigLIP turns a logit into a pair probability with.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `text_config.pad_token_id` of config.json, if any (a fallback for tokenizer.json folders).
fn read_pad_id(dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("text_config")?
        .get("pad_token_id")?
        .as_u64()
        .map(|id| id as u32)
}
