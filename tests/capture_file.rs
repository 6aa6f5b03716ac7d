//! `file:` sources on real images: folders with a corrupt file, looping, pacing, errors.

use std::path::{Path, PathBuf};

use lookout::capture::{self, CaptureError, FrameSource};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/capture")
        .join(name)
}

/// A folder of two real frames with a corrupt JPEG between them, plus files that are not
/// images and a sub-folder, which must be ignored.
fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(fixture("vtest_f100_320x240.png"), d.join("frame_000.png")).unwrap();
    let jpeg = std::fs::read(fixture("vtest_f100_320x240.mjpeg.jpg")).unwrap();
    // A JPEG whose header is cut off: no decoder can make an image of it.
    std::fs::write(d.join("frame_001.jpg"), &jpeg[..200]).unwrap();
    std::fs::copy(fixture("fruits_160x120.png"), d.join("frame_002.png")).unwrap();
    std::fs::write(d.join("notes.txt"), "not an image").unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::copy(fixture("fruits_160x120.png"), d.join("sub/frame_003.png")).unwrap();
    dir
}

/// `(id, width, height)` for frames, `(id, 0, 0)` for bad frames; stops at the end or after
/// `limit` results.
fn drain(src: &mut dyn FrameSource, limit: usize) -> Vec<(u64, u32, u32)> {
    let mut out = Vec::new();
    while out.len() < limit {
        match src.next_frame() {
            Ok(Some(f)) => out.push((f.id, f.image.width(), f.image.height())),
            Ok(None) => break,
            Err(CaptureError::BadFrame { frame, .. }) => out.push((frame, 0, 0)),
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    out
}

fn uri(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

#[test]
fn folder_with_a_corrupt_image_goes_on() {
    let dir = folder();
    let mut src = capture::open(&uri(dir.path())).unwrap();
    let first = src.next_frame().unwrap().unwrap();
    assert_eq!((first.id, first.image.dimensions()), (0, (320, 240)));
    assert_eq!(&*first.source, dir.path().to_str().unwrap());
    assert!(first.ts > 1.6e9, "unix seconds, got {}", first.ts);
    assert_eq!(
        first.image,
        image::open(fixture("vtest_f100_320x240.png"))
            .unwrap()
            .to_rgb8()
    );

    let err = src.next_frame().unwrap_err();
    assert!(err.is_recoverable());
    let msg = err.to_string();
    assert!(
        matches!(err, CaptureError::BadFrame { frame: 1, .. }),
        "{msg}"
    );
    assert!(msg.contains("frame_001.jpg"), "{msg}");

    let third = src.next_frame().unwrap().unwrap();
    assert_eq!((third.id, third.image.dimensions()), (2, (160, 120)));
    assert!(src.next_frame().unwrap().is_none());
    assert!(src.next_frame().unwrap().is_none(), "end stays the end");
    let s = src.stats();
    assert_eq!((s.frames, s.bad_frames, s.reconnects), (2, 1, 0));
    assert!(src.describe().contains("3 images"), "{}", src.describe());
}

#[test]
fn loop_and_fps_keep_ids_increasing() {
    let dir = folder();
    // fps is only checked for acceptance here: pacing is real time and not asserted by time.
    let u = format!("file:{}?loop=true&fps=500", uri(dir.path()));
    let mut src = capture::open(&u).unwrap();
    let got = drain(src.as_mut(), 8);
    assert_eq!(
        got,
        vec![
            (0, 320, 240),
            (1, 0, 0),
            (2, 160, 120),
            (3, 320, 240),
            (4, 0, 0),
            (5, 160, 120),
            (6, 320, 240),
            (7, 0, 0)
        ]
    );
    assert!(src.describe().contains("looping"), "{}", src.describe());
}

#[test]
fn clips_with_a_frame_rate_carry_media_time() {
    // Frame n of a 25 fps clip is n/25 s after frame 0, however long reading took: dwell rules
    // then count the clip's seconds, not the machine's.
    let dir = folder();
    let u = format!("file:{}?loop=true&fps=25", uri(dir.path()));
    let mut src = capture::open(&u).unwrap();
    let mut stamps = Vec::new();
    while stamps.len() < 6 {
        if let Ok(Some(f)) = src.next_frame() {
            stamps.push((f.id, f.ts));
        }
    }
    let (id0, ts0) = stamps[0];
    for (id, ts) in &stamps {
        let want = ts0 + (id - id0) as f64 / 25.0;
        assert!((ts - want).abs() < 1e-6, "frame {id}: ts {ts}, want {want}");
    }
}

#[test]
fn single_image_by_path_and_by_file_uri() {
    let p = fixture("fruits_160x120.png");
    for u in [
        uri(&p),
        format!("file://{}", uri(&p)),
        format!("file:{}?loop=false", uri(&p)),
    ] {
        let mut src = capture::open(&u).unwrap();
        assert_eq!(drain(src.as_mut(), 5), vec![(0, 160, 120)], "{u}");
    }
    // A still looped at a frame rate stands in for a camera.
    let mut src = capture::open(&format!("file:{}?loop&fps=1000", uri(&p))).unwrap();
    let ids: Vec<u64> = drain(src.as_mut(), 4).iter().map(|r| r.0).collect();
    assert_eq!(ids, vec![0, 1, 2, 3]);
}

#[test]
fn looping_over_only_bad_files_gives_up() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.jpg"), b"\xFF\xD8 broken").unwrap();
    std::fs::write(dir.path().join("b.png"), b"not a png").unwrap();
    let mut src = capture::open(&format!("file:{}?loop=1", uri(dir.path()))).unwrap();
    let mut bad = 0;
    let fatal = loop {
        match src.next_frame() {
            Err(e) if e.is_recoverable() => bad += 1,
            Err(e) => break e,
            Ok(f) => panic!("unexpected {:?}", f.map(|f| f.id)),
        }
        assert!(bad < 10, "never gave up");
    };
    assert_eq!(bad, 2);
    assert!(fatal.to_string().contains("whole pass"), "{fatal}");
}

#[test]
fn open_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let e = capture::open(&uri(&missing)).err().unwrap().to_string();
    assert!(e.contains("nope") && e.contains("cannot open"), "{e}");

    let e = capture::open(&format!("{}?fps=5", uri(dir.path())))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("file: scheme"), "{e}");

    let e = capture::open(&uri(dir.path())).err().unwrap().to_string();
    assert!(e.contains("no images"), "{e}");

    let clip = dir.path().join("clip.mp4");
    std::fs::write(&clip, b"x").unwrap();
    let e = capture::open(&uri(&clip)).err().unwrap().to_string();
    assert!(e.contains("video:"), "{e}");

    for (u, param) in [
        (format!("file:{}?fps=fast", uri(dir.path())), "fps"),
        (format!("file:{}?loop=maybe", uri(dir.path())), "loop"),
        (format!("file:{}?speed=2", uri(dir.path())), "speed"),
        ("file://camera/x".to_string(), "host"),
        ("rtmp://camera/stream".to_string(), "scheme"),
    ] {
        let e = capture::open(&u).err().unwrap();
        assert!(matches!(e, CaptureError::Uri { .. }), "{u}: {e}");
        assert!(e.to_string().contains(&format!(": {param}:")), "{u}: {e}");
    }
}
