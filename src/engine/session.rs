//! Graphs with several named inputs of mixed types and symbolic sizes (language-model decoders,
//! vision encoders), run by tract. Values stay tract tensors between calls so a KV cache goes from one
//! step's outputs to the next step's inputs without copies; callers see only shapes and slices.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use crate::error::{Error, Result};

/// Element type of a graph input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElemType {
    F32,
    I64,
    Bool,
}

impl ElemType {
    fn datum(self) -> DatumType {
        match self {
            ElemType::F32 => f32::datum_type(),
            ElemType::I64 => i64::datum_type(),
            ElemType::Bool => bool::datum_type(),
        }
    }
}

/// One dimension of an input fact: a number, a symbol, or the sum of two symbols (`past + sequence`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(usize),
    Sym(&'static str),
    Sum(&'static str, &'static str),
}

/// What the caller promises to feed to one named input.
#[derive(Debug, Clone)]
pub struct InputSpec {
    pub name: String,
    pub dtype: ElemType,
    pub shape: Vec<Dim>,
}

impl InputSpec {
    pub fn new(name: impl Into<String>, dtype: ElemType, shape: Vec<Dim>) -> InputSpec {
        InputSpec {
            name: name.into(),
            dtype,
            shape,
        }
    }
}

/// A tensor handed to or returned by a [`Session`].
#[derive(Debug, Clone)]
pub struct Value(TValue);

impl Value {
    pub fn f32(shape: &[usize], data: Vec<f32>) -> Result<Value> {
        Self::from_vec(shape, data)
    }
    pub fn i64(shape: &[usize], data: Vec<i64>) -> Result<Value> {
        Self::from_vec(shape, data)
    }
    pub fn bool(shape: &[usize], data: Vec<bool>) -> Result<Value> {
        Self::from_vec(shape, data)
    }
    /// An f32 tensor of zeros (any dimension may be 0: an empty KV cache).
    pub fn zeros_f32(shape: &[usize]) -> Result<Value> {
        Tensor::zero::<f32>(shape)
            .map(|t| Value(t.into()))
            .map_err(|e| Error::Other(format!("zeros {shape:?}: {e}")))
    }
    fn from_vec<T: Datum>(shape: &[usize], data: Vec<T>) -> Result<Value> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::Other(format!(
                "tensor of shape {shape:?} needs {n} values, got {}",
                data.len()
            )));
        }
        tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), data)
            .map(|a| Value(a.into_tensor().into()))
            .map_err(|e| Error::Other(format!("tensor of shape {shape:?}: {e}")))
    }
    pub fn shape(&self) -> &[usize] {
        self.0.shape()
    }
    /// The values when this is an f32 tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        self.0.try_as_plain_ram().ok()?.as_slice::<f32>().ok()
    }
}

/// How a session runs.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Threads for tract's matrix kernels (1 = the calling thread only).
    pub threads: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions { threads: 1 }
    }
}

/// A loaded, optimised graph with named inputs and outputs.
pub struct Session {
    path: PathBuf,
    plan: Arc<TypedRunnableModel>,
    input_names: Vec<String>,
    output_names: Vec<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("path", &self.path)
            .field("inputs", &self.input_names)
            .field("outputs", &self.output_names)
            .finish()
    }
}

/// Reads an ONNX file into its protobuf, with errors that say what is wrong with the file.
pub fn read_proto(path: &Path) -> Result<ModelProto> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() == 0 {
        return Err(Error::model(path, "file is empty"));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    tract_onnx::onnx()
        .proto_model_for_read(&mut std::io::Cursor::new(bytes))
        .map_err(|e| {
            Error::model(
                path,
                format!("not a valid ONNX file (truncated or corrupt?): {e}"),
            )
        })
}

/// The first operator outside the standard ONNX domains, if any: such graphs (the `_q4`, `_bnb4`
/// exports use com.microsoft MatMulNBits / GatherBlockQuantized) only run on onnxruntime.
pub fn foreign_op(proto: &ModelProto) -> Option<(String, String, String)> {
    foreign_op_in(proto.graph.as_ref()?)
}

/// Searches subgraphs (`If`/`Loop` bodies) too: a merged decoder hides its operators there.
fn foreign_op_in(graph: &tract_onnx::pb::GraphProto) -> Option<(String, String, String)> {
    for n in &graph.node {
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            return Some((n.domain.clone(), n.op_type.clone(), n.name.clone()));
        }
        for attr in &n.attribute {
            if let Some(found) = attr
                .g
                .iter()
                .chain(attr.graphs.iter())
                .find_map(foreign_op_in)
            {
                return Some(found);
            }
        }
    }
    None
}

/// The graph's real inputs (initializers excluded) and their element types, where the file
/// declares one lookout knows.
pub fn declared_inputs(proto: &ModelProto) -> Vec<(String, Option<ElemType>)> {
    let Some(g) = proto.graph.as_ref() else {
        return Vec::new();
    };
    let inits: std::collections::HashSet<&str> =
        g.initializer.iter().map(|t| t.name.as_str()).collect();
    g.input
        .iter()
        .filter(|i| !inits.contains(i.name.as_str()))
        .map(|i| {
            use tract_onnx::pb::type_proto::Value as T;
            let elem = match i.r#type.as_ref().and_then(|t| t.value.as_ref()) {
                Some(T::TensorType(t)) => match t.elem_type {
                    1 => Some(ElemType::F32),
                    7 => Some(ElemType::I64),
                    9 => Some(ElemType::Bool),
                    _ => None,
                },
                _ => None,
            };
            (i.name.clone(), elem)
        })
        .collect()
}

/// Merges `NonZero` nodes that read the same tensor into one. tract gives each `NonZero` output
/// its own size symbol, so two selections by the same mask (an exporter indexing two tensors with
/// one boolean mask emits one `NonZero` per tensor) get sizes tract cannot prove equal, and
/// analysis fails at the first reshape that mixes them. Identical nodes on identical inputs have
/// identical outputs, so sharing one is exact. Returns how many nodes were removed.
pub fn merge_duplicate_nonzero(proto: &mut ModelProto) -> usize {
    let Some(graph) = proto.graph.as_mut() else {
        return 0;
    };
    let mut first: HashMap<Vec<String>, String> = HashMap::new();
    let mut rename: HashMap<String, String> = HashMap::new();
    let mut keep = Vec::with_capacity(graph.node.len());
    for node in graph.node.drain(..) {
        if node.op_type == "NonZero" && node.output.len() == 1 {
            if let Some(out) = first.get(&node.input) {
                rename.insert(node.output[0].clone(), out.clone());
                continue;
            }
            first.insert(node.input.clone(), node.output[0].clone());
        }
        keep.push(node);
    }
    graph.node = keep;
    for node in graph.node.iter_mut() {
        for i in node.input.iter_mut() {
            if let Some(to) = rename.get(i) {
                *i = to.clone();
            }
        }
    }
    rename.len()
}

fn dim(symbols: &SymbolScope, d: &Dim) -> TDim {
    match d {
        Dim::Fixed(n) => TDim::from(*n as i64),
        Dim::Sym(s) => TDim::from(symbols.sym(s)),
        Dim::Sum(a, b) => TDim::from(symbols.sym(a)) + TDim::from(symbols.sym(b)),
    }
}

impl Session {
    /// Loads `path` with the input facts in `specs` (every graph input must have one). Errors name the
    /// file: missing, truncated, a non-standard operator, an input the caller does not know, a graph
    /// tract cannot analyse.
    pub fn load(path: &Path, specs: &[InputSpec], opts: &SessionOptions) -> Result<Session> {
        let proto = read_proto(path)?;
        if let Some((domain, op, node)) = foreign_op(&proto) {
            return Err(Error::model(
                path,
                format!(
                    "uses the operator {domain}.{op} (node '{node}'), which only onnxruntime has; \
                     tract runs standard ONNX operators only (use the fp32, _int8, _uint8 or _quantized files)"
                ),
            ));
        }
        Self::from_proto(path, proto, specs, opts)
    }

    /// Like [`Session::load`] on an already-read protobuf. Takes it by value and drops it once
    /// tract holds the weights, so a large graph is not resident twice during optimisation.
    pub fn from_proto(
        path: &Path,
        proto: ModelProto,
        specs: &[InputSpec],
        opts: &SessionOptions,
    ) -> Result<Session> {
        // Ignore the file's value_info: onnxruntime's quantize_dynamic writes shape-inference results
        // for every intermediate tensor, with the exporter's dimension names ("batch_size",
        // "total_sequence_length", …). tract would make those separate symbols, unrelated to the
        // ones in the input facts below, and analysis of the int8 decoders fails at the first `Cast`
        // of `attention_mask`. The facts set here determine every shape anyway.
        let onnx = tract_onnx::onnx().with_ignore_value_info(true);
        let mut model = onnx
            .model_for_proto_model(&proto)
            .map_err(|e| Error::model(path, format!("cannot load: {}", chain(&e))))?;
        let output_names: Vec<String> = proto
            .graph
            .as_ref()
            .map(|g| g.output.iter().map(|o| o.name.clone()).collect())
            .unwrap_or_default();
        let graph_inputs: Vec<String> = declared_inputs(&proto)
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        drop(proto);
        let by_name: HashMap<&str, &InputSpec> =
            specs.iter().map(|s| (s.name.as_str(), s)).collect();
        for (ix, name) in graph_inputs.iter().enumerate() {
            let spec = by_name.get(name.as_str()).ok_or_else(|| {
                Error::model(
                    path,
                    format!(
                        "unexpected graph input '{name}' (this loader knows {:?})",
                        {
                            let mut k: Vec<&str> = by_name.keys().copied().collect();
                            k.sort();
                            k
                        }
                    ),
                )
            })?;
            let shape: TVec<TDim> = spec.shape.iter().map(|d| dim(&model.symbols, d)).collect();
            let fact = InferenceFact::dt_shape(spec.dtype.datum(), shape);
            model = model.with_input_fact(ix, fact).map_err(|e| {
                Error::model(
                    path,
                    format!("cannot set the fact of input '{name}': {}", chain(&e)),
                )
            })?;
        }
        for s in specs {
            if !graph_inputs.contains(&s.name) {
                return Err(Error::model(
                    path,
                    format!(
                        "has no input named '{}' (its inputs: {graph_inputs:?})",
                        s.name
                    ),
                ));
            }
        }
        let typed = model
            .into_typed()
            .map_err(|e| Error::model(path, format!("cannot analyse: {}", chain(&e))))?;
        let typed = typed
            .into_decluttered()
            .and_then(|m| m.into_optimized())
            .map_err(|e| Error::model(path, format!("cannot optimise: {}", chain(&e))))?;
        let executor = if opts.threads > 1 {
            tract_linalg::multithread::Executor::multithread(opts.threads)
        } else {
            tract_linalg::multithread::Executor::SingleThread
        };
        let run_opts = RunOptions {
            executor: Some(executor),
            ..Default::default()
        };
        let plan = typed
            .into_runnable_with_options(&run_opts)
            .map_err(|e| Error::model(path, format!("cannot plan: {}", chain(&e))))?;
        Ok(Session {
            path: path.to_path_buf(),
            plan,
            input_names: graph_inputs,
            output_names,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Graph inputs, in the order [`Session::run`] takes them.
    pub fn input_names(&self) -> &[String] {
        &self.input_names
    }
    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }
    pub fn output_index(&self, name: &str) -> Option<usize> {
        self.output_names.iter().position(|n| n == name)
    }

    /// Runs with inputs in [`Session::input_names`] order.
    pub fn run(&self, inputs: Vec<Value>) -> Result<Vec<Value>> {
        let out = self.run_tract(inputs.into_iter().map(|v| v.0).collect())?;
        Ok(out.into_iter().map(Value).collect())
    }

    /// [`Session::run`] on tract's own values, for callers that keep tract tensors between calls.
    pub(crate) fn run_tract(&self, inputs: TVec<TValue>) -> Result<TVec<TValue>> {
        if inputs.len() != self.input_names.len() {
            return Err(Error::model(
                &self.path,
                format!(
                    "needs {} inputs, got {}",
                    self.input_names.len(),
                    inputs.len()
                ),
            ));
        }
        self.plan
            .run(inputs)
            .map_err(|e| Error::model(&self.path, format!("inference failed: {}", chain(&e))))
    }
}

fn chain(e: &TractError) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}
