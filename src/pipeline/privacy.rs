//! The outbound copy of a frame (`[privacy] blur_people`): the one image that snapshots, the web
//! view, store media and clips are made from, with every person blurred. Detection, tracking,
//! grounding and the VLM keep the unblurred frame; nothing that leaves the device gets it.

use std::sync::Arc;

use image::RgbImage;

use crate::config::PrivacyConfig;
use crate::detect::Detection;
use crate::geometry::BBox;
use crate::segment::{self, BlurShape, Mask, PersonSegmenter};
use crate::track::Track;

/// Masks per frame at most; people beyond it are blurred box-shaped, so a crowd costs bounded time.
const MAX_MASKS: usize = 16;

/// A tracked person this many frames unmatched is still blurred where it was last seen (a missed
/// detection must not unblur someone for a frame).
const KEEP_LOST_FRAMES: u32 = 5;

/// Makes the outbound copy of each frame for one camera.
pub struct Outbound {
    shape: BlurShape,
    segmenter: Option<PersonSegmenter>,
}

impl Outbound {
    /// `None` when `blur_people` is off (the outbound frame is then the frame itself). A missing
    /// segmentation model turns a mask-shaped blur into a box-shaped one, with a warning.
    pub fn new(cfg: &PrivacyConfig, camera: &str) -> Option<Outbound> {
        if !cfg.blur_people {
            return None;
        }
        let segmenter = match cfg.shape {
            BlurShape::Box => None,
            BlurShape::Mask => match PersonSegmenter::find(&cfg.segmenter, 1) {
                Ok(s) => Some(s),
                Err(e) => {
                    log::warn!(
                        "{camera}: privacy.segmenter: {e}; people are blurred box-shaped instead"
                    );
                    None
                }
            },
        };
        let shape = if segmenter.is_some() {
            BlurShape::Mask
        } else {
            BlurShape::Box
        };
        log::info!("{camera}: people are blurred ({shape:?}-shaped) in every outbound frame");
        Some(Outbound { shape, segmenter })
    }

    /// What the blur follows in practice (`Box` when the model was missing).
    pub fn shape(&self) -> BlurShape {
        self.shape
    }

    /// This frame's person detections (all of them, whatever `detector.classes` keeps for
    /// tracking).
    pub fn people(detections: &[Detection]) -> Vec<BBox> {
        detections
            .iter()
            .filter(|d| segment::is_person(&d.label))
            .map(|d| d.bbox)
            .collect()
    }

    /// Adds the person tracks not long lost that no box in `boxes` already covers.
    pub fn add_tracks(boxes: &mut Vec<BBox>, tracks: &[Track]) {
        for t in tracks {
            if segment::is_person(&t.label)
                && t.missed_frames <= KEEP_LOST_FRAMES
                && !boxes.iter().any(|b| b.iou(&t.bbox) > 0.7)
            {
                boxes.push(t.bbox);
            }
        }
    }

    /// The frame with `people` blurred; masks come from the unblurred frame.
    pub fn frame(&self, img: &Arc<RgbImage>, people: &[BBox]) -> Arc<RgbImage> {
        if people.is_empty() {
            return img.clone();
        }
        let masks: Vec<Option<Mask>> = people
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let seg = self.segmenter.as_ref().filter(|_| i < MAX_MASKS)?;
                seg.mask(img, Some(b))
                    .map_err(|e| log::warn!("privacy: person mask failed ({e}); box blurred"))
                    .ok()
            })
            .collect();
        let regions: Vec<(BBox, Option<&Mask>)> = people
            .iter()
            .zip(&masks)
            .map(|(b, m)| (*b, m.as_ref()))
            .collect();
        let mut out = (**img).clone();
        segment::blur_people(&mut out, &regions);
        Arc::new(out)
    }
}
