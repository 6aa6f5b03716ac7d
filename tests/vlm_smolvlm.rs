//! SmolVLM on tract against the Python reference (`models/tools/make_vlm_smolvlm.py --tiny`): a
//! random-weight Idefics3 model exported to the transformers.js layout, with transformers' outputs
//! (fp32) and onnxruntime's greedy tokens (int8 / uint8) recorded at every stage.

use std::path::{Path, PathBuf};
use std::time::Instant;

use lookout::vlm::smolvlm::{LoadOptions, SmolVlm, Trace};
use lookout::vlm::{GenerateOptions, StopReason, Variant, VisionLanguageModel, VlmError};

/// Logits and features must agree with transformers to this (absolute).
const TOL: f32 = 1e-4;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vlm/smolvlm-tiny")
}

fn reference() -> serde_json::Value {
    let p = fixture().join("reference/reference.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

fn array(r: &serde_json::Value, name: &str) -> (Vec<usize>, Vec<f32>) {
    let a = &r["arrays"][name];
    let shape: Vec<usize> = a["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let bytes = std::fs::read(
        fixture()
            .join("reference")
            .join(a["file"].as_str().unwrap()),
    )
    .unwrap();
    let data: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(data.len(), shape.iter().product::<usize>(), "{name}");
    (shape, data)
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn image() -> image::RgbImage {
    image::open(fixture().join("reference/image.png"))
        .unwrap()
        .to_rgb8()
}

fn load(variant: Variant) -> SmolVlm {
    SmolVlm::load(
        &fixture(),
        &LoadOptions {
            variant,
            threads: 1,
        },
    )
    .unwrap()
}

#[test]
fn preprocessing_matches_the_transformers_image_processor() {
    let r = reference();
    let m = load(Variant::Fp32);
    let img = image();
    assert_eq!(
        [img.width(), img.height()],
        [
            r["image_size"][0].as_u64().unwrap() as u32,
            r["image_size"][1].as_u64().unwrap() as u32
        ]
    );
    // The 8-bit image after both Pillow Lanczos resizes (548x342 -> 2048x1278 -> 512x512; the
    // portrait 301x457 -> 1348x2048 -> 512x512). Stated tolerance: identical bytes (the resampler is
    // Pillow's fixed-point algorithm), hence identical float pixel values.
    for case in r["preprocess_cases"].as_array().unwrap() {
        let input = image::open(
            fixture()
                .join("reference")
                .join(case["image"].as_str().unwrap()),
        )
        .unwrap()
        .to_rgb8();
        let want = image::open(
            fixture()
                .join("reference")
                .join(case["pixel_values_u8"].as_str().unwrap()),
        )
        .unwrap()
        .to_rgb8();
        let got = m.preprocess().resize(&input);
        assert_eq!(got.dimensions(), want.dimensions());
        let worst = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        let differing = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        println!(
            "{}: {differing} of {} bytes differ, worst by {worst}",
            case["image"],
            want.as_raw().len()
        );
        assert_eq!(worst, 0);
    }
    // Rescale + normalise: the same float values.
    let pv = m.preprocess().pixel_values(&img);
    let stats = &r["pixel_values_stats"];
    let sum: f64 = pv.iter().map(|&x| x as f64).sum();
    assert!(
        (sum - stats["sum"].as_f64().unwrap()).abs() < 1.0,
        "sum {sum}"
    );
    for (i, f) in stats["first"].as_array().unwrap().iter().enumerate() {
        assert!(
            (pv[i] as f64 - f.as_f64().unwrap()).abs() < 1e-6,
            "pixel {i}"
        );
    }
}

#[test]
fn fp32_matches_transformers_at_every_stage() {
    let r = reference();
    let mut m = load(Variant::Fp32);
    let img = image();

    let (shape, want) = array(&r, "image_features");
    let (feats, cached, _) = m.image_features(&img).unwrap();
    assert!(!cached);
    assert_eq!(shape.iter().product::<usize>(), feats.len());
    let d = max_abs(&feats, &want);
    println!("image features: max |diff| {d:e}");
    assert!(d < TOL, "image features differ by {d}");

    assert_eq!(
        m.prompt_text(r["prompt"].as_str().unwrap())
            .unwrap()
            .replace(
                &format!(
                    "<fake_token_around_image><global-img>{}<fake_token_around_image>",
                    "<image>".repeat(64)
                ),
                "<image>"
            ),
        r["chat_prompt"].as_str().unwrap()
    );
    let prompt_ids = m.prompt_ids(r["prompt"].as_str().unwrap()).unwrap();
    assert_eq!(prompt_ids, ids(&r["input_ids"]));

    let (_, want) = array(&r, "inputs_embeds");
    let d = max_abs(&m.merged_embeddings(&prompt_ids, &feats).unwrap(), &want);
    println!("merged embeddings: max |diff| {d:e}");
    assert!(d < TOL);

    let mut trace = Trace::default();
    let opts = GenerateOptions {
        max_new_tokens: r["max_new_tokens"].as_u64().unwrap() as usize,
        time_budget: None,
    };
    let (g, _, _) = m
        .generate_from(
            &feats,
            &prompt_ids,
            &opts,
            Instant::now(),
            &mut |_| Ok(()),
            Some(&mut trace),
        )
        .unwrap();
    let (_, want) = array(&r, "prefill_logits");
    let d = max_abs(&trace.prefill_logits, &want);
    println!("prefill logits ({} values): max |diff| {d:e}", want.len());
    assert!(d < TOL);

    let greedy = ids(&r["greedy_tokens"]);
    assert_eq!(g.ids, greedy, "greedy tokens");
    assert_eq!(g.stop, StopReason::MaxTokens);
    let (shape, want) = array(&r, "step_logits");
    let v = shape[1];
    let mut worst = 0f32;
    for (i, row) in trace.step_logits.iter().enumerate().take(shape[0]) {
        worst = worst.max(max_abs(row, &want[i * v..(i + 1) * v]));
    }
    println!("logits of {} greedy steps: max |diff| {worst:e}", shape[0]);
    assert!(worst < TOL);
}

#[test]
fn generate_streams_text_and_reuses_the_frame_embedding() {
    let r = reference();
    let mut m = load(Variant::Fp32);
    let img = image();
    let opts = GenerateOptions {
        max_new_tokens: r["max_new_tokens"].as_u64().unwrap() as usize,
        time_budget: None,
    };
    let mut pieces = Vec::new();
    let g = m
        .generate(&img, r["prompt"].as_str().unwrap(), &opts, &mut |p| {
            pieces.push(p.to_string())
        })
        .unwrap();
    assert_eq!(g.token_ids, ids(&r["greedy_tokens"]));
    assert_eq!(g.text, r["greedy_text"].as_str().unwrap());
    assert_eq!(pieces.concat(), g.text);
    assert_eq!(g.prompt_tokens, r["input_ids"].as_array().unwrap().len());
    assert_eq!(m.vision_runs(), 1);

    // A second question about the same frame: no second vision run.
    let short = GenerateOptions {
        max_new_tokens: 3,
        time_budget: None,
    };
    let g2 = m
        .generate(&img, "Is the path clear?", &short, &mut |_| {})
        .unwrap();
    assert_eq!(m.vision_runs(), 1);
    assert_eq!(g2.timings.vision_ms, 0.0);
    assert_eq!(g2.token_ids.len(), 3);
    assert_eq!(g2.stop, StopReason::MaxTokens);

    // A different frame runs the encoder again.
    let mut other = img.clone();
    other.put_pixel(0, 0, image::Rgb([0, 255, 0]));
    m.generate(&other, "Is the path clear?", &short, &mut |_| {})
        .unwrap();
    assert_eq!(m.vision_runs(), 2);

    // A spent budget stops after the first token.
    let g3 = m
        .generate(
            &img,
            "Is the path clear?",
            &GenerateOptions {
                max_new_tokens: 50,
                time_budget: Some(std::time::Duration::ZERO),
            },
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(g3.stop, StopReason::TimeBudget);
    assert_eq!(g3.token_ids.len(), 1);
}

fn check_quantized(variant: Variant, key: &str) {
    let r = reference();
    let eou = r["end_of_utterance_id"].as_u64().unwrap() as u32;
    let mut want = ids(&r[key]);
    let ended = want.last() == Some(&eou);
    if ended {
        want.pop();
    }
    let mut m = load(variant);
    let g = m
        .generate(
            &image(),
            r["prompt"].as_str().unwrap(),
            &GenerateOptions {
                max_new_tokens: r["max_new_tokens"].as_u64().unwrap() as usize,
                time_budget: None,
            },
            &mut |_| {},
        )
        .unwrap();
    println!(
        "{key}: lookout {:?} ({:?}), onnxruntime {want:?}",
        g.token_ids, g.stop
    );
    assert_eq!(g.token_ids, want);
    assert_eq!(
        g.stop,
        if ended {
            StopReason::EndOfText
        } else {
            StopReason::MaxTokens
        }
    );
}

/// The int8 fixture files carry onnxruntime's value_info (shape-inference output of
/// quantize_dynamic); loading them proves lookout copes with it (tract fails at a `Cast` otherwise).
#[test]
fn int8_tokens_equal_onnxruntime_on_the_same_graphs() {
    check_quantized(Variant::Int8, "ort_int8_tokens");
    // And the logits each choice was made from, against onnxruntime's.
    let r = reference();
    let mut m = load(Variant::Int8);
    let (feats, _, _) = m.image_features(&image()).unwrap();
    let ids_ = m.prompt_ids(r["prompt"].as_str().unwrap()).unwrap();
    let mut trace = Trace::default();
    m.generate_from(
        &feats,
        &ids_,
        &GenerateOptions {
            max_new_tokens: r["max_new_tokens"].as_u64().unwrap() as usize,
            time_budget: None,
        },
        Instant::now(),
        &mut |_| Ok(()),
        Some(&mut trace),
    )
    .unwrap();
    let (shape, want) = array(&r, "int8_step_logits");
    let v = shape[1];
    let mut worst = 0f32;
    for (i, row) in trace.step_logits.iter().enumerate().take(shape[0]) {
        worst = worst.max(max_abs(row, &want[i * v..(i + 1) * v]));
    }
    println!(
        "int8: logits of {} steps vs onnxruntime: max |diff| {worst:e}",
        shape[0]
    );
    assert!(worst < TOL);
}

#[test]
fn uint8_tokens_equal_onnxruntime_on_the_same_graphs() {
    check_quantized(Variant::Uint8, "ort_uint8_tokens");
}

#[test]
fn q4_files_are_refused_naming_the_file_and_operator() {
    let err = SmolVlm::load(
        &fixture(),
        &LoadOptions {
            variant: "q4".parse().unwrap(),
            threads: 1,
        },
    )
    .unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, VlmError::Unsupported { .. }), "{msg}");
    assert!(msg.contains("decoder_model_merged_q4.onnx"), "{msg}");
    assert!(msg.contains("com.microsoft.MatMulNBits"), "{msg}");
}

fn copy_fixture(to: &Path) {
    for entry in walk(&fixture()) {
        let rel = entry.strip_prefix(fixture()).unwrap();
        let dst = to.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &dst).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_truncated_or_missing_graph_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    copy_fixture(tmp.path());
    let dec = tmp.path().join("onnx/decoder_model_merged.onnx");
    let bytes = std::fs::read(&dec).unwrap();
    std::fs::write(&dec, &bytes[..bytes.len() / 2]).unwrap();
    let err = SmolVlm::load(tmp.path(), &LoadOptions::default()).unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, VlmError::Load { .. }), "{msg}");
    assert!(msg.contains("decoder_model_merged.onnx"), "{msg}");
    assert!(msg.contains("truncated"), "{msg}");

    std::fs::remove_file(&dec).unwrap();
    let msg = SmolVlm::load(tmp.path(), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("decoder_model_merged.onnx") && msg.contains("not found"),
        "{msg}"
    );

    let msg = SmolVlm::load(
        tmp.path(),
        &LoadOptions {
            variant: Variant::Quantized,
            threads: 1,
        },
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("decoder_model_merged_quantized.onnx"), "{msg}");
}

#[test]
fn the_loader_dispatches_on_model_type_and_the_model_is_send() {
    fn is_send<T: Send>(_: &T) {}
    let m = lookout::vlm::load(&fixture(), Variant::Fp32, 1).unwrap();
    is_send(&m);
    assert_eq!(m.name(), "smolvlm");
    // Generation from another thread (how the pipeline's VLM worker runs it).
    let h = std::thread::spawn(move || {
        let mut m = m;
        m.generate(
            &image(),
            "Is the path clear?",
            &GenerateOptions {
                max_new_tokens: 2,
                time_budget: None,
            },
            &mut |_| {},
        )
        .map(|g| g.token_ids.len())
    });
    assert_eq!(h.join().unwrap().unwrap(), 2);
}

#[test]
fn the_tokenizer_matches_transformers() {
    let r = reference();
    let m = load(Variant::Fp32);
    for s in r["tokenizer_samples"].as_array().unwrap() {
        let text = s["text"].as_str().unwrap();
        assert_eq!(
            m.tokenizer().encode(text).unwrap(),
            ids(&s["ids"]),
            "{text:?}"
        );
    }
}

#[test]
fn describe_and_ask_run_through_the_binary() {
    let r = reference();
    let img = fixture().join("reference/image.png");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["describe", "--json", "--max-new-tokens", "12", "--vlm"])
        .arg(fixture())
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ids(&v["token_ids"]), ids(&r["greedy_tokens"]));
    assert_eq!(v["text"], r["greedy_text"]);
    assert_eq!(
        v["prompt_tokens"].as_u64().unwrap() as usize,
        r["input_ids"].as_array().unwrap().len()
    );
    for k in ["vision_ms", "prefill_ms", "decode_ms_per_token"] {
        assert!(v["timings"][k].as_f64().unwrap() > 0.0, "{k}");
    }

    // Streaming text mode: the answer on stdout, then a newline.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args([
            "ask",
            "--max-new-tokens",
            "12",
            "--variant",
            "int8",
            "--vlm",
        ])
        .arg(fixture())
        .arg(&img)
        .arg("Describe this image.")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, format!("{}\n", r["ort_int8_text"].as_str().unwrap()));

    // A bad model folder: exit 2 and one line naming it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
        .args(["ask", "--vlm", "/nonexistent/model"])
        .arg(&img)
        .arg("Is the path clear?")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/model"));
}
