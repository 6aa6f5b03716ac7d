//! Ultralytics YOLOv8 / YOLO11 export: one `[1, 4+C, N]` output, cx,cy,w,h in input pixels,
//! class scores already sigmoid, no objectness.

use super::decode::{
    expect_first, output, wrong_shape, Candidates, Decoded, Decoder, InputGeom, RawDetection,
};
use crate::engine::{Outputs, TensorInfo};
use crate::geometry::BBox;

pub struct Yolov8 {
    _geom: InputGeom,
}

impl Yolov8 {
    pub fn new(geom: InputGeom) -> Self {
        Yolov8 { _geom: geom }
    }
}

impl Decoder for Yolov8 {
    fn check(&self, outputs: &[TensorInfo], num_labels: usize) -> Decoded {
        let ch = 4 + num_labels;
        expect_first(outputs, 3, 1, ch, format!("[1, {ch}, N]"))
    }

    fn decode(&self, outputs: &Outputs, conf: f32, out: &mut Candidates) -> Decoded {
        let o = output(outputs, 0)?;
        let &[_, ch, n] = o.shape else {
            return Err(wrong_shape("output", o.shape, "[1, 4+C, N]"));
        };
        if ch < 5 {
            return Err(wrong_shape("output", o.shape, "[1, 4+C, N] with C ≥ 1"));
        }
        let row = |r: usize| &o.data[r * n..(r + 1) * n];
        // Class-major layout: find each anchor's best class by sweeping class rows once.
        let mut best = vec![(0usize, f32::NEG_INFINITY); n];
        for c in 0..ch - 4 {
            for (b, &v) in best.iter_mut().zip(row(4 + c)) {
                if v > b.1 {
                    *b = (c, v);
                }
            }
        }
        let (cx, cy, w, h) = (row(0), row(1), row(2), row(3));
        for (i, &(class_id, score)) in best.iter().enumerate() {
            if score >= conf {
                out.push(RawDetection {
                    class_id,
                    score,
                    bbox: BBox::from_cxcywh(cx[i], cy[i], w[i], h[i]),
                });
            }
        }
        Ok(())
    }
}
