//! The arithmetic precision a float model runs in (`[detector] precision`, `--precision`): f32, or
//! f16 on ARM cores with FP16 arithmetic (Cortex-A76 in a Pi 5, A78 in a Jetson Orin). f16 is
//! tract's own machinery: its `FloatPrecisionTranslator` rewrites the typed graph to f16 before
//! optimisation, and tract-linalg then picks its `arm64fp16` kernels at run time when the CPU
//! reports FP16 (`asimdhp` in `/proc/cpuinfo`, or an A55/A75 part number; `TRACT_CPU_ISA=+fp16`
//! switches the matrix kernels only, not the depthwise convolution). The session boundary stays
//! f32 (a cast after the input, one before each output), so nothing above `engine/` changes.
//!
//! Where the CPU has no FP16 arithmetic (every x86 lookout targets, a Pi 4's A72, an old Jetson's
//! A57) tract computes f16 by converting every element to f32 and back: slower than f32 and no
//! more exact, so [`check_supported`] refuses it with an error naming the key, unless
//! [`F16_EMULATED_ENV`] asks for the emulated run (tests and A/B checks of the rewrite on x86).

use std::path::Path;

use tract_core::floats::FloatPrecisionTranslator;
use tract_core::internal::translator::Translate;
use tract_core::internal::*;
use tract_core::ops::cast::cast;
use tract_core::ops::konst::Const;
use tract_core::ops::source::TypedSource;

use crate::error::{Error, Result};

/// The precision a detector's float arithmetic runs in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// The model's own precision (the default: every board's measured figures are f32).
    #[default]
    F32,
    /// Half precision: weights and activations in f16, inputs and outputs still f32.
    F16,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            other => Err(format!(
                "precision {other:?} is not one of \"f32\", \"f16\""
            )),
        }
    }
}

/// Set to `1` to run f16 where the CPU has no FP16 arithmetic (tract emulates it through f32):
/// for checking the f16 graph on x86, never for speed.
pub const F16_EMULATED_ENV: &str = "LOOKOUT_F16_EMULATED";

/// Whether this CPU computes in f16 natively, as tract-linalg sees it (its kernel dispatch asks
/// the same question, after `TRACT_CPU_ISA`'s edits).
pub fn f16_native() -> bool {
    tract_linalg::isa::native().fp16_arithmetic()
}

fn emulation_allowed() -> bool {
    std::env::var(F16_EMULATED_ENV).is_ok_and(|v| v == "1")
}

/// Refuses `precision` where it would only cost: f16 on a CPU without FP16 arithmetic.
pub(crate) fn check_supported(precision: Precision, path: &Path) -> Result<()> {
    if precision == Precision::F16 && !f16_native() {
        if emulation_allowed() {
            log::warn!(
                "{}: precision f16 on a CPU without FP16 arithmetic ({:?}): emulated, slower than f32",
                path.display(),
                tract_linalg::isa::native()
            );
            return Ok(());
        }
        return Err(Error::model(
            path,
            format!(
                "precision \"f16\" ([detector] precision / --precision) needs a CPU with FP16 \
                 arithmetic (ARMv8.2 FP16: Cortex-A55/A75/A76/A78, Apple M); this one ({:?}) would \
                 emulate it, slower than f32: use precision = \"f32\" ({F16_EMULATED_ENV}=1 runs \
                 it emulated anyway, for checking)",
                tract_linalg::isa::native()
            ),
        ));
    }
    Ok(())
}

/// The typed (not yet optimised) `model` with its f32 arithmetic in f16, its inputs and outputs
/// still f32. Refuses a quantized model: its scales and zero points are f32 by contract, and int8
/// already is the smaller, faster path.
pub(crate) fn to_f16(model: &TypedModel) -> TractResult<TypedModel> {
    if let Some(node) = model.nodes().iter().find(|n| {
        n.outputs.iter().any(|o| {
            o.fact.datum_type.is_quantized()
                || o.fact.datum_type.unquantized() == i8::datum_type()
                || o.fact.datum_type.unquantized() == u8::datum_type()
        })
    }) {
        bail!(
            "precision f16 is for float models, and this one is quantized (node '{}' computes \
             in {:?}): use precision = \"f32\" with an int8 model",
            node.name,
            node.outputs
                .iter()
                .map(|o| o.fact.datum_type)
                .collect::<Vec<_>>()
        );
    }
    let keep = stays_f32(model);
    let mut m = FloatPrecisionTranslator::with_filter(f32::datum_type(), f16::datum_type(), {
        let keep = keep.clone();
        move |node| !keep.contains(&node.id)
    })
    .translate_model(model)?;
    if !keep.is_empty() {
        log::debug!("f16: {} node(s) left on f32", keep.len());
    }
    // The translator turns the inputs themselves to f16. Put each back to f32 with a cast behind
    // it: first a cast f16 -> f16 takes over the input's consumers (same fact, so tract's patch
    // accepts the swap), then the input itself becomes f32 again.
    for outlet in m.input_outlets()?.to_vec() {
        let fact = m.outlet_fact(outlet)?.clone();
        if fact.datum_type != f16::datum_type() {
            continue;
        }
        let name = m.node(outlet.node).name.clone();
        let mut patch = TypedModelPatch::default();
        let tap = patch.tap_model(&m, outlet)?;
        let half = patch.wire_node(format!("{name}.to_f16"), cast(f16::datum_type()), &[tap])?[0];
        patch.shunt_outside(&m, outlet, half)?;
        patch.apply(&mut m)?;
        let mut f32_fact = fact;
        f32_fact.datum_type = f32::datum_type();
        m.node_mut(outlet.node).op = Box::new(TypedSource::new(f32_fact.clone()));
        m.set_outlet_fact(outlet, f32_fact)?;
    }
    // And every f16 output gets a cast back to f32.
    let mut outputs = m.output_outlets()?.to_vec();
    for o in outputs.iter_mut() {
        if m.outlet_fact(*o)?.datum_type == f16::datum_type() {
            let name = format!("{}.to_f32", m.node(o.node).name);
            *o = m.wire_node(name, cast(f32::datum_type()), &[*o])?[0];
        }
    }
    m.select_output_outlets(&outputs)?;
    Ok(m)
}

/// The nodes the f16 graph leaves in f32 (the translator casts around them): every `Resize`, whose
/// scales input tract reads as f32 whatever the data's type (translated, its eval fails with
/// "tensor is F16, accessed as F32") and whose data tract resamples in f32 anyway, so an f32
/// section costs nothing and keeps lookout's `PlannedResize` on its fast path; and the constants
/// that feed only such nodes (scales rounded through f16 would change the output size).
fn stays_f32(model: &TypedModel) -> std::collections::HashSet<usize> {
    let mut keep: std::collections::HashSet<usize> = model
        .nodes()
        .iter()
        // By name: before decluttering the op is tract-onnx's `Resize`, after it tract-core's.
        .filter(|n| n.op.name() == "Resize")
        .map(|n| n.id)
        .collect();
    let params: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| n.op_is::<Const>())
        .filter(|n| {
            let succ = &n.outputs[0].successors;
            !succ.is_empty()
                && succ
                    .iter()
                    .all(|inlet| inlet.slot > 0 && keep.contains(&inlet.node))
        })
        .map(|n| n.id)
        .collect();
    keep.extend(params);
    keep
}
