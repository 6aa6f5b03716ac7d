//! Draw labelled boxes on an image, for people: `lookout detect --annotate OUT`, alert snapshots
//! and `cmd/snapshot` replies.

use image::{Rgb, RgbImage};

use crate::detect::Detection;
use crate::geometry::BBox;
use crate::track::Track;

/// A distinct, stable colour per class.
pub fn class_colour(class_id: usize) -> Rgb<u8> {
    const PALETTE: [[u8; 3]; 10] = [
        [255, 56, 56],
        [255, 157, 151],
        [255, 112, 31],
        [255, 178, 29],
        [207, 210, 49],
        [72, 249, 10],
        [26, 147, 52],
        [0, 212, 187],
        [44, 153, 168],
        [0, 194, 255],
    ];
    Rgb(PALETTE[class_id % PALETTE.len()])
}

fn fill_rect(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb<u8>) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    for y in y0.max(0)..y1.min(h) {
        for x in x0.max(0)..x1.min(w) {
            img.put_pixel(x as u32, y as u32, c);
        }
    }
}

/// Outline a box `thickness` pixels wide, clipped to the image.
pub fn draw_box(img: &mut RgbImage, b: &BBox, c: Rgb<u8>, thickness: i64) {
    let (x1, y1, x2, y2) = (b.x1 as i64, b.y1 as i64, b.x2 as i64, b.y2 as i64);
    fill_rect(img, x1, y1, x2 + 1, y1 + thickness, c);
    fill_rect(img, x1, y2 - thickness + 1, x2 + 1, y2 + 1, c);
    fill_rect(img, x1, y1, x1 + thickness, y2 + 1, c);
    fill_rect(img, x2 - thickness + 1, y1, x2 + 1, y2 + 1, c);
}

/// Write `text` with the 8×8 bitmap font scaled by `scale`, top-left at (x, y).
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, fg: Rgb<u8>, scale: i64) {
    use font8x8::UnicodeFonts;
    for (i, ch) in text.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS
            .get(ch)
            .or_else(|| font8x8::BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        for (gy, row) in glyph.iter().enumerate() {
            for gx in 0..8 {
                if row >> gx & 1 == 1 {
                    let px = x + (i as i64 * 8 + gx) * scale;
                    let py = y + gy as i64 * scale;
                    fill_rect(img, px, py, px + scale, py + scale, fg);
                }
            }
        }
    }
}

/// Boxes with "label score" tags, scaled to the image size.
pub fn annotate(img: &mut RgbImage, dets: &[Detection]) {
    let scale = ((img.width().max(img.height()) / 640) as i64).clamp(1, 4);
    for d in dets {
        let c = class_colour(d.class_id);
        draw_box(img, &d.bbox, c, 2 * scale);
        let text = format!("{} {:.2}", d.label, d.score);
        let (tw, th) = (
            text.chars().count() as i64 * 8 * scale + 2 * scale,
            8 * scale + 2 * scale,
        );
        let x = d.bbox.x1 as i64;
        let y = if d.bbox.y1 as i64 >= th {
            d.bbox.y1 as i64 - th
        } else {
            d.bbox.y1 as i64
        };
        fill_rect(img, x, y, x + tw, y + th, c);
        draw_text(img, x + scale, y + scale, &text, Rgb([0, 0, 0]), scale);
    }
}

/// `img` with `tracks` drawn as labelled boxes, JPEG-encoded at `quality`.
pub fn annotated_jpeg<'a>(
    img: &RgbImage,
    tracks: impl IntoIterator<Item = &'a Track>,
    quality: u8,
) -> Result<Vec<u8>, String> {
    let mut canvas = img.clone();
    let dets: Vec<Detection> = tracks
        .into_iter()
        .map(|t| Detection {
            label: t.label.clone(),
            class_id: t.class_id,
            score: t.score,
            bbox: t.bbox,
        })
        .collect();
    annotate(&mut canvas, &dets);
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, quality)
        .encode_image(&canvas)
        .map_err(|e| format!("encode: {e}"))?;
    Ok(jpeg)
}
