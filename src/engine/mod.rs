//! The only module that knows tract. It loads an ONNX file, pins its input shape, optimises it
//! and runs it; everything above speaks in plain shapes and `f32` slices.

pub mod text;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use crate::error::{Error, Result};

mod attention;
mod blockbin;
mod chfirst;
mod convint;
mod downsample;
mod dynquant;
mod fconv;
mod fdirect;
mod fold;
mod gelu;
mod grid;
mod heap;
mod hswish;
mod i8gemm;
mod im2col;
mod maxpool;
pub mod onnx;
mod par;
pub mod pass;
mod pin;
mod precision;
mod qconcat;
mod qconv;
mod qdirect;
mod qdq;
mod qmatmul;
mod quantize;
mod resize;
mod rowmatmul;
mod scratch;
pub mod session;
mod softmax;
mod storeorder;
mod topk;
mod vmath;
mod zeroterm;

/// Deterministic test values shared by the engine's unit tests.
#[cfg(test)]
pub(crate) mod testvals {
    /// A linear congruential generator's states after `seed`.
    pub(crate) fn states(seed: u64) -> impl Iterator<Item = u64> {
        std::iter::successors(Some(seed), |s| {
            Some(
                s.wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407),
            )
        })
        .skip(1)
    }

    /// `n` values in [-1, 1) from the generator seeded with `seed`.
    pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
        states(seed)
            .take(n)
            .map(|s| (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0)
            .collect()
    }

    /// `n` bytes over 0..=255 from the same generator.
    pub(crate) fn bytes(n: usize, seed: u64) -> Vec<u8> {
        states(seed).take(n).map(|s| (s >> 56) as u8).collect()
    }
}
pub use attention::{fuse_attention, FusedAttention, NO_ATTENTION_ENV};
pub use blockbin::{BlockBinary, NO_BLOCKBINARY_ENV};
pub use chfirst::{channels_first, NO_CHANNELS_FIRST_ENV};
pub use convint::{replace_conv_integer, NO_CONVINT_ENV};
pub use downsample::{StridedCopy, StridedCopyPass, NO_STRIDED_COPY_ENV};
pub use dynquant::{FastDynQuantize, FastDynQuantizePass};
pub use fconv::{PanelConv, PanelConvPass, NO_PANELCONV_ENV};
pub use fdirect::F32_KERNEL_ENV;
pub use fold::fold_const_chains;
pub use gelu::{fuse_gelu, Gelu, NO_GELU_ENV};
pub use heap::{keep_freed_memory, DEFAULT_HEAP_ENV};
pub use hswish::{HardSwish, NO_HARDSWISH_ENV};
pub use i8gemm::{own_int8_gemm, own_int8_kernel, I8_KERNEL_ENV};
pub use maxpool::{SeparableMaxPool, SeparableMaxPoolPass};
pub use pin::{pin_single_selections, PinnedNonZero};
pub use precision::{f16_native, Precision, F16_EMULATED_ENV};
pub use qconcat::QConcat;
pub use qconv::QConv;
pub use qdq::QdqConvPass;
pub use qmatmul::{replace_qmatmul, QMatMul, NO_QMATMUL_ENV};
pub use quantize::FastQuantize;
pub use resize::PlannedResize;
pub use rowmatmul::{replace_row_matmul, RowMatMul, NO_ROWMATMUL_ENV};
pub use softmax::{AxisSoftmax, AxisSoftmaxPass};
pub use storeorder::{swap_store_order, NO_STOREORDER_ENV};
pub use topk::SelectTopk;
pub use zeroterm::{drop_zero_terms, NO_ZEROTERM_ENV};

pub use pass::Rewrites;
use pass::{GraphPass, Stage};

/// How a model is loaded and run.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Threads for tract's matrix kernels (1 = the calling thread only).
    pub threads: usize,
    /// Pin the first input to this shape. Checked against what the file declares.
    pub input_shape: Option<Vec<usize>>,
    /// The float arithmetic's precision ([`Precision::F16`] only where the CPU has FP16).
    pub precision: Precision,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            threads: 1,
            input_shape: None,
            precision: Precision::F32,
        }
    }
}

/// Name, element type and shape of a model input or output, as tract sees it after loading.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub dtype: String,
}

/// A loaded, optimised, runnable model.
pub struct Engine {
    path: PathBuf,
    plan: Arc<TypedRunnableModel>,
    /// The plan's thread pool (`threads > 1`): each run starts on one of its threads (see
    /// [`Engine::run_tensor`]).
    pool: Option<Arc<rayon::ThreadPool>>,
    inputs: Vec<TensorInfo>,
    outputs: Vec<TensorInfo>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("path", &self.path)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish()
    }
}

/// Outputs of one run, converted to `f32` where the model emits another type (class ids, counts).
pub struct Outputs {
    tensors: TVec<TValue>,
    names: Vec<String>,
}

/// A borrowed view of one output.
#[derive(Debug, Clone, Copy)]
pub struct OutView<'a> {
    pub shape: &'a [usize],
    pub data: &'a [f32],
}

impl Outputs {
    pub fn len(&self) -> usize {
        self.tensors.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
    pub fn names(&self) -> &[String] {
        &self.names
    }
    pub fn get(&self, i: usize) -> Option<OutView<'_>> {
        let t = self.tensors.get(i)?;
        Some(OutView {
            shape: t.shape(),
            data: t.try_as_plain_ram().ok()?.as_slice::<f32>().ok()?,
        })
    }
    pub fn by_name(&self, name: &str) -> Option<OutView<'_>> {
        let i = self.names.iter().position(|n| n == name)?;
        self.get(i)
    }
    pub fn iter(&self) -> impl Iterator<Item = (&str, OutView<'_>)> {
        (0..self.len()).filter_map(move |i| Some((self.names[i].as_str(), self.get(i)?)))
    }
}

fn dims_to_vec(fact: &InferenceFact) -> Option<Vec<Option<usize>>> {
    if fact.shape.is_open() {
        return None;
    }
    Some(
        fact.shape
            .dims()
            .map(|d| {
                d.concretize()
                    .and_then(|d| d.to_i64().ok())
                    .and_then(|v| usize::try_from(v).ok())
            })
            .collect(),
    )
}

impl Engine {
    /// Load an ONNX file. Errors name the file and say what is wrong with it: missing, truncated,
    /// not ONNX, an operator tract lacks, or an input shape that disagrees with `opts.input_shape`.
    pub fn load(path: &Path, opts: &EngineOptions) -> Result<Engine> {
        precision::check_supported(opts.precision, path)?;
        let file = onnx::OnnxFile::read(path)?;
        let proto = &file.proto;
        let onnx = tract_onnx::onnx().with_ignore_value_info(true);
        for node in proto
            .graph
            .as_ref()
            .map(|g| g.node.as_slice())
            .unwrap_or_default()
        {
            if node.domain == "com.microsoft" {
                return Err(Error::model(
                    path,
                    format!(
                        "uses the onnxruntime-only operator com.microsoft.{} (node '{}'), which tract cannot run; \
                         quantize with standard ops only (QDQ, QLinearConv, ConvInteger)",
                        node.op_type, node.name
                    ),
                ));
            }
        }
        let mut model = onnx
            .model_for_proto_model(proto)
            .map_err(|e| Error::model(path, format!("cannot load: {}", chain(&e))))?;

        let declared = model
            .input_outlets()
            .ok()
            .and_then(|o| o.first().copied())
            .and_then(|outlet| model.outlet_fact(outlet).ok().cloned());
        if let Some(want) = &opts.input_shape {
            if let Some(dims) = declared.as_ref().and_then(dims_to_vec) {
                let agrees = dims.len() == want.len()
                    && dims
                        .iter()
                        .zip(want)
                        .all(|(d, w)| d.is_none_or(|d| d == *w));
                if !agrees {
                    let shown: Vec<String> = dims
                        .iter()
                        .map(|d| d.map_or("?".into(), |d| d.to_string()))
                        .collect();
                    return Err(Error::model(
                        path,
                        format!("input shape mismatch: the manifest says {want:?} but the model declares [{}]", shown.join(", ")),
                    ));
                }
            }
            let dt = declared
                .as_ref()
                .and_then(|f| f.datum_type.concretize())
                .unwrap_or(f32::datum_type());
            if dt != f32::datum_type() {
                return Err(Error::model(
                    path,
                    format!("input type is {dt:?}; lookout feeds f32 images"),
                ));
            }
            model = model
                .with_input_fact(0, f32::fact(want).into())
                .map_err(|e| {
                    Error::model(
                        path,
                        format!("cannot set input shape {want:?}: {}", chain(&e)),
                    )
                })?;
        }
        let (typed, rewrites) = optimize_at(model, opts.precision)
            .map_err(|e| Error::model(path, format!("cannot analyse/optimise: {}", chain(&e))))?;
        if !rewrites.is_empty() {
            log::debug!("{}: {rewrites}", path.display());
        }

        let info = |outlets: &[OutletId]| -> Vec<TensorInfo> {
            outlets
                .iter()
                .map(|o| {
                    let fact = typed.outlet_fact(*o).ok();
                    TensorInfo {
                        name: typed.node(o.node).name.clone(),
                        shape: fact
                            .and_then(|f| f.shape.as_concrete().map(|s| s.to_vec()))
                            .unwrap_or_default(),
                        dtype: fact
                            .map(|f| format!("{:?}", f.datum_type))
                            .unwrap_or_default(),
                    }
                })
                .collect()
        };
        let inputs = info(typed.input_outlets().unwrap_or(&[]));
        let mut outputs = info(typed.output_outlets().unwrap_or(&[]));
        // Output node names after optimisation can be internal; prefer the ONNX graph's names.
        let file_outputs = file.output_names();
        if file_outputs.len() == outputs.len() {
            for (o, name) in outputs.iter_mut().zip(file_outputs) {
                o.name = name;
            }
        }

        let options = run_options(opts.threads);
        let pool = run_pool(&options);
        let plan = typed
            .into_runnable_with_options(&options)
            .map_err(|e| Error::model(path, format!("cannot plan: {}", chain(&e))))?;
        Ok(Engine {
            path: path.to_path_buf(),
            plan,
            pool,
            inputs,
            outputs,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn inputs(&self) -> &[TensorInfo] {
        &self.inputs
    }
    pub fn outputs(&self) -> &[TensorInfo] {
        &self.outputs
    }

    /// Run on one f32 input of the pinned shape. `data` is moved in, so callers that want to reuse
    /// a buffer get it back from [`Engine::run_reuse`].
    pub fn run(&self, shape: &[usize], data: Vec<f32>) -> Result<Outputs> {
        let tensor = tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), data)
            .map_err(|e| {
                Error::model(
                    &self.path,
                    format!("input buffer does not fit shape {shape:?}: {e}"),
                )
            })?
            .into_tensor();
        self.run_tensor(tensor)
    }

    /// Run on a borrowed input (copied once into tract's tensor).
    pub fn run_slice(&self, shape: &[usize], data: &[f32]) -> Result<Outputs> {
        let tensor = Tensor::from_shape(shape, data).map_err(|e| {
            Error::model(
                &self.path,
                format!("input buffer does not fit shape {shape:?}: {e}"),
            )
        })?;
        self.run_tensor(tensor)
    }

    fn run_tensor(&self, tensor: Tensor) -> Result<Outputs> {
        let out = on_pool(self.pool.as_deref(), || self.plan.run(tvec!(tensor.into())))
            .map_err(|e| Error::model(&self.path, format!("inference failed: {}", chain(&e))))?;
        let mut tensors = TVec::new();
        for t in out {
            if t.datum_type() == f32::datum_type() {
                tensors.push(t);
            } else {
                // A shape-derived output (e.g. a detection count after NonMaxSuppression) can be a
                // symbolic dimension tract does not resolve; decoders treat such outputs as absent.
                match t.cast_to::<f32>() {
                    Ok(cast) => tensors.push(cast.into_owned().into()),
                    Err(e) => {
                        log::debug!(
                            "{}: output #{} not convertible to f32: {e}",
                            self.path.display(),
                            tensors.len()
                        );
                        tensors.push(
                            Tensor::zero::<f32>(&[0])
                                .unwrap_or_else(|_| Tensor::from(0f32))
                                .into(),
                        );
                    }
                }
            }
        }
        Ok(Outputs {
            tensors,
            names: self.outputs.iter().map(|o| o.name.clone()).collect(),
        })
    }
}

/// Time spent in one kind of operator, summed over a profiled run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OpProfile {
    /// tract's operator name after optimisation (e.g. `Conv`, `OptMatMul`, `DeconvSum`).
    pub op: String,
    /// How many nodes of this kind the plan runs.
    pub nodes: usize,
    /// Milliseconds per run, all nodes of this kind together (median-free mean over `runs`).
    pub ms: f64,
    /// The slowest single node of this kind and its time per run.
    pub slowest_node: String,
    pub slowest_ms: f64,
}

impl Engine {
    /// Runs the model `runs` times timing every node (tract's evaluation hook), and returns time
    /// per operator kind, slowest first. For finding where inference time goes, not for speed
    /// figures: the timing itself costs a little per node.
    pub fn profile(&self, shape: &[usize], data: &[f32], runs: usize) -> Result<Vec<OpProfile>> {
        let tensor = Tensor::from_shape(shape, data).map_err(|e| {
            Error::model(
                &self.path,
                format!("input buffer does not fit shape {shape:?}: {e}"),
            )
        })?;
        profile_plan(&self.plan, self.pool.as_deref(), tvec!(tensor.into()), runs)
            .map_err(|e| Error::model(&self.path, format!("profile: {}", chain(&e))))
    }
}

/// Runs `plan` on `inputs` `runs` times timing every node (tract's evaluation hook); time per
/// operator kind, slowest first. Shared by detectors ([`Engine::profile`]) and multi-input graphs
/// ([`session::Session::profile`]). With `RUST_LOG=debug` every node is logged with the kernel it
/// picked and its shapes. The runs start on `pool` as real runs do ([`on_pool`]), so a profile
/// at several threads shows what a run at several threads spends.
pub(crate) fn profile_plan(
    plan: &Arc<TypedRunnableModel>,
    pool: Option<&rayon::ThreadPool>,
    inputs: TVec<TValue>,
    runs: usize,
) -> TractResult<Vec<OpProfile>> {
    use std::collections::HashMap;
    use std::time::Instant;
    let mut state = tract_core::plan::SimpleState::new(plan)?;
    // node id -> (op name, node name, total seconds)
    let mut per_node: HashMap<usize, (String, String, f64)> = HashMap::new();
    let runs = runs.max(1);
    on_pool(pool, || -> TractResult<()> {
        for _ in 0..runs {
            state.run_plan_with_eval(inputs.clone(), |ctx, st, node, inputs| {
                let t = Instant::now();
                let r = tract_core::plan::eval(ctx, st, node, inputs);
                let e = per_node
                    .entry(node.id)
                    .or_insert_with(|| (node.op().name().to_string(), node.name.clone(), 0.0));
                e.2 += t.elapsed().as_secs_f64();
                r
            })?;
        }
        Ok(())
    })?;
    if log::log_enabled!(log::Level::Debug) {
        // The kernel a matmul picked, and its shapes, are in the op's info:
        // what one needs to know why a node is slow.
        let mut nodes: Vec<_> = per_node.iter().collect();
        nodes.sort_by(|a, b| b.1 .2.total_cmp(&a.1 .2));
        for (id, (op, name, secs)) in nodes {
            let info = plan.model().nodes[*id]
                .op
                .info()
                .map(|v| v.join("; "))
                .unwrap_or_default();
            log::debug!("{:8.3} ms  {op} {name}: {info}", secs * 1e3 / runs as f64);
        }
    }
    let mut per_op: HashMap<String, OpProfile> = HashMap::new();
    for (op, node, secs) in per_node.into_values() {
        let ms = secs * 1e3 / runs as f64;
        let p = per_op.entry(op.clone()).or_insert_with(|| OpProfile {
            op,
            nodes: 0,
            ms: 0.0,
            slowest_node: String::new(),
            slowest_ms: 0.0,
        });
        p.nodes += 1;
        p.ms += ms;
        if ms > p.slowest_ms {
            p.slowest_ms = ms;
            p.slowest_node = node;
        }
    }
    let mut v: Vec<OpProfile> = per_op.into_values().collect();
    v.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    Ok(v)
}

/// Set to `1` to plan models with tract's own ops only, for A/B measurements against lookout's.
pub const PLAIN_TRACT_ENV: &str = "LOOKOUT_PLAIN_TRACT";

/// Whether [`PLAIN_TRACT_ENV`] asks for tract's own plan.
/// The options tract runs a plan with: its thread pool of `threads` (lookout's own ops share it,
/// `par.rs`), or the calling thread alone for 1.
pub fn run_options(threads: usize) -> RunOptions {
    let executor = if threads > 1 {
        tract_linalg::multithread::Executor::multithread(threads)
    } else {
        tract_linalg::multithread::Executor::SingleThread
    };
    RunOptions {
        executor: Some(executor),
        ..Default::default()
    }
}

/// Set to `1` to run a plan from the calling thread even with `threads > 1` (the A/B of
/// [`on_pool`]).
pub const NO_POOL_RUN_ENV: &str = "LOOKOUT_NO_POOL_RUN";

/// The thread pool `options` give a plan (`threads > 1`), kept to start its runs on ([`on_pool`]);
/// none under [`NO_POOL_RUN_ENV`]`=1`, read here at load rather than on every run.
pub(crate) fn run_pool(options: &RunOptions) -> Option<Arc<rayon::ThreadPool>> {
    match &options.executor {
        Some(tract_linalg::multithread::Executor::MultiThread(p))
            if !pass::env_off(NO_POOL_RUN_ENV) =>
        {
            Some(p.clone())
        }
        _ => None,
    }
}

/// Runs `run` (one run of a plan) on `pool`, when there is one. From the calling thread, every
/// parallel section of the plan (tract's matrix products, QConv's im2col and requantisation,
/// QConcat, FastQuantize: ~100 in nanodet-g) is a job injected from outside the pool that this
/// thread then sleeps on, and each such hand-off cost ~70 µs here (QConcat's 12 nodes: 1.09 ms at
/// 1 thread, 1.95 ms at 2). From a pool thread a section is a local job the other thread steals.
/// nanodet-g-int8-qdq at 2 threads: 35.0 → 27.9 ms (1 thread: 34.8 ms), `benches/GRAPH_REWRITES.md`
/// section 9. [`NO_POOL_RUN_ENV`]`=1` is the A/B switch ([`run_pool`] then gives no pool).
pub(crate) fn on_pool<R: Send>(
    pool: Option<&rayon::ThreadPool>,
    run: impl FnOnce() -> R + Send,
) -> R {
    match pool {
        Some(pool) => pool.install(run),
        None => run(),
    }
}

pub fn plain_tract() -> bool {
    std::env::var(PLAIN_TRACT_ENV).is_ok_and(|v| v == "1")
}

/// Set to `0` to leave out the fp32 detector ops alone ([`AxisSoftmax`], [`SeparableMaxPool`])
/// while keeping lookout's other passes: the A/B switch for them, as [`PLAIN_TRACT_ENV`] is for all
/// passes.
pub const FPDET_ENV: &str = "LOOKOUT_FPDET";

/// Set to `1` to let tract's declutter split the products that read a `Concat`
/// ([`pass::declutter_keeping_concats`] keeps them whole).
pub const SPLIT_CONCAT_ENV: &str = "LOOKOUT_SPLIT_CONCAT";

/// Whether the fp32 detector ops are wanted: not under [`PLAIN_TRACT_ENV`] (where no pass runs
/// anyway) and not turned off by [`FPDET_ENV`]`=0`.
pub fn fpdet_enabled() -> bool {
    !plain_tract() && !std::env::var(FPDET_ENV).is_ok_and(|v| v == "0")
}

/// tract's `into_optimized` in its two halves with lookout's passes for a graph loaded outside
/// [`optimize`] (multi-input sessions, text encoders): [`pin_for_run`] and [`int8_for_run`] before
/// decluttering, [`rows_for_run`] before codegen, [`fold_for_run`] after it.
pub(crate) fn optimize_for_run(typed: TypedModel, path: &Path) -> Result<TypedModel> {
    let mut typed = pin_for_run(typed, path)?;
    int8_for_run(&mut typed, path)?;
    let mut typed = typed
        .into_decluttered()
        .map_err(|e| Error::model(path, format!("cannot optimise: {}", chain(&e))))?;
    rows_for_run(&mut typed, path)?;
    typed
        .optimize()
        .map_err(|e| Error::model(path, format!("cannot optimise: {}", chain(&e))))?;
    fold_for_run(&mut typed, path)?;
    Ok(typed)
}

/// [`FastDynQuantize`], [`fold_const_chains`], [`drop_zero_terms`] and [`BlockBinary`] on an
/// optimised graph loaded outside [`optimize`] (multi-input sessions, text encoders), unless
/// [`PLAIN_TRACT_ENV`] asks for tract's own plan: the dynamic activation quantisation in front of
/// every int8 matmul, the constant work tract leaves to run on every call for weights over 4 MiB (a
/// VLM's `lm_head`), the compensation for a weight zero point that is 0, and the broadcasting
/// element-wise ops tract leaves on its generic loop (a decoder's rotary embedding).
pub(crate) fn fold_for_run(model: &mut TypedModel, path: &Path) -> Result<()> {
    if !plain_tract() {
        swap_for_run(&dynquant::FastDynQuantizePass, model, path)?;
        fold_const_chains(model)
            .map_err(|e| Error::model(path, format!("cannot fold constants: {}", chain(&e))))?;
        let n = drop_zero_terms(model)
            .map_err(|e| Error::model(path, format!("cannot drop zero terms: {}", chain(&e))))?;
        if n > 0 {
            log::debug!("{}: {n} integer x+0 / x-0 dropped", path.display());
        }
        swap_for_run(&blockbin::BlockBinaryPass, model, path)?;
    }
    Ok(())
}

/// [`pin_single_selections`] on a typed graph before optimisation (multi-input sessions), unless
/// [`PLAIN_TRACT_ENV`] asks for tract's own plan: a vision encoder's one-image selection then has
/// length 1 instead of a symbol, and tract lowers its projections to matrix products over the patch
/// tokens instead of one matrix-vector product per token.
pub(crate) fn pin_for_run(model: TypedModel, path: &Path) -> Result<TypedModel> {
    if plain_tract() {
        return Ok(model);
    }
    let (model, n) = pin_single_selections(model).map_err(|e| {
        Error::model(
            path,
            format!("cannot pin the image selection: {}", chain(&e)),
        )
    })?;
    if n > 0 {
        log::debug!("{}: {n} single-image NonZero pinned", path.display());
    }
    Ok(model)
}

/// [`QMatMul`] for every `MatMulInteger` with a constant weight and an exact f32 convolution for
/// every `ConvInteger` whose sums f32 holds (`convint.rs`), on a typed graph before decluttering
/// (multi-input sessions), unless [`PLAIN_TRACT_ENV`] asks for tract's own plan (or
/// [`NO_QMATMUL_ENV`], [`NO_CONVINT_ENV`] for one of them): a decoder's one-token int8 matmuls then
/// run a matrix-vector kernel, a vision encoder's depthwise int8 convolutions tract's float kernels.
pub(crate) fn int8_for_run(model: &mut TypedModel, path: &Path) -> Result<()> {
    if plain_tract() {
        return Ok(());
    }
    swap_for_run(&qmatmul::QMatMulPass, model, path)?;
    swap_for_run(&convint::ConvIntegerPass, model, path)
}

/// [`FusedAttention`] for every encoder self-attention chain and [`Gelu`] for every tanh GELU
/// (where the CPU has AVX-512F), [`PanelConv`] for the f32 convs (a vision encoder's stem and
/// depthwise convs; conv nodes only), then [`RowMatMul`] for every decoder-attention product (one
/// query row against a past or an encoder's keys), then [`swap_store_order`] for the attention
/// products of many rows left, on the decluttered graph of a multi-input session, unless
/// [`PLAIN_TRACT_ENV`] (or [`NO_ATTENTION_ENV`], [`NO_GELU_ENV`], [`NO_PANELCONV_ENV`],
/// [`NO_ROWMATMUL_ENV`], [`NO_STOREORDER_ENV`]) asks for tract's own plan.
pub(crate) fn rows_for_run(model: &mut TypedModel, path: &Path) -> Result<()> {
    if plain_tract() {
        return Ok(());
    }
    swap_for_run(&attention::FusedAttentionPass, model, path)?;
    swap_for_run(&gelu::GeluPass, model, path)?;
    swap_for_run(&fconv::PanelConvPass::CONV_NODES, model, path)?;
    swap_for_run(&rowmatmul::RowMatMulPass, model, path)?;
    swap_for_run(&storeorder::StoreOrderPass, model, path)
}

/// One of lookout's passes on a session's graph (the `*_for_run` steps): a failure names the file
/// and what the pass swaps, the count goes to the debug log.
fn swap_for_run(pass: &dyn GraphPass, model: &mut TypedModel, path: &Path) -> Result<()> {
    let n = pass.run(model).map_err(|e| {
        Error::model(
            path,
            format!("cannot swap {}: {}", pass.replaces(), chain(&e)),
        )
    })?;
    if n > 0 {
        log::debug!(
            "{}: {n} {} as {}",
            path.display(),
            pass.replaces(),
            pass.name()
        );
    }
    Ok(())
}

/// lookout's graph passes, in the order they run (the registry of [`pass::GraphPass`]es: the op
/// files implement the contract, only this list names them). After optimisation the passes swap
/// ops one for one, so their order there does not matter.
pub fn passes() -> Vec<Box<dyn GraphPass>> {
    vec![
        Box::new(qconv::QConvPass),
        Box::new(qdq::QdqConvPass),
        Box::new(qconcat::QConcatPass),
        Box::new(topk::SelectTopkPass),
        Box::new(resize::PlannedResizePass),
        Box::new(quantize::FastQuantizePass),
        Box::new(dynquant::FastDynQuantizePass),
        Box::new(fold::FoldConstPass),
        Box::new(softmax::AxisSoftmaxPass),
        Box::new(maxpool::PoolChannelsLastPass),
        Box::new(maxpool::SeparableMaxPoolPass),
        Box::new(downsample::StridedCopyPass),
        Box::new(chfirst::ChannelsFirstPass),
        Box::new(hswish::HardSwishPass),
        Box::new(fconv::PanelConvPass::ALL),
        Box::new(qmatmul::QMatMulPass),
        Box::new(convint::ConvIntegerPass),
        Box::new(attention::FusedAttentionPass),
        Box::new(gelu::GeluPass),
        Box::new(rowmatmul::RowMatMulPass),
        Box::new(storeorder::StoreOrderPass),
        Box::new(zeroterm::ZeroTermPass),
        Box::new(blockbin::BlockBinaryPass),
    ]
}

/// tract's analysis and optimisation, with lookout's faster ops swapped in where they compute the
/// same thing (each op's module says how it is checked against tract's).
pub fn optimize(model: InferenceModel) -> TractResult<(TypedModel, Rewrites)> {
    optimize_at(model, Precision::F32)
}

/// [`optimize`] at a precision. f16 is tract's own rewrite (its `FloatPrecisionTranslator`, see
/// `precision.rs`), not one of lookout's passes, so it applies under [`PLAIN_TRACT_ENV`] too: the
/// A/B then compares tract's f16 plan with lookout's. lookout's ops met in an f16 graph
/// (`SelectTopk`, `PlannedResize`) hand non-f32 tensors to tract's own implementation.
pub fn optimize_at(
    mut model: InferenceModel,
    precision: Precision,
) -> TractResult<(TypedModel, Rewrites)> {
    if !plain_tract() {
        qdq::annotate(&mut model);
    }
    let mut typed = model.into_typed()?;
    if precision == Precision::F16 {
        typed = precision::to_f16(&typed)?;
    }
    if plain_tract() {
        return Ok((typed.into_optimized()?, Rewrites::default()));
    }
    let passes = passes();
    let mut rewrites = Rewrites::default();
    let mut run = |typed: &mut TypedModel, stage: Stage| -> TractResult<()> {
        for pass in passes.iter().filter(|p| p.stage() == stage) {
            let n = pass.run(typed)?;
            rewrites.record(pass.as_ref(), n);
        }
        Ok(())
    };
    run(&mut typed, Stage::BeforeConstants)?;
    // The early passes need constant parameters: propagate constants first.
    tract_core::optim::Optimizer::prop_consts().optimize(&mut typed)?;
    run(&mut typed, Stage::BeforeOptimise)?;
    // tract's `into_optimized` in its two halves, with the passes that need its decluttering
    // between them.
    if fpdet_enabled() && !pass::env_off(SPLIT_CONCAT_ENV) {
        pass::declutter_keeping_concats(&mut typed)?;
    } else {
        typed.declutter()?;
    }
    run(&mut typed, Stage::BeforeCodegen)?;
    typed.optimize()?;
    run(&mut typed, Stage::AfterOptimise)?;
    Ok((typed, rewrites))
}

/// tract's errors are anyhow chains; show the whole chain on one line.
fn chain(e: &TractError) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}
