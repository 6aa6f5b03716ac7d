//! Subcommands that live outside main.rs.

pub mod describe;
pub mod ground;
pub mod pull;
