//! Florence-2 through tract against the references of `models/tools/make_vlm_florence2.py`
//! (random-weight tiny model in the onnx-community layout, `tests/fixtures/vlm/florence2-tiny/`):
//! transformers for fp32, onnxruntime for the int8 graphs, the transformers processor for pre- and
//! post-processing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lookout::vlm::florence2::{
    self, parse_task_output_with, resize_bicubic, Florence2, LabelledBox, TaskOutput,
};
use lookout::vlm::tokenize::Tokenizer;
use lookout::vlm::{GenerateOptions, StopReason, VisionLanguageModel, VlmError};
use serde_json::Value;

/// Tolerances: logits, image features and encoder output vs transformers (fp32).
const TOL_F32: f32 = 1e-4;
/// pixel_values vs the processor's (same resized bytes; only f32 rounding of the normalisation).
const TOL_PIXELS: f32 = 1e-6;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vlm/florence2-tiny")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture().join("reference/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn read_f32(spec: &Value) -> (Vec<usize>, Vec<f32>) {
    let file = fixture()
        .join("reference")
        .join(spec["file"].as_str().unwrap());
    let bytes = std::fs::read(&file).unwrap();
    let data = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let shape = spec["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    (shape, data)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn load_rgb(path: &Path) -> image::RgbImage {
    image::open(path).unwrap().to_rgb8()
}

fn image() -> image::RgbImage {
    load_rgb(&fixture().join("reference/image.png"))
}

fn prompt(case: &Value) -> String {
    format!(
        "{}{}",
        case["task"].as_str().unwrap(),
        case["text_input"].as_str().unwrap_or("")
    )
}

fn opts(max_new_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        time_budget: None,
    }
}

#[test]
fn fp32_stages_match_transformers() {
    let r = reference();
    let mut m = florence2::load(&fixture(), "", 1).unwrap();
    let img = image();
    let case0 = &r["cases"][0];

    let pix = m.pixel_values(&img);
    let sample = &case0["pixel_values_sample"];
    let mut worst = 0f32;
    for (i, v) in sample["index"]
        .as_array()
        .unwrap()
        .iter()
        .zip(sample["value"].as_array().unwrap())
    {
        let got = pix[i.as_u64().unwrap() as usize];
        worst = worst.max((got - v.as_f64().unwrap() as f32).abs());
    }
    println!("pixel_values: max |diff| {worst:.2e} over 4096 samples");
    assert!(worst <= TOL_PIXELS);

    let feats = m.vision(pix).unwrap();
    let (shape, want) = read_f32(&case0["image_features"]);
    assert_eq!(feats.shape(), shape.as_slice());
    let d = max_diff(feats.data(), &want);
    println!("image_features {shape:?}: max |diff| {d:.2e}");
    assert!(d <= TOL_F32);

    let prompt_ids = m.prompt_ids(&prompt(case0)).unwrap();
    assert_eq!(prompt_ids, ids(&case0["input_ids"]));
    let enc = m.encode(&feats, &prompt_ids).unwrap();
    let (shape, want) = read_f32(&case0["encoder_output"]);
    assert_eq!(enc.shape(), shape.as_slice());
    let d = max_diff(enc.data(), &want);
    println!("encoder output {shape:?}: max |diff| {d:.2e}");
    assert!(d <= TOL_F32);
    let _ = m.image_features(&img).unwrap();
    assert_eq!(m.vision_runs(), 1);
}

#[test]
fn fp32_greedy_tokens_and_logits_match_transformers() {
    let r = reference();
    let max_new = r["max_new_tokens"].as_u64().unwrap() as usize;
    let mut m = florence2::load(&fixture(), "", 1).unwrap();
    let img = image();
    for case in r["cases"].as_array().unwrap() {
        let p = prompt(case);
        assert_eq!(m.prompt_ids(&p).unwrap(), ids(&case["input_ids"]), "{p}");
        let mut streamed = String::new();
        let (gen, trace) = m
            .run(&img, &p, &opts(max_new), true, &mut |s| {
                streamed.push_str(s)
            })
            .unwrap();
        assert_eq!(gen.token_ids, ids(&case["tokens"]), "{p}: tokens");
        let (shape, want) = read_f32(&case["logits"]);
        assert_eq!(trace.step_logits.len(), shape[0], "{p}: steps");
        let mut worst = 0f32;
        for (s, got) in trace.step_logits.iter().enumerate() {
            worst = worst.max(max_diff(got, &want[s * shape[1]..(s + 1) * shape[1]]));
        }
        println!(
            "{p}: {} tokens equal, logits max |diff| {worst:.2e} (reference top-1 margin {:.3})",
            gen.token_ids.len(),
            case["min_top1_margin"].as_f64().unwrap()
        );
        assert!(worst <= TOL_F32, "{p}: logits differ by {worst}");
        assert_eq!(
            streamed, gen.text,
            "{p}: streamed pieces add up to the text"
        );
        let decoded = case["decoded"].as_str().unwrap();
        assert_eq!(gen.text, florence2::clean_text(decoded), "{p}: text");
        assert_eq!(
            gen.prompt_tokens,
            577 + case["input_ids"].as_array().unwrap().len()
        );
        assert_eq!(
            gen.stop,
            if gen.token_ids.len() == max_new {
                StopReason::MaxTokens
            } else {
                StopReason::EndOfText
            }
        );
    }
    // Three prompts about one frame: the vision tower ran once.
    assert_eq!(m.vision_runs(), 1);
}

/// At 1 thread and at 2 (where every run of the sessions starts on their thread pool,
/// `engine::on_pool`).
#[test]
fn int8_tokens_match_onnxruntime() {
    for threads in [1, 2] {
        int8_tokens_match_onnxruntime_at(threads);
    }
}

fn int8_tokens_match_onnxruntime_at(threads: usize) {
    let r = reference();
    let max_new = r["max_new_tokens"].as_u64().unwrap() as usize;
    let mut m = florence2::load(&fixture(), "_int8", threads).unwrap();
    let img = image();
    for (i, case) in r["cases"].as_array().unwrap().iter().enumerate() {
        let p = prompt(case);
        let (gen, trace) = m
            .run(&img, &p, &opts(max_new), i == 0, &mut |_| {})
            .unwrap();
        let int8 = &case["int8"];
        if i == 0 {
            let (shape, want) = read_f32(&int8["logits"]);
            let mut worst = 0f32;
            for (s, got) in trace.step_logits.iter().enumerate().take(shape[0]) {
                worst = worst.max(max_diff(got, &want[s * shape[1]..(s + 1) * shape[1]]));
            }
            println!("{p} int8: logits max |diff| vs onnxruntime {worst:.2e}");
        }
        println!(
            "{p} int8: tokens {:?} (onnxruntime top-1 margin {:.3})",
            gen.token_ids,
            int8["min_top1_margin"].as_f64().unwrap()
        );
        assert_eq!(
            gen.token_ids,
            ids(&int8["tokens"]),
            "{p}: int8 tokens at {threads} thread(s)"
        );
    }
}

#[test]
fn task_answers_parse_like_the_reference() {
    let r = reference();
    let mut m = florence2::load(&fixture(), "", 1).unwrap();
    let img = image();
    for case in r["cases"].as_array().unwrap() {
        let task = case["task"].as_str().unwrap();
        let input = case["text_input"].as_str();
        let max_new = r["max_new_tokens"].as_u64().unwrap() as usize;
        let (_, parsed) = m.run_task(&img, task, input, &opts(max_new)).unwrap();
        check_parsed(
            task,
            &parsed,
            &case["parsed"],
            &format!("{task} on the model's answer"),
        );
    }
    // ground() is the grounding task with its own budget; on this model it finds the same phrase.
    let boxes = m.ground(&img, "a person on the path").unwrap();
    println!("ground(): {boxes:?}");
    assert!(!boxes.is_empty());
}

fn check_parsed(task: &str, got: &TaskOutput, want: &Value, what: &str) {
    match got {
        TaskOutput::Text(t) => assert_eq!(t, want.as_str().unwrap(), "{what}"),
        TaskOutput::Boxes(b) => {
            let (boxes, labels) = if task == "<OPEN_VOCABULARY_DETECTION>" {
                (&want["bboxes"], &want["bboxes_labels"])
            } else {
                (&want["bboxes"], &want["labels"])
            };
            let boxes = boxes.as_array().unwrap();
            assert_eq!(b.len(), boxes.len(), "{what}: {b:?} vs {want}");
            for (LabelledBox { label, bbox }, (wb, wl)) in
                b.iter().zip(boxes.iter().zip(labels.as_array().unwrap()))
            {
                assert_eq!(label, wl.as_str().unwrap(), "{what}");
                // The reference truncates to integers; lookout keeps (N + 0.5) / 1000 × size.
                let ours = [bbox.x1, bbox.y1, bbox.x2, bbox.y2].map(|v| v.floor() as i64);
                let theirs: Vec<i64> = wb
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap())
                    .collect();
                assert_eq!(ours.to_vec(), theirs, "{what}: {label}");
            }
        }
    }
}

#[test]
fn post_processing_matches_the_reference_processor() {
    let text = std::fs::read_to_string(fixture().join("reference/postprocess.json")).unwrap();
    let cases: Value = serde_json::from_str(&text).unwrap();
    let cfg = florence2::Florence2Config::load(&fixture()).unwrap();
    assert!(cfg.banned_grounding.iter().any(|b| b == "it"));
    for case in cases.as_array().unwrap() {
        let task = case["task"].as_str().unwrap();
        let text = case["text"].as_str().unwrap();
        let size = case["image_size"].as_array().unwrap();
        let (w, h) = (
            size[0].as_u64().unwrap() as u32,
            size[1].as_u64().unwrap() as u32,
        );
        let got = parse_task_output_with(task, text, w, h, &cfg.banned_grounding);
        check_parsed(task, &got, &case["expected"], &format!("{task} {text:?}"));
        if let TaskOutput::Boxes(b) = &got {
            for lb in b {
                // Exact bin centres, not the reference's truncated integers.
                for v in [lb.bbox.x1, lb.bbox.x2] {
                    let bin = v as f64 * 1000.0 / w as f64 - 0.5;
                    assert!((bin - bin.round()).abs() < 1e-3, "{v} is not a bin centre");
                }
            }
        }
    }
    let locs = florence2::parse_locations("<loc_0><loc_0><loc_999><loc_999>x", 1000, 500);
    assert_eq!(locs.len(), 1);
    assert_eq!(
        [locs[0].x1, locs[0].y1, locs[0].x2, locs[0].y2],
        [0.5, 0.25, 999.5, 499.75]
    );
}

#[test]
fn preprocessing_matches_the_reference_processor() {
    let text = std::fs::read_to_string(fixture().join("reference/preprocess.json")).unwrap();
    let meta: Value = serde_json::from_str(&text).unwrap();
    let src = load_rgb(&fixture().join("reference/preprocess_src.png"));
    let want = load_rgb(&fixture().join("reference/preprocess_resized.png"));
    let (w, h) = src.dimensions();
    let got = resize_bicubic(src.as_raw(), w as usize, h as usize, 768, 768);
    let differing = got
        .iter()
        .zip(want.as_raw())
        .filter(|(a, b)| a != b)
        .count();
    let worst = got
        .iter()
        .zip(want.as_raw())
        .map(|(a, b)| (*a as i32 - *b as i32).abs())
        .max()
        .unwrap();
    println!(
        "{w}x{h} -> 768x768 bicubic vs Pillow: {differing} of {} bytes differ, max {worst}",
        got.len()
    );
    assert_eq!(worst, 0, "resize must equal Pillow's");

    let cfg = florence2::Florence2Config::load(&fixture()).unwrap();
    let pix = florence2::pixel_values(&src, 768, cfg.image_mean, cfg.image_std);
    let sample = &meta["sample"];
    let mut worst = 0f32;
    for (i, v) in sample["index"]
        .as_array()
        .unwrap()
        .iter()
        .zip(sample["value"].as_array().unwrap())
    {
        worst = worst.max((pix[i.as_u64().unwrap() as usize] - v.as_f64().unwrap() as f32).abs());
    }
    let sum: f64 = pix.iter().map(|&v| v as f64).sum();
    println!(
        "pixel_values: max |diff| {worst:.2e} over 8192 samples, sum {sum:.3} vs {:.3}",
        meta["sum"]
    );
    assert!(worst <= TOL_PIXELS);
}

#[test]
fn generation_budgets_stop_early() {
    let mut m = florence2::load(&fixture(), "", 1).unwrap();
    let img = image();
    let g = m
        .generate(
            &img,
            "<CAPTION>",
            &GenerateOptions {
                max_new_tokens: 3,
                time_budget: None,
            },
            &mut |_| {},
        )
        .unwrap();
    assert_eq!((g.token_ids.len(), g.stop), (3, StopReason::MaxTokens));
    // A zero budget is spent as soon as the first token is out.
    let g = m
        .generate(
            &img,
            "<CAPTION>",
            &GenerateOptions {
                max_new_tokens: 50,
                time_budget: Some(Duration::ZERO),
            },
            &mut |_| {},
        )
        .unwrap();
    assert_eq!((g.token_ids.len(), g.stop), (1, StopReason::TimeBudget));
    assert!(matches!(
        m.generate(&img, "<OD> extra", &GenerateOptions::default(), &mut |_| {}),
        Err(VlmError::Input(_))
    ));
}

fn copy_fixture(variant_from: &str, variant_to: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "preprocessor_config.json",
        "processor_config.json",
        "tokenizer.json",
    ] {
        std::fs::copy(fixture().join(f), dir.path().join(f)).unwrap();
    }
    std::fs::create_dir(dir.path().join("onnx")).unwrap();
    for g in [
        "vision_encoder",
        "embed_tokens",
        "encoder_model",
        "decoder_model",
        "decoder_with_past_model",
    ] {
        std::fs::copy(
            fixture().join(format!("onnx/{g}{variant_from}.onnx")),
            dir.path().join(format!("onnx/{g}{variant_to}.onnx")),
        )
        .unwrap();
    }
    dir
}

#[test]
fn truncated_model_is_a_clear_error() {
    let dir = copy_fixture("", "");
    let path = dir.path().join("onnx/encoder_model.onnx");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = florence2::load(dir.path(), "", 1).unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(
        msg.contains("encoder_model.onnx") && msg.contains("truncated"),
        "{msg}"
    );

    std::fs::remove_file(dir.path().join("onnx/decoder_with_past_model.onnx")).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let msg = florence2::load(dir.path(), "", 1).unwrap_err().to_string();
    assert!(
        msg.contains("decoder_with_past_model.onnx") && msg.contains("missing"),
        "{msg}"
    );
}

#[test]
fn q4_file_is_rejected_naming_file_and_operator() {
    // transformers.js's q4 files quantize MatMuls to com.microsoft.MatMulNBits.
    let dir = copy_fixture("", "_q4");
    std::fs::copy(
        fixture().join("onnx/decoder_model_q4.onnx"),
        dir.path().join("onnx/decoder_model_q4.onnx"),
    )
    .unwrap();
    let err = florence2::load(dir.path(), "_q4", 1).unwrap_err();
    let msg = err.to_string();
    println!("{msg}");
    assert!(matches!(err, VlmError::Unsupported { .. }), "{msg}");
    assert!(
        msg.contains("decoder_model_q4.onnx") && msg.contains("com.microsoft.MatMulNBits"),
        "{msg}"
    );
}

#[test]
fn florence2_is_a_send_vision_language_model() {
    fn boxed(m: Florence2) -> Box<dyn VisionLanguageModel + Send> {
        Box::new(m)
    }
    let m = boxed(florence2::load(&fixture(), "", 1).unwrap());
    assert_eq!(m.name(), "florence2");
}

#[test]
fn streaming_holds_back_half_characters() {
    // Byte-level BPE splits "é" (two bytes) over tokens this small vocabulary has no merge for.
    let tok = Tokenizer::load(&fixture().join("tokenizer.json")).unwrap();
    let ids = florence2::prompt_ids(&tok, "café crème<loc_5>").unwrap();
    let body = &ids[1..ids.len() - 1];
    let mut s = florence2::text_stream();
    let mut pieces = Vec::new();
    for &id in body {
        pieces.push(s.push(&tok, id).unwrap());
    }
    pieces.push(s.finish(&tok).unwrap());
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
    assert_eq!(pieces.concat(), "café crème<loc_5>");
    assert!(
        pieces.iter().filter(|p| p.is_empty()).count() >= 2,
        "{pieces:?}"
    );
}
