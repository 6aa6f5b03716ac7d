//! NanoDet (GFL head): per stride a class-score map `[1, N, C]` and a box-distribution map
//! `[1, N, 4·(reg_max+1)]`. Each side's distance is the expectation of a softmax over the bins.
//! Outputs are matched to strides by shape, as the TF.js graph does not name them usefully.

use super::decode::{
    argmax, sigmoid, Candidates, DecodeError, Decoded, Decoder, InputGeom, RawDetection,
};
use super::manifest::Manifest;
use crate::engine::{Outputs, TensorInfo};
use crate::geometry::BBox;

pub struct NanoDet {
    strides: Vec<usize>,
    geom: InputGeom,
    bins: usize,
    center_offset: f32,
    cls_sigmoid: bool,
}

impl NanoDet {
    pub fn new(m: &Manifest, geom: InputGeom) -> Self {
        NanoDet {
            strides: m.decode.strides.clone().unwrap_or_else(|| vec![8, 16, 32]),
            geom,
            bins: m.decode.reg_max.unwrap_or(7) + 1,
            center_offset: m.decode.center_offset.unwrap_or(0.0),
            cls_sigmoid: m.decode.cls_sigmoid.unwrap_or(false),
        }
    }

    fn cells(&self, stride: usize) -> (usize, usize) {
        (self.geom.width / stride, self.geom.height / stride)
    }

    /// For each stride, the (class output index, box output index) with matching shapes.
    fn pair(
        &self,
        shapes: &[&[usize]],
        num_classes: Option<usize>,
    ) -> Result<Vec<(usize, usize)>, DecodeError> {
        let mut pairs = Vec::new();
        for &s in &self.strides {
            let (w, h) = self.cells(s);
            let n = w * h;
            let find = |want_last: &dyn Fn(usize) -> bool| {
                shapes
                    .iter()
                    .position(|sh| sh.len() == 3 && sh[1] == n && want_last(sh[2]))
            };
            let boxes = find(&|c| c == 4 * self.bins).ok_or_else(|| DecodeError::Unmatched {
                want: format!("[1, {n}, {}]", 4 * self.bins),
                role: format!("stride {s} boxes"),
            })?;
            let cls = find(&|c| c != 4 * self.bins && num_classes.is_none_or(|k| k == c))
                .ok_or_else(|| DecodeError::Unmatched {
                    want: format!(
                        "[1, {n}, {}]",
                        num_classes.map_or("C".into(), |k| k.to_string())
                    ),
                    role: format!("stride {s} class scores"),
                })?;
            pairs.push((cls, boxes));
        }
        Ok(pairs)
    }
}

impl Decoder for NanoDet {
    fn check(&self, outputs: &[TensorInfo], num_labels: usize) -> Decoded {
        if outputs.iter().any(|o| o.shape.is_empty()) {
            return Ok(());
        }
        let shapes: Vec<&[usize]> = outputs.iter().map(|o| o.shape.as_slice()).collect();
        self.pair(&shapes, Some(num_labels)).map(|_| ())
    }

    fn decode(&self, outputs: &Outputs, conf: f32, out: &mut Candidates) -> Decoded {
        let views: Vec<_> = (0..outputs.len()).filter_map(|i| outputs.get(i)).collect();
        let shapes: Vec<&[usize]> = views.iter().map(|v| v.shape).collect();
        let pairs = self.pair(&shapes, None)?;
        let logit_conf = if self.cls_sigmoid {
            (conf / (1.0 - conf).max(1e-9)).ln()
        } else {
            conf
        };
        let mut probs = vec![0f32; self.bins];
        for (&stride, &(ci, bi)) in self.strides.iter().zip(&pairs) {
            let (cls, boxes) = (views[ci], views[bi]);
            let c = cls.shape[2];
            let (w, _) = self.cells(stride);
            let s = stride as f32;
            for (i, scores) in cls.data.chunks_exact(c).enumerate() {
                let (class_id, raw) = argmax(scores);
                if raw < logit_conf {
                    continue;
                }
                let score = if self.cls_sigmoid { sigmoid(raw) } else { raw };
                let cx = ((i % w) as f32 + self.center_offset) * s;
                let cy = ((i / w) as f32 + self.center_offset) * s;
                let dist = &boxes.data[i * 4 * self.bins..(i + 1) * 4 * self.bins];
                let mut d = [0f32; 4];
                for (side, bins) in dist.chunks_exact(self.bins).enumerate() {
                    d[side] = expectation(bins, &mut probs) * s;
                }
                out.push(RawDetection {
                    class_id,
                    score,
                    bbox: BBox {
                        x1: cx - d[0],
                        y1: cy - d[1],
                        x2: cx + d[2],
                        y2: cy + d[3],
                    },
                });
            }
        }
        Ok(())
    }
}

/// Σ softmax(bins)_k · k
fn expectation(bins: &[f32], tmp: &mut [f32]) -> f32 {
    let max = bins.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for (t, &b) in tmp.iter_mut().zip(bins) {
        *t = (b - max).exp();
        sum += *t;
    }
    tmp.iter()
        .enumerate()
        .map(|(k, p)| k as f32 * p)
        .sum::<f32>()
        / sum
}

#[cfg(test)]
mod tests {
    #[test]
    fn expectation_of_a_peaked_distribution_is_its_peak() {
        let mut bins = vec![-100.0f32; 11];
        bins[3] = 100.0;
        let mut tmp = vec![0.0; 11];
        assert!((super::expectation(&bins, &mut tmp) - 3.0).abs() < 1e-4);
        let flat = vec![0.0f32; 11];
        assert!((super::expectation(&flat, &mut tmp) - 5.0).abs() < 1e-4);
    }
}
