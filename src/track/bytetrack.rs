//! The ByteTrack association loop and its constant-velocity motion model.

use crate::detect::Detection;
use crate::geometry::BBox;

use super::{Track, TrackState, TrackerConfig, Velocity};

/// Alpha-beta filter on the box centre (with velocity) and size (without). Far cheaper than a
/// Kalman filter and, at camera frame rates, as good for keeping predicted boxes overlapping.
#[derive(Debug, Clone, Copy)]
struct Motion {
    cx: f32,
    cy: f32,
    w: f32,
    h: f32,
    vx: f32,
    vy: f32,
    /// Time of the state above.
    ts: f64,
    /// False until a second measurement gives a first velocity estimate.
    has_velocity: bool,
}

impl Motion {
    fn new(b: &BBox, ts: f64) -> Self {
        let (cx, cy) = b.center();
        Motion {
            cx,
            cy,
            w: b.width(),
            h: b.height(),
            vx: 0.0,
            vy: 0.0,
            ts,
            has_velocity: false,
        }
    }

    fn predict(&self, ts: f64) -> BBox {
        let dt = (ts - self.ts).max(0.0) as f32;
        BBox::from_cxcywh(
            self.cx + self.vx * dt,
            self.cy + self.vy * dt,
            self.w,
            self.h,
        )
    }

    fn correct(&mut self, b: &BBox, ts: f64, alpha: f32, beta: f32) {
        let (zx, zy) = b.center();
        let dt = (ts - self.ts) as f32;
        self.w += alpha * (b.width() - self.w);
        self.h += alpha * (b.height() - self.h);
        // Two detections at the same (or a backwards) timestamp say nothing about speed.
        if dt <= 1e-6 {
            self.cx += alpha * (zx - self.cx);
            self.cy += alpha * (zy - self.cy);
            return;
        }
        if !self.has_velocity {
            self.vx = (zx - self.cx) / dt;
            self.vy = (zy - self.cy) / dt;
            self.cx = zx;
            self.cy = zy;
            self.has_velocity = true;
        } else {
            let (px, py) = (self.cx + self.vx * dt, self.cy + self.vy * dt);
            let (rx, ry) = (zx - px, zy - py);
            self.cx = px + alpha * rx;
            self.cy = py + alpha * ry;
            self.vx += beta * rx / dt;
            self.vy += beta * ry / dt;
        }
        self.ts = ts;
    }

    fn velocity(&self) -> Velocity {
        Velocity {
            vx: self.vx,
            vy: self.vy,
        }
    }
}

/// ByteTrack-style multi-object tracker; see the [module docs](super).
#[derive(Debug, Clone)]
pub struct Tracker {
    cfg: TrackerConfig,
    /// Kept parallel to `motion` so `update` can hand out a plain slice.
    tracks: Vec<Track>,
    motion: Vec<Motion>,
    next_id: u64,
    last_ts: f64,
}

impl Tracker {
    /// Out-of-range settings are clamped; call [`TrackerConfig::validate`] first to report them.
    pub fn new(cfg: TrackerConfig) -> Self {
        Tracker {
            cfg: cfg.sanitised(),
            tracks: Vec::new(),
            motion: Vec::new(),
            next_id: 1,
            last_ts: 0.0,
        }
    }

    pub fn config(&self) -> &TrackerConfig {
        &self.cfg
    }

    /// The tracks after the latest `update`: tentative, confirmed and lost.
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// Forget every track; ids keep increasing so they stay unique for the tracker's lifetime.
    pub fn reset(&mut self) {
        self.tracks.clear();
        self.motion.clear();
    }

    /// Advance by one frame. `ts` is the frame time in seconds (monotonic; a non-finite value is
    /// replaced by the previous one). Detections with non-finite or empty boxes are ignored.
    pub fn update(&mut self, frame_id: u64, ts: f64, dets: &[Detection]) -> &[Track] {
        let ts = if ts.is_finite() { ts } else { self.last_ts };
        self.last_ts = ts;
        let cfg = &self.cfg;

        let valid =
            |d: &&Detection| d.score.is_finite() && d.bbox.is_finite() && d.bbox.area() > 0.0;
        let mut high = Vec::new();
        let mut low = Vec::new();
        for (i, d) in dets.iter().enumerate().filter(|(_, d)| valid(d)) {
            if d.score >= cfg.track_high {
                high.push(i);
            } else if d.score >= cfg.track_low {
                low.push(i);
            }
        }
        let predicted: Vec<BBox> = self.motion.iter().map(|m| m.predict(ts)).collect();
        let pool: Vec<usize> = (0..self.tracks.len())
            .filter(|&t| self.tracks[t].state != TrackState::Tentative)
            .collect();
        let tentative: Vec<usize> = (0..self.tracks.len())
            .filter(|&t| self.tracks[t].state == TrackState::Tentative)
            .collect();

        let m1 = self.associate(&pool, &high, &predicted, dets, cfg.match_iou);
        // Only tracks seen last frame may take a low-score detection: a lost track grabbing one
        // would too easily latch onto clutter.
        let visible: Vec<usize> = m1
            .unmatched_tracks
            .iter()
            .copied()
            .filter(|&t| self.tracks[t].state == TrackState::Confirmed)
            .collect();
        let m2 = self.associate(&visible, &low, &predicted, dets, cfg.low_match_iou);
        let m3 = self.associate(
            &tentative,
            &m1.unmatched_dets,
            &predicted,
            dets,
            cfg.match_iou,
        );

        let mut matched = vec![false; self.tracks.len()];
        for &(t, d) in m1.pairs.iter().chain(&m2.pairs).chain(&m3.pairs) {
            matched[t] = true;
            self.apply_match(t, &dets[d], frame_id, ts);
        }

        // Confirmed in track order, not match order, so ids follow the order objects appeared in.
        let min_hits = u64::from(self.cfg.min_hits);
        for t in 0..self.tracks.len() {
            if self.tracks[t].state == TrackState::Tentative && self.tracks[t].hits >= min_hits {
                self.confirm(t);
            }
        }

        let mut keep = vec![true; self.tracks.len()];
        for (t, track) in self.tracks.iter_mut().enumerate() {
            track.age_frames += 1;
            if matched[t] {
                continue;
            }
            track.missed_frames = track.missed_frames.saturating_add(1);
            match track.state {
                // A tentative track must be matched in consecutive frames.
                TrackState::Tentative => keep[t] = false,
                TrackState::Confirmed | TrackState::Lost => {
                    track.state = TrackState::Lost;
                    let too_old_s = self
                        .cfg
                        .max_age_s
                        .is_some_and(|max| ts - track.last_seen > max);
                    if track.missed_frames > self.cfg.max_age_frames || too_old_s {
                        keep[t] = false;
                    }
                }
            }
        }
        retain_by(&mut self.tracks, &keep);
        retain_by(&mut self.motion, &keep);

        for &d in &m3.unmatched_dets {
            let det = &dets[d];
            if det.score >= self.cfg.new_track_score {
                self.birth(det, frame_id, ts);
            }
        }
        &self.tracks
    }

    fn apply_match(&mut self, t: usize, det: &Detection, frame_id: u64, ts: f64) {
        let (alpha, beta) = (self.cfg.motion_alpha, self.cfg.motion_beta);
        let m = &mut self.motion[t];
        m.correct(&det.bbox, ts, alpha, beta);
        let track = &mut self.tracks[t];
        track.score = det.score;
        track.bbox = det.bbox;
        track.velocity = m.velocity();
        track.hits += 1;
        track.missed_frames = 0;
        track.last_seen = ts;
        track.last_frame = frame_id;
        if track.state == TrackState::Lost {
            track.state = TrackState::Confirmed;
        }
    }

    fn confirm(&mut self, t: usize) {
        self.tracks[t].state = TrackState::Confirmed;
        self.tracks[t].id = self.next_id;
        self.next_id += 1;
    }

    fn birth(&mut self, det: &Detection, frame_id: u64, ts: f64) {
        self.tracks.push(Track {
            id: 0,
            label: det.label.clone(),
            class_id: det.class_id,
            score: det.score,
            bbox: det.bbox,
            velocity: Velocity::default(),
            age_frames: 1,
            hits: 1,
            missed_frames: 0,
            first_seen: ts,
            last_seen: ts,
            last_frame: frame_id,
            state: TrackState::Tentative,
        });
        self.motion.push(Motion::new(&det.bbox, ts));
        if self.cfg.min_hits <= 1 {
            self.confirm(self.tracks.len() - 1);
        }
    }

    /// Greedy assignment by descending IoU. With the sparse scenes an edge camera sees, it agrees
    /// with the Hungarian optimum almost always and is simpler to reason about.
    fn associate(
        &self,
        tracks: &[usize],
        dets_idx: &[usize],
        predicted: &[BBox],
        dets: &[Detection],
        min_iou: f32,
    ) -> Matches {
        let mut cand = Vec::new();
        for &t in tracks {
            for &d in dets_idx {
                if self.cfg.class_consistent && self.tracks[t].class_id != dets[d].class_id {
                    continue;
                }
                let iou = predicted[t].iou(&dets[d].bbox);
                if iou > 0.0 && iou >= min_iou {
                    cand.push((iou, t, d));
                }
            }
        }
        // Ties broken by index so runs are reproducible.
        cand.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let mut used_t = vec![false; self.tracks.len()];
        let mut used_d = vec![false; dets.len()];
        let mut pairs = Vec::new();
        for (_, t, d) in cand {
            if !used_t[t] && !used_d[d] {
                used_t[t] = true;
                used_d[d] = true;
                pairs.push((t, d));
            }
        }
        Matches {
            pairs,
            unmatched_tracks: tracks.iter().copied().filter(|&t| !used_t[t]).collect(),
            unmatched_dets: dets_idx.iter().copied().filter(|&d| !used_d[d]).collect(),
        }
    }
}

struct Matches {
    pairs: Vec<(usize, usize)>,
    unmatched_tracks: Vec<usize>,
    unmatched_dets: Vec<usize>,
}

fn retain_by<T>(v: &mut Vec<T>, keep: &[bool]) {
    let mut i = 0;
    v.retain(|_| {
        let k = keep[i];
        i += 1;
        k
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn det(label: &str, class_id: usize, score: f32, b: [f32; 4]) -> Detection {
        Detection {
            label: Arc::from(label),
            class_id,
            score,
            bbox: BBox::from(b),
        }
    }

    fn person(score: f32, x: f32, y: f32) -> Detection {
        det("person", 0, score, [x, y, x + 40.0, y + 100.0])
    }

    fn established(tracks: &[Track]) -> Vec<&Track> {
        tracks.iter().filter(|t| t.is_established()).collect()
    }

    /// Small deterministic jitter, so tests do not need a random number generator.
    fn jitter(i: u64, k: u64) -> f32 {
        (((i * 7919 + k * 104_729) % 11) as f32 - 5.0) * 0.4
    }

    #[test]
    fn confirms_after_min_hits_and_keeps_id_through_noise_and_occlusion() {
        let mut tr = Tracker::new(TrackerConfig::default());
        let mut ids = Vec::new();
        for f in 0..60u64 {
            let ts = f as f64 * 0.1;
            // Two people walking in opposite directions, crossing paths at f≈30.
            let a = person(
                0.9,
                100.0 + 5.0 * f as f32 + jitter(f, 1),
                200.0 + jitter(f, 2),
            );
            let b = person(
                0.8,
                400.0 - 5.0 * f as f32 + jitter(f, 3),
                220.0 + jitter(f, 4),
            );
            // Person a is hidden behind something for frames 40..44.
            let dets: Vec<Detection> = if (40..45).contains(&f) {
                vec![b]
            } else {
                vec![a, b]
            };
            let tracks = tr.update(f, ts, &dets);
            let est = established(tracks);
            if f < 2 {
                assert!(est.is_empty(), "frame {f}: confirmed before min_hits");
            } else {
                assert_eq!(est.len(), 2, "frame {f}");
                let mut now: Vec<u64> = est.iter().map(|t| t.id).collect();
                now.sort_unstable();
                ids.push(now);
            }
            if (40..45).contains(&f) {
                let a = tracks.iter().find(|t| t.id == 1).unwrap();
                assert_eq!(a.state, TrackState::Lost, "frame {f}");
            }
        }
        assert!(ids.iter().all(|v| v == &vec![1, 2]), "ids changed: {ids:?}");
        let a = tr.tracks().iter().find(|t| t.id == 1).unwrap();
        assert_eq!(a.state, TrackState::Confirmed);
        assert!((a.velocity.vx - 50.0).abs() < 10.0, "vx {}", a.velocity.vx);
        assert!(a.velocity.vy.abs() < 10.0, "vy {}", a.velocity.vy);
        let b = tr.tracks().iter().find(|t| t.id == 2).unwrap();
        assert!((b.velocity.vx + 50.0).abs() < 10.0, "vx {}", b.velocity.vx);
        assert_eq!(a.hits, 55);
        assert_eq!(a.age_frames, 60);
        assert_eq!(a.first_seen, 0.0);
    }

    #[test]
    fn crossing_paths_do_not_swap_ids() {
        let mut tr = Tracker::new(TrackerConfig::default());
        for f in 0..80u64 {
            let ts = f as f64 / 15.0;
            let a = person(0.9, 100.0 + 6.0 * f as f32, 200.0);
            let b = person(0.9, 580.0 - 6.0 * f as f32, 210.0);
            tr.update(f, ts, &[a, b]);
            let t1 = tr.tracks().iter().find(|t| t.id == 1);
            if let Some(t1) = t1 {
                // Track 1 was born at x=100 and keeps moving right.
                assert!(t1.velocity.vx >= 0.0, "frame {f}: {t1:?}");
                assert!(
                    (t1.bbox.x1 - (100.0 + 6.0 * f as f32)).abs() < 1e-3,
                    "frame {f}"
                );
            }
        }
    }

    #[test]
    fn single_frame_blips_never_get_an_id() {
        let mut tr = Tracker::new(TrackerConfig::default());
        for f in 0..20u64 {
            // A different spurious box every frame.
            let d = det(
                "cat",
                15,
                0.95,
                [f as f32 * 50.0, 0.0, f as f32 * 50.0 + 30.0, 30.0],
            );
            let tracks = tr.update(f, f as f64 * 0.1, &[d]);
            assert!(established(tracks).is_empty());
            assert!(tracks.iter().all(|t| t.id == 0));
        }
        // Two frames in a row is still not enough with min_hits 3.
        let d = det("cat", 15, 0.95, [0.0, 300.0, 30.0, 330.0]);
        tr.update(20, 2.0, std::slice::from_ref(&d));
        tr.update(21, 2.1, std::slice::from_ref(&d));
        tr.update(22, 2.2, &[]);
        assert!(tr.tracks().is_empty());
        // The first object that is confirmed gets id 1: blips do not use ids up.
        for f in 23..26 {
            tr.update(f, f as f64 * 0.1, std::slice::from_ref(&d));
        }
        assert_eq!(established(tr.tracks())[0].id, 1);
    }

    #[test]
    fn dies_after_max_age_frames() {
        let cfg = TrackerConfig {
            max_age_frames: 5,
            ..Default::default()
        };
        let mut tr = Tracker::new(cfg);
        for f in 0..5 {
            tr.update(f, f as f64 * 0.1, &[person(0.9, 100.0, 100.0)]);
        }
        for f in 5..10 {
            let tracks = tr.update(f, f as f64 * 0.1, &[]);
            assert_eq!(tracks.len(), 1, "frame {f}");
            assert_eq!(tracks[0].state, TrackState::Lost);
            assert_eq!(tracks[0].missed_frames, (f - 4) as u32);
        }
        assert!(tr.update(10, 1.0, &[]).is_empty());
        // The same object coming back later is a new track.
        for f in 11..14 {
            tr.update(f, f as f64 * 0.1, &[person(0.9, 100.0, 100.0)]);
        }
        assert_eq!(established(tr.tracks())[0].id, 2);
    }

    #[test]
    fn dies_after_max_age_seconds() {
        let cfg = TrackerConfig {
            max_age_frames: 1000,
            max_age_s: Some(1.0),
            ..Default::default()
        };
        let mut tr = Tracker::new(cfg);
        for f in 0..3 {
            tr.update(f, f as f64 * 0.1, &[person(0.9, 100.0, 100.0)]);
        }
        assert_eq!(tr.update(3, 1.1, &[]).len(), 1);
        assert!(tr.update(4, 1.3, &[]).is_empty());
    }

    #[test]
    fn low_score_detections_keep_tracks_alive_but_start_none() {
        let mut tr = Tracker::new(TrackerConfig::default());
        for f in 0..3 {
            tr.update(f, f as f64 * 0.1, &[person(0.9, 100.0, 100.0)]);
        }
        for f in 3..40 {
            // Partly occluded: the detector is unsure, and a low-score clutter box elsewhere.
            let dets = [
                person(0.3, 100.0 + f as f32, 100.0),
                person(0.3, 500.0, 100.0),
            ];
            let tracks = tr.update(f, f as f64 * 0.1, &dets);
            assert_eq!(tracks.len(), 1, "frame {f}");
            assert_eq!(tracks[0].state, TrackState::Confirmed);
            assert_eq!(tracks[0].id, 1);
        }
    }

    #[test]
    fn class_consistent_matching() {
        let mut tr = Tracker::new(TrackerConfig::default());
        for f in 0..3 {
            tr.update(f, f as f64 * 0.1, &[person(0.9, 100.0, 100.0)]);
        }
        // Same box, other class: the person is lost and a dog track starts.
        let dog = det("dog", 16, 0.9, [100.0, 100.0, 140.0, 200.0]);
        let tracks = tr.update(3, 0.3, &[dog]);
        assert_eq!(tracks.len(), 2);
        assert_eq!(tracks[0].state, TrackState::Lost);
        assert_eq!(tracks[1].state, TrackState::Tentative);
        assert_eq!(&*tracks[1].label, "dog");
    }

    #[test]
    fn ignores_garbage_input() {
        let mut tr = Tracker::new(TrackerConfig {
            track_high: f32::NAN,
            min_hits: 0,
            ..Default::default()
        });
        let dets = [
            det("person", 0, f32::NAN, [0.0, 0.0, 10.0, 10.0]),
            det("person", 0, 0.9, [f32::INFINITY, 0.0, 10.0, 10.0]),
            det("person", 0, 0.9, [5.0, 5.0, 5.0, 50.0]),
        ];
        assert!(tr.update(0, f64::NAN, &dets).is_empty());
        // min_hits 0 behaves as 1: confirmed at once.
        let t = tr.update(1, 0.1, &[person(0.9, 0.0, 0.0)]);
        assert_eq!(t[0].state, TrackState::Confirmed);
        // Repeated timestamps do not blow the velocity up.
        let t = tr.update(2, 0.1, &[person(0.9, 4.0, 0.0)]);
        assert!(t[0].velocity.vx.is_finite());
        assert_eq!(t[0].id, 1);
    }

    #[test]
    fn config_validation_names_the_key() {
        let cfg = TrackerConfig {
            track_low: 0.7,
            ..Default::default()
        };
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("tracker.track_low"), "{e}");
        let cfg: TrackerConfig = toml::from_str("match_iou = 1.5").unwrap();
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("match_iou"));
        let e = toml::from_str::<TrackerConfig>("max_age = 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_age"), "{e}");
        TrackerConfig::default().validate().unwrap();
    }

    #[test]
    fn tracks_serialise_with_state_names() {
        let mut tr = Tracker::new(TrackerConfig {
            min_hits: 1,
            ..Default::default()
        });
        let t = &tr.update(7, 0.5, &[person(0.9, 0.0, 0.0)])[0];
        let v = serde_json::to_value(t).unwrap();
        assert_eq!(v["state"], "confirmed");
        assert_eq!(v["id"], 1);
        assert_eq!(v["last_frame"], 7);
        assert_eq!(v["box"], serde_json::json!([0.0, 0.0, 40.0, 100.0]));
        assert!(v["velocity"]["vx"].is_number());
    }
}
