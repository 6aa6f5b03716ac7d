//! Connects the pipeline to MQTT: a [`Sink`] that publishes the pipeline's records through the
//! spool, and a command handler that answers `cmd/*` from the pipeline's latest frame.
//!
//! The pipeline's own serde types are the payload bodies, so JSON Lines, MQTT and the CLI never
//! drift apart. The envelope's `id`/`ts` (unique across restarts, for de-duplication) take those
//! names; the record's own are kept as `<record>_id` and `frame_ts`.

use std::collections::BTreeSet;

use serde_json::Value;

use super::commands::{Command, CommandHandler, CommandRequest, Responder};
use super::publisher::PublisherHandle;
use super::topics::MessageClass;
use crate::error::{Error, Result};
use crate::ground::{Grounder, Object};
use crate::pipeline::{Handle, Output, Sink};
use crate::scene::SceneDescription;
use crate::vlm::worker::{Trigger, VlmFrame};

pub struct MqttSink {
    publisher: PublisherHandle,
}

impl MqttSink {
    pub fn new(publisher: PublisherHandle) -> Self {
        MqttSink { publisher }
    }
}

/// Serialise `rec`, renaming its `id`/`ts` so they do not collide with the envelope's.
fn body(rec: &impl serde::Serialize, id_name: &str) -> Result<Value> {
    let mut v = serde_json::to_value(rec).map_err(|e| Error::Other(format!("serialise: {e}")))?;
    if let Value::Object(m) = &mut v {
        if let Some(id) = m.remove("id") {
            m.insert(id_name.to_string(), id);
        }
        if let Some(ts) = m.remove("ts") {
            m.insert("frame_ts".into(), ts);
        }
    }
    Ok(v)
}

impl Sink for MqttSink {
    fn send(&mut self, out: &Output) -> Result<()> {
        let p = &self.publisher;
        let t = p.topics();
        match out {
            Output::Alert(a) => {
                p.publish_json(MessageClass::Alert, t.alerts(), body(a, "alert_id")?)?;
                // The alert is on disk before anything else (the JSON Lines log, the terminal)
                // reports it, so a crash right after cannot lose an alert that was reported.
                if !p.sync(std::time::Duration::from_secs(2)) {
                    log::warn!("mqtt: alert {} not yet on disk after 2 s", a.id);
                }
                Ok(())
            }
            Output::Event(e) => p
                .publish_json(MessageClass::Event, t.events(), body(e, "event_id")?)
                .map(drop),
            Output::Scene(s) => p
                .publish_json(MessageClass::Scene, t.scene(), body(s, "scene_id")?)
                .map(drop),
            Output::Detections(d) => p
                .publish_json(
                    MessageClass::Detections,
                    t.detections(),
                    body(d, "detections_id")?,
                )
                .map(drop),
            Output::Stats(s) => {
                let mqtt = p.stats();
                let v = serde_json::json!({ "pipeline": body(s, "stats_id")?, "mqtt": mqtt });
                p.publish_json(MessageClass::Stats, t.stats(), v).map(drop)
            }
            Output::Snapshot(s) => p.snapshot(&s.camera, s.jpeg.clone()),
        }
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
}

/// A [`Grounder`] for the pipeline's detector, made when the first `cmd/ground` arrives so a
/// device that is never asked pays nothing (the embedding model is 23 MB).
pub struct LazyGrounder {
    model: String,
    state: Option<std::result::Result<Grounder, String>>,
}

impl LazyGrounder {
    /// For the detector `model` (a name or folder, as in the config).
    pub fn for_model(model: &str) -> LazyGrounder {
        LazyGrounder {
            model: model.to_string(),
            state: None,
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
}

/// Grounds `instruction` on the latest frame and the tracks seen in it; the reply is the CLI's
/// JSON plus the frame it was grounded on.
fn ground_reply(
    grounder: &mut LazyGrounder,
    latest: &crate::pipeline::Latest,
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
    let r = g
        .ground(&latest.image, &objects, instruction)
        .map_err(|e| e.to_string())?;
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
        if let Some(c) = match &request.command {
            Command::Snapshot { camera }
            | Command::Describe { camera, .. }
            | Command::Ground { camera, .. } => camera.as_ref(),
            _ => None,
        } {
            if c != &self.camera {
                return responder.err(format!(
                    "unknown camera '{c}' (this device has '{}')",
                    self.camera
                ));
            }
        }
        let enable = matches!(request.command, Command::RulesEnable { .. });
        match request.command {
            Command::Snapshot { .. } => {
                let Some(latest) = self.handle.latest.lock().ok().and_then(|l| l.clone()) else {
                    return responder.err("no frame processed yet");
                };
                let jpeg = match crate::pipeline::annotated_jpeg(&latest.image, &latest.tracks, 85)
                {
                    Ok(j) => j,
                    Err(e) => return responder.err(e),
                };
                let bytes = jpeg.len();
                match self.publisher.snapshot(&self.camera, jpeg) {
                    Ok(()) => responder.ok(serde_json::json!({
                        "topic": self.publisher.topics().snapshot(&self.camera).unwrap_or_default(),
                        "frame_id": latest.frame_id, "bytes": bytes, "tracks": latest.tracks.len(),
                    })),
                    Err(e) => responder.err(e.to_string()),
                }
            }
            Command::Describe { prompt, .. } => {
                let Some(latest) = self.handle.latest.lock().ok().and_then(|l| l.clone()) else {
                    return responder.err("no frame processed yet");
                };
                let (w, h) = latest.image.dimensions();
                let mut d = crate::scene::Describer::new(Default::default(), w, h);
                let desc = d.describe(latest.frame_id, latest.ts, &latest.tracks, &latest.zones);
                if let Some(vlm) = self.handle.vlm.lock().ok().and_then(|v| v.clone()) {
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
                match self.handle.rule_switches.lock() {
                    Ok(mut s) => {
                        s.push((name.clone(), on));
                        responder.ok(serde_json::json!({ "rule": name, "enabled": on }))
                    }
                    Err(_) => responder.err("pipeline is stopping"),
                }
            }
            Command::Ground { instruction, .. } => {
                let Some(latest) = self.handle.latest.lock().ok().and_then(|l| l.clone()) else {
                    return responder.err("no frame processed yet");
                };
                match ground_reply(&mut self.grounder, &latest, &instruction) {
                    Ok(v) => responder.ok(v),
                    Err(e) => responder.err(e),
                }
            }
            Command::Ping => responder.ok(serde_json::json!({ "pong": true })),
        }
    }
}
