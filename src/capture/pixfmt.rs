//! Camera pixel formats → 8-bit RGB.
//!
//! YUV input is taken as BT.601 limited range ("TV range", Y 16–235, chroma 16–240), which is
//! what V4L2 webcams deliver and what ffmpeg's swscale assumes by default, so a frame converted
//! here is what `ffmpeg -pix_fmt rgb24` makes of the same bytes, up to swscale's fixed-point
//! rounding (tested on real frames in `tests/capture_pixfmt.rs`, where the tolerance is
//! explained). The arithmetic is the exact BT.601 formula rounded to nearest; ffmpeg's
//! table-driven default path lands on average 1.5 levels darker.
//!
//! Chroma is placed the way swscale places it for an unscaled conversion: horizontally each
//! sample covers its pair of pixels (no interpolation); NV12's vertically halved chroma is
//! upsampled with swscale's default bicubic filter, which keeps colour edges as ffmpeg draws
//! them rather than in 2-pixel steps.
//!
//! Every converter checks the buffer against the stated size and stride and returns an error
//! instead of reading out of bounds.

use image::RgbImage;

use crate::imageio;

/// Pixel layouts a capture device or pipe may deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelFormat {
    /// Packed R, G, B bytes.
    Rgb24,
    /// Packed B, G, R bytes (OpenCV's order).
    Bgr24,
    /// Packed 4:2:2, `Y0 U Y1 V` per two pixels (V4L2 `YUYV`, ffmpeg `yuyv422`).
    Yuyv,
    /// A Y plane followed by an interleaved U/V plane at half resolution both ways.
    Nv12,
    /// One JPEG per frame (V4L2 `MJPG`), Huffman tables optional.
    Mjpeg,
}

impl PixelFormat {
    pub const ALL: [PixelFormat; 5] = [
        PixelFormat::Rgb24,
        PixelFormat::Bgr24,
        PixelFormat::Yuyv,
        PixelFormat::Nv12,
        PixelFormat::Mjpeg,
    ];

    /// Accepts the ffmpeg and V4L2 spellings: `rgb24`/`rgb3`, `bgr24`/`bgr3`,
    /// `yuyv`/`yuyv422`/`yuy2`, `nv12`, `mjpeg`/`mjpg`/`jpeg`.
    pub fn from_name(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "rgb24" | "rgb3" | "rgb" => PixelFormat::Rgb24,
            "bgr24" | "bgr3" | "bgr" => PixelFormat::Bgr24,
            "yuyv" | "yuyv422" | "yuy2" => PixelFormat::Yuyv,
            "nv12" => PixelFormat::Nv12,
            "mjpeg" | "mjpg" | "jpeg" => PixelFormat::Mjpeg,
            _ => return None,
        })
    }

    /// The ffmpeg name.
    pub fn name(self) -> &'static str {
        match self {
            PixelFormat::Rgb24 => "rgb24",
            PixelFormat::Bgr24 => "bgr24",
            PixelFormat::Yuyv => "yuyv422",
            PixelFormat::Nv12 => "nv12",
            PixelFormat::Mjpeg => "mjpeg",
        }
    }

    /// Bytes in one row without padding; `None` for compressed formats.
    pub fn min_stride(self, width: u32) -> Option<usize> {
        let w = width as usize;
        match self {
            PixelFormat::Rgb24 | PixelFormat::Bgr24 => Some(w * 3),
            PixelFormat::Yuyv => Some(w.div_ceil(2) * 4),
            PixelFormat::Nv12 => Some(w.div_ceil(2) * 2),
            PixelFormat::Mjpeg => None,
        }
    }

    /// Bytes in one tightly packed frame; `None` for compressed formats.
    pub fn frame_len(self, width: u32, height: u32) -> Option<usize> {
        let stride = self.min_stride(width)?;
        let h = height as usize;
        Some(match self {
            PixelFormat::Nv12 => stride * h + stride * h.div_ceil(2),
            _ => stride * h,
        })
    }
}

impl std::fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a buffer could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConvertError(pub String);

/// Convert one frame. `stride` is the distance in bytes between rows of the first plane
/// (V4L2 `bytesperline`); `None` means tightly packed. For [`PixelFormat::Mjpeg`] the size comes
/// from the JPEG and `width`, `height` and `stride` are not used.
pub fn to_rgb(
    format: PixelFormat,
    data: &[u8],
    width: u32,
    height: u32,
    stride: Option<usize>,
) -> Result<RgbImage, ConvertError> {
    match format {
        PixelFormat::Rgb24 => rgb24_to_rgb(data, width, height, stride),
        PixelFormat::Bgr24 => bgr24_to_rgb(data, width, height, stride),
        PixelFormat::Yuyv => yuyv_to_rgb(data, width, height, stride),
        PixelFormat::Nv12 => nv12_to_rgb(data, width, height, stride),
        PixelFormat::Mjpeg => mjpeg_to_rgb(data),
    }
}

/// Check the size and return the stride to use.
fn layout(
    format: PixelFormat,
    data: &[u8],
    width: u32,
    height: u32,
    stride: Option<usize>,
) -> Result<usize, ConvertError> {
    if width == 0 || height == 0 || width > imageio::MAX_SIDE || height > imageio::MAX_SIDE {
        return Err(ConvertError(format!(
            "{format} frame size {width}x{height} is outside 1..={}",
            imageio::MAX_SIDE
        )));
    }
    let row = format.min_stride(width).unwrap_or(0);
    let stride = stride.unwrap_or(row);
    if stride < row {
        return Err(ConvertError(format!(
            "{format} stride {stride} is less than the {row} bytes of a {width}-pixel row"
        )));
    }
    let h = height as usize;
    // The last row of each plane may end without padding.
    let needed = match format {
        PixelFormat::Nv12 => stride * h + stride * (h.div_ceil(2) - 1) + row,
        _ => stride * (h - 1) + row,
    };
    if data.len() < needed {
        return Err(ConvertError(format!(
            "{format} {width}x{height} (stride {stride}) needs {needed} bytes, got {}",
            data.len()
        )));
    }
    Ok(stride)
}

pub fn rgb24_to_rgb(
    data: &[u8],
    width: u32,
    height: u32,
    stride: Option<usize>,
) -> Result<RgbImage, ConvertError> {
    let stride = layout(PixelFormat::Rgb24, data, width, height, stride)?;
    let row = width as usize * 3;
    let mut out = Vec::with_capacity(row * height as usize);
    for y in 0..height as usize {
        out.extend_from_slice(&data[y * stride..y * stride + row]);
    }
    Ok(image_from(width, height, out))
}

pub fn bgr24_to_rgb(
    data: &[u8],
    width: u32,
    height: u32,
    stride: Option<usize>,
) -> Result<RgbImage, ConvertError> {
    let stride = layout(PixelFormat::Bgr24, data, width, height, stride)?;
    let row = width as usize * 3;
    let mut out = Vec::with_capacity(row * height as usize);
    for y in 0..height as usize {
        for px in data[y * stride..y * stride + row].chunks_exact(3) {
            out.extend_from_slice(&[px[2], px[1], px[0]]);
        }
    }
    Ok(image_from(width, height, out))
}

pub fn yuyv_to_rgb(
    data: &[u8],
    width: u32,
    height: u32,
    stride: Option<usize>,
) -> Result<RgbImage, ConvertError> {
    let stride = layout(PixelFormat::Yuyv, data, width, height, stride)?;
    let w = width as usize;
    let mut out = vec![0u8; w * 3 * height as usize];
    for (y, dst) in out.chunks_exact_mut(w * 3).enumerate() {
        let src = &data[y * stride..y * stride + w.div_ceil(2) * 4];
        for (pair, s) in dst.chunks_mut(6).zip(src.chunks_exact(4)) {
            let c = Chroma::new(s[1], s[3]);
            c.put(s[0], &mut pair[..3]);
            if pair.len() == 6 {
                c.put(s[2], &mut pair[3..]);
            }
        }
    }
    Ok(image_from(width, height, out))
}

pub fn nv12_to_rgb(
    data: &[u8],
    width: u32,
    height: u32,
    stride: Option<usize>,
) -> Result<RgbImage, ConvertError> {
    let stride = layout(PixelFormat::Nv12, data, width, height, stride)?;
    let (w, h) = (width as usize, height as usize);
    let uv_row_len = w.div_ceil(2) * 2;
    let uv_rows = h.div_ceil(2);
    let uv_plane = stride * h;
    let uv_row = |r: isize| {
        let r = r.clamp(0, uv_rows as isize - 1) as usize;
        &data[uv_plane + r * stride..uv_plane + r * stride + uv_row_len]
    };
    let mut uv = vec![0u8; uv_row_len];
    let mut out = vec![0u8; w * 3 * h];
    for (y, dst) in out.chunks_exact_mut(w * 3).enumerate() {
        // Chroma sample k sits between luma rows 2k and 2k+1 (MPEG-1 siting); swscale's
        // default bicubic filter then weighs the four nearest chroma rows as below, in 640ths.
        let k = (y / 2) as isize;
        let (rows, taps) = if y % 2 == 0 {
            ([k - 2, k - 1, k, k + 1], [-18, 154, 558, -54])
        } else {
            ([k - 1, k, k + 1, k + 2], [-54, 558, 154, -18])
        };
        let src = rows.map(uv_row);
        for (i, c) in uv.iter_mut().enumerate() {
            let s: i32 = (0..4).map(|t| taps[t] * src[t][i] as i32).sum();
            *c = clamp((s + 320).div_euclid(640));
        }
        let luma = &data[y * stride..y * stride + w];
        for ((pair, l), c) in dst
            .chunks_mut(6)
            .zip(luma.chunks(2))
            .zip(uv.chunks_exact(2))
        {
            let c = Chroma::new(c[0], c[1]);
            c.put(l[0], &mut pair[..3]);
            if let (Some(&l1), true) = (l.get(1), pair.len() == 6) {
                c.put(l1, &mut pair[3..]);
            }
        }
    }
    Ok(image_from(width, height, out))
}

/// Decode one Motion-JPEG frame, supplying the standard Huffman tables when the camera left them
/// out (as most USB webcams do). Frames over [`MAX_FRAME_PIXELS`](super::MAX_FRAME_PIXELS) are
/// refused from their header.
pub fn mjpeg_to_rgb(data: &[u8]) -> Result<RgbImage, ConvertError> {
    if let Some((w, h)) = imageio::jpeg::dimensions(data) {
        // A few hundred bytes can declare a 65535x65535 image; refuse before decoding.
        if w as u64 * h as u64 > super::MAX_FRAME_PIXELS {
            return Err(ConvertError(format!(
                "mjpeg: {w}x{h} is larger than the {} pixel limit",
                super::MAX_FRAME_PIXELS
            )));
        }
    }
    let fixed = imageio::jpeg::with_huffman_tables(data);
    imageio::decode_rgb(&fixed).map_err(|e| ConvertError(format!("mjpeg: {e}")))
}

fn image_from(width: u32, height: u32, buf: Vec<u8>) -> RgbImage {
    // The buffer is built as width*height*3 above, so this cannot fail; a blank image would
    // still be better than a panic in the capture thread.
    RgbImage::from_raw(width, height, buf).unwrap_or_else(|| RgbImage::new(width, height))
}

// BT.601 limited range in 16-bit fixed point:
// R = 1.164 (Y-16) + 1.596 (V-128); G = 1.164 (Y-16) - 0.392 (U-128) - 0.813 (V-128);
// B = 1.164 (Y-16) + 2.017 (U-128). Coefficients are 255/219 for luma and 255/224 times the
// BT.601 matrix (Kr = 0.299, Kb = 0.114) for chroma, times 65536.
const CY: i32 = 76_309;
const CRV: i32 = 104_597;
const CGU: i32 = 25_675;
const CGV: i32 = 53_279;
const CBU: i32 = 132_201;
const HALF: i32 = 1 << 15;

/// The chroma terms of one sample, shared by the pixels it covers.
struct Chroma {
    r: i32,
    g: i32,
    b: i32,
}

impl Chroma {
    #[inline]
    fn new(u: u8, v: u8) -> Self {
        let (u, v) = (u as i32 - 128, v as i32 - 128);
        Chroma {
            r: CRV * v + HALF,
            g: -CGU * u - CGV * v + HALF,
            b: CBU * u + HALF,
        }
    }

    #[inline]
    fn put(&self, y: u8, px: &mut [u8]) {
        let l = CY * (y as i32 - 16);
        px[0] = clamp((l + self.r) >> 16);
        px[1] = clamp((l + self.g) >> 16);
        px[2] = clamp((l + self.b) >> 16);
    }
}

#[inline]
fn clamp(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for f in PixelFormat::ALL {
            assert_eq!(PixelFormat::from_name(f.name()), Some(f));
        }
        assert_eq!(PixelFormat::from_name("YUY2"), Some(PixelFormat::Yuyv));
        assert_eq!(PixelFormat::from_name("MJPG"), Some(PixelFormat::Mjpeg));
        assert_eq!(PixelFormat::from_name("i420"), None);
        assert_eq!(PixelFormat::Nv12.frame_len(4, 2), Some(12));
        assert_eq!(PixelFormat::Nv12.frame_len(3, 3), Some(3 * 4 + 4 * 2));
        assert_eq!(PixelFormat::Yuyv.frame_len(3, 1), Some(8));
    }

    #[test]
    fn reference_colours() {
        // Limited-range black, white and the BT.601 75% colour bars.
        let cases = [
            ((16, 128, 128), [0, 0, 0]),
            ((235, 128, 128), [255, 255, 255]),
            ((162, 44, 142), [191, 191, 0]), // yellow
            ((131, 156, 44), [0, 191, 191]), // cyan
            ((112, 72, 58), [0, 191, 0]),    // green
            ((84, 184, 198), [191, 0, 191]), // magenta
            ((65, 100, 212), [191, 0, 0]),   // red
            ((35, 212, 114), [0, 0, 191]),   // blue
        ];
        for ((y, u, v), want) in cases {
            let img = yuyv_to_rgb(&[y, u, y, v], 2, 1, None).unwrap();
            let got = img.get_pixel(1, 0).0;
            for c in 0..3 {
                assert!(
                    (got[c] as i32 - want[c]).abs() <= 2,
                    "YUV {y},{u},{v}: got {got:?}, want {want:?}"
                );
            }
        }
    }

    #[test]
    fn sizes_are_checked() {
        let e = yuyv_to_rgb(&[0; 7], 2, 2, None).unwrap_err().to_string();
        assert!(e.contains("needs 8 bytes, got 7"), "{e}");
        assert!(nv12_to_rgb(&[0; 5], 2, 2, None).is_err());
        assert!(nv12_to_rgb(&[0; 6], 2, 2, None).is_ok());
        assert!(rgb24_to_rgb(&[0; 12], 2, 2, Some(5)).is_err());
        assert!(rgb24_to_rgb(&[], 0, 2, None).is_err());
        assert!(rgb24_to_rgb(&[0; 3], 1, u32::MAX, None).is_err());
        assert!(mjpeg_to_rgb(b"not a jpeg").is_err());
        assert!(mjpeg_to_rgb(&[]).is_err());
        let mut huge = vec![
            0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08, 0xFF, 0xFF, 0xFF, 0xFF,
        ];
        huge.extend_from_slice(&[0; 12]);
        let e = mjpeg_to_rgb(&huge).unwrap_err().to_string();
        assert!(e.contains("65535x65535 is larger"), "{e}");
    }

    #[test]
    fn strides_and_odd_sizes() {
        // 3x2 YUYV with 4 bytes of row padding: each row holds two Y-U-Y-V groups.
        let row = [16, 128, 235, 128, 16, 128, 99, 128, 0, 0, 0, 0];
        let mut data = row.to_vec();
        data.extend_from_slice(&row[..8]); // the last row has no padding
        let img = yuyv_to_rgb(&data, 3, 2, Some(12)).unwrap();
        assert_eq!(img.get_pixel(0, 1).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(1, 1).0, [255, 255, 255]);
        assert_eq!(img.get_pixel(2, 0).0, [0, 0, 0]);

        // 3x3 NV12: Y rows of stride 4, UV plane of 2 rows.
        let mut nv = vec![235u8; 12];
        nv.extend_from_slice(&[128; 8]);
        let img = nv12_to_rgb(&nv, 3, 3, Some(4)).unwrap();
        assert!(img.pixels().all(|p| p.0 == [255, 255, 255]));

        let bgr = bgr24_to_rgb(&[1, 2, 3, 4, 5, 6], 2, 1, None).unwrap();
        assert_eq!(bgr.as_raw(), &[3, 2, 1, 6, 5, 4]);
    }
}
