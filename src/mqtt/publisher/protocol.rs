//! One code path for MQTT 3.1.1 and 5. rumqttc has a separate client, event loop, options and
//! packet types per protocol version; this file hides them behind two enums — [`Client`], the
//! request handle, and [`Link`], the event stream — and one event type, [`Wire`], so the event
//! loop, the spool sender and the probe are each written once. What really differs between the
//! versions (session expiry, reason codes on PUBACK, request/response properties) is decided
//! here and nowhere else.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{
    Filter as Filter5, LastWill as Will5, Packet as Packet5, PubAckReason, PublishProperties,
    RetainForwardRule,
};
use rumqttc::v5::mqttbytes::QoS as Qos5;
use rumqttc::{ConnectionError, Event, LastWill, Outgoing, Packet, TlsConfiguration, Transport};

use super::config::{BrokerUrl, MqttConfig, Protocol};
use super::{Held, IncomingMessage};
use crate::mqtt::topics::Qos;

/// The connection's request handle, for either protocol version.
#[derive(Clone)]
pub(super) enum Client {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

impl Client {
    /// Queues a publish without waiting; `false` when rumqttc's request queue is full or the
    /// connection is gone. `correlation` needs MQTT 5; a 3.1.1 connection drops it.
    pub fn try_publish(
        &self,
        topic: String,
        qos: Qos,
        retain: bool,
        payload: Vec<u8>,
        correlation: Option<Vec<u8>>,
    ) -> bool {
        match self {
            Client::V311(c) => c.try_publish(topic, qos.into(), retain, payload).is_ok(),
            Client::V5(c) => {
                let q = match qos {
                    Qos::AtMostOnce => Qos5::AtMostOnce,
                    Qos::AtLeastOnce => Qos5::AtLeastOnce,
                };
                match correlation {
                    Some(c5) => {
                        let props = PublishProperties {
                            correlation_data: Some(c5.into()),
                            ..Default::default()
                        };
                        c.try_publish_with_properties(topic, q, retain, payload, props)
                            .is_ok()
                    }
                    None => c.try_publish(topic, q, retain, payload).is_ok(),
                }
            }
        }
    }

    /// QoS 0: a command missed while offline is better lost than run late, and the broker then
    /// never holds an over-sized command for re-delivery. MQTT 5 also asks for retained
    /// messages only when the subscription is new, so a retained command is not sent again on
    /// every reconnect (3.1.1 has no such option: the spool sender re-subscribes sparingly).
    pub fn try_subscribe_qos0(&self, filter: String) -> bool {
        match self {
            Client::V311(c) => c.try_subscribe(filter, rumqttc::QoS::AtMostOnce).is_ok(),
            Client::V5(c) => {
                let mut f = Filter5::new(filter, Qos5::AtMostOnce);
                f.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
                c.try_subscribe_many(vec![f]).is_ok()
            }
        }
    }

    pub fn try_disconnect(&self) -> bool {
        match self {
            Client::V311(c) => c.try_disconnect().is_ok(),
            Client::V5(c) => c.try_disconnect().is_ok(),
        }
    }
}

/// What the event loop reacts to, whichever protocol version produced it.
pub(super) enum Wire {
    /// The broker accepted the connection; `session_present`: it still had the durable session
    /// (and with it the command subscription) from an earlier connection.
    ConnAck { session_present: bool },
    /// A publish was written to the socket as packet `pkid` (0 for QoS 0).
    PublishWritten(u16),
    /// The broker acknowledged packet `pkid`; MQTT 5 may say why it did not accept it.
    PubAck { pkid: u16, refused: Option<String> },
    /// The broker acknowledged a SUBSCRIBE.
    SubAck,
    /// A message on a subscribed topic.
    Message(IncomingMessage),
    /// The DISCONNECT was written.
    DisconnectWritten,
    /// Anything else (pings, SUBACKs…).
    Other,
}

/// The last will: the retained status published by the broker if the connection is lost.
pub(super) struct Will {
    pub topic: String,
    pub payload: Vec<u8>,
}

/// How a connection is opened: the device's durable session, or a throw-away probe.
pub(super) struct Session {
    /// Clean session with its own client id and no will: a probe that leaves no trace.
    pub clean: bool,
    pub will: Option<Will>,
    /// Requests rumqttc may queue before `try_*` refuse.
    pub capacity: usize,
    pub connect_timeout_s: u64,
}

/// One connection's event stream, for either protocol version. Boxed: the loops are large
/// and of different sizes, and there is only one per connection.
pub(super) enum Link {
    V311(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

impl Link {
    /// A client and its event loop; nothing connects until the loop is polled.
    pub fn open(
        cfg: &MqttConfig,
        url: &BrokerUrl,
        tls: Option<Arc<rustls::ClientConfig>>,
        s: Session,
    ) -> (Client, Link) {
        let id = if s.clean {
            format!("{}-probe-{}", cfg.client_id(), std::process::id())
        } else {
            cfg.client_id()
        };
        let keep_alive = Duration::from_secs(cfg.keep_alive_s.max(1));
        let credentials = cfg
            .username
            .clone()
            .map(|u| (u, cfg.password.clone().unwrap_or_default()));
        let transport = tls.map(|t| Transport::tls_with_config(TlsConfiguration::Rustls(t)));
        // The options both versions share, set once for whichever options type `$o` is.
        macro_rules! common {
            ($o:expr) => {{
                $o.set_keep_alive(keep_alive);
                if let Some((u, p)) = credentials {
                    $o.set_credentials(u, p);
                }
                if let Some(t) = transport {
                    $o.set_transport(t);
                }
            }};
        }
        match cfg.protocol {
            Protocol::V311 => {
                let mut o = rumqttc::MqttOptions::new(id, url.host.clone(), url.port);
                common!(o);
                o.set_clean_session(s.clean);
                let out_max = cfg.spool.max_message_bytes as usize + (u16::MAX as usize) + 64;
                o.set_max_packet_size(cfg.max_incoming_bytes.max(1024), out_max);
                o.set_inflight(cfg.inflight.saturating_add(8));
                if let Some(w) = s.will {
                    o.set_last_will(LastWill::new(
                        w.topic,
                        w.payload,
                        rumqttc::QoS::AtLeastOnce,
                        true,
                    ));
                }
                let (client, mut el) = rumqttc::AsyncClient::new(o, s.capacity);
                // 3.1.1 keeps the connect timeout in the event loop's network options.
                let mut n = el.network_options();
                n.set_connection_timeout(s.connect_timeout_s.max(1));
                el.set_network_options(n);
                (Client::V311(client), Link::V311(Box::new(el)))
            }
            Protocol::V5 => {
                let mut o = rumqttc::v5::MqttOptions::new(id, url.host.clone(), url.port);
                common!(o);
                o.set_clean_start(s.clean);
                o.set_connection_timeout(s.connect_timeout_s.max(1));
                if !s.clean {
                    // In v5 a session ends with the connection unless it is given an expiry.
                    o.set_session_expiry_interval(Some(cfg.session_expiry_s));
                }
                // Announced to the broker, which then discards larger messages instead of
                // sending them.
                o.set_max_packet_size(Some(cfg.max_incoming_bytes.max(1024) as u32));
                o.set_outgoing_inflight_upper_limit(cfg.inflight.saturating_add(8));
                if let Some(w) = s.will {
                    o.set_last_will(Will5::new(
                        w.topic,
                        w.payload,
                        Qos5::AtLeastOnce,
                        true,
                        None,
                    ));
                }
                let (client, el) = rumqttc::v5::AsyncClient::new(o, s.capacity);
                (Client::V5(client), Link::V5(Box::new(el)))
            }
        }
    }

    /// The next event; an error ends the connection and says, in one line, what to check.
    pub async fn poll(&mut self, cfg: &MqttConfig, url: &BrokerUrl) -> Result<Wire, LinkError> {
        match self {
            Link::V311(el) => match el.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => Ok(Wire::ConnAck {
                    session_present: a.session_present,
                }),
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Ok(Wire::PublishWritten(pkid)),
                Ok(Event::Incoming(Packet::PubAck(ack))) => Ok(Wire::PubAck {
                    pkid: ack.pkid,
                    refused: None,
                }),
                Ok(Event::Incoming(Packet::Publish(p))) => Ok(Wire::Message(IncomingMessage {
                    topic: p.topic,
                    payload: p.payload.to_vec(),
                    response_topic: None,
                    correlation: None,
                    retain: p.retain,
                    busy: false,
                    held: Held::default(),
                })),
                Ok(Event::Outgoing(Outgoing::Disconnect)) => Ok(Wire::DisconnectWritten),
                Ok(Event::Incoming(Packet::SubAck(_))) => Ok(Wire::SubAck),
                Ok(_) => Ok(Wire::Other),
                Err(e) => Err(LinkError {
                    oversized: matches!(
                        e,
                        ConnectionError::MqttState(rumqttc::StateError::Deserialization(
                            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(_)
                        ))
                    ),
                    reason: describe_connection_error(&e, cfg, url),
                }),
            },
            Link::V5(el) => {
                use rumqttc::v5::Event as Event5;
                match el.poll().await {
                    Ok(Event5::Incoming(Packet5::ConnAck(a))) => Ok(Wire::ConnAck {
                        session_present: a.session_present,
                    }),
                    Ok(Event5::Outgoing(Outgoing::Publish(pkid))) => Ok(Wire::PublishWritten(pkid)),
                    Ok(Event5::Incoming(Packet5::PubAck(ack))) => {
                        let refused = match ack.reason {
                            PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
                            other => Some(format!(
                                "{other:?}{}",
                                ack.properties
                                    .and_then(|p| p.reason_string)
                                    .map(|r| format!(": {r}"))
                                    .unwrap_or_default()
                            )),
                        };
                        Ok(Wire::PubAck {
                            pkid: ack.pkid,
                            refused,
                        })
                    }
                    Ok(Event5::Incoming(Packet5::Publish(p))) => {
                        let props = p.properties.unwrap_or_default();
                        Ok(Wire::Message(IncomingMessage {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload.to_vec(),
                            response_topic: props.response_topic,
                            correlation: props.correlation_data.map(|c| c.to_vec()),
                            retain: p.retain,
                            busy: false,
                            held: Held::default(),
                        }))
                    }
                    Ok(Event5::Outgoing(Outgoing::Disconnect)) => Ok(Wire::DisconnectWritten),
                    Ok(Event5::Incoming(Packet5::SubAck(_))) => Ok(Wire::SubAck),
                    Ok(_) => Ok(Wire::Other),
                    Err(e) => {
                        let raw = e.to_string();
                        Err(LinkError {
                            // v5's error is a separate type; its text names the limit.
                            oversized: raw.contains("has been exceeded by packet"),
                            reason: describe_error_text(&raw, cfg, url),
                        })
                    }
                }
            }
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LinkError {
    /// One line that says what to check.
    pub reason: String,
    /// The broker sent a packet larger than `max_incoming_bytes` (rumqttc then drops the
    /// connection without reading it, so its topic is unknown).
    pub oversized: bool,
}

/// Turns rumqttc's error into one line that says what to check.
fn describe_connection_error(e: &ConnectionError, cfg: &MqttConfig, url: &BrokerUrl) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => format!(
            "broker {url} refused the connection ({code:?}): check username/password and client id"
        ),
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            format!("cannot reach {url}: connection refused (is the broker running?)")
        }
        ConnectionError::MqttState(rumqttc::StateError::Deserialization(
            rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(n),
        )) => format!(
            "{url} sent a packet of {n} bytes, over max_incoming_bytes = {} (a retained command?)",
            cfg.max_incoming_bytes
        ),
        _ => describe_error_text(&e.to_string(), cfg, url),
    }
}

/// The same from the error's text (rumqttc's v5 errors are a separate type with the same words).
fn describe_error_text(raw: &str, cfg: &MqttConfig, url: &BrokerUrl) -> String {
    let tls = raw.starts_with("TLS") || raw.contains("Tls");
    if tls && raw.to_ascii_lowercase().contains("certificate") {
        let ca = cfg
            .ca_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        format!(
            "TLS handshake with {url} failed: {raw} (is the broker's certificate signed by the CA in {ca}, and issued for {}?)",
            url.host
        )
    } else if tls {
        format!("TLS handshake with {url} failed: {raw}")
    } else if raw.starts_with("I/O") && raw.contains("refused") {
        format!("cannot reach {url}: connection refused (is the broker running?)")
    } else if raw.starts_with("Connection refused") {
        format!(
            "broker {url} refused the connection ({raw}): check username/password and client id"
        )
    } else if raw.contains("has been exceeded by packet") {
        format!(
            "{url} sent a packet over max_incoming_bytes = {} ({raw})",
            cfg.max_incoming_bytes
        )
    } else if raw.contains("Timeout") || raw.contains("timeout") || raw.contains("timed out") {
        format!("no answer from {url} ({raw})")
    } else {
        format!("{url}: {raw}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_say_what_to_check() {
        let cfg = MqttConfig {
            ca_file: Some("ca.pem".into()),
            ..MqttConfig::default()
        };
        let url = BrokerUrl::parse("mqtts://broker.lan").unwrap();
        let d = |raw: &str| describe_error_text(raw, &cfg, &url);
        let e = d("TLS: invalid peer certificate: UnknownIssuer");
        assert!(
            e.starts_with("TLS handshake with mqtts://broker.lan:8883 failed"),
            "{e}"
        );
        assert!(
            e.contains("ca.pem") && e.contains("issued for broker.lan"),
            "{e}"
        );
        assert!(d("I/O: Connection refused (os error 111)").contains("is the broker running?"));
        assert!(d("Connection refused, return code: `BadUserNamePassword`")
            .contains("check username/password"));
        assert!(d("Network timeout").starts_with("no answer from"));
        assert_eq!(d("odd"), "mqtts://broker.lan:8883: odd");
    }
}
