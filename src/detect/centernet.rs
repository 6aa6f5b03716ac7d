//! CenterNet with in-graph decoding: `[1, K, 6]` rows of x1,y1,x2,y2,score,class (top-K).

use super::decode::{expect_first, output, Candidates, Decoded, Decoder, InputGeom, RawDetection};
use super::manifest::Manifest;
use crate::engine::{Outputs, TensorInfo};
use crate::geometry::BBox;

pub struct CenterNet {
    geom: InputGeom,
    normalized: bool,
    class_offset: i64,
}

impl CenterNet {
    pub fn new(m: &Manifest, geom: InputGeom) -> Self {
        CenterNet {
            geom,
            normalized: m.decode.normalized.unwrap_or(false),
            class_offset: m.decode.class_offset.unwrap_or(0),
        }
    }
}

impl Decoder for CenterNet {
    fn check(&self, outputs: &[TensorInfo], _num_labels: usize) -> Decoded {
        expect_first(outputs, 3, 2, 6, "[1, K, 6]")
    }

    fn decode(&self, outputs: &Outputs, conf: f32, out: &mut Candidates) -> Decoded {
        let o = output(outputs, 0)?;
        let (sx, sy) = if self.normalized {
            (self.geom.width as f32, self.geom.height as f32)
        } else {
            (1.0, 1.0)
        };
        for r in o.data.chunks_exact(6) {
            let score = r[4];
            let class = r[5].round() as i64 - self.class_offset;
            if score < conf || class < 0 || !score.is_finite() {
                continue;
            }
            out.push(RawDetection {
                class_id: class as usize,
                score,
                bbox: BBox {
                    x1: r[0] * sx,
                    y1: r[1] * sy,
                    x2: r[2] * sx,
                    y2: r[3] * sy,
                },
            });
        }
        Ok(())
    }
}
