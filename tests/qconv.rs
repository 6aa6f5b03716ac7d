//! lookout's quantized convolution (`QConv`, src/engine/qconv.rs) against tract's own lowering and
//! onnxruntime on small random graphs (`models/tools/make_qconv_fixture.py`). Cheap enough to run
//! under qemu in the aarch64 stage, where tract picks other int8 kernels and packings.

mod common;

/// Every geometry `QConv` takes (3x3, strided, 1x1, depthwise 3x3 and 5x5/2, dilated with
/// asymmetric padding, 2x3 with unequal strides, per-channel weight zero points, u8 weights, no
/// bias) and one it leaves to tract (grouped), on u8 and on i8 activations
/// (`models/tools/make_qconv_fixture.py`): every conv's output equals tract's untouched plan and
/// onnxruntime's (recorded by the script), byte for byte.
///
/// On x86 with AVX2 it runs three times: with QConv's own choice of int8 kernel (on a CPU with
/// AVX-512 VNNI, lookout's direct conv: `src/engine/qdirect.rs`), with tract's kernel and with
/// lookout's AVX2 kernel (`LOOKOUT_I8_KERNEL`, read when a plan is made; this is the
/// only test in this binary, so nothing else sees the variable change).
#[test]
fn qconv_equals_tract_and_onnxruntime_in_every_geometry() {
    let kernels: &[Option<&str>] = if cfg!(target_arch = "x86_64") {
        &[None, Some("tract"), Some("avx2")]
    } else {
        &[None]
    };
    for kernel in kernels {
        match kernel {
            Some(k) => std::env::set_var(lookout::engine::I8_KERNEL_ENV, k),
            None => std::env::remove_var(lookout::engine::I8_KERNEL_ENV),
        }
        check_every_geometry(kernel.unwrap_or("default"));
    }
    std::env::remove_var(lookout::engine::I8_KERNEL_ENV);
}

fn check_every_geometry(kernel: &str) {
    use tract_onnx::prelude::*;
    for (tag, dt) in [("u8", u8::datum_type()), ("i8", i8::datum_type())] {
        let path = common::fixture(&format!("models/qconv/qconv-{tag}.onnx"));
        let shape = [1usize, 8, 13, 11];
        let bytes =
            std::fs::read(common::fixture(&format!("models/qconv/input-{tag}.bin"))).unwrap();
        let ort = std::fs::read(common::fixture(&format!("models/qconv/ort-{tag}.bin"))).unwrap();
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
        assert_eq!(
            rewrites.count("QConv"),
            8,
            "{tag} ({kernel} kernel): {rewrites}"
        );
        let ours = ours
            .into_runnable()
            .unwrap()
            .run(tvec!(input.clone().into()))
            .unwrap();
        let want = load()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap()
            .run(tvec!(input.into()))
            .unwrap();
        assert_eq!(ours.len(), 9);
        let mut ort_offset = 0;
        for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
            assert_eq!(a.shape(), b.shape(), "{tag} ({kernel} kernel) output {i}");
            let differing = |x: &[u8], y: &[u8]| x.iter().zip(y).filter(|(p, q)| p != q).count();
            let n = a.len();
            assert_eq!(
                differing(a.as_bytes(), b.as_bytes()),
                0,
                "{tag} ({kernel} kernel) output {i}: differs from tract's"
            );
            if i < 8 {
                // The grouped conv (last) is tract's own and is not in the onnxruntime file.
                let reference = &ort[ort_offset..ort_offset + n];
                ort_offset += n;
                assert_eq!(
                    differing(a.as_bytes(), reference),
                    0,
                    "{tag} ({kernel} kernel) output {i}: differs from onnxruntime's"
                );
            }
            let distinct: std::collections::BTreeSet<u8> = a.as_bytes().iter().copied().collect();
            assert!(
                distinct.len() > 16,
                "{tag} ({kernel} kernel) output {i}: degenerate ({} distinct values)",
                distinct.len()
            );
        }
        assert_eq!(ort_offset, ort.len());
    }
}
