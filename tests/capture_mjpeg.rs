//! `mjpeg+http:` against a loopback camera that this test runs: real JPEGs (opencv-doc sample
//! photos) served as multipart/x-mixed-replace, with the quirks and failures real IP cameras
//! show: missing Content-Length, odd boundaries, chunked encoding, corrupt and oversized parts,
//! dropped connections, refusals, HTTP errors, authentication.
#[path = "support/skip.rs"]
mod skip_switch;

#[path = "support/mjpeg_camera.rs"]
mod mjpeg_camera;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use lookout::capture::mjpeg_http::MjpegHttpSource;
use lookout::capture::{self, CaptureError, FrameSource};
use mjpeg_camera::{part, Camera, Script, OK_HEAD};

const DATA: &str = "/usr/share/doc/opencv-doc/examples/data";

/// A JPEG file's bytes and its decoded size.
type Photo = (Vec<u8>, (u32, u32));

/// Real JPEG photos; `None` (and a SKIP line) without opencv-doc.
fn photos() -> Option<Vec<Photo>> {
    let mut v = Vec::new();
    for name in ["fruits.jpg", "messi5.jpg", "home.jpg", "baboon.jpg"] {
        let p = Path::new(DATA).join(name);
        let Ok(bytes) = std::fs::read(&p) else {
            skip_switch::skip(&format!(
                "{} is absent (apt-get install opencv-doc)",
                p.display()
            ));
            return None;
        };
        let dims = lookout::imageio::decode_rgb(&bytes).unwrap().dimensions();
        v.push((bytes, dims));
    }
    Some(v)
}

/// Frame sizes until `n` results; bad frames as `(0, 0)`, disconnects as `(1, 1)`.
fn collect(src: &mut dyn FrameSource, n: usize) -> Vec<(u64, (u32, u32))> {
    let mut out = Vec::new();
    while out.len() < n {
        match src.next_frame() {
            Ok(Some(f)) => out.push((f.id, f.image.dimensions())),
            Ok(None) => panic!("a camera stream never ends"),
            Err(CaptureError::BadFrame { frame, .. }) => out.push((frame, (0, 0))),
            Err(CaptureError::Disconnected { reason, .. }) => {
                eprintln!("disconnected: {reason}");
                out.push((u64::MAX, (1, 1)))
            }
            Err(e) => panic!("{e}"),
        }
    }
    out
}

#[test]
fn frames_with_content_length() {
    let Some(p) = photos() else { return };
    let frames: Vec<Vec<u8>> = p.iter().map(|x| x.0.clone()).collect();
    let cam = Camera::start(vec![Box::new(move |s| {
        let _ = s.write_all(OK_HEAD.as_bytes());
        for i in 0..8 {
            part(s, &frames[i % frames.len()]);
        }
        // The camera keeps the connection open until the client has read everything.
        std::thread::sleep(Duration::from_millis(300));
    })]);
    let mut src = capture::open(&cam.uri("/video?action=stream")).unwrap();
    for i in 0..8u64 {
        let f = src.next_frame().unwrap().unwrap();
        assert_eq!(f.id, i);
        assert_eq!(f.image.dimensions(), p[i as usize % p.len()].1);
        if i == 0 {
            assert_eq!(f.image, lookout::imageio::decode_rgb(&p[0].0).unwrap());
            assert_eq!(
                &*f.source,
                format!("mjpeg+http://{}/video?action=stream", cam.addr)
            );
        }
    }
    assert!(
        src.describe().contains("boundary \"frame\""),
        "{}",
        src.describe()
    );
    drop(src);
    let heads = cam.heads();
    assert!(
        heads[0].starts_with("GET /video?action=stream HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    assert!(heads[0].contains("Host: 127.0.0.1:"), "{}", heads[0]);
}

#[test]
fn corrupt_and_oversized_parts_are_skipped_and_counted() {
    let Some(p) = photos() else { return };
    let (a, b) = (p[0].0.clone(), p[2].0.clone()); // 82 kB and 32 kB
    let cam = Camera::start(vec![Box::new(move |s| {
        let _ = s.write_all(OK_HEAD.as_bytes());
        part(s, &b);
        // Header cut: not decodable.
        part(s, &b[..150]);
        part(s, &b);
        // Entropy data overwritten with noise: the decoder rejects or returns garbage, but
        // the stream stays in step.
        let mut noisy = b.clone();
        for (i, x) in noisy.iter_mut().enumerate().skip(20) {
            *x = (i * 31 % 256) as u8;
        }
        part(s, &noisy);
        // Over the client's 64 kB limit.
        part(s, &a);
        part(s, &b);
        std::thread::sleep(Duration::from_millis(300));
    })]);
    let mut opts = cam.options();
    opts.max_part_bytes = 64 * 1024;
    let mut src = MjpegHttpSource::open(opts).unwrap();
    let got = collect(&mut src, 6);
    let dims = p[2].1;
    assert_eq!(got[0], (0, dims));
    assert_eq!(got[1], (1, (0, 0)));
    assert_eq!(got[2], (2, dims));
    assert_eq!(got[3].0, 3);
    assert_eq!(got[4], (4, (0, 0)));
    assert_eq!(got[5], (5, dims));
    let s = src.stats();
    assert!(s.bad_frames >= 2 && s.frames + s.bad_frames == 6, "{s:?}");
}

#[test]
fn parts_without_length_quirky_boundary_and_chunked_encoding() {
    let Some(p) = photos() else { return };
    let jpegs: Vec<Vec<u8>> = p.iter().map(|x| x.0.clone()).collect();
    let j2 = jpegs.clone();
    let cam = Camera::start(vec![
        // Boundary declared with its dashes, used without the RFC's extra two, no
        // Content-Length, no CRLF between an image and the next delimiter, and blank lines
        // before an image.
        Box::new(move |s| {
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace;boundary=\"--myboundary\"\r\n\r\n",
            );
            for j in &jpegs {
                let _ = s.write_all(b"--myboundary\r\nContent-Type: image/jpeg\r\n\r\n\r\n");
                let _ = s.write_all(j);
            }
            std::thread::sleep(Duration::from_millis(300));
        }),
        // Chunked transfer encoding with chunk edges at arbitrary places, and no boundary
        // parameter at all.
        Box::new(move |s| {
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            let mut body = Vec::new();
            for j in &j2 {
                body.extend_from_slice(
                    format!(
                        "--cam\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                        j.len()
                    )
                    .as_bytes(),
                );
                body.extend_from_slice(j);
                body.extend_from_slice(b"\r\n");
            }
            for chunk in body.chunks(7777) {
                let _ = write!(s, "{:x}\r\n", chunk.len());
                let _ = s.write_all(chunk);
                let _ = s.write_all(b"\r\n");
            }
            let _ = s.write_all(b"0\r\n\r\n");
        }),
    ]);
    let mut src = MjpegHttpSource::open(cam.options()).unwrap();
    let got = collect(&mut src, 4);
    let want: Vec<_> = p.iter().enumerate().map(|(i, x)| (i as u64, x.1)).collect();
    assert_eq!(got, want);
    // The first connection ends (the server closes) and the second one is chunked.
    let got = collect(&mut src, 5);
    assert_eq!(got[0], (u64::MAX, (1, 1)), "{got:?}");
    let want: Vec<_> = p
        .iter()
        .enumerate()
        .map(|(i, x)| (4 + i as u64, x.1))
        .collect();
    assert_eq!(got[1..], want[..]);
    assert_eq!(src.stats().reconnects, 1);
}

#[test]
fn reconnects_with_backoff_after_the_camera_drops() {
    let Some(p) = photos() else { return };
    let j = p[2].0.clone();
    let j2 = j.clone();
    let refuse: fn() -> Script = || {
        Box::new(|s: &mut TcpStream| {
            let _ = s.shutdown(std::net::Shutdown::Both);
        })
    };
    let cam = Camera::start(vec![
        Box::new(move |s| {
            let _ = s.write_all(OK_HEAD.as_bytes());
            for _ in 0..3 {
                part(s, &j);
            }
            // Cut off in the middle of the fourth part.
            let _ = write!(s, "--frame\r\nContent-Length: {}\r\n\r\n", j.len());
            let _ = s.write_all(&j[..j.len() / 2]);
        }),
        refuse(),
        refuse(),
        refuse(),
        Box::new(move |s| {
            let _ = s.write_all(OK_HEAD.as_bytes());
            for _ in 0..3 {
                part(s, &j2);
            }
            std::thread::sleep(Duration::from_millis(300));
        }),
    ]);
    let mut src = MjpegHttpSource::open(cam.options()).unwrap();
    let mut ids = Vec::new();
    let mut waits = Vec::new();
    while ids.len() < 6 {
        match src.next_frame() {
            Ok(Some(f)) => ids.push(f.id),
            Err(CaptureError::Disconnected {
                retry_in, reason, ..
            }) => {
                assert!(!reason.is_empty());
                waits.push(retry_in.as_millis());
                assert!(src.describe().contains("disconnected"));
            }
            other => panic!("{other:?}"),
        }
        assert!(waits.len() < 10, "never came back: {waits:?}");
    }
    // The cut part is not a frame: ids run on without a gap.
    assert_eq!(ids, vec![0, 1, 2, 3, 4, 5]);
    // Lost (20 ms), then three refused attempts growing 40, 80, capped at 80.
    assert_eq!(waits, vec![20, 40, 80, 80]);
    let s = src.stats();
    assert_eq!((s.frames, s.bad_frames, s.reconnects), (6, 0, 1));
}

#[test]
fn open_fails_clearly() {
    // Nothing listening.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = capture::open(&format!("mjpeg+http://127.0.0.1:{port}/"))
        .err()
        .unwrap();
    assert!(!e.is_recoverable());
    assert!(e.to_string().contains("cannot connect"), "{e}");

    let respond = |r: &'static str| -> Script {
        Box::new(move |s: &mut TcpStream| {
            let _ = s.write_all(r.as_bytes());
        })
    };
    let cam = Camera::start(vec![
        respond("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
        respond("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cam\"\r\n\r\n"),
        respond("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Digest realm=\"cam\", nonce=\"x\"\r\n\r\n"),
        respond("HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n\r\n"),
        respond("SSH-2.0-OpenSSH_9.2\r\n"),
    ]);
    let expect = [
        "HTTP 404 Not Found",
        "give user:password@",
        "Digest",
        "not a multipart MJPEG stream",
        "not an HTTP/1.x response",
    ];
    for want in expect {
        let e = capture::open(&cam.uri("/")).err().unwrap().to_string();
        assert!(e.contains(want), "{e}");
    }
    cam.heads();
}

#[test]
fn basic_authentication() {
    let Some(p) = photos() else { return };
    let j = p[2].0.clone();
    let cam = Camera::start(vec![Box::new(move |s| {
        let _ = s.write_all(OK_HEAD.as_bytes());
        part(s, &j);
        std::thread::sleep(Duration::from_millis(200));
    })]);
    let uri = format!("mjpeg+http://admin:s%3Acret@{}/", cam.addr);
    let mut src = capture::open(&uri).unwrap();
    let f = src.next_frame().unwrap().unwrap();
    assert_eq!(&*f.source, format!("mjpeg+http://admin:***@{}/", cam.addr));
    drop(src);
    let heads = cam.heads();
    // base64("admin:s:cret")
    assert!(
        heads[0].contains("Authorization: Basic YWRtaW46czpjcmV0\r\n"),
        "{}",
        heads[0]
    );
}

#[test]
fn a_flood_without_boundaries_costs_a_reconnect_not_memory() {
    let cam = Camera::start(vec![Box::new(|s| {
        let _ = s.write_all(OK_HEAD.as_bytes());
        let junk = vec![b'x'; 64 * 1024];
        // Far more than the part limit, and never a delimiter.
        for _ in 0..40 {
            if s.write_all(&junk).is_err() {
                break;
            }
        }
    })]);
    let mut opts = cam.options();
    opts.max_part_bytes = 256 * 1024;
    let mut src = MjpegHttpSource::open(opts).unwrap();
    match src.next_frame() {
        Err(CaptureError::Disconnected { reason, .. }) => {
            assert!(reason.contains("no multipart boundary"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}
