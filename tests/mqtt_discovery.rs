//! Home Assistant MQTT discovery from `lookout run` against a real mosquitto: the configs are
//! retained, a rule removed between two runs loses its config, a rule switch's `set` and `state`
//! round-trip, the counts HA reads are published, `[mqtt] topic_prefix` moves every topic, and
//! the plain `availability` goes `offline` (the last will) when lookout is killed.
//!
//! The same checks against a real Home Assistant are in `tests/homeassistant/` (not run by
//! `cargo test`: its Python environment is large; see docs/homeassistant.md).

mod common;
#[path = "support/mosquitto.rs"]
mod mosquitto;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Stdio};

use mosquitto::{Mosquitto, Msg, Sub};

/// The demo config as device `device`, with extra TOML appended.
fn demo_config(dir: &Path, device: &str, extra: &str, looping: bool) -> std::path::PathBuf {
    let mut demo = std::fs::read_to_string(common::repo().join("samples/demo.toml")).unwrap();
    demo = demo.replace(
        "device = \"lookout-demo\"",
        &format!("device = \"{device}\""),
    );
    if looping {
        demo = demo.replace(
            "file:samples/vtest?fps=10",
            "file:samples/vtest?fps=10&loop=true",
        );
    }
    let p = dir.join(format!("{device}-{}.toml", extra.len()));
    std::fs::write(&p, format!("{demo}\n{extra}")).unwrap();
    p
}

fn lookout_run(cfg: &Path, broker: &Mosquitto, spool: &Path, frames: Option<u32>) -> Child {
    let mut c = common::lookout();
    c.args(["run", "--config"])
        .arg(cfg)
        .args(["--broker", &broker.url(), "--spool"])
        .arg(spool)
        .current_dir(common::repo())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(n) = frames {
        c.args(["--max-frames", &n.to_string()]);
    }
    c.spawn().expect("start lookout run")
}

/// Every retained message under `filter`: subscribes, then publishes a marker on a topic the
/// filter matches. The broker sends retained messages on subscribing, before anything published
/// later, so everything before the marker is exactly the retained set (no waiting on a clock).
fn retained(broker: &Mosquitto, filter: &str, marker_topic: &str) -> Vec<Msg> {
    let sub = Sub::new(broker.port, "retained-reader", &[filter], true);
    sub.publish(marker_topic, "marker");
    let mut out = Vec::new();
    loop {
        let m = sub.recv("the marker after the retained messages");
        if m.topic == marker_topic && !m.retain {
            return out;
        }
        assert!(m.retain, "{} arrived unretained", m.topic);
        out.push(m);
    }
}

/// Messages from several topics, read one topic at a time without losing the others (two
/// connections publish them, so their order across topics is not fixed).
struct Inbox {
    sub: Sub,
    held: RefCell<Vec<Msg>>,
}

impl Inbox {
    /// The next payload on `topic`, as text.
    fn next_on(&self, topic: &str) -> String {
        let mut held = self.held.borrow_mut();
        if let Some(i) = held.iter().position(|m| m.topic == topic) {
            return String::from_utf8_lossy(&held.remove(i).payload).into_owned();
        }
        loop {
            let m = self.sub.recv(topic);
            if m.topic == topic {
                return String::from_utf8_lossy(&m.payload).into_owned();
            }
            held.push(m);
        }
    }
}

fn topics(msgs: &[Msg]) -> BTreeSet<String> {
    msgs.iter().map(|m| m.topic.clone()).collect()
}

#[test]
fn configs_are_retained_and_a_removed_rule_loses_its_config() {
    require_mosquitto!();
    let broker = Mosquitto::start();
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool.redb");
    let node = "homeassistant/switch/lookout_disco";

    let cfg = demo_config(tmp.path(), "disco", "", false);
    assert!(lookout_run(&cfg, &broker, &spool, Some(15))
        .wait()
        .unwrap()
        .success());
    let first = retained(
        &broker,
        "homeassistant/#",
        "homeassistant/marker/x/y/config",
    );
    let first_topics = topics(&first);
    println!("first run left {} retained configs", first.len());
    for t in [
        "homeassistant/binary_sensor/lookout_disco/zone_path_occupancy/config",
        "homeassistant/sensor/lookout_disco/zone_path_count/config",
        "homeassistant/binary_sensor/lookout_disco/label_person_occupancy/config",
        "homeassistant/sensor/lookout_disco/label_person_count/config",
        "homeassistant/image/lookout_disco/snapshot_plaza/config",
        "homeassistant/event/lookout_disco/alerts/config",
        "homeassistant/sensor/lookout_disco/fps/config",
        "homeassistant/sensor/lookout_disco/inference_ms/config",
        "homeassistant/sensor/lookout_disco/spool_depth/config",
        "homeassistant/button/lookout_disco/snapshot/config",
        "homeassistant/button/lookout_disco/describe/config",
        &format!("{node}/rule_path/config"),
        &format!("{node}/rule_lamp-post/config"),
        &format!("{node}/rule_crowd/config"),
    ] {
        assert!(
            first_topics.contains(t),
            "{t} missing from {first_topics:#?}"
        );
    }
    let device = &first[0].json()["device"];
    for m in &first {
        let v = m.json();
        assert_eq!(
            &v["device"], device,
            "{}: one HA device for everything",
            m.topic
        );
        assert_eq!(v["availability_topic"], "lookout/disco/availability");
        assert!(v["unique_id"].is_string(), "{}", m.topic);
    }
    assert_eq!(device["name"], "disco");
    let sw = first
        .iter()
        .find(|m| m.topic == format!("{node}/rule_crowd/config"))
        .unwrap()
        .json();
    assert_eq!(sw["command_topic"], "lookout/disco/rules/crowd/set");
    assert_eq!(sw["state_topic"], "lookout/disco/rules/crowd/state");
    // The state topics those entities read are retained too.
    let state = retained(&broker, "lookout/disco/#", "lookout/disco/marker");
    let state_topics = topics(&state);
    for t in [
        "lookout/disco/zones/path/count",
        "lookout/disco/labels/person/count",
        "lookout/disco/rules/crowd/state",
        "lookout/disco/availability",
        "lookout/disco/snapshot/plaza",
    ] {
        assert!(
            state_topics.contains(t),
            "{t} missing from {state_topics:#?}"
        );
    }

    // Second run on the same spool (and so the same record of what was announced), without
    // the crowd rule: its switch config is emptied, which removes the entity from HA.
    let demo = std::fs::read_to_string(&cfg).unwrap();
    let (head, _crowd) = demo.split_once("# Three or more people").unwrap();
    let cfg2 = tmp.path().join("no-crowd.toml");
    std::fs::write(&cfg2, head).unwrap();
    let watch = Sub::new(
        broker.port,
        "watch-removal",
        &[&format!("{node}/rule_crowd/config")],
        true,
    );
    let retained_crowd = watch.recv("the retained crowd switch config");
    assert!(retained_crowd.retain && !retained_crowd.payload.is_empty());
    assert!(lookout_run(&cfg2, &broker, &spool, Some(5))
        .wait()
        .unwrap()
        .success());
    let removal = watch.recv("the crowd switch config being emptied");
    assert!(removal.payload.is_empty(), "{:?}", removal.payload);
    let second = topics(&retained(
        &broker,
        "homeassistant/#",
        "homeassistant/marker/x/y/config",
    ));
    let gone: Vec<_> = first_topics.difference(&second).collect();
    assert_eq!(gone, [&format!("{node}/rule_crowd/config")]);

    // Discovery turned off: everything announced before is removed.
    let cfg3 = tmp.path().join("off.toml");
    std::fs::write(&cfg3, format!("{head}\n[mqtt]\ndiscovery = false\n")).unwrap();
    assert!(lookout_run(&cfg3, &broker, &spool, Some(3))
        .wait()
        .unwrap()
        .success());
    let third = retained(
        &broker,
        "homeassistant/#",
        "homeassistant/marker/x/y/config",
    );
    assert!(third.is_empty(), "{:#?}", topics(&third));
}

#[test]
fn rule_switch_round_trips_and_availability_is_the_last_will() {
    require_mosquitto!();
    let broker = Mosquitto::start();
    let tmp = tempfile::tempdir().unwrap();
    // A topic prefix of two levels: every topic (and what the configs point at) moves with it.
    let cfg = demo_config(
        tmp.path(),
        "sw",
        "[mqtt]\ntopic_prefix = \"home/cams\"\ndiscovery_prefix = \"ha\"\n",
        true,
    );
    let root = "home/cams/sw";
    let sub = Sub::new(
        broker.port,
        "sw-sub",
        &[
            &format!("{root}/availability"),
            &format!("{root}/rules/path/state"),
            &format!("{root}/zones/path/count"),
            "ha/switch/home_cams_sw/rule_path/config",
        ],
        true,
    );
    let mut run = lookout_run(&cfg, &broker, &tmp.path().join("spool.redb"), None);
    let inbox = Inbox {
        sub,
        held: RefCell::new(Vec::new()),
    };
    let next_on = |topic: &str| inbox.next_on(topic);
    assert_eq!(next_on(&format!("{root}/availability")), "online");
    let config: serde_json::Value =
        serde_json::from_str(&next_on("ha/switch/home_cams_sw/rule_path/config")).unwrap();
    assert_eq!(config["command_topic"], format!("{root}/rules/path/set"));
    assert_eq!(config["availability_topic"], format!("{root}/availability"));
    let state = format!("{root}/rules/path/state");
    assert_eq!(next_on(&state), "ON");
    // The counts move with the clip: a first value, then a different one.
    let count_topic = format!("{root}/zones/path/count");
    let first_count = next_on(&count_topic);
    let mut later = next_on(&count_topic);
    while later == first_count {
        later = next_on(&count_topic);
    }
    println!("zone path count went from {first_count} to {later}");

    inbox.sub.publish(&format!("{root}/rules/path/set"), "OFF");
    assert_eq!(next_on(&state), "OFF");
    inbox.sub.publish(&format!("{root}/rules/path/set"), "ON");
    assert_eq!(next_on(&state), "ON");

    // `lookout watch` finds the device under the same prefix.
    let watch = common::lookout()
        .args([
            "watch",
            "--broker",
            &broker.url(),
            "--topic-prefix",
            "home/cams",
        ])
        .args(["--device", "sw", "--json", "--max-messages", "2"])
        .output()
        .unwrap();
    assert!(watch.status.success());
    let seen = String::from_utf8_lossy(&watch.stdout);
    assert_eq!(seen.lines().count(), 2, "{seen}");
    assert!(
        seen.lines()
            .all(|l| l.contains("\"topic\":\"home/cams/sw/")),
        "{seen}"
    );

    run.kill().unwrap(); // SIGKILL: the broker must say offline for it
    run.wait().unwrap();
    assert_eq!(next_on(&format!("{root}/availability")), "offline");
    let late = retained(
        &broker,
        &format!("{root}/availability"),
        &format!("{root}/availability"),
    );
    let last: Vec<String> = late
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    assert_eq!(last, ["offline"], "the will is retained");
    // The rule state stays retained for HA after the device is gone.
    let kept = retained(&broker, &state, &state);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].payload, b"ON");
}
