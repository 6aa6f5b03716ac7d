//! lookout's QDQ pass (`QdqConvPass`, src/engine/qdq.rs): `DequantizeLinear → Conv →
//! QuantizeLinear` onto `QConv`, against tract's untouched plan (`LOOKOUT_PLAIN_TRACT`'s: a float
//! conv between the two) and onnxruntime (which fuses each chain into `QLinearConv`), on small
//! random graphs (`models/tools/make_qdq_fixture.py`), and on the shipped nanodet-g-int8-qdq.

mod common;

use tract_onnx::prelude::*;

/// Bytes of `a` and `b` (u8 or i8 outputs) that differ, and the largest difference.
fn differences(a: &Tensor, b: &Tensor) -> (usize, i32) {
    let signed = a.datum_type().unquantized() == DatumType::I8;
    let v = |x: u8| if signed { x as i8 as i32 } else { x as i32 };
    a.as_bytes()
        .iter()
        .zip(b.as_bytes())
        .map(|(p, q)| (v(*p) - v(*q)).abs())
        .filter(|d| *d > 0)
        .fold((0, 0), |(n, m), d| (n + 1, m.max(d)))
}

/// Every geometry the pass takes (3x3, strided with one weight scale, 1x1, depthwise 3x3 and
/// 5x5/2, dilated with asymmetric padding, 1x1/2 without bias) on u8 and i8 activations, and two
/// it leaves to tract (grouped; no QuantizeLinear after the conv): every quantized output equals
/// onnxruntime's byte for byte, and tract's plain plan (which rounds the float sum instead of the
/// integer one) within one step; the float output is tract's own.
#[test]
fn qdq_conv_equals_onnxruntime_and_tract() {
    let _ = env_logger::builder().is_test(true).try_init();
    for (tag, dt) in [("u8", u8::datum_type()), ("i8", i8::datum_type())] {
        let path = common::fixture(&format!("models/qdq/qdq-{tag}.onnx"));
        let shape = [1usize, 8, 13, 11];
        let bytes = std::fs::read(common::fixture(&format!("models/qdq/input-{tag}.bin"))).unwrap();
        let ort = std::fs::read(common::fixture(&format!("models/qdq/ort-{tag}.bin"))).unwrap();
        let mut input = Tensor::from_shape(&shape, &bytes).unwrap();
        unsafe { input.set_datum_type(dt) };
        let load = || {
            tract_onnx::onnx()
                .model_for_path(&path)
                .unwrap()
                .with_input_fact(0, InferenceFact::dt_shape(dt, shape))
                .unwrap()
        };
        let (ours, rewrites) = lookout::engine::optimize(load()).unwrap();
        assert_eq!(rewrites.count("QdqConv"), 7, "{tag}: {rewrites}");
        let qconvs = ours
            .nodes()
            .iter()
            .filter(|n| n.op.name() == "QConv")
            .count();
        assert_eq!(qconvs, 7, "{tag}: QConv nodes in the plan");
        let ours = ours
            .into_runnable()
            .unwrap()
            .run(tvec!(input.clone().into()))
            .unwrap();
        let plain = load()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap()
            .run(tvec!(input.into()))
            .unwrap();
        assert_eq!(ours.len(), 9);
        let mut ort_offset = 0;
        for (i, (a, b)) in ours.iter().zip(&plain).enumerate() {
            assert_eq!(a.shape(), b.shape(), "{tag} output {i}");
            if i == 8 {
                // The float conv, left to tract: the same plan on both sides.
                assert_eq!(a.as_bytes(), b.as_bytes(), "{tag}: float output");
                continue;
            }
            let (n, max) = differences(a, b);
            eprintln!("{tag} output {i}: {n} of {} differ from tract's plain plan, by at most {max}", a.len());
            assert!(max <= 1, "{tag} output {i}: {n} differ from tract's, up to {max}");
            if i < 7 {
                // The grouped conv (7) stays with tract's float conv; onnxruntime fuses it.
                let mut reference = Tensor::from_shape(a.shape(), &ort[ort_offset..][..a.len()]).unwrap();
                unsafe { reference.set_datum_type(dt) };
                ort_offset += a.len();
                assert_eq!(
                    differences(a, &reference),
                    (0, 0),
                    "{tag} output {i}: differs from onnxruntime's"
                );
            }
            let distinct: std::collections::BTreeSet<u8> = a.as_bytes().iter().copied().collect();
            assert!(distinct.len() > 16, "{tag} output {i}: degenerate ({} distinct)", distinct.len());
        }
    }
}
