//! Where a multi-input graph's time goes (a VLM decoder step), with and without `QMatMul`
//! (src/engine/qmatmul.rs): the file loaded twice as a lookout `Session` (once with
//! `LOOKOUT_NO_QMATMUL=1`), run interleaved, then profiled per operator kind.
//!
//!     cargo run --example qmatmul_profile -- FILE.onnx [RUNS] [DIM=VALUE ...] [--threads T] [--ours]
//!
//! `--ours` profiles lookout's plan alone (tract's own plan of a large int8 graph can take minutes
//! per run on x86 without VNNI).
//! Every symbolic input dimension is a session symbol; DIM=VALUE gives its run-time value (default
//! 1): e.g. `past_decoder_sequence_length=20 encoder_sequence_length=577` for Florence-2's
//! decoder_with_past, `past_sequence_length=100 sequence_length=1` for SmolVLM's merged decoder.
//! VALUE may also be `N!` (the dimension fixed to N, as lookout's loaders fix the batch) or `A+B`
//! (the sum of two symbols, as SmolVLM's `total_sequence_length=past_sequence_length+sequence_length`).
//! Inputs are ones (i64), true (bool) and small deterministic values (f32).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use lookout::engine::onnx::{ElemType, OnnxFile};
use lookout::engine::session::{Dim, InputSpec, Session, SessionOptions, Value};

fn value_of(given: &HashMap<String, String>, name: &str) -> usize {
    given
        .get(name)
        .map_or(1, |v| v.trim_end_matches('!').parse().expect("DIM=VALUE"))
}

fn main() -> anyhow::Result<()> {
    // As the lookout binary runs (src/engine/heap.rs); LOOKOUT_DEFAULT_HEAP=1 for glibc's defaults.
    lookout::engine::keep_freed_memory();
    // `RUST_LOG=lookout=debug` shows which products each pass took and why it left the others.
    env_logger::init();
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut threads = 1;
    let ours_only = args.iter().any(|a| a == "--ours");
    args.retain(|a| a != "--ours");
    if let Some(i) = args.iter().position(|a| a == "--threads") {
        threads = args[i + 1].parse()?;
        args.drain(i..i + 2);
    }
    let path = PathBuf::from(
        args.first()
            .expect("usage: FILE.onnx [RUNS] [DIM=VALUE ...]"),
    );
    let runs: usize = args.get(1).map_or(Ok(5), |r| r.parse())?;
    let specs_given: HashMap<String, String> = args
        .iter()
        .skip(2)
        .filter_map(|a| a.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
    let value = |name: &str| -> usize {
        match specs_given.get(name).map(|v| v.as_str()) {
            None => 1,
            Some(v) => match v.split_once('+') {
                Some((a, b)) => value_of(&specs_given, a) + value_of(&specs_given, b),
                None => v.trim_end_matches('!').parse().expect("DIM=VALUE"),
            },
        }
    };
    let file = OnnxFile::read(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let graph = file.proto().graph.as_ref().expect("graph");
    let declared = file.declared_inputs();
    let mut specs = Vec::new();
    let mut values = Vec::new();
    for d in &declared {
        let input = graph
            .input
            .iter()
            .find(|i| i.name == d.name)
            .expect("input");
        use tract_onnx::pb::tensor_shape_proto::dimension::Value as V;
        use tract_onnx::pb::type_proto::Value as T;
        let Some(T::TensorType(t)) = input.r#type.as_ref().and_then(|t| t.value.as_ref()) else {
            anyhow::bail!("{}: not a tensor", d.name)
        };
        let (mut shape, mut concrete) = (Vec::new(), Vec::new());
        for dim in &t.shape.as_ref().expect("shape").dim {
            match &dim.value {
                Some(V::DimValue(v)) => {
                    shape.push(Dim::Fixed(*v as usize));
                    concrete.push(*v as usize);
                }
                Some(V::DimParam(p)) => {
                    let given = specs_given.get(p).map(|v| v.as_str()).unwrap_or("1");
                    shape.push(if let Some((a, b)) = given.split_once('+') {
                        Dim::Sum(leak(a), leak(b))
                    } else if let Some(n) = given.strip_suffix('!') {
                        Dim::Fixed(n.parse()?)
                    } else {
                        Dim::Sym(leak(p))
                    });
                    concrete.push(value(p));
                }
                None => anyhow::bail!("{}: a dimension without value", d.name),
            }
        }
        let elem = d.elem.expect("f32, i64 or bool input");
        let n: usize = concrete.iter().product();
        values.push(match elem {
            ElemType::F32 => Value::f32(
                &concrete,
                (0..n).map(|i| ((i % 97) as f32 - 48.0) / 60.0).collect(),
            )?,
            ElemType::I64 => Value::i64(&concrete, vec![1; n])?,
            ElemType::Bool => Value::bool(&concrete, vec![true; n])?,
        });
        specs.push(InputSpec::new(d.name.clone(), elem, shape));
    }
    drop(file);
    let opts = SessionOptions { threads };
    let load = |no_qmm: bool| -> anyhow::Result<Session> {
        // Read by the pass at load time only; this program has no other thread yet.
        std::env::set_var(
            lookout::engine::NO_QMATMUL_ENV,
            if no_qmm { "1" } else { "0" },
        );
        let t = Instant::now();
        // As lookout's VLM loaders read a graph: duplicate NonZero selections merged (SmolVLM's
        // vision encoder has two, and its shapes do not resolve without).
        let mut file = OnnxFile::read(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
        file.merge_duplicate_nonzero();
        let s = Session::from_file(file, &specs, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
        eprintln!(
            "loaded (no_qmatmul={no_qmm}) in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        Ok(s)
    };
    if ours_only {
        let ours = load(false)?;
        return print_profile("QMatMul", &ours, values, runs);
    }
    let tract = load(true)?;
    let ours = load(false)?;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut same = true;
    for i in 0..=runs {
        let t = Instant::now();
        let ya = tract
            .run(values.clone())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let ta = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let yb = ours
            .run(values.clone())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let tb = t.elapsed().as_secs_f64() * 1e3;
        if i == 0 {
            for (p, q) in ya.iter().zip(&yb) {
                same &= p
                    .as_f32()
                    .zip(q.as_f32())
                    .is_none_or(|(p, q)| p.iter().zip(q).all(|(x, y)| x.to_bits() == y.to_bits()));
            }
            continue;
        }
        a.push(ta);
        b.push(tb);
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    println!(
        "{} threads {threads}, {runs} runs interleaved: tract {:.2} ms (min {:.2}), with QMatMul {:.2} ms (min {:.2}); f32 outputs {}",
        path.display(),
        a[a.len() / 2],
        a[0],
        b[b.len() / 2],
        b[0],
        if same { "bit-identical" } else { "DIFFER" }
    );
    for (name, s) in [("tract", &tract), ("QMatMul", &ours)] {
        print_profile(name, s, values.clone(), runs)?;
    }
    Ok(())
}

fn print_profile(name: &str, s: &Session, values: Vec<Value>, runs: usize) -> anyhow::Result<()> {
    let p = s
        .profile(values, runs)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let total: f64 = p.iter().map(|o| o.ms).sum();
    println!("-- {name}: profiled {total:.2} ms per run");
    for o in p.iter().take(12) {
        println!(
            "  {:>9.3} ms {:>4} x {:<24} slowest {:.3} ms {}",
            o.ms, o.nodes, o.op, o.slowest_ms, o.slowest_node
        );
    }
    Ok(())
}
