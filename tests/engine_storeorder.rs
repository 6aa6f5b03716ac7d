//! `engine::swap_store_order` (src/engine/storeorder.rs): an encoder-style attention product with
//! its operands swapped so that tract's kernel stores down the output's contiguous axis.
//!
//! Two graphs:
//! - tests/fixtures/models/rowmatmul/attention.onnx (models/tools/make_rowmatmul_fixture.py): its
//!   `q · qᵀ` (query and key lengths the same symbol) is the one product the pass takes; the
//!   decoder products are `RowMatMul`'s or keep tract's orientation. Outputs bit-identical to the
//!   plan without the pass, and within float rounding of onnxruntime's, for 1, 3 and 9 tokens.
//! - the tiny random-weight vision encoders of SmolVLM (SigLIP: 2 products taken) and Florence-2
//!   (DaViT's window and channel attention: 9), the real graphs at a small width
//!   (tests/fixtures/vlm), loaded as lookout's VLM sessions load them, with and without the pass
//!   (`LOOKOUT_NO_STOREORDER=1`): the image features are bit-identical. Where the CPU has
//!   AVX-512F, `FusedAttention` (tests/engine_encoder_ops.rs) takes SigLIP's and DaViT's window
//!   attention chains first in both plans, and this pass sees what is left.

mod common;

use lookout::engine::{replace_row_matmul, run_options, swap_store_order, NO_STOREORDER_ENV};
use tract_onnx::prelude::*;

use common::attention::{dir, run};
use common::vision::{values, vision_session, FLORENCE2, SMOLVLM};
use lookout::engine::session::Value;

/// The fixture decluttered, `RowMatMul` swapped in (as lookout's sessions plan it), then this
/// pass or not; the plan and how many products the pass swapped.
fn plan(pass: bool) -> (Arc<TypedRunnableModel>, usize) {
    let mut model = tract_onnx::onnx()
        .model_for_path(dir().join("attention.onnx"))
        .and_then(|m| m.into_typed())
        .and_then(|m| m.into_decluttered())
        .expect("load");
    replace_row_matmul(&mut model).expect("rows");
    let n = if pass {
        swap_store_order(&mut model).expect("pass")
    } else {
        0
    };
    model.optimize().expect("optimise");
    let plan = model
        .into_runnable_with_options(&run_options(1))
        .expect("plan");
    (plan, n)
}

#[test]
fn takes_the_self_product_alone_and_changes_no_bit() {
    let (ours, n) = plan(true);
    // q · qᵀ only: the decoder products against the past are RowMatMul's (no einsum left), and
    // no other einsum stores across its contiguous axis with rows to spare.
    assert_eq!(n, 1);
    let (without, _) = plan(false);
    for seq in [1, 3, 9] {
        let got = run(&ours, seq);
        common::assert_bits_eq(&got, &run(&without, seq), &format!("{seq} tokens"));
        let ort = common::read_f32(&dir().join(format!("{seq}-ort.bin")));
        common::assert_near_onnxruntime(&got, &ort, 1e-5, &format!("{seq} tokens"));
    }
}

#[test]
fn the_vision_encoders_give_the_same_bits_with_and_without_the_pass() {
    for (model, inputs) in [("smolvlm-tiny", SMOLVLM), ("florence2-tiny", FLORENCE2)] {
        // The only test in this file that sets the variable; it is read when a session is planned.
        std::env::set_var(NO_STOREORDER_ENV, "1");
        let without = vision_session(model, inputs);
        std::env::remove_var(NO_STOREORDER_ENV);
        let ours = vision_session(model, inputs);
        let want = without.run(values(inputs)).expect("run without");
        let got = ours.run(values(inputs)).expect("run");
        let features = |v: &[Value]| v[0].as_f32().expect("f32 features").to_vec();
        assert!(!features(&got).is_empty(), "{model}");
        common::assert_bits_eq(&features(&got), &features(&want), model);
    }
}
