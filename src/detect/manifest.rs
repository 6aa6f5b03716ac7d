//! `model.toml`: what a model file needs around it to be used (input geometry and normalisation,
//! decode family and parameters, labels, thresholds) and where it came from. The format is
//! documented in `models/README.md`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Nanodet,
    Centernet,
    Yolox,
    Fastestdet,
    Yolov8,
    Ssd,
}

impl Family {
    pub fn as_str(&self) -> &'static str {
        match self {
            Family::Nanodet => "nanodet",
            Family::Centernet => "centernet",
            Family::Yolox => "yolox",
            Family::Fastestdet => "fastestdet",
            Family::Yolov8 => "yolov8",
            Family::Ssd => "ssd",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
    Nhwc,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorOrder {
    Rgb,
    Bgr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeMode {
    Letterbox,
    Stretch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Align {
    #[default]
    TopLeft,
    Center,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BoxFormat {
    #[default]
    Xyxy,
    Yxyx,
    Cxcywh,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    pub name: String,
    pub family: Family,
    pub file: PathBuf,
    #[serde(default = "default_variant")]
    pub variant: String,
    #[serde(default)]
    pub description: String,
}

fn default_variant() -> String {
    "fp32".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputSection {
    #[serde(default)]
    pub name: Option<String>,
    pub shape: Vec<usize>,
    pub layout: Layout,
    pub color: ColorOrder,
    #[serde(default = "one")]
    pub scale: f32,
    #[serde(default = "zeros")]
    pub mean: [f32; 3],
    #[serde(default = "ones")]
    pub std: [f32; 3],
    pub resize: ResizeMode,
    #[serde(default)]
    pub align: Align,
    #[serde(default)]
    pub pad_value: u8,
}

fn one() -> f32 {
    1.0
}
fn zeros() -> [f32; 3] {
    [0.0; 3]
}
fn ones() -> [f32; 3] {
    [1.0; 3]
}

/// Family-specific decode parameters; every key is optional and each family reads its own.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeSection {
    pub strides: Option<Vec<usize>>,
    pub reg_max: Option<usize>,
    pub center_offset: Option<f32>,
    pub cls_sigmoid: Option<bool>,
    pub normalized: Option<bool>,
    pub class_offset: Option<i64>,
    pub box_format: Option<BoxFormat>,
    pub background_class: Option<bool>,
    pub builtin_nms: Option<bool>,
    pub boxes_output: Option<String>,
    pub scores_output: Option<String>,
    pub classes_output: Option<String>,
    pub count_output: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LabelsSection {
    pub file: Option<PathBuf>,
    pub names: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub conf: f32,
    pub iou: f32,
    #[serde(default = "default_max_det")]
    pub max_detections: usize,
}

fn default_max_det() -> usize {
    100
}

/// Provenance: kept free-form apart from the checksum lookout verifies.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct SourceSection {
    pub package: Option<String>,
    pub version: Option<String>,
    pub licence: Option<String>,
    pub sha256: Option<String>,
    #[serde(flatten)]
    pub extra: toml::Table,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    model: ModelSection,
    input: InputSection,
    #[serde(default)]
    decode: DecodeSection,
    labels: LabelsSection,
    thresholds: Thresholds,
    #[serde(default)]
    source: SourceSection,
}

/// A parsed, validated manifest with paths resolved against its folder.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The `model.toml` this came from.
    pub path: PathBuf,
    pub model: ModelSection,
    pub input: InputSection,
    pub decode: DecodeSection,
    pub labels: Vec<String>,
    pub thresholds: Thresholds,
    pub source: SourceSection,
    /// The ONNX file, resolved against the manifest's folder. Callers may point it elsewhere.
    pub model_path: PathBuf,
}

impl Manifest {
    /// Load `model.toml`, or the `model.toml` inside a folder.
    pub fn load(path: impl AsRef<Path>) -> Result<Manifest> {
        let mut path = path.as_ref().to_path_buf();
        if path.is_dir() {
            path.push("model.toml");
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        Self::parse(&path, &text)
    }

    /// Parse manifest text; `path` is used for error messages and to resolve relative files.
    pub fn parse(path: &Path, text: &str) -> Result<Manifest> {
        let raw: ManifestFile = toml::from_str(text).map_err(|e| {
            // One line: where it is and what is wrong (toml's Display draws a multi-line snippet).
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            let at = line.map_or("toml".to_string(), |l| format!("line {l}"));
            Error::manifest(path, &at, e.message().trim())
        })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let labels = match (&raw.labels.file, &raw.labels.names) {
            (_, Some(names)) => names.clone(),
            (Some(file), None) => {
                let lp = dir.join(file);
                let text = std::fs::read_to_string(&lp).map_err(|e| {
                    Error::manifest(path, "labels.file", format!("{}: {e}", lp.display()))
                })?;
                text.lines()
                    .map(|l| l.trim().to_string())
                    .filter(|l| !l.is_empty())
                    .collect()
            }
            (None, None) => {
                return Err(Error::manifest(path, "labels", "needs `file` or `names`"));
            }
        };
        let m = Manifest {
            model_path: dir.join(&raw.model.file),
            path: path.to_path_buf(),
            model: raw.model,
            input: raw.input,
            decode: raw.decode,
            labels,
            thresholds: raw.thresholds,
            source: raw.source,
        };
        m.validate()?;
        Ok(m)
    }

    fn validate(&self) -> Result<()> {
        let bad = |key: &str, why: String| Err(Error::manifest(&self.path, key, why));
        let s = &self.input.shape;
        if s.len() != 4 || s[0] != 1 {
            return bad(
                "input.shape",
                format!("{s:?}: expected [1, C, H, W] or [1, H, W, C]"),
            );
        }
        let c = match self.input.layout {
            Layout::Nchw => s[1],
            Layout::Nhwc => s[3],
        };
        if c != 3 {
            return bad(
                "input.shape",
                format!(
                    "{s:?} has {c} channels for layout {:?}; expected 3",
                    self.input.layout
                ),
            );
        }
        if self.input.std.contains(&0.0) {
            return bad("input.std", "must not contain 0".into());
        }
        if self.labels.is_empty() {
            return bad("labels", "no labels".into());
        }
        let t = &self.thresholds;
        if !(0.0..=1.0).contains(&t.conf) {
            return bad("thresholds.conf", format!("{} is outside 0..1", t.conf));
        }
        if !(0.0..=1.0).contains(&t.iou) {
            return bad("thresholds.iou", format!("{} is outside 0..1", t.iou));
        }
        if let Some(strides) = &self.decode.strides {
            let (h, w) = self.input_hw();
            if strides.is_empty()
                || strides
                    .iter()
                    .any(|st| *st == 0 || h % st != 0 || w % st != 0)
            {
                return bad(
                    "decode.strides",
                    format!("{strides:?} must divide the input size {w}x{h}"),
                );
            }
        }
        Ok(())
    }

    /// Input height and width.
    pub fn input_hw(&self) -> (usize, usize) {
        let s = &self.input.shape;
        match self.input.layout {
            Layout::Nchw => (s[2], s[3]),
            Layout::Nhwc => (s[1], s[2]),
        }
    }

    /// Folder name if the manifest is `<dir>/model.toml`, else the declared name.
    pub fn display_name(&self) -> &str {
        &self.model.name
    }
}
