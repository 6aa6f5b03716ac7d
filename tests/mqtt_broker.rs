//! MQTT against a real mosquitto (and the embedded rumqttd): schema, retained status, last will,
//! QoS 1, spool persistence, broker restarts, hostile command payloads, TLS.
//!
//! Every test starts its own broker on a free loopback port; without the `mosquitto` binary the
//! mosquitto tests print SKIP and pass.

#[path = "support/mosquitto.rs"]
mod mosquitto;
#[path = "support/proxy.rs"]
mod proxy;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use lookout::mqtt::commands::{ChannelHandler, CommandServer, MAX_COMMAND_BYTES};
use lookout::mqtt::publisher::Protocol;
use lookout::mqtt::{
    probe, AlertBody, DetectionsBody, EmbeddedBroker, EmbeddedBrokerConfig, EventBody,
    MessageClass, MqttConfig, Publisher, SceneBody, Spool, SpoolLimits, WatchOptions,
};
use mosquitto::Mosquitto;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

/// Long enough for any message on loopback, even on a loaded 2-core CI machine.
const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
struct Msg {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
}

impl Msg {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "{}: payload is not JSON ({e}): {:?}",
                self.topic,
                String::from_utf8_lossy(&self.payload)
            )
        })
    }
}

/// A test subscriber on its own thread; reconnects by itself when the broker goes away.
struct Sub {
    rx: Receiver<Msg>,
    client: Client,
    stop: Arc<AtomicBool>,
}

impl Sub {
    fn new(port: u16, id: &str, filters: &[&str], clean: bool) -> Sub {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(2));
        o.set_clean_session(clean);
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut conn) = Client::new(o, 64);
        let (tx, rx) = unbounded();
        let (subacked_tx, subacked) = unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let filters: Vec<String> = filters.iter().map(|s| s.to_string()).collect();
        let filters_waited = filters.clone();
        let c2 = client.clone();
        std::thread::spawn(move || {
            for ev in conn.iter() {
                if stop2.load(Ordering::Relaxed) {
                    return;
                }
                match ev {
                    Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                        // A persistent session keeps the subscription; a clean one needs it again.
                        if !ack.session_present {
                            for f in &filters {
                                let _ = c2.try_subscribe(f.clone(), QoS::AtLeastOnce);
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = subacked_tx.send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let m = Msg {
                            topic: p.topic.clone(),
                            payload: p.payload.to_vec(),
                            retain: p.retain,
                        };
                        if tx.send(m).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        // Every filter acknowledged: messages published from now on reach this subscriber.
        for f in &filters_waited {
            subacked
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("no SUBACK for {f} within {WAIT:?}"));
        }
        Sub { rx, client, stop }
    }

    fn recv(&self, what: &str) -> Msg {
        self.rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no message for {what} within {WAIT:?}"))
    }

    /// The next message on `topic`, skipping others.
    fn recv_on(&self, topic: &str) -> Msg {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self
                .rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no message on {topic} within {WAIT:?}"));
            if m.topic == topic {
                return m;
            }
        }
    }

    fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload.into())
            .expect("test publish");
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.client.try_disconnect();
    }
}

fn config(url: &str, device: &str, spool: &Path) -> MqttConfig {
    MqttConfig {
        broker: url.to_string(),
        device: device.to_string(),
        spool_path: spool.to_path_buf(),
        keep_alive_s: 2,
        reconnect_min_ms: 100,
        reconnect_max_ms: 1000,
        board: "test-board".into(),
        ..MqttConfig::default()
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn check_envelope(v: &Value, device: &str) {
    assert_eq!(v["v"], 1, "{v}");
    assert_eq!(v["device"], device, "{v}");
    assert!(v["id"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    assert!(
        v["ts"].as_u64().is_some_and(|t| t > 1_600_000_000_000),
        "{v}"
    );
}

#[test]
fn topics_payloads_and_retained_status() {
    require_mosquitto!();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let sub = Sub::new(broker.port, "sub-schema", &["lookout/cam1/#"], true);
    let p = Publisher::start(&config(&broker.url(), "cam1", &dir.path().join("s.redb"))).unwrap();

    let status = sub.recv_on("lookout/cam1/status").json();
    check_envelope(&status, "cam1");
    assert_eq!(status["state"], "online");
    assert_eq!(status["board"], "test-board");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));

    let alert_id = p
        .alert(AlertBody {
            alert: "driveway".into(),
            message: "person in the driveway".into(),
            camera: Some("front".into()),
            track_id: Some(7),
            label: Some("person".into()),
            score: Some(0.9),
            ..Default::default()
        })
        .unwrap();
    p.event(EventBody {
        event: "enter".into(),
        zone: Some("gate".into()),
        ..Default::default()
    })
    .unwrap();
    p.scene(SceneBody {
        description: "A person walks a dog.".into(),
        camera: Some("front".into()),
        model: None,
    })
    .unwrap();
    p.detections(DetectionsBody {
        width: 640,
        height: 480,
        ..Default::default()
    })
    .unwrap();
    let jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3, 0xFF, 0xD9];
    p.snapshot("front", jpeg.clone()).unwrap();
    p.publish_stats(serde_json::json!({"fps": 12.5})).unwrap();
    assert!(p.flush(WAIT), "spool did not drain: {:?}", p.stats());

    let a = sub.recv_on("lookout/cam1/alerts").json();
    check_envelope(&a, "cam1");
    assert_eq!(a["id"], alert_id);
    assert_eq!(a["alert"], "driveway");
    assert_eq!(a["track_id"], 7);
    let e = sub.recv_on("lookout/cam1/events").json();
    assert_eq!(
        (e["event"].as_str(), e["zone"].as_str()),
        (Some("enter"), Some("gate"))
    );
    let s = sub.recv_on("lookout/cam1/scene").json();
    assert_eq!(s["description"], "A person walks a dog.");
    let d = sub.recv_on("lookout/cam1/detections").json();
    assert_eq!(
        (
            d["width"].as_u64(),
            d["detections"].as_array().map(Vec::len)
        ),
        (Some(640), Some(0))
    );
    let snap = sub.recv_on("lookout/cam1/snapshot/front");
    assert_eq!(snap.payload, jpeg);
    let st = sub.recv_on("lookout/cam1/stats").json();
    check_envelope(&st, "cam1");
    assert_eq!(st["pipeline"]["fps"], 12.5);
    assert!(st["mqtt"]["connected"].as_bool().unwrap());

    // A subscriber that arrives later sees the retained status and snapshot at once.
    let late = Sub::new(
        broker.port,
        "sub-late",
        &["lookout/cam1/status", "lookout/cam1/snapshot/+"],
        true,
    );
    let mut got = HashMap::new();
    for _ in 0..2 {
        let m = late.recv("retained messages");
        assert!(m.retain, "{} not retained", m.topic);
        got.insert(m.topic.clone(), m);
    }
    assert_eq!(got["lookout/cam1/status"].json()["state"], "online");
    assert_eq!(got["lookout/cam1/snapshot/front"].payload, jpeg);

    // A clean shutdown replaces the retained status with `offline`, reason `shutdown`.
    p.shutdown(Duration::from_secs(5));
    let off = late.recv_on("lookout/cam1/status").json();
    assert_eq!(
        (off["state"].as_str(), off["reason"].as_str()),
        (Some("offline"), Some("shutdown"))
    );
}

#[test]
fn qos1_delivers_every_message_in_order() {
    require_mosquitto!();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let sub = Sub::new(broker.port, "sub-qos1", &["lookout/q/events"], true);
    let p = Publisher::start(&config(&broker.url(), "q", &dir.path().join("s.redb"))).unwrap();
    const N: u64 = 500;
    for i in 0..N {
        p.event(EventBody {
            event: "count".into(),
            count: Some(i),
            ..Default::default()
        })
        .unwrap();
    }
    assert!(p.flush(WAIT), "{:?}", p.stats());
    let mut counts = Vec::new();
    let mut seen = HashSet::new();
    while counts.len() < N as usize {
        let v = sub.recv_on("lookout/q/events").json();
        if seen.insert(v["id"].as_str().unwrap().to_string()) {
            counts.push(v["count"].as_u64().unwrap());
        }
    }
    assert_eq!(counts, (0..N).collect::<Vec<_>>());
    let st = p.stats();
    assert_eq!(st.acked, N);
    assert_eq!(st.spool_depth, 0);
    println!(
        "qos1: published {N}, received {}, stats {st:?}",
        counts.len()
    );
}

/// Re-invoked as a child process by `last_will_when_the_publisher_is_killed`; does nothing
/// when run normally.
#[test]
#[ignore = "helper: runs only as the child of last_will_when_the_publisher_is_killed"]
fn lwt_child_process() {
    let (Ok(url), Ok(spool)) = (
        std::env::var("LOOKOUT_TEST_LWT_BROKER"),
        std::env::var("LOOKOUT_TEST_LWT_SPOOL"),
    ) else {
        return;
    };
    let p = Publisher::start(&config(&url, "lwt", Path::new(&spool))).unwrap();
    wait_until("child connection", || p.stats().connected);
    println!("CHILD CONNECTED");
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn last_will_when_the_publisher_is_killed() {
    require_mosquitto!();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let sub = Sub::new(broker.port, "sub-lwt", &["lookout/lwt/status"], true);
    // This test binary again, as the child; under emulation through the same runner.
    let runner = std::env::var("LOOKOUT_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    let mut child = match words.next() {
        Some(prog) => {
            let mut c = std::process::Command::new(prog);
            c.args(words).arg(std::env::current_exe().unwrap());
            c
        }
        None => std::process::Command::new(std::env::current_exe().unwrap()),
    };
    let mut child = child
        .args([
            "--exact",
            "lwt_child_process",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("LOOKOUT_TEST_LWT_BROKER", broker.url())
        .env("LOOKOUT_TEST_LWT_SPOOL", dir.path().join("child.redb"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let online = sub.recv_on("lookout/lwt/status").json();
    assert_eq!(online["state"], "online");
    child.kill().unwrap(); // SIGKILL: no goodbye, the broker must speak for it
    child.wait().unwrap();
    let offline = sub.recv_on("lookout/lwt/status");
    let v = offline.json();
    check_envelope(&v, "lwt");
    assert_eq!(
        (v["state"].as_str(), v["reason"].as_str()),
        (Some("offline"), Some("connection lost"))
    );
    // And it is retained for whoever asks later.
    let late = Sub::new(broker.port, "sub-lwt-late", &["lookout/lwt/status"], true);
    let m = late.recv("retained last will");
    assert!(m.retain);
    assert_eq!(m.json()["state"], "offline");
}

#[test]
fn spool_survives_restart_while_the_broker_is_down() {
    require_mosquitto!();
    let port = mosquitto::free_port();
    let mut broker = Mosquitto::configure(port, "");
    let dir = tempfile::tempdir().unwrap();
    let spool_path = dir.path().join("spool.redb");
    let cfg = config(&format!("mqtt://127.0.0.1:{port}"), "persist", &spool_path);
    const N: u64 = 60;
    {
        let p = Publisher::start(&cfg).unwrap();
        for i in 0..N {
            let r = if i % 3 == 0 {
                p.alert(AlertBody {
                    alert: format!("a{i}"),
                    message: format!("{i}"),
                    ..Default::default()
                })
            } else {
                p.event(EventBody {
                    event: format!("e{i}"),
                    count: Some(i),
                    ..Default::default()
                })
            };
            r.unwrap();
        }
        wait_until("messages in the spool", || p.stats().spool_depth == N);
        assert!(!p.stats().connected);
    } // dropped with the broker still down
    {
        let s = Spool::open(&spool_path, SpoolLimits::default()).unwrap();
        assert_eq!(s.len(), N);
        assert_eq!(s.len_of(MessageClass::Alert), N.div_ceil(3));
    }
    broker.restart();
    let sub = Sub::new(
        port,
        "sub-persist",
        &["lookout/persist/alerts", "lookout/persist/events"],
        true,
    );
    let p = Publisher::start(&cfg).unwrap();
    assert!(p.flush(WAIT), "{:?}", p.stats());
    let mut order = Vec::new();
    let mut seen = HashSet::new();
    while order.len() < N as usize {
        let m = sub.recv("re-sent spool");
        let v = m.json();
        if seen.insert(v["id"].as_str().unwrap().to_string()) {
            let n = v["message"]
                .as_str()
                .map(|s| s.parse::<u64>().unwrap())
                .or(v["count"].as_u64())
                .unwrap();
            order.push(n);
        }
    }
    // Everything arrives; per topic in the order published.
    let alerts: Vec<u64> = order.iter().copied().filter(|i| i % 3 == 0).collect();
    let events: Vec<u64> = order.iter().copied().filter(|i| i % 3 != 0).collect();
    assert!(alerts.windows(2).all(|w| w[0] < w[1]), "{alerts:?}");
    assert!(events.windows(2).all(|w| w[0] < w[1]), "{events:?}");
    assert_eq!(alerts.len() + events.len(), N as usize);
    println!(
        "persistence: {N} spooled across a restart, {} delivered",
        order.len()
    );
}

#[test]
fn a_full_spool_drops_low_classes_first_and_keeps_every_alert() {
    require_mosquitto!();
    // The subscriber is in place from the start; the publisher's link stays cut until the end.
    let broker = Mosquitto::start();
    let link = proxy::Proxy::start(broker.port);
    link.cut();
    let sub = Sub::new(broker.port, "sub-full", &["lookout/full/alerts"], true);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(
        &format!("mqtt://127.0.0.1:{}", link.port),
        "full",
        &dir.path().join("s.redb"),
    );
    cfg.spool = SpoolLimits {
        max_messages: 30,
        alert_max_messages: 60,
        ..SpoolLimits::default()
    };
    let p = Publisher::start(&cfg).unwrap();
    let event = |i: u64| EventBody {
        event: "e".into(),
        count: Some(i),
        ..Default::default()
    };
    let detections = || DetectionsBody {
        width: 1,
        height: 1,
        ..Default::default()
    };
    let wait_staged = || wait_until("staging drained", || p.stats().staged == 0);
    for _ in 0..20 {
        p.detections(detections()).unwrap();
    }
    for i in 0..20 {
        p.event(event(i)).unwrap();
    }
    wait_staged();
    // 40 offered to a 30-message spool: the oldest detections made room for the events.
    let st = p.stats();
    assert_eq!(
        (
            st.depth_by_class[&MessageClass::Event],
            st.depth_by_class[&MessageClass::Detections]
        ),
        (20, 10)
    );
    assert_eq!(st.dropped[&MessageClass::Detections], 10);
    for i in 0..50 {
        p.alert(AlertBody {
            alert: "full".into(),
            message: format!("{i}"),
            ..Default::default()
        })
        .unwrap();
    }
    p.detections(detections()).unwrap(); // nothing of lower priority left to evict: refused
    wait_staged();
    let st = p.stats();
    println!(
        "full spool: depth {:?}, dropped {:?}",
        st.depth_by_class, st.dropped
    );
    // Alerts pushed out every detection and event and grew past the normal bound.
    assert_eq!(st.depth_by_class[&MessageClass::Alert], 50);
    assert_eq!(st.depth_by_class[&MessageClass::Event], 0);
    assert_eq!(st.depth_by_class[&MessageClass::Detections], 0);
    assert_eq!(st.dropped[&MessageClass::Event], 20);
    assert_eq!(st.dropped[&MessageClass::Detections], 21);
    assert_eq!(st.dropped[&MessageClass::Alert], 0);

    link.restore();
    assert!(p.flush(WAIT), "{:?}", p.stats());
    let mut got = Vec::new();
    let mut seen = HashSet::new();
    while got.len() < 50 {
        let v = sub.recv_on("lookout/full/alerts").json();
        if seen.insert(v["id"].as_str().unwrap().to_string()) {
            got.push(v["message"].as_str().unwrap().parse::<u32>().unwrap());
        }
    }
    assert_eq!(got, (0..50).collect::<Vec<_>>());
}

#[test]
fn broker_restarts_lose_no_alert() {
    require_mosquitto!();
    let mut broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    // Persistent session, QoS 1: the broker queues for it while it is away.
    let sub = Sub::new(broker.port, "sub-fault", &["lookout/fault/alerts"], false);
    let cfg = config(&broker.url(), "fault", &dir.path().join("s.redb"));
    let p = Arc::new(Publisher::start(&cfg).unwrap());
    wait_until("publisher connected", || p.stats().connected);

    const N: usize = 300;
    let published = Arc::new(Mutex::new(Vec::<String>::new()));
    let producer = {
        let (p, published) = (p.clone(), published.clone());
        std::thread::spawn(move || {
            for i in 0..N {
                let id = p
                    .alert(AlertBody {
                        alert: "fault".into(),
                        message: format!("{i}"),
                        ..Default::default()
                    })
                    .unwrap();
                published.lock().unwrap().push(id);
                std::thread::sleep(Duration::from_millis(15));
            }
        })
    };
    let count = || published.lock().unwrap().len();
    wait_until("first third published", || count() >= N / 3);
    broker.stop(); // short outage
    std::thread::sleep(Duration::from_millis(800));
    broker.restart();
    // Let the publisher find the broker again, so the second outage is a second disconnect.
    wait_until("reconnected", || p.stats().connects >= 2);
    wait_until("two thirds published", || count() >= 2 * N / 3);
    broker.stop(); // longer than the 2 s keep-alive
    std::thread::sleep(Duration::from_secs(5));
    broker.restart();
    producer.join().unwrap();
    let want: HashSet<String> = published.lock().unwrap().iter().cloned().collect();
    assert_eq!(want.len(), N);

    let mut got = HashSet::new();
    let mut received = 0usize;
    let mut last_index = HashMap::new();
    let mut out_of_order = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while got.len() < N && Instant::now() < deadline {
        let Ok(m) = sub.rx.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        received += 1;
        let v = m.json();
        let i: u64 = v["message"].as_str().unwrap().parse().unwrap();
        if got.insert(v["id"].as_str().unwrap().to_string()) {
            if let Some(prev) = last_index.insert("alerts", i) {
                if i < prev {
                    out_of_order += 1;
                }
            }
        }
    }
    assert!(p.flush(WAIT), "{:?}", p.stats());
    let st = p.stats();
    println!(
        "fault test: published {N}, received {received} (with duplicates), distinct {}, duplicates {}, \
         out-of-order after de-dup {out_of_order}; publisher: connects {}, reconnects {}, sent {}, acked {}, dropped alerts {}",
        got.len(),
        received - got.len(),
        st.connects,
        st.reconnects,
        st.sent,
        st.acked,
        st.dropped.get(&MessageClass::Alert).copied().unwrap_or(0),
    );
    let missing: Vec<_> = want.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{} alerts never arrived: {missing:?}\nbroker log:\n{}",
        missing.len(),
        broker.log()
    );
    assert!(st.reconnects >= 2, "{st:?}");
    assert_eq!(
        st.dropped.get(&MessageClass::Alert).copied().unwrap_or(0),
        0
    );
    assert_eq!((st.acked, st.spool_depth), (N as u64, 0));
}

#[test]
fn network_cuts_and_a_stalled_link_lose_no_alert() {
    network_faults(Protocol::V311);
}

#[test]
fn network_cuts_and_a_stalled_link_lose_no_alert_mqtt5() {
    network_faults(Protocol::V5);
}

fn network_faults(protocol: Protocol) {
    require_mosquitto!();
    let broker = Mosquitto::start();
    let link = proxy::Proxy::start(broker.port);
    let dir = tempfile::tempdir().unwrap();
    // The subscriber talks to the broker directly; only the publisher's link is faulty.
    let sub = Sub::new(broker.port, "sub-net", &["lookout/net/alerts"], false);
    let mut cfg = config(
        &format!("mqtt://127.0.0.1:{}", link.port),
        "net",
        &dir.path().join("s.redb"),
    );
    cfg.protocol = protocol;
    if protocol == Protocol::V5 {
        cfg.keep_alive_s = 5; // rumqttc's v5 minimum
    }
    let p = Arc::new(Publisher::start(&cfg).unwrap());
    wait_until("publisher connected", || p.stats().connected);

    const N: usize = 400;
    let published = Arc::new(Mutex::new(Vec::<String>::new()));
    let producer = {
        let (p, published) = (p.clone(), published.clone());
        std::thread::spawn(move || {
            for i in 0..N {
                let id = p
                    .alert(AlertBody {
                        alert: "net".into(),
                        message: format!("{i}"),
                        ..Default::default()
                    })
                    .unwrap();
                published.lock().unwrap().push(id);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let count = || published.lock().unwrap().len();
    let connects = || p.stats().connects;

    // 1. The link goes away for a moment: connections reset, reconnects refused.
    wait_until("a quarter published", || count() >= N / 4);
    link.cut();
    std::thread::sleep(Duration::from_millis(300));
    link.restore();
    wait_until("reconnect after the cut", || connects() >= 2);

    // 2. A reset in the middle of the stream, back at once.
    wait_until("half published", || count() >= N / 2);
    link.cut();
    link.restore();
    wait_until("reconnect after the reset", || connects() >= 3);

    // 3. A dead route: nothing moves but nothing closes; only keep-alive can notice.
    wait_until("three quarters published", || count() >= 3 * N / 4);
    link.stall();
    wait_until("the publisher noticing the stall", || !p.stats().connected);
    link.restore();
    wait_until("reconnect after the stall", || connects() >= 4);

    producer.join().unwrap();
    let want: HashSet<String> = published.lock().unwrap().iter().cloned().collect();
    let mut got = HashSet::new();
    let mut received = 0usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    while got.len() < N && Instant::now() < deadline {
        let Ok(m) = sub.rx.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        received += 1;
        got.insert(m.json()["id"].as_str().unwrap().to_string());
    }
    assert!(p.flush(WAIT), "{:?}", p.stats());
    let st = p.stats();
    println!(
        "network faults ({protocol:?}): published {N}, received {received} (with duplicates), distinct {}, duplicates {}; \
         publisher: connects {}, reconnects {}, sent {} (re-sends {}), acked {}, dropped alerts {}",
        got.len(),
        received - got.len(),
        st.connects,
        st.reconnects,
        st.sent,
        st.sent - N as u64,
        st.acked,
        st.dropped.get(&MessageClass::Alert).copied().unwrap_or(0),
    );
    let missing: Vec<_> = want.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{} alerts never arrived: {missing:?}",
        missing.len()
    );
    assert_eq!((st.acked, st.spool_depth), (N as u64, 0));
}

#[test]
fn mqtt5_request_response_and_delivery() {
    use rumqttc::v5::mqttbytes::v5::{Packet as P5, PublishProperties};
    use rumqttc::v5::mqttbytes::QoS as Q5;
    use rumqttc::v5::{Client as Client5, Event as Event5, MqttOptions as Options5};

    require_mosquitto!();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let sub = Sub::new(broker.port, "sub-v5", &["lookout/v5/#"], true);
    let mut cfg = config(&broker.url(), "v5", &dir.path().join("s.redb"));
    cfg.protocol = Protocol::V5;
    cfg.keep_alive_s = 5;
    probe(&cfg, WAIT).expect("v5 probe");
    let p = Publisher::start(&cfg).unwrap();
    let server = CommandServer::start(&p, lookout::mqtt::Unsupported).unwrap();
    assert_eq!(sub.recv_on("lookout/v5/status").json()["state"], "online");

    const N: usize = 100;
    for i in 0..N {
        p.alert(AlertBody {
            alert: "v5".into(),
            message: format!("{i}"),
            ..Default::default()
        })
        .unwrap();
    }
    let mut seen = HashSet::new();
    let mut order = Vec::new();
    while order.len() < N {
        let v = sub.recv_on("lookout/v5/alerts").json();
        if seen.insert(v["id"].as_str().unwrap().to_string()) {
            order.push(v["message"].as_str().unwrap().parse::<usize>().unwrap());
        }
    }
    assert_eq!(order, (0..N).collect::<Vec<_>>());
    assert!(p.flush(WAIT), "{:?}", p.stats());

    // A v5 requester: response topic + correlation data, no request_id needed.
    let mut o = Options5::new("requester-v5", "127.0.0.1", broker.port);
    o.set_keep_alive(Duration::from_secs(5));
    let (client, mut conn) = Client5::new(o, 16);
    client
        .subscribe("robots/r1/answers", Q5::AtLeastOnce)
        .unwrap();
    let (tx, rx) = unbounded();
    std::thread::spawn(move || {
        for ev in conn.iter() {
            match ev {
                Ok(Event5::Incoming(P5::SubAck(_))) => {
                    if tx.send(None).is_err() {
                        return;
                    }
                }
                Ok(Event5::Incoming(P5::Publish(m))) => {
                    let corr = m
                        .properties
                        .and_then(|p| p.correlation_data)
                        .map(|c| c.to_vec());
                    let msg = (
                        String::from_utf8_lossy(&m.topic).into_owned(),
                        m.payload.to_vec(),
                        corr,
                    );
                    if tx.send(Some(msg)).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    });
    assert_eq!(rx.recv_timeout(WAIT).expect("SUBACK"), None);
    let ask = |cmd: &str, payload: &str, corr: &[u8]| {
        let props = PublishProperties {
            response_topic: Some("robots/r1/answers".into()),
            correlation_data: Some(corr.to_vec().into()),
            ..Default::default()
        };
        client
            .publish_with_properties(
                format!("lookout/v5/cmd/{cmd}"),
                Q5::AtLeastOnce,
                false,
                payload.to_string(),
                props,
            )
            .unwrap();
    };
    // The command subscription may lag the first connection: ask until answered.
    let deadline = Instant::now() + WAIT;
    let (topic, body, corr) = loop {
        assert!(Instant::now() < deadline, "no v5 reply");
        ask("ping", "", b"corr-1");
        if let Ok(Some(m)) = rx.recv_timeout(Duration::from_secs(1)) {
            break m;
        }
    };
    assert_eq!(topic, "robots/r1/answers");
    assert_eq!(corr.as_deref(), Some(&b"corr-1"[..]));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (v["ok"].as_bool(), v["command"].as_str()),
        (Some(true), Some("ping"))
    );
    while rx.recv_timeout(Duration::from_millis(500)).is_ok() {} // extra pongs from the retries

    ask("ground", r#"{"instruction": 5}"#, b"corr-2");
    let Some((_, body, corr)) = rx.recv_timeout(WAIT).unwrap() else {
        panic!("SUBACK again")
    };
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(corr.as_deref(), Some(&b"corr-2"[..]));
    assert_eq!(v["ok"], false);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("instruction must be a string"),
        "{v}"
    );
    drop(p);
    server.join();
}

/// The device subscribes to commands right after connecting, without telling anyone when the
/// SUBACK came: ping until it answers.
fn wait_for_pong(sub: &Sub, topic: &str) {
    let deadline = Instant::now() + WAIT;
    for k in 0.. {
        assert!(
            Instant::now() < deadline,
            "the device never answered a ping"
        );
        sub.publish(topic, format!("{{\"request_id\":\"warmup-{k}\"}}"));
        if let Ok(m) = sub.rx.recv_timeout(Duration::from_secs(1)) {
            if m.json()["result"]["pong"] == true {
                return;
            }
        }
    }
}

/// Deterministic byte soup: JSON-ish fragments mixed with noise, so the corpus is the same on
/// every run and a failure can be replayed.
fn corpus(n: usize) -> Vec<Vec<u8>> {
    let pieces: [&[u8]; 16] = [
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"instruction\"",
        b":",
        b",",
        b"\"camera\"",
        b"null",
        b"1e999",
        b"\"request_id\":\"fz\"",
        b"\"\\ud800\"",
        b"true",
        b"\xff",
        b"\"name\"",
        b"  ",
    ];
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let len = (next() % 24) as usize;
            let mut v = Vec::new();
            for _ in 0..len {
                v.extend_from_slice(pieces[(next() % 16) as usize]);
            }
            v
        })
        .collect()
}

#[test]
fn malformed_commands_get_error_replies_and_the_device_stays_up() {
    require_mosquitto!();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let sub = Sub::new(broker.port, "sub-cmd", &["lookout/cmd1/reply/+"], true);
    let p = Publisher::start(&config(&broker.url(), "cmd1", &dir.path().join("s.redb"))).unwrap();
    let (handler, pending) = ChannelHandler::new(8);
    let server = CommandServer::start(&p, handler).unwrap();
    // The "pipeline": answers grounding, refuses the rest.
    let pipeline = std::thread::spawn(move || {
        for c in pending.iter() {
            match c.request.command {
                lookout::mqtt::Command::Ground { instruction, .. } => {
                    c.responder.ok(serde_json::json!({"matched": instruction}))
                }
                other => c
                    .responder
                    .err(format!("{} not wired in this test", other.name())),
            }
        }
    });
    wait_until("publisher connected", || p.stats().connected);
    wait_for_pong(&sub, "lookout/cmd1/cmd/ping");

    let t = |c: &str| format!("lookout/cmd1/cmd/{c}");
    let cases: Vec<(&str, String, Vec<u8>, &str)> = vec![
        (
            "c1",
            t("ping"),
            b"{\"request_id\":\"c1\", ".to_vec(),
            "invalid JSON",
        ),
        (
            "c2",
            t("ground"),
            br#"{"request_id":"c2","instruction":42}"#.to_vec(),
            "instruction must be a string, got a number",
        ),
        (
            "c3",
            t("ground"),
            br#"{"request_id":"c3"}"#.to_vec(),
            "missing field `instruction`",
        ),
        (
            "c4",
            t("selfdestruct"),
            br#"{"request_id":"c4"}"#.to_vec(),
            "unknown command",
        ),
        (
            "c5",
            t("rules/enable"),
            br#"{"request_id":"c5","name":["x"]}"#.to_vec(),
            "invalid type",
        ),
        (
            "c6",
            t("snapshot"),
            br#"{"request_id":"c6","camera":"../etc"}"#.to_vec(),
            "camera",
        ),
        (
            "c7",
            t("ping"),
            br#"{"request_id":"c7","v":99}"#.to_vec(),
            "unsupported payload version",
        ),
        (
            "c8",
            t("describe"),
            br#"{"request_id":"c8","prompt":{"a":1}}"#.to_vec(),
            "invalid type",
        ),
        (
            "c9",
            t("ground"),
            br#"{"request_id":"c9","instruction":"x","extra":1}"#.to_vec(),
            "unknown field",
        ),
    ];
    for (_, topic, payload, _) in &cases {
        sub.publish(topic, payload.clone());
    }
    let mut replies: HashMap<String, Value> = HashMap::new();
    let collect = |want: &str, replies: &mut HashMap<String, Value>| {
        while !replies.contains_key(want) {
            let m = sub.recv(&format!("reply {want}"));
            let v = m.json();
            let id = v["request_id"].as_str().unwrap().to_string();
            assert_eq!(m.topic, format!("lookout/cmd1/reply/{id}"));
            replies.insert(id, v);
        }
    };
    for (id, _, _, want) in &cases {
        collect(id, &mut replies);
        let r = &replies[*id];
        assert_eq!(r["ok"], false, "{r}");
        assert!(r["error"].as_str().unwrap().contains(want), "{id}: {r}");
        check_envelope(r, "cmd1");
    }

    // Over the 64 KiB command limit (but under the connection's packet limit): an error reply.
    let mut big = br#"{"request_id":"big","instruction":""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', MAX_COMMAND_BYTES));
    big.extend_from_slice(b"\"}");
    sub.publish(&t("ground"), big);
    let r = loop {
        let v = sub.recv("reply to oversized").json();
        if v["error"].as_str().is_some_and(|e| e.contains("exceeds")) {
            break v;
        }
    };
    assert_eq!(r["ok"], false);
    // Found near the start of the payload, although the payload was not parsed.
    assert_eq!(r["request_id"], "big", "{r}");

    // A generated corpus, a chunk at a time so the device's bounded command queue never
    // overflows: every message gets exactly one reply, none of them ok.
    let fuzz = corpus(300);
    let mut fuzz_replies = 0;
    for chunk in fuzz.chunks(16) {
        for f in chunk {
            sub.publish(&t("ground"), f.clone());
        }
        let mut got = 0;
        while got < chunk.len() {
            let v = sub.recv("fuzz replies").json();
            if v["request_id"]
                .as_str()
                .is_some_and(|r| r.starts_with("warmup"))
            {
                continue;
            }
            assert_eq!(v["ok"], false, "{v}");
            got += 1;
        }
        fuzz_replies += got;
    }
    assert_eq!(p.stats().incoming_dropped, 0);

    // A flood: what does not fit the bounded queue is dropped and counted, the rest answered.
    const FLOOD: usize = 400;
    for i in 0..FLOOD {
        sub.publish(&t("ping"), format!("{{\"request_id\":\"flood-{i}\"}}"));
    }
    let mut flood_replies = 0;
    let deadline = Instant::now() + WAIT;
    while flood_replies + (p.stats().incoming_dropped as usize) < FLOOD {
        assert!(
            Instant::now() < deadline,
            "flood: {flood_replies} replies, {:?}",
            p.stats()
        );
        if let Ok(m) = sub.rx.recv_timeout(Duration::from_millis(200)) {
            if m.json()["request_id"]
                .as_str()
                .is_some_and(|r| r.starts_with("flood-"))
            {
                flood_replies += 1;
            }
        }
    }
    let flood_dropped = p.stats().incoming_dropped;

    // Larger than the connection accepts at all: rumqttc drops the connection, the publisher
    // reconnects, and the device keeps answering.
    let before = p.stats().connects;
    sub.publish(&t("ping"), vec![b' '; 512 << 10]);
    wait_until("reconnect after an over-sized packet", || {
        let st = p.stats();
        st.connects > before && st.connected
    });
    wait_for_pong(&sub, "lookout/cmd1/cmd/ping");

    // Valid commands still work end to end.
    sub.publish(
        &t("ground"),
        br#"{"request_id":"g1","instruction":"the red cup"}"#.to_vec(),
    );
    sub.publish(&t("ping"), br#"{"request_id":"final"}"#.to_vec());
    collect("g1", &mut replies);
    collect("final", &mut replies);
    assert_eq!(replies["g1"]["ok"], true);
    assert_eq!(replies["g1"]["result"]["matched"], "the red cup");
    assert_eq!(replies["final"]["ok"], true);
    assert_eq!(replies["final"]["result"]["pong"], true);
    println!(
        "commands: {} named cases, 1 oversized, {} fuzzed ({fuzz_replies} error replies), flood of {FLOOD} pings \
         ({flood_replies} answered, {flood_dropped} dropped by the bounded queue), 1 over the packet limit; \
         server stats received {} rejected {}",
        cases.len(),
        fuzz.len(),
        server.stats().received.load(Ordering::Relaxed),
        server.stats().rejected.load(Ordering::Relaxed),
    );
    drop(p);
    server.join();
    pipeline.join().unwrap();
}

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA with a server certificate for 127.0.0.1/localhost, and an unrelated second CA.
    fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "lookout test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);

        let srv_key = KeyPair::generate().unwrap();
        let mut srv_params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        srv_params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let srv = srv_params.signed_by(&srv_key, &issuer).unwrap();

        let other_key = KeyPair::generate().unwrap();
        let mut other_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        other_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        other_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "some other CA");
        let other = other_params.self_signed(&other_key).unwrap();

        let d = dir.path();
        std::fs::write(d.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(d.join("server.pem"), srv.pem()).unwrap();
        std::fs::write(d.join("server.key"), srv_key.serialize_pem()).unwrap();
        std::fs::write(d.join("other-ca.pem"), other.pem()).unwrap();
        Pki { dir }
    }

    fn path(&self, f: &str) -> std::path::PathBuf {
        self.dir.path().join(f)
    }
}

#[test]
fn tls_with_the_right_ca_connects_and_a_wrong_ca_fails_clearly() {
    require_mosquitto!();
    let pki = Pki::new();
    let tls_port = mosquitto::free_port();
    let extra = format!(
        "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
        pki.path("ca.pem").display(),
        pki.path("server.pem").display(),
        pki.path("server.key").display()
    );
    let mut broker = Mosquitto::start_on(mosquitto::free_port(), &extra);
    broker.wait_listening(tls_port);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mqtts://127.0.0.1:{tls_port}");

    let mut good = config(&url, "tls", &dir.path().join("s.redb"));
    good.ca_file = Some(pki.path("ca.pem"));
    probe(&good, Duration::from_secs(20)).expect("TLS with the right CA");

    let mut bad = good.clone();
    bad.ca_file = Some(pki.path("other-ca.pem"));
    let err = probe(&bad, Duration::from_secs(20))
        .expect_err("a wrong CA must fail")
        .to_string();
    println!("wrong CA: {err}");
    assert!(err.contains("TLS handshake"), "{err}");
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );

    // Publishing over TLS, read back on the plain listener.
    let sub = Sub::new(broker.port, "sub-tls", &["lookout/tls/alerts"], true);
    let p = Publisher::start(&good).unwrap();
    p.alert(AlertBody {
        alert: "tls".into(),
        message: "over TLS".into(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        sub.recv_on("lookout/tls/alerts").json()["message"],
        "over TLS"
    );

    // The publisher with the wrong CA keeps retrying and says why in its stats.
    let mut bad_pub_cfg = bad.clone();
    bad_pub_cfg.spool_path = dir.path().join("bad.redb");
    bad_pub_cfg.client_id = Some("lookout-tls-bad".into());
    let bad_pub = Publisher::start(&bad_pub_cfg).unwrap();
    wait_until("an error in the stats", || {
        bad_pub.stats().last_error.is_some()
    });
    let st = bad_pub.stats();
    assert!(!st.connected);
    assert!(st.last_error.unwrap().contains("TLS handshake"));
}

#[test]
fn embedded_broker_round_trip() {
    let b = EmbeddedBroker::start(&EmbeddedBrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sub = Sub::new(
        b.addr().port(),
        "sub-embedded",
        &["lookout/emb/alerts"],
        true,
    );
    let p = Publisher::start(&config(&b.url(), "emb", &dir.path().join("s.redb"))).unwrap();
    let id = p
        .alert(AlertBody {
            alert: "embedded".into(),
            message: "through rumqttd".into(),
            ..Default::default()
        })
        .unwrap();
    let v = sub.recv_on("lookout/emb/alerts").json();
    assert_eq!(v["id"], id);
    assert!(p.flush(WAIT), "{:?}", p.stats());
    assert!(EmbeddedBroker::start(&EmbeddedBrokerConfig {
        listen: b.addr(),
        ..Default::default()
    })
    .is_err());
}

#[test]
fn watch_prints_alerts_events_and_scenes() {
    require_mosquitto!();
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let p = Publisher::start(&config(&broker.url(), "w", &dir.path().join("s.redb"))).unwrap();
    let opts = WatchOptions {
        broker: broker.url(),
        device: Some("w".into()),
        status: false,
        max_messages: Some(9),
        idle_timeout: Some(WAIT),
        ..Default::default()
    };
    let watcher = std::thread::spawn(move || {
        let mut out = Vec::new();
        let n = lookout::mqtt::watch(&opts, &mut out).unwrap();
        (n, String::from_utf8(out).unwrap())
    });
    // Nothing here is retained, so publish until the watcher has seen enough.
    let deadline = Instant::now() + WAIT;
    while !watcher.is_finished() && Instant::now() < deadline {
        p.alert(AlertBody {
            alert: "gate".into(),
            message: "gate opened".into(),
            ..Default::default()
        })
        .unwrap();
        p.event(EventBody {
            event: "enter".into(),
            label: Some("person".into()),
            ..Default::default()
        })
        .unwrap();
        p.scene(SceneBody {
            description: "Two people at the gate.".into(),
            ..Default::default()
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    let (n, text) = watcher.join().unwrap();
    assert_eq!(n, 9);
    assert!(text.contains(" w ALERT  gate: gate opened"), "{text}");
    assert!(text.contains(" w EVENT  enter person"), "{text}");
    assert!(text.contains(" w SCENE Two people at the gate."), "{text}");
    assert_eq!(text.lines().count(), 9);
}
