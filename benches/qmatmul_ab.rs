//! int8 matmul time with and without `engine::replace_qmatmul` (`QMatMul`), the two plans run
//! interleaved in one process (same load for both), and whether their outputs are bit-identical.
//!
//!     cargo run --example qmatmul_ab -- FILE.onnx [RUNS] [SEQS] [THREADS]
//!
//! FILE has one input `x [1, seq, k]` (models/tools/make_qmatmul_fixture.py --bench DIR writes
//! SmolVLM-256M's and Florence-2-base's decoder matmuls); SEQS is a comma list of row counts (1 = a
//! decode step, 78 = SmolVLM's prompt), default `1,78`. Both plans get lookout's other session
//! passes (FastDynQuantize, constant folding); tract's plan is what `LOOKOUT_NO_QMATMUL=1` gives.
//! Prints the median and minimum ms per plan and seq.

use std::time::Instant;

use lookout::engine::pass::GraphPass;
use lookout::engine::{fold_const_chains, replace_qmatmul, run_options, FastDynQuantizePass};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

fn plan(
    model: &TypedModel,
    qmatmul: bool,
    threads: usize,
) -> TractResult<(Arc<TypedRunnableModel>, usize)> {
    let mut m = model.clone();
    let n = if qmatmul { replace_qmatmul(&mut m)? } else { 0 };
    let mut m = m.into_decluttered()?.into_optimized()?;
    FastDynQuantizePass.run(&mut m)?;
    fold_const_chains(&mut m)?;
    Ok((m.into_runnable_with_options(&run_options(threads))?, n))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: qmatmul_ab FILE.onnx [RUNS] [SEQS] [THREADS]");
    let runs: usize = args.get(2).map_or(15, |r| r.parse().expect("RUNS"));
    let seqs: Vec<usize> = args
        .get(3)
        .map_or("1,78", |s| s.as_str())
        .split(',')
        .map(|s| s.parse().expect("SEQS"))
        .collect();
    let threads: usize = args.get(4).map_or(1, |r| r.parse().expect("THREADS"));
    let loaded = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .model_for_path(path)?;
    let k = loaded
        .input_fact(0)?
        .shape
        .dims()
        .last()
        .and_then(|d| d.concretize())
        .and_then(|d| d.to_i64().ok().map(|v| v as usize))
        .expect("x [1, seq, k] with a known k");
    for seq in seqs {
        let model = loaded
            .clone()
            .with_input_fact(0, f32::fact([1, seq, k]).into())?
            .into_typed()?;
        let (tract, _) = plan(&model, false, threads)?;
        let (ours, n) = plan(&model, true, threads)?;
        let mut s = 7u64;
        let x: Vec<f32> = (0..seq * k)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        let input: TValue = Tensor::from_shape(&[1, seq, k], &x)?.into();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut same = true;
        for i in 0..runs + 1 {
            let t = Instant::now();
            let ya = tract.run(tvec!(input.clone()))?;
            let ta = t.elapsed().as_secs_f64() * 1e3;
            let t = Instant::now();
            let yb = ours.run(tvec!(input.clone()))?;
            let tb = t.elapsed().as_secs_f64() * 1e3;
            if i == 0 {
                // The first run of each warms caches and allocations: not counted.
                for (p, q) in ya.iter().zip(&yb) {
                    same &= p.as_bytes() == q.as_bytes();
                }
                continue;
            }
            a.push(ta);
            b.push(tb);
        }
        let (amin, bmin) = (
            a.iter().cloned().fold(f64::MAX, f64::min),
            b.iter().cloned().fold(f64::MAX, f64::min),
        );
        println!(
            "{path} seq {seq} threads {threads}: tract {:.3} ms (min {amin:.3}), QMatMul ×{n} {:.3} ms (min {bmin:.3}), outputs {}",
            median(&mut a),
            median(&mut b),
            if same { "bit-identical" } else { "DIFFER" }
        );
    }
    Ok(())
}
