//! The house rules of docs/ARCHITECTURE.md that a machine can check: no source file over 1000
//! lines, tract named only under `src/engine/`, the transport (`mqtt/`), the model library
//! (`vlm/`) and the web view (`http/`) importing neither the pipeline nor the config, `main.rs` a
//! thin dispatcher.

use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Lines that are code, not comments (a `//` line or a doc line may name anything).
fn code_lines(p: &Path) -> Vec<(usize, String)> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(i, l)| (i + 1, l.to_string()))
        .collect()
}

#[test]
fn no_source_file_over_1000_lines() {
    let mut long = Vec::new();
    for p in sources(&src())
        .into_iter()
        .chain(sources(&src().join("../tests")))
    {
        if p.components().any(|c| c.as_os_str() == "fixtures") {
            continue;
        }
        let n = std::fs::read_to_string(&p).unwrap().lines().count();
        if n > 1000 {
            long.push(format!("{}: {n} lines", p.display()));
        }
    }
    assert!(long.is_empty(), "split these:\n{}", long.join("\n"));
}

#[test]
fn tract_only_in_engine() {
    let engine = src().join("engine");
    let mut found = Vec::new();
    for p in sources(&src()) {
        if p.starts_with(&engine) {
            continue;
        }
        for (n, l) in code_lines(&p) {
            if l.contains("tract_onnx") || l.contains("tract_core") || l.contains("tract_linalg") {
                found.push(format!("{}:{n}: {}", p.display(), l.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "tract outside src/engine/:\n{}",
        found.join("\n")
    );
}

#[test]
fn transport_and_models_do_not_import_the_run_time() {
    let mut found = Vec::new();
    for room in ["mqtt", "vlm", "http"] {
        for p in sources(&src().join(room)) {
            for (n, l) in code_lines(&p) {
                if l.contains("crate::pipeline") || l.contains("crate::config") {
                    found.push(format!("{}:{n}: {}", p.display(), l.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "upward imports:\n{}", found.join("\n"));
}

#[test]
fn main_only_dispatches() {
    let n = std::fs::read_to_string(src().join("main.rs"))
        .unwrap()
        .lines()
        .count();
    assert!(
        n <= 250,
        "src/main.rs has {n} lines; subcommands belong in src/cli/"
    );
}
