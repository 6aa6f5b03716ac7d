//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

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
                eprintln!(
                    "SKIP: ../shared is absent on this machine; test needs its real models/media"
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

pub fn fixture(rel: &str) -> PathBuf {
    repo().join("tests/fixtures").join(rel)
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
