//! Sentence embeddings (all-MiniLM-L6-v2 by default): text → a unit vector whose dot product with
//! another is their cosine similarity. Grounding uses them to match the noun of an instruction to the
//! detector's labels ("mug" → cup).
//!
//! Tokenising is the tokenizers crate on the model's `tokenizer.json` with its padding turned off
//! (the file pads to 128; padded positions would change nothing under the attention mask but cost
//! time); pooling is sentence-transformers' mean over the tokens, then L2 normalisation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::engine::text::TextEngine;
use crate::error::{Error, Result};

/// The embedding model grounding uses when none is named.
pub const DEFAULT_EMBEDDING_MODEL: &str = "minilm-l6";
/// Longest text embedded, in bytes; an instruction is a sentence, not a document.
pub const MAX_TEXT_BYTES: usize = 4096;

/// What can go wrong finding a model or embedding a text, by kind: a missing model can be
/// pulled, an overlong text shortened.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    /// No model folder holds a `model.toml` by that name.
    #[error("embedding model '{name}' not found in the model folders ({})", looked_in.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound {
        name: String,
        looked_in: Vec<PathBuf>,
    },
    /// Longer than [`MAX_TEXT_BYTES`].
    #[error("text of {len} bytes is longer than {max}")]
    TextTooLong { len: usize, max: usize },
    /// The tokenizer in `path` failed on the text.
    #[error("{}: cannot tokenize: {reason}", path.display())]
    Tokenize { path: PathBuf, reason: String },
    /// The manifest or the model does not load.
    #[error(transparent)]
    Load(#[from] Error),
}

/// For callers that carry the library's one error type.
impl From<EmbedError> for Error {
    fn from(e: EmbedError) -> Error {
        match e {
            EmbedError::Load(e) => e,
            EmbedError::Tokenize { path, reason } => {
                Error::model(path, format!("cannot tokenize: {reason}"))
            }
            other => Error::Other(other.to_string()),
        }
    }
}

/// `models/<name>/model.toml` of an embedding model (`[model] kind = "embedding"`).
#[derive(Debug, Clone, Deserialize)]
pub struct EmbeddingManifest {
    pub model: EmbeddingModelSection,
    pub tokenizer: TokenizerSection,
    #[serde(skip)]
    pub dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EmbeddingModelSection {
    pub kind: String,
    pub name: String,
    pub file: PathBuf,
    #[serde(default)]
    pub variant: String,
    pub dim: usize,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: usize,
}

fn default_max_tokens() -> usize {
    128
}

#[derive(Debug, Clone, Deserialize)]
pub struct TokenizerSection {
    pub file: PathBuf,
}

impl EmbeddingManifest {
    /// Read a manifest (a `model.toml` or the folder holding one).
    pub fn load(path: &Path) -> Result<EmbeddingManifest> {
        let file = if path.is_dir() {
            path.join("model.toml")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        let mut m: EmbeddingManifest = toml::from_str(&text)
            .map_err(|e| Error::manifest(&file, "model", e.message().to_string()))?;
        if m.model.kind != "embedding" {
            return Err(Error::manifest(
                &file,
                "model.kind",
                format!("is '{}', not 'embedding'", m.model.kind),
            ));
        }
        if m.model.dim == 0 || m.model.max_tokens < 2 {
            return Err(Error::manifest(
                &file,
                "model.dim",
                "dim must be > 0 and max_tokens ≥ 2",
            ));
        }
        m.dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        Ok(m)
    }

    /// Find an embedding model by folder name in the model search path, or use a path as given.
    pub fn find(name_or_path: &str) -> Result<EmbeddingManifest, EmbedError> {
        let p = Path::new(name_or_path);
        if p.is_file() || p.join("model.toml").is_file() {
            return Ok(Self::load(p)?);
        }
        for dir in crate::models::search_dirs() {
            let candidate = dir.join(name_or_path).join("model.toml");
            if candidate.is_file() {
                return Ok(Self::load(&candidate)?);
            }
        }
        Err(EmbedError::NotFound {
            name: name_or_path.to_string(),
            looked_in: crate::models::search_dirs(),
        })
    }

    pub fn model_path(&self) -> PathBuf {
        self.dir.join(&self.model.file)
    }
}

/// A loaded embedding model with a cache of the texts it has embedded (label names are embedded
/// once, instructions' nouns repeat).
pub struct Embedder {
    name: String,
    engine: TextEngine,
    tokenizer: tokenizers::Tokenizer,
    tokenizer_path: PathBuf,
    dim: usize,
    max_tokens: usize,
    cache: HashMap<String, Vec<f32>>,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("name", &self.name)
            .field("engine", &self.engine)
            .finish()
    }
}

/// Cached texts beyond this are dropped wholesale: a long-running device sees unbounded input.
const CACHE_LIMIT: usize = 4096;

impl Embedder {
    pub fn load(m: &EmbeddingManifest) -> Result<Embedder> {
        Self::load_file(m, &m.model_path())
    }

    /// Load with another ONNX file of the same model (the fp32 graph in tests).
    pub fn load_file(m: &EmbeddingManifest, onnx: &Path) -> Result<Embedder> {
        let tok_path = m.dir.join(&m.tokenizer.file);
        let mut tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
            .map_err(|e| Error::model(&tok_path, format!("cannot load tokenizer: {e}")))?;
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(tokenizers::TruncationParams {
                max_length: m.model.max_tokens,
                ..Default::default()
            }))
            .map_err(|e| Error::model(&tok_path, format!("truncation: {e}")))?;
        Ok(Embedder {
            name: m.model.name.clone(),
            engine: TextEngine::load(onnx)?,
            tokenizer,
            tokenizer_path: tok_path,
            dim: m.model.dim,
            max_tokens: m.model.max_tokens,
            cache: HashMap::new(),
        })
    }

    /// The default model from the model folders.
    pub fn load_default() -> Result<Embedder> {
        Self::load(&EmbeddingManifest::find(DEFAULT_EMBEDDING_MODEL)?)
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Word-piece ids as the model sees them: `[CLS] … [SEP]`, no padding.
    pub fn token_ids(&self, text: &str) -> Result<Vec<i64>, EmbedError> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(EmbedError::TextTooLong {
                len: text.len(),
                max: MAX_TEXT_BYTES,
            });
        }
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| EmbedError::Tokenize {
                path: self.tokenizer_path.clone(),
                reason: e.to_string(),
            })?;
        let ids: Vec<i64> = enc.get_ids().iter().map(|&i| i as i64).collect();
        debug_assert!(ids.len() <= self.max_tokens);
        Ok(ids)
    }

    /// Unit-length embedding of `text` (cached).
    pub fn embed(&mut self, text: &str) -> Result<Vec<f32>> {
        if let Some(v) = self.cache.get(text) {
            return Ok(v.clone());
        }
        let v = self.embed_uncached(text)?;
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(text.to_string(), v.clone());
        Ok(v)
    }

    fn embed_uncached(&self, text: &str) -> Result<Vec<f32>> {
        let ids = self.token_ids(text)?;
        let (shape, hidden) = self.engine.run(&ids)?;
        if shape.len() != 3 || shape[0] != 1 || shape[1] != ids.len() || shape[2] != self.dim {
            return Err(Error::model(
                self.engine.path(),
                format!(
                    "output shape {shape:?}, expected [1, {}, {}]",
                    ids.len(),
                    self.dim
                ),
            ));
        }
        Ok(mean_pool_normalize(&hidden, ids.len(), self.dim))
    }
}

/// sentence-transformers' mean pooling (every token counts: the mask is all ones) and `Normalize`.
pub fn mean_pool_normalize(hidden: &[f32], tokens: usize, dim: usize) -> Vec<f32> {
    let mut v = vec![0f32; dim];
    for t in 0..tokens {
        for (acc, h) in v.iter_mut().zip(&hidden[t * dim..(t + 1) * dim]) {
            *acc += h;
        }
    }
    let n = tokens.max(1) as f32;
    v.iter_mut().for_each(|x| *x /= n);
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// Dot product; the cosine similarity of two unit vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_averages_tokens_then_normalises() {
        let h = [1.0, 0.0, 3.0, 0.0]; // two tokens, dim 2
        let v = mean_pool_normalize(&h, 2, 2);
        assert!((v[0] - 1.0).abs() < 1e-6 && v[1].abs() < 1e-6);
        let h = [3.0, 0.0, 0.0, 4.0];
        let v = mean_pool_normalize(&h, 2, 2);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }
}
