//! Which zones each track is in, for one frame. The rule engine works it out (a zone is a
//! `kind = "zone"` rule) and hands it to whoever reports on tracks (events, descriptions), so the
//! tracker's [`crate::track::Track`] records stay the tracker's alone.

use std::collections::HashMap;

/// Track id → names of the zones it is in, in rule-file order. Tracks not in any zone (and
/// tentative ones) have no entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZoneMembership {
    by_track: HashMap<u64, Vec<String>>,
}

impl ZoneMembership {
    /// No track in any zone: what to pass when there are no rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// The zones track `id` is in; empty when none.
    pub fn of(&self, id: u64) -> &[String] {
        self.by_track.get(&id).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Record that track `id` is in `zone` (after the zones already recorded for it).
    pub fn add(&mut self, id: u64, zone: impl Into<String>) {
        self.by_track.entry(id).or_default().push(zone.into());
    }
}

/// From `(track id, zone)` pairs, each track's zones in the order given.
impl<Z: Into<String>> FromIterator<(u64, Z)> for ZoneMembership {
    fn from_iter<I: IntoIterator<Item = (u64, Z)>>(iter: I) -> Self {
        let mut m = ZoneMembership::new();
        for (id, z) in iter {
            m.add(id, z);
        }
        m
    }
}
