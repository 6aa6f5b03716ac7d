//! The VLM contract, a leaf the architectures import: [`VisionLanguageModel`], what one generation
//! takes and gives back, [`VlmError`], the file-name [`Variant`]s of the published layouts, and
//! reading a model folder's JSON. It names no architecture; [`super::load`] does.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

/// How long one generation may run.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Stop after this many new tokens.
    pub max_new_tokens: usize,
    /// Stop once this much wall-clock time has passed (checked between tokens).
    pub time_budget: Option<Duration>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 64,
            time_budget: None,
        }
    }
}

/// Where the time of one generation went.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Timings {
    pub vision_ms: f64,
    pub prefill_ms: f64,
    pub decode_ms_per_token: f64,
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// The model produced its end-of-answer token.
    EndOfText,
    /// `max_new_tokens` reached.
    MaxTokens,
    /// `time_budget` ran out.
    TimeBudget,
}

/// One answer from a model.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    pub text: String,
    /// The generated ids, without the prompt and without the stop token.
    pub token_ids: Vec<u32>,
    pub prompt_tokens: usize,
    pub timings: Timings,
    pub stop: StopReason,
}

/// Errors from loading or running a VLM. Each names the file or field at fault.
#[derive(Debug, thiserror::Error)]
pub enum VlmError {
    #[error("{path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("{path}: unsupported model file: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("tokenizer {path}: {reason}")]
    Tokenizer { path: PathBuf, reason: String },
    #[error("{stage}: {reason}")]
    Run { stage: &'static str, reason: String },
    #[error("bad input: {0}")]
    Input(String),
}

/// A model that answers a text prompt about one image.
pub trait VisionLanguageModel: Send {
    /// Short architecture name, e.g. `smolvlm` or `florence2`.
    fn name(&self) -> &str;

    /// Answers `prompt` about `image`, calling `on_token` with each new piece of text as it is
    /// decoded (streaming).
    fn generate(
        &mut self,
        image: &image::RgbImage,
        prompt: &str,
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<Generation, VlmError>;
}

/// Reads one JSON file of a model folder; errors name the file.
pub(crate) fn read_json(path: &Path) -> Result<serde_json::Value, VlmError> {
    let text = std::fs::read_to_string(path).map_err(|e| VlmError::Load {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| VlmError::Load {
        path: path.to_path_buf(),
        reason: format!("not JSON: {e}"),
    })
}

/// Which files of a transformers.js layout to load: `onnx/<graph><suffix>.onnx`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Variant {
    /// `""`: float32.
    Fp32,
    /// `_int8`: onnxruntime dynamic quantization, int8 weights.
    Int8,
    /// `_uint8`: the same with uint8 weights.
    Uint8,
    /// `_quantized`: transformers.js' default 8-bit files.
    Quantized,
    /// Any other suffix (`q4`, `bnb4`, `fp16`, …), tried as given; files that need onnxruntime-only
    /// operators are refused with [`VlmError::Unsupported`].
    Other(String),
}

impl Variant {
    /// The file-name suffix (`""`, `"_int8"`, …).
    pub fn suffix(&self) -> String {
        match self {
            Variant::Fp32 => String::new(),
            Variant::Int8 => "_int8".into(),
            Variant::Uint8 => "_uint8".into(),
            Variant::Quantized => "_quantized".into(),
            Variant::Other(s) => format!("_{s}"),
        }
    }
}

impl std::str::FromStr for Variant {
    type Err = VlmError;
    fn from_str(s: &str) -> Result<Variant, VlmError> {
        let s = s.trim().trim_start_matches('_');
        Ok(match s {
            "" | "fp32" | "float32" => Variant::Fp32,
            "int8" => Variant::Int8,
            "uint8" => Variant::Uint8,
            "quantized" | "q8" => Variant::Quantized,
            other if other.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                Variant::Other(other.to_string())
            }
            other => {
                return Err(VlmError::Input(format!(
                    "variant `{other}`: not a file suffix"
                )))
            }
        })
    }
}
