//! Axis-aligned boxes in pixel coordinates.

use serde::{Deserialize, Serialize};

/// `[x1, y1, x2, y2]` in pixels, x1 ≤ x2, y1 ≤ y2. Serialised as a 4-element array.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(from = "[f32; 4]", into = "[f32; 4]")]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl From<[f32; 4]> for BBox {
    fn from(a: [f32; 4]) -> Self {
        BBox {
            x1: a[0],
            y1: a[1],
            x2: a[2],
            y2: a[3],
        }
    }
}

impl From<BBox> for [f32; 4] {
    fn from(b: BBox) -> Self {
        [b.x1, b.y1, b.x2, b.y2]
    }
}

impl BBox {
    pub fn from_cxcywh(cx: f32, cy: f32, w: f32, h: f32) -> Self {
        BBox {
            x1: cx - w / 2.0,
            y1: cy - h / 2.0,
            x2: cx + w / 2.0,
            y2: cy + h / 2.0,
        }
    }
    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }
    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }
    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }
    pub fn center(&self) -> (f32, f32) {
        ((self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0)
    }
    pub fn intersection(&self, o: &BBox) -> f32 {
        let w = (self.x2.min(o.x2) - self.x1.max(o.x1)).max(0.0);
        let h = (self.y2.min(o.y2) - self.y1.max(o.y1)).max(0.0);
        w * h
    }
    pub fn iou(&self, o: &BBox) -> f32 {
        let inter = self.intersection(o);
        let union = self.area() + o.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }
    pub fn is_finite(&self) -> bool {
        self.x1.is_finite() && self.y1.is_finite() && self.x2.is_finite() && self.y2.is_finite()
    }
    /// Rounded to 0.01 px, which keeps JSON output short without losing anything meaningful.
    pub fn rounded(&self) -> BBox {
        let r = |v: f32| (v * 100.0).round() / 100.0;
        BBox {
            x1: r(self.x1),
            y1: r(self.y1),
            x2: r(self.x2),
            y2: r(self.y2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_identical_and_disjoint_boxes() {
        let a = BBox::from([0.0, 0.0, 10.0, 10.0]);
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&BBox::from([20.0, 20.0, 30.0, 30.0])), 0.0);
        let half = BBox::from([5.0, 0.0, 15.0, 10.0]);
        assert!((a.iou(&half) - 50.0 / 150.0).abs() < 1e-6);
    }

    #[test]
    fn serialises_as_array() {
        let a = BBox::from([1.0, 2.0, 3.0, 4.0]);
        assert_eq!(serde_json::to_string(&a).unwrap(), "[1.0,2.0,3.0,4.0]");
    }
}
