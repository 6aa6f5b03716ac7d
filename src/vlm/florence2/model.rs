//! The Florence-2 model: its five graphs, the vision and encoder caches, and greedy generation on
//! the shared loop ([`crate::vlm::decode::greedy`], with `<s>` forced first when the generation
//! config says so).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::RgbImage;

use super::config::Florence2Config;
use super::graph::{f32_tensor, f32_view, i64_tensor, Dim, Graph};
use super::postprocess::{clean_text, parse_task_output_with, TaskOutput};
use super::preprocess::pixel_values;
use super::text::{decode_raw, prompt_ids, text_stream};
use crate::engine::session::Value;
use crate::geometry::BBox;
use crate::vlm::contract::{
    GenerateOptions, Generation, StopReason, Timings, VisionLanguageModel, VlmError,
};
use crate::vlm::decode::{self, Limits};
use crate::vlm::frame_cache::{frame_key, FrameCache};
use crate::vlm::tokenize::Tokenizer;

/// A float tensor kept between calls (image features, encoder output).
#[derive(Debug, Clone)]
pub struct Features {
    tensor: Value,
}

impl Features {
    pub fn shape(&self) -> &[usize] {
        self.tensor.shape()
    }
    pub fn data(&self) -> &[f32] {
        self.tensor.as_f32().unwrap_or(&[])
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
    tokenizer: Tokenizer,
    g: Graphs,
    /// Features of the last image.
    image_cache: FrameCache<Features>,
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

fn run_err(stage: &'static str, reason: impl Into<String>) -> VlmError {
    VlmError::Run {
        stage,
        reason: reason.into(),
    }
}

/// The decoder's key/value outputs per layer: the decoder half grows each step, the encoder half is
/// computed once by the first step.
const KV_PARTS: [&str; 4] = [
    "decoder.key",
    "decoder.value",
    "encoder.key",
    "encoder.value",
];

/// The logits of the last position.
fn last_logits(logits: &Value) -> Result<Vec<f32>, VlmError> {
    let all = f32_view("decoder", logits)?;
    let vocab = logits.shape().last().copied().unwrap_or(0);
    if vocab == 0 || all.len() < vocab {
        return Err(run_err(
            "decoder",
            format!("logits shape {:?}", logits.shape()),
        ));
    }
    Ok(all[all.len() - vocab..].to_vec())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Florence2 {
    pub fn load(dir: &Path, variant: &str, threads: usize) -> Result<Florence2, VlmError> {
        let cfg = Florence2Config::load(dir)?;
        let tokenizer = Tokenizer::load(&dir.join("tokenizer.json"))?;
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
            tokenizer,
            g: Graphs {
                vision,
                embed,
                encoder,
                decoder,
                decoder_past,
            },
            image_cache: FrameCache::default(),
            encoder_cache: None,
            vision_runs: 0,
        };
        model.check_kv_names()?;
        Ok(model)
    }

    /// The decoder files must carry one past/present pair per layer under optimum's names.
    fn check_kv_names(&self) -> Result<(), VlmError> {
        for i in 0..self.cfg.decoder_layers {
            for part in KV_PARTS {
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
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
    /// Encoder text ids for `prompt` (a task token, a task token + text, or free text).
    pub fn prompt_ids(&self, prompt: &str) -> Result<Vec<u32>, VlmError> {
        prompt_ids(&self.tokenizer, prompt)
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
        let mut out = self.g.vision.run(vec![("pixel_values", t)])?;
        let t = out.remove(0);
        if t.shape().len() != 3 || t.shape()[2] != self.cfg.d_model {
            return Err(run_err(
                "vision_encoder",
                format!("image_features shape {:?}", t.shape()),
            ));
        }
        Ok(Features { tensor: t })
    }

    fn embed(&self, ids: &[u32]) -> Result<Value, VlmError> {
        let data: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
        let t = i64_tensor(&[1, ids.len()], data)?;
        Ok(self.g.embed.run(vec![("input_ids", t)])?.remove(0))
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
        let mut out = self
            .g
            .encoder
            .run(vec![("inputs_embeds", embeds), ("attention_mask", mask)])?;
        Ok(Features {
            tensor: out.remove(0),
        })
    }

    /// Greedy decoding over an encoder output, on the shared loop: `<s>` forced first when the
    /// config says so, stop at `</s>`, `opts.max_new_tokens` or `opts.time_budget` counted from
    /// `started`. `on_token` sees each id as it is chosen. Returns the trace (with each step's
    /// logits when `record_logits`), the time spent in steps after the first, and their count.
    pub fn decode_greedy(
        &self,
        encoded: &Features,
        opts: &GenerateOptions,
        started: Instant,
        record_logits: bool,
        on_token: &mut dyn FnMut(u32) -> Result<(), VlmError>,
    ) -> Result<(Trace, Duration, usize), VlmError> {
        let s = encoded.shape().get(1).copied().unwrap_or(0);
        let n = self.cfg.decoder_layers;
        let mask = i64_tensor(&[1, s], vec![1; s])?;
        let start = self.embed(&[self.cfg.decoder_start_token_id])?;
        let mut out = self.g.decoder.run(vec![
            ("inputs_embeds", start),
            ("encoder_attention_mask", mask.clone()),
            ("encoder_hidden_states", encoded.tensor.clone()),
        ])?;
        // past_key_values.{i}.{decoder,encoder}.{key,value}; the encoder half never changes.
        let mut past: Vec<(String, Value)> = Vec::with_capacity(4 * n);
        for i in 0..n {
            for part in KV_PARTS {
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
        let first = last_logits(&out.swap_remove(first_logits_idx))?;
        drop(out);
        let mut step_logits = Vec::new();
        if record_logits {
            step_logits.push(first.clone());
        }
        let mut decode_time = Duration::ZERO;
        let mut step = |token: u32| -> Result<Vec<f32>, VlmError> {
            let t0 = Instant::now();
            let mut inputs: Vec<(&str, Value)> = Vec::with_capacity(2 + past.len());
            inputs.push(("inputs_embeds", self.embed(&[token])?));
            inputs.push(("encoder_attention_mask", mask.clone()));
            for (name, v) in &past {
                inputs.push((name.as_str(), v.clone()));
            }
            let mut out = self.g.decoder_past.run(inputs)?;
            for i in 0..n {
                for (k, part) in KV_PARTS[..2].iter().enumerate() {
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
            let logits = last_logits(&out.swap_remove(logits_idx))?;
            if record_logits {
                step_logits.push(logits.clone());
            }
            decode_time += t0.elapsed();
            Ok(logits)
        };
        let limits = Limits {
            max_new_tokens: opts.max_new_tokens,
            time_budget: opts.time_budget,
            started,
            stop_ids: &[self.cfg.eos_token_id],
            forced_first: self.cfg.forced_bos_token_id,
        };
        let g = decode::greedy(first, &limits, &mut step, on_token)?;
        let trace = Trace {
            tokens: g.ids,
            step_logits,
            stop: g.stop,
        };
        Ok((trace, decode_time, g.steps))
    }

    /// Image features for `image`, from the cache when it is the last image seen.
    pub fn image_features(&mut self, image: &RgbImage) -> Result<(u64, Features), VlmError> {
        let key = frame_key(image);
        if let Some(f) = self.image_cache.get(key) {
            return Ok((key, f));
        }
        let f = self.vision(self.pixel_values(image))?;
        self.vision_runs += 1;
        self.image_cache.insert(key, f.clone());
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
        let ids = self.prompt_ids(prompt)?;
        let t_prefill = Instant::now();
        let encoded = self.encoded(key, &features, &ids)?;
        let encode_time = t_prefill.elapsed();

        let mut stream = text_stream();
        let tok = &self.tokenizer;
        let mut first_step: Option<Duration> = None;
        let t_decode = Instant::now();
        let mut on_token = |id: u32| -> Result<(), VlmError> {
            if first_step.is_none() {
                first_step = Some(t_decode.elapsed());
            }
            let piece = stream.push(tok, id)?;
            if !piece.is_empty() {
                on_text(&piece);
            }
            Ok(())
        };
        let (trace, decode_time, steps) =
            self.decode_greedy(&encoded, opts, started, record_logits, &mut on_token)?;
        let rest = stream.finish(tok)?;
        if !rest.is_empty() {
            on_text(&rest);
        }
        let text = clean_text(&decode_raw(tok, &trace.tokens)?);
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
        let raw = decode_raw(&self.tokenizer, &trace.tokens)?;
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
