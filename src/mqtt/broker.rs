//! An embedded MQTT broker (rumqttd) for `--broker embedded`: a robot or dashboard on the same
//! network can subscribe to the device directly, with no separate broker to install.
//!
//! rumqttd has no shutdown: once started, the broker runs until the process exits.
//! It keeps sessions and retained messages in memory only; a restart of lookout loses them
//! (the publisher's spool still re-sends anything unacknowledged).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::error::{MqttError, Result};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmbeddedBrokerConfig {
    /// Address to listen on. Loopback by default: exposing the broker to the network is a
    /// decision for the config file, since it has no authentication. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Largest payload accepted from a client (snapshots need room).
    pub max_payload_bytes: usize,
    pub max_connections: usize,
}

impl Default for EmbeddedBrokerConfig {
    fn default() -> Self {
        EmbeddedBrokerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            max_payload_bytes: 4 << 20,
            max_connections: 64,
        }
    }
}

/// A running embedded broker.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
}

impl EmbeddedBroker {
    /// Starts the broker on background threads and returns once it accepts connections.
    pub fn start(cfg: &EmbeddedBrokerConfig) -> Result<EmbeddedBroker> {
        let mut addr = cfg.listen;
        if addr.port() == 0 {
            // rumqttd does not report the port it bound, so find a free one first. Another
            // process could take it in between; the wait below then reports the failure.
            let l = TcpListener::bind(addr)
                .map_err(|e| broker_err(addr, format!("cannot bind: {e}")))?;
            addr = l.local_addr().map_err(|e| broker_err(addr, e))?;
        } else if TcpStream::connect_timeout(&connect_addr(addr), Duration::from_millis(200))
            .is_ok()
        {
            return Err(broker_err(addr, "already in use (another broker running?)"));
        }

        let config = rumqttd_config(cfg, addr);
        let (done_tx, done_rx) = crossbeam_channel::bounded::<String>(1);
        std::thread::Builder::new()
            .name("mqtt-broker".into())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                // start() blocks while the listener runs; returning means it failed or stopped.
                let why = match broker.start() {
                    Ok(()) => "stopped".to_string(),
                    Err(e) => e.to_string(),
                };
                let _ = done_tx.send(why);
            })
            .map_err(|e| MqttError::start("the embedded broker's thread", e))?;

        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect_timeout(&connect_addr(addr), Duration::from_millis(200)).is_ok() {
                return Ok(EmbeddedBroker { addr });
            }
            if let Ok(why) = done_rx.try_recv() {
                return Err(broker_err(addr, why));
            }
            if Instant::now() >= deadline {
                return Err(broker_err(addr, "not accepting connections (port taken?)"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `mqtt://host:port` for clients on this machine.
    pub fn url(&self) -> String {
        let a = connect_addr(self.addr);
        match a {
            SocketAddr::V4(v4) => format!("mqtt://{}:{}", v4.ip(), v4.port()),
            SocketAddr::V6(v6) => format!("mqtt://[{}]:{}", v6.ip(), v6.port()),
        }
    }
}

/// A wildcard listen address is reached through loopback.
fn connect_addr(a: SocketAddr) -> SocketAddr {
    let mut a = a;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => [127, 0, 0, 1].into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}

fn rumqttd_config(cfg: &EmbeddedBrokerConfig, addr: SocketAddr) -> rumqttd::Config {
    let connections = rumqttd::ConnectionSettings {
        connection_timeout_ms: 10_000,
        max_payload_size: cfg.max_payload_bytes,
        max_inflight_count: 256,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = rumqttd::ServerSettings {
        name: "lookout-v4".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let router = rumqttd::RouterConfig {
        max_connections: cfg.max_connections.max(1),
        max_outgoing_packet_count: 200,
        // Segments hold messages in memory per topic; two of a few payloads each keeps a
        // retained snapshot per camera without growing without bound.
        max_segment_size: (cfg.max_payload_bytes * 4).max(1 << 20),
        max_segment_count: 2,
        ..Default::default()
    };
    rumqttd::Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("1".to_string(), server)])),
        ..Default::default()
    }
}

fn broker_err(addr: SocketAddr, reason: impl std::fmt::Display) -> MqttError {
    MqttError::Broker {
        addr: addr.to_string(),
        reason: reason.to_string(),
    }
}
