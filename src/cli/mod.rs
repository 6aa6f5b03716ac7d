//! The subcommands, one file each: every file holds its clap arguments, turns them into library
//! settings and calls the library; `main.rs` only parses and dispatches.

pub mod bench;
pub mod describe;
pub mod detect;
pub mod ground;
pub mod models;
pub mod pull;
pub mod run;
pub mod watch;
