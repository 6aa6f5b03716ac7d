//! `engine::replace_row_matmul` (src/engine/rowmatmul.rs) on a decoder's attention step: query
//! rows against cached keys and values, as BART and Florence-2 export it (`MatMul(q, Transpose(K))`,
//! softmax, `MatMul(p, V)`), plus a value head shared by all query heads (a broadcast batch axis),
//! key heads each shared by two query heads (grouped-query attention, as SmolVLM's) and an
//! encoder-style `q · qᵀ` whose two lengths are the same symbol, which the pass must leave.
//!
//! Fixture: tests/fixtures/models/rowmatmul, written by models/tools/make_rowmatmul_fixture.py, with
//! onnxruntime's outputs for 1, 3 and 9 query tokens. With 1 and 3 (up to 6 rows per product) the
//! products run lookout's loops: within float rounding of tract's untouched plan and of
//! onnxruntime. With 9 they run tract's own plan of the same product: bit-identical to tract's
//! whole plan.

mod common;

use lookout::engine::{replace_row_matmul, run_options};
use tract_onnx::prelude::*;

use common::attention::{dir, run};

/// The file planned with or without the pass (on the decluttered model, as lookout's sessions
/// run it), and how many products it swapped.
fn plan(pass: bool, threads: usize) -> (Arc<TypedRunnableModel>, usize) {
    plan_with(pass, threads, false)
}

/// [`plan`], optionally with the query length fixed to one token at load (as lookout's Florence-2
/// loader fixes its decoder's).
fn plan_with(pass: bool, threads: usize, one_token: bool) -> (Arc<TypedRunnableModel>, usize) {
    let mut model = tract_onnx::onnx()
        .model_for_path(dir().join("attention.onnx"))
        .expect("load");
    if one_token {
        model = model
            .with_input_fact(0, f32::fact([1, 1, 80]).into())
            .expect("fact");
    }
    let mut model = model
        .into_typed()
        .and_then(|m| m.into_decluttered())
        .expect("load");
    let n = if pass {
        replace_row_matmul(&mut model).expect("pass")
    } else {
        0
    };
    model.optimize().expect("optimise");
    let plan = model
        .into_runnable_with_options(&run_options(threads))
        .expect("plan");
    (plan, n)
}

#[test]
fn takes_the_decoder_products_and_leaves_the_encoder_one() {
    let (_, n) = plan(true, 1);
    // q · Kᵀ, p · V, p · shared V and the grouped q · Kᵀ; not q · qᵀ.
    assert_eq!(n, 4);
}

#[test]
fn a_decoder_fixed_to_one_token_is_taken_whole() {
    let (ours, n) = plan_with(true, 1, true);
    // The four; q · qᵀ is now one row by one column, which has no column axis to loop over.
    assert_eq!(n, 4);
    let (tract, _) = plan_with(false, 1, true);
    let got = run(&ours, 1);
    common::assert_near_onnxruntime(&got, &run(&tract, 1), 1e-5, "fixed one token vs tract");
    let ort = common::read_f32(&dir().join("1-ort.bin"));
    common::assert_near_onnxruntime(&got, &ort, 1e-5, "fixed one token");
}

#[test]
fn few_query_rows_agree_with_tract_and_onnxruntime() {
    let (tract, _) = plan(false, 1);
    for seq in [1, 3] {
        let want = run(&tract, seq);
        let ort = common::read_f32(&dir().join(format!("{seq}-ort.bin")));
        for threads in [1, 2, 3] {
            let (ours, _) = plan(true, threads);
            let got = run(&ours, seq);
            let what = format!("{seq} rows, {threads} threads");
            common::assert_near_onnxruntime(&got, &want, 1e-5, &format!("{what} vs tract"));
            common::assert_near_onnxruntime(&got, &ort, 1e-5, &what);
        }
    }
}

#[test]
fn many_rows_run_tracts_plan() {
    let (tract, _) = plan(false, 1);
    let (ours, _) = plan(true, 1);
    let want = run(&tract, 9);
    let got = run(&ours, 9);
    common::assert_bits_eq(&got, &want, "nine rows");
    let ort = common::read_f32(&dir().join("9-ort.bin"));
    common::assert_near_onnxruntime(&got, &ort, 1e-5, "nine rows");
}
