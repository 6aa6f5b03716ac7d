//! Which tracked objects to read text on, and when: objects of chosen labels, at most once per track
//! every `interval` seconds and a few per frame (OCR costs far more than a detector frame), the last
//! text kept per track. Pure bookkeeping with bounded memory, for a run loop to drive with
//! [`super::Reader::read_in_box`]; no models here.

use std::collections::HashMap;

/// What to read and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadPolicy {
    /// Detector labels whose objects are read ("stop sign", "truck"); empty = none.
    pub labels: Vec<String>,
    /// Seconds between two reads of the same track.
    pub interval_s: f64,
    /// Reads per frame at most (the rest wait for a later frame, oldest-read first).
    pub max_per_frame: usize,
    /// Tracks remembered at most (the least recently seen are forgotten first).
    pub max_tracks: usize,
}

impl Default for ReadPolicy {
    fn default() -> Self {
        ReadPolicy {
            labels: Vec::new(),
            interval_s: 2.0,
            max_per_frame: 2,
            max_tracks: 256,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct TrackState {
    last_read: Option<f64>,
    last_seen: f64,
    text: Option<String>,
}

/// Per-track read times and texts.
#[derive(Debug, Default)]
pub struct Schedule {
    policy: ReadPolicy,
    tracks: HashMap<u64, TrackState>,
}

impl Schedule {
    pub fn new(policy: ReadPolicy) -> Schedule {
        Schedule {
            policy,
            tracks: HashMap::new(),
        }
    }

    /// The tracks to read now, among `(track id, label)` seen at time `now` (seconds): those with a
    /// chosen label never read or read at least `interval_s` ago, never-read first, then the longest
    /// unread, at most `max_per_frame`.
    pub fn due<'a>(
        &mut self,
        seen: impl IntoIterator<Item = (u64, &'a str)>,
        now: f64,
    ) -> Vec<u64> {
        let chosen: Vec<u64> = seen
            .into_iter()
            .filter(|(_, label)| self.policy.labels.iter().any(|l| l == label))
            .map(|(id, _)| id)
            .collect();
        self.due_among(chosen, now)
    }

    /// As [`Schedule::due`] among tracks the caller has already chosen (by label, or because they
    /// are in a chosen zone): the label filter is not applied.
    pub fn due_among(&mut self, chosen: impl IntoIterator<Item = u64>, now: f64) -> Vec<u64> {
        let mut due: Vec<(Option<f64>, u64)> = Vec::new();
        for id in chosen {
            let st = self.tracks.entry(id).or_default();
            st.last_seen = now;
            let ready = st
                .last_read
                .is_none_or(|t| now - t >= self.policy.interval_s);
            if ready {
                due.push((st.last_read, id));
            }
        }
        // None (never read) sorts before any time
        due.sort_by(|a, b| match (a.0, b.0) {
            (None, None) => a.1.cmp(&b.1),
            (None, Some(_)) => std::cmp::Ordering::Less,
            (Some(_), None) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => x.total_cmp(&y).then(a.1.cmp(&b.1)),
        });
        due.truncate(self.policy.max_per_frame);
        self.evict();
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// Records a read of `id` at `now`: the lines' texts joined by a space (`None` when it read
    /// nothing, which keeps the last text: a sign is not blank because one frame was blurred).
    pub fn record(&mut self, id: u64, text: Option<String>, now: f64) {
        let st = self.tracks.entry(id).or_default();
        st.last_read = Some(now);
        st.last_seen = st.last_seen.max(now);
        if text.as_deref().is_some_and(|t| !t.trim().is_empty()) {
            st.text = text;
        }
        self.evict();
    }

    /// The last text read on a track.
    pub fn text(&self, id: u64) -> Option<&str> {
        self.tracks.get(&id)?.text.as_deref()
    }

    /// Forgets a track (it ended).
    pub fn forget(&mut self, id: u64) {
        self.tracks.remove(&id);
    }

    fn evict(&mut self) {
        while self.tracks.len() > self.policy.max_tracks.max(1) {
            let Some(oldest) = self
                .tracks
                .iter()
                .min_by(|a, b| a.1.last_seen.total_cmp(&b.1.last_seen).then(a.0.cmp(b.0)))
                .map(|(id, _)| *id)
            else {
                break;
            };
            self.tracks.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> ReadPolicy {
        ReadPolicy {
            labels: vec!["stop sign".into(), "truck".into()],
            interval_s: 2.0,
            max_per_frame: 2,
            max_tracks: 3,
        }
    }

    #[test]
    fn reads_chosen_labels_at_most_every_interval() {
        let mut s = Schedule::new(policy());
        let seen = [(1, "stop sign"), (2, "person"), (3, "truck")];
        assert_eq!(s.due(seen, 0.0), vec![1, 3]);
        s.record(1, Some("STOP".into()), 0.0);
        s.record(3, None, 0.0);
        assert!(s.due(seen, 1.0).is_empty(), "too soon");
        assert_eq!(s.due(seen, 2.5), vec![1, 3]);
        assert_eq!(s.text(1), Some("STOP"));
        assert_eq!(s.text(3), None);
        // a blank read keeps the last text
        s.record(1, Some("  ".into()), 2.5);
        assert_eq!(s.text(1), Some("STOP"));
    }

    #[test]
    fn never_read_tracks_go_first_and_per_frame_is_capped() {
        let mut s = Schedule::new(policy());
        s.record(7, Some("A".into()), 0.0);
        let seen = [(7, "truck"), (8, "truck"), (9, "truck")];
        assert_eq!(s.due(seen, 5.0), vec![8, 9]);
    }

    #[test]
    fn memory_is_bounded() {
        let mut s = Schedule::new(policy());
        for id in 0..100u64 {
            s.due([(id, "truck")], id as f64);
            s.record(id, Some(format!("T{id}")), id as f64);
        }
        assert!(s.tracks.len() <= 3);
        assert_eq!(s.text(99), Some("T99"));
        assert_eq!(s.text(0), None);
    }
}
