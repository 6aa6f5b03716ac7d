//! The tiny random-weight vision encoders of SmolVLM (SigLIP) and Florence-2 (DaViT), the real
//! graphs at a small width (tests/fixtures/vlm), as lookout's VLM sessions load them: for tests
//! that plan them with and without one of lookout's passes.

use lookout::engine::onnx::{ElemType, OnnxFile};
use lookout::engine::session::{Dim, InputSpec, Session, SessionOptions, Value};

/// SmolVLM's inputs for one 512x512 image: (name, f32 or bool, shape).
pub const SMOLVLM: &[(&str, ElemType, &[usize])] = &[
    ("pixel_values", ElemType::F32, &[1, 1, 3, 512, 512]),
    ("pixel_attention_mask", ElemType::Bool, &[1, 1, 512, 512]),
];

/// Florence-2's input for one 768x768 image.
pub const FLORENCE2: &[(&str, ElemType, &[usize])] =
    &[("pixel_values", ElemType::F32, &[1, 3, 768, 768])];

/// A tiny vision encoder as a lookout session, its inputs fixed to one image as the VLM loaders
/// fix them: (name, f32 or bool, shape).
pub fn vision_session(model: &str, inputs: &[(&str, ElemType, &[usize])]) -> Session {
    let path = super::fixture(&format!("vlm/{model}/onnx/vision_encoder.onnx"));
    let mut file = OnnxFile::read(&path).expect("read");
    file.merge_duplicate_nonzero();
    let specs: Vec<InputSpec> = inputs
        .iter()
        .map(|(name, elem, shape)| {
            InputSpec::new(*name, *elem, shape.iter().map(|&d| Dim::Fixed(d)).collect())
        })
        .collect();
    Session::from_file(file, &specs, &SessionOptions { threads: 1 }).expect("load")
}

/// Deterministic pixels in [-1, 1] for an f32 input, all true for a bool one.
pub fn values(inputs: &[(&str, ElemType, &[usize])]) -> Vec<Value> {
    inputs
        .iter()
        .map(|(_, elem, shape)| {
            let n: usize = shape.iter().product();
            match elem {
                ElemType::F32 => Value::f32(
                    shape,
                    (0..n).map(|i| ((i % 251) as f32 - 125.0) / 125.0).collect(),
                ),
                _ => Value::bool(shape, vec![true; n]),
            }
            .expect("input")
        })
        .collect()
}
