//! The few numbers lookout needs from a Florence-2 folder's `config.json` and
//! `generation_config.json`, read from either the transformers 5 layout (`text_config` of type
//! `bart`) or the original remote-code one (`florence2_language`): the field names agree.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::vlm::contract::{read_json, VlmError};

/// Decoder geometry and the special ids generation needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Florence2Config {
    pub d_model: usize,
    pub decoder_layers: usize,
    pub decoder_heads: usize,
    pub vocab_size: usize,
    pub decoder_start_token_id: u32,
    pub eos_token_id: u32,
    /// Florence-2's BART config forces `<s>` as the first generated token.
    pub forced_bos_token_id: Option<u32>,
    /// Vision tokens per image (577 for 768×768 input).
    pub image_tokens: usize,
    /// Square input side of the vision tower.
    pub image_size: u32,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    /// Phrases the grounding post-processor drops (from `processor_config.json`).
    pub banned_grounding: Vec<String>,
}

fn read_optional(path: &Path) -> Result<Option<Value>, VlmError> {
    if path.exists() {
        read_json(path).map(Some)
    } else {
        Ok(None)
    }
}

struct Field<'a> {
    path: &'a PathBuf,
}

impl Field<'_> {
    fn usize(&self, v: &Value, key: &str) -> Result<usize, VlmError> {
        v.get(key)
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| VlmError::Load {
                path: self.path.clone(),
                reason: format!("missing or non-integer field `text_config.{key}`"),
            })
    }
}

fn id(v: Option<&Value>, key: &str) -> Option<u32> {
    v?.get(key)?.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn triple(v: Option<&Value>, key: &str, default: [f32; 3]) -> [f32; 3] {
    let Some(arr) = v.and_then(|v| v.get(key)).and_then(Value::as_array) else {
        return default;
    };
    if arr.len() != 3 {
        return default;
    }
    let mut out = default;
    for (o, x) in out.iter_mut().zip(arr) {
        if let Some(x) = x.as_f64() {
            *o = x as f32;
        }
    }
    out
}

impl Florence2Config {
    pub fn load(dir: &Path) -> Result<Florence2Config, VlmError> {
        let path = dir.join("config.json");
        let cfg = read_json(&path)?;
        let text = cfg.get("text_config").ok_or_else(|| VlmError::Load {
            path: path.clone(),
            reason: "missing object `text_config`".into(),
        })?;
        let f = Field { path: &path };
        let d_model = f.usize(text, "d_model")?;
        let decoder_layers = f.usize(text, "decoder_layers")?;
        let decoder_heads = f.usize(text, "decoder_attention_heads")?;
        let vocab_size = f.usize(text, "vocab_size")?;
        if decoder_heads == 0 || d_model % decoder_heads != 0 {
            return Err(VlmError::Load {
                path,
                reason: format!("d_model {d_model} is not a multiple of decoder_attention_heads {decoder_heads}"),
            });
        }
        let gen = read_optional(&dir.join("generation_config.json"))?;
        let pre = read_optional(&dir.join("preprocessor_config.json"))?;
        let proc = read_optional(&dir.join("processor_config.json"))?;
        let pick = |key: &str, default: u32| {
            id(gen.as_ref(), key)
                .or_else(|| id(Some(text), key))
                .or_else(|| id(Some(&cfg), key))
                .unwrap_or(default)
        };
        let forced_bos_token_id = id(gen.as_ref(), "forced_bos_token_id")
            .or_else(|| id(Some(text), "forced_bos_token_id"));
        let image_size = pre
            .as_ref()
            .and_then(|p| p.get("size"))
            .and_then(|s| s.get("height"))
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(768);
        let image_tokens = pre
            .as_ref()
            .and_then(|p| p.get("image_seq_length"))
            .and_then(Value::as_u64)
            .map(|n| n as usize)
            .unwrap_or(577);
        let banned_grounding = proc
            .as_ref()
            .and_then(|p| {
                p.pointer("/post_processor_config/phrase_grounding/banned_grounding_tokens")
            })
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Florence2Config {
            d_model,
            decoder_layers,
            decoder_heads,
            vocab_size,
            decoder_start_token_id: pick("decoder_start_token_id", 2),
            eos_token_id: pick("eos_token_id", 2),
            forced_bos_token_id,
            image_tokens,
            image_size,
            image_mean: triple(pre.as_ref(), "image_mean", [0.485, 0.456, 0.406]),
            image_std: triple(pre.as_ref(), "image_std", [0.229, 0.224, 0.225]),
            banned_grounding,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.d_model / self.decoder_heads
    }
}
