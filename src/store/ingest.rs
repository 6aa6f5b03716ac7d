//! The store's own thread: what the pipeline hands over arrives through a bounded channel and is
//! committed in batches (one transaction, one fsync, every half second or sooner for an alert),
//! so storing never slows the frame loop. Events, scene text and frames are dropped (and counted)
//! when the channel is full; alerts wait for room, and [`Ingest::sync`] lets the caller wait for
//! the commit, so an alert reported anywhere is already on disk.
//!
//! Per tracked object the thread keeps one [`Record`] from `new` to `end`: the zones it stayed
//! in, the way it went, and the best crop (highest score) with a snapshot of its frame, cut from
//! the frames the pipeline passes along with its events; the crop's dominant colour comes from
//! `ground::colour`. Every searchable record's text is embedded here (MiniLM through `embed`).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use image::RgbImage;
use serde::Serialize;

use super::clip::{ClipDone, ClipFormat, Clips};
use super::db::{Put, Store};
use super::record::{Kind, Record, ZoneVisit};
use super::{Result, StoreError, MEDIA_DIR};
use crate::config::StoreConfig;
use crate::embed::{Embedder, EmbeddingManifest};
use crate::geometry::BBox;
use crate::scene::{Alert, Event, EventType, SceneDescription};

/// Messages waiting for the store thread; beyond this, droppable ones are dropped.
const QUEUE: usize = 2048;
/// Longest a record waits for its commit.
const COMMIT_EVERY: Duration = Duration::from_millis(500);
/// How often retention runs (it also runs at open and at the end).
const RETAIN_EVERY: Duration = Duration::from_secs(10);
/// Alerts remembered so a snapshot arriving after its alert is attached to it.
const RECENT_ALERTS: usize = 64;
/// Largest snapshot width kept (a 4K frame is scaled down).
const SNAPSHOT_WIDTH: u32 = 640;
/// A crop is replaced only by one scoring at least this much better (JPEG encoding is not free).
const CROP_IMPROVEMENT: f32 = 0.03;
/// Longest text embedded, in bytes.
const MAX_EMBED_TEXT: usize = 1000;

/// What the pipeline hands to the store.
pub enum Incoming {
    Event(Event),
    Alert(Alert),
    Scene {
        camera: String,
        description: SceneDescription,
    },
    /// The annotated JPEG of the frame an alert fired on.
    Snapshot {
        camera: String,
        alert_id: String,
        jpeg: Vec<u8>,
    },
    /// A frame that events were raised on, so their crops can be cut. `hold` is dropped when the
    /// store is done with the frame (the pipeline counts frames in flight with it).
    Frame {
        camera: String,
        frame_id: u64,
        image: Arc<RgbImage>,
        hold: Option<Box<dyn Send>>,
    },
}

enum Msg {
    In(Box<Incoming>),
    Sync(Sender<()>),
}

/// Counters of the store thread.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestStats {
    pub received: u64,
    /// Dropped because the queue was full (never alerts).
    pub dropped: u64,
    pub committed: u64,
    pub commits: u64,
    pub crops: u64,
    pub embedded: u64,
    pub errors: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    dropped: AtomicU64,
    committed: AtomicU64,
    commits: AtomicU64,
    crops: AtomicU64,
    embedded: AtomicU64,
    errors: AtomicU64,
}

/// The handle the pipeline holds; dropping it commits what is queued and stops the thread.
pub struct Ingest {
    tx: Option<Sender<Msg>>,
    thread: Option<JoinHandle<()>>,
    counters: Arc<Counters>,
    /// The clip recorder, with `clip_pre_s`/`clip_post_s`.
    clips: Option<Arc<Clips>>,
    /// The store the thread writes, shared with readers in this process.
    store: Arc<Store>,
    embedding_model: String,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest").finish()
    }
}

impl Ingest {
    /// Opens the store now (so a bad path fails the run before it starts) and starts its thread;
    /// the embedding model loads on that thread.
    pub fn start(cfg: &StoreConfig) -> Result<Ingest> {
        let store = Arc::new(Store::open(&cfg.path, cfg.max_bytes, cfg.max_age_days)?);
        let (tx, rx) = bounded(QUEUE);
        let counters = Arc::new(Counters::default());
        let nonce = format!(
            "{:x}{:x}",
            (crate::util::unix_now() * 1000.0) as u64,
            std::process::id()
        );
        let clips = match cfg.clips() {
            true => Some(Arc::new(Clips::start(cfg, ClipFormat::detect(), &nonce)?)),
            false => None,
        };
        let worker = Worker {
            clips: clips.clone(),
            store: store.clone(),
            embedding_model: cfg.embedding_model.clone(),
            embedder: None,
            crops: cfg.crops,
            nonce,
            live: HashMap::new(),
            frames: HashMap::new(),
            alerts: VecDeque::new(),
            scenes: HashMap::new(),
            pending: Vec::new(),
            counters: counters.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || worker.run(rx))
            .map_err(|e| StoreError::Io {
                path: cfg.path.clone(),
                reason: format!("cannot start the store thread: {e}"),
            })?;
        Ok(Ingest {
            tx: Some(tx),
            thread: Some(thread),
            counters,
            clips,
            store,
            embedding_model: cfg.embedding_model.clone(),
        })
    }

    /// Searches and summaries of this store for the running process (`cmd/search`,
    /// `/api/search`, the `summary` topic).
    pub fn recall(&self) -> super::Recall {
        super::Recall::new(self.store.clone(), &self.embedding_model)
    }

    /// The clip recorder, for the frame loop's hooks (`None` without clips).
    pub fn clips(&self) -> Option<Arc<Clips>> {
        self.clips.clone()
    }

    /// Writes the clips still collecting (the run is ending) and waits for them.
    pub fn finish_clips(&self) {
        if let Some(c) = &self.clips {
            c.finish();
        }
    }

    /// Queues `m`: an alert waits for room, anything else is dropped (and counted) when the
    /// store is behind. False when it was dropped or the thread has stopped.
    pub fn send(&self, m: Incoming) -> bool {
        let Some(tx) = &self.tx else { return false };
        self.counters.received.fetch_add(1, Ordering::Relaxed);
        let res = if matches!(m, Incoming::Alert(_)) {
            tx.send(Msg::In(Box::new(m))).is_ok()
        } else {
            match tx.try_send(Msg::In(Box::new(m))) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => false,
                Err(TrySendError::Disconnected(_)) => false,
            }
        };
        if !res {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    /// Waits until everything queued before this call is committed; false after `timeout`.
    pub fn sync(&self, timeout: Duration) -> bool {
        let Some(tx) = &self.tx else { return false };
        let (done_tx, done_rx) = bounded(1);
        if tx.send_timeout(Msg::Sync(done_tx), timeout).is_err() {
            return false;
        }
        done_rx.recv_timeout(timeout).is_ok()
    }

    pub fn stats(&self) -> IngestStats {
        IngestStats::from(&*self.counters)
    }
}

impl From<&Counters> for IngestStats {
    fn from(c: &Counters) -> Self {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        IngestStats {
            received: l(&c.received),
            dropped: l(&c.dropped),
            committed: l(&c.committed),
            commits: l(&c.commits),
            crops: l(&c.crops),
            embedded: l(&c.embedded),
            errors: l(&c.errors),
        }
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        // Clips first: the store thread's last pass records what they wrote.
        self.finish_clips();
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A tracked object between its `new` and its `end`.
struct Live {
    rec: Record,
    /// Zones it is in now.
    inside: Vec<String>,
    first: (f32, f32, f32),
    last: (f32, f32, f32),
    frame: (u32, u32),
    media_bytes: u64,
    /// Score of the detection the crop was cut from.
    best: f32,
    embedded: Option<(String, Vec<f32>)>,
    dirty: bool,
    ended: bool,
}

/// Who a queued write belongs to, so its key can be copied back after the commit.
enum Owner {
    Live(String, u64),
    /// By camera and alert id (ids repeat across cameras): a position in the recent alerts
    /// would shift as older ones leave.
    Alert(String, String),
    Scene(String),
    Other,
}

/// The newest frame of a camera: its id, the picture, and what keeps it counted as in flight.
type HeldFrame = (u64, Arc<RgbImage>, Option<Box<dyn Send>>);

struct Worker {
    clips: Option<Arc<Clips>>,
    store: Arc<Store>,
    embedding_model: String,
    embedder: Option<Embedder>,
    crops: bool,
    /// Makes media file names unique per run.
    nonce: String,
    live: HashMap<(String, u64), Live>,
    frames: HashMap<String, HeldFrame>,
    /// (alert id, record) of recent alerts, for their snapshots.
    alerts: VecDeque<(String, Record)>,
    /// The last scene record per camera, extended while the text repeats.
    scenes: HashMap<String, (Record, Option<Vec<f32>>)>,
    pending: Vec<(Put, Owner)>,
    counters: Arc<Counters>,
}

impl Worker {
    fn run(mut self, rx: Receiver<Msg>) {
        if !self.embedding_model.is_empty() {
            match EmbeddingManifest::find(&self.embedding_model)
                .map_err(crate::error::Error::from)
                .and_then(|m| Embedder::load(&m))
            {
                Ok(e) => self.embedder = Some(e),
                Err(e) => log::warn!(
                    "store: no embeddings ({e}); search will match words only for these records"
                ),
            }
        }
        let (mut last_commit, mut last_retain) = (Instant::now(), Instant::now());
        let mut waiting: Vec<Sender<()>> = Vec::new();
        loop {
            let mut urgent = false;
            let mut open = true;
            match rx.recv_timeout(COMMIT_EVERY) {
                Ok(m) => {
                    urgent |= self.take(m, &mut waiting);
                    for _ in 0..512 {
                        match rx.try_recv() {
                            Ok(m) => urgent |= self.take(m, &mut waiting),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => open = false,
            }
            for d in self
                .clips
                .as_ref()
                .map(|c| c.take_done())
                .unwrap_or_default()
            {
                self.clip_done(d);
            }
            let due = last_commit.elapsed() >= COMMIT_EVERY;
            if urgent || !open || due || !waiting.is_empty() {
                // An alert is committed at once; objects (whose text may need embedding) wait
                // for the regular commit so an alert never waits for the embedder.
                self.commit(!open || due);
                last_commit = Instant::now();
                for w in waiting.drain(..) {
                    let _ = w.send(());
                }
            }
            // Over the size bound after a commit: retention now, not at the next regular pass.
            let over = self.store.bytes().is_ok_and(|b| b > self.store.max_bytes());
            if !open || over || last_retain.elapsed() >= RETAIN_EVERY {
                if let Err(e) = self.store.retain(crate::util::unix_now()) {
                    log::warn!("store: retention: {e}");
                }
                last_retain = Instant::now();
            }
            if !open {
                log::info!("store: {:?}", IngestStats::from(&*self.counters));
                break;
            }
        }
    }

    /// Handles one message; true when it should be committed at once (an alert).
    fn take(&mut self, m: Msg, waiting: &mut Vec<Sender<()>>) -> bool {
        let m = match m {
            Msg::Sync(tx) => {
                waiting.push(tx);
                return false;
            }
            Msg::In(m) => *m,
        };
        match m {
            Incoming::Frame {
                camera,
                frame_id,
                image,
                hold,
            } => {
                // Kept (one per camera) without its in-flight count: with several cameras the
                // frames kept here would otherwise hold every in-flight slot, and no new frame
                // (and so no crop) would reach the store.
                drop(hold);
                self.frames.insert(camera, (frame_id, image, None));
                false
            }
            Incoming::Event(e) => {
                self.event(e);
                false
            }
            Incoming::Alert(a) => {
                self.alert(a);
                true
            }
            Incoming::Scene {
                camera,
                description,
            } => {
                self.scene(&camera, description);
                false
            }
            Incoming::Snapshot {
                camera,
                alert_id,
                jpeg,
            } => {
                self.snapshot(&camera, &alert_id, &jpeg);
                false
            }
        }
    }

    fn event(&mut self, e: Event) {
        let mut raw = Record::new(Kind::Event, &e.camera, e.ts);
        raw.label = e.label.to_string();
        raw.track_id = Some(e.track_id);
        raw.source_id = Some(e.id.clone());
        raw.text = format!(
            "{} {} #{}",
            serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            e.label,
            e.track_id
        );
        raw.zones = e
            .after
            .current_zones
            .iter()
            .map(|z| ZoneVisit {
                zone: z.clone(),
                enter: e.after.frame_time,
                exit: e.after.frame_time,
            })
            .collect();
        raw.raw = serde_json::to_value(&e).ok();
        self.pending.push((
            Put {
                record: raw,
                index: None,
                media_bytes: 0,
            },
            Owner::Other,
        ));

        let id = (e.camera.clone(), e.track_id);
        let centre = |b: &BBox| {
            let (x, y) = b.center();
            (x, y, b.height())
        };
        let frame_size = self
            .frames
            .get(&e.camera)
            .map(|(_, img, _)| img.dimensions())
            .unwrap_or((0, 0));
        let live = self.live.entry(id.clone()).or_insert_with(|| {
            let mut rec = Record::new(Kind::Object, &e.camera, e.after.start_time);
            rec.label = e.label.to_string();
            rec.track_id = Some(e.track_id);
            Live {
                rec,
                inside: vec![],
                first: centre(&e.after.bbox),
                last: centre(&e.after.bbox),
                frame: frame_size,
                media_bytes: 0,
                best: 0.0,
                embedded: None,
                dirty: true,
                ended: false,
            }
        });
        if live.frame == (0, 0) {
            live.frame = frame_size;
        }
        let at = e.after.frame_time;
        live.rec.end_ts = live.rec.end_ts.max(at);
        live.last = centre(&e.after.bbox);
        live.rec.score = live.rec.score.max(e.after.score);
        if let Some(t) = &e.after.text {
            live.rec.reading = Some(t.clone());
        }
        for z in &e.after.current_zones {
            if live.inside.contains(z) {
                if let Some(v) = live.rec.zones.iter_mut().rev().find(|v| &v.zone == z) {
                    v.exit = at;
                }
            } else {
                live.inside.push(z.clone());
                live.rec.zones.push(ZoneVisit {
                    zone: z.clone(),
                    enter: at,
                    exit: at,
                });
            }
        }
        let left: Vec<String> = live
            .inside
            .iter()
            .filter(|z| !e.after.current_zones.contains(z))
            .cloned()
            .collect();
        for z in left {
            // First seen outside now: the stay ended between the previous event and this one.
            if let Some(v) = live.rec.zones.iter_mut().rev().find(|v| v.zone == z) {
                v.exit = at;
            }
            live.inside.retain(|x| *x != z);
        }
        live.rec.direction = direction(live.first, live.last, live.frame);
        live.dirty = true;
        if e.kind == EventType::End {
            live.ended = true;
            return;
        }
        // The best crop: cut from the frame this event was raised on, when the store has it.
        let better = live.rec.crop.is_none() || e.after.score >= live.best + CROP_IMPROVEMENT;
        let frame = self
            .frames
            .get(&e.camera)
            .filter(|(fid, _, _)| *fid == e.after.frame_id)
            .map(|(_, img, _)| img.clone());
        if let (true, true, Some(img)) = (self.crops, better, frame) {
            let media = self.store.dir().join(MEDIA_DIR);
            match cut(
                &img,
                &e.after.bbox,
                &media,
                &e.camera,
                &self.nonce,
                e.track_id,
            ) {
                Ok(c) => {
                    let live = self.live.get_mut(&id).expect("inserted above");
                    live.rec.crop = Some(c.crop);
                    live.rec.snapshot = Some(c.snapshot);
                    live.rec.colour = c.colour;
                    live.media_bytes = c.bytes;
                    live.best = e.after.score;
                    self.counters.crops.fetch_add(1, Ordering::Relaxed);
                }
                Err(err) => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    log::warn!("store: crop: {err}");
                }
            }
        }
    }

    fn alert(&mut self, a: Alert) {
        let mut r = Record::new(Kind::Alert, &a.camera, a.ts);
        r.label = a.labels.join(", ");
        r.track_ids = a.track_ids.clone();
        r.track_id = a.track_ids.first().copied();
        if let Some(z) = &a.details.zone {
            r.zones.push(ZoneVisit {
                zone: z.clone(),
                enter: a.ts,
                exit: a.ts,
            });
        }
        r.rule = Some(a.rule.clone());
        r.alert_kind = serde_json::to_value(a.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string));
        r.severity = serde_json::to_value(a.severity)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string));
        r.message = Some(a.message.clone());
        r.source_id = Some(a.id.clone());
        r.text = a.message.replace('\'', "");
        r.raw = serde_json::to_value(&a).ok();
        r.clip = a.clip.clone();
        if self.alerts.len() >= RECENT_ALERTS {
            self.alerts.pop_front();
        }
        let vector = self.embed(&r.text);
        self.alerts.push_back((a.id.clone(), r.clone()));
        self.queue(r, vector.as_deref(), 0, Owner::Alert(a.camera, a.id));
    }

    fn snapshot(&mut self, camera: &str, alert_id: &str, jpeg: &[u8]) {
        let Some(i) = self
            .alerts
            .iter()
            .position(|(id, r)| id == alert_id && r.camera == camera)
        else {
            return;
        };
        let media = self.store.dir().join(MEDIA_DIR);
        let name = format!("{}-alert-{}.jpg", self.nonce, safe(alert_id));
        match write_media(&media, camera, &name, jpeg) {
            Ok(rel) => {
                let mut r = self.alerts[i].1.clone();
                r.snapshot = Some(rel);
                self.alerts[i].1 = r.clone();
                let vector = self.embed(&r.text);
                let media = jpeg.len() as u64 + r.clip_bytes;
                let owner = Owner::Alert(camera.into(), alert_id.into());
                self.queue(r, vector.as_deref(), media, owner);
            }
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                log::warn!("store: {e}");
            }
        }
    }

    /// A clip was written: the alerts sharing it name the file written (MJPEG when ffmpeg failed,
    /// none when nothing could be written) and the newest of them is charged its bytes.
    fn clip_done(&mut self, d: ClipDone) {
        let sharing: Vec<usize> = (0..self.alerts.len())
            .filter(|&i| {
                d.alerts.contains(&self.alerts[i].0) && self.alerts[i].1.camera == d.camera
            })
            .collect();
        if sharing.is_empty() {
            log::warn!(
                "store: clip {} finished after its alerts left memory; not charged",
                d.named
            );
        }
        let owner = sharing.last().copied();
        for i in sharing {
            let mut r = self.alerts[i].1.clone();
            let moved = r.clip != d.written;
            r.clip = d.written.clone();
            if Some(i) == owner {
                r.clip_bytes = d.bytes;
            } else if !moved {
                continue;
            }
            let snap = r.snapshot.as_ref().map_or(0, |p| {
                std::fs::metadata(self.store.dir().join(p)).map_or(0, |m| m.len())
            });
            self.alerts[i].1 = r.clone();
            let vector = self.embed(&r.text);
            let media = snap + r.clip_bytes;
            let owner = Owner::Alert(d.camera.clone(), self.alerts[i].0.clone());
            self.queue(r, vector.as_deref(), media, owner);
        }
    }

    fn scene(&mut self, camera: &str, d: SceneDescription) {
        if let Some((last, v)) = self.scenes.get_mut(camera) {
            let same_vlm = last.vlm.as_deref() == d.vlm.as_ref().map(|v| v.text.as_str());
            if last.message.as_deref() == Some(d.text.as_str()) && same_vlm {
                last.end_ts = d.ts;
                let (r, v) = (last.clone(), v.clone());
                self.queue(r, v.as_deref(), 0, Owner::Scene(camera.to_string()));
                return;
            }
        }
        let mut r = Record::new(Kind::Scene, camera, d.ts);
        r.message = Some(d.text.clone());
        r.vlm = d.vlm.as_ref().map(|v| v.text.clone());
        r.counts = d.counts.clone();
        r.label = d.counts.keys().cloned().collect::<Vec<_>>().join(", ");
        let mut zones: Vec<String> = d.objects.iter().flat_map(|o| o.zones.clone()).collect();
        zones.sort();
        zones.dedup();
        r.zones = zones
            .into_iter()
            .map(|z| ZoneVisit {
                zone: z,
                enter: d.ts,
                exit: d.ts,
            })
            .collect();
        r.text = match &r.vlm {
            Some(v) => format!("{} {v}", d.text),
            None => d.text.clone(),
        };
        let vector = self.embed(&r.text);
        self.scenes
            .insert(camera.to_string(), (r.clone(), vector.clone()));
        self.queue(r, vector.as_deref(), 0, Owner::Scene(camera.to_string()));
    }

    fn embed(&mut self, text: &str) -> Option<Vec<f32>> {
        let e = self.embedder.as_mut()?;
        let mut end = text.len().min(MAX_EMBED_TEXT);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        match e.embed(&text[..end]) {
            Ok(v) => {
                self.counters.embedded.fetch_add(1, Ordering::Relaxed);
                Some(v)
            }
            Err(err) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                log::warn!("store: embed: {err}");
                None
            }
        }
    }

    fn queue(&mut self, r: Record, vector: Option<&[f32]>, media: u64, owner: Owner) {
        let index = Some(r.index_entry(vector).encode());
        self.pending.push((
            Put {
                record: r,
                index,
                media_bytes: media,
            },
            owner,
        ));
    }

    /// Writes every pending record (and, with `objects`, every changed object) in one
    /// transaction.
    fn commit(&mut self, objects: bool) {
        let dirty: Vec<(String, u64)> = self
            .live
            .iter()
            .filter(|(_, l)| objects && l.dirty)
            .map(|(k, _)| k.clone())
            .collect();
        for id in dirty {
            let Some(l) = self.live.get_mut(&id) else {
                continue;
            };
            l.rec.text = object_text(&l.rec);
            let stale = l.embedded.as_ref().is_none_or(|(t, _)| *t != l.rec.text);
            let text = l.rec.text.clone();
            if stale {
                let v = self.embed(&text);
                let l = self.live.get_mut(&id).expect("present");
                l.embedded = v.map(|v| (text, v));
            }
            let l = self.live.get_mut(&id).expect("present");
            l.dirty = false;
            let (r, media) = (l.rec.clone(), l.media_bytes);
            let v = l.embedded.as_ref().map(|(_, v)| v.clone());
            self.queue(r, v.as_deref(), media, Owner::Live(id.0, id.1));
        }
        if self.pending.is_empty() {
            return;
        }
        // A record queued again before its first commit (an alert, then its snapshot; a
        // description, then its repeat) has no key yet: written twice it would become two
        // records, so only the last state queued is written.
        let mut seen = std::collections::HashSet::new();
        let mut kept: Vec<(Put, Owner)> = Vec::with_capacity(self.pending.len());
        for (p, o) in self.pending.drain(..).rev() {
            let same = match &o {
                Owner::Alert(cam, id) => Some(format!("a:{cam}:{id}")),
                Owner::Scene(cam) => Some(format!("s:{cam}:{}", p.record.ts)),
                _ => None,
            };
            if p.record.key == 0 && same.is_some_and(|k| !seen.insert(k)) {
                continue;
            }
            kept.push((p, o));
        }
        kept.reverse();
        let (mut puts, owners): (Vec<Put>, Vec<Owner>) = kept.into_iter().unzip();
        match self.store.put(&mut puts) {
            Ok(keys) => {
                self.counters.commits.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .committed
                    .fetch_add(keys.len() as u64, Ordering::Relaxed);
                for (key, owner) in keys.into_iter().zip(owners) {
                    match owner {
                        Owner::Live(cam, track) => {
                            if let Some(l) = self.live.get_mut(&(cam, track)) {
                                l.rec.key = key;
                            }
                        }
                        Owner::Alert(cam, id) => {
                            let a = self
                                .alerts
                                .iter_mut()
                                .find(|a| a.0 == id && a.1.camera == cam);
                            if let Some(a) = a {
                                a.1.key = key;
                            }
                        }
                        Owner::Scene(cam) => {
                            if let Some(s) = self.scenes.get_mut(&cam) {
                                s.0.key = key;
                            }
                        }
                        Owner::Other => {}
                    }
                }
                // An ended object leaves memory once its last state is written (an alert's quick
                // commit leaves objects for the next regular one).
                self.live.retain(|_, l| !l.ended || l.dirty);
            }
            Err(e) => {
                // Kept objects are written again with their next change; the rest is lost,
                // and said so.
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                log::error!("store: {} record(s) not written: {e}", puts.len());
            }
        }
    }
}

/// The sentence embedded for an object: colour, label, zones, direction.
pub fn object_text(r: &Record) -> String {
    let mut s = match &r.colour {
        Some(c) => format!("{c} {}", r.label),
        None => r.label.clone(),
    };
    let zones = r.zone_names();
    if !zones.is_empty() {
        s.push_str(&format!(" in the {} zone", zones.join(" and ")));
    }
    if let Some(d) = &r.direction {
        s.push_str(&format!(", {d}"));
    }
    if let Some(t) = &r.reading {
        s.push_str(&format!(", reading '{t}'"));
    }
    s
}

/// Which way an object went between its first and last box (centre x, centre y, height),
/// in words; `None` while it cannot be told.
fn direction(first: (f32, f32, f32), last: (f32, f32, f32), frame: (u32, u32)) -> Option<String> {
    let (w, h) = (frame.0.max(1) as f32, frame.1.max(1) as f32);
    if frame.0 == 0 {
        return None;
    }
    let dx = (last.0 - first.0) / w;
    let dy = (last.1 - first.1) / h;
    let grow = last.2 / first.2.max(1.0);
    Some(
        if dx.abs() >= 0.08 && dx.abs() >= dy.abs() {
            if dx > 0.0 {
                "moving left to right"
            } else {
                "moving right to left"
            }
        } else if grow > 1.25 || dy > 0.08 {
            "moving towards the camera"
        } else if grow < 0.8 || dy < -0.08 {
            "moving away from the camera"
        } else {
            "staying in place"
        }
        .to_string(),
    )
}

struct Cut {
    crop: String,
    snapshot: String,
    colour: Option<String>,
    bytes: u64,
}

/// The crop (with a little margin) and a snapshot of the frame, written as JPEGs; the crop's
/// dominant colour.
fn cut(
    img: &RgbImage,
    b: &BBox,
    media: &Path,
    camera: &str,
    nonce: &str,
    track: u64,
) -> std::result::Result<Cut, StoreError> {
    let (w, h) = img.dimensions();
    let (mx, my) = (b.width() * 0.08, b.height() * 0.08);
    let x1 = (b.x1 - mx).clamp(0.0, w as f32) as u32;
    let y1 = (b.y1 - my).clamp(0.0, h as f32) as u32;
    let x2 = (b.x2 + mx).clamp(0.0, w as f32) as u32;
    let y2 = (b.y2 + my).clamp(0.0, h as f32) as u32;
    if x2 <= x1 + 1 || y2 <= y1 + 1 {
        return Err(StoreError::Query(format!(
            "{camera}: track {track}: empty box"
        )));
    }
    let colour = crate::ground::colour::histogram(img, b)
        .dominant()
        .map(str::to_string);
    let crop = image::imageops::crop_imm(img, x1, y1, x2 - x1, y2 - y1).to_image();
    let crop_jpeg = jpeg(&crop, 85, camera)?;
    let snap = if w > SNAPSHOT_WIDTH {
        let nh = (h as f32 * SNAPSHOT_WIDTH as f32 / w as f32)
            .round()
            .max(1.0) as u32;
        image::imageops::resize(img, SNAPSHOT_WIDTH, nh, image::imageops::Triangle)
    } else {
        img.clone()
    };
    let snap_jpeg = jpeg(&snap, 75, camera)?;
    let crop = write_media(
        media,
        camera,
        &format!("{nonce}-{track}-crop.jpg"),
        &crop_jpeg,
    )?;
    let snapshot = write_media(
        media,
        camera,
        &format!("{nonce}-{track}-snap.jpg"),
        &snap_jpeg,
    )?;
    Ok(Cut {
        crop,
        snapshot,
        colour,
        bytes: (crop_jpeg.len() + snap_jpeg.len()) as u64,
    })
}

fn jpeg(img: &RgbImage, quality: u8, camera: &str) -> std::result::Result<Vec<u8>, StoreError> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .map_err(|e| StoreError::Query(format!("{camera}: cannot encode a JPEG: {e}")))?;
    Ok(out)
}

/// Writes `media/<camera>/<name>` (through a temporary file and a rename, so a reader never
/// sees half a JPEG); returns the path relative to the store folder.
fn write_media(
    media: &Path,
    camera: &str,
    name: &str,
    bytes: &[u8],
) -> std::result::Result<String, StoreError> {
    let cam = safe(camera);
    let dir = media.join(&cam);
    let io = |p: &Path, e: std::io::Error| StoreError::Io {
        path: p.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    let path = dir.join(name);
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
    Ok(format!("{MEDIA_DIR}/{cam}/{name}"))
}

/// A name safe as one path component.
pub(crate) fn safe(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    if t.is_empty() {
        "_".into()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_names_the_main_movement() {
        let f = (640, 480);
        let d = |a, b| direction(a, b, f).unwrap();
        assert_eq!(
            d((100.0, 200.0, 50.0), (400.0, 210.0, 50.0)),
            "moving left to right"
        );
        assert_eq!(
            d((400.0, 200.0, 50.0), (100.0, 210.0, 50.0)),
            "moving right to left"
        );
        assert_eq!(
            d((300.0, 100.0, 50.0), (310.0, 300.0, 90.0)),
            "moving towards the camera"
        );
        assert_eq!(
            d((300.0, 200.0, 50.0), (302.0, 201.0, 50.0)),
            "staying in place"
        );
        assert!(direction((0.0, 0.0, 1.0), (1.0, 1.0, 1.0), (0, 0)).is_none());
    }

    #[test]
    fn text_read_on_an_object_is_searchable() {
        let mut r = Record::new(Kind::Object, "gate", 0.0);
        r.label = "truck".into();
        r.reading = Some("ACME FREIGHT".into());
        assert_eq!(object_text(&r), "truck, reading 'ACME FREIGHT'");
    }

    #[test]
    fn media_names_cannot_leave_the_folder() {
        assert_eq!(safe("../../etc"), "______etc");
        assert_eq!(safe(""), "_");
    }
}
