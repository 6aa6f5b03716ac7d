//! Vision-language models run by tract: scene descriptions, questions about a frame, and alert
//! verification.
//!
//! Each architecture lives in its own module and implements [`VisionLanguageModel`]; [`load`] picks
//! one from the model folder's `config.json` (`model_type`), the file Hugging Face / transformers.js
//! layouts ship beside their `onnx/` folder.

use std::path::Path;

mod contract;
pub mod decode;
pub mod florence2;
pub mod frame_cache;
mod onnx;
pub mod pull;
pub mod resample;
pub mod smolvlm;
pub mod tokenize;

pub(crate) use contract::read_json;
pub use contract::{
    GenerateOptions, Generation, StopReason, Timings, Variant, VisionLanguageModel, VlmError,
};

/// Reads `model_type` from `dir/config.json`.
pub fn model_type(dir: &Path) -> Result<String, VlmError> {
    let path = dir.join("config.json");
    let v = read_json(&path)?;
    v.get("model_type")
        .and_then(|t| t.as_str())
        .map(str::to_owned)
        .ok_or(VlmError::Load {
            path,
            reason: "missing string field `model_type`".into(),
        })
}

/// Loads the model in `dir`, picking the architecture from `config.json`'s `model_type`.
pub fn load(
    dir: &Path,
    variant: Variant,
    threads: usize,
) -> Result<Box<dyn VisionLanguageModel>, VlmError> {
    match model_type(dir)?.as_str() {
        "idefics3" | "smolvlm" => Ok(Box::new(smolvlm::SmolVlm::load(
            dir,
            &smolvlm::LoadOptions { variant, threads },
        )?)),
        "florence2" => Ok(Box::new(florence2::load(dir, &variant.suffix(), threads)?)),
        other => Err(VlmError::Unsupported {
            path: dir.join("config.json"),
            reason: format!("model_type `{other}` (lookout runs idefics3/smolvlm and florence2)"),
        }),
    }
}
