//! `lookout watch`: follow a device (or all devices) from a terminal.
//!
//! Prints alerts, events, scene descriptions and status changes as they arrive, one per line,
//! either readable or as JSON lines. QoS 1 re-sends are shown once (by payload `id`).

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};
use serde_json::Value;

use super::error::{MqttError, Result};
use super::publisher::{tls_config, BrokerUrl, MqttConfig};
use super::topics::{validate_prefix, validate_segment, MessageClass, DEFAULT_ROOT};

#[derive(Debug, Clone, PartialEq)]
pub struct WatchOptions {
    pub broker: String,
    /// One device, or every device (`+`) when `None`.
    pub device: Option<String>,
    pub json: bool,
    /// Also show `online`/`offline` status messages.
    pub status: bool,
    pub ca_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Stop after this many messages (tests, scripts).
    pub max_messages: Option<usize>,
    /// Stop when nothing arrived for this long.
    pub idle_timeout: Option<Duration>,
    /// The devices' `[mqtt] topic_prefix` (default `lookout`).
    pub topic_prefix: String,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            broker: "mqtt://127.0.0.1:1883".into(),
            device: None,
            json: false,
            status: true,
            ca_file: None,
            username: None,
            password: None,
            max_messages: None,
            idle_timeout: None,
            topic_prefix: DEFAULT_ROOT.into(),
        }
    }
}

/// Payloads larger than this are not for reading on a terminal; the connection refuses them.
const MAX_PAYLOAD: usize = 1 << 20;
/// Ids remembered for de-duplication.
const SEEN: usize = 4096;

/// Subscribes and prints until `max_messages`, `idle_timeout`, or a write error (a closed pipe
/// ends the watch quietly). Returns how many messages were printed. A broker that cannot be
/// reached at the start is an error; once connected, dropped connections are retried.
pub fn watch(opts: &WatchOptions, out: &mut impl Write) -> Result<usize> {
    let url = BrokerUrl::parse(&opts.broker)?;
    validate_prefix("topic_prefix", &opts.topic_prefix)?;
    let device = match &opts.device {
        Some(d) => {
            validate_segment("device id", d)?;
            d.clone()
        }
        None => "+".to_string(),
    };
    let id = format!(
        "lookout-watch-{}-{}",
        std::process::id(),
        super::topics::now_ms() % 100_000
    );
    let mut o = MqttOptions::new(id, url.host.clone(), url.port);
    o.set_keep_alive(Duration::from_secs(30));
    o.set_clean_session(true);
    o.set_max_packet_size(MAX_PAYLOAD, 64 << 10);
    if let Some(u) = &opts.username {
        o.set_credentials(u.clone(), opts.password.clone().unwrap_or_default());
    }
    if url.tls {
        let cfg = MqttConfig {
            broker: opts.broker.clone(),
            ca_file: opts.ca_file.clone(),
            ..MqttConfig::default()
        };
        let tls = tls_config(&cfg)?;
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            std::sync::Arc::new(tls),
        )));
    }
    let (client, mut conn) = Client::new(o, 16);
    let mut filters = vec!["alerts", "events", "scene"];
    if opts.status {
        filters.push("status");
    }
    let filters: Vec<String> = filters
        .into_iter()
        .map(|f| format!("{}/{device}/{f}", opts.topic_prefix))
        .collect();

    // rumqttc's event loop runs uninterrupted on its own thread: waking it on a timer instead
    // would cancel it mid-operation, possibly halfway through a write.
    let (tx, rx) = crossbeam_channel::bounded::<Incoming>(64);
    let stop = Arc::new(AtomicBool::new(false));
    let (stop2, sub) = (stop.clone(), client.clone());
    std::thread::Builder::new()
        .name("mqtt-watch".into())
        .spawn(move || {
            for ev in conn.iter() {
                if stop2.load(Ordering::Relaxed) {
                    return;
                }
                let msg = match ev {
                    // A clean session forgets subscriptions: renew them on every connection.
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        for f in &filters {
                            let _ = sub.try_subscribe(f.clone(), QoS::AtLeastOnce);
                        }
                        Incoming::Connected
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        Incoming::Message(p.topic, p.payload.to_vec())
                    }
                    Ok(_) => continue,
                    Err(e) => Incoming::Lost(e.to_string()),
                };
                let lost = matches!(msg, Incoming::Lost(_));
                if tx.send(msg).is_err() {
                    return;
                }
                if lost {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        })
        .map_err(|e| MqttError::start("the watch thread", e))?;
    let finish = |printed: usize| {
        stop.store(true, Ordering::Relaxed);
        let _ = client.try_disconnect();
        printed
    };

    let mut printed = 0usize;
    let mut ever_connected = false;
    let mut seen: HashSet<String> = HashSet::new();
    let mut seen_order: VecDeque<String> = VecDeque::new();
    let mut last = Instant::now();
    loop {
        if opts.max_messages.is_some_and(|m| printed >= m)
            || opts.idle_timeout.is_some_and(|t| last.elapsed() >= t)
        {
            return Ok(finish(printed));
        }
        let Ok(ev) = rx.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let (topic, payload) = match ev {
            Incoming::Connected => {
                ever_connected = true;
                continue;
            }
            Incoming::Lost(e) if !ever_connected => {
                finish(printed);
                return Err(MqttError::Connection {
                    broker: url.to_string(),
                    reason: format!("watch: cannot connect to {url}: {e}"),
                });
            }
            Incoming::Lost(e) => {
                log::warn!("watch: connection to {url} lost: {e}; reconnecting");
                continue;
            }
            Incoming::Message(t, p) => (t, p),
        };
        last = Instant::now();
        let value: Option<Value> = serde_json::from_slice(&payload).ok();
        if let Some(id) = value
            .as_ref()
            .and_then(|v| v.get("id"))
            .and_then(Value::as_str)
        {
            if !seen.insert(id.to_string()) {
                continue;
            }
            seen_order.push_back(id.to_string());
            if seen_order.len() > SEEN {
                if let Some(old) = seen_order.pop_front() {
                    seen.remove(&old);
                }
            }
        }
        let line = if opts.json {
            json_line(&topic, value, payload.len())
        } else {
            readable_line(&topic, value.as_ref(), payload.len())
        };
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            return Ok(finish(printed));
        }
        printed += 1;
    }
}

enum Incoming {
    Connected,
    Message(String, Vec<u8>),
    Lost(String),
}

fn class_of(topic: &str) -> Option<MessageClass> {
    Some(match topic.rsplit('/').next()? {
        "alerts" => MessageClass::Alert,
        "events" => MessageClass::Event,
        "scene" => MessageClass::Scene,
        _ => return None,
    })
}

fn json_line(topic: &str, value: Option<Value>, len: usize) -> String {
    let kind = class_of(topic).map(|c| c.name()).unwrap_or("status");
    let v = serde_json::json!({
        "topic": topic,
        "kind": kind,
        "payload": value.unwrap_or_else(|| serde_json::json!({"non_json_bytes": len})),
    });
    v.to_string()
}

fn readable_line(topic: &str, v: Option<&Value>, len: usize) -> String {
    let Some(v) = v else {
        return format!("{topic}: <{len} bytes, not JSON>");
    };
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
    // `lookout run` publishes the pipeline's records (rule/type/text); other publishers may use
    // the short body names (alert/event/description).
    let first = |keys: &[&str]| {
        keys.iter()
            .map(|k| s(k))
            .find(|x| !x.is_empty())
            .unwrap_or("")
            .to_string()
    };
    // Payload v2 stamps `ts` in seconds (f64), v1 in milliseconds.
    let ts = match (v.get("v").and_then(Value::as_u64), v.get("ts")) {
        (Some(1), Some(t)) => t.as_u64(),
        (_, Some(t)) => t.as_f64().map(|s| (s * 1000.0).round() as u64),
        _ => None,
    }
    .map(format_ts)
    .unwrap_or_default();
    let device = match s("device") {
        "" => topic.split('/').nth(1).unwrap_or("?"),
        d => d,
    };
    let camera = match s("camera") {
        "" => String::new(),
        c => format!(" [{c}]"),
    };
    let body = match class_of(topic) {
        Some(MessageClass::Alert) => {
            let sev = match s("severity") {
                "" => String::new(),
                x => format!(" ({x})"),
            };
            // With `verify_mode = "update"` the verdict follows the alert as an update.
            let verdict = match v.pointer("/verification/status").and_then(Value::as_str) {
                Some(st) if s("type") == "update" => format!(" → {st}"),
                _ => String::new(),
            };
            format!(
                "ALERT  {}{sev}: {}{camera}{verdict}",
                first(&["rule", "alert"]),
                s("message")
            )
        }
        Some(MessageClass::Event) => {
            let mut parts = vec![first(&["type", "event"])];
            if !s("label").is_empty() {
                parts.push(s("label").to_string());
            }
            if let Some(t) = v.get("track_id").and_then(Value::as_u64) {
                parts.push(format!("#{t}"));
            }
            if !s("zone").is_empty() {
                parts.push(format!("zone={}", s("zone")));
            }
            let zones: Vec<&str> = v
                .pointer("/after/current_zones")
                .and_then(Value::as_array)
                .map(|z| z.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if !zones.is_empty() {
                parts.push(format!("in {}", zones.join(",")));
            }
            if let Some(n) = v.get("count").and_then(Value::as_u64) {
                parts.push(format!("count={n}"));
            }
            if !s("message").is_empty() {
                parts.push(format!("— {}", s("message")));
            }
            format!("EVENT  {}{camera}", parts.join(" "))
        }
        Some(MessageClass::Scene) => format!("SCENE {}{camera}", first(&["text", "description"])),
        _ => {
            let reason = match s("reason") {
                "" => String::new(),
                r => format!(", {r}"),
            };
            format!(
                "STATUS {} (v{}, {}{reason})",
                s("state"),
                s("version"),
                s("board")
            )
        }
    };
    format!("{ts} {device} {body}")
}

/// `YYYY-MM-DD HH:MM:SS.mmmZ` from Unix milliseconds, without a date crate.
pub fn format_ts(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_broker_is_an_error() {
        let opts = WatchOptions {
            // Nothing listens on port 1 of loopback.
            broker: "mqtt://127.0.0.1:1".into(),
            ..Default::default()
        };
        let err = watch(&opts, &mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("cannot connect"), "{err}");
    }

    #[test]
    fn timestamps() {
        assert_eq!(format_ts(0), "1970-01-01 00:00:00.000Z");
        assert_eq!(format_ts(951_782_400_123), "2000-02-29 00:00:00.123Z");
        assert_eq!(format_ts(1_767_225_599_999), "2025-12-31 23:59:59.999Z");
    }

    #[test]
    fn readable_lines() {
        let v = serde_json::json!({"v":1,"id":"x","device":"porch","ts":0,
            "alert":"driveway","message":"person in driveway","camera":"front","severity":"high"});
        assert_eq!(
            readable_line("lookout/porch/alerts", Some(&v), 0),
            "1970-01-01 00:00:00.000Z porch ALERT  driveway (high): person in driveway [front]"
        );
        let v = serde_json::json!({"ts":0,"device":"porch","event":"enter","label":"person","track_id":3,"zone":"gate"});
        assert_eq!(
            readable_line("lookout/porch/events", Some(&v), 0),
            "1970-01-01 00:00:00.000Z porch EVENT  enter person #3 zone=gate"
        );
        assert!(readable_line("lookout/porch/scene", None, 12).contains("12 bytes"));
        let j: Value = serde_json::from_str(&json_line(
            "lookout/p/scene",
            Some(serde_json::json!({"a":1})),
            7,
        ))
        .unwrap();
        assert_eq!(j["kind"], "scene");
        assert_eq!(j["payload"]["a"], 1);
    }
}
