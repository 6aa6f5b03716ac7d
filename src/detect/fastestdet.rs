//! FastestDet: one `[1, 5+C, G, G]` map at stride 16. Channel 0 objectness, 1–2 centre offsets
//! (tanh), 3–4 size as a fraction of the input (sigmoid), then class probabilities.

use super::decode::{
    argmax, expect_first, output, sigmoid, wrong_shape, Candidates, Decoded, Decoder, InputGeom,
    RawDetection,
};
use crate::engine::{Outputs, TensorInfo};
use crate::geometry::BBox;

pub struct FastestDet {
    geom: InputGeom,
}

impl FastestDet {
    pub fn new(geom: InputGeom) -> Self {
        FastestDet { geom }
    }
}

impl Decoder for FastestDet {
    fn check(&self, outputs: &[TensorInfo], num_labels: usize) -> Decoded {
        let ch = 5 + num_labels;
        expect_first(outputs, 4, 1, ch, format!("[1, {ch}, G, G]"))
    }

    fn decode(&self, outputs: &Outputs, conf: f32, out: &mut Candidates) -> Decoded {
        let o = output(outputs, 0)?;
        let &[_, ch, gh, gw] = o.shape else {
            return Err(wrong_shape("output", o.shape, "[1, C, H, W]"));
        };
        if ch < 6 {
            return Err(wrong_shape("output", o.shape, "[1, 5+C, H, W] with C ≥ 1"));
        }
        let plane = gh * gw;
        let at = |c: usize, i: usize| o.data[c * plane + i];
        let mut cls = vec![0f32; ch - 5];
        let (iw, ih) = (self.geom.width as f32, self.geom.height as f32);
        for i in 0..plane {
            let obj = at(0, i);
            if obj <= 0.0 || obj.powf(0.6) < conf {
                continue; // score = obj^0.6 · cls^0.4 ≤ obj^0.6
            }
            for (c, v) in cls.iter_mut().enumerate() {
                *v = at(5 + c, i);
            }
            let (class_id, p) = argmax(&cls);
            let score = obj.powf(0.6) * p.max(0.0).powf(0.4);
            if score < conf {
                continue;
            }
            let (row, col) = ((i / gw) as f32, (i % gw) as f32);
            let cx = (col + at(1, i).tanh()) / gw as f32 * iw;
            let cy = (row + at(2, i).tanh()) / gh as f32 * ih;
            let w = sigmoid(at(3, i)) * iw;
            let h = sigmoid(at(4, i)) * ih;
            out.push(RawDetection {
                class_id,
                score,
                bbox: BBox::from_cxcywh(cx, cy, w, h),
            });
        }
        Ok(())
    }
}
