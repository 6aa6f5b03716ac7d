//! fp32 detector time with lookout's fp32 detector ops (`AxisSoftmax`, `SeparableMaxPool`), without
//! them (`LOOKOUT_FPDET=0`, lookout's other passes kept) and with tract's own plan
//! (`LOOKOUT_PLAIN_TRACT=1`), at each thread count, interleaved in one process so that every plan
//! sees the same load.
//!
//!     cargo run --example fpdet_ab -- FILE.onnx N,C,H,W [ROUNDS] [ITERS] [THREADS]
//!
//! e.g. `cargo run --example fpdet_ab -- ../shared/models/fastestdet/FastestDet.onnx 1,3,352,352
//! 5 10 1,2`. ROUNDS x ITERS times, every (plan, threads) runs once, in turn; the figure is the
//! median over all runs. Then one interleaved profile per plan at one thread: the ms of the operator kinds
//! this pass set swaps (and what they replace). Prints the build profile, date, load average before
//! and after, and the largest output difference from tract's plan.

use std::time::Instant;

use lookout::engine::{Engine, EngineOptions, FPDET_ENV, PLAIN_TRACT_ENV};

/// (label, LOOKOUT_PLAIN_TRACT, LOOKOUT_FPDET)
const PLANS: [(&str, &str, &str); 3] = [
    ("tract plain", "1", "1"),
    ("lookout, fpdet off", "0", "0"),
    ("lookout + fpdet", "0", "1"),
];

/// The operator kinds the fp32 detector passes put in, and the tract ones they take out.
const KINDS: [&str; 4] = ["AxisSoftmax", "Softmax", "SeparableMaxPool", "OptMaxPool"];

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join("/"))
        .unwrap_or_else(|_| "?".into())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: fpdet_ab FILE.onnx N,C,H,W [ROUNDS] [ITERS] [THREADS]";
    let path = std::path::PathBuf::from(args.get(1).ok_or_else(|| anyhow::anyhow!(usage))?);
    let shape: Vec<usize> = args
        .get(2)
        .ok_or_else(|| anyhow::anyhow!(usage))?
        .split(',')
        .map(|d| d.parse())
        .collect::<Result<_, _>>()?;
    let rounds: usize = args.get(3).map_or(Ok(5), |r| r.parse())?;
    let iters: usize = args.get(4).map_or(Ok(10), |r| r.parse())?;
    let threads: Vec<usize> = args
        .get(5)
        .map_or("1,2", |t| t.as_str())
        .split(',')
        .map(|t| t.parse())
        .collect::<Result<_, _>>()?;
    let n: usize = shape.iter().product();
    let mut s = 11u64;
    let input: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();

    // Each plan is made under its environment; the variables are only read while planning.
    let mut engines = Vec::new();
    for &(label, plain, fpdet) in &PLANS {
        std::env::set_var(PLAIN_TRACT_ENV, plain);
        std::env::set_var(FPDET_ENV, fpdet);
        for &t in &threads {
            let opts = EngineOptions {
                threads: t,
                input_shape: Some(shape.clone()),
                ..Default::default()
            };
            let e = Engine::load(&path, &opts).map_err(|e| anyhow::anyhow!("{e}"))?;
            engines.push((label, t, e));
        }
    }
    std::env::remove_var(PLAIN_TRACT_ENV);
    std::env::remove_var(FPDET_ENV);

    let profile = lookout::BUILD_PROFILE;
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let before = loadavg();

    // Warm-up, and the outputs to compare.
    let mut outputs = Vec::new();
    for (_, _, e) in &engines {
        let out = e
            .run_slice(&shape, &input)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        outputs.push(out.iter().map(|(_, v)| v.data.to_vec()).collect::<Vec<_>>());
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); engines.len()];
    // Run by run across the plans, so that a change of load hits them all alike.
    for _ in 0..rounds * iters {
        for (i, (_, _, e)) in engines.iter().enumerate() {
            {
                let t = Instant::now();
                e.run_slice(&shape, &input)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                times[i].push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    // Per-kind time at the first thread count, plans interleaved run by run.
    let mut kinds: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); KINDS.len()]; PLANS.len()];
    for _ in 0..rounds {
        for (p, kind_ms) in kinds.iter_mut().enumerate() {
            let e = &engines[p * threads.len()].2;
            let prof = e
                .profile(&shape, &input, iters.clamp(1, 3))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            for (k, name) in KINDS.iter().enumerate() {
                // Kinds the plan does not have are left out of the line.
                if let Some(o) = prof.iter().find(|o| o.op == *name) {
                    kind_ms[k].push(o.ms);
                }
            }
        }
    }
    let after = loadavg();

    println!(
        "{} {shape:?}: {profile} build, {date}, load average {before} before, {after} after, \
         {} CPUs; {rounds} rounds x {iters} runs per plan and thread count, interleaved\n",
        path.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    print!("| plan |");
    for t in &threads {
        print!(" {t} thr ms |");
    }
    for t in &threads[1..] {
        print!(" {}→{t} thr |", threads[0]);
    }
    println!(" max abs diff vs tract |");
    println!("{}", "|---".repeat(2 * threads.len() + 1) + "|");
    for (p, &(label, _, _)) in PLANS.iter().enumerate() {
        let mut med = Vec::new();
        for ti in 0..threads.len() {
            med.push(median(&mut times[p * threads.len() + ti]));
        }
        print!("| {label} |");
        for m in &med {
            print!(" {m:.2} |");
        }
        for m in &med[1..] {
            print!(" {:.2}× |", med[0] / m);
        }
        let mut diff = 0f32;
        for i in p * threads.len()..(p + 1) * threads.len() {
            for (a, b) in outputs[0].iter().zip(&outputs[i]) {
                for (x, y) in a.iter().zip(b) {
                    diff = diff.max((x - y).abs());
                }
            }
        }
        println!(" {diff:.2e} |");
    }
    println!(
        "\nper operator kind, {} thread, median ms per run (mean of {} profiled runs, {rounds} rounds):",
        threads[0],
        iters.clamp(1, 3)
    );
    for (p, &(label, _, _)) in PLANS.iter().enumerate() {
        let parts: Vec<String> = KINDS
            .iter()
            .enumerate()
            .filter(|(k, _)| !kinds[p][*k].is_empty())
            .map(|(k, name)| format!("{name} {:.2}", median(&mut kinds[p][k].clone())))
            .collect();
        println!("  {label}: {}", parts.join(", "));
    }
    Ok(())
}
