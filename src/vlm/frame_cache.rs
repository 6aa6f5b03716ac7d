//! The image features of the last frame, kept by each VLM so that several questions about one
//! frame run the vision tower once. Frames are keyed by a hash of their size and pixels.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use image::RgbImage;

/// The cache key of a frame: equal for equal size and pixels.
pub fn frame_key(img: &RgbImage) -> u64 {
    let mut h = DefaultHasher::new();
    img.dimensions().hash(&mut h);
    img.as_raw().hash(&mut h);
    h.finish()
}

/// One entry: the value computed for the last key.
#[derive(Debug, Clone)]
pub struct FrameCache<T> {
    last: Option<(u64, T)>,
}

impl<T> Default for FrameCache<T> {
    fn default() -> Self {
        FrameCache { last: None }
    }
}

impl<T: Clone> FrameCache<T> {
    /// The value kept for `key`, if it is the last one stored.
    pub fn get(&self, key: u64) -> Option<T> {
        self.last
            .as_ref()
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v.clone())
    }

    pub fn insert(&mut self, key: u64, value: T) {
        self.last = Some((key, value));
    }
}
