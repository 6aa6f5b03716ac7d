//! SmolVLM / SmolVLM2 (Idefics3 architecture) in the onnx-community / transformers.js layout:
//! `onnx/vision_encoder*.onnx`, `onnx/embed_tokens*.onnx`, `onnx/decoder_model_merged*.onnx` beside
//! `config.json`, `preprocessor_config.json` and `tokenizer.json`.
//!
//! One frame is one 512×512 image (no tiling, 64 image tokens): resized as transformers'
//! Idefics3 image processor does with `do_image_splitting=False` (longest edge to
//! `size.longest_edge`, then squashed to `max_image_size`², Pillow Lanczos), scaled to [-1, 1].
//! The prompt is the model's chat template with `<image>` expanded to
//! `<fake_token_around_image><global-img>` + 64 × `<image>` + `<fake_token_around_image>`; the image
//! features replace the `<image>` rows of the token embeddings; greedy decoding stops at
//! `<end_of_utterance>`. The image features of the last frame are kept, so several questions about
//! one frame run the vision encoder once.
//!
//! Laid out as Florence-2 is: `config.rs` (the folder's `config.json`), `preprocess.rs` (the image
//! processor), `model.rs` (graphs and generation).

mod config;
mod model;
mod preprocess;

pub use config::Config;
pub use model::{decoder_specs, LoadOptions, SmolVlm, Trace};
pub use preprocess::{first_resize_size, Preprocess};
