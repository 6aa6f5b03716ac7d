//! Commands arriving on `lookout/<device>/cmd/<name>`, answered on
//! `lookout/<device>/reply/<request-id>`.
//!
//! Payloads come from anyone who can publish to the broker, so parsing is strict and bounded:
//! at most [`MAX_COMMAND_BYTES`], a JSON object, known fields only, each checked. Anything wrong
//! is answered with `{"ok":false,"error":"…"}` naming the problem; nothing a peer sends can panic
//! the process or grow memory.
//!
//! Three more rules keep a command from acting twice or late: a retained command (one the broker
//! stored and hands out on subscribing) is never executed, only answered with an error, once per
//! distinct message; a state-changing command whose `request_id` was seen recently is answered
//! "duplicate" instead of applied again; and a command that found the queue full is answered
//! "busy" (see `publisher::INCOMING_CAP`).

use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{MqttError, Result};
use super::publisher::{IncomingMessage, Publisher, PublisherHandle};
use super::topics::{validate_segment, IdGen, ReplyBody, Topics, COMMAND_VERSION};

/// Largest command payload accepted; larger ones get an error reply without being parsed.
pub const MAX_COMMAND_BYTES: usize = 64 << 10;
const MAX_TEXT: usize = 4096;
/// How far into an unparseable payload to look for its `request_id`.
const SALVAGE_BYTES: usize = 1024;
/// Request ids of state-changing commands remembered for de-duplication, at most.
pub const RECENT_REQUEST_IDS: usize = 1024;
/// Retained command messages remembered (as hashes) so each is answered once, at most.
const RECENT_RETAINED: usize = 256;

/// The commands the device understands; the topic's last level(s) name the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// `cmd/ground {"instruction": "the red cup left of the laptop", "camera"?: "front"}`
    Ground {
        instruction: String,
        camera: Option<String>,
    },
    /// `cmd/snapshot {"camera"?: "front"}`
    Snapshot { camera: Option<String> },
    /// `cmd/describe {"camera"?: "front", "prompt"?: "Is the gate open?"}`
    Describe {
        camera: Option<String>,
        prompt: Option<String>,
    },
    /// `cmd/rules/enable {"name": "driveway"}`
    RulesEnable { name: String },
    /// `cmd/rules/disable {"name": "driveway"}`
    RulesDisable { name: String },
    /// `cmd/ping {}` — answered by the command server itself.
    Ping,
    /// `cmd/search {"query": …, "since"?, "limit"?, "camera"?}`: the event store, searched.
    Search(super::recall_args::SearchArgs),
    /// `cmd/summary {"since"?, "camera"?}`: the event store's narrative of a window.
    Summary(super::recall_args::SummaryArgs),
}

/// Command names as they appear in topics.
pub const COMMAND_NAMES: [&str; 8] = [
    "ground",
    "snapshot",
    "describe",
    "rules/enable",
    "rules/disable",
    "ping",
    "search",
    "summary",
];

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Ground { .. } => "ground",
            Command::Snapshot { .. } => "snapshot",
            Command::Describe { .. } => "describe",
            Command::RulesEnable { .. } => "rules/enable",
            Command::RulesDisable { .. } => "rules/disable",
            Command::Ping => "ping",
            Command::Search(_) => "search",
            Command::Summary(_) => "summary",
        }
    }

    /// Commands that change the device's state: applied at most once per `request_id`.
    /// (A new state-changing command belongs here too.)
    pub fn changes_state(&self) -> bool {
        matches!(
            self,
            Command::RulesEnable { .. } | Command::RulesDisable { .. }
        )
    }
}

/// The last `cap` distinct keys seen; the oldest is forgotten first. Bounded whatever peers send.
#[derive(Debug)]
pub struct Recent<K> {
    set: HashSet<K>,
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Hash + Eq + Clone> Recent<K> {
    pub fn new(cap: usize) -> Recent<K> {
        Recent {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Remembers `k`; `false` when it was already remembered.
    pub fn insert(&mut self, k: K) -> bool {
        if self.set.contains(&k) {
            return false;
        }
        if self.order.len() == self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.set.insert(k.clone());
        self.order.push_back(k);
        true
    }
}

/// One retained message, as its topic and payload hash.
fn fingerprint(msg: &IncomingMessage) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    msg.topic.hash(&mut h);
    msg.payload.hash(&mut h);
    h.finish()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandRequest {
    /// From the payload's `request_id`, or generated when absent.
    pub request_id: String,
    pub command: Command,
}

/// Why a payload was rejected, and where to say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    pub request_id: String,
    pub command: Option<String>,
    pub error: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroundArgs {
    instruction: String,
    #[serde(default)]
    camera: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CameraArgs {
    #[serde(default)]
    camera: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DescribeArgs {
    #[serde(default)]
    camera: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameArgs {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// Parses one command message. `ids` makes request ids for payloads that carry none.
pub fn parse_command(
    topics: &Topics,
    topic: &str,
    payload: &[u8],
    max_bytes: usize,
    ids: &IdGen,
) -> std::result::Result<CommandRequest, CommandError> {
    let generated = || format!("gen-{}", ids.next().0);
    let name = topics.command_name(topic).map(str::to_string);
    let fail = |request_id: String, error: String| CommandError {
        request_id,
        command: name.clone(),
        error,
    };
    // For payloads too big or too broken to parse, a request id found near the start still
    // lets the error reach the requester.
    let salvaged = || {
        let head = &payload[..payload.len().min(SALVAGE_BYTES)];
        salvage_request_id(&String::from_utf8_lossy(head)).unwrap_or_else(generated)
    };
    if payload.len() > max_bytes {
        return Err(fail(
            salvaged(),
            format!(
                "payload of {} bytes exceeds the {max_bytes}-byte limit",
                payload.len()
            ),
        ));
    }
    if let Some(rule) = topics.rule_set_name(topic) {
        return rule_switch(rule, payload, generated());
    }
    let Some(cmd_name) = name.as_deref() else {
        return Err(fail(
            generated(),
            format!("{topic:?} is not a command topic"),
        ));
    };
    let text = std::str::from_utf8(payload).map_err(|e| {
        fail(
            salvaged(),
            match field_with_bad_utf8(payload) {
                Some(f) => format!("{f} is not valid UTF-8 (byte {})", e.valid_up_to()),
                None => format!("payload is not UTF-8: {e}"),
            },
        )
    })?;
    let value: Value = if text.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        serde_json::from_str(text).map_err(|e| fail(salvaged(), format!("invalid JSON: {e}")))?
    };
    let Value::Object(mut obj) = value else {
        return Err(fail(generated(), "payload must be a JSON object".into()));
    };

    // The request id first, so every later error reaches the requester.
    let request_id = match obj.remove("request_id") {
        None | Some(Value::Null) => generated(),
        Some(Value::String(s)) => {
            if !valid_request_id(&s) {
                return Err(fail(
                    generated(),
                    "request_id must be 1-128 characters of A-Z a-z 0-9 _ . : -".into(),
                ));
            }
            s
        }
        Some(other) => {
            return Err(fail(
                generated(),
                format!("request_id must be a string, got {}", json_type(&other)),
            ))
        }
    };
    let fail = |error: String| fail(request_id.clone(), error);
    match obj.remove("v") {
        None => {}
        Some(Value::Number(n)) if n.as_u64() == Some(COMMAND_VERSION as u64) => {}
        Some(other) => {
            return Err(fail(format!(
                "unsupported payload version {other} (this device speaks v{COMMAND_VERSION})"
            )))
        }
    }
    let args = Value::Object(obj);
    let command = match cmd_name {
        "ground" => {
            // serde's type errors do not say which field; a controller needs to know
            if let Some(v) = args.get("instruction").filter(|v| !v.is_string()) {
                return Err(fail(format!(
                    "instruction must be a string, got {}",
                    json_type(v)
                )));
            }
            let a: GroundArgs = args_of(args).map_err(&fail)?;
            Command::Ground {
                instruction: text_field("instruction", a.instruction, true).map_err(&fail)?,
                camera: camera_field(a.camera).map_err(&fail)?,
            }
        }
        "snapshot" => {
            let a: CameraArgs = args_of(args).map_err(&fail)?;
            Command::Snapshot {
                camera: camera_field(a.camera).map_err(&fail)?,
            }
        }
        "describe" => {
            let a: DescribeArgs = args_of(args).map_err(&fail)?;
            Command::Describe {
                camera: camera_field(a.camera).map_err(&fail)?,
                prompt: a
                    .prompt
                    .map(|p| text_field("prompt", p, true))
                    .transpose()
                    .map_err(&fail)?,
            }
        }
        "rules/enable" | "rules/disable" => {
            let a: NameArgs = args_of(args).map_err(&fail)?;
            let name = text_field("name", a.name, true).map_err(&fail)?;
            if name.len() > 128 {
                return Err(fail("name is longer than 128 bytes".into()));
            }
            if cmd_name == "rules/enable" {
                Command::RulesEnable { name }
            } else {
                Command::RulesDisable { name }
            }
        }
        "ping" => {
            let _: NoArgs = args_of(args).map_err(&fail)?;
            Command::Ping
        }
        "search" => super::recall_args::search(args).map_err(&fail)?,
        "summary" => super::recall_args::summary(args).map_err(&fail)?,
        other => {
            return Err(fail(format!(
                "unknown command {other:?} (known: {})",
                COMMAND_NAMES.join(", ")
            )))
        }
    };
    Ok(CommandRequest {
        request_id,
        command,
    })
}

/// `rules/<rule>/set` with a plain `ON`/`OFF` payload (a Home Assistant switch; no JSON, so no
/// request id: the reply goes to a generated one).
fn rule_switch(
    rule: &str,
    payload: &[u8],
    request_id: String,
) -> std::result::Result<CommandRequest, CommandError> {
    let name = rule.to_string();
    let command = match std::str::from_utf8(payload).map(str::trim) {
        Ok(p) if p.eq_ignore_ascii_case("on") => Command::RulesEnable { name },
        Ok(p) if p.eq_ignore_ascii_case("off") => Command::RulesDisable { name },
        _ => {
            return Err(CommandError {
                request_id,
                command: Some("rules/set".into()),
                error: format!("rules/{rule}/set takes ON or OFF"),
            })
        }
    };
    Ok(CommandRequest {
        request_id,
        command,
    })
}

fn args_of<T: DeserializeOwned>(v: Value) -> std::result::Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("bad arguments: {e}"))
}

fn text_field(field: &str, s: String, required: bool) -> std::result::Result<String, String> {
    if required && s.trim().is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if s.len() > MAX_TEXT {
        return Err(format!("{field} is longer than {MAX_TEXT} bytes"));
    }
    Ok(s)
}

fn camera_field(c: Option<String>) -> std::result::Result<Option<String>, String> {
    match c {
        Some(c) => validate_segment("camera", &c)
            .map(|_| Some(c))
            .map_err(|e| e.to_string().trim_start_matches("mqtt: ").to_string()),
        None => Ok(None),
    }
}

/// The top-level string field of a JSON object payload that holds the invalid UTF-8 bytes, if the
/// payload is otherwise a JSON object.
fn field_with_bad_utf8(payload: &[u8]) -> Option<String> {
    let lossy = String::from_utf8_lossy(&payload[..payload.len().min(MAX_COMMAND_BYTES)]);
    let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(&lossy) else {
        return None;
    };
    obj.into_iter()
        .find(|(_, v)| v.as_str().is_some_and(|s| s.contains('\u{FFFD}')))
        .map(|(k, _)| k)
}

/// Finds `"request_id": "<valid id>"` in text that is not valid JSON as a whole.
fn salvage_request_id(text: &str) -> Option<String> {
    let key = "\"request_id\"";
    let mut rest = text;
    while let Some(i) = rest.find(key) {
        rest = &rest[i + key.len()..];
        let Some(after_colon) = rest.trim_start().strip_prefix(':') else {
            continue;
        };
        let Some(value) = after_colon.trim_start().strip_prefix('"') else {
            continue;
        };
        if let Some(end) = value.find('"') {
            if valid_request_id(&value[..end]) {
                return Some(value[..end].to_string());
            }
        }
    }
    None
}

/// An MQTT v5 response topic from a peer. It may not point into this device's own topics (other
/// than its replies): a request must not make the device publish on its alerts or status.
fn check_response_topic(topics: &Topics, t: &str) -> std::result::Result<(), String> {
    if t.is_empty() || t.len() > 1024 || !rumqttc::valid_topic(t) {
        return Err("response topic must be 1-1024 bytes without wildcards".into());
    }
    let own = format!("{}/", topics.prefix());
    let replies = format!("{}/reply/", topics.prefix());
    if t.starts_with(&own) && !t.starts_with(&replies) {
        return Err(format!(
            "response topic may not be under {own} (except {replies})"
        ));
    }
    Ok(())
}

fn valid_request_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Sends exactly one reply. Dropping it unanswered (a handler that forgot, or panicked) still
/// replies, with an error, so a requester never waits for nothing.
pub struct Responder {
    publisher: PublisherHandle,
    request_id: String,
    command: Option<String>,
    /// MQTT v5: the requester's response topic and correlation data; `None`: `reply/<id>`.
    response: Option<(String, Option<Vec<u8>>)>,
    answered: bool,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("request_id", &self.request_id)
            .finish()
    }
}

impl Responder {
    pub fn new(
        publisher: PublisherHandle,
        request_id: String,
        command: Option<String>,
    ) -> Responder {
        Responder {
            publisher,
            request_id,
            command,
            response: None,
            answered: false,
        }
    }

    /// Answer on an MQTT v5 response topic (with its correlation data) instead of `reply/<id>`.
    pub fn with_response_topic(mut self, topic: String, correlation: Option<Vec<u8>>) -> Responder {
        self.response = Some((topic, correlation));
        self
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    pub fn ok(mut self, result: Value) {
        self.send(true, Some(result), None);
    }

    pub fn err(mut self, error: impl Into<String>) {
        self.send(false, None, Some(error.into()));
    }

    fn send(&mut self, ok: bool, result: Option<Value>, error: Option<String>) {
        self.answered = true;
        let body = ReplyBody {
            request_id: self.request_id.clone(),
            command: self.command.clone(),
            ok,
            result,
            error,
        };
        let sent = match &self.response {
            Some((topic, corr)) => self.publisher.reply_to(topic, corr.clone(), body),
            None => self.publisher.reply(body),
        };
        if let Err(e) = sent {
            log::warn!("mqtt: reply to {}: {e}", self.request_id);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.answered {
            self.send(
                false,
                None,
                Some("the device dropped this command without answering".into()),
            );
        }
    }
}

/// What the runtime implements to answer commands (`ping` never reaches it). A handler may
/// answer at once or keep the [`Responder`] and answer later from another thread — the
/// grounding and describing stages take seconds.
pub trait CommandHandler: Send + 'static {
    fn handle(&mut self, request: CommandRequest, responder: Responder);
}

impl<F> CommandHandler for F
where
    F: FnMut(CommandRequest, Responder) + Send + 'static,
{
    fn handle(&mut self, request: CommandRequest, responder: Responder) {
        self(request, responder)
    }
}

/// Answers every command with "not supported": for a device whose pipeline takes no commands.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unsupported;

impl CommandHandler for Unsupported {
    fn handle(&mut self, request: CommandRequest, responder: Responder) {
        responder.err(format!(
            "command {:?} is not available on this device",
            request.command.name()
        ));
    }
}

/// A command waiting for the pipeline, with the means to answer it.
#[derive(Debug)]
pub struct PendingCommand {
    pub request: CommandRequest,
    pub responder: Responder,
}

/// Forwards commands to a bounded channel the pipeline reads; when the pipeline is behind the
/// command is answered "busy" rather than queued without bound.
#[derive(Debug, Clone)]
pub struct ChannelHandler {
    tx: Sender<PendingCommand>,
}

impl ChannelHandler {
    pub fn new(capacity: usize) -> (ChannelHandler, Receiver<PendingCommand>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
        (ChannelHandler { tx }, rx)
    }
}

impl CommandHandler for ChannelHandler {
    fn handle(&mut self, request: CommandRequest, responder: Responder) {
        match self.tx.try_send(PendingCommand { request, responder }) {
            Ok(()) => {}
            Err(TrySendError::Full(p)) => p
                .responder
                .err("busy: too many commands waiting, try again"),
            Err(TrySendError::Disconnected(p)) => {
                p.responder.err("the pipeline is not taking commands")
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct CommandStats {
    pub received: AtomicU64,
    pub rejected: AtomicU64,
    pub handled: AtomicU64,
    /// Retained command messages refused (each distinct one answered once).
    pub retained: AtomicU64,
    /// Answered "busy": the command queue was full.
    pub busy: AtomicU64,
    /// State-changing commands answered "duplicate" (their `request_id` was seen recently).
    pub duplicates: AtomicU64,
}

/// Reads the publisher's command messages on its own thread, answers `ping`, rejects bad
/// payloads and hands the rest to a [`CommandHandler`]. Stops when the publisher does.
pub struct CommandServer {
    thread: Option<JoinHandle<()>>,
    stats: Arc<CommandStats>,
}

impl CommandServer {
    pub fn start(publisher: &Publisher, handler: impl CommandHandler) -> Result<CommandServer> {
        CommandServer::start_with(
            publisher.incoming(),
            publisher.handle(),
            handler,
            MAX_COMMAND_BYTES,
        )
    }

    pub fn start_with(
        incoming: Receiver<IncomingMessage>,
        publisher: PublisherHandle,
        mut handler: impl CommandHandler,
        max_bytes: usize,
    ) -> Result<CommandServer> {
        let stats = Arc::new(CommandStats::default());
        let st = stats.clone();
        let started = Instant::now();
        let thread = std::thread::Builder::new()
            .name("mqtt-commands".into())
            .spawn(move || {
                let ids = IdGen::new();
                let topics = publisher.topics().clone();
                let mut retained_seen = Recent::new(RECENT_RETAINED);
                let mut request_ids = Recent::new(RECENT_REQUEST_IDS);
                for msg in incoming.iter() {
                    st.received.fetch_add(1, Ordering::Relaxed);
                    let response = match &msg.response_topic {
                        None => Ok(None),
                        Some(t) => check_response_topic(&topics, t)
                            .map(|()| Some((t.clone(), msg.correlation.clone()))),
                    };
                    let responder = |id: String, cmd: Option<String>| {
                        let r = Responder::new(publisher.clone(), id, cmd);
                        match &response {
                            Ok(Some((t, c))) => r.with_response_topic(t.clone(), c.clone()),
                            _ => r,
                        }
                    };
                    let parsed = parse_command(&topics, &msg.topic, &msg.payload, max_bytes, &ids)
                        .and_then(|req| match &response {
                            Err(why) => Err(CommandError {
                                request_id: req.request_id,
                                command: Some(req.command.name().to_string()),
                                error: why.clone(),
                            }),
                            Ok(_) => Ok(req),
                        });
                    // Neither a retained nor a "busy" command runs; both need only the request id
                    // (and command name) the parse finds, from the whole payload or its start.
                    if msg.retain || msg.busy {
                        let (id, cmd) = match parsed {
                            Ok(req) => (req.request_id, Some(req.command.name().to_string())),
                            Err(e) => (e.request_id, e.command),
                        };
                        if msg.busy {
                            st.busy.fetch_add(1, Ordering::Relaxed);
                            responder(id, cmd).err(format!(
                                "busy: more commands arrived than the device queues ({} waiting, {} KiB); not run, try again",
                                crate::mqtt::publisher::INCOMING_CAP,
                                crate::mqtt::publisher::INCOMING_MAX_BYTES >> 10
                            ));
                        } else if retained_seen.insert(fingerprint(&msg)) {
                            st.retained.fetch_add(1, Ordering::Relaxed);
                            log::warn!(
                                "mqtt: refused a retained command on {} (commands must be published without retain; clear it with an empty retained publish on that topic)",
                                msg.topic
                            );
                            responder(id, cmd).err(format!(
                                "retained command refused, not run: publish commands without the retain flag (clear this one with an empty retained message on {})",
                                msg.topic
                            ));
                        }
                        continue;
                    }
                    let parsed = parsed.and_then(|req| {
                        if req.command.changes_state() && !request_ids.insert(req.request_id.clone())
                        {
                            st.duplicates.fetch_add(1, Ordering::Relaxed);
                            return Err(CommandError {
                                error: format!(
                                    "duplicate request_id {:?}: this command was already handled, not run again",
                                    req.request_id
                                ),
                                request_id: req.request_id,
                                command: Some(req.command.name().to_string()),
                            });
                        }
                        Ok(req)
                    });
                    match parsed {
                        Err(e) => {
                            st.rejected.fetch_add(1, Ordering::Relaxed);
                            log::debug!("mqtt: rejected command on {}: {}", msg.topic, e.error);
                            responder(e.request_id, e.command).err(e.error);
                        }
                        Ok(req) => {
                            st.handled.fetch_add(1, Ordering::Relaxed);
                            let responder = responder(
                                req.request_id.clone(),
                                Some(req.command.name().to_string()),
                            );
                            if req.command == Command::Ping {
                                responder.ok(serde_json::json!({
                                    "pong": true,
                                    "device": topics.device(),
                                    "version": env!("CARGO_PKG_VERSION"),
                                    "uptime_s": started.elapsed().as_secs(),
                                }));
                                continue;
                            }
                            // A handler bug must not take the command server (or the device)
                            // down; the responder, dropped while unwinding, still replies.
                            let r =
                                catch_unwind(AssertUnwindSafe(|| handler.handle(req, responder)));
                            if r.is_err() {
                                log::error!("mqtt: command handler panicked on {}", msg.topic);
                            }
                        }
                    }
                }
            })
            .map_err(|e| MqttError::start("the command thread", e))?;
        Ok(CommandServer {
            thread: Some(thread),
            stats,
        })
    }

    pub fn stats(&self) -> &CommandStats {
        &self.stats
    }

    /// Waits for the server to stop (it stops once its publisher has shut down).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(topic: &str, payload: &[u8]) -> std::result::Result<CommandRequest, CommandError> {
        let t = Topics::new("dev").unwrap();
        parse_command(&t, topic, payload, MAX_COMMAND_BYTES, &IdGen::new())
    }

    #[test]
    fn good_commands_parse() {
        let r = parse(
            "lookout/dev/cmd/ground",
            br#"{"v":1,"request_id":"r-1","instruction":"the red cup","camera":"front"}"#,
        )
        .unwrap();
        assert_eq!(r.request_id, "r-1");
        assert_eq!(
            r.command,
            Command::Ground {
                instruction: "the red cup".into(),
                camera: Some("front".into())
            }
        );
        let r = parse("lookout/dev/cmd/ping", b"").unwrap();
        assert_eq!(r.command, Command::Ping);
        assert!(r.request_id.starts_with("gen-"));
        let r = parse("lookout/dev/cmd/rules/disable", br#"{"name":"driveway"}"#).unwrap();
        assert_eq!(
            r.command,
            Command::RulesDisable {
                name: "driveway".into()
            }
        );
        let r = parse("lookout/dev/rules/path/set", b"OFF").unwrap();
        assert_eq!(
            r.command,
            Command::RulesDisable {
                name: "path".into()
            }
        );
        let r = parse("lookout/dev/rules/path/set", b" on\n").unwrap();
        assert!(matches!(r.command, Command::RulesEnable { .. }));
        assert!(parse("lookout/dev/rules/path/set", b"maybe").is_err());
        let r = parse("lookout/dev/cmd/describe", br#"{"prompt":"gate open?"}"#).unwrap();
        assert_eq!(
            r.command,
            Command::Describe {
                camera: None,
                prompt: Some("gate open?".into())
            }
        );
        assert_eq!(
            parse("lookout/dev/cmd/snapshot", b"{}").unwrap().command,
            Command::Snapshot { camera: None }
        );
    }

    #[test]
    fn bad_payloads_name_the_problem() {
        let cases: &[(&str, &[u8], &str)] = &[
            ("ping", b"{", "invalid JSON"),
            ("ping", b"[1,2]", "JSON object"),
            ("ping", b"\xff\xfe", "UTF-8"),
            (
                "ground",
                br#"{"request_id":"a"}"#,
                "missing field `instruction`",
            ),
            (
                "ground",
                br#"{"request_id":"a","instruction":5}"#,
                "instruction must be a string, got a number",
            ),
            (
                "ground",
                br#"{"request_id":"a","instruction":["cup"]}"#,
                "instruction must be a string, got an array",
            ),
            (
                "ground",
                b"{\"request_id\":\"a\",\"instruction\":\"the \xff cup\"}",
                "instruction is not valid UTF-8",
            ),
            (
                "ground",
                br#"{"request_id":"a","instruction":"  "}"#,
                "must not be empty",
            ),
            (
                "ground",
                br#"{"instruction":"x","camra":"f"}"#,
                "unknown field `camra`",
            ),
            ("ground", br#"{"instruction":"x","camera":"a/b"}"#, "camera"),
            ("explode", br#"{}"#, "unknown command \"explode\""),
            ("ping", br#"{"v":2}"#, "unsupported payload version"),
            ("ping", br#"{"request_id":"a/b"}"#, "request_id must be"),
            (
                "ping",
                br#"{"request_id":7}"#,
                "request_id must be a string",
            ),
            ("rules/enable", br#"{"name":null}"#, "invalid type"),
        ];
        for (cmd, payload, want) in cases {
            let e = parse(&format!("lookout/dev/cmd/{cmd}"), payload).unwrap_err();
            assert!(
                e.error.contains(want),
                "{cmd} {:?}: {}",
                String::from_utf8_lossy(payload),
                e.error
            );
        }
        let e = parse(
            "lookout/dev/cmd/ground",
            br#"{"request_id":"abc","instruction":7}"#,
        )
        .unwrap_err();
        assert_eq!(e.request_id, "abc");
        assert_eq!(e.command.as_deref(), Some("ground"));
        let big = vec![b' '; MAX_COMMAND_BYTES + 1];
        assert!(parse("lookout/dev/cmd/ping", &big)
            .unwrap_err()
            .error
            .contains("exceeds"));
    }

    #[test]
    fn request_ids_are_salvaged_from_broken_payloads() {
        let e = parse("lookout/dev/cmd/ping", br#"{"request_id" : "r-9", "x": }"#).unwrap_err();
        assert_eq!(e.request_id, "r-9");
        let e = parse("lookout/dev/cmd/ping", br#"{"request_id":"bad/id", "#).unwrap_err();
        assert!(e.request_id.starts_with("gen-"));
        let mut big = br#"{"request_id":"big1","instruction":""#.to_vec();
        big.resize(MAX_COMMAND_BYTES + 10, b'x');
        assert_eq!(
            parse("lookout/dev/cmd/ground", &big)
                .unwrap_err()
                .request_id,
            "big1"
        );
        assert_eq!(salvage_request_id(r#""request_id""#), None);
        assert_eq!(
            salvage_request_id(r#""request_id":7,"request_id":"ok""#).as_deref(),
            Some("ok")
        );
    }

    #[test]
    fn response_topics_stay_out_of_the_device_namespace() {
        let t = Topics::new("dev").unwrap();
        assert!(check_response_topic(&t, "robots/r1/answers").is_ok());
        assert!(check_response_topic(&t, "lookout/dev/reply/x").is_ok());
        assert!(check_response_topic(&t, "lookout/dev/alerts").is_err());
        assert!(check_response_topic(&t, "a/+/b").is_err());
        assert!(check_response_topic(&t, "").is_err());
    }

    #[test]
    fn recent_sets_are_bounded_and_forget_the_oldest() {
        let mut r = Recent::new(2);
        assert!(r.insert("a"));
        assert!(!r.insert("a"));
        assert!(r.insert("b"));
        assert!(r.insert("c"));
        assert_eq!(r.order.len(), 2);
        assert!(r.insert("a"), "the oldest was forgotten");
        assert!(!r.insert("c"));
        assert!(Command::RulesDisable { name: "x".into() }.changes_state());
        assert!(!Command::Ping.changes_state());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = format!("{{\"x\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(parse("lookout/dev/cmd/ping", deep.as_bytes()).is_err());
    }
}
