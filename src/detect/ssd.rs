//! "SSD-like" detectors: a boxes output plus a scores output, or, with NMS in the graph, boxes,
//! scores, classes and an optional count.

use super::decode::{
    argmax, wrong_shape, Candidates, DecodeError, Decoded, Decoder, InputGeom, RawDetection,
};
use super::manifest::{BoxFormat, Manifest};
use crate::engine::{OutView, Outputs, TensorInfo};
use crate::geometry::BBox;

pub struct Ssd {
    geom: InputGeom,
    format: BoxFormat,
    normalized: bool,
    background: bool,
    builtin_nms: bool,
    names: [Option<String>; 4], // boxes, scores, classes, count
}

impl Ssd {
    pub fn new(m: &Manifest, geom: InputGeom) -> Self {
        let d = &m.decode;
        Ssd {
            geom,
            format: d.box_format.unwrap_or_default(),
            normalized: d.normalized.unwrap_or(true),
            background: d.background_class.unwrap_or(false),
            builtin_nms: d.builtin_nms.unwrap_or(false),
            names: [
                d.boxes_output.clone(),
                d.scores_output.clone(),
                d.classes_output.clone(),
                d.count_output.clone(),
            ],
        }
    }

    /// Output `slot` by its configured name, else by position.
    fn pick<'a>(&self, o: &'a Outputs, slot: usize) -> Option<OutView<'a>> {
        match &self.names[slot] {
            Some(n) => o.by_name(n),
            None => o.get(slot),
        }
    }

    fn to_box(&self, b: &[f32]) -> BBox {
        let (sx, sy) = if self.normalized {
            (self.geom.width as f32, self.geom.height as f32)
        } else {
            (1.0, 1.0)
        };
        let bb = match self.format {
            BoxFormat::Xyxy => BBox {
                x1: b[0],
                y1: b[1],
                x2: b[2],
                y2: b[3],
            },
            BoxFormat::Yxyx => BBox {
                x1: b[1],
                y1: b[0],
                x2: b[3],
                y2: b[2],
            },
            BoxFormat::Cxcywh => BBox::from_cxcywh(b[0], b[1], b[2], b[3]),
        };
        BBox {
            x1: bb.x1 * sx,
            y1: bb.y1 * sy,
            x2: bb.x2 * sx,
            y2: bb.y2 * sy,
        }
    }
}

impl Decoder for Ssd {
    fn builtin_nms(&self) -> bool {
        self.builtin_nms
    }

    fn check(&self, outputs: &[TensorInfo], num_labels: usize) -> Decoded {
        let find = |slot: usize| -> Option<&TensorInfo> {
            match &self.names[slot] {
                Some(n) => outputs.iter().find(|o| &o.name == n),
                None => outputs.get(slot),
            }
        };
        let boxes = find(0).ok_or(DecodeError::Missing("boxes"))?;
        let scores = find(1).ok_or(DecodeError::Missing("scores"))?;
        if boxes.shape.is_empty() || scores.shape.is_empty() {
            return Ok(());
        }
        if boxes.shape.len() != 3 || boxes.shape[2] != 4 {
            return Err(wrong_shape(
                format!("boxes output '{}'", boxes.name),
                &boxes.shape,
                "[1, N, 4]",
            ));
        }
        if self.builtin_nms {
            // Built-in NMS reports classes in an output of its own.
            find(2).ok_or(DecodeError::Missing("classes"))?;
            return Ok(());
        }
        let want = num_labels + self.background as usize;
        if scores.shape.len() != 3 || scores.shape[1] != boxes.shape[1] || scores.shape[2] != want {
            return Err(wrong_shape(
                format!("scores output '{}'", scores.name),
                &scores.shape,
                format!("[1, {}, {want}]", boxes.shape[1]),
            ));
        }
        Ok(())
    }

    fn decode(&self, outputs: &Outputs, conf: f32, out: &mut Candidates) -> Decoded {
        let boxes = self.pick(outputs, 0).ok_or(DecodeError::Missing("boxes"))?;
        let scores = self
            .pick(outputs, 1)
            .ok_or(DecodeError::Missing("scores"))?;
        let n = boxes.data.len() / 4;
        if self.builtin_nms {
            let classes = self
                .pick(outputs, 2)
                .ok_or(DecodeError::Missing("classes"))?;
            let count = self
                .pick(outputs, 3)
                .and_then(|c| c.data.first().copied())
                .map(|c| c as usize)
                .unwrap_or(n);
            for i in 0..count.min(n).min(scores.data.len()).min(classes.data.len()) {
                let score = scores.data[i];
                let class = classes.data[i].round() as i64 - self.background as i64;
                if score >= conf && class >= 0 {
                    out.push(RawDetection {
                        class_id: class as usize,
                        score,
                        bbox: self.to_box(&boxes.data[i * 4..i * 4 + 4]),
                    });
                }
            }
            return Ok(());
        }
        if n == 0 || scores.data.len() % n != 0 {
            return Err(wrong_shape(
                "scores",
                scores.shape,
                format!("{n} boxes × C"),
            ));
        }
        let c = scores.data.len() / n;
        let skip = self.background as usize;
        for (i, row) in scores.data.chunks_exact(c).enumerate() {
            let (class_id, score) = argmax(&row[skip..]);
            if score >= conf {
                out.push(RawDetection {
                    class_id,
                    score,
                    bbox: self.to_box(&boxes.data[i * 4..i * 4 + 4]),
                });
            }
        }
        Ok(())
    }
}
