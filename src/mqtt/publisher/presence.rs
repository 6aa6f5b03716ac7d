//! The presence connection: a second, tiny MQTT connection whose only job is the plain retained
//! `availability` topic (`online` / `offline`, no JSON).
//!
//! Why a second connection: MQTT gives a connection exactly one last will, and the main
//! connection's will is the JSON `status` that `lookout watch` and existing subscribers read.
//! Home Assistant (like Frigate and zigbee2mqtt users) matches availability against plain
//! `online`/`offline`, and that too must turn `offline` when the process dies without a word.
//! So this connection carries that will: `online` (retained) on every connect, `offline` from the
//! broker when the connection is lost, and `offline` from us before a clean disconnect. It never
//! subscribes and publishes nothing else, so its session holds nothing.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::config::{BrokerUrl, MqttConfig};
use super::protocol::{Client, Link, Session, Will, Wire};
use super::Stop;
use crate::mqtt::error::{MqttError, Result};
use crate::mqtt::topics::{now_ms, Qos};

const ONLINE: &[u8] = b"online";
const OFFLINE: &[u8] = b"offline";

/// Owns the presence thread; [`Presence::stop`] says `offline` and disconnects.
pub(super) struct Presence {
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
}

impl Presence {
    /// Starts connecting in the background as `<client_id>-availability`.
    pub fn start(
        cfg: &MqttConfig,
        url: BrokerUrl,
        tls: Option<Arc<rustls::ClientConfig>>,
        topic: String,
    ) -> Result<Presence> {
        let mut cfg = cfg.clone();
        // Its own stable id: the broker must not confuse it with (and kick) the main connection.
        cfg.client_id = Some(format!("{}-availability", cfg.client_id()));
        let stop = Arc::new(Stop::default());
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("mqtt-presence".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        log::error!("mqtt: cannot start the presence runtime: {e}");
                        return;
                    }
                };
                rt.block_on(run(&cfg, &url, tls, &topic, &s));
            })
            .map_err(|e| MqttError::start("the presence thread", e))?;
        Ok(Presence {
            stop,
            thread: Some(thread),
        })
    }

    /// Publishes `offline`, disconnects (so the broker does not send the will) and joins.
    pub fn stop(&mut self) {
        self.stop.set();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Presence {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn run(
    cfg: &MqttConfig,
    url: &BrokerUrl,
    tls: Option<Arc<rustls::ClientConfig>>,
    topic: &str,
    stop: &Stop,
) {
    let min = Duration::from_millis(cfg.reconnect_min_ms);
    let max = Duration::from_millis(cfg.reconnect_max_ms);
    let mut backoff = min;
    while !stop.is_set() {
        let (client, mut link) = Link::open(
            cfg,
            url,
            tls.clone(),
            Session {
                clean: false,
                will: Some(Will {
                    topic: topic.to_string(),
                    payload: OFFLINE.to_vec(),
                }),
                capacity: 8,
                connect_timeout_s: cfg.connect_timeout_s,
            },
        );
        let mut connected = false;
        loop {
            tokio::select! {
                biased;
                _ = stop.notify.notified() => {
                    if stop.is_set() {
                        if connected {
                            goodbye(&client, &mut link, cfg, url, topic).await;
                        }
                        return;
                    }
                }
                ev = link.poll(cfg, url) => match ev {
                    Ok(Wire::ConnAck { .. }) => {
                        connected = true;
                        backoff = min;
                        if !client.try_publish(topic.to_string(), Qos::AtLeastOnce, true, ONLINE.to_vec(), None) {
                            log::warn!("mqtt: cannot queue the availability message");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        log::debug!("mqtt: presence connection: {}", e.reason);
                        break;
                    }
                },
            }
        }
        let jitter = Duration::from_millis(now_ms() % (backoff.as_millis() as u64 / 4 + 1));
        tokio::select! {
            _ = tokio::time::sleep(backoff + jitter) => {}
            _ = stop.notify.notified() => {}
        }
        backoff = (backoff * 2).min(max);
    }
}

/// `offline`, then DISCONNECT; waits (at most 2 s) until the disconnect is written.
async fn goodbye(client: &Client, link: &mut Link, cfg: &MqttConfig, url: &BrokerUrl, topic: &str) {
    let _ = client.try_publish(
        topic.to_string(),
        Qos::AtLeastOnce,
        true,
        OFFLINE.to_vec(),
        None,
    );
    if !client.try_disconnect() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match link.poll(cfg, url).await {
                Ok(Wire::DisconnectWritten) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}
