//! The skip switch itself: under `LOOKOUT_REQUIRE_ALL=1` (which `.ci/run` sets) a test that would
//! skip fails, so a green CI run means every test ran; without it a skip is one line naming what is
//! missing. Also: no test skips by another road (a bare `SKIP` print), and CI really sets the switch.

use std::path::Path;

#[path = "support/skip.rs"]
mod skip_switch;

#[test]
fn a_skip_fails_under_require_all_and_prints_otherwise() {
    // CI (`CI=true`) must run with the switch on: a `.ci/run` that forgot it would let skips pass.
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        assert!(
            skip_switch::require_all(),
            "CI is set but LOOKOUT_REQUIRE_ALL is not: .ci/run must export LOOKOUT_REQUIRE_ALL=1"
        );
    }
    // The only test here that touches the environment; the other reads no variable.
    let before = std::env::var_os("LOOKOUT_REQUIRE_ALL");
    std::env::set_var("LOOKOUT_REQUIRE_ALL", "1");
    let strict = std::panic::catch_unwind(|| skip_switch::skip("a missing thing (test)"));
    std::env::set_var("LOOKOUT_REQUIRE_ALL", "0");
    let lenient = std::panic::catch_unwind(|| skip_switch::skip("a missing thing (test)"));
    match before {
        Some(v) => std::env::set_var("LOOKOUT_REQUIRE_ALL", v),
        None => std::env::remove_var("LOOKOUT_REQUIRE_ALL"),
    }
    assert!(
        strict.is_err(),
        "a skip under LOOKOUT_REQUIRE_ALL=1 must fail the test"
    );
    assert!(lenient.is_ok(), "a skip without the switch must pass");
}

#[test]
fn every_skip_goes_through_the_switch() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut offenders = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                if !p.ends_with("fixtures") {
                    stack.push(p);
                }
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") || p.ends_with("support/skip.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&p).unwrap();
            for (n, line) in text.lines().enumerate() {
                let l = line.trim_start();
                if (l.starts_with("eprintln!(\"SKIP") || l.starts_with("println!(\"SKIP"))
                    && !l.contains("skip_switch")
                {
                    offenders.push(format!("{}:{}: {l}", p.display(), n + 1));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "these skip without the LOOKOUT_REQUIRE_ALL switch (use skip_switch::skip / common::skip):\n{}",
        offenders.join("\n")
    );
}
