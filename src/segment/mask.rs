//! A binary mask in source pixels and its COCO-style run-length form (what `lookout ground` and the
//! MQTT `cmd/ground` reply carry as `mask`).

use serde::{Deserialize, Serialize};

use crate::geometry::BBox;

/// One bit per source pixel (stored as 0/1 bytes, row-major), `width × height` of the image it was
/// made for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

/// COCO's uncompressed RLE: `size = [height, width]`, `counts` alternate runs of 0 and 1 (starting
/// with 0) over the pixels in **column-major** order, as `pycocotools.mask.frPyObjects` reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rle {
    pub size: [u32; 2],
    pub counts: Vec<u32>,
}

/// Why an [`Rle`] does not describe a mask.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RleError {
    #[error("mask.counts: runs add up to {got} pixels, size {h}x{w} has {want}")]
    Length { got: u64, want: u64, h: u32, w: u32 },
    #[error("mask.size: {h}x{w} is over the {MAX_PIXELS}-pixel limit")]
    TooLarge { h: u32, w: u32 },
}

/// The largest mask an RLE may describe (a 8K frame is 33 M pixels): a peer's JSON cannot make
/// lookout allocate more.
pub const MAX_PIXELS: u64 = 1 << 26;

impl Mask {
    /// An empty mask of the given size.
    pub fn empty(width: u32, height: u32) -> Mask {
        Mask {
            width,
            height,
            data: vec![0; width as usize * height as usize],
        }
    }

    pub fn width(&self) -> u32 {
        self.width
    }
    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn get(&self, x: u32, y: u32) -> bool {
        x < self.width && y < self.height && self.data[(y * self.width + x) as usize] != 0
    }

    pub fn set(&mut self, x: u32, y: u32, on: bool) {
        if x < self.width && y < self.height {
            self.data[(y * self.width + x) as usize] = on as u8;
        }
    }

    /// Row-major 0/1 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// Pixels set.
    pub fn area(&self) -> u64 {
        self.data.iter().map(|&v| v as u64).sum()
    }

    /// Intersection over union with a mask of the same size (1.0 when both are empty; 0.0 when the
    /// sizes differ).
    pub fn iou(&self, o: &Mask) -> f64 {
        if (self.width, self.height) != (o.width, o.height) {
            return 0.0;
        }
        let (mut inter, mut union) = (0u64, 0u64);
        for (a, b) in self.data.iter().zip(&o.data) {
            inter += (a & b) as u64;
            union += (a | b) as u64;
        }
        if union == 0 {
            1.0
        } else {
            inter as f64 / union as f64
        }
    }

    /// The tightest box around the set pixels (`None` when empty).
    pub fn bbox(&self) -> Option<BBox> {
        let (mut x1, mut y1, mut x2, mut y2) = (u32::MAX, u32::MAX, 0, 0);
        for y in 0..self.height {
            for x in 0..self.width {
                if self.get(x, y) {
                    x1 = x1.min(x);
                    y1 = y1.min(y);
                    x2 = x2.max(x + 1);
                    y2 = y2.max(y + 1);
                }
            }
        }
        (x1 != u32::MAX).then_some(BBox {
            x1: x1 as f32,
            y1: y1 as f32,
            x2: x2 as f32,
            y2: y2 as f32,
        })
    }

    /// COCO run-length encoding (column-major, first run counts zeros).
    pub fn to_rle(&self) -> Rle {
        let mut counts = Vec::new();
        let (mut cur, mut run) = (0u8, 0u32);
        for x in 0..self.width {
            for y in 0..self.height {
                let v = self.data[(y * self.width + x) as usize];
                if v != cur {
                    counts.push(run);
                    cur = v;
                    run = 0;
                }
                run += 1;
            }
        }
        counts.push(run);
        Rle {
            size: [self.height, self.width],
            counts,
        }
    }

    /// The mask an [`Rle`] describes; the runs must cover the size exactly.
    pub fn from_rle(r: &Rle) -> Result<Mask, RleError> {
        let [h, w] = r.size;
        let want = h as u64 * w as u64;
        if want > MAX_PIXELS {
            return Err(RleError::TooLarge { h, w });
        }
        let got: u64 = r.counts.iter().map(|&c| c as u64).sum();
        if got != want {
            return Err(RleError::Length { got, want, h, w });
        }
        let mut m = Mask::empty(w, h);
        let mut i = 0u64;
        for (k, &c) in r.counts.iter().enumerate() {
            if k % 2 == 1 {
                for j in i..i + c as u64 {
                    let (x, y) = ((j / h as u64) as u32, (j % h as u64) as u32);
                    m.data[(y * w + x) as usize] = 1;
                }
            }
            i += c as u64;
        }
        Ok(m)
    }
}

impl Serialize for Mask {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_rle().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Mask {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Mask, D::Error> {
        let r = Rle::deserialize(d)?;
        Mask::from_rle(&r).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rle_is_column_major_and_round_trips() {
        let mut m = Mask::empty(3, 2);
        m.set(1, 0, true);
        m.set(1, 1, true);
        m.set(2, 1, true);
        // columns: x=0 [0,0], x=1 [1,1], x=2 [0,1]
        let r = m.to_rle();
        assert_eq!(r.size, [2, 3]);
        assert_eq!(r.counts, vec![2, 2, 1, 1]);
        assert_eq!(Mask::from_rle(&r).unwrap(), m);
        let j = serde_json::to_string(&m).unwrap();
        assert_eq!(j, r#"{"size":[2,3],"counts":[2,2,1,1]}"#);
        assert_eq!(serde_json::from_str::<Mask>(&j).unwrap(), m);
        assert_eq!(m.area(), 3);
        assert_eq!(m.bbox(), Some(BBox::from([1.0, 0.0, 3.0, 2.0])));
    }

    #[test]
    fn rle_that_does_not_cover_the_size_is_refused() {
        let r = Rle {
            size: [2, 2],
            counts: vec![1, 1],
        };
        assert!(matches!(
            Mask::from_rle(&r),
            Err(RleError::Length {
                got: 2,
                want: 4,
                ..
            })
        ));
        let huge = Rle {
            size: [u32::MAX, u32::MAX],
            counts: vec![u32::MAX],
        };
        assert!(matches!(
            Mask::from_rle(&huge),
            Err(RleError::TooLarge { .. })
        ));
    }

    #[test]
    fn iou() {
        let mut a = Mask::empty(4, 1);
        let mut b = Mask::empty(4, 1);
        a.set(0, 0, true);
        a.set(1, 0, true);
        b.set(1, 0, true);
        assert!((a.iou(&b) - 0.5).abs() < 1e-9);
        assert_eq!(Mask::empty(2, 2).iou(&Mask::empty(2, 2)), 1.0);
    }
}
