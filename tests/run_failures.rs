//! `lookout run` as systemd and scripts see it: a source that never yields a frame exits
//! non-zero (issue 14, defect 8), and `--events-out` appends across restarts unless asked to
//! truncate (defect 9).

mod common;

fn run_with(args: &[&str]) -> std::process::Output {
    common::lookout()
        .args(["run", "--broker", "none", "--json"])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn a_source_that_yields_nothing_exits_non_zero() {
    // A command that exits at once: no ffmpeg needed.
    let out = run_with(&["--source", "pipe:true?width=64&height=48&format=rgb24"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no frame could be read"), "{err}");
}

#[test]
fn a_missing_clip_exits_non_zero() {
    if std::process::Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_err()
    {
        common::skip("ffmpeg is not installed (apt-get install ffmpeg)");
        return;
    }
    let out = run_with(&["--source", "video:/nonexistent/clip.mp4"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
}

#[test]
fn a_good_run_still_exits_zero() {
    let out = run_with(&["--max-frames", "3"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn events_out_appends_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("events.jsonl");
    let fs = f.to_str().unwrap();
    let lines = || std::fs::read_to_string(&f).unwrap().lines().count();
    assert!(run_with(&["--max-frames", "20", "--events-out", fs])
        .status
        .success());
    let first = std::fs::read_to_string(&f).unwrap();
    let n1 = lines();
    assert!(n1 > 0, "the first run wrote records");
    assert!(run_with(&["--max-frames", "20", "--events-out", fs])
        .status
        .success());
    let both = std::fs::read_to_string(&f).unwrap();
    assert!(both.starts_with(&first), "the first run's records are kept");
    assert!(lines() > n1, "the second run's records follow");
    for l in both.lines() {
        serde_json::from_str::<serde_json::Value>(l).expect("every line is one JSON record");
    }
    let out = run_with(&[
        "--max-frames",
        "20",
        "--events-out",
        fs,
        "--truncate-events",
    ]);
    assert!(out.status.success());
    assert!(
        lines() < both.lines().count(),
        "--truncate-events starts afresh"
    );
}
