//! `lookout models pull`: downloads a published model folder (transformers.js layout) from Hugging
//! Face or a mirror, checking every file's sha256.
//!
//! Each file goes to `<name>.part` first (resumed with an HTTP range request when a previous
//! download stopped), is hashed, and is renamed into place only when the hash is right, so a
//! final file name never holds a partial or corrupt download. Files whose sha256 is not published in
//! the catalogue below are trusted on first use: the hash of the first download is recorded in
//! `lookout-pull.json` in the model folder (with a warning) and later pulls must match it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Where files come from unless `LOOKOUT_MODEL_MIRROR` or `--mirror` says otherwise.
pub const DEFAULT_BASE_URL: &str = "https://huggingface.co";
/// The record of trusted-on-first-use hashes, in the model folder.
pub const LOCK_FILE: &str = "lookout-pull.json";
/// No single file of these models is near this; a server sending more is refused.
const MAX_FILE_BYTES: u64 = 8 << 30;

/// One file of a remote model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RemoteFile {
    /// Path inside the repository (and inside the local folder).
    pub path: String,
    /// Published sha256 (hex), when known.
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
    /// A missing optional file (HTTP 404) is skipped with a note.
    #[serde(default)]
    pub optional: bool,
}

/// A model folder on a Hugging Face-style server: `{base}/{repo}/resolve/{revision}/{path}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RemoteModel {
    pub name: String,
    pub repo: String,
    #[serde(default = "default_revision")]
    pub revision: String,
    /// Files every variant needs (configs, tokenizer).
    pub common: Vec<RemoteFile>,
    /// Graph files, by variant suffix (`""`, `"_int8"`, …).
    pub variants: BTreeMap<String, Vec<RemoteFile>>,
    /// Where the hashes came from (shown by `--list`).
    #[serde(default)]
    pub hash_source: String,
}

fn default_revision() -> String {
    "main".into()
}

impl RemoteModel {
    /// Reads a catalogue entry from a JSON file (same fields as the built-in ones).
    pub fn from_json_file(path: &Path) -> Result<RemoteModel, PullError> {
        let text = std::fs::read_to_string(path).map_err(|e| PullError::Local {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        serde_json::from_str(&text).map_err(|e| PullError::Local {
            path: path.to_path_buf(),
            reason: format!("not a model manifest: {e}"),
        })
    }

    /// The files of one variant (suffix `""`, `"_int8"`, …), common files first.
    pub fn files(&self, suffix: &str) -> Result<Vec<RemoteFile>, PullError> {
        let graphs = self
            .variants
            .get(suffix)
            .ok_or_else(|| PullError::Variant {
                model: self.name.clone(),
                variant: suffix.to_string(),
                known: self.variants.keys().cloned().collect(),
            })?;
        Ok(self.common.iter().chain(graphs).cloned().collect())
    }

    pub fn url(&self, base: &str, path: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            base.trim_end_matches('/'),
            self.repo,
            self.revision,
            path
        )
    }
}

/// Errors of a pull; each names the file or URL.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("unknown model `{0}` (known: smolvlm-256m, florence-2-base; or --manifest FILE)")]
    UnknownModel(String),
    #[error("{model}: no variant `{variant}` (known suffixes: {known:?})")]
    Variant {
        model: String,
        variant: String,
        known: Vec<String>,
    },
    #[error("{url}: {reason}")]
    Http { url: String, reason: String },
    #[error("{path}: sha256 mismatch: expected {expected}, downloaded {actual} ({source_of_expected}); the download was deleted")]
    Hash {
        path: PathBuf,
        expected: String,
        actual: String,
        source_of_expected: String,
    },
    #[error("{path}: {reason}")]
    Local { path: PathBuf, reason: String },
}

fn graph_files(stems: &[&str], suffix: &str, known: &[(&str, &str, u64)]) -> Vec<RemoteFile> {
    stems
        .iter()
        .map(|stem| {
            let path = format!("onnx/{stem}{suffix}.onnx");
            let k = known.iter().find(|(p, _, _)| *p == path);
            RemoteFile {
                sha256: k.map(|(_, h, _)| h.to_string()),
                size: k.map(|(_, _, s)| *s),
                path,
                optional: false,
            }
        })
        .collect()
}

fn small(paths: &[&str], optional: &[&str]) -> Vec<RemoteFile> {
    paths
        .iter()
        .map(|p| RemoteFile {
            path: p.to_string(),
            sha256: None,
            size: None,
            optional: optional.contains(p),
        })
        .collect()
}

/// Published sha256 and sizes of SmolVLM-256M-Instruct's ONNX files, read from Git LFS pointers
/// (`oid sha256:…`, `size …`) of a public copy of HuggingFaceTB/SmolVLM-256M-Instruct's `onnx/`
/// folder (GitHub xi-ix/smolvlm_256m_ft, commits 444cb27f and 0c7b2de5). They could not be checked
/// against huggingface.co from here (no internet); a mismatch stops the pull with both hashes shown.
const SMOLVLM_256M_HASHES: &[(&str, &str, u64)] = &[
    (
        "onnx/vision_encoder.onnx",
        "e27ad810eabfa7c881b409e1ca357e7a951541019add228ff73c72718fcf6218",
        374316497,
    ),
    (
        "onnx/embed_tokens.onnx",
        "a68ea4058524059ed0e2873fdbc4f33b93e13ae3d3204938d32d0566d390ae00",
        113541419,
    ),
    (
        "onnx/decoder_model_merged.onnx",
        "5ae6a66fdf47680433aa6bcc512ae8f0b98c2db01bea055fc76ee37bb0389b78",
        540640302,
    ),
    (
        "onnx/vision_encoder_int8.onnx",
        "d534ab668d3563e6d1d809bbbf1ff18308ded48651178614dbcc4a1de13d16f7",
        94247927,
    ),
    (
        "onnx/decoder_model_merged_int8.onnx",
        "306fad6cec3b5b7613600b74abf1e410fa50000fbc81292c0d083bd8d85b5fe2",
        137221530,
    ),
    (
        "onnx/embed_tokens_uint8.onnx",
        "4b919b829fe2bf225e42431230c56891116f0149e5170e36c99bcc0cfae0d2ef",
        28385824,
    ),
    (
        "onnx/decoder_model_merged_uint8.onnx",
        "33f14f3bca52699d733d86fcc9c5a0ec6f57afffa1dc9596abde53cde9df81aa",
        137221644,
    ),
    (
        "onnx/vision_encoder_quantized.onnx",
        "f82adc84246fbfe8651038470166385452682cc889538f5106544e622e5f1595",
        94247969,
    ),
];

/// The models `lookout models pull NAME` knows.
pub fn catalog() -> Vec<RemoteModel> {
    let suffixes = ["", "_int8", "_uint8", "_quantized"];
    let smol_stems = ["vision_encoder", "embed_tokens", "decoder_model_merged"];
    let florence_stems = [
        "vision_encoder",
        "embed_tokens",
        "encoder_model",
        "decoder_model",
        "decoder_with_past_model",
    ];
    vec![
        RemoteModel {
            name: "smolvlm-256m".into(),
            repo: "onnx-community/SmolVLM-256M-Instruct".into(),
            revision: "main".into(),
            common: small(
                &[
                    "config.json",
                    "generation_config.json",
                    "preprocessor_config.json",
                    "processor_config.json",
                    "special_tokens_map.json",
                    "tokenizer.json",
                    "tokenizer_config.json",
                    "chat_template.json",
                ],
                &[
                    "processor_config.json",
                    "special_tokens_map.json",
                    "chat_template.json",
                ],
            ),
            variants: suffixes
                .iter()
                .map(|s| {
                    (
                        s.to_string(),
                        graph_files(&smol_stems, s, SMOLVLM_256M_HASHES),
                    )
                })
                .collect(),
            hash_source: "ONNX files: Git LFS pointers of a public copy of HuggingFaceTB/SmolVLM-256M-Instruct/onnx \
                          (8 of 12 graph files); configs, tokenizer and the other graphs: trust on first use"
                .into(),
        },
        RemoteModel {
            name: "florence-2-base".into(),
            repo: "onnx-community/Florence-2-base".into(),
            revision: "main".into(),
            common: small(
                &[
                    "config.json",
                    "generation_config.json",
                    "preprocessor_config.json",
                    "tokenizer.json",
                    "tokenizer_config.json",
                    "special_tokens_map.json",
                ],
                &["special_tokens_map.json", "generation_config.json"],
            ),
            variants: suffixes
                .iter()
                .map(|s| (s.to_string(), graph_files(&florence_stems, s, &[])))
                .collect(),
            hash_source: "none published where this was written: every file is trusted on first use".into(),
        },
    ]
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The model folder to fill.
    pub dir: PathBuf,
    /// Server base URL (`https://huggingface.co` or a mirror with the same paths).
    pub base_url: String,
    /// Variant suffix: `""`, `"_int8"`, …
    pub suffix: String,
    /// Draw progress bars (on a terminal).
    pub progress: bool,
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOutcome {
    Downloaded,
    /// Already there with the right hash.
    UpToDate,
    /// Optional and absent on the server.
    Skipped,
}

/// One line of a pull report.
#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: String,
    pub outcome: FileOutcome,
    pub sha256: Option<String>,
    pub bytes: u64,
    /// Whether the hash was checked against a published one (false: trusted on first use).
    pub verified_against_published: bool,
    /// Bytes that came from a resumed `.part`.
    pub resumed_from: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Lock {
    /// path → sha256 of files trusted on first use.
    files: BTreeMap<String, String>,
}

fn load_lock(dir: &Path) -> Result<Lock, PullError> {
    let p = dir.join(LOCK_FILE);
    match std::fs::read_to_string(&p) {
        Ok(t) => serde_json::from_str(&t).map_err(|e| PullError::Local {
            path: p,
            reason: format!("not a pull record: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Lock::default()),
        Err(e) => Err(PullError::Local {
            path: p,
            reason: e.to_string(),
        }),
    }
}

fn save_lock(dir: &Path, lock: &Lock) -> Result<(), PullError> {
    let p = dir.join(LOCK_FILE);
    let tmp = dir.join(format!("{LOCK_FILE}.part"));
    let text = serde_json::to_string_pretty(lock).unwrap_or_default();
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::rename(&tmp, &p))
        .map_err(|e| PullError::Local {
            path: p,
            reason: e.to_string(),
        })
}

/// The base URL: `LOOKOUT_MODEL_MIRROR` when set, else Hugging Face.
pub fn base_url_from_env() -> String {
    std::env::var("LOOKOUT_MODEL_MIRROR")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_BASE_URL.to_string())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .http_status_as_error(false)
        .user_agent(concat!("lookout/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

fn sha256_file(path: &Path, hasher: &mut Sha256) -> std::io::Result<u64> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            return Ok(n);
        }
        hasher.update(&buf[..k]);
        n += k as u64;
    }
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads every file of `model`'s variant into `opts.dir`. Stops at the first failure (the
/// files already done stay; the failing one leaves at most its `.part` when it was cut off, never
/// a final file with wrong content).
pub fn pull(model: &RemoteModel, opts: &PullOptions) -> Result<Vec<FileReport>, PullError> {
    let files = model.files(&opts.suffix)?;
    std::fs::create_dir_all(&opts.dir).map_err(|e| PullError::Local {
        path: opts.dir.clone(),
        reason: e.to_string(),
    })?;
    let mut lock = load_lock(&opts.dir)?;
    let agent = agent();
    let mut out = Vec::new();
    for f in &files {
        let r = pull_one(&agent, model, f, opts, &mut lock)?;
        out.push(r);
    }
    Ok(out)
}

fn pull_one(
    agent: &ureq::Agent,
    model: &RemoteModel,
    f: &RemoteFile,
    opts: &PullOptions,
    lock: &mut Lock,
) -> Result<FileReport, PullError> {
    if f.path.split('/').any(|c| c == ".." || c.is_empty()) || f.path.starts_with('/') {
        return Err(PullError::Local {
            path: PathBuf::from(&f.path),
            reason: "file path must stay inside the model folder".into(),
        });
    }
    let dest = opts.dir.join(&f.path);
    let part = opts.dir.join(format!("{}.part", f.path));
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| PullError::Local {
            path: parent.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    let published = f.sha256.clone().map(|h| h.to_ascii_lowercase());
    let expected = published
        .clone()
        .or_else(|| lock.files.get(&f.path).cloned());
    let source_of_expected = if published.is_some() {
        "published hash in lookout's catalogue".to_string()
    } else {
        format!("hash recorded by an earlier pull in {LOCK_FILE}")
    };

    // Already there and right: nothing to do.
    if dest.is_file() {
        if let Some(want) = &expected {
            let mut h = Sha256::new();
            let n = sha256_file(&dest, &mut h).map_err(|e| PullError::Local {
                path: dest.clone(),
                reason: e.to_string(),
            })?;
            if &hex(&h.finalize()) == want {
                return Ok(FileReport {
                    path: f.path.clone(),
                    outcome: FileOutcome::UpToDate,
                    sha256: Some(want.clone()),
                    bytes: n,
                    verified_against_published: published.is_some(),
                    resumed_from: 0,
                });
            }
            log::warn!(
                "{}: present but its sha256 differs; downloading again",
                dest.display()
            );
        }
    }

    let url = model.url(&opts.base_url, &f.path);
    let http = |reason: String| PullError::Http {
        url: url.clone(),
        reason,
    };
    let local = |path: &Path, e: std::io::Error| PullError::Local {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    if f.size.is_some_and(|s| have > s) {
        have = 0;
    }
    let mut req = agent.get(&url).header("Accept-Encoding", "identity");
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let resp = req.call().map_err(|e| http(e.to_string()))?;
    let status = resp.status().as_u16();
    let resumed = match status {
        206 if have > 0 => true,
        200 => false,
        416 if have > 0 => {
            // The server has nothing past what we hold: restart cleanly next time.
            let _ = std::fs::remove_file(&part);
            return Err(http(format!(
                "range not satisfiable for the {have} bytes already in {}; removed it, run the pull again",
                part.display()
            )));
        }
        404 if f.optional => {
            return Ok(FileReport {
                path: f.path.clone(),
                outcome: FileOutcome::Skipped,
                sha256: None,
                bytes: 0,
                verified_against_published: false,
                resumed_from: 0,
            })
        }
        other => return Err(http(format!("HTTP {other}"))),
    };
    let start = if resumed { have } else { 0 };
    let content_len = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let total = f.size.or(content_len.map(|c| c + start));
    if let (Some(size), Some(c)) = (f.size, content_len) {
        if c + start != size {
            return Err(http(format!(
                "server announces {} bytes, the catalogue says {size}",
                c + start
            )));
        }
    }

    let mut hasher = Sha256::new();
    let mut file = if resumed {
        sha256_file(&part, &mut hasher).map_err(|e| local(&part, e))?;
        std::fs::OpenOptions::new()
            .append(true)
            .open(&part)
            .map_err(|e| local(&part, e))?
    } else {
        std::fs::File::create(&part).map_err(|e| local(&part, e))?
    };
    let bar = progress_bar(opts.progress, &f.path, total, start);
    let mut reader = resp.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 20];
    let mut written = start;
    let limit = total.unwrap_or(MAX_FILE_BYTES).min(MAX_FILE_BYTES);
    loop {
        let k = reader
            .read(&mut buf)
            .map_err(|e| http(format!("download cut off after {written} bytes: {e}")))?;
        if k == 0 {
            break;
        }
        written += k as u64;
        if written > limit {
            drop(file);
            let _ = std::fs::remove_file(&part);
            return Err(http(format!("more than the expected {limit} bytes")));
        }
        hasher.update(&buf[..k]);
        file.write_all(&buf[..k]).map_err(|e| local(&part, e))?;
        bar.set_position(written);
    }
    file.sync_all().map_err(|e| local(&part, e))?;
    drop(file);
    bar.finish_and_clear();
    if let Some(t) = total {
        if written != t {
            return Err(http(format!(
                "got {written} of {t} bytes; kept {} to resume",
                part.display()
            )));
        }
    }
    let actual = hex(&hasher.finalize());
    match &expected {
        Some(want) if *want != actual => {
            let _ = std::fs::remove_file(&part);
            return Err(PullError::Hash {
                path: dest,
                expected: want.clone(),
                actual,
                source_of_expected,
            });
        }
        Some(_) => {}
        None => {
            eprintln!(
                "WARNING: {}: no published sha256 is known for this file; trusting this download \
                 (sha256 {actual}) and recording it in {} — later pulls must match it",
                f.path,
                opts.dir.join(LOCK_FILE).display()
            );
            lock.files.insert(f.path.clone(), actual.clone());
            save_lock(&opts.dir, lock)?;
        }
    }
    std::fs::rename(&part, &dest).map_err(|e| local(&dest, e))?;
    Ok(FileReport {
        path: f.path.clone(),
        outcome: FileOutcome::Downloaded,
        sha256: Some(actual),
        bytes: written,
        verified_against_published: published.is_some(),
        resumed_from: start,
    })
}

fn progress_bar(
    enabled: bool,
    name: &str,
    total: Option<u64>,
    start: u64,
) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match total {
        Some(t) => indicatif::ProgressBar::new(t),
        None => indicatif::ProgressBar::no_length(),
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:40} {bar:30} {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {eta:>4}",
    ) {
        bar.set_style(style);
    }
    bar.set_message(name.to_string());
    bar.set_position(start);
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalogue_names_the_published_layout() {
        let c = catalog();
        let smol = c.iter().find(|m| m.name == "smolvlm-256m").unwrap();
        assert_eq!(
            smol.url(DEFAULT_BASE_URL, "onnx/decoder_model_merged_int8.onnx"),
            "https://huggingface.co/onnx-community/SmolVLM-256M-Instruct/resolve/main/onnx/decoder_model_merged_int8.onnx"
        );
        let fp32 = smol.files("").unwrap();
        let dec = fp32
            .iter()
            .find(|f| f.path == "onnx/decoder_model_merged.onnx")
            .unwrap();
        assert_eq!(dec.size, Some(540640302));
        assert_eq!(dec.sha256.as_deref().map(str::len), Some(64));
        assert!(fp32.iter().any(|f| f.path == "tokenizer.json"));
        // Only the LFS-pointer hashes are claimed as published.
        let known = c
            .iter()
            .flat_map(|m| m.variants.values().flatten())
            .filter(|f| f.sha256.is_some())
            .count();
        assert_eq!(known, SMOLVLM_256M_HASHES.len());
        assert!(smol.files("_q4").is_err());
        let flo = c.iter().find(|m| m.name == "florence-2-base").unwrap();
        assert!(flo
            .files("")
            .unwrap()
            .iter()
            .any(|f| f.path == "onnx/decoder_with_past_model.onnx"));
    }
}
