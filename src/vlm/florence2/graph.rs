//! One ONNX graph of the Florence-2 layout, loaded by tract with every input's shape pinned:
//! batch 1, and named symbols for the lengths that change between calls (tract's analysis of these
//! exports needs them; the dim_params alone leave some `Reshape`/`Slice` shapes unresolved).
//! Loading and running go through [`Session`], as SmolVLM's graphs do; this adds inputs given by
//! name and element types taken from the file.

use std::path::Path;

use tract_onnx::prelude::*;

use crate::engine::session::{self, ElemType, InputSpec, Session, SessionOptions};
use crate::vlm::onnx::load_graph_with;
use crate::vlm::VlmError;

pub use crate::engine::session::Dim;
pub use tract_onnx::prelude::TValue;

#[derive(Debug)]
pub struct Graph {
    stage: &'static str,
    session: Session,
}

impl Graph {
    /// Loads `path`; `shape_of(input name)` gives each input's dims (None: an input lookout does
    /// not know, which is an error naming it).
    pub fn load(
        stage: &'static str,
        path: &Path,
        threads: usize,
        shape_of: &dyn Fn(&str) -> Option<Vec<Dim>>,
    ) -> Result<Graph, VlmError> {
        let specs = |proto: &tract_onnx::pb::ModelProto| {
            session::declared_inputs(proto)
                .into_iter()
                .map(|(name, elem)| {
                    let dims = shape_of(&name).ok_or_else(|| VlmError::Load {
                        path: path.to_path_buf(),
                        reason: format!("unexpected input `{name}` for a Florence-2 {stage} graph"),
                    })?;
                    Ok(InputSpec::new(name, elem.unwrap_or(ElemType::F32), dims))
                })
                .collect()
        };
        let session = load_graph_with(path, &SessionOptions { threads }, &specs)?;
        Ok(Graph { stage, session })
    }

    pub fn path(&self) -> &Path {
        self.session.path()
    }
    pub fn input_names(&self) -> &[String] {
        self.session.input_names()
    }
    pub fn output_index(&self, name: &str) -> Option<usize> {
        self.session.output_index(name)
    }

    /// Runs with inputs given by name (any order); outputs in the file's order.
    pub fn run(&self, mut named: Vec<(&str, TValue)>) -> Result<TVec<TValue>, VlmError> {
        let mut ordered = TVec::with_capacity(self.input_names().len());
        for want in self.input_names() {
            let i = named
                .iter()
                .position(|(n, _)| n == want)
                .ok_or_else(|| VlmError::Run {
                    stage: self.stage,
                    reason: format!("{}: no value for input `{want}`", self.path().display()),
                })?;
            ordered.push(named.swap_remove(i).1);
        }
        self.session.run_tract(ordered).map_err(|e| VlmError::Run {
            stage: self.stage,
            reason: e.to_string(),
        })
    }
}

/// An f32 tensor from a shape and data.
pub fn f32_tensor(shape: &[usize], data: Vec<f32>) -> Result<Tensor, VlmError> {
    tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), data)
        .map(|a| a.into_tensor())
        .map_err(|e| VlmError::Input(format!("buffer does not fit shape {shape:?}: {e}")))
}

/// An i64 tensor (ids, masks) of the dtype the graph declares; the onnx-community files use i64.
pub fn i64_tensor(shape: &[usize], data: Vec<i64>) -> Result<Tensor, VlmError> {
    tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), data)
        .map(|a| a.into_tensor())
        .map_err(|e| VlmError::Input(format!("buffer does not fit shape {shape:?}: {e}")))
}

/// The f32 data of an output.
pub fn f32_view<'a>(stage: &'static str, t: &'a TValue) -> Result<&'a [f32], VlmError> {
    t.try_as_plain_ram()
        .ok()
        .and_then(|p| p.as_slice::<f32>().ok())
        .ok_or_else(|| VlmError::Run {
            stage,
            reason: format!("output is {:?}, expected f32", t.datum_type()),
        })
}
