//! One way for a test to skip: a line saying what is missing and how to get it — unless
//! `LOOKOUT_REQUIRE_ALL=1` (set by `.ci/run`), where a test that would skip fails instead, so a
//! green CI means every test really ran. `tests/require_all.rs` checks this switch itself.
#![allow(dead_code)]

/// Whether skipping is forbidden (`LOOKOUT_REQUIRE_ALL` set to anything but empty or `0`).
pub fn require_all() -> bool {
    std::env::var("LOOKOUT_REQUIRE_ALL").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Report a skip (`what`: what is missing and how to get it); panics under `LOOKOUT_REQUIRE_ALL`.
/// The caller returns (or moves on to its next case) afterwards.
pub fn skip(what: &str) {
    if require_all() {
        panic!("LOOKOUT_REQUIRE_ALL is set, so this test may not skip: {what}");
    }
    eprintln!("SKIP: {what}");
}
