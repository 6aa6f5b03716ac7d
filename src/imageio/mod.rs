//! Reading images from the real world: JPEG/PNG/BMP, RGBA and greyscale, 16-bit, EXIF
//! orientation, any size up to a sane limit; cut-off JPEGs are refused, not painted grey.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage};

use crate::error::{Error, Result};

pub(crate) mod jpeg;

/// Largest accepted side; beyond it a file is more likely hostile than a photo.
pub const MAX_SIDE: u32 = 16_384;

/// Extensions treated as images when a folder is given.
pub const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png", "bmp"];

pub fn is_image_path(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

fn limits() -> image::Limits {
    let mut l = image::Limits::default();
    l.max_image_width = Some(MAX_SIDE);
    l.max_image_height = Some(MAX_SIDE);
    l.max_alloc = Some(1 << 30);
    l
}

/// Load an image file upright (EXIF orientation applied) as 8-bit RGB.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_rgb(&bytes).map_err(|reason| Error::image(path, reason))
}

/// Decode image bytes (any supported format) upright as 8-bit RGB.
pub fn decode_rgb(bytes: &[u8]) -> std::result::Result<RgbImage, String> {
    if bytes.is_empty() {
        return Err("empty file".into());
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    match reader.format() {
        None => return Err("not a JPEG, PNG or BMP image".into()),
        // The JPEG decoder does not report a missing tail (see `jpeg::check_whole`).
        Some(ImageFormat::Jpeg) => jpeg::check_whole(bytes)?,
        Some(_) => {}
    }
    reader.limits(limits());
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| format!("cannot decode: {e}"))?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| format!("cannot decode: {e}"))?;
    img.apply_orientation(orientation);
    if img.width() == 0 || img.height() == 0 {
        return Err("image has no pixels".into());
    }
    Ok(match img {
        DynamicImage::ImageRgb8(i) => i,
        other => other.to_rgb8(),
    })
}
