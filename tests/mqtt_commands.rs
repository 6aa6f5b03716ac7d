//! Commands over MQTT against a real mosquitto: MQTT 5 request/response, and hostile `cmd/*`
//! payloads that must get error replies while the device keeps publishing.
//!
//! Every test starts its own broker on a free loopback port; without the `mosquitto` binary the
//! tests print SKIP and pass.

#[path = "support/mosquitto.rs"]
mod mosquitto;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::unbounded;
use lookout::mqtt::commands::{ChannelHandler, CommandServer, MAX_COMMAND_BYTES};
use lookout::mqtt::publisher::Protocol;
use lookout::mqtt::{probe, Publisher};
use mosquitto::{check_envelope, config, wait_until, Mosquitto, Sub, WAIT};
use serde_json::Value;

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
        p.alert(serde_json::json!({
            "alert": "v5",
            "message": format!("{i}"),
        }))
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
        if let Some(m) = sub.recv_within(Duration::from_secs(1)) {
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
        if let Some(m) = sub.recv_within(Duration::from_millis(200)) {
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
