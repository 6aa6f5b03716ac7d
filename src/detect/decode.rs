//! The decoder seam: one implementation per model family turns raw outputs into candidate boxes in
//! input-tensor pixels. Thresholding happens here (cheaply, before any box maths); NMS and the
//! mapping back to source pixels happen in [`super::ModelDetector`].

use super::manifest::{Family, Manifest};
use super::RawDetection;
use crate::engine::{Outputs, TensorInfo};

pub trait Decoder: Send + Sync {
    /// Check the model's real output shapes against what this family and the manifest expect.
    fn check(&self, outputs: &[TensorInfo], num_labels: usize) -> Result<(), String>;
    /// Append candidates with score ≥ `conf` to `out`.
    fn decode(
        &self,
        outputs: &Outputs,
        conf: f32,
        out: &mut Vec<RawDetection>,
    ) -> Result<(), String>;
    /// True when the graph already ran NMS (the detector then only thresholds and caps).
    fn builtin_nms(&self) -> bool {
        false
    }
}

/// Geometry every decoder needs.
#[derive(Debug, Clone, Copy)]
pub struct InputGeom {
    pub width: usize,
    pub height: usize,
}

pub fn build(m: &Manifest) -> Result<Box<dyn Decoder>, String> {
    let (h, w) = m.input_hw();
    let geom = InputGeom {
        width: w,
        height: h,
    };
    Ok(match m.model.family {
        Family::Yolox => Box::new(super::yolox::Yolox::new(m, geom)),
        Family::Fastestdet => Box::new(super::fastestdet::FastestDet::new(geom)),
        Family::Nanodet => Box::new(super::nanodet::NanoDet::new(m, geom)?),
        Family::Centernet => Box::new(super::centernet::CenterNet::new(m, geom)),
        Family::Yolov8 => Box::new(super::yolov8::Yolov8::new(geom)),
        Family::Ssd => Box::new(super::ssd::Ssd::new(m, geom)),
    })
}

/// Index and value of the largest element.
#[inline]
pub fn argmax(v: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &x) in v.iter().enumerate() {
        if x > best.1 {
            best = (i, x);
        }
    }
    best
}

#[inline]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Fetch output `i` or say which one is missing.
pub fn output<'a>(o: &'a Outputs, i: usize) -> Result<crate::engine::OutView<'a>, String> {
    o.get(i)
        .ok_or_else(|| format!("model produced {} outputs, output #{i} is missing", o.len()))
}

pub fn expect_shape(what: &str, got: &[usize], want: &[usize]) -> Result<(), String> {
    if got.is_empty() || got == want {
        Ok(())
    } else {
        Err(format!("{what} has shape {got:?}, expected {want:?}"))
    }
}
