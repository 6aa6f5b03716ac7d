//! The numbers lookout needs from a SmolVLM folder's `config.json`.

use std::path::Path;

use crate::vlm::contract::{read_json, VlmError};

/// The numbers lookout needs from `config.json`.
#[derive(Debug, Clone)]
pub struct Config {
    pub image_token_id: u32,
    pub scale_factor: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
}

impl Config {
    /// Image tokens per frame: (image_size / patch_size)² / scale_factor².
    pub fn image_seq_len(&self) -> usize {
        let side = self.image_size / self.patch_size;
        side * side / (self.scale_factor * self.scale_factor)
    }

    pub fn load(path: &Path) -> Result<Config, VlmError> {
        let v = read_json(path)?;
        let err = |field: &str, why: &str| VlmError::Load {
            path: path.to_path_buf(),
            reason: format!("field `{field}`: {why}"),
        };
        let num = |obj: &serde_json::Value, field: &str| -> Result<Option<usize>, VlmError> {
            match obj.get(field) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(x) => x
                    .as_u64()
                    .filter(|&n| n > 0)
                    .map(|n| Some(n as usize))
                    .ok_or_else(|| err(field, "not a positive integer")),
            }
        };
        let text = v
            .get("text_config")
            .ok_or_else(|| err("text_config", "missing"))?;
        let vision = v
            .get("vision_config")
            .ok_or_else(|| err("vision_config", "missing"))?;
        let need = |obj: &serde_json::Value, section: &str, field: &str| {
            num(obj, field)?.ok_or_else(|| err(&format!("{section}{field}"), "missing"))
        };
        let hidden_size = need(text, "text_config.", "hidden_size")?;
        let heads = need(text, "text_config.", "num_attention_heads")?;
        let head_dim = num(text, "head_dim")?.unwrap_or(hidden_size / heads);
        let cfg = Config {
            image_token_id: need(&v, "", "image_token_id")? as u32,
            scale_factor: need(&v, "", "scale_factor")?,
            image_size: need(vision, "vision_config.", "image_size")?,
            patch_size: need(vision, "vision_config.", "patch_size")?,
            hidden_size,
            num_layers: need(text, "text_config.", "num_hidden_layers")?,
            num_kv_heads: num(text, "num_key_value_heads")?.unwrap_or(heads),
            head_dim,
            vocab_size: need(text, "text_config.", "vocab_size")
                .or_else(|_| need(&v, "", "vocab_size"))?,
        };
        if !cfg
            .image_size
            .is_multiple_of(cfg.patch_size * cfg.scale_factor)
        {
            return Err(err(
                "vision_config.image_size",
                "not a multiple of patch_size × scale_factor",
            ));
        }
        Ok(cfg)
    }
}
