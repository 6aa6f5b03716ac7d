//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

pub mod attention;
pub mod vision;

// Test binaries that use both `common` and `mosquitto` load the skip switch twice; harmless
// (it holds only functions), and each helper stays usable on its own.
#[allow(clippy::duplicate_mod)]
#[path = "../support/skip.rs"]
mod skip_switch;
#[allow(unused_imports)]
pub use skip_switch::{require_all, skip};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared` beside the checkout, when this machine has it.
pub fn shared() -> Option<PathBuf> {
    let p = repo().join("../shared");
    p.join("README.md").is_file().then_some(p)
}

/// Skip the calling test (with a printed reason) unless `../shared` exists.
#[macro_export]
macro_rules! require_shared {
    () => {
        match common::shared() {
            Some(p) => p,
            None => {
                common::skip(
                    "../shared is absent on this machine; this test needs its real models/media",
                );
                return;
            }
        }
    };
}

/// Path to the built `lookout` binary.
pub fn lookout_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lookout"))
}

/// A command running the built `lookout`; under emulation (`LOOKOUT_TEST_RUNNER`, e.g.
/// `qemu-aarch64 -L /usr/aarch64-linux-gnu`) through that runner, since a cross-built binary
/// cannot be executed directly without binfmt support.
pub fn lookout() -> std::process::Command {
    match std::env::var("LOOKOUT_TEST_RUNNER")
        .ok()
        .filter(|r| !r.trim().is_empty())
    {
        Some(runner) => {
            let mut parts = runner.split_whitespace();
            let mut c = std::process::Command::new(parts.next().unwrap_or("qemu-aarch64"));
            c.args(parts).arg(lookout_bin());
            c
        }
        None => std::process::Command::new(lookout_bin()),
    }
}

pub fn fixture(rel: &str) -> PathBuf {
    repo().join("tests/fixtures").join(rel)
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// Runs `cmd` to the end and fails the test, showing its stderr, unless it exits 0.
pub fn succeed(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The JSON Lines records of a file (`--events-out`).
pub fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A child process killed (and reaped) when the test ends, however it ends.
pub struct Kill(pub std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A little-endian f32 file (the fixtures numpy's `tofile` writes in models/tools/*.py).
pub fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Every output of a tract run, in order, flattened into one f32 vector.
pub fn f32_outputs(outputs: &[tract_onnx::prelude::TValue]) -> Vec<f32> {
    outputs
        .iter()
        .flat_map(|t| {
            t.try_as_plain_ram()
                .expect("plain")
                .as_slice::<f32>()
                .expect("f32")
                .to_vec()
        })
        .collect()
}

/// `got` equals `want` bit for bit (a lookout op against tract's untouched plan).
pub fn assert_bits_eq(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{what} #{i}: {g} vs tract {w}");
    }
}

/// `got` within `rel` times the reference's largest magnitude of onnxruntime's `reference`.
pub fn assert_near_onnxruntime(got: &[f32], reference: &[f32], rel: f32, what: &str) {
    assert_eq!(got.len(), reference.len(), "{what}: lengths");
    let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (g, o)) in got.iter().zip(reference).enumerate() {
        assert!(
            (g - o).abs() <= rel * scale,
            "{what} #{i}: {g} vs onnxruntime {o}"
        );
    }
}
