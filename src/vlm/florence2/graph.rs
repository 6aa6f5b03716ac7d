//! One ONNX graph of the Florence-2 layout, loaded by tract with every input's shape pinned:
//! batch 1, and named symbols for the lengths that change between calls (tract's analysis of these
//! exports needs them; the dim_params alone leave some `Reshape`/`Slice` shapes unresolved).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use crate::vlm::VlmError;

pub use tract_onnx::prelude::TValue;

/// One dimension of an input fact.
#[derive(Debug, Clone, Copy)]
pub enum Dim {
    Fixed(usize),
    /// A length that varies between calls; inputs naming the same symbol share it.
    Sym(&'static str),
}

pub struct Graph {
    stage: &'static str,
    path: PathBuf,
    plan: Arc<TypedRunnableModel>,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("path", &self.path)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish()
    }
}

fn chain(e: &TractError) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

fn load_err(path: &Path, reason: impl Into<String>) -> VlmError {
    VlmError::Load {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// The first onnxruntime-only operator in the graph (or its subgraphs), as (op, node name).
fn microsoft_op(graph: &tract_onnx::pb::GraphProto) -> Option<(String, String)> {
    for node in &graph.node {
        if node.domain == "com.microsoft" {
            return Some((node.op_type.clone(), node.name.clone()));
        }
        for attr in &node.attribute {
            let subs = attr.g.iter().chain(attr.graphs.iter());
            for g in subs {
                if let Some(found) = microsoft_op(g) {
                    return Some(found);
                }
            }
        }
    }
    None
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
        let bytes = std::fs::read(path).map_err(|e| load_err(path, e.to_string()))?;
        if bytes.is_empty() {
            return Err(load_err(path, "file is empty"));
        }
        let onnx = tract_onnx::onnx().with_ignore_value_info(true);
        let proto = onnx
            .proto_model_for_read(&mut std::io::Cursor::new(&bytes))
            .map_err(|e| {
                load_err(
                    path,
                    format!("not a valid ONNX file (truncated or corrupt?): {e}"),
                )
            })?;
        drop(bytes);
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| load_err(path, "ONNX file has no graph (truncated?)"))?;
        if let Some((op, node)) = microsoft_op(graph) {
            return Err(VlmError::Unsupported {
                path: path.to_path_buf(),
                reason: format!(
                    "uses the onnxruntime-only operator com.microsoft.{op} (node '{node}'), which tract \
                     cannot run; the _q4/_q4f16/_bnb4 files need it: use the fp32, _int8, _uint8 or _quantized files"
                ),
            });
        }
        let output_names: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
        let mut model = onnx
            .model_for_proto_model(&proto)
            .map_err(|e| load_err(path, format!("cannot load: {}", chain(&e))))?;

        let outlets = model
            .input_outlets()
            .map_err(|e| load_err(path, chain(&e)))?
            .to_vec();
        let mut inputs = Vec::with_capacity(outlets.len());
        for (i, outlet) in outlets.iter().enumerate() {
            let name = model.node(outlet.node).name.clone();
            let dims = shape_of(&name).ok_or_else(|| {
                load_err(
                    path,
                    format!("unexpected input `{name}` for a Florence-2 {stage} graph"),
                )
            })?;
            let dt = model
                .outlet_fact(*outlet)
                .ok()
                .and_then(|f| f.datum_type.concretize())
                .unwrap_or(f32::datum_type());
            let shape: TVec<TDim> = dims
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => n.to_dim(),
                    Dim::Sym(s) => TDim::from(model.symbols.sym(s)),
                })
                .collect();
            model
                .set_input_fact(i, InferenceFact::dt_shape(dt, shape))
                .map_err(|e| load_err(path, format!("input `{name}`: {}", chain(&e))))?;
            inputs.push(name);
        }
        let typed = model
            .into_optimized()
            .map_err(|e| load_err(path, format!("cannot analyse/optimise: {}", chain(&e))))?;
        let outputs = if output_names.len() == typed.output_outlets().map(|o| o.len()).unwrap_or(0)
        {
            output_names
        } else {
            return Err(load_err(path, "output count changed while loading"));
        };
        let executor = if threads > 1 {
            tract_linalg::multithread::Executor::multithread(threads)
        } else {
            tract_linalg::multithread::Executor::SingleThread
        };
        let run_opts = RunOptions {
            executor: Some(executor),
            ..Default::default()
        };
        let plan = typed
            .into_runnable_with_options(&run_opts)
            .map_err(|e| load_err(path, format!("cannot plan: {}", chain(&e))))?;
        Ok(Graph {
            stage,
            path: path.to_path_buf(),
            plan,
            inputs,
            outputs,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn input_names(&self) -> &[String] {
        &self.inputs
    }
    pub fn output_index(&self, name: &str) -> Option<usize> {
        self.outputs.iter().position(|n| n == name)
    }

    /// Runs with inputs given by name (any order); outputs in the file's order.
    pub fn run(&self, mut named: Vec<(&str, TValue)>) -> Result<TVec<TValue>, VlmError> {
        let mut ordered = TVec::with_capacity(self.inputs.len());
        for want in &self.inputs {
            let i = named
                .iter()
                .position(|(n, _)| n == want)
                .ok_or_else(|| VlmError::Run {
                    stage: self.stage,
                    reason: format!("{}: no value for input `{want}`", self.path.display()),
                })?;
            ordered.push(named.swap_remove(i).1);
        }
        self.plan.run(ordered).map_err(|e| VlmError::Run {
            stage: self.stage,
            reason: format!("{}: {}", self.path.display(), chain(&e)),
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
