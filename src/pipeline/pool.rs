//! The shared detector pool: the models are loaded once per process (`detector.workers` copies,
//! however many cameras there are) and every camera's frames are scheduled fairly over them.
//!
//! Each camera's frame loop holds [`PoolClient`]s in place of its own detectors (a client *is* a
//! [`Detector`]), so the loop is the same with one camera or sixteen. A client's `detect` puts the
//! frame in its camera's lane and waits for the answer. A free model takes the next job
//! round-robin over the lanes that have one, so a busy camera cannot starve a quiet one: every
//! camera with a frame waiting is served once before any is served twice. A lane with a
//! `detect_fps` target is not served again before `1 / detect_fps` has passed. A lane never
//! holds more frames than its camera has clients (one per `detector.workers`); the camera's own
//! capture queue in front of it drops the oldest frame on a live source, so a slow pool never
//! builds a backlog of stale pictures.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};
use image::RgbImage;
use serde::Serialize;

use crate::detect::{Detection, Detector, Timings};
use crate::error::{Error, Result};

/// One camera as the pool sees it.
#[derive(Debug, Clone)]
pub struct PoolCamera {
    pub name: String,
    /// `detect_fps`: most frames per second this camera is served.
    pub detect_fps: Option<f64>,
}

/// What the pool did for one camera, for the run summary and the bench.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LaneStats {
    pub camera: String,
    /// Frames detected for this camera.
    pub frames: u64,
    /// Mean milliseconds a frame waited in the pool for a free model.
    pub mean_wait_ms: f64,
    /// Mean milliseconds of detection (pre-processing, inference, decoding).
    pub mean_detect_ms: f64,
}

/// The result a model sends back to the waiting client.
type Answer = Result<(Vec<Detection>, Timings)>;

struct Job {
    image: RgbImage,
    queued: Instant,
    reply: Sender<Answer>,
}

struct Lane {
    name: String,
    min_gap: Option<Duration>,
    /// Not served again before this (with `detect_fps`).
    next_at: Instant,
    jobs: VecDeque<Job>,
    frames: u64,
    wait_ms: f64,
    detect_ms: f64,
}

struct State {
    lanes: Vec<Lane>,
    /// The lane served last; the search for the next job starts after it.
    cursor: usize,
    closed: bool,
}

/// What a free model does next.
enum Next {
    Run(usize, Job),
    /// Jobs are waiting for their camera's `detect_fps` slot.
    WaitUntil(Instant),
    Idle,
}

impl State {
    fn next(&mut self, now: Instant) -> Next {
        let n = self.lanes.len();
        let mut soonest: Option<Instant> = None;
        for k in 1..=n {
            let i = (self.cursor + k) % n;
            let lane = &mut self.lanes[i];
            if lane.jobs.is_empty() {
                continue;
            }
            if lane.next_at > now {
                soonest = Some(soonest.map_or(lane.next_at, |s| s.min(lane.next_at)));
                continue;
            }
            let Some(job) = lane.jobs.pop_front() else {
                continue;
            };
            if let Some(gap) = lane.min_gap {
                lane.next_at = now + gap;
            }
            self.cursor = i;
            return Next::Run(i, job);
        }
        soonest.map_or(Next::Idle, Next::WaitUntil)
    }
}

struct Shared {
    state: Mutex<State>,
    ready: Condvar,
}

/// The models and the threads that run them; dropping it stops them (waiting clients get an
/// error).
pub struct DetectorPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    name: String,
    labels: Vec<Arc<str>>,
    models: usize,
}

impl DetectorPool {
    /// A pool over `detectors` (each loaded once, by the caller) for `cameras`, in order.
    pub fn new(detectors: Vec<Box<dyn Detector>>, cameras: &[PoolCamera]) -> Result<DetectorPool> {
        let first = detectors
            .first()
            .ok_or_else(|| Error::Other("detector pool needs at least one detector".into()))?;
        if cameras.is_empty() {
            return Err(Error::Other(
                "detector pool needs at least one camera".into(),
            ));
        }
        let (name, labels) = (first.name().to_string(), first.labels().to_vec());
        let now = Instant::now();
        let lanes = cameras
            .iter()
            .map(|c| Lane {
                name: c.name.clone(),
                min_gap: c
                    .detect_fps
                    .filter(|f| f.is_finite() && *f > 0.0)
                    .map(|f| Duration::from_secs_f64(1.0 / f)),
                next_at: now,
                jobs: VecDeque::new(),
                frames: 0,
                wait_ms: 0.0,
                detect_ms: 0.0,
            })
            .collect();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                lanes,
                cursor: cameras.len() - 1,
                closed: false,
            }),
            ready: Condvar::new(),
        });
        let models = detectors.len();
        let mut workers = Vec::with_capacity(models);
        for (i, det) in detectors.into_iter().enumerate() {
            let shared = shared.clone();
            workers.push(
                std::thread::Builder::new()
                    .name(format!("pool-{i}"))
                    .spawn(move || serve(&shared, det))
                    .map_err(|e| Error::Other(format!("spawn detector pool: {e}")))?,
            );
        }
        Ok(DetectorPool {
            shared,
            workers,
            name,
            labels,
            models,
        })
    }

    /// Models loaded (one per worker thread), for every camera together.
    pub fn models(&self) -> usize {
        self.models
    }

    /// A detector for camera `camera` (its index in the list given to [`DetectorPool::new`]).
    pub fn client(&self, camera: usize) -> PoolClient {
        PoolClient {
            shared: self.shared.clone(),
            lane: camera,
            name: self.name.clone(),
            labels: self.labels.clone(),
            last: Timings::default(),
        }
    }

    /// Per camera, what the pool has done so far.
    pub fn stats(&self) -> Vec<LaneStats> {
        let Ok(st) = self.shared.state.lock() else {
            return Vec::new();
        };
        st.lanes
            .iter()
            .map(|l| {
                let per = |x: f64| {
                    if l.frames > 0 {
                        x / l.frames as f64
                    } else {
                        0.0
                    }
                };
                LaneStats {
                    camera: l.name.clone(),
                    frames: l.frames,
                    mean_wait_ms: per(l.wait_ms),
                    mean_detect_ms: per(l.detect_ms),
                }
            })
            .collect()
    }
}

impl Drop for DetectorPool {
    fn drop(&mut self) {
        if let Ok(mut st) = self.shared.state.lock() {
            st.closed = true;
            // Waiting clients see their reply channel close and report an error.
            for l in st.lanes.iter_mut() {
                l.jobs.clear();
            }
        }
        self.shared.ready.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// One model's thread: take the next fair job, detect, answer.
fn serve(shared: &Shared, mut det: Box<dyn Detector>) {
    loop {
        let (lane, job) = {
            let Ok(mut st) = shared.state.lock() else {
                return;
            };
            loop {
                if st.closed {
                    return;
                }
                let now = Instant::now();
                match st.next(now) {
                    Next::Run(i, job) => break (i, job),
                    Next::WaitUntil(t) => {
                        let Ok((s, _)) = shared.ready.wait_timeout(st, t - now) else {
                            return;
                        };
                        st = s;
                    }
                    Next::Idle => {
                        let Ok(s) = shared.ready.wait(st) else {
                            return;
                        };
                        st = s;
                    }
                }
            }
        };
        let wait = job.queued.elapsed();
        let t0 = Instant::now();
        let answer = det.detect(&job.image).map(|d| (d, det.last_timings()));
        let took = t0.elapsed();
        if let Ok(mut st) = shared.state.lock() {
            if let Some(l) = st.lanes.get_mut(lane) {
                l.frames += 1;
                l.wait_ms += wait.as_secs_f64() * 1e3;
                l.detect_ms += took.as_secs_f64() * 1e3;
            }
        }
        // A client that gave up (its loop stopped) no longer listens; nothing to do.
        let _ = job.reply.send(answer);
    }
}

/// A camera's handle on the pool: a [`Detector`] whose `detect` waits for the camera's turn.
pub struct PoolClient {
    shared: Arc<Shared>,
    lane: usize,
    name: String,
    labels: Vec<Arc<str>>,
    last: Timings,
}

impl Detector for PoolClient {
    fn detect(&mut self, img: &RgbImage) -> Result<Vec<Detection>> {
        // The loop keeps its frame (for tracks, snapshots, the web view); the model gets a copy,
        // about a millisecond for VGA next to tens of milliseconds of inference.
        let (tx, rx) = bounded(1);
        {
            let mut st = self
                .shared
                .state
                .lock()
                .map_err(|_| Error::Other("detector pool poisoned".into()))?;
            if st.closed {
                return Err(Error::Other("detector pool stopped".into()));
            }
            let lane = st.lanes.get_mut(self.lane).ok_or_else(|| {
                Error::Other(format!("detector pool has no camera {}", self.lane))
            })?;
            lane.jobs.push_back(Job {
                image: img.clone(),
                queued: Instant::now(),
                reply: tx,
            });
        }
        self.shared.ready.notify_one();
        let (dets, timings) = rx
            .recv()
            .map_err(|_| Error::Other("detector pool stopped".into()))??;
        self.last = timings;
        Ok(dets)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn labels(&self) -> &[Arc<str>] {
        &self.labels
    }

    fn last_timings(&self) -> Timings {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts calls; answers nothing.
    struct Counting(Arc<AtomicUsize>, Vec<Arc<str>>);
    impl Detector for Counting {
        fn detect(&mut self, _: &RgbImage) -> Result<Vec<Detection>> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Ok(Vec::new())
        }
        fn name(&self) -> &str {
            "counting"
        }
        fn labels(&self) -> &[Arc<str>] {
            &self.1
        }
    }

    fn cams(n: usize) -> Vec<PoolCamera> {
        (0..n)
            .map(|i| PoolCamera {
                name: format!("c{i}"),
                detect_fps: None,
            })
            .collect()
    }

    fn job() -> (Job, crossbeam_channel::Receiver<Answer>) {
        let (tx, rx) = bounded(1);
        let j = Job {
            image: RgbImage::new(1, 1),
            queued: Instant::now(),
            reply: tx,
        };
        (j, rx)
    }

    fn state(n: usize, fps: Option<f64>) -> State {
        let now = Instant::now();
        State {
            lanes: (0..n)
                .map(|i| Lane {
                    name: format!("c{i}"),
                    min_gap: fps.map(|f| Duration::from_secs_f64(1.0 / f)),
                    next_at: now,
                    jobs: VecDeque::new(),
                    frames: 0,
                    wait_ms: 0.0,
                    detect_ms: 0.0,
                })
                .collect(),
            cursor: n - 1,
            closed: false,
        }
    }

    #[test]
    fn every_waiting_camera_is_served_before_any_twice() {
        let mut st = state(3, None);
        let mut keep = Vec::new();
        // Camera 0 floods its lane; 1 and 2 have one frame each.
        for lane in [0, 0, 0, 0, 1, 2] {
            let (j, rx) = job();
            st.lanes[lane].jobs.push_back(j);
            keep.push(rx);
        }
        let now = Instant::now();
        let order: Vec<usize> = std::iter::from_fn(|| match st.next(now) {
            Next::Run(i, _) => Some(i),
            _ => None,
        })
        .collect();
        assert_eq!(order, [0, 1, 2, 0, 0, 0]);
    }

    #[test]
    fn a_camera_with_a_rate_waits_for_its_slot() {
        let mut st = state(1, Some(2.0));
        let mut keep = Vec::new();
        for _ in 0..2 {
            let (j, rx) = job();
            st.lanes[0].jobs.push_back(j);
            keep.push(rx);
        }
        let now = Instant::now();
        assert!(matches!(st.next(now), Next::Run(0, _)));
        match st.next(now) {
            Next::WaitUntil(t) => assert!(t >= now + Duration::from_millis(499)),
            _ => panic!("the second frame must wait for the 2 fps slot"),
        }
        assert!(matches!(
            st.next(now + Duration::from_millis(500)),
            Next::Run(0, _)
        ));
        assert!(matches!(st.next(now), Next::Idle));
    }

    #[test]
    fn clients_of_several_cameras_share_one_model() {
        let calls = Arc::new(AtomicUsize::new(0));
        let det: Box<dyn Detector> = Box::new(Counting(calls.clone(), vec![Arc::from("x")]));
        let pool = DetectorPool::new(vec![det], &cams(3)).unwrap();
        assert_eq!(pool.models(), 1);
        let threads: Vec<_> = (0..3)
            .map(|i| {
                let mut c = pool.client(i);
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        c.detect(&RgbImage::new(4, 4)).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(calls.load(Ordering::Relaxed), 60);
        let s = pool.stats();
        assert!(s.iter().all(|l| l.frames == 20), "{s:?}");
        drop(pool);
    }

    #[test]
    fn a_stopped_pool_answers_with_an_error() {
        let det: Box<dyn Detector> = Box::new(Counting(Default::default(), vec![]));
        let pool = DetectorPool::new(vec![det], &cams(1)).unwrap();
        let mut c = pool.client(0);
        drop(pool);
        assert!(c.detect(&RgbImage::new(2, 2)).is_err());
    }
}
