//! A segmentation model's `model.toml` (`[model] kind = "segmenter"`): its file, input geometry and
//! normalisation, and the probability threshold of its output.

use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::Deserialize;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Deserialize)]
pub struct SegmentManifest {
    #[serde(skip)]
    pub dir: PathBuf,
    pub model: ModelSection,
    pub input: InputSection,
    pub output: OutputSection,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelSection {
    pub kind: String,
    pub name: String,
    pub file: String,
    #[serde(default)]
    pub description: String,
}

/// Only what the one supported layout needs: NHWC RGB, `(pixel * scale - mean) / std`.
#[derive(Debug, Clone, Deserialize)]
pub struct InputSection {
    pub name: String,
    pub shape: [usize; 4],
    pub layout: String,
    pub color: String,
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

#[derive(Debug, Clone, Deserialize)]
pub struct OutputSection {
    pub name: String,
    pub threshold: f32,
}

impl SegmentManifest {
    /// Parse `model.toml` (or the folder holding it) and check what lookout relies on.
    pub fn load(path: &Path) -> Result<SegmentManifest> {
        let file = if path.is_dir() {
            path.join("model.toml")
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
        let mut m: SegmentManifest =
            toml::from_str(&text).map_err(|e| Error::manifest(&file, "model.toml", e))?;
        m.dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
        if m.model.kind != "segmenter" {
            return Err(Error::manifest(
                &file,
                "model.kind",
                format!("'{}' is not a segmenter", m.model.kind),
            ));
        }
        if m.input.layout != "nhwc" || m.input.shape[0] != 1 || m.input.shape[3] != 3 {
            return Err(Error::manifest(
                &file,
                "input.shape",
                "only [1, H, W, 3] NHWC inputs are supported",
            ));
        }
        if m.input.color != "rgb" && m.input.color != "bgr" {
            return Err(Error::manifest(&file, "input.color", "must be rgb or bgr"));
        }
        if m.input.std.contains(&0.0) {
            return Err(Error::manifest(&file, "input.std", "must not be 0"));
        }
        if !(0.0..1.0).contains(&m.output.threshold) {
            return Err(Error::manifest(
                &file,
                "output.threshold",
                "must be in [0, 1)",
            ));
        }
        Ok(m)
    }

    /// Resolve a name (a folder under the model paths) or a folder / `model.toml` path.
    pub fn find(name_or_path: &str) -> Result<SegmentManifest> {
        let p = Path::new(name_or_path);
        if p.is_file() || p.join("model.toml").is_file() {
            return Self::load(p);
        }
        let dirs = crate::models::search_dirs();
        for dir in &dirs {
            let candidate = dir.join(name_or_path).join("model.toml");
            if candidate.is_file() {
                return Self::load(&candidate);
            }
        }
        Err(Error::Other(format!(
            "segmentation model '{name_or_path}' not found (looked in {})",
            dirs.iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    pub fn model_path(&self) -> PathBuf {
        self.dir.join(&self.model.file)
    }

    /// (height, width) of the model input.
    pub fn input_hw(&self) -> (usize, usize) {
        (self.input.shape[1], self.input.shape[2])
    }

    /// The NHWC f32 tensor for a canvas of the input size.
    pub fn to_tensor(&self, canvas: &RgbImage) -> Vec<f32> {
        let i = &self.input;
        let bgr = i.color == "bgr";
        let mut out = Vec::with_capacity(canvas.as_raw().len());
        for p in canvas.pixels() {
            for c in 0..3 {
                let v = p.0[if bgr { 2 - c } else { c }] as f32;
                out.push((v * i.scale - i.mean[c]) / i.std[c]);
            }
        }
        out
    }
}
