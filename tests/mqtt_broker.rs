//! MQTT against a real mosquitto (and the embedded rumqttd): schema, retained status, last will,
//! QoS 1, spool persistence, broker restarts, network faults, TLS, `lookout watch`. Commands are
//! in `mqtt_commands.rs`.
//!
//! Every test starts its own broker on a free loopback port; without the `mosquitto` binary the
//! mosquitto tests print SKIP and pass.

#[path = "support/mosquitto.rs"]
mod mosquitto;
#[path = "support/proxy.rs"]
mod proxy;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lookout::mqtt::publisher::Protocol;
use lookout::mqtt::{
    probe, EmbeddedBroker, EmbeddedBrokerConfig, MessageClass, Publisher, Spool, SpoolLimits,
    WatchOptions,
};
use mosquitto::{check_envelope, config, wait_until, Mosquitto, Pki, Sub, WAIT};

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
        .alert(serde_json::json!({
            "alert": "driveway",
            "message": "person in the driveway",
            "camera": "front",
            "track_id": 7,
            "label": "person",
            "score": 0.9,
        }))
        .unwrap();
    p.event(serde_json::json!({
        "event": "enter",
        "zone": "gate",
    }))
    .unwrap();
    p.scene(serde_json::json!({
        "description": "A person walks a dog.",
        "camera": "front",
    }))
    .unwrap();
    p.detections(serde_json::json!({
        "width": 640,
        "height": 480,
        "detections": [],
    }))
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
        p.event(serde_json::json!({
            "event": "count",
            "count": i,
        }))
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
                p.alert(serde_json::json!({
                    "alert": format!("a{i}"),
                    "message": format!("{i}"),
                }))
            } else {
                p.event(serde_json::json!({
                    "event": format!("e{i}"),
                    "count": i,
                }))
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
    let event = |i: u64| {
        serde_json::json!({
            "event": "e",
            "count": i,
        })
    };
    let detections = || {
        serde_json::json!({
            "width": 1,
            "height": 1,
            "detections": [],
        })
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
        p.alert(serde_json::json!({
            "alert": "full",
            "message": format!("{i}"),
        }))
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
                    .alert(serde_json::json!({
                        "alert": "fault",
                        "message": format!("{i}"),
                    }))
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
        let Some(m) = sub.recv_within(Duration::from_secs(1)) else {
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
                    .alert(serde_json::json!({
                        "alert": "net",
                        "message": format!("{i}"),
                    }))
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
        let Some(m) = sub.recv_within(Duration::from_secs(1)) else {
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
    p.alert(serde_json::json!({
        "alert": "tls",
        "message": "over TLS",
    }))
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
        .alert(serde_json::json!({
            "alert": "embedded",
            "message": "through rumqttd",
        }))
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
        p.alert(serde_json::json!({
            "alert": "gate",
            "message": "gate opened",
        }))
        .unwrap();
        p.event(serde_json::json!({
            "event": "enter",
            "label": "person",
        }))
        .unwrap();
        p.scene(serde_json::json!({
            "description": "Two people at the gate.",
        }))
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
