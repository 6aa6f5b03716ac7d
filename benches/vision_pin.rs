//! Vision encoder time with and without `engine::pin_single_selections` (and, third, with lookout's
//! `FastDynQuantize` too: the session's plan), interleaved in one process (same load for all), one
//! thread: what pinning the one-image selection buys, and what the int8 activation quantisation does.
//!
//!     cargo run --example vision_pin -- DIR/vision_encoder_int8.onnx [RUNS] [SIZE]
//!
//! Inputs as `vlm::smolvlm` feeds them: pixel_values [1, 1, 3, S, S], pixel_attention_mask
//! [1, 1, S, S] (S = SIZE, 512 for SmolVLM). All plans get lookout's constant folding. Prints the median and minimum per plan, and whether outputs agree. With
//! `VISION_PIN_PROFILE=1`, instead profiles lookout's own session (pinned) per operator kind.

use std::time::Instant;

use lookout::engine::onnx::OnnxFile;
use lookout::engine::pass::GraphPass;
use lookout::engine::{fold_const_chains, pin_single_selections, FastDynQuantizePass};
use tract_onnx::prelude::*;

fn plan(model: TypedModel, dynquant: bool) -> TractResult<Arc<TypedRunnableModel>> {
    let mut m = model.into_optimized()?;
    if dynquant {
        FastDynQuantizePass.run(&mut m)?;
    }
    fold_const_chains(&mut m)?;
    m.into_runnable()
}

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = std::path::PathBuf::from(
        args.get(1)
            .expect("usage: vision_pin FILE.onnx [RUNS] [SIZE]"),
    );
    let runs: usize = args.get(2).map_or(5, |r| r.parse().expect("RUNS"));
    if std::env::var("VISION_PIN_PROFILE").is_ok_and(|v| v == "1") {
        return profile(
            &path,
            runs,
            args.get(3).map_or(512, |r| r.parse().expect("SIZE")),
        );
    }
    let mut file = OnnxFile::read(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    file.merge_duplicate_nonzero();
    let size: usize = args.get(3).map_or(512, |r| r.parse().expect("SIZE"));
    let model = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_proto_model(file.proto())?
        .with_input_fact(0, f32::fact([1, 1, 3, size, size]).into())?
        .with_input_fact(1, bool::fact([1, 1, size, size]).into())?
        .into_typed()?;
    drop(file);
    let t = Instant::now();
    let untouched = plan(model.clone(), false)?;
    let load_untouched = t.elapsed();
    let t = Instant::now();
    let (pinned, n) = pin_single_selections(model)?;
    let session = plan(pinned.clone(), true)?;
    let pinned = plan(pinned, false)?;
    let load_pinned = t.elapsed();
    println!(
        "{}: {n} selection(s) pinned; load+optimise {:.0} ms untouched, {:.0} ms pinned (both pinned plans)",
        path.display(),
        load_untouched.as_secs_f64() * 1e3,
        load_pinned.as_secs_f64() * 1e3
    );
    let mut s = 7u64;
    let pixels: Vec<f32> = (0..3 * size * size)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    let inputs = || -> TractResult<TVec<TValue>> {
        Ok(tvec!(
            Tensor::from_shape(&[1, 1, 3, size, size], &pixels)?.into(),
            Tensor::from_shape(&[1, 1, size, size], &vec![true; size * size])?.into()
        ))
    };
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    let mut outs: [Option<Tensor>; 3] = [None, None, None];
    for _ in 0..runs {
        for (i, p) in [&untouched, &pinned, &session].into_iter().enumerate() {
            let t = Instant::now();
            let out = p.run(inputs()?)?;
            times[i].push(t.elapsed().as_secs_f64() * 1e3);
            outs[i] = Some(out[0].clone().into_tensor());
        }
    }
    let names = ["untouched", "pinned", "pinned + FastDynQuantize"];
    for (name, t) in names.iter().zip(times.iter_mut()) {
        t.sort_by(f64::total_cmp);
        println!(
            "{name:>24}: median {:.1} ms, min {:.1} ms over {runs} runs",
            t[t.len() / 2],
            t[0]
        );
    }
    if let [Some(a), rest @ ..] = &outs {
        let a = a.to_plain_array_view::<f32>()?;
        for (name, b) in names[1..].iter().zip(rest) {
            let Some(b) = b else { continue };
            let b = b.to_plain_array_view::<f32>()?;
            let d = a
                .iter()
                .zip(b.iter())
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            println!("max |untouched - {name}| = {d:e}");
        }
    }
    Ok(())
}

/// Time per operator kind of lookout's session (what `vlm::smolvlm` runs; tract's own plan under
/// `LOOKOUT_PLAIN_TRACT=1`), mean of `runs` runs after a warm-up.
fn profile(path: &std::path::Path, runs: usize, size: usize) -> TractResult<()> {
    use lookout::engine::session::{Dim, ElemType, InputSpec, Session, SessionOptions, Value};
    let fixed = |d: &[usize]| d.iter().map(|&n| Dim::Fixed(n)).collect::<Vec<_>>();
    let specs = [
        InputSpec::new("pixel_values", ElemType::F32, fixed(&[1, 1, 3, size, size])),
        InputSpec::new(
            "pixel_attention_mask",
            ElemType::Bool,
            fixed(&[1, 1, size, size]),
        ),
    ];
    let err = |e: lookout::Error| anyhow::anyhow!("{e}");
    let s = Session::load(path, &specs, &SessionOptions::default()).map_err(err)?;
    let px = Value::f32(&[1, 1, 3, size, size], vec![0.25; 3 * size * size])?;
    let mask = Value::bool(&[1, 1, size, size], vec![true; size * size])?;
    s.run(vec![px.clone(), mask.clone()]).map_err(err)?;
    let p = s.profile(vec![px, mask], runs).map_err(err)?;
    for o in p.iter().take(12) {
        println!(
            "{:<24} {:>4} nodes {:>9.1} ms  slowest {} ({:.1} ms)",
            o.op, o.nodes, o.ms, o.slowest_node, o.slowest_ms
        );
    }
    Ok(())
}
