//! The decoder contract, and only the contract: what one model family implements to turn raw
//! outputs into candidate boxes in input-tensor pixels, the candidate type, and the helpers the
//! families share. It names no family; the registry in [`super`] does, so the family files import
//! this leaf and nothing imports them back. Thresholding happens in the families (cheaply, before
//! any box maths); NMS and the mapping back to source pixels happen in [`super::ModelDetector`].

use crate::engine::{OutView, Outputs, TensorInfo};
use crate::geometry::BBox;

/// A candidate before labelling and mapping back: input-tensor pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawDetection {
    pub class_id: usize,
    pub score: f32,
    pub bbox: BBox,
}

/// Why a family cannot read a model's outputs. At load time any kind means the manifest and the
/// model disagree; at run time it means the graph produced something its own facts did not say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The output at `index` is absent (the model has `count`).
    #[error("model produced {count} outputs, output #{index} is missing")]
    NoOutput { index: usize, count: usize },
    /// An output the family needs, by role (`boxes`, `scores`, …), is absent.
    #[error("{0} output missing")]
    Missing(&'static str),
    /// An output is there with the wrong shape; `want` is the pattern, e.g. `[1, N, 4]`.
    #[error("{what} has shape {got:?}, expected {want}")]
    Shape {
        what: String,
        got: Vec<usize>,
        want: String,
    },
    /// No output has the shape a role needs (families that match outputs by shape).
    #[error("no output of shape {want} ({role})")]
    Unmatched { want: String, role: String },
}

/// What a decoder appends its candidates to.
pub type Candidates = Vec<RawDetection>;
/// A decoder's result: candidates appended, or why the outputs could not be read.
pub type Decoded = Result<(), DecodeError>;

pub trait Decoder: Send + Sync {
    /// Check the model's real output shapes against what this family and the manifest expect.
    fn check(&self, outputs: &[TensorInfo], num_labels: usize) -> Decoded;
    /// Append candidates with score ≥ `conf` to `out`.
    fn decode(&self, outputs: &Outputs, conf: f32, out: &mut Candidates) -> Decoded;
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
pub fn output(o: &Outputs, i: usize) -> Result<OutView<'_>, DecodeError> {
    o.get(i).ok_or(DecodeError::NoOutput {
        index: i,
        count: o.len(),
    })
}

/// The first declared output, which single-output families read.
pub fn first_output(outputs: &[TensorInfo]) -> Result<&TensorInfo, DecodeError> {
    outputs
        .first()
        .ok_or(DecodeError::NoOutput { index: 0, count: 0 })
}

/// A shape error for output `o`, expected `want` (a pattern such as `[1, K, 6]`).
pub fn wrong_shape(what: impl Into<String>, got: &[usize], want: impl Into<String>) -> DecodeError {
    DecodeError::Shape {
        what: what.into(),
        got: got.to_vec(),
        want: want.into(),
    }
}

/// The first output has rank `rank` and `want` at `axis`, or an unknown shape (tract could not
/// resolve it; the decoder then checks the real outputs at run time). `pattern` is what the
/// error shows as expected, e.g. `[1, K, 6]`.
pub fn expect_first(
    outputs: &[TensorInfo],
    rank: usize,
    axis: usize,
    want: usize,
    pattern: impl Into<String>,
) -> Result<(), DecodeError> {
    let o = first_output(outputs)?;
    if o.shape.is_empty() || (o.shape.len() == rank && o.shape[axis] == want) {
        Ok(())
    } else {
        Err(wrong_shape(
            format!("output '{}'", o.name),
            &o.shape,
            pattern,
        ))
    }
}

/// `got` equals `want`, or is unknown (empty: tract could not resolve it).
pub fn expect_shape(what: &str, got: &[usize], want: &[usize]) -> Result<(), DecodeError> {
    if got.is_empty() || got == want {
        Ok(())
    } else {
        Err(wrong_shape(what, got, format!("{want:?}")))
    }
}
