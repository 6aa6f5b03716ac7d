//! The net thread: owns the connection. Runs rumqttc's event loop on a one-thread tokio
//! runtime, reconnects with jittered back-off, and reports every connection, publish written,
//! PUBACK and disconnect to the spool sender as a [`NetEvent`]; command messages go straight to
//! the command queue.
//!
//! Each connection gets a fresh rumqttc event loop: nothing stale survives a disconnect, and a
//! generation number on every event lets the spool sender ignore what an old connection said.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};

use super::config::{BrokerUrl, MqttConfig};
use super::handle::PublisherHandle;
use super::protocol::{Client, Link, LinkError, Session, Will, Wire};
use super::{Held, IncomingMessage, Stop, BUSY_STUB_BYTES, INCOMING_MAX_BYTES};
use crate::mqtt::error::{MqttError, Result};
use crate::mqtt::topics::{now_ms, DeviceState};

/// What the net thread tells the spool sender. `gen` is the connection it happened on.
pub(super) enum NetEvent {
    Connected {
        gen: u64,
        client: Client,
        /// The broker kept the durable session, subscriptions included.
        session_present: bool,
    },
    Published {
        gen: u64,
        pkid: u16,
    },
    Acked {
        gen: u64,
        pkid: u16,
        /// MQTT v5: the broker's reason for not accepting the message.
        refused: Option<String>,
    },
    DisconnectSent {
        gen: u64,
    },
    SubAcked {
        gen: u64,
    },
    Disconnected {
        gen: u64,
        error: String,
        /// It ended because the broker sent a packet over `max_incoming_bytes`.
        oversized: bool,
    },
}

pub(super) struct NetLoop {
    pub cfg: MqttConfig,
    pub url: BrokerUrl,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub handle: PublisherHandle,
    pub events: Sender<NetEvent>,
    pub incoming: Sender<IncomingMessage>,
    /// Payload bytes of the whole commands in `incoming` (see [`INCOMING_MAX_BYTES`]).
    pub incoming_bytes: Arc<AtomicUsize>,
    pub stop: Arc<Stop>,
    /// Connection generation; kept across restarts of the loop so stale events stay stale.
    pub gen: AtomicU64,
}

impl NetLoop {
    pub fn run(self) {
        while !self.stop.is_set() {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    log::error!("mqtt: cannot start the network runtime: {e}");
                    return;
                }
            };
            // A panic inside the MQTT client must not silence the device for good: report the
            // connection lost and start over, as after any other failure.
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                rt.block_on(self.run_async())
            }));
            if run.is_ok() {
                return;
            }
            drop(rt);
            let error = "internal error in the MQTT client (panic); restarting it".to_string();
            log::error!("mqtt: {error}");
            self.send(NetEvent::Disconnected {
                gen: self.gen.load(Ordering::SeqCst),
                error,
                oversized: false,
            });
            std::thread::sleep(Duration::from_millis(self.cfg.reconnect_max_ms));
        }
    }

    async fn run_async(&self) {
        let min = Duration::from_millis(self.cfg.reconnect_min_ms);
        let max = Duration::from_millis(self.cfg.reconnect_max_ms);
        let mut backoff = min;
        // Why the last attempt failed to connect: a failure is logged at WARN the first time and
        // whenever its reason changes, at DEBUG while it repeats, so a wrong CA or a stopped
        // broker is visible at the default level without a line every few seconds.
        let mut failing: Option<String> = None;
        while !self.stop.is_set() {
            let gen = self.gen.fetch_add(1, Ordering::SeqCst) + 1;
            let Some((error, connected)) = self.session(gen).await else {
                return; // stopped
            };
            self.send(NetEvent::Disconnected {
                gen,
                error: error.reason.clone(),
                oversized: error.oversized,
            });
            let reason = &error.reason;
            if connected {
                backoff = min;
                failing = None;
                log::warn!("mqtt: disconnected from {}: {reason}", self.url);
            } else if failing.as_deref() != Some(reason.as_str()) {
                log::warn!(
                    "mqtt: cannot connect to {}: {reason} (retrying; said again only if the reason changes)",
                    self.url
                );
                failing = Some(reason.clone());
            } else {
                log::debug!("mqtt: cannot connect to {}: {reason}", self.url);
            }
            // Jitter spreads a fleet's reconnects after a broker restart.
            let jitter = Duration::from_millis(now_ms() % (backoff.as_millis() as u64 / 4 + 1));
            tokio::select! {
                _ = tokio::time::sleep(backoff + jitter) => {}
                _ = self.stop.notify.notified() => {}
            }
            backoff = (backoff * 2).min(max);
        }
    }

    /// One connection, from connecting to losing it. `None` when stopped; otherwise why it
    /// ended and whether it had been established.
    async fn session(&self, gen: u64) -> Option<(LinkError, bool)> {
        let will = Will {
            topic: self.handle.topics().status(),
            payload: self
                .handle
                .status_payload(DeviceState::Offline, Some("connection lost")),
        };
        let (client, mut link) = Link::open(
            &self.cfg,
            &self.url,
            self.tls.clone(),
            Session {
                clean: false,
                will: Some(will),
                capacity: self.cfg.inflight as usize + 16,
                connect_timeout_s: self.cfg.connect_timeout_s,
            },
        );
        let mut connected = false;
        loop {
            let ev = tokio::select! {
                biased;
                _ = self.stop.notify.notified() => {
                    if self.stop.is_set() { return None; }
                    continue;
                }
                ev = link.poll(&self.cfg, &self.url) => ev,
            };
            match ev {
                Ok(Wire::ConnAck { session_present }) => {
                    connected = true;
                    self.send(NetEvent::Connected {
                        gen,
                        client: client.clone(),
                        session_present,
                    });
                }
                Ok(Wire::PublishWritten(pkid)) => self.send(NetEvent::Published { gen, pkid }),
                Ok(Wire::PubAck { pkid, refused }) => {
                    self.send(NetEvent::Acked { gen, pkid, refused })
                }
                Ok(Wire::SubAck) => self.send(NetEvent::SubAcked { gen }),
                Ok(Wire::Message(m)) => self.incoming(m),
                Ok(Wire::DisconnectWritten) => self.send(NetEvent::DisconnectSent { gen }),
                Ok(Wire::Other) => {}
                Err(e) => return Some((e, connected)),
            }
        }
    }

    /// Queues a command message for the command server without waiting. Whole while the
    /// queued payloads stay under [`INCOMING_MAX_BYTES`], as a "busy" stub past it, dropped
    /// (and counted) when the queue holds [`super::INCOMING_CAP`] messages.
    fn incoming(&self, mut msg: IncomingMessage) {
        let n = msg.payload.len();
        if self.incoming_bytes.load(Ordering::SeqCst) + n > INCOMING_MAX_BYTES {
            msg = busy_stub(msg);
            self.handle.with_stats(|st| st.incoming_busy += 1);
        } else {
            msg.held = Held::new(&self.incoming_bytes, n);
        }
        if let Err(TrySendError::Full(_)) = self.incoming.try_send(msg) {
            self.handle.with_stats(|st| st.incoming_dropped += 1);
        }
    }

    fn send(&self, ev: NetEvent) {
        // The spool thread outlives this one except at shutdown, when nothing is listening.
        let _ = self.events.send(ev);
    }
}

/// What a command that does not fit the queue keeps: enough to answer it "busy".
fn busy_stub(msg: IncomingMessage) -> IncomingMessage {
    let cut = |mut b: Vec<u8>| {
        b.truncate(BUSY_STUB_BYTES);
        b
    };
    let cut_str = |s: String| {
        let mut end = s.len().min(BUSY_STUB_BYTES);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s[..end].to_string()
    };
    IncomingMessage {
        topic: cut_str(msg.topic),
        payload: cut(msg.payload),
        // A response topic that does not fit would be a wrong address: reply on reply/<id>.
        response_topic: msg.response_topic.filter(|t| t.len() <= BUSY_STUB_BYTES),
        correlation: msg.correlation.map(cut),
        retain: msg.retain,
        busy: true,
        held: Held::default(),
    }
}

/// Connects once (clean session, its own client id, no last will) and disconnects: for
/// `lookout mqtt check`-style diagnostics and tests. The error says what to fix.
pub fn probe(cfg: &MqttConfig, timeout: Duration) -> Result<()> {
    let url = cfg.validate()?;
    let tls = cfg.tls_for(&url)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| MqttError::start("the network runtime", e))?;
    rt.block_on(async {
        let (client, mut link) = Link::open(
            cfg,
            &url,
            tls,
            Session {
                clean: true,
                will: None,
                capacity: 4,
                connect_timeout_s: timeout.as_secs(),
            },
        );
        let res = tokio::time::timeout(timeout, async {
            loop {
                match link.poll(cfg, &url).await {
                    Ok(Wire::ConnAck { .. }) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e.reason),
                }
            }
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer from {url} within {timeout:?}")));
        if res.is_ok() {
            let _ = client.try_disconnect();
            let _ = tokio::time::timeout(Duration::from_secs(1), link.poll(cfg, &url)).await;
        }
        res.map_err(|reason| MqttError::Connection {
            broker: url.to_string(),
            reason,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_stubs_keep_only_enough_to_reply_and_held_bytes_are_released() {
        let total = Arc::new(AtomicUsize::new(0));
        let msg = IncomingMessage {
            topic: "lookout/d/cmd/ping".into(),
            payload: vec![b'x'; 100_000],
            response_topic: Some("é".repeat(BUSY_STUB_BYTES)),
            correlation: Some(vec![1; 5000]),
            retain: false,
            busy: false,
            held: Held::new(&total, 100_000),
        };
        assert_eq!(total.load(Ordering::SeqCst), 100_000);
        let copy = msg.clone();
        let stub = busy_stub(msg);
        assert_eq!(total.load(Ordering::SeqCst), 0, "the whole message is gone");
        drop(copy);
        assert_eq!(total.load(Ordering::SeqCst), 0, "a copy was never counted");
        assert!(stub.busy);
        assert_eq!(stub.payload.len(), BUSY_STUB_BYTES);
        assert_eq!(stub.topic, "lookout/d/cmd/ping");
        assert_eq!(stub.response_topic, None, "too long to keep whole");
        assert_eq!(stub.correlation.map(|c| c.len()), Some(BUSY_STUB_BYTES));
    }
}
