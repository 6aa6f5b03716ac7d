//! `pipe:` and `video:` sources with real ffmpeg decoding real clips: frame counts, sizes,
//! pixel content, truncated streams, failing commands, and children killed on drop.
//!
//! Needs `ffmpeg` and the Debian package `opencv-doc` (for vtest.avi and tree.avi); each test
//! prints SKIP and passes when they are missing (fails under LOOKOUT_REQUIRE_ALL). The `../shared` clip is optional the same way.
#[path = "support/skip.rs"]
mod skip_switch;

use std::path::{Path, PathBuf};
use std::process::Command;

use image::RgbImage;
use lookout::capture::pipe::{PipeCommand, PipeSource, PipeSpec, StreamFormat, VideoOptions};
use lookout::capture::{self, CaptureError, FrameSource, PixelFormat};

const DATA: &str = "/usr/share/doc/opencv-doc/examples/data";

/// vtest.avi: 768x576 msmpeg4v3 at 10 fps, 795 frames (ffprobe -count_frames).
const VTEST_FRAMES: u64 = 795;

/// Whether ffmpeg runs here; a SKIP line (a failure under LOOKOUT_REQUIRE_ALL) when it does not.
fn ffmpeg_runs() -> bool {
    let ok = Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip_switch::skip("ffmpeg is not installed (apt-get install ffmpeg)");
    }
    ok
}

fn media(name: &str) -> Option<PathBuf> {
    if !ffmpeg_runs() {
        return None;
    }
    let p = Path::new(DATA).join(name);
    if !p.is_file() {
        skip_switch::skip(&format!(
            "{} is absent (apt-get install opencv-doc)",
            p.display()
        ));
        return None;
    }
    Some(p)
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/capture")
        .join(name)
}

/// Run ffmpeg to completion and return its stdout.
fn ffmpeg(args: &str) -> Vec<u8> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("ffmpeg -nostdin -v error {args}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Read to the end; `(frames, bad frames, first frame)`, panicking on a fatal error.
type Drained = (Vec<(u64, u32, u32)>, Vec<(u64, String)>, Option<RgbImage>);

fn drain(src: &mut dyn FrameSource) -> Drained {
    let (mut frames, mut bad, mut first) = (Vec::new(), Vec::new(), None);
    loop {
        match src.next_frame() {
            Ok(Some(f)) => {
                frames.push((f.id, f.image.width(), f.image.height()));
                first.get_or_insert(f.image);
            }
            Ok(None) => return (frames, bad, first),
            Err(CaptureError::BadFrame { frame, reason, .. }) => bad.push((frame, reason)),
            Err(e) => panic!("{e}"),
        }
    }
}

fn max_diff(a: &RgbImage, b: &RgbImage) -> u8 {
    assert_eq!(a.dimensions(), b.dimensions());
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

/// Whether any process of the group is running. Killed grandchildren linger as zombies until
/// whoever inherits them reaps them, so zombies do not count.
fn group_running(pgid: u32) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        // "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after the ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        f.len() > 3 && f[0] != "Z" && f[2] == pgid.to_string()
    })
}

/// SIGKILL takes effect asynchronously: allow the group a second to die.
fn group_gone(pgid: u32) -> bool {
    (0..100).any(|_| {
        let gone = !group_running(pgid);
        if !gone {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        gone
    })
}

#[test]
fn raw_rgb24_whole_clip() {
    let Some(clip) = media("vtest.avi") else {
        return;
    };
    let u = format!(
        "pipe:ffmpeg -nostdin -v error -i {} -vf scale=192:144 -f rawvideo -pix_fmt rgb24 -?width=192&height=144",
        clip.display()
    );
    let mut src = capture::open(&u).unwrap();
    let (frames, bad, first) = drain(src.as_mut());
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(frames.len() as u64, VTEST_FRAMES);
    assert!(frames
        .iter()
        .enumerate()
        .all(|(i, f)| *f == (i as u64, 192, 144)));
    // The bytes are ffmpeg's own: frame 0 equals ffmpeg's PNG of frame 0.
    let png = ffmpeg(&format!(
        "-i {} -vf scale=192:144 -frames:v 1 -f image2pipe -c:v png -",
        clip.display()
    ));
    let want = image::load_from_memory(&png).unwrap().to_rgb8();
    assert_eq!(first.unwrap(), want);
    assert_eq!(src.stats().frames, VTEST_FRAMES);
}

#[test]
fn raw_yuv_formats_are_converted() {
    let Some(clip) = media("vtest.avi") else {
        return;
    };
    let want = {
        let png = ffmpeg(&format!(
            "-i {} -vf scale=320:240 -frames:v 1 -f image2pipe -c:v png -",
            clip.display()
        ));
        image::load_from_memory(&png).unwrap().to_rgb8()
    };
    for fmt in ["yuyv422", "nv12", "bgr24"] {
        let u = format!(
            "pipe:ffmpeg -nostdin -v error -i {} -vf scale=320:240 -frames:v 12 -f rawvideo -pix_fmt {fmt} -?width=320&height=240&format={fmt}",
            clip.display()
        );
        let mut src = capture::open(&u).unwrap();
        let (frames, bad, first) = drain(src.as_mut());
        assert!(bad.is_empty(), "{fmt}: {bad:?}");
        assert_eq!(frames.len(), 12, "{fmt}");
        // ffmpeg went RGB → fmt; we went fmt → RGB. Subsampled chroma loses colour detail at
        // edges, so this is a sanity bound, not the converter test (see capture_pixfmt.rs).
        let first = first.unwrap();
        let d = max_diff(&first, &want);
        let mean: f64 = first
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| a.abs_diff(*b) as f64)
            .sum::<f64>()
            / want.as_raw().len() as f64;
        println!("{fmt}: round trip max diff {d}, mean {mean:.2}");
        // (Even bgr24 is not bit-identical: ffmpeg converts yuv420p to bgr24 and to rgb24
        // through different swscale paths.)
        assert!(mean < 3.0, "{fmt}: mean diff {mean}");
    }
}

#[test]
fn truncated_raw_stream_ends_with_a_bad_frame() {
    let Some(clip) = media("vtest.avi") else {
        return;
    };
    let frame = 160 * 120 * 3;
    let u = format!(
        "pipe:ffmpeg -nostdin -v error -i {} -vf scale=160:120 -frames:v 10 -f rawvideo -pix_fmt rgb24 - | head -c {}?width=160&height=120",
        clip.display(),
        3 * frame + frame / 2
    );
    let mut src = capture::open(&u).unwrap();
    let (frames, bad, _) = drain(src.as_mut());
    assert_eq!(
        frames.iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].0, 3);
    assert!(
        bad[0]
            .1
            .contains(&format!("got {} of {frame} bytes", frame / 2)),
        "{}",
        bad[0].1
    );
}

#[test]
fn video_scheme_builds_the_ffmpeg_command() {
    let Some(clip) = media("vtest.avi") else {
        return;
    };
    // Every frame, scaled: as many frames as the clip has.
    let mut src = capture::open(&format!("video:{}?width=192&height=144", clip.display())).unwrap();
    let (frames, bad, _) = drain(src.as_mut());
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(frames.len() as u64, VTEST_FRAMES);
    assert!(frames.iter().all(|f| (f.1, f.2) == (192, 144)));

    // Resampled to 5 fps with the height following the aspect ratio; the count must match what
    // ffmpeg itself makes of the same filter.
    let raw = ffmpeg(&format!(
        "-i {} -vf fps=5,scale=160:-2 -f rawvideo -pix_fmt rgb24 -",
        clip.display()
    ));
    let expected = raw.len() / (160 * 120 * 3);
    assert!(expected > 300 && expected < 500, "{expected}");
    let mut src = capture::open(&format!("video:{}?fps=5&width=160", clip.display())).unwrap();
    assert!(src.describe().starts_with("video:"), "{}", src.describe());
    let (frames, bad, _) = drain(src.as_mut());
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(frames.len(), expected);
    assert!(frames.iter().all(|f| (f.1, f.2) == (160, 120)));
}

#[test]
fn video_from_shared_mp4() {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    let clip = shared.join("media/video_drive_udacity_test_video.mp4");
    if !clip.is_file() {
        skip_switch::skip("../shared is absent on this machine; this test needs its real media");
        return;
    }
    if media("vtest.avi").is_none() {
        return;
    }
    // H.264 1280x720, 38 frames.
    let mut src = capture::open(&format!("video:{}", clip.display())).unwrap();
    let (frames, bad, _) = drain(src.as_mut());
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(frames.len(), 38);
    assert!(frames.iter().all(|f| (f.1, f.2) == (1280, 720)));
    let mut src = capture::open(&format!("video:{}?width=320", clip.display())).unwrap();
    let (frames, _, _) = drain(src.as_mut());
    assert_eq!(frames.len(), 38);
    assert_eq!((frames[0].1, frames[0].2), (320, 180));
}

#[test]
fn looping_video_is_killed_on_drop() {
    let Some(clip) = media("tree.avi") else {
        return;
    };
    let mut opts = VideoOptions::new(clip.to_str().unwrap());
    opts.looping = true;
    opts.width = Some(64);
    let mut src = PipeSource::spawn(opts.to_spec()).unwrap();
    let pid = src.child_id();
    // tree.avi has 68 frames; looping goes past the end.
    for i in 0..150u64 {
        let f = src.next_frame().unwrap().unwrap();
        assert_eq!((f.id, f.image.width(), f.image.height()), (i, 64, 48));
    }
    assert!(group_running(pid));
    drop(src);
    assert!(group_gone(pid), "ffmpeg still running after drop");
}

#[test]
fn shell_pipelines_are_killed_on_drop() {
    let mut src =
        capture::open("pipe:cat /dev/zero | cat | cat?width=64&height=32&format=nv12").unwrap();
    for _ in 0..3 {
        let f = src.next_frame().unwrap().unwrap();
        assert_eq!(f.image.dimensions(), (64, 32));
        // NV12 zeros: Y=0 (below black), U=V=0 (strong green shift): G clips high.
        assert_eq!(f.image.get_pixel(0, 0).0, [0, 136, 0]);
    }
    let spec = PipeSpec {
        command: PipeCommand::Shell("sleep 30 | sleep 30".into()),
        format: StreamFormat::Ppm,
        label: None,
        media_fps: None,
    };
    let src = PipeSource::spawn(spec).unwrap();
    let pgid = src.child_id();
    assert!(group_running(pgid));
    drop(src);
    assert!(group_gone(pgid), "pipeline still running after drop");
}

#[test]
fn failing_commands_are_fatal_with_their_stderr() {
    // ffmpeg's own "No such file" message is what is checked.
    if !ffmpeg_runs() {
        return;
    }
    let u = "pipe:ffmpeg -nostdin -v error -i /nonexistent/clip.mp4 -f rawvideo -?width=8&height=8";
    let mut src = capture::open(u).unwrap();
    let e = src.next_frame().unwrap_err();
    assert!(!e.is_recoverable());
    let msg = e.to_string();
    assert!(
        msg.contains("exit status") && msg.contains("No such file"),
        "{msg}"
    );
    assert!(src.next_frame().unwrap().is_none());

    let mut src = capture::open("pipe:no-such-program-lookout?format=ppm").unwrap();
    let msg = src.next_frame().unwrap_err().to_string();
    assert!(msg.contains("not found"), "{msg}");

    let spec = PipeSpec {
        command: PipeCommand::Argv(vec!["/nonexistent/ffmpeg".into()]),
        format: StreamFormat::Ppm,
        label: None,
        media_fps: None,
    };
    let msg = PipeSource::spawn(spec).err().unwrap().to_string();
    assert!(msg.contains("cannot run /nonexistent/ffmpeg"), "{msg}");

    // A command that succeeds without output is simply an empty stream.
    let mut src = capture::open("pipe:true?format=mjpeg").unwrap();
    assert!(src.next_frame().unwrap().is_none());
}

#[test]
fn mjpeg_stream_resynchronises_after_junk_and_a_cut_image() {
    let good = std::fs::read(fixture("vtest_f100_320x240.mjpeg.jpg")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut stream = b"some banner text\n".to_vec();
    stream.extend_from_slice(&good);
    stream.extend_from_slice(&good[..good.len() / 2]); // cut short: the next SOI interrupts it
    stream.extend_from_slice(&good);
    stream.extend_from_slice(b"\r\n");
    stream.extend_from_slice(&good);
    let f = dir.path().join("stream.mjpeg");
    std::fs::write(&f, &stream).unwrap();

    let mut src = capture::open(&format!("pipe:cat {}?format=mjpeg", f.display())).unwrap();
    let (frames, bad, first) = drain(src.as_mut());
    assert_eq!(
        frames.iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![0, 2, 3]
    );
    assert!(frames.iter().all(|f| (f.1, f.2) == (320, 240)));
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert_eq!(bad[0].0, 1);
    assert!(bad[0].1.contains("corrupt JPEG"), "{}", bad[0].1);
    assert_eq!(first.unwrap(), lookout::imageio::decode_rgb(&good).unwrap());
}

#[test]
fn ffmpeg_mjpeg_and_ppm_streams() {
    let Some(clip) = media("vtest.avi") else {
        return;
    };
    let u = format!(
        "pipe:ffmpeg -nostdin -v error -i {} -vf scale=256:192 -frames:v 25 -f mjpeg -?format=mjpeg",
        clip.display()
    );
    let mut src = capture::open(&u).unwrap();
    let (frames, bad, _) = drain(src.as_mut());
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(frames.len(), 25);
    assert!(frames.iter().all(|f| (f.1, f.2) == (256, 192)));

    let ppm = 64 * 48 * 3 + 13; // "P6\n64 48\n255\n" + pixels
    let u = format!(
        "pipe:ffmpeg -nostdin -v error -i {} -vf scale=64:48 -frames:v 6 -f image2pipe -c:v ppm - | head -c {}?format=ppm",
        clip.display(),
        4 * ppm + 100
    );
    let mut src = capture::open(&u).unwrap();
    let (frames, bad, _) = drain(src.as_mut());
    assert_eq!(frames.len(), 4);
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].0, 4);
}

#[test]
fn pipe_uri_errors_name_the_parameter() {
    for (u, param) in [
        ("pipe:cat x?width=4", "height"),
        ("pipe:cat x?format=h264&width=4&height=4", "format"),
        ("pipe:cat x?format=ppm&height=4", "height"),
        ("pipe:cat x?width=4&height=4&fps=3", "fps"),
        ("pipe:cat 100%?format=ppm", "command"),
        ("video:clip.mp4?fps=0", "fps"),
        ("video:clip.mp4?scale=2", "scale"),
    ] {
        let e = capture::open(u).err().unwrap();
        assert!(matches!(e, CaptureError::Uri { .. }), "{u}: {e}");
        assert!(e.to_string().contains(&format!(": {param}:")), "{u}: {e}");
    }
    assert_eq!(PixelFormat::Nv12.frame_len(64, 32), Some(3072));
}
