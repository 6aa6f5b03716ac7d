//! The SmolVLM model: its three graphs, the prompt with the image placeholder expanded, the
//! image features merged into the token embeddings, and greedy generation on the shared loop.

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;

use super::config::Config;
use super::preprocess::Preprocess;
use crate::engine::session::{Dim, ElemType, InputSpec, Session, SessionOptions, Value};
use crate::vlm::contract::{
    GenerateOptions, Generation, Timings, Variant, VisionLanguageModel, VlmError,
};
use crate::vlm::decode::{self, Limits};
use crate::vlm::frame_cache::{frame_key, FrameCache};
use crate::vlm::onnx::load_graph;
use crate::vlm::tokenize::{ChatTemplate, TextStream, Tokenizer};

/// The SmolVLM chat format, used when the folder has no chat template.
const DEFAULT_TEMPLATE: &str = "<|im_start|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]['type'] == 'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' %}{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}";

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

fn run_err<E: std::fmt::Display>(stage: &'static str) -> impl Fn(E) -> VlmError {
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
    /// Image features of the last frame.
    cache: FrameCache<Vec<f32>>,
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
        let specs = decoder_specs(&cfg);
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
            cache: FrameCache::default(),
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
        let key = frame_key(img);
        if let Some(f) = self.cache.get(key) {
            return Ok((f, true, 0.0));
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
        self.cache.insert(key, f.clone());
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
            forced_first: None,
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

/// What the merged decoder is fed: the step's `S` new tokens after a past of `P` (empty at the first
/// step, so `P` appears only as the first of a sum: sessions declare every other symbol ≥ 1).
pub fn decoder_specs(cfg: &Config) -> Vec<InputSpec> {
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
    specs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_names_map_to_cache_slots() {
        assert_eq!(present_slot("present.0.key", 2), Some(0));
        assert_eq!(present_slot("present.1.value", 2), Some(3));
        assert_eq!(present_slot("present.2.key", 2), None);
        assert_eq!(present_slot("logits", 2), None);
    }
}
