//! The attention fixture (tests/fixtures/models/rowmatmul, models/tools/make_rowmatmul_fixture.py)
//! that `engine_rowmatmul` and `engine_storeorder` plan in their ways and run alike.

use std::path::PathBuf;

use tract_onnx::prelude::*;

/// Cached tokens in every case of the fixture.
pub const PAST: usize = 37;

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models/rowmatmul")
}

/// The fixture's outputs (ctx, shared, grouped, self, flattened) for its `seq`-token inputs.
pub fn run(plan: &Arc<TypedRunnableModel>, seq: usize) -> Vec<f32> {
    let input = |name: &str, shape: &[usize]| -> TValue {
        let v = super::read_f32(&dir().join(format!("{seq}-{name}.bin")));
        Tensor::from_shape(shape, &v).expect(name).into()
    };
    let out = plan
        .run(tvec!(
            input("h", &[1, seq, 80]),
            input("past_k", &[1, 4, PAST, 20]),
            input("past_v", &[1, 4, PAST, 20]),
            input("share_v", &[1, 1, PAST, 20]),
            input("group_k", &[1, 2, PAST, 20]),
        ))
        .expect("run");
    let got = super::f32_outputs(&out);
    assert_eq!(
        got.len(),
        seq * 80 + 4 * seq * 20 + 4 * seq * PAST + 4 * seq * seq
    );
    got
}
