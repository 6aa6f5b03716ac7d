//! `[privacy] blur_people` end to end: `lookout run` on a looped still photo with two people, its
//! web view's published snapshot (`/api/snapshot/<camera>.jpg`, made from the same outbound copy
//! as alert snapshots, store media and clips) read over a real socket. With the blur on, pixels
//! inside the person boxes differ strongly from the unblurred run and pixels away from them are
//! equal; with it off, the snapshot shows the photo unchanged.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// A hang guard, not a speed check.
const PATIENCE: Duration = Duration::from_secs(300);
const PHOTO: &str = "tests/fixtures/images/basketball1.png";
/// nanodet-g's two confident people in the photo (`lookout detect`), x1 y1 x2 y2.
const PEOPLE: [[u32; 4]; 2] = [[35, 84, 170, 475], [424, 24, 637, 480]];
/// The fp32 model, named: the right-hand player scores 0.609 there and 0.594 in the int8 default,
/// either side of the 0.6 a new track needs; these tests are about the blur, not that margin.
const MODEL: &str = "nanodet-g";

struct Run {
    child: Child,
    addr: SocketAddr,
    _tmp: tempfile::TempDir,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(privacy: &str) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("privacy.toml");
    std::fs::write(
        &cfg,
        format!("[camera]\nname = \"court\"\n\n[privacy]\n{privacy}\n"),
    )
    .unwrap();
    let mut child = common::lookout()
        .args(["run", "--http", "127.0.0.1:0", "--broker", "none"])
        .args(["--model", MODEL])
        .arg("--source")
        .arg(format!("file:{PHOTO}?loop&fps=5"))
        .arg("--config")
        .arg(&cfg)
        .current_dir(common::repo())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("web view: http://") {
                let _ = tx.try_send(a.trim_end_matches('/').to_string());
            }
            eprintln!("lookout: {line}");
        }
    });
    let addr = rx
        .recv_timeout(PATIENCE)
        .expect("lookout run did not report its web view")
        .parse()
        .unwrap();
    Run {
        child,
        addr,
        _tmp: tmp,
    }
}

/// GET `/api/snapshot/court.jpg`: `Some(jpeg)` once there is a frame.
fn snapshot(addr: SocketAddr) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        s,
        "GET /api/snapshot/court.jpg HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    raw.starts_with(b"HTTP/1.1 200")
        .then(|| raw[split + 4..].to_vec())
}

/// The snapshot once the still photo's tracks have settled: two in a row byte-identical.
fn settled(privacy: &str) -> image::RgbImage {
    let run = start(privacy);
    let t0 = Instant::now();
    let mut last: Option<Vec<u8>> = None;
    loop {
        assert!(t0.elapsed() < PATIENCE, "the snapshot never settled");
        std::thread::sleep(Duration::from_millis(500));
        let Some(j) = snapshot(run.addr) else {
            continue;
        };
        if last.as_ref() == Some(&j) {
            return image::load_from_memory(&j).unwrap().to_rgb8();
        }
        last = Some(j);
    }
}

/// Mean absolute difference per channel over the pixels `keep` selects.
fn diff(a: &image::RgbImage, b: &image::RgbImage, keep: impl Fn(u32, u32) -> bool) -> f64 {
    let (mut sum, mut n) = (0u64, 0u64);
    for (x, y, p) in a.enumerate_pixels() {
        if keep(x, y) {
            let q = b.get_pixel(x, y);
            sum += (0..3).map(|c| p.0[c].abs_diff(q.0[c]) as u64).sum::<u64>();
            n += 3;
        }
    }
    sum as f64 / n.max(1) as f64
}

fn inside(b: &[u32; 4], x: u32, y: u32, grow: u32) -> bool {
    x + grow >= b[0] && x < b[2] + grow && y + grow >= b[1] && y < b[3] + grow
}

#[test]
fn blurred_people_leave_the_device_only_blurred() {
    let off = settled("blur_people = false");
    let photo = image::open(common::repo().join(PHOTO)).unwrap().to_rgb8();
    for privacy in ["blur_people = true", "blur_people = true\nshape = \"box\""] {
        let on = settled(privacy);
        assert_eq!(on.dimensions(), photo.dimensions());
        for b in &PEOPLE {
            // well inside the box (away from the drawn frame and label)
            let d = diff(&on, &off, |x, y| {
                x > b[0] + 6 && x + 6 < b[2] && y > b[1] + 12 && y + 6 < b[3]
            });
            println!("{privacy:?}: box {b:?} differs by {d:.1}");
            assert!(
                d > 12.0,
                "{privacy:?}: box {b:?}: blurred differs from unblurred by only {d:.1}"
            );
        }
        // away from every person box (32 px: JPEG blocks, the drawn labels) nothing changed
        let away = |x: u32, y: u32| {
            PEOPLE.iter().all(|b| !inside(b, x, y, 32)) && !inside(&[117, 84, 173, 155], x, y, 32)
        };
        let d_out = diff(&on, &off, away);
        println!("{privacy:?}: outside the people {d_out:.2}");
        assert!(
            d_out < 1.0,
            "{privacy:?}: outside the people the snapshots differ by {d_out:.2}"
        );
    }
    // blur off: the published frame is the photo (JPEG-close) where nothing is drawn
    let d_photo = diff(&off, &photo, |x, y| {
        PEOPLE.iter().any(|b| {
            inside(b, x, y, 0) && x > b[0] + 6 && x + 6 < b[2] && y > b[1] + 12 && y + 6 < b[3]
        })
    });
    assert!(
        d_photo < 6.0,
        "blur off: the snapshot differs from the photo by {d_photo:.1} inside the boxes"
    );
    println!("blur off: snapshot vs photo inside the boxes {d_photo:.2}");
}

/// Store media (`[store]`: each event's crop and frame snapshot) are cut from the outbound copy:
/// with the blur on, the stored frame differs strongly from the photo inside the person boxes
/// and is the photo (JPEG-close) away from them; every stored crop of a person is blurred too.
#[test]
fn store_media_are_cut_from_the_blurred_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("store.toml");
    std::fs::write(
        &cfg,
        "[camera]\nname = \"court\"\n\n[privacy]\nblur_people = true\n",
    )
    .unwrap();
    let store = tmp.path().join("store");
    let out = common::lookout()
        .args(["run", "--broker", "none", "--max-frames", "20"])
        .args(["--model", MODEL])
        .arg("--source")
        .arg(format!("file:{PHOTO}?loop"))
        .arg("--config")
        .arg(&cfg)
        .arg("--store")
        .arg(&store)
        .current_dir(common::repo())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let photo = image::open(common::repo().join(PHOTO)).unwrap().to_rgb8();
    let media: Vec<_> = std::fs::read_dir(store.join("media/court"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let snaps: Vec<_> = media
        .iter()
        .filter(|p| p.to_string_lossy().ends_with("-snap.jpg"))
        .collect();
    let crops: Vec<_> = media
        .iter()
        .filter(|p| p.to_string_lossy().ends_with("-crop.jpg"))
        .collect();
    assert!(
        snaps.len() >= 2 && crops.len() >= 2,
        "two people, their media: {media:?}"
    );
    for s in &snaps {
        let snap = image::open(s).unwrap().to_rgb8();
        assert_eq!(snap.dimensions(), photo.dimensions());
        for b in &PEOPLE {
            let d = diff(&snap, &photo, |x, y| inside(b, x, y, 0));
            println!(
                "{}: box {b:?} differs from the photo by {d:.1}",
                s.display()
            );
            assert!(
                d > 12.0,
                "{}: box {b:?} differs by only {d:.1}",
                s.display()
            );
        }
        let away = |x: u32, y: u32| {
            PEOPLE.iter().all(|b| !inside(b, x, y, 32)) && !inside(&[117, 84, 173, 155], x, y, 32)
        };
        let d_out = diff(&snap, &photo, away);
        assert!(d_out < 4.0, "{}: away from people {d_out:.2}", s.display());
    }
    for c in &crops {
        // a crop is its person's box plus 8 %: find which, and compare with the photo there
        let crop = image::open(c).unwrap().to_rgb8();
        let (cw, ch) = crop.dimensions();
        let best = PEOPLE
            .iter()
            .map(|b| {
                let (mx, my) = ((b[2] - b[0]) as f32 * 0.08, (b[3] - b[1]) as f32 * 0.08);
                let x1 = (b[0] as f32 - mx).max(0.0) as u32;
                let y1 = (b[1] as f32 - my).max(0.0) as u32;
                (x1, y1)
            })
            .filter(|(x1, y1)| x1 + cw <= photo.width() && y1 + ch <= photo.height())
            .map(|(x1, y1)| {
                let region = image::imageops::crop_imm(&photo, x1, y1, cw, ch).to_image();
                diff(&crop, &region, |_, _| true)
            })
            .fold(f64::INFINITY, f64::min);
        println!("{}: differs from the photo by {best:.1}", c.display());
        assert!(
            best > 8.0,
            "{}: crop differs by only {best:.1}",
            c.display()
        );
    }
}
