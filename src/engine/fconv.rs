//! A float convolution whose im2col panels are copied from a padded copy of the input.
//!
//! tract 0.23.9 runs a 3x3 f32 convolution too narrow for its direct spatial kernel (an output
//! row under 128 points) as a `Pad` node, then a lazy im2col that gathers every element of every
//! packed panel through two offset tables (`LazyIm2colInput::write`), then its matrix product.
//! In nanodet-g-int8-qdq's float stem (two 3x3 convs, 288 taps, 104x104 outputs) the gathers took
//! more time than the products. [`PanelConv`] keeps tract's f32 kernel and its choice of it
//! (`MmmDispatch::pick`), and the bias and LeakyRelu (or Relu, a LeakyRelu of slope 0) tract
//! fuses into it, and replaces the rest:
//! - the input is copied once into padded planes ([`super::im2col::fill_padded`], split over the
//!   pool), so every tap of every output position is a plain offset and no `Pad` node runs;
//! - the matrix product asks for its B panels one at a time ([`PanelInput`], a lazy input as
//!   tract's own): where a panel's `r` columns lie in one output row at stride 1 (most of them),
//!   each of its k rows is one copy of `r` contiguous floats; other panels are gathered.
//!
//! The products and their order are tract's, so the output is tract's up to the order in which the
//! kernel adds the bias: within 1e-5 of tract's plan of the same conv (the unit test below: 5
//! geometries, LeakyRelu fused or not, 1 and 3 threads), and through the real models against
//! onnxruntime (`tests/reference.rs`: fp32 nanodet-g; `tests/engine_qdq.rs`: the int8 default's
//! float convs; `tests/graph_rewrites.rs`).
//! On x86 with AVX2 and FMA the product is lookout's own instead ([`super::fdirect`]): a direct
//! conv reading the padded planes in place, for convs of up to 288 taps (576 at stride 1) and
//! for depthwise convs; [`super::F32_KERNEL_ENV`]`=tract` keeps tract's kernel. Convs without a
//! batch axis (tract's CHW, where a reshape dropped it: FastestDet's shuffle blocks) are taken as
//! well: the memory is NCHW's.
//! [`NO_PANELCONV_ENV`]`=1` leaves every conv to tract (the A/B switch).

use std::fmt;
use std::sync::Arc;

use tract_core::internal::*;
use tract_core::ops::binary::TypedBinOp;
use tract_core::ops::cnn::conv::Conv;
use tract_core::ops::einsum::EinSum;
use tract_core::ops::element_wise::ElementWiseOp;
use tract_core::ops::identity::Identity;
use tract_core::ops::math::Max;
use tract_core::ops::nn::{LeakyRelu, Silu};
use tract_linalg::mmm::EagerPackedInput;
use tract_linalg::mmm::{
    AsInputValue, FusedSpec, MMMInputFormat, MMMInputValue, MatMatMul, PackedExoticFact, Query,
};
use tract_linalg::pack::PackedFormat;
use tract_linalg::{BinOp, WeightType};

use super::fdirect::{self, Act};
use super::im2col::{fill_padded, Geometry};
use super::pass::{env_off, GraphPass, Stage};

mod pointwise;
use pointwise::plan_pointwise;

/// Set to `1` to leave every f32 convolution to tract (the A/B of [`PanelConv`]).
pub const NO_PANELCONV_ENV: &str = "LOOKOUT_NO_PANELCONV";

#[derive(Debug)]
struct Params {
    geo: Geometry,
    /// The output's shape: [`Geometry::out_shape`] for a conv; a 1x1 conv's product keeps the
    /// layout tract's declutter gave it (a batch axis or not, axes of size 1).
    out_shape: TVec<usize>,
    kernel: Kernel,
    /// The activation fused into the kernel's store (a LeakyRelu as tract fuses it, or a Silu).
    act: Act,
}

/// Which product runs the conv.
#[derive(Debug)]
enum Kernel {
    /// tract's f32 matrix product on lazily made im2col panels.
    Tract(TractProduct),
    /// lookout's direct conv on AVX2 + FMA or AVX-512 ([`fdirect`]).
    Direct(fdirect::Weights),
    /// lookout's depthwise conv (group = channels) on AVX2 + FMA or AVX-512
    /// ([`fdirect::depthwise`]).
    Depthwise(fdirect::DwWeights),
    /// lookout's 1x1 conv on AVX2 + FMA or AVX-512, reading the input in place
    /// ([`fdirect::pointwise`]); `true` when it writes channels last (AVX-512 only).
    Pointwise(fdirect::Weights, bool),
}

#[derive(Debug)]
struct TractProduct {
    mmm: Box<dyn MatMatMul>,
    packing: usize,
    packed_w: Box<dyn MMMInputValue>,
    /// How the kernel wants its B panels (`r` columns, k rows of them, and its alignment).
    b_format: PackedFormat,
    /// Per output channel.
    bias: Tensor,
}

impl Kernel {
    /// Whether the kernel can apply `act` in its store.
    fn can_fuse(&self, act: Act) -> bool {
        match (self, act) {
            (Kernel::Tract(_), Act::Silu) => false,
            (Kernel::Tract(t), Act::Leaky(alpha)) => {
                t.mmm.can_fuse(&FusedSpec::LeakyRelu(&tensor0(alpha)))
            }
            (Kernel::Tract(_), Act::Linear) => true,
            (Kernel::Direct(w) | Kernel::Pointwise(w, _), act) => act.fuses(w.isa()),
            (Kernel::Depthwise(w), act) => act.fuses(w.isa()),
        }
    }

    fn name(&self) -> String {
        match self {
            Kernel::Tract(t) => t.mmm.name().to_string(),
            Kernel::Direct(w) => format!("lookout's {} direct f32 kernel", w.isa().name()),
            Kernel::Depthwise(w) => format!("lookout's {} depthwise f32 kernel", w.isa().name()),
            Kernel::Pointwise(w, last) => format!(
                "lookout's {} 1x1 f32 kernel{}",
                w.isa().name(),
                if *last { ", channels last" } else { "" }
            ),
        }
    }
}

/// Drop-in replacement for an f32 [`Conv`] node (and the LeakyRelu after it, when there is one):
/// same inputs (it reads only the activation; the weights are packed at load).
#[derive(Debug, Clone)]
pub struct PanelConv {
    params: Arc<Params>,
}

impl PartialEq for PanelConv {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.params, &other.params)
    }
}
impl Eq for PanelConv {}

impl Op for PanelConv {
    fn name(&self) -> StaticName {
        "PanelConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let p = &*self.params;
        let g = &p.geo;
        Ok(vec![format!(
            "{}x{} stride {:?} dilation {:?} pad {:?}, {}→{} channels{}, m:{} k:{} n:{} with {}",
            g.kh,
            g.kw,
            g.stride,
            g.dilation,
            g.pad,
            g.c_in,
            g.c_out,
            match p.act {
                Act::Linear => "",
                Act::Leaky(_) => ", LeakyRelu",
                Act::Silu => ", Silu",
            },
            g.c_out,
            g.k(),
            g.n(),
            p.kernel.name()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for PanelConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let p = &*self.params;
        let g = &p.geo;
        let x = &inputs[0];
        ensure!(
            x.datum_type() == f32::datum_type() && x.len() == g.c_in * g.in_h * g.in_w,
            "PanelConv: input {:?} of shape {:?}, expected f32 [(1,) {}, {}, {}]",
            x.datum_type(),
            x.shape(),
            g.c_in,
            g.in_h,
            g.in_w
        );
        let x = x.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let act = p.act;
        let out = match &p.kernel {
            Kernel::Tract(t) => t.run(g, act, x)?,
            Kernel::Direct(w) => written(p, |y| fdirect::conv(g, w, act, x, y))?,
            Kernel::Depthwise(w) => written(p, |y| fdirect::depthwise(g, w, act, x, y))?,
            Kernel::Pointwise(w, last) => {
                written(p, |y| fdirect::pointwise(g, w, act, x, y, *last))?
            }
        };
        Ok(tvec!(out.into_tvalue()))
    }
}

/// The conv's output tensor, as `write` fills it (every element).
fn written(p: &Params, write: impl FnOnce(&mut [f32])) -> TractResult<Tensor> {
    // SAFETY: `write` writes every element (the kernels' contract).
    let mut out = unsafe { Tensor::uninitialized::<f32>(&p.out_shape)? };
    write(out.try_as_plain_ram_mut()?.as_slice_mut::<f32>()?);
    Ok(out)
}

impl TractProduct {
    /// The conv of `x` on tract's kernel: im2col panels made lazily from a padded copy of the
    /// input, the bias and the LeakyRelu `act` (the only activation planned on it) fused into the
    /// store.
    fn run(&self, g: &Geometry, act: Act, x: &[f32]) -> TractResult<Tensor> {
        let alpha = match act {
            Act::Leaky(alpha) => Some(tensor0(alpha)),
            Act::Linear => None,
            Act::Silu => bail!("PanelConv: a Silu planned on tract's kernel"),
        };
        let (hp, wp) = g.padded_hw();
        let mut planes = vec![0f32; g.c_in * hp * wp];
        fill_padded(g, x, 0.0, &mut planes, |d, s| d.copy_from_slice(s));
        let b = PanelInput {
            planes: Arc::new(planes),
            taps: Arc::new(g.taps(hp, wp)),
            wp,
            geo: g.clone(),
            fact: PackedExoticFact {
                format: Box::new(PanelFormat(self.b_format.clone())),
                mn: g.n().to_dim(),
                k: g.k(),
            },
            format: PanelFormat(self.b_format.clone()),
        };
        let mut c = unsafe { Tensor::uninitialized::<f32>(&[g.c_out, g.n()])? };
        unsafe {
            let store = self.mmm.c_view(Some(0), Some(1)).wrap(&c.view_mut());
            let mut specs = vec![
                FusedSpec::AddMatMul {
                    a: AsInputValue::Borrowed(&*self.packed_w),
                    b: AsInputValue::Borrowed(&b),
                    packing: self.packing,
                },
                FusedSpec::BinPerRow(self.bias.view(), BinOp::Add),
            ];
            if let Some(alpha) = &alpha {
                specs.push(FusedSpec::LeakyRelu(alpha));
            }
            specs.push(FusedSpec::Store(store));
            self.mmm.run(g.c_out, g.n(), &specs)?;
        }
        c.into_shape(&g.out_shape())
    }
}

impl TypedOp for PanelConv {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&self.params.out_shape)))
    }

    as_op!();
}

/// The im2col matrix (`k × n`) of one run, handed to tract's kernel panel by panel.
#[derive(Clone, Debug)]
struct PanelInput {
    planes: Arc<Vec<f32>>,
    taps: Arc<Vec<usize>>,
    wp: usize,
    geo: Geometry,
    format: PanelFormat,
    fact: PackedExoticFact,
}

/// The kernel's B packing (`r`-column panels, k rows each), as a format of its own: tract's
/// kernel loop asks whether B is a plain `PackedFormat` (packed once, up front) and, when it is
/// not, walks the output column-panel first so that each lazily made panel is made once (as for
/// its own lazy im2col). Seen as a plain `PackedFormat`, a panel was remade for every row tile:
/// nanodet-g's fp32 convs took 1.8x tract's time.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct PanelFormat(PackedFormat);

impl fmt::Display for PanelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PanelIm2col({})", self.0)
    }
}

impl MMMInputFormat for PanelFormat {
    fn prepare_tensor(&self, _t: &Tensor, _k_axis: usize, _mn_axis: usize) -> TractResult<Tensor> {
        bail!("PanelFormat: made by PanelConv only")
    }
    fn prepare_one_view(
        &self,
        _t: &TensorView,
        _k_axis: usize,
        _mn_axis: usize,
    ) -> TractResult<Box<dyn MMMInputValue>> {
        bail!("PanelFormat: made by PanelConv only")
    }
    fn precursor(&self) -> WeightType {
        self.0.precursor()
    }
    fn r(&self) -> usize {
        self.0.r
    }
    fn k_alignment(&self) -> usize {
        1
    }
    fn mem_size(&self, k: TDim, mn: TDim) -> TDim {
        k * mn * self.0.dt.size_of()
    }
    fn extract_at_mn_f16(
        &self,
        _data: &EagerPackedInput,
        _mn: usize,
        _slice: &mut [f16],
    ) -> TractResult<()> {
        bail!("PanelFormat: no extraction")
    }
    fn extract_at_mn_f32(
        &self,
        _data: &EagerPackedInput,
        _mn: usize,
        _slice: &mut [f32],
    ) -> TractResult<()> {
        bail!("PanelFormat: no extraction")
    }
}

impl PartialEq for PanelInput {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.planes, &other.planes)
    }
}
impl Eq for PanelInput {}

impl std::hash::Hash for PanelInput {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (Arc::as_ptr(&self.planes) as usize, self.taps.len(), self.wp).hash(state);
    }
}

impl fmt::Display for PanelInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PanelInput (k={} n={})", self.taps.len(), self.geo.n())
    }
}

impl PanelInput {
    /// Panel `i` into `out` (`k` rows of `r` floats, then zeros to the end): columns
    /// `i·r .. i·r + r` of the im2col matrix, zero past `n`.
    fn panel(&self, i: usize, out: &mut [f32]) {
        let (g, r, k) = (&self.geo, self.format.0.r, self.taps.len());
        let col0 = i * r;
        let lanes = r.min(g.n().saturating_sub(col0));
        let (rows, rest) = out.split_at_mut(k * r);
        rest.fill(0.0);
        let planes = &self.planes[..];
        if lanes == r && col0 % g.out_w + r <= g.out_w && g.stride.1 == 1 {
            let base = g.base(self.wp, col0);
            match r {
                8 => copy_rows::<8>(planes, base, &self.taps, rows),
                12 => copy_rows::<12>(planes, base, &self.taps, rows),
                16 => copy_rows::<16>(planes, base, &self.taps, rows),
                _ => {
                    for (row, tap) in rows.chunks_exact_mut(r).zip(self.taps.iter()) {
                        row.copy_from_slice(&planes[base + tap..][..r]);
                    }
                }
            }
            return;
        }
        let bases: Vec<usize> = (col0..col0 + lanes).map(|p| g.base(self.wp, p)).collect();
        for (row, tap) in rows.chunks_exact_mut(r).zip(self.taps.iter()) {
            for (lane, o) in row.iter_mut().enumerate() {
                *o = bases.get(lane).map_or(0.0, |b| planes[b + tap]);
            }
        }
    }
}

/// Every row of a panel whose `R` columns are contiguous in the planes: `R` floats from
/// `base + tap` (a fixed-size copy, not a `memcpy` call per row).
fn copy_rows<const R: usize>(planes: &[f32], base: usize, taps: &[usize], rows: &mut [f32]) {
    for (row, tap) in rows.chunks_exact_mut(R).zip(taps) {
        let src: &[f32; R] = planes[base + tap..][..R].try_into().expect("R floats");
        let dst: &mut [f32; R] = row.try_into().expect("R floats");
        *dst = *src;
    }
}

impl MMMInputValue for PanelInput {
    fn format(&self) -> &dyn MMMInputFormat {
        &self.format
    }
    fn scratch_panel_buffer_layout(&self) -> Option<std::alloc::Layout> {
        Some(self.format.0.single_panel_layout(self.taps.len(), 4))
    }
    fn panel_bytes(&self, i: usize, buffer: Option<*mut u8>) -> TractResult<*const u8> {
        let buffer = buffer.context("PanelInput: no scratch buffer for a panel")?;
        let len = self.format.0.single_panel_len(self.taps.len());
        // SAFETY: tract hands a buffer of `scratch_panel_buffer_layout` (f32-aligned, `len`
        // floats), used by this call alone.
        let out = unsafe { std::slice::from_raw_parts_mut(buffer as *mut f32, len) };
        self.panel(i, out);
        Ok(buffer)
    }
    fn mn(&self) -> usize {
        self.geo.n()
    }
    fn k(&self) -> usize {
        self.taps.len()
    }
    fn exotic_fact(&self) -> &dyn ExoticFact {
        &self.fact
    }
    fn extract_at_mn_f16(&self, _mn: usize, _slice: &mut [f16]) -> TractResult<()> {
        bail!("PanelInput: no extraction")
    }
    fn extract_at_mn_f32(&self, _mn: usize, _slice: &mut [f32]) -> TractResult<()> {
        bail!("PanelInput: no extraction")
    }
}

/// The [`PanelConv`] for an f32 conv node, or why it stays with tract.
/// `direct`: on lookout's direct kernel ([`fdirect`], which the caller checked the CPU has), else
/// on tract's matrix product.
fn plan(
    model: &TypedModel,
    node: &TypedNode,
    conv: &Conv,
    isa: Option<fdirect::Isa>,
) -> Result<PanelConv, String> {
    let direct = isa.is_some();
    let depthwise = direct && conv.group > 1 && conv.group == conv.pool_spec.output_channels;
    if conv.q_params.is_some() || (conv.group != 1 && !depthwise) || node.inputs.len() != 3 {
        return Err(format!(
            "quantized, grouped ({}) or {} inputs",
            conv.group,
            node.inputs.len()
        ));
    }
    let x_fact = model
        .outlet_fact(node.inputs[0])
        .map_err(|e| e.to_string())?;
    if x_fact.datum_type != f32::datum_type() {
        return Err(format!("input type {:?}", x_fact.datum_type));
    }
    let shape = x_fact.shape.as_concrete().ok_or("symbolic input shape")?;
    let out_shape = node.outputs[0]
        .fact
        .shape
        .as_concrete()
        .ok_or("symbolic output shape")?;
    let geo = Geometry::of(conv, shape, out_shape)?;
    if depthwise && geo.c_in != conv.group {
        return Err(format!("{} groups of {} channels", conv.group, geo.c_in));
    }
    // A 1x1 conv at stride 1 is a plain matrix product of the input in tract: nothing to gather.
    if geo.kh * geo.kw == 1 && geo.stride == (1, 1) {
        return Err("1x1 at stride 1".into());
    }
    // tract's direct spatial conv takes output rows of 128 points or more with at most 576 taps
    // (`Conv::can_direct_spatial`, where its kernels exist), and beats a matrix product there:
    // nanodet-g's stem conv (3→32, 27 taps, 208x208) 2.8 ms in it, 5.8 ms on tract's product
    // here; lookout's direct kernel beats both. Which convs that kernel takes: `Isa::suits`.
    let direct = depthwise || isa.is_some_and(|isa| isa.suits(geo.k(), geo.stride));
    if !direct && geo.out_w >= 128 && geo.k() <= 576 {
        return Err(format!(
            "tract's direct spatial conv shape ({} taps, rows of {})",
            geo.k(),
            geo.out_w
        ));
    }
    let konst = |ix: usize| {
        model
            .outlet_fact(node.inputs[ix])
            .ok()
            .and_then(|f| f.konst.clone())
            .ok_or(format!("input {ix} is not a constant"))
    };
    let kernel = konst(1)?;
    let bias = konst(2)?;
    let per_group = if depthwise { 1 } else { geo.c_in };
    if kernel.shape() != [geo.c_out, per_group, geo.kh, geo.kw] {
        return Err(format!("kernel shape {:?}", kernel.shape()));
    }
    let bias = bias
        .cast_to::<f32>()
        .map_err(|e| format!("bias: {e}"))?
        .into_owned();
    let bias: Vec<f32> = match bias.len() {
        1 => vec![bias.cast_to_scalar::<f32>().map_err(|e| e.to_string())?; geo.c_out],
        l if l == geo.c_out => bias
            .try_as_plain_ram()
            .and_then(|b| Ok(b.as_slice::<f32>()?.to_vec()))
            .map_err(|e| e.to_string())?,
        l => return Err(format!("{l} biases for {} channels", geo.c_out)),
    };
    let a = kernel
        .clone()
        .into_tensor()
        .into_shape(&[geo.c_out, per_group * geo.kh * geo.kw])
        .map_err(|e| e.to_string())?;
    if let (true, Some(isa)) = (direct, isa) {
        let w = a
            .cast_to::<f32>()
            .and_then(|a| Ok(a.try_as_plain_ram()?.as_slice::<f32>()?.to_vec()))
            .map_err(|e| format!("weights: {e}"))?;
        let kernel = if depthwise {
            Kernel::Depthwise(fdirect::DwWeights::new(
                &w,
                &bias,
                geo.c_out,
                geo.kh * geo.kw,
                isa,
            ))
        } else {
            Kernel::Direct(fdirect::Weights::pack(&w, &bias, geo.c_out, geo.k(), isa))
        };
        return Ok(PanelConv {
            params: Arc::new(Params {
                out_shape: geo.out_shape(),
                geo,
                kernel,
                act: Act::Linear,
            }),
        });
    }
    let query = Query {
        weight: f32::datum_type().into(),
        activation: f32::datum_type(),
        accumulators: tvec!(f32::datum_type()),
        store: None,
        allow_extractor: false,
        m: Some(geo.c_out),
        k: Some(geo.k()),
        n: Some(geo.n()),
    };
    let (mmm, packing, _) = tract_linalg::MmmDispatch::native()
        .pick(&query)
        .ok_or("no f32 matmul kernel")?;
    let b_format = mmm.packings()[packing]
        .1
        .downcast_ref::<PackedFormat>()
        .ok_or("the kernel's B packing is not a plain PackedFormat")?
        .clone();
    if b_format.dt != f32::datum_type() {
        return Err(format!("the kernel packs B as {:?}", b_format.dt));
    }
    let packed_w = mmm.packings()[packing]
        .0
        .prepare_one(&a, 1, 0)
        .map_err(|e| format!("packing the weights: {e}"))?;
    let bias = tensor1(&bias);
    // Kernels say which fused operations they run (an unsupported one fails at run time: SVE's
    // f32 kernel under qemu-aarch64 refused the LeakyRelu, "returned error 1").
    if !mmm.can_fuse(&FusedSpec::BinPerRow(bias.view(), BinOp::Add)) {
        return Err(format!("{} cannot add a bias per row", mmm.name()));
    }
    Ok(PanelConv {
        params: Arc::new(Params {
            out_shape: geo.out_shape(),
            geo,
            kernel: Kernel::Tract(TractProduct {
                mmm,
                packing,
                packed_w,
                b_format,
                bias,
            }),
            act: Act::Linear,
        }),
    })
}

/// The activation `node` applies to `input`: an f32 LeakyRelu, a Relu (tract-onnx's `Relu` becomes
/// `max(x, 0)` against a constant zero: slope 0) or a Silu.
fn activation(model: &TypedModel, node: &TypedNode, input: OutletId) -> Option<Act> {
    if let Some(ew) = node.op_as::<ElementWiseOp>() {
        if ew.0.is::<Silu>() && model.outlet_fact(input).ok()?.datum_type == f32::datum_type() {
            return Some(Act::Silu);
        }
        return Some(Act::Leaky(ew.0.downcast_ref::<LeakyRelu>()?.alpha));
    }
    // The max's output of the conv output's shape: the node then becomes an identity of it.
    let bin = node.op_as::<TypedBinOp>()?;
    let x = model.outlet_fact(input).ok()?;
    let slot = node.inputs.iter().position(|&i| i == input)?;
    if !bin.0.is::<Max>() || node.inputs.len() != 2 {
        return None;
    }
    if node.outputs[0].fact.shape != x.shape || node.outputs[0].fact.datum_type != x.datum_type {
        return None;
    }
    let zero = model
        .outlet_fact(node.inputs[1 - slot])
        .ok()?
        .konst
        .as_ref()?;
    let zero = zero.as_uniform()?.cast_to_scalar::<f32>().ok()?;
    (zero == 0.0 && zero.is_sign_positive()).then_some(Act::Leaky(0.0))
}

/// Swaps tract's f32 [`Conv`] (group 1 or depthwise, NCHW with batch 1 or CHW, not 1x1) for
/// [`PanelConv`], with the LeakyRelu or Relu after it folded in (that node becomes an identity,
/// which tract then removes), and with `pointwise` the 1x1 convs tract's declutter made matrix
/// products too. Runs on the decluttered model, before tract picks its conv kernels.
pub struct PanelConvPass {
    pointwise: bool,
}

impl PanelConvPass {
    /// The detectors' pass: convs and 1x1 convs.
    pub const ALL: PanelConvPass = PanelConvPass { pointwise: true };
    /// The multi-input sessions' (the VLM encoders): tract's `Conv` nodes only. A transformer's
    /// products look like 1x1 convs to [`plan_pointwise`] once decluttered, and tract's matrix
    /// kernels run those faster (Florence-2's fp32 vision encoder: 2.9 s with them, 3.5 s with its
    /// MLP products on the pointwise kernel, `qmatmul_profile`, 1 thread, 2026-12-07).
    pub const CONV_NODES: PanelConvPass = PanelConvPass { pointwise: false };
}

impl GraphPass for PanelConvPass {
    fn name(&self) -> &'static str {
        "PanelConv"
    }
    fn replaces(&self) -> &'static str {
        if self.pointwise {
            "f32 Conv"
        } else {
            "f32 Conv (conv nodes)"
        }
    }
    fn stage(&self) -> Stage {
        Stage::BeforeCodegen
    }
    fn run(&self, model: &mut TypedModel) -> TractResult<usize> {
        if env_off(NO_PANELCONV_ENV) {
            return Ok(0);
        }
        Ok(swap_convs(model, fdirect::chosen(), self.pointwise))
    }
}

/// Swaps every f32 conv of `model` that [`plan`] takes for a [`PanelConv`] (on lookout's kernels
/// for `isa` when given), and, when `pointwise`, on lookout's kernel every 1x1 conv tract's
/// declutter made a matrix product ([`plan_pointwise`]), with the bias add and the LeakyRelu or
/// Relu that alone read it folded in; how many it swapped.
fn swap_convs(model: &mut TypedModel, isa: Option<fdirect::Isa>, pointwise: bool) -> usize {
    let mut swaps = vec![];
    for node in model.nodes() {
        let planned = if let Some(conv) = node.op_as::<Conv>() {
            plan(model, node, conv, isa).map(|op| (op, None))
        } else if let (Some(isa), Some(einsum), true) = (isa, node.op_as::<EinSum>(), pointwise) {
            plan_pointwise(model, node, einsum, isa)
        } else {
            continue;
        };
        match planned {
            Ok((mut op, bias_add)) => {
                let mut absorbed: Vec<(usize, OutletId)> = vec![];
                let mut wire = OutletId::new(node.id, 0);
                if let Some(add) = bias_add {
                    absorbed.push((add, wire));
                    wire = OutletId::new(add, 0);
                }
                // The LeakyRelu, Relu or Silu that alone reads the output, unless that output is
                // also a model output.
                let act = match model.outlet_successors(wire) {
                    [only] if !model.outputs.contains(&wire) => {
                        let next = &model.nodes()[only.node];
                        activation(model, next, wire).map(|a| (only.node, a))
                    }
                    _ => None,
                };
                let act = act.filter(|(_, act)| op.params.kernel.can_fuse(*act));
                if let Some((id, act)) = act {
                    if let Some(p) = Arc::get_mut(&mut op.params) {
                        p.act = act;
                    }
                    absorbed.push((id, wire));
                }
                swaps.push((node.id, op, absorbed));
            }
            Err(why) => log::debug!("{}: left to tract's conv: {why}", node.name),
        }
    }
    let n = swaps.len();
    for (id, op, absorbed) in swaps {
        model.node_mut(id).op = Box::new(op);
        for (node, keep) in absorbed {
            into_identity(model, node, keep);
        }
    }
    n
}

/// Makes `node` an identity of its input `keep`: its other inputs (a Relu's constant zero, a
/// bias) are unhooked, as an identity has one input; tract then removes it.
fn into_identity(model: &mut TypedModel, node: usize, keep: OutletId) {
    for (slot, input) in model.node(node).inputs.clone().into_iter().enumerate() {
        let succ = &mut model.node_mut(input.node).outputs[input.slot].successors;
        succ.retain(|s| *s != InletId::new(node, slot));
    }
    model.node_mut(keep.node).outputs[keep.slot]
        .successors
        .push(InletId::new(node, 0));
    let n = model.node_mut(node);
    n.inputs = vec![keep];
    n.op = Box::new(Identity);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testvals::values;
    use tract_core::ops::change_axes::wire_with_rank_broadcast;
    use tract_core::ops::cnn::{KernelFormat, PaddingSpec, PoolSpec};
    use tract_core::ops::math::max;
    use tract_core::ops::nn::{leaky_relu, silu::silu, DataFormat};
    use tract_linalg::multithread::{multithread_tract_scope, Executor};

    type Pair = (usize, usize);
    /// c_in, c_out, input (h, w), kernel, stride, dilation, pads (before, after).
    type Case = (
        usize,
        usize,
        Pair,
        Pair,
        Pair,
        Pair,
        ([usize; 2], [usize; 2]),
        usize,
    );

    /// One conv (`c_in → c_out` in `group` groups, kernel, stride, dilation, pads before and
    /// after) on a `[1, c_in, h, w]` source (`[c_in, h, w]`, tract's CHW, unless `batched`), with
    /// the activation `act` after it (a LeakyRelu, a Relu as `max(x, 0)` at slope 0, or tract's
    /// Silu), and (when `shared`) its output also a model output, so that the activation cannot
    /// be folded in.
    #[allow(clippy::too_many_arguments)]
    fn model(
        c_in: usize,
        c_out: usize,
        hw: Pair,
        k: Pair,
        s: Pair,
        d: Pair,
        pads: ([usize; 2], [usize; 2]),
        group: usize,
        act: Act,
        shared: bool,
        batched: bool,
    ) -> TypedModel {
        let mut m = TypedModel::default();
        let x = m
            .add_source("x", f32::fact(input_shape(c_in, hw, batched)))
            .unwrap();
        let w = Tensor::from_shape(
            &[c_out, c_in / group, k.0, k.1],
            &values(c_out * c_in / group * k.0 * k.1, 7),
        )
        .unwrap();
        let w = m.add_const("w", w).unwrap();
        let b = m.add_const("b", tensor1(&values(c_out, 11))).unwrap();
        let conv = Conv {
            pool_spec: PoolSpec {
                data_format: if batched {
                    DataFormat::NCHW
                } else {
                    DataFormat::CHW
                },
                kernel_shape: tvec![k.0, k.1],
                padding: PaddingSpec::Explicit(
                    pads.0.iter().copied().collect(),
                    pads.1.iter().copied().collect(),
                ),
                dilations: Some(tvec![d.0, d.1]),
                strides: Some(tvec![s.0, s.1]),
                input_channels: c_in,
                output_channels: c_out,
            },
            kernel_fmt: KernelFormat::OIHW,
            group,
            q_params: None,
        };
        let y = m.wire_node("conv", conv, &[x, w, b]).unwrap()[0];
        let mut outputs = vec![];
        match act {
            Act::Leaky(0.0) => {
                let zero = m.add_const("zero", tensor0(0f32)).unwrap();
                let relu = wire_with_rank_broadcast("act", &mut m, max(), &[y, zero]).unwrap();
                outputs.push(relu[0]);
            }
            Act::Leaky(alpha) => {
                outputs.push(m.wire_node("act", leaky_relu(alpha), &[y]).unwrap()[0])
            }
            Act::Silu => outputs.push(m.wire_node("act", silu(), &[y]).unwrap()[0]),
            Act::Linear => {}
        }
        if shared || act == Act::Linear {
            outputs.push(y);
        }
        m.select_output_outlets(&outputs).unwrap();
        m
    }

    fn input_shape(c_in: usize, hw: Pair, batched: bool) -> Vec<usize> {
        let chw = [c_in, hw.0, hw.1];
        if batched {
            [&[1][..], &chw].concat()
        } else {
            chw.to_vec()
        }
    }

    pub(super) fn run(model: &TypedModel, threads: usize, x: &Tensor) -> Vec<Tensor> {
        let plan = model
            .clone()
            .into_runnable_with_options(&super::super::run_options(threads))
            .unwrap();
        let go = || {
            plan.run(tvec!(x.clone().into()))
                .unwrap()
                .into_iter()
                .map(|t| t.into_tensor())
                .collect()
        };
        if threads > 1 {
            multithread_tract_scope(Executor::multithread(threads), go)
        } else {
            go()
        }
    }

    /// Against tract's own plan of the same conv, on tract's product and (where the CPU has AVX2
    /// and FMA) on lookout's direct kernel: one-row panels at stride 1, gathered panels (stride 2,
    /// lines shorter than a panel, a partial last panel), dilation, a 1x3 kernel, padding after
    /// only, rows long enough for tract's direct spatial conv and depthwise convs (3x3, 5x5,
    /// strided, dilated; lookout's kernels only), channel counts that are not a multiple of four,
    /// with and without a fused LeakyRelu, with and without a batch axis, at 1 and 3 threads.
    #[test]
    fn same_as_tracts_plan() {
        #[rustfmt::skip]
        let cases: &[Case] = &[
            (8, 16, (20, 37), (3, 3), (1, 1), (1, 1), ([1, 1], [1, 1]), 1),
            (5, 12, (21, 40), (3, 3), (2, 2), (1, 1), ([1, 1], [1, 1]), 1),
            (4, 8, (9, 7), (3, 3), (1, 1), (2, 2), ([2, 2], [2, 2]), 1),
            (6, 4, (13, 30), (1, 3), (1, 1), (1, 1), ([0, 1], [0, 1]), 1),
            (3, 20, (16, 16), (3, 3), (2, 2), (1, 1), ([0, 0], [1, 1]), 1),
            (3, 7, (11, 270), (3, 3), (2, 2), (1, 1), ([1, 1], [1, 1]), 1),
            (2, 5, (5, 131), (3, 5), (1, 3), (1, 2), ([1, 2], [0, 3]), 1),
            (6, 32, (10, 21), (3, 3), (1, 1), (1, 1), ([1, 1], [1, 1]), 1),
            (3, 2, (7, 9), (3, 3), (1, 1), (1, 1), ([1, 1], [1, 1]), 1),
            // Depthwise (group = channels): lookout's kernel only.
            (8, 8, (20, 37), (3, 3), (1, 1), (1, 1), ([1, 1], [1, 1]), 8),
            (5, 5, (21, 70), (3, 3), (2, 2), (1, 1), ([0, 0], [1, 1]), 5),
            (6, 6, (13, 150), (5, 5), (2, 2), (1, 1), ([1, 1], [2, 2]), 6),
            (4, 4, (9, 7), (3, 3), (1, 1), (2, 2), ([2, 2], [2, 2]), 4),
            // 1x1 at stride 1 (tract's matrix product; lookout's kernel only): a last partial
            // 16-column step, channel tiles of six and four, blocks of 16 columns for many inputs.
            (8, 16, (20, 37), (1, 1), (1, 1), (1, 1), ([0, 0], [0, 0]), 1),
            (300, 10, (5, 7), (1, 1), (1, 1), (1, 1), ([0, 0], [0, 0]), 1),
            (24, 48, (16, 16), (1, 1), (1, 1), (1, 1), ([0, 0], [0, 0]), 1),
            (3, 2, (1, 5), (1, 1), (1, 1), (1, 1), ([0, 0], [0, 0]), 1),
        ];
        // tract's product, then lookout's kernels on each instruction set the CPU runs.
        let kernels: Vec<Option<fdirect::Isa>> = std::iter::once(None)
            .chain(fdirect::Isa::all().into_iter().map(Some))
            .collect();
        for &isa in &kernels {
            let direct = isa.is_some();
            for &(c_in, c_out, hw, k, s, d, pads, group) in cases {
                // tract's direct spatial conv keeps rows of 128 or more and grouped convs stay
                // with tract, unless lookout's kernels run.
                let pointwise = k == (1, 1) && s == (1, 1) && pads == ([0, 0], [0, 0]);
                if !direct
                    && ((hw.1 + pads.0[1] + pads.1[1]) / s.1 >= 128 || group > 1 || pointwise)
                {
                    continue;
                }
                for (act, shared, batched) in [
                    (Act::Linear, false, true),
                    (Act::Leaky(0.1), false, true),
                    (Act::Leaky(0.1), true, true),
                    (Act::Leaky(0.1), false, false),
                    (Act::Leaky(0.0), false, true),
                    (Act::Silu, false, true),
                    (Act::Silu, true, false),
                ] {
                    let activated = act != Act::Linear;
                    let tract = model(c_in, c_out, hw, k, s, d, pads, group, act, shared, batched);
                    let mut ours = tract.clone().into_decluttered().unwrap();
                    let n = swap_convs(&mut ours, isa, true);
                    assert_eq!(n, 1, "{c_in}→{c_out} {hw:?} k {k:?} s {s:?}");
                    let ours = ours.into_optimized().unwrap();
                    let names: Vec<String> = ours
                        .nodes()
                        .iter()
                        .map(|n| n.op().name().to_string())
                        .collect();
                    assert!(names.iter().any(|n| n == "PanelConv"), "{names:?}");
                    // Folded in: no LeakyRelu, Relu or Silu left, unless the conv's output is read
                    // twice or the kernel cannot fuse it (SVE's f32 kernel under qemu-aarch64, a
                    // Silu on tract's or the AVX2 kernels).
                    let op = ours
                        .nodes()
                        .iter()
                        .find_map(|n| n.op_as::<PanelConv>())
                        .unwrap();
                    match &op.params.kernel {
                        Kernel::Tract(_) => assert!(!direct),
                        Kernel::Direct(_) => assert!(direct && group == 1 && !pointwise),
                        Kernel::Depthwise(_) => assert!(direct && group > 1),
                        Kernel::Pointwise(..) => assert!(direct && pointwise),
                    }
                    // The bias add tract's declutter put after a 1x1 conv's product is folded in.
                    assert!(
                        !pointwise || !names.iter().any(|n| n.contains("Add")),
                        "{names:?}"
                    );
                    let fused = op.params.act != Act::Linear;
                    assert!(!fused || (op.params.act == act && !shared));
                    assert_eq!(
                        names
                            .iter()
                            .any(|n| ["LeakyRelu", "Max", "Silu"].iter().any(|a| n.contains(a))),
                        activated && !fused,
                        "{names:?}"
                    );
                    if activated && !shared && cfg!(target_arch = "x86_64") {
                        let can = act != Act::Silu || isa == Some(fdirect::Isa::Avx512);
                        assert_eq!(fused, can, "x86-64's f32 kernels fuse {act:?} ({isa:?})");
                    }
                    let tract = tract.into_optimized().unwrap();
                    let x = Tensor::from_shape(
                        &input_shape(c_in, hw, batched),
                        &values(c_in * hw.0 * hw.1, 3),
                    )
                    .unwrap();
                    let want = run(&tract, 1, &x);
                    for threads in [1, 3] {
                        let got = run(&ours, threads, &x);
                        assert_eq!(want.len(), got.len());
                        for (a, b) in want.iter().zip(&got) {
                            assert_eq!(a.shape(), b.shape());
                            let a = a.to_plain_array_view::<f32>().unwrap();
                            let b = b.to_plain_array_view::<f32>().unwrap();
                            for (x, y) in a.iter().zip(b.iter()) {
                                assert!(
                                    (x - y).abs() <= 1e-5 * (1.0 + x.abs()),
                                    "{c_in}→{c_out} {hw:?} k {k:?} s {s:?} d {d:?} {act:?} \
                                 threads {threads} kernel {isa:?}: tract {x}, ours {y}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
