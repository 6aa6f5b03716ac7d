//! Graphs with several named inputs of mixed types and symbolic sizes (language-model decoders,
//! vision encoders), run by tract. Values stay tract tensors between calls so a KV cache goes from one
//! step's outputs to the next step's inputs without copies; callers see only shapes and slices.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

pub use super::onnx::ElemType;
use super::onnx::OnnxFile;
use crate::error::{Error, Result};

/// Set to `1` to plan sessions without telling tract their symbols' lower bounds ([`Dim`]).
pub const NO_LENGTH_ASSERTIONS_ENV: &str = "LOOKOUT_NO_LENGTH_ASSERTIONS";

/// One dimension of an input fact: a number, a symbol, or the sum of two symbols (`past + sequence`).
/// A symbol is a length of at least 1 (a sequence, an image side, a count of boxes), except the
/// first of a sum wherever it appears: a past, empty at a generation's first step. The session
/// tells tract so (`assert_lengths`; [`NO_LENGTH_ASSERTIONS_ENV`] for A/B runs).
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

/// A buffer whose length does not fit the shape it was given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tensor of shape {shape:?} needs {needed} values, got {got}")]
pub struct ShapeError {
    pub shape: Vec<usize>,
    pub needed: usize,
    pub got: usize,
}

/// A tensor handed to or returned by a [`Session`]. Cloning shares the data (tract's values are
/// reference-counted), so a KV cache or an encoder output can be fed to many calls.
#[derive(Debug, Clone)]
pub struct Value(TValue);

impl Value {
    pub fn f32(shape: &[usize], data: Vec<f32>) -> Result<Value, ShapeError> {
        Self::from_vec(shape, data)
    }
    pub fn i64(shape: &[usize], data: Vec<i64>) -> Result<Value, ShapeError> {
        Self::from_vec(shape, data)
    }
    pub fn bool(shape: &[usize], data: Vec<bool>) -> Result<Value, ShapeError> {
        Self::from_vec(shape, data)
    }
    /// An f32 tensor of zeros (any dimension may be 0: an empty KV cache).
    pub fn zeros_f32(shape: &[usize]) -> Result<Value, ShapeError> {
        Self::from_vec(shape, vec![0f32; shape.iter().product()])
    }
    fn from_vec<T: Datum>(shape: &[usize], data: Vec<T>) -> Result<Value, ShapeError> {
        let needed: usize = shape.iter().product();
        let err = |got| ShapeError {
            shape: shape.to_vec(),
            needed,
            got,
        };
        if needed != data.len() {
            return Err(err(data.len()));
        }
        let got = data.len();
        tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), data)
            .map(|a| Value(a.into_tensor().into()))
            .map_err(|_| err(got))
    }
    pub fn shape(&self) -> &[usize] {
        self.0.shape()
    }
    /// The values when this is an f32 tensor.
    pub fn as_f32(&self) -> Option<&[f32]> {
        self.0.try_as_plain_ram().ok()?.as_slice::<f32>().ok()
    }
    /// The element type's name (`F32`, `I64`, …), for error messages.
    pub fn elem_name(&self) -> String {
        format!("{:?}", self.0.datum_type())
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
    /// The plan's thread pool (`threads > 1`), each run starts on it ([`super::on_pool`]).
    pool: Option<Arc<rayon::ThreadPool>>,
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

/// Tells tract that every symbol of `specs` is at least 1, but the first of a [`Dim::Sum`] (a
/// past, empty at a generation's first step). Without it tract cannot prove that a length like
/// `1536·S` is more than a handful, and leaves every element-wise op whose shape holds a symbol
/// on its generic broadcasting loop instead of its unicast or by-scalar kernels
/// (`find_most_efficient_config` in tract-core's `ops/binary.rs`).
/// `LOOKOUT_NO_LENGTH_ASSERTIONS=1` (or `LOOKOUT_PLAIN_TRACT=1`) leaves the symbols unbounded, as
/// tract has them: the A/B of this alone ([`at_least_one`]).
fn assert_lengths(symbols: &SymbolScope, specs: &[InputSpec]) -> TractResult<()> {
    let dims = || specs.iter().flat_map(|s| s.shape.iter());
    let pasts: Vec<&str> = dims()
        .filter_map(|d| match d {
            Dim::Sum(past, _) => Some(*past),
            _ => None,
        })
        .collect();
    let mut done: Vec<&str> = vec![];
    for d in dims() {
        let names = match d {
            Dim::Fixed(_) => vec![],
            Dim::Sym(s) => vec![*s],
            Dim::Sum(a, b) => vec![*a, *b],
        };
        for s in names {
            if !pasts.contains(&s) && !done.contains(&s) {
                at_least_one(symbols, s)?;
                done.push(s);
            }
        }
    }
    Ok(())
}

/// Declares the symbol `name` of `symbols` at least 1 (made if new), unless
/// [`NO_LENGTH_ASSERTIONS_ENV`] or [`super::PLAIN_TRACT_ENV`] asks for tract's unbounded symbols.
/// Also for the sub-plans of lookout's ops (`qmatmul::fresh_symbols`).
pub(super) fn at_least_one(symbols: &SymbolScope, name: &str) -> TractResult<Symbol> {
    let sym = symbols.sym(name);
    if !(super::pass::env_off(NO_LENGTH_ASSERTIONS_ENV) || super::plain_tract()) {
        symbols.add_assertion(format!("{name}>=1"))?;
    }
    Ok(sym)
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
        let file = OnnxFile::read(path)?;
        if let Some(f) = file.foreign_op() {
            return Err(Error::model(
                path,
                format!(
                    "uses the operator {}.{} (node '{}'), which only onnxruntime has; \
                     tract runs standard ONNX operators only (use the fp32, _int8, _uint8 or _quantized files)",
                    f.domain, f.op, f.node
                ),
            ));
        }
        Self::from_file(file, specs, opts)
    }

    /// Like [`Session::load`] on an already-read file. Takes it by value and drops it once tract
    /// holds the weights, so a large graph is not resident twice during optimisation.
    pub fn from_file(
        file: OnnxFile,
        specs: &[InputSpec],
        opts: &SessionOptions,
    ) -> Result<Session> {
        let path = file.path().to_path_buf();
        let path = path.as_path();
        // Ignore the file's value_info: onnxruntime's quantize_dynamic writes shape-inference results
        // for every intermediate tensor, with the exporter's dimension names ("batch_size",
        // "total_sequence_length", …). tract would make those separate symbols, unrelated to the
        // ones in the input facts below, and analysis of the int8 decoders fails at the first `Cast`
        // of `attention_mask`. The facts set here determine every shape anyway.
        let onnx = tract_onnx::onnx().with_ignore_value_info(true);
        let mut model = onnx
            .model_for_proto_model(&file.proto)
            .map_err(|e| Error::model(path, format!("cannot load: {}", chain(&e))))?;
        let output_names = file.output_names();
        let graph_inputs: Vec<String> =
            file.declared_inputs().into_iter().map(|i| i.name).collect();
        drop(file);
        let by_name: HashMap<&str, &InputSpec> =
            specs.iter().map(|s| (s.name.as_str(), s)).collect();
        assert_lengths(&model.symbols, specs)
            .map_err(|e| Error::model(path, format!("cannot declare lengths: {}", chain(&e))))?;
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
        let typed = super::optimize_for_run(typed, path)?;
        let options = super::run_options(opts.threads);
        let pool = super::run_pool(&options);
        let plan = typed
            .into_runnable_with_options(&options)
            .map_err(|e| Error::model(path, format!("cannot plan: {}", chain(&e))))?;
        Ok(Session {
            path: path.to_path_buf(),
            plan,
            pool,
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
        let inputs = inputs.into_iter().map(|v| v.0).collect();
        // On the plan's pool, as `Engine::run_tensor` does and for the same reason.
        let out = super::on_pool(self.pool.as_deref(), || self.plan.run(inputs))
            .map_err(|e| Error::model(&self.path, format!("inference failed: {}", chain(&e))))?;
        Ok(out.into_iter().map(Value).collect())
    }

    /// Time per operator kind over `runs` runs on `inputs`, slowest first (see
    /// [`super::Engine::profile`]): where a VLM graph's time goes.
    pub fn profile(&self, inputs: Vec<Value>, runs: usize) -> Result<Vec<super::OpProfile>> {
        super::profile_plan(
            &self.plan,
            self.pool.as_deref(),
            inputs.into_iter().map(|v| v.0).collect(),
            runs,
        )
        .map_err(|e| Error::model(&self.path, format!("profile: {}", chain(&e))))
    }
}

fn chain(e: &TractError) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}
