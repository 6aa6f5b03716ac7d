//! Finding installed models: `--model NAME` looks in the model folders; `--model DIR` or a
//! `model.toml` path is used as given.

use std::path::{Path, PathBuf};

use crate::detect::Manifest;
use crate::error::{Error, Result};

/// The model `lookout detect` and `lookout run` use when none is named: NanoDet-g quantised to int8
/// (QDQ), which finds 100 % of the fp32 model's detections at its own threshold on 16 held-out
/// photos (`models/tools/VARIANTS.md`) in under half its time (`benches/RESULTS.md`).
pub const DEFAULT_MODEL: &str = "nanodet-g-int8-qdq";

/// The model `lookout ground` uses when none is named: the fp32 NanoDet-g. Grounding runs the
/// detector at a lower threshold (0.25), where int8's score noise moves boxes in and out: on the
/// grounding sets (`tests/fixtures/ground`) the int8 default answered 89 of 94 cases right against
/// fp32's 92, and a grounding request is one image, not a stream.
pub const GROUND_MODEL: &str = "nanodet-g";

/// Where models are looked for, in order: `$LOOKOUT_MODELS` (colon-separated), `./models`,
/// `<exe>/../share/lookout/models`, and this source tree's `models/` (for `cargo run`).
pub fn search_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Ok(v) = std::env::var("LOOKOUT_MODELS") {
        dirs.extend(std::env::split_paths(&v));
    }
    dirs.push(PathBuf::from("models"));
    if let Ok(exe) = std::env::current_exe() {
        if let Some(bin) = exe.parent() {
            dirs.push(bin.join("../share/lookout/models"));
        }
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("models"));
    dirs
}

/// Why [`find`] found no detector: the CLI can list what is installed, or suggest a download.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// No model folder holds a `model.toml` by that name.
    #[error("model '{name}' not found (looked in {}); installed: {}", shown(looked_in), if installed.is_empty() { "none".to_string() } else { installed.join(", ") })]
    NotFound {
        name: String,
        looked_in: Vec<PathBuf>,
        installed: Vec<String>,
    },
    /// The folder holds another kind of model (`[model] kind = "embedding"`).
    #[error("{}: model.kind: this model is not a detector", path.display())]
    NotADetector { path: PathBuf },
    /// The manifest is there but does not load.
    #[error(transparent)]
    Manifest(#[from] Error),
}

fn shown(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// For callers that carry the library's one error type.
impl From<FindError> for Error {
    fn from(e: FindError) -> Error {
        match e {
            FindError::NotADetector { path } => {
                Error::manifest(path, "model.kind", "this model is not a detector")
            }
            FindError::Manifest(e) => e,
            not_found => Error::Other(not_found.to_string()),
        }
    }
}

/// Resolve a model name or path to its manifest.
pub fn find(name_or_path: &str) -> std::result::Result<Manifest, FindError> {
    let p = Path::new(name_or_path);
    if p.is_file() || p.join("model.toml").is_file() {
        return Ok(Manifest::load(p)?);
    }
    for dir in search_dirs() {
        let candidate = dir.join(name_or_path).join("model.toml");
        if candidate.is_file() {
            if !is_detector(&candidate) {
                return Err(FindError::NotADetector { path: candidate });
            }
            return Ok(Manifest::load(&candidate)?);
        }
    }
    Err(FindError::NotFound {
        name: name_or_path.to_string(),
        looked_in: search_dirs(),
        installed: list()
            .into_iter()
            .filter_map(|r| r.ok())
            .map(|m| m.model.name)
            .collect(),
    })
}

/// Every manifest in the search folders (first occurrence of a name wins), with errors for the
/// ones that fail to parse so `lookout models` can show them.
pub fn list() -> Vec<Result<Manifest>> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for dir in search_dirs() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let toml = p.join("model.toml");
            let Some(name) = p.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            if toml.is_file() && is_detector(&toml) && seen.insert(name) {
                out.push(Manifest::load(&toml));
            }
        }
    }
    out
}

/// Whether a manifest describes a detector: other models (`[model] kind = "embedding"`, used by
/// grounding) share the folders. A manifest without `kind` is a detector; one that does not parse
/// is listed so its error is shown.
fn is_detector(toml_path: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(toml_path) else {
        return true;
    };
    let Ok(v) = text.parse::<toml::Table>() else {
        return true;
    };
    v.get("model")
        .and_then(|m| m.get("kind"))
        .and_then(|k| k.as_str())
        .is_none_or(|k| k == "detector")
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
