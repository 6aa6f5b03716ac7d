//! `FusedAttention` (src/engine/attention.rs), `Gelu` (src/engine/gelu.rs) and the sessions'
//! `PanelConv` (src/engine/fconv.rs, `PanelConvPass::CONV_NODES`) on real graphs: the tiny random-weight
//! vision encoders of SmolVLM (SigLIP) and Florence-2 (DaViT), the real architectures at a small
//! width (tests/fixtures/vlm), as lookout's VLM sessions plan them, each with and without one pass
//! (`LOOKOUT_NO_ATTENTION=1`, `LOOKOUT_NO_GELU=1`, `LOOKOUT_NO_PANELCONV=1`):
//! - which nodes the pass takes (counted in the plans' profiles): SigLIP's self-attention in each
//!   of its 2 layers, DaViT's window attention in each of its 4 spatial blocks (its channel
//!   attention, a softmax over channels summed over tokens, stays tract's); SigLIP's tanh GELU in
//!   each layer (DaViT's GELU is the erf one, not taken); DaViT's 20 convs (4 stage convs, 16
//!   depthwise) on lookout's conv kernels;
//! - the image features agree to float rounding, and where the pass took something they are not
//!   bit-identical (the op ran: another order of sums, another exponential). tests/vlm_smolvlm.rs
//!   and tests/vlm_florence2.rs hold the same encoders, with every pass, to transformers' features.
//!
//! FusedAttention and Gelu need AVX-512F: on a CPU without it they take nothing and this test
//! skips (a failure under `LOOKOUT_REQUIRE_ALL=1`, as CI runs it).

mod common;

use common::vision::{values, vision_session, FLORENCE2, SMOLVLM};
use lookout::engine::onnx::ElemType;
use lookout::engine::session::{Session, Value};
use lookout::engine::{NO_ATTENTION_ENV, NO_GELU_ENV, NO_PANELCONV_ENV};

fn has_avx512f() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

type Inputs = &'static [(&'static str, ElemType, &'static [usize])];

/// Nodes of the op kind `op` in `session`'s plan.
fn nodes(session: &Session, inputs: Inputs, op: &str) -> usize {
    let profile = session.profile(values(inputs), 1).expect("profile");
    profile.iter().filter(|p| p.op == op).map(|p| p.nodes).sum()
}

/// `model` planned without and with the pass `switch` turns off: `taken` nodes of `op` in one
/// plan and none in the other, and the features against each other.
fn with_and_without(model: &str, inputs: Inputs, switch: &str, op: &str, taken: usize) {
    // Only this function sets the variables, and the tests calling it run one after the other
    // (one #[test]); each is read when a session is planned.
    std::env::set_var(switch, "1");
    let without = vision_session(model, inputs);
    std::env::remove_var(switch);
    let ours = vision_session(model, inputs);
    assert_eq!(nodes(&ours, inputs, op), taken, "{model}: {op}");
    assert_eq!(
        nodes(&without, inputs, op),
        0,
        "{model}: {op} under {switch}"
    );
    let features = |v: &[Value]| v[0].as_f32().expect("f32 features").to_vec();
    let want = features(&without.run(values(inputs)).expect("run without"));
    let got = features(&ours.run(values(inputs)).expect("run"));
    assert_eq!(got.len(), want.len(), "{model}");
    if taken > 0 {
        assert!(
            got.iter()
                .zip(&want)
                .any(|(a, b)| a.to_bits() != b.to_bits()),
            "{model}: bit-identical features, so {op} did not run"
        );
    }
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * scale,
            "{model} {op} #{i}: {g} vs tract's plan {w}"
        );
    }
}

#[test]
fn the_vision_encoders_agree_with_and_without_each_fused_op() {
    if !has_avx512f() {
        common::skip("this CPU has no AVX-512F; the passes leave every node to tract");
        return;
    }
    with_and_without(
        "smolvlm-tiny",
        SMOLVLM,
        NO_ATTENTION_ENV,
        "FusedAttention",
        2,
    );
    with_and_without(
        "florence2-tiny",
        FLORENCE2,
        NO_ATTENTION_ENV,
        "FusedAttention",
        4,
    );
    with_and_without("smolvlm-tiny", SMOLVLM, NO_GELU_ENV, "Gelu", 2);
    with_and_without("florence2-tiny", FLORENCE2, NO_GELU_ENV, "Gelu", 0);
    with_and_without(
        "florence2-tiny",
        FLORENCE2,
        NO_PANELCONV_ENV,
        "PanelConv",
        20,
    );
    // The softmaxes left to tract: DaViT's 4 channel-attention blocks, none of SigLIP's.
    let softmaxes = |model, inputs| nodes(&vision_session(model, inputs), inputs, "Softmax");
    assert_eq!(softmaxes("smolvlm-tiny", SMOLVLM), 0);
    assert_eq!(softmaxes("florence2-tiny", FLORENCE2), 4);
}
