//! Issue 14, defects 1–4, against a real mosquitto, each also across a broker restart:
//! a retained over-sized command must not stop delivery; retained commands are never run and
//! state-changing ones run once per `request_id`; a burst of commands gets one reply each; a
//! refused TLS connection is reported at WARN (once per reason) and in the stats.
//!
//! New counters are read from the stats as JSON (`stats.mqtt` is a JSON payload), which is
//! what a dashboard sees. Every test starts its own broker on a free loopback port; without the
//! `mosquitto` binary the tests print SKIP and pass.

#[path = "support/mosquitto.rs"]
mod mosquitto;

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use lookout::mqtt::commands::{ChannelHandler, Command, CommandServer};
use lookout::mqtt::{Protocol, Publisher, Unsupported};
use mosquitto::{config, wait_until, Mosquitto, Sub, WAIT};
use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::Value;

/// Stores `payload` as the retained message of `topic`, QoS 1, and waits for the broker's ack.
fn publish_retained(port: u16, topic: &str, payload: Vec<u8>) {
    let mut o = MqttOptions::new(format!("retainer-{port}"), "127.0.0.1", port);
    o.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut conn) = Client::new(o, 4);
    client
        .publish(topic, QoS::AtLeastOnce, true, payload)
        .expect("queue the retained publish");
    for ev in conn.iter() {
        match ev {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                let _ = client.disconnect();
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => {}
            Err(e) => panic!("retained publish on {topic}: {e}"),
        }
    }
}

fn stat(p: &Publisher, key: &str) -> Value {
    serde_json::to_value(p.stats()).unwrap()[key].clone()
}

fn alerts(p: &Publisher, tag: &str, n: usize) -> HashSet<String> {
    (0..n)
        .map(|i| {
            p.alert(serde_json::json!({
                "alert_id": tag,
                "message": format!("{tag}-{i}"),
            }))
            .unwrap()
        })
        .collect()
}

/// Waits until every id in `want` arrived on `topic`; returns how many arrived more than once.
fn receive_all(sub: &Sub, topic: &str, want: &HashSet<String>) -> usize {
    let mut got = HashSet::new();
    let mut dup = 0;
    while !want.is_subset(&got) {
        let id = sub.recv_on(topic).json()["id"]
            .as_str()
            .unwrap()
            .to_string();
        if !got.insert(id) {
            dup += 1;
        }
    }
    dup
}

fn restart(broker: &mut Mosquitto, p: &Publisher) {
    let before = p.stats().connects;
    broker.stop();
    broker.restart();
    wait_until("the publisher to reconnect after the restart", || {
        let st = p.stats();
        st.connects > before && st.connected
    });
}

/// Receives one reply on `reply/#` and files it by request id, unless it is a re-delivery of
/// an envelope already filed (a QoS 1 subscriber may get one after a broker restart).
fn take_reply(sub: &Sub, into: &mut HashMap<String, Vec<Value>>) {
    let v = sub.recv("a reply").json();
    let rid = v["request_id"].as_str().unwrap_or_default().to_string();
    let list = into.entry(rid).or_default();
    if !list.iter().any(|r| r["id"] == v["id"]) {
        list.push(v);
    }
}

/// Files replies until one for `until` is among them.
fn replies_until(sub: &Sub, until: &str, into: &mut HashMap<String, Vec<Value>>) {
    while !into.contains_key(until) {
        take_reply(sub, into);
    }
}

/// Pings until one is answered: the device is connected and subscribed.
fn wait_for_pong(sub: &Sub, device: &str, into: &mut HashMap<String, Vec<Value>>) {
    let deadline = Instant::now() + WAIT;
    for k in 0.. {
        assert!(Instant::now() < deadline, "no pong from {device}");
        let id = format!("warm-{k}");
        sub.publish(
            &format!("lookout/{device}/cmd/ping"),
            format!("{{\"request_id\":\"{id}\"}}"),
        );
        while let Some(m) = sub.recv_within(Duration::from_millis(300)) {
            let v = m.json();
            let rid = v["request_id"].as_str().unwrap_or_default().to_string();
            into.entry(rid.clone()).or_default().push(v);
            if rid == id {
                return;
            }
        }
    }
}

#[test]
fn a_retained_oversized_command_does_not_stop_delivery() {
    require_mosquitto!();
    let mut broker = Mosquitto::start();
    // 1 MB, four times the default max_incoming_bytes, retained where the device subscribes.
    publish_retained(broker.port, "lookout/big/cmd/ping", vec![b' '; 1 << 20]);
    let sub = Sub::new(broker.port, "sub-big", &["lookout/big/alerts"], false);
    let replies = Sub::new(broker.port, "sub-big-r", &["lookout/big/reply/#"], false);
    let dir = tempfile::tempdir().unwrap();
    let p = Publisher::start(&config(&broker.url(), "big", &dir.path().join("s.redb"))).unwrap();
    let server = CommandServer::start(&p, Unsupported).unwrap();

    let first = alerts(&p, "before", 30);
    let dup_before = receive_all(&sub, "lookout/big/alerts", &first);
    assert!(p.flush(WAIT), "the spool never drained: {:?}", p.stats());
    wait_until("the over-sized message in the stats", || {
        stat(&p, "incoming_oversized").as_u64().unwrap_or(0) >= 1
    });
    let st = p.stats();
    assert!(
        st.last_error
            .as_deref()
            .is_some_and(|e| e.contains("max_incoming_bytes")),
        "{st:?}"
    );

    // The broker keeps the retained message and the session across a restart.
    restart(&mut broker, &p);
    let second = alerts(&p, "after", 30);
    let dup_after = receive_all(&sub, "lookout/big/alerts", &second);
    assert!(p.flush(WAIT), "the spool never drained: {:?}", p.stats());

    // Live commands still reach the device through the session's subscription.
    replies.publish("lookout/big/cmd/ping", br#"{"request_id":"live"}"#.to_vec());
    let mut got = HashMap::new();
    replies_until(&replies, "live", &mut got);
    assert_eq!(got["live"][0]["ok"], true, "{:?}", got["live"]);

    let st = p.stats();
    println!(
        "retained 1 MiB command: connects {}, reconnects {}, over-sized packets {}, duplicates {} + {}, last error {:?}",
        st.connects,
        st.reconnects,
        stat(&p, "incoming_oversized"),
        dup_before,
        dup_after,
        st.last_error
    );
    // The reply to the live ping is the last thing in the spool.
    assert!(p.flush(WAIT), "{:?}", p.stats());
    assert!(p.stats().connected);
    drop(p);
    server.join();
}

#[test]
fn retained_commands_never_run_and_state_changes_run_once_per_request_id() {
    require_mosquitto!();
    retained_and_repeated_commands(Protocol::V311, "ret");
}

#[test]
fn retained_commands_never_run_over_mqtt5() {
    require_mosquitto!();
    retained_and_repeated_commands(Protocol::V5, "ret5");
}

fn retained_and_repeated_commands(protocol: Protocol, dev: &str) {
    let mut broker = Mosquitto::start();
    publish_retained(
        broker.port,
        &format!("lookout/{dev}/cmd/rules/disable"),
        br#"{"request_id":"stale-1","name":"path"}"#.to_vec(),
    );
    let sub = Sub::new(
        broker.port,
        &format!("sub-{dev}"),
        &[&format!("lookout/{dev}/reply/#")],
        false,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&broker.url(), dev, &dir.path().join("s.redb"));
    cfg.protocol = protocol;
    cfg.keep_alive_s = 5;
    let p = Publisher::start(&cfg).unwrap();
    let (handler, pending) = ChannelHandler::new(8);
    let (ran_tx, ran) = crossbeam_channel::unbounded();
    let pipeline = std::thread::spawn(move || {
        for c in pending.iter() {
            ran_tx.send(c.request.command.clone()).unwrap();
            c.responder.ok(serde_json::json!({"applied": true}));
        }
    });
    let server = CommandServer::start(&p, handler).unwrap();

    let mut replies = HashMap::new();
    replies_until(&sub, "stale-1", &mut replies);
    // Two broker restarts: a 3.1.1 broker re-sends retained messages on every SUBSCRIBE.
    for round in 0..2 {
        restart(&mut broker, &p);
        let id = format!("sync-{round}");
        sub.publish(
            &format!("lookout/{dev}/cmd/ping"),
            format!("{{\"request_id\":\"{id}\"}}"),
        );
        replies_until(&sub, &id, &mut replies);
    }
    // The operator's own command, then a retry of it with the same request id.
    for _ in 0..2 {
        sub.publish(
            &format!("lookout/{dev}/cmd/rules/enable"),
            br#"{"request_id":"op-1","name":"path"}"#.to_vec(),
        );
    }
    sub.publish(
        &format!("lookout/{dev}/cmd/ping"),
        br#"{"request_id":"final"}"#.to_vec(),
    );
    replies_until(&sub, "final", &mut replies);
    while replies.get("op-1").map_or(0, Vec::len) < 2 {
        take_reply(&sub, &mut replies);
    }

    let stale = &replies["stale-1"];
    assert_eq!(
        stale.len(),
        1,
        "one reply to the retained command: {stale:?}"
    );
    assert_eq!(stale[0]["ok"], false);
    assert!(
        stale[0]["error"].as_str().unwrap().contains("retained"),
        "{stale:?}"
    );
    // The retry is answered by the command server at once, the original by the pipeline: in
    // either order.
    let op = &replies["op-1"];
    assert_eq!(op.len(), 2, "{op:?}");
    assert_eq!(op.iter().filter(|r| r["ok"] == true).count(), 1, "{op:?}");
    assert!(
        op.iter()
            .any(|r| r["error"].as_str().is_some_and(|e| e.contains("duplicate"))),
        "{op:?}"
    );
    let ran: Vec<Command> = ran.try_iter().collect();
    assert_eq!(
        ran,
        vec![Command::RulesEnable {
            name: "path".into()
        }],
        "only the operator's command ran, once"
    );
    println!(
        "retained: replies {:?}, commands run {ran:?}",
        replies.keys().collect::<Vec<_>>()
    );
    drop(p);
    server.join();
    pipeline.join().unwrap();
}

#[test]
fn every_command_of_a_burst_gets_exactly_one_reply() {
    require_mosquitto!();
    let mut broker = Mosquitto::start();
    let sub = Sub::new(broker.port, "sub-burst", &["lookout/burst/reply/#"], false);
    let dir = tempfile::tempdir().unwrap();
    let p = Publisher::start(&config(&broker.url(), "burst", &dir.path().join("s.redb"))).unwrap();
    let server = CommandServer::start(&p, Unsupported).unwrap();
    let mut replies = HashMap::new();
    wait_for_pong(&sub, "burst", &mut replies);

    const N: usize = 200;
    for round in 0..2 {
        if round == 1 {
            restart(&mut broker, &p);
        }
        for i in 0..N {
            sub.publish(
                "lookout/burst/cmd/ping",
                format!("{{\"request_id\":\"b{round}-{i}\"}}"),
            );
        }
        let end = format!("b{round}-end");
        sub.publish(
            "lookout/burst/cmd/ping",
            format!("{{\"request_id\":\"{end}\"}}"),
        );
        let ids: Vec<String> = (0..N).map(|i| format!("b{round}-{i}")).collect();
        while !ids.iter().all(|id| replies.contains_key(id)) {
            take_reply(&sub, &mut replies);
        }
        replies_until(&sub, &end, &mut replies);
        let (mut ok, mut busy) = (0, 0);
        for id in &ids {
            let r = &replies[id];
            assert_eq!(r.len(), 1, "{id}: {r:?}");
            if r[0]["ok"] == true {
                ok += 1;
            } else {
                assert!(r[0]["error"].as_str().unwrap().starts_with("busy"), "{r:?}");
                busy += 1;
            }
        }
        println!(
            "burst {round}: {N} pings, {ok} answered, {busy} busy, {:?}",
            p.stats()
        );
    }
    assert_eq!(p.stats().incoming_dropped, 0);
    drop(p);
    server.join();
}

/// WARN (and worse) lines the library logs, for the TLS test to read.
fn warnings() -> &'static Mutex<Vec<String>> {
    static LINES: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    static LOGGER: Capture = Capture;
    struct Capture;
    impl log::Log for Capture {
        fn enabled(&self, m: &log::Metadata) -> bool {
            m.level() <= log::Level::Warn
        }
        fn log(&self, r: &log::Record) {
            if self.enabled(r.metadata()) {
                if let Ok(mut l) = warnings().lock() {
                    l.push(format!("{} {}", r.level(), r.args()));
                }
            }
        }
        fn flush(&self) {}
    }
    let lines = LINES.get_or_init(|| Mutex::new(Vec::new()));
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(log::LevelFilter::Warn);
    }
    lines
}

#[test]
fn a_refused_tls_connection_is_reported_at_warn_once_per_reason() {
    require_mosquitto!();
    let pki = mosquitto::Pki::new();
    let tls_port = mosquitto::free_port();
    let extra = format!(
        "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
        pki.path("ca.pem").display(),
        pki.path("server.pem").display(),
        pki.path("server.key").display()
    );
    let mut broker = Mosquitto::start_on(mosquitto::free_port(), &extra);
    broker.wait_listening(tls_port);
    let url = format!("mqtts://127.0.0.1:{tls_port}");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&url, "tlswarn", &dir.path().join("s.redb"));
    cfg.ca_file = Some(pki.path("other-ca.pem"));
    cfg.reconnect_max_ms = 200;
    warnings();
    let mine = || -> Vec<String> {
        warnings()
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(&url))
            .cloned()
            .collect()
    };
    let failures = |p: &Publisher| stat(p, "connect_failures").as_u64().unwrap_or(0);

    let p = Publisher::start(&cfg).unwrap();
    wait_until("several failed TLS handshakes", || failures(&p) >= 4);
    let lines = mine();
    assert_eq!(
        lines.len(),
        1,
        "one WARN while the reason repeats: {lines:?}"
    );
    assert!(
        lines[0].starts_with("WARN") && lines[0].contains("TLS handshake"),
        "{lines:?}"
    );
    assert!(lines[0].contains("UnknownIssuer"), "{lines:?}");
    let st = p.stats();
    assert!(!st.connected);
    assert!(
        st.last_error
            .as_deref()
            .is_some_and(|e| e.contains("TLS handshake") && e.contains(&url)),
        "{st:?}"
    );

    // The broker goes away (a new reason), and comes back (the TLS reason again).
    broker.stop();
    wait_until("a WARN for the stopped broker", || mine().len() >= 2);
    broker.restart();
    broker.wait_listening(tls_port);
    wait_until("a WARN for the refused certificate again", || {
        mine().last().is_some_and(|l| l.contains("TLS handshake")) && mine().len() >= 3
    });
    let settled = mine().len();
    let n = failures(&p);
    wait_until("more failed handshakes", || failures(&p) >= n + 3);
    let lines = mine();
    assert_eq!(
        lines.len(),
        settled,
        "no WARN while the reason repeats: {lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains("connection refused")),
        "the stopped broker: {lines:?}"
    );
    assert!(lines.last().unwrap().contains("TLS handshake"), "{lines:?}");
    assert!(
        lines.windows(2).all(|w| w[0] != w[1]),
        "a WARN only when the reason changes: {lines:?}"
    );
    println!("TLS warnings: {lines:#?}\nstats: {:?}", p.stats());
}
