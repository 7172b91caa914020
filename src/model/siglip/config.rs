//! SigLIP configuration: `config.json` (both towers) and `preprocessor_config.json` (the image
//! processor), with transformers' defaults for absent keys and clear refusals for what the
//! forward pass does not implement.

use std::path::Path;

use serde::Deserialize;

use crate::backend::tensor::Activation;
use crate::error::{Error, Result};

/// One tower's transformer shape.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct TowerConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Layer norm epsilon.
    pub layer_norm_eps: f64,
    /// MLP activation (`gelu_pytorch_tanh` or `gelu`).
    pub hidden_act: String,
    // vision only
    /// Input channels (3).
    pub num_channels: usize,
    /// Square input side in pixels.
    pub image_size: usize,
    /// Square patch side in pixels.
    pub patch_size: usize,
    /// Whether the attention-pooling head exists.
    pub vision_use_head: bool,
    // text only
    /// Token vocabulary.
    pub vocab_size: usize,
    /// Text length the model is run at (and padded to).
    pub max_position_embeddings: usize,
    /// Output width of the text head (defaults to `hidden_size`).
    pub projection_size: Option<usize>,
}

impl Default for TowerConfig {
    /// transformers' `SiglipVisionConfig`/`SiglipTextConfig` defaults (base size).
    fn default() -> Self {
        TowerConfig {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            layer_norm_eps: 1e-6,
            hidden_act: "gelu_pytorch_tanh".into(),
            num_channels: 3,
            image_size: 224,
            patch_size: 16,
            vision_use_head: true,
            vocab_size: 32000,
            max_position_embeddings: 64,
            projection_size: None,
        }
    }
}

impl TowerConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    /// Patches per side of the image.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size.max(1)
    }

    /// The MLP activation, or the name of an unsupported one.
    pub fn activation(&self) -> std::result::Result<Activation, String> {
        match self.hidden_act.as_str() {
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Ok(Activation::GeluTanh),
            "gelu" => Ok(Activation::GeluErf),
            other => Err(format!("hidden_act `{other}` is not supported")),
        }
    }
}

/// `config.json` of a `SiglipModel` checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct SiglipConfig {
    /// The image tower.
    pub vision: TowerConfig,
    /// The text tower.
    pub text: TowerConfig,
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    #[serde(default)]
    vision_config: Option<TowerConfig>,
    #[serde(default)]
    text_config: Option<TowerConfig>,
}

impl SiglipConfig {
    /// Reads and checks `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<SiglipConfig> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        Self::from_json(&text).map_err(|reason| Error::Model { path, reason })
    }

    /// Parses and checks the JSON text of a `config.json`.
    pub fn from_json(text: &str) -> std::result::Result<SiglipConfig, String> {
        let raw: RawConfig =
            serde_json::from_str(text).map_err(|e| format!("not a SigLIP config: {e}"))?;
        match raw.model_type.as_deref() {
            Some("siglip") | None => {}
            Some("siglip2") => {
                return Err(
                    "model_type `siglip2` (NaFlex, variable resolution) is not supported; \
                     fixed-resolution SigLIP 2 checkpoints use model_type `siglip` and are"
                        .to_string()
                        + " supported",
                );
            }
            Some(other) => return Err(format!("model_type `{other}` is not a SigLIP model")),
        }
        let config = SiglipConfig {
            vision: raw.vision_config.unwrap_or_default(),
            text: raw.text_config.unwrap_or_default(),
        };
        config.check()?;
        Ok(config)
    }

    /// Output width of the text head.
    pub fn text_projection(&self) -> usize {
        self.text.projection_size.unwrap_or(self.text.hidden_size)
    }

    /// Width of the shared embedding space.
    pub fn embed_dim(&self) -> usize {
        self.vision.hidden_size
    }

    fn check(&self) -> std::result::Result<(), String> {
        for (name, t) in [("vision_config", &self.vision), ("text_config", &self.text)] {
            let zero = [
                ("hidden_size", t.hidden_size),
                ("intermediate_size", t.intermediate_size),
                ("num_attention_heads", t.num_attention_heads),
            ];
            if let Some((key, _)) = zero.iter().find(|(_, v)| *v == 0) {
                return Err(format!("{name}.{key} is 0"));
            }
            if t.hidden_size % t.num_attention_heads != 0 {
                return Err(format!(
                    "{name}: hidden_size {} is not divisible by num_attention_heads {}",
                    t.hidden_size, t.num_attention_heads
                ));
            }
            t.activation().map_err(|e| format!("{name}: {e}"))?;
        }
        let v = &self.vision;
        if v.num_channels != 3 {
            return Err(format!(
                "vision_config.num_channels {} (only RGB, 3)",
                v.num_channels
            ));
        }
        if v.patch_size == 0 || v.image_size < v.patch_size {
            return Err(format!(
                "vision_config: image_size {} and patch_size {} give no patch",
                v.image_size, v.patch_size
            ));
        }
        if !v.vision_use_head {
            return Err(
                "vision_config.vision_use_head is false: the image features of such a \
                 model are not defined by get_image_features"
                    .into(),
            );
        }
        if self.text.vocab_size == 0 || self.text.max_position_embeddings == 0 {
            return Err("text_config: vocab_size and max_position_embeddings must be > 0".into());
        }
        if self.text_projection() != self.vision.hidden_size {
            return Err(format!(
                "text projection size {} differs from the vision hidden size {}: the two \
                 embeddings cannot be compared",
                self.text_projection(),
                self.vision.hidden_size
            ));
        }
        Ok(())
    }
}

/// What transformers' `SiglipImageProcessor` does to an image: squash-resize to `size` with
/// `resample`, multiply by `rescale_factor`, normalize per channel.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePreprocess {
    /// Output width in pixels.
    pub width: usize,
    /// Output height in pixels.
    pub height: usize,
    /// Pillow resampling filter (2 bilinear, 3 bicubic).
    pub resample: u32,
    /// Scale applied to 0..255 values when `do_rescale` (1/255).
    pub rescale: Option<f32>,
    /// (mean, std) per channel when `do_normalize`.
    pub normalize: Option<([f32; 3], [f32; 3])>,
}

#[derive(Deserialize)]
#[serde(default)]
struct RawPreprocess {
    do_resize: bool,
    size: Option<serde_json::Value>,
    resample: u32,
    do_rescale: bool,
    rescale_factor: f64,
    do_normalize: bool,
    image_mean: Vec<f32>,
    image_std: Vec<f32>,
}

impl Default for RawPreprocess {
    fn default() -> Self {
        RawPreprocess {
            do_resize: true,
            size: None,
            resample: 3,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: vec![0.5; 3],
            image_std: vec![0.5; 3],
        }
    }
}

impl ImagePreprocess {
    /// Reads `dir/preprocessor_config.json`, or transformers' defaults for the model's image size
    /// when the file is absent.
    pub fn from_dir(dir: &Path, config: &SiglipConfig) -> Result<ImagePreprocess> {
        let path = dir.join("preprocessor_config.json");
        let side = config.vision.image_size;
        if !path.exists() {
            return Self::from_raw(RawPreprocess::default(), side)
                .map_err(|reason| Error::Model { path, reason });
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let raw: RawPreprocess = serde_json::from_str(&text).map_err(|e| Error::Model {
            path: path.clone(),
            reason: format!("not an image processor config: {e}"),
        })?;
        Self::from_raw(raw, side).map_err(|reason| Error::Model { path, reason })
    }

    fn from_raw(raw: RawPreprocess, side: usize) -> std::result::Result<ImagePreprocess, String> {
        if !raw.do_resize {
            return Err(
                "do_resize false: images of any size would reach a fixed-size model".into(),
            );
        }
        let (width, height) = match &raw.size {
            None => (side, side),
            Some(size) => {
                let get = |k: &str| size.get(k).and_then(|v| v.as_u64()).map(|v| v as usize);
                match (get("width"), get("height")) {
                    (Some(w), Some(h)) => (w, h),
                    _ => return Err(format!("size {size} is not {{height, width}}")),
                }
            }
        };
        if (width, height) != (side, side) {
            return Err(format!(
                "size {width}x{height} differs from the model's image_size {side}"
            ));
        }
        if !matches!(raw.resample, 2 | 3) {
            return Err(format!(
                "resample {} is not supported (2 bilinear, 3 bicubic)",
                raw.resample
            ));
        }
        let three = |v: &[f32], name: &str| -> std::result::Result<[f32; 3], String> {
            match v {
                [x] => Ok([*x; 3]),
                [a, b, c] => Ok([*a, *b, *c]),
                _ => Err(format!("{name} must have 1 or 3 values")),
            }
        };
        let normalize = if raw.do_normalize {
            let std = three(&raw.image_std, "image_std")?;
            if std.contains(&0.0) {
                return Err("image_std has a zero".into());
            }
            Some((three(&raw.image_mean, "image_mean")?, std))
        } else {
            None
        };
        Ok(ImagePreprocess {
            width,
            height,
            resample: raw.resample,
            rescale: raw.do_rescale.then_some(raw.rescale_factor as f32),
            normalize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_base_size_and_checks_refuse_bad_shapes() {
        let c = SiglipConfig::from_json(r#"{"model_type": "siglip"}"#).unwrap();
        assert_eq!(c.vision.hidden_size, 768);
        assert_eq!(c.text.max_position_embeddings, 64);
        assert_eq!(c.vision.grid(), 14);
        for (json, needle) in [
            (r#"{"model_type": "clip"}"#, "not a SigLIP"),
            (r#"{"model_type": "siglip2"}"#, "NaFlex"),
            (
                r#"{"vision_config": {"hidden_size": 10, "num_attention_heads": 3}}"#,
                "divisible",
            ),
            (r#"{"text_config": {"hidden_act": "relu"}}"#, "relu"),
            (
                r#"{"text_config": {"projection_size": 5}}"#,
                "cannot be compared",
            ),
            (
                r#"{"vision_config": {"vision_use_head": false}}"#,
                "vision_use_head",
            ),
            (r#"{"vision_config": {"patch_size": 300}}"#, "no patch"),
            (r#"[1, 2]"#, "not a SigLIP config"),
        ] {
            let e = SiglipConfig::from_json(json).unwrap_err();
            assert!(e.contains(needle), "{json}: {e}");
        }
    }

    #[test]
    fn preprocess_reads_size_mean_std_and_refuses_odd_settings() {
        let p = ImagePreprocess::from_raw(RawPreprocess::default(), 32).unwrap();
        assert_eq!((p.width, p.height, p.resample), (32, 32, 3));
        assert_eq!(p.normalize, Some(([0.5; 3], [0.5; 3])));
        let raw: RawPreprocess =
            serde_json::from_str(r#"{"size": {"height": 16, "width": 16}}"#).unwrap();
        assert!(
            ImagePreprocess::from_raw(raw, 32)
                .unwrap_err()
                .contains("differs")
        );
        let raw: RawPreprocess = serde_json::from_str(r#"{"resample": 1}"#).unwrap();
        assert!(ImagePreprocess::from_raw(raw, 32).is_err());
    }
}
