//! `lookout ground` reads the text on the candidates when the instruction names one, on a real
//! photo (opencv-doc's `left.jpg`, tests/fixtures/ocr/photos): two book covers the detector boxes
//! (as "cell phone" and "book") inside a larger box around both.
//!
//! Written after seeing the first answer (the enclosing box tied with the right book), so these are
//! tuned cases, not held-out ones.

mod common;

use serde_json::Value;

fn ground(instruction: &str) -> Value {
    let out = common::succeed(
        common::lookout()
            .args([
                "ground",
                "--json",
                "tests/fixtures/ocr/photos/left.png",
                instruction,
            ])
            .current_dir(common::repo()),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Centre x of the target's box.
fn centre_x(r: &Value) -> f64 {
    assert_eq!(r["status"], "found", "{r}");
    let b = &r["target"]["box"];
    (b[0].as_f64().unwrap() + b[2].as_f64().unwrap()) / 2.0
}

#[test]
fn the_cover_that_says_the_words_is_chosen() {
    // "BASIC ELECTRONICS" is the right-hand cover (x 259–404), "Let Us C" the left (x 86–269).
    // The two runs side by side: each is a whole `lookout ground` on one thread.
    let (right, left) = std::thread::scope(|s| {
        let right = s.spawn(|| ground("the one that says BASIC ELECTRONICS"));
        let left = ground("the book that says Let Us C");
        (right.join().expect("the first run panicked"), left)
    });
    assert!(centre_x(&right) > 300.0, "{right}");
    assert!(centre_x(&left) < 220.0, "{left}");
}
