//! YOLOX: one `[1, N, 5+C]` output over strides 8/16/32, anchors row-major per stride.

use super::decode::{
    argmax, expect_shape, first_output, output, wrong_shape, Candidates, Decoded, Decoder,
    InputGeom, RawDetection,
};
use super::manifest::Manifest;
use crate::engine::{Outputs, TensorInfo};
use crate::geometry::BBox;

pub struct Yolox {
    grid: Vec<(f32, f32, f32)>, // (gx, gy, stride) per anchor
}

impl Yolox {
    pub fn new(m: &Manifest, g: InputGeom) -> Self {
        let strides = m.decode.strides.clone().unwrap_or_else(|| vec![8, 16, 32]);
        let mut grid = Vec::new();
        for s in strides {
            for y in 0..g.height / s {
                for x in 0..g.width / s {
                    grid.push((x as f32, y as f32, s as f32));
                }
            }
        }
        Yolox { grid }
    }
}

impl Decoder for Yolox {
    fn check(&self, outputs: &[TensorInfo], num_labels: usize) -> Decoded {
        let o = first_output(outputs)?;
        expect_shape(
            &format!("output '{}'", o.name),
            &o.shape,
            &[1, self.grid.len(), 5 + num_labels],
        )
    }

    fn decode(&self, outputs: &Outputs, conf: f32, out: &mut Candidates) -> Decoded {
        let o = output(outputs, 0)?;
        let n = self.grid.len();
        if o.data.len() % n != 0 || o.data.len() / n < 6 {
            return Err(wrong_shape(
                "output",
                o.shape,
                format!("{n} anchors × (5 + C)"),
            ));
        }
        let width = o.data.len() / n;
        for (row, &(gx, gy, s)) in o.data.chunks_exact(width).zip(&self.grid) {
            let obj = row[4];
            if obj < conf {
                continue; // score = obj · cls ≤ obj
            }
            let (class_id, cls) = argmax(&row[5..]);
            let score = obj * cls;
            if score < conf {
                continue;
            }
            let cx = (row[0] + gx) * s;
            let cy = (row[1] + gy) * s;
            let w = row[2].exp() * s;
            let h = row[3].exp() * s;
            out.push(RawDetection {
                class_id,
                score,
                bbox: BBox::from_cxcywh(cx, cy, w, h),
            });
        }
        Ok(())
    }
}
