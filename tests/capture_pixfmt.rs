//! Pixel-format converters against ffmpeg's own conversion of the same bytes, on real frames
//! (fixtures made by tests/fixtures/capture/make_fixtures.sh).

use std::path::PathBuf;

use image::RgbImage;
use lookout::capture::pixfmt::{self, PixelFormat};

/// Tolerances against ffmpeg 5.1's default `-pix_fmt rgb24` conversion. We compute the exact
/// BT.601 limited-range formula rounded to nearest; swscale's default (table-driven) path
/// quantises the chroma terms to steps of one luma level (1.164 output levels) and truncates,
/// so it comes out 1.5 levels darker on average, 3 at most for YUYV, and up to 4 for NV12 where
/// its 14-bit bicubic chroma weights add their own rounding. Measured on these fixtures: mean
/// absolute difference 1.45–1.50 for both formats, max 3 (YUYV) and 4 (NV12).
const MAX_DIFF_YUYV: u8 = 3;
const MAX_DIFF_NV12: u8 = 4;
const MAX_MEAN_DIFF: f64 = 1.6;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/capture")
        .join(name)
}

fn png(name: &str) -> RgbImage {
    image::open(fixture(name)).unwrap().to_rgb8()
}

fn raw(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

/// (largest channel difference, mean absolute difference, share of channels off by more than 1)
fn compare(got: &RgbImage, want: &RgbImage) -> (u8, f64, f64) {
    assert_eq!(got.dimensions(), want.dimensions());
    let mut max = 0u8;
    let mut sum = 0u64;
    let mut over1 = 0usize;
    for (a, b) in got.as_raw().iter().zip(want.as_raw()) {
        let d = a.abs_diff(*b);
        max = max.max(d);
        sum += d as u64;
        over1 += (d > 1) as usize;
    }
    let n = got.as_raw().len() as f64;
    (max, sum as f64 / n, over1 as f64 / n)
}

const FRAMES: &[(&str, u32, u32)] = &[
    ("vtest_f100_320x240", 320, 240),
    ("fruits_160x120", 160, 120),
];

#[test]
fn yuyv422_matches_ffmpeg() {
    for &(base, w, h) in FRAMES {
        let data = raw(&format!("{base}.yuyv422"));
        assert_eq!(data.len(), PixelFormat::Yuyv.frame_len(w, h).unwrap());
        let got = pixfmt::yuyv_to_rgb(&data, w, h, None).unwrap();
        let want = png(&format!("{base}.yuyv422.ffmpeg_rgb24.png"));
        let (max, mean, over1) = compare(&got, &want);
        println!(
            "{base} yuyv422: max diff {max}, mean {mean:.3}, >1: {:.2}%",
            over1 * 100.0
        );
        assert!(max <= MAX_DIFF_YUYV, "{base} yuyv422: max diff {max}");
        assert!(mean <= MAX_MEAN_DIFF, "{base} yuyv422: mean diff {mean}");
    }
}

#[test]
fn nv12_matches_ffmpeg() {
    for &(base, w, h) in FRAMES {
        let data = raw(&format!("{base}.nv12"));
        assert_eq!(data.len(), PixelFormat::Nv12.frame_len(w, h).unwrap());
        let got = pixfmt::nv12_to_rgb(&data, w, h, None).unwrap();
        let want = png(&format!("{base}.nv12.ffmpeg_rgb24.png"));
        let (max, mean, over1) = compare(&got, &want);
        println!(
            "{base} nv12: max diff {max}, mean {mean:.3}, >1: {:.2}%",
            over1 * 100.0
        );
        assert!(max <= MAX_DIFF_NV12, "{base} nv12: max diff {max}");
        assert!(mean <= MAX_MEAN_DIFF, "{base} nv12: mean diff {mean}");
    }
}

/// ffmpeg upsamples NV12's half-height chroma with a bicubic filter; simply repeating each
/// chroma row (nearest neighbour) would differ from it by far more than rounding at colour edges,
/// which is what this guards against.
#[test]
fn nv12_upsamples_chroma_like_ffmpeg() {
    let (base, w, h) = FRAMES[1];
    let data = raw(&format!("{base}.nv12"));
    let want = png(&format!("{base}.nv12.ffmpeg_rgb24.png"));
    let (w2, h2) = (w as usize, h as usize);
    let uv = w2 * h2;
    let got = pixfmt::nv12_to_rgb(&data, w, h, None).unwrap();
    let (max, _, _) = compare(&got, &want);
    // The same samples with each chroma row repeated for both of its luma rows, converted
    // through the 4:2:2 path, which has no vertical filtering.
    let mut yuyv = Vec::with_capacity(w2 * h2 * 2);
    for y in 0..h2 {
        for x in (0..w2).step_by(2) {
            let c = uv + (y / 2) * w2 + x;
            yuyv.extend_from_slice(&[data[y * w2 + x], data[c], data[y * w2 + x + 1], data[c + 1]]);
        }
    }
    let nearest = pixfmt::yuyv_to_rgb(&yuyv, w, h, None).unwrap();
    let (max_nearest, _, _) = compare(&nearest, &want);
    println!("{base}: bicubic chroma max diff {max}, nearest chroma max diff {max_nearest}");
    assert!(
        max_nearest > 3 * max,
        "nearest {max_nearest} vs bicubic {max}"
    );
}

#[test]
fn rgb_and_bgr_are_exact() {
    let (base, w, h) = FRAMES[0];
    let src = png(&format!("{base}.png"));
    let rgb = pixfmt::to_rgb(PixelFormat::Rgb24, src.as_raw(), w, h, None).unwrap();
    assert_eq!(rgb, src);
    let bgr: Vec<u8> = src
        .as_raw()
        .chunks(3)
        .flat_map(|p| [p[2], p[1], p[0]])
        .collect();
    assert_eq!(
        pixfmt::to_rgb(PixelFormat::Bgr24, &bgr, w, h, None).unwrap(),
        src
    );
    // The same frame with 64 bytes of padding per row, as V4L2 drivers deliver it.
    let stride = w as usize * 3 + 64;
    let mut padded = vec![0xAB; stride * h as usize];
    for (y, row) in src.as_raw().chunks(w as usize * 3).enumerate() {
        padded[y * stride..y * stride + row.len()].copy_from_slice(row);
    }
    assert_eq!(
        pixfmt::rgb24_to_rgb(&padded, w, h, Some(stride)).unwrap(),
        src
    );
    assert!(pixfmt::rgb24_to_rgb(&padded[..padded.len() - 65 - 960], w, h, Some(stride)).is_err());
}

/// Strip every DHT segment from a JPEG, as Motion-JPEG webcams send their frames.
fn strip_dht(j: &[u8]) -> Vec<u8> {
    let mut out = j[..2].to_vec();
    let mut pos = 2;
    loop {
        let marker = j[pos + 1];
        if marker == 0xDA {
            out.extend_from_slice(&j[pos..]);
            return out;
        }
        let len = u16::from_be_bytes([j[pos + 2], j[pos + 3]]) as usize;
        if marker != 0xC4 {
            out.extend_from_slice(&j[pos..pos + 2 + len]);
        }
        pos += 2 + len;
    }
}

/// JPEG decoders differ in IDCT and chroma upsampling, so the comparison with ffmpeg's decode is
/// statistical: small mean difference, and a bounded worst case at sharp colour edges.
#[test]
fn mjpeg_decodes_like_ffmpeg_with_or_without_huffman_tables() {
    let jpeg = raw("vtest_f100_320x240.mjpeg.jpg");
    let want = png("vtest_f100_320x240.mjpeg.ffmpeg_rgb24.png");
    let got = pixfmt::mjpeg_to_rgb(&jpeg).unwrap();
    let (max, mean, over1) = compare(&got, &want);
    println!(
        "mjpeg: max diff {max}, mean {mean:.3}, >1: {:.2}%",
        over1 * 100.0
    );
    assert!(mean < 1.5, "mean diff {mean}");
    assert!(
        over1 < 0.2,
        "{:.1}% of channels off by more than 1",
        over1 * 100.0
    );

    let bare = strip_dht(&jpeg);
    assert!(
        bare.len() < jpeg.len() - 400,
        "the fixture should carry its DHT"
    );
    assert!(
        lookout::imageio::decode_rgb(&bare).is_err(),
        "plain decoders need the tables"
    );
    let fixed = pixfmt::mjpeg_to_rgb(&bare).unwrap();
    assert_eq!(
        fixed, got,
        "standard tables must reproduce the stripped ones exactly"
    );
}

#[test]
fn wrong_sizes_are_errors_not_panics() {
    let data = raw("vtest_f100_320x240.yuyv422");
    for (w, h) in [(320, 241), (321, 240), (0, 240), (640, 240)] {
        assert!(pixfmt::yuyv_to_rgb(&data, w, h, None).is_err(), "{w}x{h}");
    }
    let nv = raw("vtest_f100_320x240.nv12");
    assert!(pixfmt::nv12_to_rgb(&nv[..nv.len() - 1], 320, 240, None).is_err());
    assert!(pixfmt::nv12_to_rgb(&nv, 320, 240, Some(100)).is_err());
    let jpeg = raw("vtest_f100_320x240.mjpeg.jpg");
    // Cut inside the headers: no image. (Cut inside the scan, decoders return what they have.)
    assert!(pixfmt::mjpeg_to_rgb(&jpeg[..300]).is_err());
    let _ = pixfmt::mjpeg_to_rgb(&jpeg[..jpeg.len() / 2]);
    let mut noise = jpeg.clone();
    for (i, b) in noise.iter_mut().enumerate().skip(600) {
        *b = (i * 7919 % 251) as u8;
    }
    let _ = pixfmt::mjpeg_to_rgb(&noise);
}
