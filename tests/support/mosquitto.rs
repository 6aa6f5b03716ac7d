//! A real mosquitto for integration tests: its own config, persistence and log in a temp dir,
//! on a free loopback port; stopped (SIGKILL) on drop. Also what the MQTT tests share around it:
//! a subscriber on its own thread ([`Sub`]), the publisher settings they start from
//! ([`config`]), envelope checks, and a throw-away PKI for TLS.
#![allow(dead_code)]

// Test binaries that use both `common` and `mosquitto` load the skip switch twice; harmless
// (it holds only functions), and each helper stays usable on its own.
#[allow(clippy::duplicate_mod)]
#[path = "skip.rs"]
mod skip_switch;
pub use skip_switch::skip;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use lookout::mqtt::MqttConfig;
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    extra: String,
}

/// The broker binary, also where Debian puts it outside a root PATH.
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

/// Skips the calling test, with a printed reason, when mosquitto is not installed.
#[macro_export]
macro_rules! require_mosquitto {
    () => {
        if mosquitto::binary().is_none() {
            mosquitto::skip("the mosquitto binary is not installed (apt-get install mosquitto)");
            return;
        }
    };
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl Mosquitto {
    /// A broker with persistence on a free port.
    pub fn start() -> Mosquitto {
        Mosquitto::start_on(free_port(), "")
    }

    /// `extra` is appended to the config (e.g. a TLS listener).
    pub fn start_on(port: u16, extra: &str) -> Mosquitto {
        let mut m = Mosquitto::configure(port, extra);
        m.restart();
        m
    }

    /// Writes the config but does not start the broker (for tests that begin with it down).
    pub fn configure(port: u16, extra: &str) -> Mosquitto {
        Mosquitto {
            child: None,
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            extra: extra.to_string(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    fn write_config(&self) -> PathBuf {
        let d = self.dir.path();
        // Running as root, mosquitto would switch to user `mosquitto`, which cannot read a
        // root-only temp dir.
        let user = if running_as_root() { "user root\n" } else { "" };
        let conf = format!(
            "{user}per_listener_settings false\nallow_anonymous true\n\
             persistence true\npersistence_location {}/\npersistence_file mosquitto.db\n\
             autosave_interval 1\nmax_queued_messages 100000\nmax_inflight_messages 100\n\
             log_dest file {}/mosquitto.log\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
             listener {} 127.0.0.1\n{}\n",
            d.display(),
            d.display(),
            self.port,
            self.extra
        );
        let p = d.join("mosquitto.conf");
        std::fs::write(&p, conf).expect("write mosquitto.conf");
        p
    }

    /// (Re)starts the broker on the same port with the same persistence and waits for it.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let conf = self.write_config();
        let bin = binary().expect("mosquitto binary");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        self.wait_listening(self.port);
    }

    /// Waits until `port` (one of this broker's listeners) accepts connections.
    pub fn wait_listening(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = c.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    panic!("mosquitto exited ({status}): {err}\nlog:\n{}", self.log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto not listening on {port}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Graceful stop (SIGTERM): mosquitto saves sessions, queued and retained messages.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Test clients

/// Long enough for any message on loopback, even on a loaded 2-core CI machine.
pub const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct Msg {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Msg {
    pub fn json(&self) -> Value {
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
pub struct Sub {
    rx: Receiver<Msg>,
    client: Client,
    stop: Arc<AtomicBool>,
}

impl Sub {
    pub fn new(port: u16, id: &str, filters: &[&str], clean: bool) -> Sub {
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

    pub fn recv(&self, what: &str) -> Msg {
        self.rx
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no message for {what} within {WAIT:?}"))
    }

    /// The next message, if one comes within `d`.
    pub fn recv_within(&self, d: Duration) -> Option<Msg> {
        self.rx.recv_timeout(d).ok()
    }

    /// The next message on `topic`, skipping others.
    pub fn recv_on(&self, topic: &str) -> Msg {
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

    pub fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>) {
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

pub fn config(url: &str, device: &str, spool: &Path) -> MqttConfig {
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

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn check_envelope(v: &Value, device: &str) {
    assert_eq!(v["v"], 2, "{v}");
    assert_eq!(v["device"], device, "{v}");
    assert!(v["id"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    // Unix seconds, like every time in a payload (v1 had milliseconds).
    assert!(
        v["ts"]
            .as_f64()
            .is_some_and(|t| t > 1_600_000_000.0 && t < 1e11),
        "{v}"
    );
}

pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA with a server certificate for 127.0.0.1/localhost, and an unrelated second CA.
    pub fn new() -> Pki {
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

    pub fn path(&self, f: &str) -> std::path::PathBuf {
        self.dir.path().join(f)
    }
}

/// Whether `mosquitto_pub` and `mosquitto_sub` (Debian's mosquitto-clients) can be run.
pub fn clients_installed() -> bool {
    ["mosquitto_pub", "mosquitto_sub"].iter().all(|c| {
        std::process::Command::new(c)
            .arg("--help")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok()
    })
}
