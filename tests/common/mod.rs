//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

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
