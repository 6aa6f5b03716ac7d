//! A decoder's element-wise ops, two changes to how tract runs them:
//!
//! - Sessions tell tract that their symbolic lengths are at least 1, a past at least 0
//!   (src/engine/session.rs, `assert_lengths`): tract then proves that an element-wise op over
//!   `[1, S, 1536]` is long enough for its unicast and by-scalar kernels, instead of running its
//!   generic broadcasting loop on every decoder step. The same bound is declared for the fresh
//!   symbols of the sub-plans QMatMul and RowMatMul run for several rows
//!   (`qmatmul::fresh_symbols`), whose dequantising multiply then runs tract's by-scalar kernel.
//! - `BlockBinary` (src/engine/blockbin.rs) takes the broadcasting `Add`/`Sub`/`Mul`s tract still
//!   leaves on that loop (the rotary embedding's `q · cos` over heads, the attention mask).
//!
//! On the tiny random-weight SmolVLM decoders, fp32 and int8 (tests/fixtures/vlm/smolvlm-tiny, the
//! real merged decoder graph at a small width), each planned with and without the change
//! (`LOOKOUT_NO_LENGTH_ASSERTIONS=1`, `LOOKOUT_NO_BLOCKBINARY=1`): with it the fp32 plan holds the
//! ops it lacked, and the logits and the present keys and values are bit-identical for a prompt
//! (5 tokens, empty past: QMatMul's several-row sub-plans) and a step (1 token after 3). The VLM
//! tests hold the same sessions to onnxruntime's tokens.

mod common;

use lookout::engine::onnx::OnnxFile;
use lookout::engine::session::{Session, SessionOptions, Value, NO_LENGTH_ASSERTIONS_ENV};
use lookout::engine::NO_BLOCKBINARY_ENV;
use lookout::vlm::smolvlm::{decoder_specs, Config};

/// The tiny model's config (its sizes).
fn config() -> Config {
    Config::load(&common::fixture("vlm/smolvlm-tiny/config.json")).expect("config")
}

fn load(file: &str) -> Session {
    let path = common::fixture(&format!("vlm/smolvlm-tiny/onnx/{file}"));
    let file = OnnxFile::read(&path).expect("read");
    // The loader's own specs: P a past (may be empty), S at least 1.
    let specs = decoder_specs(&config());
    Session::from_file(file, &specs, &SessionOptions { threads: 1 }).expect("load")
}

/// A step of `s` new tokens after `p` past ones, deterministic values.
fn inputs(session: &Session, p: usize, s: usize) -> Vec<Value> {
    let cfg = config();
    let (hidden, kv_heads, head_dim) = (cfg.hidden_size, cfg.num_kv_heads, cfg.head_dim);
    let f = |n: usize, seed: usize| -> Vec<f32> {
        (0..n)
            .map(|i| (((i * 31 + seed) % 97) as f32 - 48.0) / 60.0)
            .collect()
    };
    session
        .input_names()
        .iter()
        .enumerate()
        .map(|(slot, name)| match name.as_str() {
            "inputs_embeds" => Value::f32(&[1, s, hidden], f(s * hidden, 1)),
            "attention_mask" => Value::i64(&[1, p + s], vec![1; p + s]),
            "position_ids" => Value::i64(&[1, s], (p..p + s).map(|x| x as i64).collect()),
            _ => Value::f32(
                &[1, kv_heads, p, head_dim],
                f(kv_heads * p * head_dim, slot),
            ),
        })
        .collect::<Result<_, _>>()
        .expect("inputs")
}

/// How many nodes of the plan run an op whose name contains one of `names`.
fn ops(session: &Session, names: &[&str]) -> usize {
    session
        .profile(inputs(session, 0, 5), 1)
        .expect("profile")
        .iter()
        .filter(|o| names.iter().any(|n| o.op.contains(n)))
        .map(|o| o.nodes)
        .sum()
}

#[test]
fn each_change_takes_its_ops_and_changes_no_bit() {
    // One test for both variables: they are read when a session is planned, and no other test in
    // this file may plan meanwhile.
    let changes: [(&str, &[&str]); 2] = [
        (NO_LENGTH_ASSERTIONS_ENV, &["Unicast", "ByScalar"]),
        (NO_BLOCKBINARY_ENV, &["BlockBinary"]),
    ];
    for (var, names) in changes {
        for file in [
            "decoder_model_merged.onnx",
            "decoder_model_merged_int8.onnx",
        ] {
            std::env::set_var(var, "1");
            let without = load(file);
            std::env::remove_var(var);
            let ours = load(file);
            if file == "decoder_model_merged.onnx" {
                let (n_without, n_ours) = (ops(&without, names), ops(&ours, names));
                assert!(
                    n_ours > n_without,
                    "{names:?} ops: {n_ours} with the change, {n_without} without ({var}=1)"
                );
            }
            for (p, s) in [(0, 5), (3, 1)] {
                let want = without.run(inputs(&without, p, s)).expect("run without");
                let got = ours.run(inputs(&ours, p, s)).expect("run");
                assert_eq!(got.len(), want.len());
                for (ix, (g, w)) in got.iter().zip(&want).enumerate() {
                    let what = format!(
                        "{var}: {file}, past {p}, {s} tokens: {}",
                        ours.output_names()[ix]
                    );
                    assert_eq!(g.shape(), w.shape(), "{what}");
                    common::assert_bits_eq(
                        g.as_f32().expect("f32 output"),
                        w.as_f32().expect("f32 output"),
                        &what,
                    );
                }
            }
        }
    }
}
