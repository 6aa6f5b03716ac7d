//! One ONNX graph of the Florence-2 layout, loaded with every input's shape pinned: batch 1, and
//! named symbols for the lengths that change between calls (tract's analysis of these exports
//! needs them; the dim_params alone leave some `Reshape`/`Slice` shapes unresolved). Loading and
//! running go through [`Session`], as SmolVLM's graphs do; this adds inputs given by name and
//! element types taken from the file.

use std::path::Path;

use crate::engine::session::{ElemType, InputSpec, Session, SessionOptions, ShapeError, Value};
use crate::vlm::contract::VlmError;
use crate::vlm::onnx::load_graph_with;

pub use crate::engine::session::Dim;

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
        let specs = |inputs: &[crate::engine::onnx::DeclaredInput]| {
            inputs
                .iter()
                .map(|i| {
                    let dims = shape_of(&i.name).ok_or_else(|| VlmError::Load {
                        path: path.to_path_buf(),
                        reason: format!(
                            "unexpected input `{}` for a Florence-2 {stage} graph",
                            i.name
                        ),
                    })?;
                    Ok(InputSpec::new(
                        i.name.clone(),
                        i.elem.unwrap_or(ElemType::F32),
                        dims,
                    ))
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
    pub fn run(&self, mut named: Vec<(&str, Value)>) -> Result<Vec<Value>, VlmError> {
        let mut ordered = Vec::with_capacity(self.input_names().len());
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
        self.session.run(ordered).map_err(|e| VlmError::Run {
            stage: self.stage,
            reason: e.to_string(),
        })
    }
}

fn input_err(e: ShapeError) -> VlmError {
    VlmError::Input(format!(
        "buffer does not fit shape {:?}: {} values for {}",
        e.shape, e.got, e.needed
    ))
}

/// An f32 tensor from a shape and data.
pub fn f32_tensor(shape: &[usize], data: Vec<f32>) -> Result<Value, VlmError> {
    Value::f32(shape, data).map_err(input_err)
}

/// An i64 tensor (ids, masks) of the dtype the graph declares; the onnx-community files use i64.
pub fn i64_tensor(shape: &[usize], data: Vec<i64>) -> Result<Value, VlmError> {
    Value::i64(shape, data).map_err(input_err)
}

/// The f32 data of an output.
pub fn f32_view<'a>(stage: &'static str, t: &'a Value) -> Result<&'a [f32], VlmError> {
    t.as_f32().ok_or_else(|| VlmError::Run {
        stage,
        reason: format!("output is {}, expected f32", t.elem_name()),
    })
}
