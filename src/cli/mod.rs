//! The subcommands, one file each: every file holds its clap arguments, turns them into library
//! settings and calls the library; `main.rs` only parses and dispatches.

pub mod bench;
pub mod check;
pub mod describe;
pub mod detect;
pub mod events;
pub mod ground;
pub mod models;
pub mod pull;
pub mod read;
pub mod run;
pub mod search;
pub mod summary;
pub mod watch;

use std::path::{Path, PathBuf};

/// Where the bundled clip is: `./samples/vtest` when run from a checkout, the package's
/// `/usr/share/lookout/samples/vtest` (found beside the binary) when installed, else this source
/// tree's (for `cargo run` from elsewhere).
fn bundled_clip() -> PathBuf {
    let local = Path::new("samples/vtest");
    if local.is_dir() {
        return local.to_path_buf();
    }
    if let Some(bin) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        let installed = bin.join("../share/lookout/samples/vtest");
        if installed.is_dir() {
            return installed;
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("samples/vtest")
}

/// The embedded demo config, with the bundled clip found wherever lookout runs from.
pub fn demo_config_text() -> String {
    let text = include_str!("../../samples/demo.toml").to_string();
    let clip = bundled_clip();
    if clip == Path::new("samples/vtest") {
        text
    } else {
        text.replace("file:samples/vtest", &format!("file:{}", clip.display()))
    }
}

/// The embedded demo config written to a temporary file (kept while the first value lives).
pub fn demo_config_file() -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let p = dir.path().join("demo.toml");
    std::fs::write(&p, demo_config_text())?;
    Ok((dir, p))
}
