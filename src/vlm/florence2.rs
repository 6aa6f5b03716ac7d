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

mod config;
mod graph;
mod postprocess;
mod preprocess;
mod text;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::RgbImage;

pub use config::Florence2Config;
use graph::{f32_tensor, f32_view, i64_tensor, Dim, Graph, TValue};
pub use postprocess::{
    clean_text, loc_to_pixel, parse_locations, parse_task_output, parse_task_output_with,
    LabelledBox, TaskOutput,
};
pub use preprocess::{normalise, pixel_values, resize_bicubic};
pub use text::{construct_prompt, task_of, Streamer, TextCodec};

use crate::geometry::BBox;
use crate::vlm::{GenerateOptions, Generation, StopReason, Timings, VisionLanguageModel, VlmError};

/// File-name suffixes of the published variants tract can run. The others (`_q4`, `_q4f16`,
/// `_bnb4`, `_fp16`) are still tried, so that the error names the file and the operator at fault.
pub const VARIANTS: [&str; 4] = ["", "_int8", "_uint8", "_quantized"];

/// Loads a Florence-2 folder (`config.json`, `tokenizer.json`, `onnx/*{variant}.onnx`).
pub fn load(dir: &Path, variant: &str, threads: usize) -> Result<Florence2, VlmError> {
    Florence2::load(dir, variant, threads)
}

/// A float tensor kept between calls (image features, encoder output).
#[derive(Debug, Clone)]
pub struct Features {
    tensor: TValue,
}

impl Features {
    pub fn shape(&self) -> &[usize] {
        self.tensor.shape()
    }
    pub fn data(&self) -> &[f32] {
        self.tensor
            .try_as_plain_ram()
            .ok()
            .and_then(|p| p.as_slice::<f32>().ok())
            .unwrap_or(&[])
    }
}

/// Everything one greedy run produced, for checking against a reference.
#[derive(Debug, Clone)]
pub struct Trace {
    pub tokens: Vec<u32>,
    /// Raw logits of each decoding step (before `<s>` is forced), `[steps][vocab]`.
    pub step_logits: Vec<Vec<f32>>,
    pub stop: StopReason,
}

struct Graphs {
    vision: Graph,
    embed: Graph,
    encoder: Graph,
    decoder: Graph,
    decoder_past: Graph,
}

pub struct Florence2 {
    dir: PathBuf,
    cfg: Florence2Config,
    text: TextCodec,
    g: Graphs,
    /// (image hash, features) of the last image.
    image_cache: Option<(u64, Features)>,
    /// (image hash, prompt ids, encoder output) of the last question.
    encoder_cache: Option<(u64, Vec<u32>, Features)>,
    vision_runs: usize,
}

impl std::fmt::Debug for Florence2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Florence2")
            .field("dir", &self.dir)
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

fn image_hash(image: &RgbImage) -> u64 {
    let mut h = DefaultHasher::new();
    image.dimensions().hash(&mut h);
    image.as_raw().hash(&mut h);
    h.finish()
}

fn run_err(stage: &'static str, reason: impl Into<String>) -> VlmError {
    VlmError::Run {
        stage,
        reason: reason.into(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Florence2 {
    pub fn load(dir: &Path, variant: &str, threads: usize) -> Result<Florence2, VlmError> {
        let cfg = Florence2Config::load(dir)?;
        let text = TextCodec::load(dir)?;
        let file = |stem: &str| dir.join("onnx").join(format!("{stem}{variant}.onnx"));
        for stem in [
            "vision_encoder",
            "embed_tokens",
            "encoder_model",
            "decoder_model",
            "decoder_with_past_model",
        ] {
            let p = file(stem);
            if !p.exists() {
                let merged = file("decoder_model_merged");
                let reason = if stem.starts_with("decoder") && merged.exists() {
                    "missing; only the merged decoder is there, and lookout needs decoder_model + \
                     decoder_with_past_model (the merged file's If is re-planned by tract on every call)"
                } else {
                    "missing"
                };
                return Err(VlmError::Load {
                    path: p,
                    reason: reason.into(),
                });
            }
        }
        let d = cfg.d_model;
        let (heads, hd) = (cfg.decoder_heads, cfg.head_dim());
        let side = cfg.image_size as usize;
        let vision = Graph::load(
            "vision_encoder",
            &file("vision_encoder"),
            threads,
            &|name| {
                (name == "pixel_values").then(|| {
                    vec![
                        Dim::Fixed(1),
                        Dim::Fixed(3),
                        Dim::Fixed(side),
                        Dim::Fixed(side),
                    ]
                })
            },
        )?;
        let embed = Graph::load("embed_tokens", &file("embed_tokens"), threads, &|name| {
            (name == "input_ids").then(|| vec![Dim::Fixed(1), Dim::Sym("T")])
        })?;
        let encoder =
            Graph::load(
                "encoder_model",
                &file("encoder_model"),
                threads,
                &|name| match name {
                    "inputs_embeds" => Some(vec![Dim::Fixed(1), Dim::Sym("S"), Dim::Fixed(d)]),
                    "attention_mask" => Some(vec![Dim::Fixed(1), Dim::Sym("S")]),
                    _ => None,
                },
            )?;
        let kv = move |name: &str| -> Option<Vec<Dim>> {
            let rest = name.strip_prefix("past_key_values.")?;
            let len = if rest.contains(".encoder.") {
                Dim::Sym("S")
            } else if rest.contains(".decoder.") {
                Dim::Sym("P")
            } else {
                return None;
            };
            Some(vec![Dim::Fixed(1), Dim::Fixed(heads), len, Dim::Fixed(hd)])
        };
        let decoder_inputs = move |name: &str| -> Option<Vec<Dim>> {
            match name {
                "inputs_embeds" => Some(vec![Dim::Fixed(1), Dim::Fixed(1), Dim::Fixed(d)]),
                "encoder_attention_mask" => Some(vec![Dim::Fixed(1), Dim::Sym("S")]),
                "encoder_hidden_states" => Some(vec![Dim::Fixed(1), Dim::Sym("S"), Dim::Fixed(d)]),
                _ => kv(name),
            }
        };
        let decoder = Graph::load(
            "decoder_model",
            &file("decoder_model"),
            threads,
            &decoder_inputs,
        )?;
        let decoder_past = Graph::load(
            "decoder_with_past_model",
            &file("decoder_with_past_model"),
            threads,
            &decoder_inputs,
        )?;
        let model = Florence2 {
            dir: dir.to_path_buf(),
            cfg,
            text,
            g: Graphs {
                vision,
                embed,
                encoder,
                decoder,
                decoder_past,
            },
            image_cache: None,
            encoder_cache: None,
            vision_runs: 0,
        };
        model.check_kv_names()?;
        Ok(model)
    }

    /// The decoder files must carry one past/present pair per layer under optimum's names.
    fn check_kv_names(&self) -> Result<(), VlmError> {
        for i in 0..self.cfg.decoder_layers {
            for part in [
                "decoder.key",
                "decoder.value",
                "encoder.key",
                "encoder.value",
            ] {
                let present = format!("present.{i}.{part}");
                if self.g.decoder.output_index(&present).is_none() {
                    return Err(VlmError::Load {
                        path: self.g.decoder.path().to_path_buf(),
                        reason: format!(
                            "no output `{present}` (config.json says {} decoder layers)",
                            self.cfg.decoder_layers
                        ),
                    });
                }
                let past = format!("past_key_values.{i}.{part}");
                if !self.g.decoder_past.input_names().contains(&past) {
                    return Err(VlmError::Load {
                        path: self.g.decoder_past.path().to_path_buf(),
                        reason: format!("no input `{past}`"),
                    });
                }
            }
        }
        Ok(())
    }

    pub fn config(&self) -> &Florence2Config {
        &self.cfg
    }
    pub fn text(&self) -> &TextCodec {
        &self.text
    }
    /// How many times the vision tower ran (the rest were cache hits).
    pub fn vision_runs(&self) -> usize {
        self.vision_runs
    }

    /// `pixel_values` for `image` (`[3, 768, 768]`).
    pub fn pixel_values(&self, image: &RgbImage) -> Vec<f32> {
        pixel_values(
            image,
            self.cfg.image_size,
            self.cfg.image_mean,
            self.cfg.image_std,
        )
    }

    /// Vision tokens `[1, 577, D]` from pre-processed pixels.
    pub fn vision(&self, pixel_values: Vec<f32>) -> Result<Features, VlmError> {
        let side = self.cfg.image_size as usize;
        let t = f32_tensor(&[1, 3, side, side], pixel_values)?;
        let mut out = self.g.vision.run(vec![("pixel_values", t.into())])?;
        let t = out.remove(0);
        if t.rank() != 3 || t.shape()[2] != self.cfg.d_model {
            return Err(run_err(
                "vision_encoder",
                format!("image_features shape {:?}", t.shape()),
            ));
        }
        Ok(Features { tensor: t })
    }

    fn embed(&self, ids: &[u32]) -> Result<TValue, VlmError> {
        let data: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        let t = i64_tensor(&[1, ids.len()], data)?;
        Ok(self.g.embed.run(vec![("input_ids", t.into())])?.remove(0))
    }

    /// Encoder output `[1, 577 + T, D]` for the vision tokens followed by the prompt's ids.
    pub fn encode(&self, features: &Features, prompt_ids: &[u32]) -> Result<Features, VlmError> {
        let d = self.cfg.d_model;
        let text = self.embed(prompt_ids)?;
        let text = f32_view("embed_tokens", &text)?;
        let img = features.data();
        let mut data = Vec::with_capacity(img.len() + text.len());
        data.extend_from_slice(img);
        data.extend_from_slice(text);
        let s = data.len() / d;
        let embeds = f32_tensor(&[1, s, d], data)?;
        let mask = i64_tensor(&[1, s], vec![1; s])?;
        let mut out = self.g.encoder.run(vec![
            ("inputs_embeds", embeds.into()),
            ("attention_mask", mask.into()),
        ])?;
        Ok(Features {
            tensor: out.remove(0),
        })
    }

    /// Greedy decoding over an encoder output. `on_token` sees each id as it is chosen; it
    /// returning `false` stops generation (the budget check lives in the caller).
    pub fn decode_greedy(
        &self,
        encoded: &Features,
        max_new_tokens: usize,
        record_logits: bool,
        on_token: &mut dyn FnMut(u32) -> Result<bool, VlmError>,
    ) -> Result<(Trace, Duration, usize), VlmError> {
        let s = encoded.shape().get(1).copied().unwrap_or(0);
        let n = self.cfg.decoder_layers;
        let mask: TValue = i64_tensor(&[1, s], vec![1; s])?.into();
        let start = self.embed(&[self.cfg.decoder_start_token_id])?;
        let mut out = self.g.decoder.run(vec![
            ("inputs_embeds", start),
            ("encoder_attention_mask", mask.clone()),
            ("encoder_hidden_states", encoded.tensor.clone()),
        ])?;
        // past_key_values.{i}.{decoder,encoder}.{key,value}; the encoder half never changes.
        let mut past: Vec<(String, TValue)> = Vec::with_capacity(4 * n);
        for i in 0..n {
            for part in [
                "decoder.key",
                "decoder.value",
                "encoder.key",
                "encoder.value",
            ] {
                let idx = self
                    .g
                    .decoder
                    .output_index(&format!("present.{i}.{part}"))
                    .ok_or_else(|| {
                        run_err("decoder_model", format!("no output present.{i}.{part}"))
                    })?;
                past.push((format!("past_key_values.{i}.{part}"), out[idx].clone()));
            }
        }
        let logits_idx = self.g.decoder_past.output_index("logits").unwrap_or(0);
        let first_logits_idx = self.g.decoder.output_index("logits").unwrap_or(0);
        let mut logits = out.swap_remove(first_logits_idx);
        drop(out);
        let mut trace = Trace {
            tokens: Vec::new(),
            step_logits: Vec::new(),
            stop: StopReason::MaxTokens,
        };
        let mut decode_time = Duration::ZERO;
        let mut decode_steps = 0usize;
        loop {
            let all = f32_view("decoder", &logits)?;
            let vocab = logits.shape().last().copied().unwrap_or(0);
            if vocab == 0 || all.len() < vocab {
                return Err(run_err(
                    "decoder",
                    format!("logits shape {:?}", logits.shape()),
                ));
            }
            let step = &all[all.len() - vocab..];
            if record_logits {
                trace.step_logits.push(step.to_vec());
            }
            let token = match (trace.tokens.is_empty(), self.cfg.forced_bos_token_id) {
                (true, Some(bos)) => bos,
                _ => super::decode::argmax(step)
                    .ok_or_else(|| run_err("decoder", "no usable logits (all NaN?)".to_string()))?
                    as u32,
            };
            if token == self.cfg.eos_token_id {
                trace.stop = StopReason::EndOfText;
                break;
            }
            trace.tokens.push(token);
            if !on_token(token)? {
                trace.stop = StopReason::TimeBudget;
                break;
            }
            if trace.tokens.len() >= max_new_tokens {
                trace.stop = StopReason::MaxTokens;
                break;
            }
            let t0 = Instant::now();
            let mut inputs: Vec<(&str, TValue)> = Vec::with_capacity(2 + past.len());
            inputs.push(("inputs_embeds", self.embed(&[token])?));
            inputs.push(("encoder_attention_mask", mask.clone()));
            for (name, v) in &past {
                inputs.push((name.as_str(), v.clone()));
            }
            let mut out = self.g.decoder_past.run(inputs)?;
            for i in 0..n {
                for (k, part) in ["decoder.key", "decoder.value"].iter().enumerate() {
                    let idx = self
                        .g
                        .decoder_past
                        .output_index(&format!("present.{i}.{part}"))
                        .ok_or_else(|| {
                            run_err(
                                "decoder_with_past_model",
                                format!("no output present.{i}.{part}"),
                            )
                        })?;
                    past[4 * i + k].1 = out[idx].clone();
                }
            }
            logits = out.swap_remove(logits_idx);
            decode_time += t0.elapsed();
            decode_steps += 1;
        }
        Ok((trace, decode_time, decode_steps))
    }

    /// Image features for `image`, from the cache when it is the last image seen.
    pub fn image_features(&mut self, image: &RgbImage) -> Result<(u64, Features), VlmError> {
        let key = image_hash(image);
        if let Some((k, f)) = &self.image_cache {
            if *k == key {
                return Ok((key, f.clone()));
            }
        }
        let f = self.vision(self.pixel_values(image))?;
        self.vision_runs += 1;
        self.image_cache = Some((key, f.clone()));
        Ok((key, f))
    }

    fn encoded(
        &mut self,
        key: u64,
        features: &Features,
        ids: &[u32],
    ) -> Result<Features, VlmError> {
        if let Some((k, cached_ids, enc)) = &self.encoder_cache {
            if *k == key && cached_ids == ids {
                return Ok(enc.clone());
            }
        }
        let enc = self.encode(features, ids)?;
        self.encoder_cache = Some((key, ids.to_vec(), enc.clone()));
        Ok(enc)
    }

    /// Runs `prompt` (a task token, a task token + text, or free text) on `image` greedily,
    /// returning the generation and, when `record_logits`, each step's logits.
    pub fn run(
        &mut self,
        image: &RgbImage,
        prompt: &str,
        opts: &GenerateOptions,
        record_logits: bool,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<(Generation, Trace), VlmError> {
        let started = Instant::now();
        let (key, features) = self.image_features(image)?;
        let vision_ms = ms(started.elapsed());
        let ids = self.text.prompt_ids(prompt)?;
        let t_prefill = Instant::now();
        let encoded = self.encoded(key, &features, &ids)?;
        let encode_time = t_prefill.elapsed();

        let mut streamer = Streamer::default();
        let mut so_far: Vec<u32> = Vec::new();
        let budget = opts.time_budget;
        let text = &self.text;
        let mut first_step: Option<Duration> = None;
        let t_decode = Instant::now();
        let mut on_token = |tok: u32| -> Result<bool, VlmError> {
            if first_step.is_none() {
                first_step = Some(t_decode.elapsed());
            }
            so_far.push(tok);
            let piece = streamer.push(text, &so_far)?;
            if !piece.is_empty() {
                on_text(&piece);
            }
            Ok(budget.is_none_or(|b| started.elapsed() < b))
        };
        let (trace, decode_time, steps) =
            self.decode_greedy(&encoded, opts.max_new_tokens, record_logits, &mut on_token)?;
        let rest = streamer.finish(&self.text, &trace.tokens)?;
        if !rest.is_empty() {
            on_text(&rest);
        }
        let text = clean_text(&self.text.decode_raw(&trace.tokens)?);
        let prefill = encode_time + first_step.unwrap_or_else(|| t_decode.elapsed());
        let generation = Generation {
            text,
            token_ids: trace.tokens.clone(),
            prompt_tokens: ids.len() + self.cfg.image_tokens,
            timings: Timings {
                vision_ms,
                prefill_ms: ms(prefill),
                decode_ms_per_token: if steps > 0 {
                    ms(decode_time) / steps as f64
                } else {
                    0.0
                },
            },
            stop: trace.stop,
        };
        Ok((generation, trace))
    }

    /// Runs a task and parses its answer (boxes in pixels of `image`).
    pub fn run_task(
        &mut self,
        image: &RgbImage,
        task: &str,
        text_input: Option<&str>,
        opts: &GenerateOptions,
    ) -> Result<(Generation, TaskOutput), VlmError> {
        let prompt = format!("{task}{}", text_input.unwrap_or(""));
        let (gen, trace) = self.run(image, &prompt, opts, false, &mut |_| {})?;
        let raw = self.text.decode_raw(&trace.tokens)?;
        let (w, h) = image.dimensions();
        let parsed = parse_task_output_with(task, &raw, w, h, &self.cfg.banned_grounding);
        Ok((gen, parsed))
    }

    /// Boxes in `image` (pixels) for the phrases of `phrase`, by `<CAPTION_TO_PHRASE_GROUNDING>`.
    pub fn ground(
        &mut self,
        image: &RgbImage,
        phrase: &str,
    ) -> Result<Vec<(String, BBox)>, VlmError> {
        let opts = GenerateOptions {
            max_new_tokens: 256,
            time_budget: None,
        };
        let (_, parsed) =
            self.run_task(image, "<CAPTION_TO_PHRASE_GROUNDING>", Some(phrase), &opts)?;
        Ok(match parsed {
            TaskOutput::Boxes(b) => b.into_iter().map(|l| (l.label, l.bbox)).collect(),
            TaskOutput::Text(_) => Vec::new(),
        })
    }
}

impl VisionLanguageModel for Florence2 {
    fn name(&self) -> &str {
        "florence2"
    }

    fn generate(
        &mut self,
        image: &RgbImage,
        prompt: &str,
        opts: &GenerateOptions,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<Generation, VlmError> {
        self.run(image, prompt, opts, false, on_token)
            .map(|(g, _)| g)
    }
}
