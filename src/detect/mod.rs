//! Object detection: a [`Detector`] turns an RGB frame into labelled boxes in that frame's pixels.
//! [`ModelDetector`] does it with any model described by a `model.toml` manifest: shared
//! pre-processing, one decoder per family, class-aware NMS, mapping back to source pixels.

pub mod decode;
pub mod manifest;
pub mod nms;
pub mod preprocess;

// The families: each imports only the contract in `decode` (and `manifest` for its settings);
// `decoder_for` below is the one place that names them.
mod centernet;
mod fastestdet;
mod nanodet;
mod ssd;
mod yolov8;
mod yolox;

use std::sync::Arc;
use std::time::Instant;

use image::RgbImage;
use serde::{Deserialize, Serialize};

pub use crate::engine::Precision;
use crate::engine::{Engine, EngineOptions};
use crate::error::{Error, Result};
use crate::geometry::BBox;
pub use decode::{DecodeError, RawDetection};
use decode::{Decoder, InputGeom};
pub use manifest::{Family, Manifest};
use preprocess::{Preprocessor, Transform};

/// One detected object, in source-image pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    #[serde(with = "arc_str")]
    pub label: Arc<str>,
    pub class_id: usize,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: BBox,
}

/// Serde for `Arc<str>` without serde's `rc` feature (which would rebuild tract's dependency tree).
pub(crate) mod arc_str {
    use std::sync::Arc;

    pub fn serialize<S: serde::Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v)
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Arc<str>, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        Ok(Arc::from(s))
    }
}

/// Where the time of one `detect` call went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub preprocess_ms: f64,
    pub inference_ms: f64,
    pub postprocess_ms: f64,
}

/// The seam between frames and detections, so the pipeline can be tested with any detector.
pub trait Detector: Send {
    fn detect(&mut self, img: &RgbImage) -> Result<Vec<Detection>>;
    /// Model name for reports.
    fn name(&self) -> &str;
    fn labels(&self) -> &[Arc<str>];
    /// Timings of the last `detect`.
    fn last_timings(&self) -> Timings {
        Timings::default()
    }
}

/// The family registry (tract's `register_all_ops`): the decoder `m.model.family` names, set up
/// for the manifest's input geometry and decode settings.
pub fn decoder_for(m: &Manifest) -> Box<dyn Decoder> {
    let (h, w) = m.input_hw();
    let geom = InputGeom {
        width: w,
        height: h,
    };
    match m.model.family {
        Family::Yolox => Box::new(yolox::Yolox::new(m, geom)),
        Family::Fastestdet => Box::new(fastestdet::FastestDet::new(geom)),
        Family::Nanodet => Box::new(nanodet::NanoDet::new(m, geom)),
        Family::Centernet => Box::new(centernet::CenterNet::new(m, geom)),
        Family::Yolov8 => Box::new(yolov8::Yolov8::new(geom)),
        Family::Ssd => Box::new(ssd::Ssd::new(m, geom)),
    }
}

/// Options that override a manifest's defaults.
#[derive(Debug, Clone, Default)]
pub struct DetectorOptions {
    pub threads: usize,
    pub conf: Option<f32>,
    pub iou: Option<f32>,
    /// f32, or f16 where the CPU has FP16 arithmetic (`[detector] precision`).
    pub precision: Precision,
}

pub struct ModelDetector {
    manifest: Manifest,
    engine: Engine,
    pre: Preprocessor,
    decoder: Box<dyn Decoder>,
    labels: Vec<Arc<str>>,
    conf: f32,
    iou: f32,
    scratch: Vec<RawDetection>,
    timings: Timings,
}

impl std::fmt::Debug for ModelDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelDetector")
            .field("model", &self.manifest.model.name)
            .field("engine", &self.engine)
            .finish()
    }
}

impl ModelDetector {
    /// Load the model a manifest describes and check that the two agree.
    pub fn load(manifest: Manifest, opts: &DetectorOptions) -> Result<Self> {
        let decoder = decoder_for(&manifest);
        let engine = Engine::load(
            &manifest.model_path,
            &EngineOptions {
                threads: opts.threads.max(1),
                input_shape: Some(manifest.input.shape.clone()),
                precision: opts.precision,
            },
        )?;
        if let (Some(want), Some(got)) = (&manifest.input.name, engine.inputs().first()) {
            if &got.name != want {
                return Err(Error::model(
                    &manifest.model_path,
                    format!(
                        "input is named '{}' but {} says '{want}'",
                        got.name,
                        manifest.path.display()
                    ),
                ));
            }
        }
        decoder
            .check(engine.outputs(), manifest.labels.len())
            .map_err(|e| {
                Error::model(
                    &manifest.model_path,
                    format!("disagrees with {}: {e}", manifest.path.display()),
                )
            })?;
        let conf = opts.conf.unwrap_or(manifest.thresholds.conf);
        if !(0.0..=1.0).contains(&conf) {
            return Err(Error::Other(format!("--conf {conf} is outside 0..1")));
        }
        Ok(ModelDetector {
            pre: Preprocessor::new(&manifest),
            labels: manifest
                .labels
                .iter()
                .map(|l| Arc::from(l.as_str()))
                .collect(),
            iou: opts.iou.unwrap_or(manifest.thresholds.iou),
            conf,
            decoder,
            engine,
            manifest,
            scratch: Vec::new(),
            timings: Timings::default(),
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Where inference time goes on `img`, per tract operator kind (see [`Engine::profile`]).
    pub fn profile(
        &mut self,
        img: &RgbImage,
        runs: usize,
    ) -> Result<Vec<crate::engine::OpProfile>> {
        self.pre.run(img);
        self.engine
            .profile(&self.manifest.input.shape, self.pre.tensor(), runs)
    }

    /// Run the model on an image already fitted to the input geometry (letterboxed/stretched) and
    /// return candidates after NMS, in input-tensor pixels. Used by reference tests and benches.
    pub fn detect_fitted(&mut self, canvas: &RgbImage) -> Result<Vec<RawDetection>> {
        let (h, w) = self.manifest.input_hw();
        if canvas.dimensions() != (w as u32, h as u32) {
            return Err(Error::Other(format!(
                "fitted image is {}x{}, the model wants {w}x{h}",
                canvas.width(),
                canvas.height()
            )));
        }
        self.pre.run_fitted(canvas);
        self.infer_and_decode()?;
        Ok(std::mem::take(&mut self.scratch))
    }

    fn infer_and_decode(&mut self) -> Result<()> {
        let t0 = Instant::now();
        let outputs = self
            .engine
            .run_slice(&self.manifest.input.shape, self.pre.tensor())?;
        let t1 = Instant::now();
        self.scratch.clear();
        self.decoder
            .decode(&outputs, self.conf, &mut self.scratch)
            .map_err(|e| Error::model(&self.manifest.model_path, format!("decode: {e}")))?;
        self.scratch
            .retain(|d| d.bbox.is_finite() && d.class_id < self.labels.len());
        let max_det = self.manifest.thresholds.max_detections;
        if self.decoder.builtin_nms() {
            self.scratch.sort_by(|a, b| b.score.total_cmp(&a.score));
            self.scratch.truncate(max_det);
        } else {
            nms::nms(&mut self.scratch, self.iou, max_det);
        }
        self.timings.inference_ms = ms(t1 - t0);
        self.timings.postprocess_ms = ms(t1.elapsed());
        Ok(())
    }

    fn label(&self, raw: &RawDetection, t: &Transform) -> Detection {
        Detection {
            label: self.labels[raw.class_id].clone(),
            class_id: raw.class_id,
            score: raw.score,
            bbox: t.to_source(raw.bbox),
        }
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Detector for ModelDetector {
    fn detect(&mut self, img: &RgbImage) -> Result<Vec<Detection>> {
        if img.width() == 0 || img.height() == 0 {
            return Err(Error::Other("empty image".into()));
        }
        let t0 = Instant::now();
        let t = self.pre.run(img);
        self.timings.preprocess_ms = ms(t0.elapsed());
        self.infer_and_decode()?;
        let t1 = Instant::now();
        let out = self
            .scratch
            .iter()
            .map(|r| self.label(r, &t))
            .filter(|d| d.bbox.area() > 0.0)
            .collect();
        self.timings.postprocess_ms += ms(t1.elapsed());
        Ok(out)
    }
    fn name(&self) -> &str {
        &self.manifest.model.name
    }
    fn labels(&self) -> &[Arc<str>] {
        &self.labels
    }
    fn last_timings(&self) -> Timings {
        self.timings
    }
}
