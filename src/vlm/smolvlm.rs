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

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;
use serde::Deserialize;

use super::decode::{self, Limits};
use super::onnx::load_graph;
use super::resample::{self, Filter};
use super::tokenize::{ChatTemplate, TextStream, Tokenizer};
use super::{GenerateOptions, Generation, Timings, Variant, VisionLanguageModel, VlmError};
use crate::engine::session::{Dim, ElemType, InputSpec, Session, SessionOptions, Value};

/// transformers' cap on the first resize (`MAX_IMAGE_SIZE` in image_processing_idefics3.py).
const MAX_IMAGE_SIZE: usize = 4096;

/// The SmolVLM chat format, used when the folder has no chat template.
const DEFAULT_TEMPLATE: &str = "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";

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

/// The image processor settings (`preprocessor_config.json`), for the no-splitting case.
#[derive(Debug, Clone)]
pub struct Preprocess {
    /// First resize: longest edge to this (`size.longest_edge`); `None` when `do_resize` is false.
    pub longest_edge: Option<usize>,
    /// Square side fed to the vision encoder (`max_image_size.longest_edge`).
    pub side: usize,
    pub filter: Filter,
    pub rescale: f64,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Deserialize)]
struct Edge {
    longest_edge: Option<usize>,
}

#[derive(Deserialize)]
struct PreprocessorFile {
    do_resize: Option<bool>,
    size: Option<Edge>,
    max_image_size: Option<Edge>,
    resample: Option<i64>,
    rescale_factor: Option<f64>,
    do_rescale: Option<bool>,
    do_normalize: Option<bool>,
    image_mean: Option<Vec<f32>>,
    image_std: Option<Vec<f32>>,
}

impl Preprocess {
    pub fn load(path: &Path, cfg: &Config) -> Result<Preprocess, VlmError> {
        let v = read_json(path)?;
        let f: PreprocessorFile = serde_json::from_value(v).map_err(|e| VlmError::Load {
            path: path.to_path_buf(),
            reason: format!("unexpected content: {e}"),
        })?;
        let err = |field: &str, why: String| VlmError::Load {
            path: path.to_path_buf(),
            reason: format!("field `{field}`: {why}"),
        };
        let resample = f.resample.unwrap_or(1);
        let filter = Filter::from_pil(resample).ok_or_else(|| {
            err(
                "resample",
                format!("{resample} (only 1 Lanczos, 2 bilinear, 3 bicubic are implemented)"),
            )
        })?;
        let side = f
            .max_image_size
            .and_then(|m| m.longest_edge)
            .unwrap_or(cfg.image_size);
        if side != cfg.image_size {
            return Err(err(
                "max_image_size.longest_edge",
                format!("{side}, but the vision encoder takes {} px", cfg.image_size),
            ));
        }
        let three =
            |v: Option<Vec<f32>>, field: &str, default: f32| -> Result<[f32; 3], VlmError> {
                match v {
                    None => Ok([default; 3]),
                    Some(v) if v.len() == 3 => Ok([v[0], v[1], v[2]]),
                    Some(v) if v.len() == 1 => Ok([v[0]; 3]),
                    Some(v) => Err(err(field, format!("{} values, expected 3", v.len()))),
                }
            };
        let normalize = f.do_normalize.unwrap_or(true);
        let std = if normalize {
            three(f.image_std, "image_std", 0.5)?
        } else {
            [1.0; 3]
        };
        if std.contains(&0.0) {
            return Err(err("image_std", "contains 0".into()));
        }
        Ok(Preprocess {
            longest_edge: if f.do_resize.unwrap_or(true) {
                Some(f.size.and_then(|s| s.longest_edge).unwrap_or(4 * side))
            } else {
                None
            },
            side,
            filter,
            rescale: if f.do_rescale.unwrap_or(true) {
                f.rescale_factor.unwrap_or(1.0 / 255.0)
            } else {
                1.0
            },
            mean: if normalize {
                three(f.image_mean, "image_mean", 0.5)?
            } else {
                [0.0; 3]
            },
            std,
        })
    }

    /// The two resizes of the reference processor, as 8-bit RGB (`side` × `side`).
    pub fn resize(&self, img: &RgbImage) -> RgbImage {
        let first = match self.longest_edge {
            Some(edge) => {
                let (h, w) = first_resize_size(img.height() as usize, img.width() as usize, edge);
                if (w as u32, h as u32) == img.dimensions() {
                    img.clone()
                } else {
                    resample::resize(img, w as u32, h as u32, self.filter)
                }
            }
            None => img.clone(),
        };
        let s = self.side as u32;
        if first.dimensions() == (s, s) {
            first
        } else {
            resample::resize(&first, s, s, self.filter)
        }
    }

    /// `pixel_values` for one frame: CHW, `(u8 × rescale − mean) / std`.
    pub fn pixel_values(&self, img: &RgbImage) -> Vec<f32> {
        let r = self.resize(img);
        let n = self.side * self.side;
        let mut out = vec![0f32; 3 * n];
        for (i, p) in r.pixels().enumerate() {
            for c in 0..3 {
                // transformers rescales in float64, normalises in float32.
                let x = (p.0[c] as f64 * self.rescale) as f32;
                out[c * n + i] = (x - self.mean[c]) / self.std[c];
            }
        }
        out
    }
}

/// transformers' `_resize_output_size_rescale_to_max_len` then `_resize_output_size_scale_below_upper_bound`
/// (Idefics3): longest edge to `max_len`, the other edge truncated and rounded up to even. Returns (h, w).
pub fn first_resize_size(height: usize, width: usize, max_len: usize) -> (usize, usize) {
    let (mut h, mut w) = (height.max(1), width.max(1));
    let aspect = w as f64 / h as f64;
    if w >= h {
        w = max_len;
        h = (w as f64 / aspect) as usize;
        if !h.is_multiple_of(2) {
            h += 1;
        }
    } else {
        h = max_len;
        w = (h as f64 * aspect) as usize;
        if !w.is_multiple_of(2) {
            w += 1;
        }
    }
    h = h.max(1);
    w = w.max(1);
    let aspect = w as f64 / h as f64;
    if w >= h && w > MAX_IMAGE_SIZE {
        w = MAX_IMAGE_SIZE;
        h = (w as f64 / aspect) as usize;
    } else if h > w && h > MAX_IMAGE_SIZE {
        h = MAX_IMAGE_SIZE;
        w = (h as f64 * aspect) as usize;
    }
    (h.max(1), w.max(1))
}

fn read_json(path: &Path) -> Result<serde_json::Value, VlmError> {
    let text = std::fs::read_to_string(path).map_err(|e| VlmError::Load {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| VlmError::Load {
        path: path.to_path_buf(),
        reason: format!("not JSON: {e}"),
    })
}

/// How to load a model folder.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub variant: Variant,
    pub threads: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            variant: Variant::Fp32,
            threads: 1,
        }
    }
}

fn run_err(stage: &'static str) -> impl Fn(crate::Error) -> VlmError {
    move |e| VlmError::Run {
        stage,
        reason: e.to_string(),
    }
}

/// Everything one generation computed, for tests and benchmarks.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Logits of every prompt position after prefill, `[prompt_len, vocab]` row-major.
    pub prefill_logits: Vec<f32>,
    /// The logits each greedy choice was made from (first row = last prefill row).
    pub step_logits: Vec<Vec<f32>>,
}

/// A loaded SmolVLM.
pub struct SmolVlm {
    dir: PathBuf,
    cfg: Config,
    pre: Preprocess,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    vision: Session,
    embed: Session,
    decoder: Session,
    end_of_utterance: u32,
    fake_image: u32,
    global_image: u32,
    /// Hash of the last frame and its image features.
    cache: Option<(u64, Vec<f32>)>,
    vision_runs: usize,
}

impl std::fmt::Debug for SmolVlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmolVlm")
            .field("dir", &self.dir)
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl SmolVlm {
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<SmolVlm, VlmError> {
        let cfg = Config::load(&dir.join("config.json"))?;
        let pre = Preprocess::load(&dir.join("preprocessor_config.json"), &cfg)?;
        let tokenizer = Tokenizer::load(&dir.join("tokenizer.json"))?;
        let template = ChatTemplate::find(dir)?.unwrap_or_else(|| {
            ChatTemplate::from_string("built-in SmolVLM template", DEFAULT_TEMPLATE)
        });
        let image_id = tokenizer.require_id("<image>")?;
        if image_id != cfg.image_token_id {
            return Err(VlmError::Tokenizer {
                path: tokenizer.path().to_path_buf(),
                reason: format!(
                    "<image> is id {image_id} but config.json says image_token_id {}",
                    cfg.image_token_id
                ),
            });
        }
        let end_of_utterance = tokenizer.require_id("<end_of_utterance>")?;
        let fake_image = tokenizer.require_id("<fake_token_around_image>")?;
        let global_image = tokenizer.require_id("<global-img>")?;

        let so = SessionOptions {
            threads: opts.threads.max(1),
        };
        let file = |stem: &str| {
            dir.join("onnx")
                .join(format!("{stem}{}.onnx", opts.variant.suffix()))
        };
        // The largest graph first: each load briefly holds its file twice (bytes, then tract's
        // tensors), and that peak is lowest with nothing else resident yet.
        let mut specs = vec![
            InputSpec::new(
                "inputs_embeds",
                ElemType::F32,
                vec![Dim::Fixed(1), Dim::Sym("S"), Dim::Fixed(cfg.hidden_size)],
            ),
            InputSpec::new(
                "attention_mask",
                ElemType::I64,
                vec![Dim::Fixed(1), Dim::Sum("P", "S")],
            ),
            InputSpec::new(
                "position_ids",
                ElemType::I64,
                vec![Dim::Fixed(1), Dim::Sym("S")],
            ),
        ];
        for i in 0..cfg.num_layers {
            for kv in ["key", "value"] {
                specs.push(InputSpec::new(
                    format!("past_key_values.{i}.{kv}"),
                    ElemType::F32,
                    vec![
                        Dim::Fixed(1),
                        Dim::Fixed(cfg.num_kv_heads),
                        Dim::Sym("P"),
                        Dim::Fixed(cfg.head_dim),
                    ],
                ));
            }
        }
        let decoder = load_graph(&file("decoder_model_merged"), &specs, &so)?;
        let s = cfg.image_size;
        let vision = load_graph(
            &file("vision_encoder"),
            &[
                InputSpec::new(
                    "pixel_values",
                    ElemType::F32,
                    vec![
                        Dim::Fixed(1),
                        Dim::Fixed(1),
                        Dim::Fixed(3),
                        Dim::Fixed(s),
                        Dim::Fixed(s),
                    ],
                ),
                InputSpec::new(
                    "pixel_attention_mask",
                    ElemType::Bool,
                    vec![Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(s), Dim::Fixed(s)],
                ),
            ],
            &so,
        )?;
        let embed = load_graph(
            &file("embed_tokens"),
            &[InputSpec::new(
                "input_ids",
                ElemType::I64,
                vec![Dim::Fixed(1), Dim::Sym("S")],
            )],
            &so,
        )?;
        if decoder.output_index("logits") != Some(0) {
            return Err(VlmError::Load {
                path: decoder.path().to_path_buf(),
                reason: format!(
                    "first output should be `logits`, outputs are {:?}",
                    decoder.output_names()
                ),
            });
        }
        Ok(SmolVlm {
            dir: dir.to_path_buf(),
            cfg,
            pre,
            tokenizer,
            template,
            vision,
            embed,
            decoder,
            end_of_utterance,
            fake_image,
            global_image,
            cache: None,
            vision_runs: 0,
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
    pub fn preprocess(&self) -> &Preprocess {
        &self.pre
    }
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    /// How many times the vision encoder ran (cached frames do not count).
    pub fn vision_runs(&self) -> usize {
        self.vision_runs
    }

    /// Image features `[image_seq_len, hidden]` for pixel values `[3, side, side]`.
    pub fn encode_pixels(&mut self, pixels: Vec<f32>) -> Result<Vec<f32>, VlmError> {
        let s = self.cfg.image_size;
        if pixels.len() != 3 * s * s {
            return Err(VlmError::Input(format!(
                "pixel values: {} numbers, expected 3×{s}×{s}",
                pixels.len()
            )));
        }
        let inputs = vec![
            Value::f32(&[1, 1, 3, s, s], pixels).map_err(run_err("vision"))?,
            Value::bool(&[1, 1, s, s], vec![true; s * s]).map_err(run_err("vision"))?,
        ];
        let out = self.vision.run(inputs).map_err(run_err("vision"))?;
        self.vision_runs += 1;
        let f = out.first().ok_or_else(|| VlmError::Run {
            stage: "vision",
            reason: "no output".into(),
        })?;
        let want = [1, self.cfg.image_seq_len(), self.cfg.hidden_size];
        if f.shape() != want {
            return Err(VlmError::Run {
                stage: "vision",
                reason: format!("image_features shape {:?}, expected {want:?}", f.shape()),
            });
        }
        Ok(f.as_f32().unwrap_or_default().to_vec())
    }

    /// Image features of `img`, from the cache when it is the frame seen last. Also returns whether
    /// the cache answered and the milliseconds spent in the vision encoder (pre-processing excluded;
    /// 0 when cached).
    pub fn image_features(&mut self, img: &RgbImage) -> Result<(Vec<f32>, bool, f64), VlmError> {
        let key = frame_hash(img);
        if let Some((k, f)) = &self.cache {
            if *k == key {
                return Ok((f.clone(), true, 0.0));
            }
        }
        let t = Instant::now();
        let pixels = self.pre.pixel_values(img);
        log::debug!(
            "smolvlm: pre-processing {}x{} took {:.1} ms",
            img.width(),
            img.height(),
            t.elapsed().as_secs_f64() * 1e3
        );
        let t = Instant::now();
        let f = self.encode_pixels(pixels)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        self.cache = Some((key, f.clone()));
        Ok((f, false, ms))
    }

    /// The chat prompt for one image and a question, with the image placeholder expanded.
    pub fn prompt_text(&self, question: &str) -> Result<String, VlmError> {
        let chat = self.template.render_image_question(question)?;
        let n = chat.matches("<image>").count();
        if n != 1 {
            return Err(VlmError::Input(format!(
                "the prompt must hold exactly one image: the rendered chat has {n} `<image>` markers \
                 (does the question contain `<image>`?)"
            )));
        }
        let expansion = format!(
            "<fake_token_around_image><global-img>{}<fake_token_around_image>",
            "<image>".repeat(self.cfg.image_seq_len())
        );
        Ok(chat.replacen("<image>", &expansion, 1))
    }

    /// Token ids of the expanded prompt.
    pub fn prompt_ids(&self, question: &str) -> Result<Vec<u32>, VlmError> {
        let ids = self.tokenizer.encode(&self.prompt_text(question)?)?;
        let n = ids
            .iter()
            .filter(|&&t| t == self.cfg.image_token_id)
            .count();
        if n != self.cfg.image_seq_len()
            || !ids.contains(&self.fake_image)
            || !ids.contains(&self.global_image)
        {
            return Err(VlmError::Tokenizer {
                path: self.tokenizer.path().to_path_buf(),
                reason: format!(
                    "the prompt tokenised to {n} <image> ids (expected {}); are the image tokens special tokens?",
                    self.cfg.image_seq_len()
                ),
            });
        }
        Ok(ids)
    }

    fn embed_ids(&self, ids: &[u32]) -> Result<Vec<f32>, VlmError> {
        let v = Value::i64(&[1, ids.len()], ids.iter().map(|&t| t as i64).collect())
            .map_err(run_err("embed"))?;
        let out = self.embed.run(vec![v]).map_err(run_err("embed"))?;
        let e = out.first().ok_or_else(|| VlmError::Run {
            stage: "embed",
            reason: "no output".into(),
        })?;
        if e.shape() != [1, ids.len(), self.cfg.hidden_size] {
            return Err(VlmError::Run {
                stage: "embed",
                reason: format!("inputs_embeds shape {:?}", e.shape()),
            });
        }
        Ok(e.as_f32().unwrap_or_default().to_vec())
    }

    /// Token embeddings of `ids` with the `<image>` rows replaced by `features`, in order.
    pub fn merged_embeddings(&self, ids: &[u32], features: &[f32]) -> Result<Vec<f32>, VlmError> {
        let h = self.cfg.hidden_size;
        let mut emb = self.embed_ids(ids)?;
        let rows: Vec<usize> = ids
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == self.cfg.image_token_id)
            .map(|(i, _)| i)
            .collect();
        if rows.len() * h != features.len() {
            return Err(VlmError::Input(format!(
                "{} <image> tokens but features for {} rows",
                rows.len(),
                features.len() / h.max(1)
            )));
        }
        for (k, &r) in rows.iter().enumerate() {
            emb[r * h..(r + 1) * h].copy_from_slice(&features[k * h..(k + 1) * h]);
        }
        Ok(emb)
    }

    fn decoder_inputs(
        &self,
        embeds: Vec<f32>,
        seq: usize,
        start: usize,
        past: Vec<Value>,
    ) -> Result<Vec<Value>, VlmError> {
        let e = run_err("decoder");
        let mut by_name: std::collections::HashMap<String, Value> =
            std::collections::HashMap::new();
        by_name.insert(
            "inputs_embeds".into(),
            Value::f32(&[1, seq, self.cfg.hidden_size], embeds).map_err(&e)?,
        );
        by_name.insert(
            "attention_mask".into(),
            Value::i64(&[1, start + seq], vec![1; start + seq]).map_err(&e)?,
        );
        by_name.insert(
            "position_ids".into(),
            Value::i64(&[1, seq], (start..start + seq).map(|p| p as i64).collect()).map_err(&e)?,
        );
        let mut past = past.into_iter();
        for i in 0..self.cfg.num_layers {
            for kv in ["key", "value"] {
                let v = past.next().ok_or_else(|| VlmError::Run {
                    stage: "decoder",
                    reason: "KV cache shorter than the layer count".into(),
                })?;
                by_name.insert(format!("past_key_values.{i}.{kv}"), v);
            }
        }
        self.decoder
            .input_names()
            .iter()
            .map(|n| {
                by_name.remove(n).ok_or_else(|| VlmError::Run {
                    stage: "decoder",
                    reason: format!("no value for input {n}"),
                })
            })
            .collect()
    }

    /// One decoder call: logits of every position and the new cache (`present.*` in layer order).
    fn decoder_step(
        &self,
        embeds: Vec<f32>,
        seq: usize,
        start: usize,
        past: Vec<Value>,
    ) -> Result<(Vec<f32>, Vec<Value>), VlmError> {
        let inputs = self.decoder_inputs(embeds, seq, start, past)?;
        let out = self.decoder.run(inputs).map_err(run_err("decoder"))?;
        let mut out = out.into_iter();
        let logits = out.next().ok_or_else(|| VlmError::Run {
            stage: "decoder",
            reason: "no output".into(),
        })?;
        let v = self.cfg.vocab_size;
        if logits.shape() != [1, seq, v] {
            return Err(VlmError::Run {
                stage: "decoder",
                reason: format!(
                    "logits shape {:?}, expected [1, {seq}, {v}]",
                    logits.shape()
                ),
            });
        }
        let names = &self.decoder.output_names()[1..];
        let mut present: Vec<Option<Value>> = vec![None; 2 * self.cfg.num_layers];
        for (name, val) in names.iter().zip(out) {
            if let Some(slot) = present_slot(name, self.cfg.num_layers) {
                present[slot] = Some(val);
            }
        }
        let present = present
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                p.ok_or_else(|| VlmError::Run {
                    stage: "decoder",
                    reason: format!(
                        "missing output present.{}.{}",
                        i / 2,
                        ["key", "value"][i % 2]
                    ),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((logits.as_f32().unwrap_or_default().to_vec(), present))
    }

    /// Greedy generation from image features and prompt ids. Fills `trace` when given.
    pub fn generate_from(
        &self,
        features: &[f32],
        ids: &[u32],
        opts: &GenerateOptions,
        started: Instant,
        on_token: &mut dyn FnMut(u32) -> Result<(), VlmError>,
        mut trace: Option<&mut Trace>,
    ) -> Result<(decode::Greedy, f64, f64), VlmError> {
        let t0 = Instant::now();
        let seq = ids.len();
        let emb = self.merged_embeddings(ids, features)?;
        let empty: Vec<Value> = (0..2 * self.cfg.num_layers)
            .map(|_| Value::zeros_f32(&[1, self.cfg.num_kv_heads, 0, self.cfg.head_dim]))
            .collect::<Result<_, _>>()
            .map_err(run_err("decoder"))?;
        let (logits, mut past) = self.decoder_step(emb, seq, 0, empty)?;
        let v = self.cfg.vocab_size;
        let last = logits[(seq - 1) * v..].to_vec();
        if let Some(t) = trace.as_deref_mut() {
            t.prefill_logits = logits;
            t.step_logits.push(last.clone());
        }
        let prefill_ms = t0.elapsed().as_secs_f64() * 1e3;
        let t1 = Instant::now();
        let mut total = seq;
        let stop = [self.end_of_utterance];
        let limits = Limits {
            max_new_tokens: opts.max_new_tokens,
            time_budget: opts.time_budget,
            started,
            stop_ids: &stop,
        };
        let mut step = |id: u32| -> Result<Vec<f32>, VlmError> {
            let e = self.embed_ids(&[id])?;
            let cache = std::mem::take(&mut past);
            let (logits, next) = self.decoder_step(e, 1, total, cache)?;
            past = next;
            total += 1;
            if let Some(t) = trace.as_deref_mut() {
                t.step_logits.push(logits.clone());
            }
            Ok(logits)
        };
        let g = decode::greedy(last, &limits, &mut step, on_token)?;
        let decode_ms = t1.elapsed().as_secs_f64() * 1e3;
        let per_token = if g.steps > 0 {
            decode_ms / g.steps as f64
        } else {
            0.0
        };
        Ok((g, prefill_ms, per_token))
    }
}

/// `present.{i}.key` → 2i, `present.{i}.value` → 2i+1.
fn present_slot(name: &str, layers: usize) -> Option<usize> {
    let rest = name.strip_prefix("present.")?;
    let (i, kv) = rest.split_once('.')?;
    let i: usize = i.parse().ok()?;
    if i >= layers {
        return None;
    }
    match kv {
        "key" => Some(2 * i),
        "value" => Some(2 * i + 1),
        _ => None,
    }
}

fn frame_hash(img: &RgbImage) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    img.dimensions().hash(&mut h);
    img.as_raw().hash(&mut h);
    h.finish()
}

impl VisionLanguageModel for SmolVlm {
    fn name(&self) -> &str {
        "smolvlm"
    }

    fn generate(
        &mut self,
        image: &RgbImage,
        prompt: &str,
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<Generation, VlmError> {
        let started = Instant::now();
        let ids = self.prompt_ids(prompt)?;
        let (features, _, vision_ms) = self.image_features(image)?;
        let mut stream = TextStream::new();
        let tok = &self.tokenizer;
        let mut emit = |id: u32| -> Result<(), VlmError> {
            let piece = stream.push(tok, id)?;
            if !piece.is_empty() {
                on_token(&piece);
            }
            Ok(())
        };
        let (g, prefill_ms, per_token) =
            self.generate_from(&features, &ids, opts, started, &mut emit, None)?;
        let tail = stream.finish(tok)?;
        if !tail.is_empty() {
            on_token(&tail);
        }
        Ok(Generation {
            text: self.tokenizer.decode(&g.ids)?,
            token_ids: g.ids,
            prompt_tokens: ids.len(),
            timings: Timings {
                vision_ms,
                prefill_ms,
                decode_ms_per_token: per_token,
            },
            stop: g.stop,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_resize_matches_transformers_rules() {
        // 548x342 (w x h) -> w 2048, h int(2048 / (548/342)) = 1278 (even).
        assert_eq!(first_resize_size(342, 548, 2048), (1278, 2048));
        // portrait: 335/480*2048 = 1429.3 -> 1429, odd, rounded up to 1430
        assert_eq!(first_resize_size(480, 335, 2048), (2048, 1430));
        assert_eq!(first_resize_size(480, 333, 2048), (2048, 1420));
        // square
        assert_eq!(first_resize_size(10, 10, 2048), (2048, 2048));
        // very wide: the short edge never reaches 0
        assert_eq!(first_resize_size(1, 5000, 2048), (1, 2048));
    }

    #[test]
    fn present_names_map_to_cache_slots() {
        assert_eq!(present_slot("present.0.key", 2), Some(0));
        assert_eq!(present_slot("present.1.value", 2), Some(3));
        assert_eq!(present_slot("present.2.key", 2), None);
        assert_eq!(present_slot("logits", 2), None);
    }
}
