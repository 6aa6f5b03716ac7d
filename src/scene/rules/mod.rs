//! Rules over tracks: zones (entry, exit, dwell), line crossings, proximity to the camera, counts,
//! presence and absence, each raising [`Alert`]s.
//!
//! Geometry is in normalised frame coordinates (0..1, origin top-left, y down) so a rule file
//! survives a change of camera resolution. A track's position is its *reference point*, the
//! bottom-centre of its box: where the object touches the ground, which is what a zone painted on
//! the ground or a line across a path is about.
//!
//! Rules are written in TOML as an array of `[[rules]]` tables (see [`parse_rules`]); a
//! `kind = "zone"` rule also defines a named zone that other rules can refer to with
//! `zone = "<name>"`, and each frame's [`Evaluation::zones`] says which tracks are in it. Every
//! key that does not apply to a rule's kind is an error, so a typo or a misplaced key is reported
//! rather than silently ignored.
//!
//! Edge-like alerts (entry, exit, crossing) fire at the moment of the change. Level-like ones
//! (dwell, proximity, count, presence, absence) fire once when their condition has held long
//! enough and re-arm when it stops holding. `debounce_frames` makes every condition hold for that
//! many consecutive frames before it counts as changed; `cooldown` suppresses repeats of the same
//! alert (per track for per-track rules) for that many seconds.
//!
//! The way through: `config` (the file as written) → `compile` (values checked, zones resolved)
//! → `engine` (per-frame evaluation, using `geometry`) → `alert`s; `error` is what can go wrong on
//! the way. Only the re-exports below are public, so callers keep one path to each type.

mod alert;
mod compile;
mod config;
mod engine;
mod error;
mod geometry;
#[cfg(test)]
mod tests;

pub use alert::{Alert, AlertDetails, AlertKind, AlertType, Verification, VerificationStatus};
pub use config::{
    load_rules, parse_rules, Direction, NearThresholds, RuleConfig, RuleKind, Severity, ZoneTrigger,
};
pub use engine::{Evaluation, RuleEngine};
pub use error::RuleError;
