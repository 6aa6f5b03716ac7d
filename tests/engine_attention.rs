//! `engine::fuse_attention` (src/engine/attention.rs) on real graphs: the tiny random-weight vision
//! encoders of SmolVLM (SigLIP) and Florence-2 (DaViT), the real architectures at a small width
//! (tests/fixtures/vlm).
//!
//! As lookout's VLM sessions plan them, with and without the pass (`LOOKOUT_NO_ATTENTION=1`):
//! - which chains it takes (counted in the plans' profiles): SigLIP's self-attention in each of
//!   its 2 layers, DaViT's window attention in each of its 4 spatial blocks; DaViT's channel
//!   attention (softmax over channels, summed over tokens) stays tract's;
//! - the image features agree to float rounding, and they are not bit-identical (the fused op
//!   ran: it adds in another order). tests/vlm_smolvlm.rs and tests/vlm_florence2.rs hold the same
//!   encoders, with the pass, to transformers' features.
//!
//! The fused kernels need AVX-512F: on a CPU without it the pass leaves every chain and this test
//! says SKIP.

mod common;

use common::vision::{values, vision_session, FLORENCE2, SMOLVLM};
use lookout::engine::session::{Session, Value};
use lookout::engine::NO_ATTENTION_ENV;

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

#[test]
fn the_vision_encoders_agree_with_and_without_the_fused_chains() {
    if !has_avx512f() {
        eprintln!("SKIP: this CPU has no AVX-512F; the pass leaves every chain to tract");
        return;
    }
    // Chains fused, softmaxes left: SigLIP's self-attention in its 2 layers; DaViT's window
    // attention in its 4 spatial blocks, its channel attention (softmax over channels, summed
    // over tokens) in the 4 channel blocks left to tract.
    for (model, inputs, fused, left) in [
        ("smolvlm-tiny", SMOLVLM, 2, 0),
        ("florence2-tiny", FLORENCE2, 4, 4),
    ] {
        // The only test in this file that sets the variable; it is read when a session is planned.
        std::env::set_var(NO_ATTENTION_ENV, "1");
        let without = vision_session(model, inputs);
        std::env::remove_var(NO_ATTENTION_ENV);
        let ours = vision_session(model, inputs);
        let nodes = |session: &Session, op: &str| {
            let profile = session.profile(values(inputs), 1).expect("profile");
            profile
                .iter()
                .filter(|p| p.op == op)
                .map(|p| p.nodes)
                .sum::<usize>()
        };
        assert_eq!(nodes(&ours, "FusedAttention"), fused, "{model}");
        assert_eq!(nodes(&ours, "Softmax"), left, "{model}");
        assert_eq!(nodes(&without, "FusedAttention"), 0, "{model}");
        let features = |v: &[Value]| v[0].as_f32().expect("f32 features").to_vec();
        let want = features(&without.run(values(inputs)).expect("run without"));
        let got = features(&ours.run(values(inputs)).expect("run"));
        assert_eq!(got.len(), want.len(), "{model}");
        assert!(
            got.iter()
                .zip(&want)
                .any(|(a, b)| a.to_bits() != b.to_bits()),
            "{model}: bit-identical features, so the fused op did not run"
        );
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-5 * scale,
                "{model} #{i}: {g} vs tract's plan {w}"
            );
        }
    }
}
