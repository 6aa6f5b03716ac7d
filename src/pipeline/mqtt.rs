//! The MQTT side of a run, wired at start-up: the embedded broker (if asked for), the publisher
//! and the command server, whose `cmd/*` answers come from the running frame loop; and what Home
//! Assistant reads: the discovery configs (built by `mqtt::discovery` from this run's config),
//! the rule switch states and the per-zone / per-label object counts.
//!
//! `crate::mqtt` knows the protocol (topics, spool, connection, command parsing); this module
//! knows the pipeline (its config, its latest frame, its rules) and joins the two.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::Value;

use super::vlm::{Trigger, VlmFrame};
use super::{Handle, Latest};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::ground::{Grounder, Object};
use crate::mqtt::discovery::{self, Inventory};
use crate::mqtt::{
    Command, CommandHandler, CommandRequest, CommandServer, EmbeddedBroker, EmbeddedBrokerConfig,
    MessageClass, MqttConfig, Publisher, PublisherHandle, Qos, Responder,
};
use crate::scene::{RuleKind, SceneDescription};
use crate::track::Track;

/// The port `Broker::Embedded` tries first; when it is taken, any free loopback port will do.
pub const DEFAULT_EMBEDDED_PORT: u16 = 1883;

/// Where a run publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broker {
    /// Nowhere: no MQTT at all.
    Off,
    /// As the config's `[mqtt]` table says; nowhere when the config has none.
    Config,
    /// The built-in broker on 127.0.0.1:`port`, the rest of `[mqtt]` from the config. With
    /// [`DEFAULT_EMBEDDED_PORT`] a free port is taken when that one is busy (another broker,
    /// another demo); a port asked for explicitly must be free.
    Embedded { port: u16 },
    /// This broker URL (mqtt://host:port, mqtts://…), the rest of `[mqtt]` from the config.
    Url(String),
}

/// The MQTT side of a running pipeline. Kept alive until [`MqttRuntime::stop`].
pub struct MqttRuntime {
    pub publisher: Publisher,
    commands: Option<CommandServer>,
    occupancy: Option<Occupancy>,
    /// `summary` every `[store] summary_every_s`, when set.
    summaries: Option<SummaryTopic>,
    // Dropped last: the publisher drains into it on the way out.
    _broker: Option<EmbeddedBroker>,
}

impl MqttRuntime {
    /// Starts what `broker` asks for; `None` when it asks for nothing. `spool` overrides
    /// `mqtt.spool_path`. `notify` receives one line per thing started, for people.
    pub fn start(
        broker: &Broker,
        spool: Option<&Path>,
        cfg: &Config,
        cameras: &[(String, Handle)],
        notify: &mut dyn FnMut(&str),
    ) -> Result<Option<MqttRuntime>> {
        let Some((camera, handle)) = cameras.first() else {
            return Err(Error::Other("mqtt: no camera".into()));
        };
        if *broker == Broker::Off || (*broker == Broker::Config && cfg.mqtt.is_none()) {
            return Ok(None);
        }
        let mut mc = mqtt_config(cfg)?;
        if let Some(p) = spool {
            mc.spool_path = p.to_path_buf();
        }
        let mut embedded = None;
        match broker {
            Broker::Embedded { port } => {
                let b = start_embedded(*port)?;
                notify(&format!(
                    "mqtt: embedded broker on {} (watch it with: lookout watch --broker {})",
                    b.url(),
                    b.url()
                ));
                mc.broker = b.url();
                embedded = Some(b);
            }
            Broker::Url(url) => mc.broker = url.clone(),
            Broker::Off | Broker::Config => {}
        }
        mc.validate()?;
        let publisher = Publisher::start(&mc)?;
        let inventory = Inventory {
            commands: mc.commands,
            board: mc.board.clone(),
            ..inventory(cfg)
        };
        announce(&mc, &publisher.handle(), &inventory)?;
        publish_rule_states(&publisher.handle(), cfg);
        let handles = cameras.iter().map(|(_, h)| h.clone()).collect();
        let occupancy = Occupancy::start(publisher.handle(), handles, &inventory)?;
        let every = cfg
            .store
            .as_ref()
            .map_or((0.0, 0.0), |s| (s.summary_every_s, s.summary_window_s));
        let summaries = match &handle.recall {
            Some(r) if every.0 > 0.0 => {
                Some(SummaryTopic::start(publisher.handle(), r.clone(), every)?)
            }
            _ => None,
        };
        let commands = if mc.commands {
            let handler = PipelineCommands {
                handle: handle.clone(),
                publisher: publisher.handle(),
                camera: camera.clone(),
                rule_names: cfg
                    .per_camera()
                    .iter()
                    .flat_map(|c| c.rules.iter().map(|r| r.name.clone()))
                    .collect(),
                grounder: LazyGrounder::for_model(&cfg.detector.model),
                more: cameras[1..].to_vec(),
            };
            Some(CommandServer::start(&publisher, handler)?)
        } else {
            None
        };
        notify(&format!(
            "mqtt: publishing to {} as {}/… (spool {}){}",
            mc.broker,
            publisher.topics().prefix(),
            mc.spool_path.display(),
            if mc.discovery {
                format!(", Home Assistant discovery under {}/", mc.discovery_prefix)
            } else {
                String::new()
            }
        ));
        Ok(Some(MqttRuntime {
            publisher,
            commands,
            occupancy: Some(occupancy),
            summaries,
            _broker: embedded,
        }))
    }

    /// Waits up to 5 s for the broker to acknowledge what is queued (the rest stays in the spool
    /// for the next start), then closes the connection and the command server.
    pub fn stop(mut self, notify: &mut dyn FnMut(&str)) {
        if let Some(o) = self.occupancy.take() {
            o.stop();
        }
        if let Some(s) = self.summaries.take() {
            s.stop();
        }
        if !self.publisher.flush(Duration::from_secs(5)) {
            notify("mqtt: not everything was acknowledged yet; it stays in the spool for the next start");
        }
        self.publisher.shutdown(Duration::from_secs(1));
        if let Some(c) = self.commands {
            c.join();
        }
    }
}

/// `[mqtt]` as a [`MqttConfig`] (the config's own reading of it, every problem naming its key),
/// or the defaults with the config's device and board when there is no `[mqtt]` table.
fn mqtt_config(cfg: &Config) -> Result<MqttConfig> {
    match cfg.mqtt_config() {
        Ok(Some(mc)) => Ok(mc),
        Ok(None) => {
            let mut mc = MqttConfig {
                device: cfg.device.clone(),
                ..MqttConfig::default()
            };
            if let Some(b) = &cfg.board {
                mc.board = b.clone();
            }
            Ok(mc)
        }
        Err(issues) => Err(Error::Config {
            path: "[mqtt]".into(),
            reason: issues.to_string(),
        }),
    }
}

fn start_embedded(port: u16) -> Result<EmbeddedBroker> {
    let bc = EmbeddedBrokerConfig {
        listen: ([127, 0, 0, 1], port).into(),
        ..Default::default()
    };
    match EmbeddedBroker::start(&bc) {
        Ok(b) => Ok(b),
        Err(e) if port == DEFAULT_EMBEDDED_PORT => {
            log::info!("embedded broker on {port}: {e}; using a free port");
            Ok(EmbeddedBroker::start(&EmbeddedBrokerConfig {
                listen: ([127, 0, 0, 1], 0).into(),
                ..bc
            })?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Answers commands from the running pipeline. `ping` is answered by the command server itself.
pub struct PipelineCommands {
    pub handle: Handle,
    pub publisher: PublisherHandle,
    pub camera: String,
    pub rule_names: BTreeSet<String>,
    /// For `cmd/ground`; loads its models at the first instruction.
    pub grounder: LazyGrounder,
    /// The cameras after the first (`camera`, `handle`), with `[[cameras]]`; a command naming
    /// one of them is answered from its latest frame.
    pub more: Vec<(String, Handle)>,
}

impl PipelineCommands {
    /// The camera a command names (the first without a name), or an error naming the camera
    /// asked for and the ones there are.
    fn camera(&self, asked: Option<&String>) -> std::result::Result<(&str, &Handle), String> {
        let Some(want) = asked else {
            return Ok((&self.camera, &self.handle));
        };
        if want == &self.camera {
            return Ok((&self.camera, &self.handle));
        }
        if let Some((n, h)) = self.more.iter().find(|(n, _)| n == want) {
            return Ok((n, h));
        }
        let mut names = vec![format!("'{}'", self.camera)];
        names.extend(self.more.iter().map(|(n, _)| format!("'{n}'")));
        Err(if self.more.is_empty() {
            format!("unknown camera '{want}' (this device has {})", names[0])
        } else {
            format!(
                "unknown camera '{want}' (this device has {})",
                names.join(", ")
            )
        })
    }

    /// Every camera's handle, the first first.
    fn handles(&self) -> impl Iterator<Item = &Handle> {
        std::iter::once(&self.handle).chain(self.more.iter().map(|(_, h)| h))
    }
}

/// A [`Grounder`] for the pipeline's detector, made when the first `cmd/ground` arrives so a
/// device that is never asked pays nothing (the embedding model is 23 MB).
pub struct LazyGrounder {
    model: String,
    state: Option<std::result::Result<Grounder, String>>,
    /// The person-segmentation model for a person target's `mask`, loaded at the first person.
    segmenter: Option<std::result::Result<crate::segment::PersonSegmenter, String>>,
}

impl LazyGrounder {
    /// For the detector `model` (a name or folder, as in the config).
    pub fn for_model(model: &str) -> LazyGrounder {
        LazyGrounder {
            model: model.to_string(),
            state: None,
            segmenter: None,
        }
    }

    fn get(&mut self) -> std::result::Result<&mut Grounder, String> {
        let model = self.model.clone();
        let state = self.state.get_or_insert_with(|| {
            let labels = crate::models::find(&model)
                .map_err(|e| e.to_string())?
                .labels;
            Grounder::with_default_embedder(&labels).map_err(|e| e.to_string())
        });
        state.as_mut().map_err(|e| e.clone())
    }

    /// The default segmentation model; `None` (logged once) when it is not installed.
    fn segmenter(&mut self) -> Option<&crate::segment::PersonSegmenter> {
        let s = self.segmenter.get_or_insert_with(|| {
            crate::segment::PersonSegmenter::find(crate::segment::DEFAULT_SEGMENTER, 1).map_err(
                |e| {
                    log::warn!("cmd/ground: no person masks: {e}");
                    e.to_string()
                },
            )
        });
        s.as_ref().ok()
    }
}

/// Grounds `instruction` on the latest frame and the tracks seen in it; the reply is the CLI's
/// JSON plus the frame it was grounded on.
fn ground_reply(
    grounder: &mut LazyGrounder,
    latest: &Latest,
    instruction: &str,
) -> std::result::Result<Value, String> {
    let g = grounder
        .get()
        .map_err(|e| format!("grounding is not available: {e}"))?;
    // lost tracks are where an object was, not where it is
    let objects: Vec<Object> = latest
        .tracks
        .iter()
        .filter(|t| t.missed_frames == 0)
        .map(Object::from)
        .collect();
    let mut r = g
        .ground(&latest.image, &objects, instruction)
        .map_err(|e| e.to_string())?;
    if let Some(t) = r
        .target
        .as_mut()
        .filter(|t| crate::segment::is_person(&t.label))
    {
        if let Some(seg) = grounder.segmenter() {
            t.mask = Some(
                seg.mask(&latest.image, Some(&t.bbox))
                    .map_err(|e| e.to_string())?,
            );
        }
    }
    // through text, so boxes keep the short f32 decimals the CLI prints (350.76, not 350.760009765625)
    let mut v: Value = serde_json::to_string(&r)
        .and_then(|t| serde_json::from_str(&t))
        .map_err(|e| format!("serialise: {e}"))?;
    if let Value::Object(m) = &mut v {
        m.insert("frame_id".into(), latest.frame_id.into());
        m.insert("frame_ts".into(), latest.ts.into());
    }
    Ok(v)
}

impl CommandHandler for PipelineCommands {
    fn handle(&mut self, request: CommandRequest, responder: Responder) {
        let asked = match &request.command {
            Command::Snapshot { camera }
            | Command::Describe { camera, .. }
            | Command::Ground { camera, .. } => camera.as_ref(),
            _ => None,
        };
        let (camera, handle) = match self.camera(asked) {
            Ok((c, h)) => (c.to_string(), h.clone()),
            Err(e) => return responder.err(e),
        };
        let enable = matches!(request.command, Command::RulesEnable { .. });
        match request.command {
            Command::Snapshot { .. } => {
                let Some(latest) = handle.latest.lock().ok().and_then(|l| l.clone()) else {
                    return responder.err("no frame processed yet");
                };
                let jpeg =
                    match crate::annotate::annotated_jpeg(&latest.outbound, &latest.tracks, 85) {
                        Ok(j) => j,
                        Err(e) => return responder.err(e),
                    };
                let bytes = jpeg.len();
                match self.publisher.snapshot(&camera, jpeg) {
                    Ok(()) => responder.ok(serde_json::json!({
                        "topic": self.publisher.topics().snapshot(&camera).unwrap_or_default(),
                        "frame_id": latest.frame_id, "bytes": bytes, "tracks": latest.tracks.len(),
                    })),
                    Err(e) => responder.err(e.to_string()),
                }
            }
            Command::Describe { prompt, .. } => {
                let Some(latest) = handle.latest.lock().ok().and_then(|l| l.clone()) else {
                    return responder.err("no frame processed yet");
                };
                let (w, h) = latest.image.dimensions();
                let mut d = crate::scene::Describer::new(Default::default(), w, h);
                let mut desc =
                    d.describe(latest.frame_id, latest.ts, &latest.tracks, &latest.zones);
                desc.camera = camera.clone();
                if let Some(vlm) = handle.vlm.lock().ok().and_then(|v| v.clone()) {
                    // The VLM answers later, from its own thread; the reply goes out then.
                    let frame = VlmFrame {
                        frame_id: latest.frame_id,
                        ts: latest.ts,
                        image: latest.image.clone(),
                    };
                    let reply = Box::new(move |r: Result<SceneDescription, String>| match r {
                        Ok(s) => responder.ok(serde_json::to_value(&s).unwrap_or(Value::Null)),
                        Err(e) => responder.err(e),
                    });
                    vlm.describe(frame, desc, prompt, Trigger::Command, Some(reply));
                    return;
                }
                let mut v = serde_json::to_value(&desc).unwrap_or(Value::Null);
                if prompt.is_some() {
                    if let Value::Object(m) = &mut v {
                        m.insert("note".into(), "no VLM configured: the prompt was not used; this description comes from detections".into());
                    }
                }
                responder.ok(v)
            }
            Command::RulesEnable { name } | Command::RulesDisable { name } => {
                if !self.rule_names.contains(&name) {
                    let known: Vec<_> = self.rule_names.iter().cloned().collect();
                    return responder.err(format!(
                        "no rule named '{name}' (rules: {})",
                        known.join(", ")
                    ));
                }
                let on = enable;
                // A rule name is switched on every camera that has it (top-level rules are
                // every camera's).
                for h in self.handles() {
                    match h.rule_switches.lock() {
                        Ok(mut s) => s.push((name.clone(), on)),
                        Err(_) => return responder.err("pipeline is stopping"),
                    }
                }
                publish_rule_state(&self.publisher, &name, on);
                responder.ok(serde_json::json!({ "rule": name, "enabled": on }))
            }
            Command::Ground { instruction, .. } => {
                let Some(latest) = handle.latest.lock().ok().and_then(|l| l.clone()) else {
                    return responder.err(format!("no frame processed yet on camera '{camera}'"));
                };
                match ground_reply(&mut self.grounder, &latest, &instruction) {
                    Ok(mut v) => {
                        if let Value::Object(m) = &mut v {
                            m.insert("camera".into(), camera.into());
                        }
                        responder.ok(v)
                    }
                    Err(e) => responder.err(e),
                }
            }
            Command::Ping => responder.ok(serde_json::json!({ "pong": true })),
            Command::Search(_) | Command::Summary(_) => {
                match recall_reply(&self.handle, &request.command) {
                    Ok(v) => responder.ok(v),
                    Err(e) => responder.err(e),
                }
            }
        }
    }
}

/// `cmd/search` and `cmd/summary`: the same JSON as `lookout search --json` / `summary --json`.
fn recall_reply(handle: &Handle, c: &Command) -> std::result::Result<Value, String> {
    let Some(recall) = handle.recall.as_ref() else {
        return Err("this run keeps no event store (start it with [store] or --store)".into());
    };
    match c {
        Command::Search(a) => recall.search(&crate::store::SearchRequest {
            query: a.query.clone(),
            since: a.since.clone(),
            camera: a.camera.clone(),
            limit: a.limit.unwrap_or(0),
        }),
        Command::Summary(a) => recall.summary(a.since.as_deref(), a.camera.as_deref()),
        _ => return Err("not a store command".into()),
    }
    .map_err(|e| e.to_string())
}

/// What Home Assistant gets entities for, from this run's config: the camera, the zones (zone
/// rules), the labels counted (the detector's classes; without them, the labels the rules name)
/// and every rule.
pub fn inventory(cfg: &Config) -> Inventory {
    let mut labels: Vec<String> = cfg.detector.classes.clone();
    if labels.is_empty() {
        let named: BTreeSet<&String> = cfg.rules.iter().flat_map(|r| &r.classes).collect();
        labels = named.into_iter().cloned().collect();
    }
    Inventory {
        cameras: cfg.camera_names(),
        zones: zone_names(cfg),
        labels,
        rules: cfg.rules.iter().map(|r| r.name.clone()).collect(),
        temperature: super::stats::board_temperature().is_some(),
        board: cfg.board.clone().unwrap_or_else(|| "unknown".into()),
        version: env!("CARGO_PKG_VERSION").to_string(),
        commands: true,
    }
}

/// Every camera's zones, each name once.
fn zone_names(cfg: &Config) -> Vec<String> {
    let mut names = Vec::new();
    for c in cfg.per_camera() {
        for r in c.rules.iter().filter(|r| r.kind == RuleKind::Zone) {
            if !names.contains(&r.name) {
                names.push(r.name.clone());
            }
        }
    }
    names
}

/// Publishes the Home Assistant discovery configs (or, with `discovery = false`, removes what an
/// earlier run announced), emptying the configs of entities this run no longer has.
fn announce(mc: &MqttConfig, p: &PublisherHandle, inv: &Inventory) -> Result<()> {
    let state = discovery::state_path(&mc.spool_path);
    let previous = discovery::load_published(&state);
    let configs = if mc.discovery {
        discovery::configs(p.topics(), &mc.discovery_prefix, inv)
    } else {
        Vec::new()
    };
    if configs.is_empty() && previous.is_empty() {
        return Ok(());
    }
    let removed = discovery::publish(p, &configs, &previous, &state)?;
    log::info!(
        "mqtt: {} Home Assistant discovery configs published, {removed} removed",
        configs.len()
    );
    Ok(())
}

/// The retained `rules/<rule>/state` of every rule as configured, for the rule switches.
fn publish_rule_states(p: &PublisherHandle, cfg: &Config) {
    for r in &cfg.rules {
        publish_rule_state(p, &r.name, r.enabled);
    }
}

fn publish_rule_state(p: &PublisherHandle, rule: &str, on: bool) {
    let Ok(topic) = p.topics().rule_state(rule) else {
        return; // a name that is not a topic level has no switch either
    };
    let payload = if on { "ON" } else { "OFF" };
    if let Err(e) = p.publish_with(
        MessageClass::Event,
        topic,
        payload.into(),
        Qos::AtLeastOnce,
        true,
    ) {
        log::warn!("mqtt: rule state of {rule}: {e}");
    }
}

/// How often the latest frame is looked at for changed counts. Counts are state, not events:
/// a dashboard needs the current value, and a change shorter than this is not worth a message.
const OCCUPANCY_POLL: Duration = Duration::from_millis(200);

/// Publishes the retained object counts per zone (`zones/<zone>/count`) and per label
/// (`labels/<label>/count`) that Home Assistant's occupancy and count entities read, from the
/// frame loop's latest frame; only counts that changed go out. Its own thread, so the frame
/// loop does no extra work.
struct Occupancy {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Occupancy {
    fn start(p: PublisherHandle, handles: Vec<Handle>, inv: &Inventory) -> Result<Occupancy> {
        let stop = Arc::new(AtomicBool::new(false));
        let (zones, labels) = (inv.zones.clone(), inv.labels.clone());
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mqtt-occupancy".into())
            .spawn(move || {
                let mut sent: BTreeMap<String, usize> = BTreeMap::new();
                let mut seen_frames = Vec::new();
                loop {
                    let last_round = s.load(Ordering::Relaxed);
                    let latest: Vec<Option<Latest>> = handles
                        .iter()
                        .map(|h| h.latest.lock().ok().and_then(|l| l.clone()))
                        .collect();
                    let frames: Vec<Option<u64>> = latest
                        .iter()
                        .map(|l| l.as_ref().map(|l| l.frame_id))
                        .collect();
                    if frames != seen_frames || sent.is_empty() {
                        seen_frames = frames;
                        // Counts are of the device: every camera's objects together.
                        let mut counts = object_counts(&[], &Default::default(), &zones, &labels);
                        for l in latest.iter().flatten() {
                            let more = object_counts(&l.tracks, &l.zones, &zones, &labels);
                            for (c, m) in counts.iter_mut().zip(more) {
                                c.1 += m.1;
                            }
                        }
                        publish_counts(&p, counts, &mut sent);
                    }
                    if last_round {
                        return;
                    }
                    std::thread::sleep(OCCUPANCY_POLL);
                }
            })
            .map_err(|e| Error::Other(format!("spawn mqtt-occupancy: {e}")))?;
        Ok(Occupancy {
            stop,
            thread: Some(thread),
        })
    }

    /// Publishes the last counts once more if they changed, then stops.
    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Publishes the store's summary of the last `summary_window_s` (default: `summary_every_s`)
/// seconds on `<prefix>/summary` every `summary_every_s`, retained (a dashboard that connects later shows the latest narrative at once), as
/// the envelope around `lookout summary --json`'s object. Its own thread; the first one goes out
/// after one period.
struct SummaryTopic {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SummaryTopic {
    /// `every`: (period, window), seconds; a window of 0 is the period.
    fn start(
        p: PublisherHandle,
        r: Arc<crate::store::Recall>,
        every: (f64, f64),
    ) -> Result<SummaryTopic> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let every_s = every.0;
        let window = format!(
            "{}s",
            if every.1 > 0.0 { every.1 } else { every.0 }.ceil() as u64
        );
        let thread = std::thread::Builder::new()
            .name("mqtt-summary".into())
            .spawn(move || {
                let ids = crate::mqtt::topics::IdGen::new();
                let period = Duration::from_secs_f64(every_s);
                let mut last = std::time::Instant::now();
                while !s.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(100).min(period));
                    if last.elapsed() < period {
                        continue;
                    }
                    last = std::time::Instant::now();
                    match r.summary(Some(&window), None) {
                        Ok(body) => {
                            let env = crate::mqtt::Envelope::new(&ids, p.topics().device(), body);
                            let topic = p.topics().summary();
                            let res = p.publish_with(
                                MessageClass::Scene,
                                topic,
                                env.to_json(),
                                Qos::AtLeastOnce,
                                true,
                            );
                            if let Err(e) = res {
                                log::warn!("mqtt: summary: {e}");
                            }
                        }
                        Err(e) => log::warn!("store: summary: {e}"),
                    }
                }
            })
            .map_err(|e| Error::Other(format!("spawn mqtt-summary: {e}")))?;
        Ok(SummaryTopic {
            stop,
            thread: Some(thread),
        })
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Topic → count for every zone and label, from the tracks the rules see (confirmed and lost:
/// a track missed for a frame or two is still there).
fn object_counts(
    tracks: &[Track],
    membership: &crate::scene::ZoneMembership,
    zones: &[String],
    labels: &[String],
) -> Vec<(Which, usize)> {
    let present: Vec<&Track> = tracks.iter().filter(|t| t.is_established()).collect();
    let zone_counts = zones.iter().map(|z| {
        let n = present
            .iter()
            .filter(|t| membership.of(t.id).iter().any(|m| m == z))
            .count();
        (Which::Zone(z.clone()), n)
    });
    let label_counts = labels.iter().map(|l| {
        let n = present.iter().filter(|t| &*t.label == l.as_str()).count();
        (Which::Label(l.clone()), n)
    });
    zone_counts.chain(label_counts).collect()
}

/// What a count is of.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Which {
    Zone(String),
    Label(String),
}

fn publish_counts(
    p: &PublisherHandle,
    counts: Vec<(Which, usize)>,
    sent: &mut BTreeMap<String, usize>,
) {
    for (which, n) in counts {
        let topic = match &which {
            Which::Zone(z) => p.topics().zone_count(z),
            Which::Label(l) => p.topics().label_count(l),
        };
        let Ok(topic) = topic else { continue };
        if sent.get(&topic) == Some(&n) {
            continue;
        }
        match p.publish_with(
            MessageClass::Scene,
            topic.clone(),
            n.to_string().into_bytes(),
            Qos::AtLeastOnce,
            true,
        ) {
            Ok(()) => {
                sent.insert(topic, n);
            }
            Err(e) => log::debug!("mqtt: count on {topic}: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::BBox;
    use crate::scene::ZoneMembership;
    use crate::track::{TrackState, Velocity};

    #[test]
    fn a_run_without_a_store_says_so_to_search_and_summary() {
        let c = Command::Summary(crate::mqtt::recall_args::SummaryArgs {
            since: None,
            camera: None,
        });
        let e = recall_reply(&Handle::default(), &c).unwrap_err();
        assert!(e.contains("no event store") && e.contains("--store"), "{e}");
    }

    fn track(id: u64, label: &str, state: TrackState) -> Track {
        Track {
            id,
            label: Arc::from(label),
            class_id: 0,
            score: 0.9,
            bbox: BBox::from([0.0, 0.0, 1.0, 1.0]),
            velocity: Velocity::default(),
            age_frames: 5,
            hits: 5,
            missed_frames: 0,
            first_seen: 0.0,
            last_seen: 0.0,
            last_frame: 0,
            state,
        }
    }

    #[test]
    fn counts_cover_established_tracks_per_zone_and_label() {
        let tracks = [
            track(1, "person", TrackState::Confirmed),
            track(2, "person", TrackState::Lost),
            track(0, "person", TrackState::Tentative),
            track(3, "car", TrackState::Confirmed),
        ];
        let zones: ZoneMembership = [(1, "path"), (3, "path"), (3, "road")]
            .into_iter()
            .collect();
        let got = object_counts(
            &tracks,
            &zones,
            &["path".into(), "gate".into()],
            &["person".into(), "dog".into()],
        );
        assert_eq!(
            got,
            [
                (Which::Zone("path".into()), 2),
                (Which::Zone("gate".into()), 0),
                (Which::Label("person".into()), 2),
                (Which::Label("dog".into()), 0),
            ]
        );
    }
}
