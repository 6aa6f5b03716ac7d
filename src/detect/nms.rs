//! Greedy, class-aware non-maximum suppression.

use super::decode::RawDetection;

/// Keep the best-scoring box of each overlapping group within a class. `dets` is sorted by
/// descending score in place; survivors are returned in that order, at most `max_det`.
pub fn nms(dets: &mut Vec<RawDetection>, iou: f32, max_det: usize) {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut keep: Vec<RawDetection> = Vec::with_capacity(dets.len().min(max_det));
    for d in dets.iter() {
        if keep.len() >= max_det {
            break;
        }
        if keep
            .iter()
            .all(|k| k.class_id != d.class_id || k.bbox.iou(&d.bbox) <= iou)
        {
            keep.push(*d);
        }
    }
    *dets = keep;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::BBox;

    fn d(class_id: usize, score: f32, b: [f32; 4]) -> RawDetection {
        RawDetection {
            class_id,
            score,
            bbox: BBox::from(b),
        }
    }

    #[test]
    fn suppresses_overlaps_within_a_class_only() {
        let mut v = vec![
            d(0, 0.5, [0.0, 0.0, 10.0, 10.0]),
            d(0, 0.9, [1.0, 1.0, 11.0, 11.0]),
            d(1, 0.8, [0.0, 0.0, 10.0, 10.0]),
            d(0, 0.7, [50.0, 50.0, 60.0, 60.0]),
        ];
        nms(&mut v, 0.45, 100);
        let scores: Vec<f32> = v.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.8, 0.7]);
    }

    #[test]
    fn caps_the_count() {
        let mut v: Vec<_> = (0..10)
            .map(|i| {
                d(
                    0,
                    i as f32 / 10.0,
                    [i as f32 * 20.0, 0.0, i as f32 * 20.0 + 5.0, 5.0],
                )
            })
            .collect();
        nms(&mut v, 0.5, 3);
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].score, 0.9);
    }
}
