//! Florence-2 (base) in the onnx-community / transformers.js layout, run by tract.
//!
//! Five graphs: `vision_encoder` (768×768 image → 577 vision tokens), `embed_tokens`,
//! `encoder_model` (over `[vision tokens ; <s> prompt </s>]`), `decoder_model` (first step, from
//! the decoder start token, also yields the cross-attention keys/values) and
//! `decoder_with_past_model` (each next token). Greedy decoding; `<s>` is forced as the first token
//! when `generation_config.json` says so, as transformers does.
//!
//! The image features and the encoder output of the last frame/prompt are kept, so asking several
//! things about one frame runs the vision tower once.
//!
//! Laid out as SmolVLM is: `config.rs` (the folder's JSON), `model.rs` (graphs and generation),
//! and the processor's steps (`preprocess.rs`, `text.rs`, `postprocess.rs`).

mod config;
mod graph;
mod model;
mod postprocess;
mod preprocess;
mod text;

use std::path::Path;

pub use config::Florence2Config;
pub use model::{Features, Florence2, Trace};
pub use postprocess::{
    clean_text, loc_to_pixel, parse_locations, parse_task_output, parse_task_output_with,
    LabelledBox, TaskOutput,
};
pub use preprocess::{normalise, pixel_values, resize_bicubic};
pub use text::{construct_prompt, decode_raw, prompt_ids, task_of, text_stream};

use crate::vlm::contract::VlmError;

/// File-name suffixes of the published variants tract can run. The others (`_q4`, `_q4f16`,
/// `_bnb4`, `_fp16`) are still tried, so that the error names the file and the operator at fault.
pub const VARIANTS: [&str; 4] = ["", "_int8", "_uint8", "_quantized"];

/// Loads a Florence-2 folder (`config.json`, `tokenizer.json`, `onnx/*{variant}.onnx`).
pub fn load(dir: &Path, variant: &str, threads: usize) -> Result<Florence2, VlmError> {
    Florence2::load(dir, variant, threads)
}
