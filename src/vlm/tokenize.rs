//! `tokenizer.json` through the `tokenizers` crate, the model's Jinja chat template, and streaming
//! detokenisation (text handed out piece by piece as tokens arrive).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::contract::VlmError;

/// A Hugging Face tokenizer loaded from `tokenizer.json`.
pub struct Tokenizer {
    path: PathBuf,
    inner: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("path", &self.path)
            .finish()
    }
}

impl Tokenizer {
    pub fn load(path: &Path) -> Result<Tokenizer, VlmError> {
        if !path.is_file() {
            return Err(VlmError::Tokenizer {
                path: path.to_path_buf(),
                reason: "file not found".into(),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| VlmError::Tokenizer {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Tokenizer {
            path: path.to_path_buf(),
            inner,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ids of `text`, with the tokenizer's own special-token post-processing (as transformers'
    /// `tokenizer(text)` does by default).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, VlmError> {
        self.inner
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| self.err(format!("cannot encode: {e}")))
    }

    /// Ids of `text` exactly as written: no special-token post-processing (Florence-2's processor
    /// writes `<s>` and `</s>` into the text itself).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, VlmError> {
        self.inner
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| self.err(format!("cannot encode: {e}")))
    }

    /// Text of `ids` without special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String, VlmError> {
        self.decode_with(ids, Special::Skip)
    }

    /// Text of `ids`, keeping or skipping special tokens.
    pub fn decode_with(&self, ids: &[u32], special: Special) -> Result<String, VlmError> {
        self.inner
            .decode(ids, special == Special::Skip)
            .map_err(|e| self.err(format!("cannot decode: {e}")))
    }

    /// The id of a token that must exist (a special token the model relies on).
    pub fn require_id(&self, token: &str) -> Result<u32, VlmError> {
        self.inner
            .token_to_id(token)
            .ok_or_else(|| self.err(format!("has no token '{token}'")))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    fn err(&self, reason: String) -> VlmError {
        VlmError::Tokenizer {
            path: self.path.clone(),
            reason,
        }
    }
}

/// Whether decoding keeps special tokens (Florence-2's `<loc_N>` are special and carry its boxes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    Skip,
    Keep,
}

/// Decodes a growing list of ids and hands out only the new text. Byte-level BPE tokens can end in
/// the middle of a UTF-8 character; such a tail (decoded as U+FFFD) is held back until the next token
/// completes it, so the pieces concatenate to the final text.
#[derive(Debug)]
pub struct TextStream {
    ids: Vec<u32>,
    emitted: String,
    special: Special,
    /// Applied to the whole decoded text before the new part is taken (Florence-2 drops `<s>`,
    /// `</s>` and trims, as its post-processor does to the final answer).
    transform: fn(&str) -> String,
}

impl Default for TextStream {
    fn default() -> Self {
        TextStream::new()
    }
}

impl TextStream {
    /// Special tokens skipped, text as decoded.
    pub fn new() -> TextStream {
        TextStream::with(Special::Skip, str::to_string)
    }

    /// Special tokens kept or skipped, and `transform` applied to the text decoded so far.
    pub fn with(special: Special, transform: fn(&str) -> String) -> TextStream {
        TextStream {
            ids: Vec::new(),
            emitted: String::new(),
            special,
            transform,
        }
    }

    /// Adds one id; returns the text it completes (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String, VlmError> {
        self.ids.push(id);
        let text = self.text(tok)?;
        if text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        Ok(self.take_new(text))
    }

    /// Whatever was held back (an incomplete character at the very end stays as U+FFFD).
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<String, VlmError> {
        let text = self.text(tok)?;
        Ok(self.take_new(text))
    }

    fn text(&self, tok: &Tokenizer) -> Result<String, VlmError> {
        Ok((self.transform)(&tok.decode_with(&self.ids, self.special)?))
    }

    fn take_new(&mut self, text: String) -> String {
        // Decoding a longer list rewrites earlier characters only in the held-back tail, so the
        // emitted text is normally a prefix. A transform can break that (trimming changes the
        // leading spaces): then the piece is the rest from the first differing character.
        let piece = match text.strip_prefix(self.emitted.as_str()) {
            Some(rest) => rest.to_string(),
            None => {
                let common = text
                    .char_indices()
                    .zip(self.emitted.chars())
                    .take_while(|((_, a), b)| a == b)
                    .last()
                    .map_or(0, |((i, a), _)| i + a.len_utf8());
                text[common..].to_string()
            }
        };
        self.emitted = text;
        piece
    }
}

#[derive(Serialize)]
struct Part<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'a str,
    content: Vec<Part<'a>>,
}

/// A model's Jinja chat template (from `chat_template.json`, `chat_template.jinja` or
/// `tokenizer_config.json`), rendered with minijinja.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: PathBuf,
    template: String,
}

impl ChatTemplate {
    /// Finds the template in a model folder, in the places transformers looks.
    pub fn find(dir: &Path) -> Result<Option<ChatTemplate>, VlmError> {
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            let template = std::fs::read_to_string(&jinja).map_err(|e| VlmError::Load {
                path: jinja.clone(),
                reason: e.to_string(),
            })?;
            return Ok(Some(ChatTemplate {
                source: jinja,
                template,
            }));
        }
        for name in ["chat_template.json", "tokenizer_config.json"] {
            let p = dir.join(name);
            if !p.is_file() {
                continue;
            }
            let v = super::contract::read_json(&p)?;
            if let Some(t) = v.get("chat_template").and_then(|t| t.as_str()) {
                return Ok(Some(ChatTemplate {
                    source: p,
                    template: t.to_string(),
                }));
            }
        }
        Ok(None)
    }

    pub fn from_string(source: &str, template: &str) -> ChatTemplate {
        ChatTemplate {
            source: PathBuf::from(source),
            template: template.to_string(),
        }
    }

    /// One user turn holding an image then `question`, followed by the generation prompt.
    pub fn render_image_question(&self, question: &str) -> Result<String, VlmError> {
        let messages = [Message {
            role: "user",
            content: vec![
                Part {
                    kind: "image",
                    text: None,
                },
                Part {
                    kind: "text",
                    text: Some(question),
                },
            ],
        }];
        let mut env = minijinja::Environment::new();
        // transformers renders with trim_blocks and lstrip_blocks.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        let err = |e: minijinja::Error| VlmError::Load {
            path: self.source.clone(),
            reason: format!("chat template: {e}"),
        };
        env.add_template("chat", &self.template).map_err(err)?;
        let t = env.get_template("chat").map_err(err)?;
        t.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => true,
            bos_token => "",
            eos_token => "",
        })
        .map_err(err)
    }
}
