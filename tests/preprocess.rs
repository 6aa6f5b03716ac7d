//! Pre-processing against OpenCV: `tests/fixtures/make_preprocess.py` letterboxed and stretched a
//! real photo with `cv2.resize(INTER_LINEAR)`; lookout must produce the same pixels.
//! Tolerance: at most 1 level per channel (OpenCV's SIMD paths round its 22-bit fixed point
//! slightly differently from the scalar formula), and at most 0.5% of values may differ at all.

mod common;

use lookout::detect::manifest::{Align, ColorOrder, InputSection, Layout, ResizeMode};
use lookout::detect::preprocess::{fit, to_tensor};
use serde_json::Value;

const MAX_ABS: i32 = 1;
const MAX_DIFFERING: f64 = 0.005;

fn input(resize: &str, align: Option<&str>, pad: u8, w: usize, h: usize) -> InputSection {
    InputSection {
        name: None,
        shape: vec![1, 3, h, w],
        layout: Layout::Nchw,
        color: ColorOrder::Rgb,
        scale: 1.0,
        mean: [0.0; 3],
        std: [1.0; 3],
        resize: if resize == "stretch" {
            ResizeMode::Stretch
        } else {
            ResizeMode::Letterbox
        },
        align: if align == Some("center") {
            Align::Center
        } else {
            Align::TopLeft
        },
        pad_value: pad,
    }
}

#[test]
fn resize_matches_opencv() {
    let dir = common::fixture("preprocess");
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    for c in cases["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let src = image::open(dir.join(c["source"].as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        let want = image::open(dir.join(c["output"].as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        let (w, h) = (
            c["input_size"][0].as_u64().unwrap() as usize,
            c["input_size"][1].as_u64().unwrap() as usize,
        );
        let inp = input(
            c["resize"].as_str().unwrap(),
            c["align"].as_str(),
            c["pad_value"].as_u64().unwrap_or(0) as u8,
            w,
            h,
        );
        let (got, t) = fit(&src, &inp, (h, w));
        assert_eq!(got.dimensions(), want.dimensions(), "{name}");
        let (sx, ox, oy) = (
            c["scale"][0].as_f64().unwrap() as f32,
            c["offset"][0].as_f64().unwrap() as f32,
            c["offset"][1].as_f64().unwrap() as f32,
        );
        assert!(
            (t.scale_x - sx).abs() < 1e-4 && t.offset_x == ox && t.offset_y == oy,
            "{name}: transform {t:?}"
        );
        let (mut max, mut differing) = (0, 0usize);
        for (a, b) in got.as_raw().iter().zip(want.as_raw()) {
            let d = (*a as i32 - *b as i32).abs();
            max = max.max(d);
            differing += (d > 0) as usize;
        }
        let frac = differing as f64 / got.as_raw().len() as f64;
        println!(
            "{name}: max |diff| {max}, {:.3}% of values differ",
            100.0 * frac
        );
        assert!(max <= MAX_ABS, "{name}: max abs diff {max} > {MAX_ABS}");
        assert!(
            frac <= MAX_DIFFERING,
            "{name}: {:.2}% of values differ",
            100.0 * frac
        );
    }
}

#[test]
fn tensor_layout_colour_and_normalisation() {
    let mut img = image::RgbImage::new(2, 1);
    img.put_pixel(0, 0, image::Rgb([10, 20, 30]));
    img.put_pixel(1, 0, image::Rgb([40, 50, 60]));
    let mut inp = input("stretch", None, 0, 2, 1);
    inp.color = ColorOrder::Bgr;
    inp.scale = 0.5;
    inp.mean = [1.0, 2.0, 3.0];
    inp.std = [2.0, 2.0, 2.0];
    let mut out = vec![0.0; 6];
    to_tensor(&img, &inp, &mut out);
    // NCHW, channel 0 = blue: (30*0.5 - 1)/2 = 7; channel 2 = red: (10*0.5 - 3)/2 = 1
    assert_eq!(out, vec![7.0, 14.5, 4.0, 11.5, 1.0, 8.5]);
    inp.layout = Layout::Nhwc;
    to_tensor(&img, &inp, &mut out);
    assert_eq!(out, vec![7.0, 4.0, 1.0, 14.5, 11.5, 8.5]);
}

#[test]
fn exif_orientation_is_applied() {
    let dir = common::fixture("preprocess");
    let img = lookout::imageio::load_rgb(&dir.join("exif_orientation6.jpg")).unwrap();
    let want = image::open(dir.join("exif_orientation6_upright.png"))
        .unwrap()
        .to_rgb8();
    assert_eq!(
        img.dimensions(),
        want.dimensions(),
        "EXIF orientation 6 must rotate to upright"
    );
    // Different JPEG decoders (zune-jpeg here, libjpeg in PIL) differ by a few levels.
    let mean: f64 = img
        .as_raw()
        .iter()
        .zip(want.as_raw())
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .sum::<f64>()
        / img.as_raw().len() as f64;
    println!("mean |diff| vs PIL upright: {mean:.2}");
    assert!(mean < 3.0, "mean abs diff {mean}");
}

#[test]
fn rgba_greyscale_and_16_bit_images_load_as_rgb() {
    let tmp = tempfile::tempdir().unwrap();
    let src = image::open(common::fixture("preprocess/source_small.png")).unwrap();
    for (name, img) in [
        ("rgba.png", image::DynamicImage::ImageRgba8(src.to_rgba8())),
        ("grey.png", image::DynamicImage::ImageLuma8(src.to_luma8())),
        ("rgb16.png", image::DynamicImage::ImageRgb16(src.to_rgb16())),
        ("plain.bmp", image::DynamicImage::ImageRgb8(src.to_rgb8())),
    ] {
        let p = tmp.path().join(name);
        img.save(&p).unwrap();
        let got = lookout::imageio::load_rgb(&p).unwrap();
        assert_eq!(got.dimensions(), (100, 75), "{name}");
    }
}
