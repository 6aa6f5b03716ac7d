//! What the publisher is told: the `[mqtt]` settings, their validation (each error names its
//! key), the broker URL and the TLS client set-up built from the certificate files.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::mqtt::error::{MqttError, Result};
use crate::mqtt::spool::SpoolLimits;
use crate::mqtt::topics::{validate_prefix, ClassPolicies, Topics, DEFAULT_ROOT};

/// Everything the MQTT side needs; deserialisable from the `[mqtt]` table of the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://host[:port]` (default port 1883) or `mqtts://host[:port]` (8883).
    pub broker: String,
    /// Device id: the second topic level. Letters, digits, `-`, `_`… no `/`, `+` or `#`.
    pub device: String,
    /// Defaults to `lookout-<device>`. Must be stable: the broker keeps the durable session by it.
    pub client_id: Option<String>,
    pub keep_alive_s: u64,
    pub connect_timeout_s: u64,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM CA bundle that signs the broker's certificate (required for `mqtts://`).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key, for brokers that require client certificates.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub spool_path: PathBuf,
    pub spool: SpoolLimits,
    /// QoS/retain overrides per class.
    pub classes: ClassPolicies,
    /// Messages handed to the broker and not yet acknowledged, at most.
    pub inflight: u16,
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    /// Subscribe to `lookout/<device>/cmd/#`.
    pub commands: bool,
    /// Largest packet accepted from the broker. A larger one makes rumqttc drop the connection
    /// (it then reconnects), so memory stays bounded whatever a peer publishes.
    pub max_incoming_bytes: usize,
    /// Reported in the `online` status.
    pub board: String,
    /// `"3.1.1"` (default) or `"5"`.
    pub protocol: Protocol,
    /// MQTT v5 only: how long the broker keeps the durable session after a disconnect.
    pub session_expiry_s: u32,
    /// First topic level(s): topics are `<topic_prefix>/<device>/…`. Default `lookout`.
    pub topic_prefix: String,
    /// Publish Home Assistant MQTT discovery configs (retained) for this device's entities.
    pub discovery: bool,
    /// Where Home Assistant listens for discovery configs. Default `homeassistant`.
    pub discovery_prefix: String,
}

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Protocol {
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    #[serde(rename = "5")]
    V5,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            broker: "mqtt://127.0.0.1:1883".into(),
            device: "lookout".into(),
            client_id: None,
            keep_alive_s: 30,
            connect_timeout_s: 10,
            username: None,
            password: None,
            ca_file: None,
            client_cert: None,
            client_key: None,
            spool_path: PathBuf::from("lookout-spool.redb"),
            spool: SpoolLimits::default(),
            classes: ClassPolicies::default(),
            inflight: 64,
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
            commands: true,
            max_incoming_bytes: 256 << 10,
            board: "unknown".into(),
            protocol: Protocol::V311,
            session_expiry_s: 7 * 24 * 3600,
            topic_prefix: DEFAULT_ROOT.into(),
            discovery: true,
            discovery_prefix: "homeassistant".into(),
        }
    }
}

impl MqttConfig {
    pub fn client_id(&self) -> String {
        self.client_id
            .clone()
            .unwrap_or_else(|| format!("lookout-{}", self.device))
    }

    /// The device's topics under `topic_prefix`.
    pub fn topics(&self) -> Result<Topics> {
        Topics::with_root(&self.topic_prefix, &self.device)
    }

    pub fn validate(&self) -> Result<BrokerUrl> {
        let url = BrokerUrl::parse(&self.broker)?;
        self.topics()?;
        validate_prefix("discovery_prefix", &self.discovery_prefix)?;
        let bad = |key: &str, why: &str| Err(MqttError::config(key, why));
        if self.keep_alive_s == 0 {
            return bad("keep_alive_s", "must be at least 1 second");
        }
        if self.inflight == 0 {
            return bad("inflight", "must be at least 1");
        }
        if self.client_id().is_empty() {
            return bad("client_id", "must not be empty");
        }
        if self.client_cert.is_some() != self.client_key.is_some() {
            return bad("client_cert", "client_cert and client_key go together");
        }
        if url.tls && self.ca_file.is_none() {
            return bad(
                "ca_file",
                "mqtts:// needs the CA that signed the broker's certificate",
            );
        }
        if self.protocol == Protocol::V5 && self.keep_alive_s < 5 {
            return bad(
                "keep_alive_s",
                "MQTT 5 needs at least 5 seconds (rumqttc's minimum)",
            );
        }
        if self.reconnect_min_ms == 0 || self.reconnect_max_ms < self.reconnect_min_ms {
            return bad(
                "reconnect_min_ms",
                "need 0 < reconnect_min_ms ≤ reconnect_max_ms",
            );
        }
        Ok(url)
    }

    /// The TLS client set-up when the URL asks for TLS, `None` for plain TCP.
    pub(super) fn tls_for(&self, url: &BrokerUrl) -> Result<Option<Arc<rustls::ClientConfig>>> {
        Ok(if url.tls {
            Some(Arc::new(tls_config(self)?))
        } else {
            None
        })
    }
}

/// A parsed `mqtt://` / `mqtts://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl BrokerUrl {
    pub fn parse(url: &str) -> Result<BrokerUrl> {
        let bad = |why: &str| {
            Err(MqttError::BrokerUrl {
                url: url.to_string(),
                reason: why.to_string(),
            })
        };
        let Some((scheme, rest)) = url.split_once("://") else {
            return bad("expected mqtt://host:port or mqtts://host:port");
        };
        let tls = match scheme {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" | "tls" => true,
            _ => return bad("scheme must be mqtt or mqtts"),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.contains('@') {
            return bad("give only host and port (credentials go in username/password)");
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let Some((h, p)) = v6.split_once(']') else {
                return bad("unclosed [");
            };
            (h.to_string(), p.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        if host.is_empty() {
            return bad("missing host");
        }
        let port = match port {
            Some(p) => match p.parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => return bad("port must be 1-65535"),
            },
            None if tls => 8883,
            None => 1883,
        };
        Ok(BrokerUrl { tls, host, port })
    }
}

impl std::fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Builds the rustls client configuration from the CA file and optional client certificate.
pub fn tls_config(cfg: &MqttConfig) -> Result<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    // rumqttc is built without a crypto provider; ring is the one this crate ships.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = cfg
        .ca_file
        .as_ref()
        .ok_or_else(|| MqttError::config("ca_file", "mqtts:// needs a CA file"))?;
    let pem_err = |p: &PathBuf, what: &str, e: &dyn std::fmt::Display| MqttError::Tls {
        path: p.clone(),
        reason: format!("{what}: {e}"),
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| pem_err(ca, "reading CA certificates", &e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| pem_err(ca, "reading CA certificates", &e))?;
    if certs.is_empty() {
        return Err(pem_err(ca, "CA file", &"no PEM certificates in it"));
    }
    for c in certs {
        roots
            .add(c)
            .map_err(|e| pem_err(ca, "CA certificate", &e))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| pem_err(ca, "TLS protocol versions", &e))?
    .with_root_certificates(roots);
    let config = match (&cfg.client_cert, &cfg.client_key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .map_err(|e| pem_err(cert, "reading client certificate", &e))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| pem_err(cert, "reading client certificate", &e))?;
            let key_der = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| pem_err(key, "reading client key", &e))?;
            builder
                .with_client_auth_cert(chain, key_der)
                .map_err(|e| pem_err(cert, "client certificate/key", &e))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mqtt::topics::MessageClass;

    #[test]
    fn broker_urls() {
        let u = BrokerUrl::parse("mqtt://example.org").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port),
            (false, "example.org", 1883)
        );
        let u = BrokerUrl::parse("mqtts://10.0.0.2:9999/").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (true, "10.0.0.2", 9999));
        let u = BrokerUrl::parse("mqtts://[::1]").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8883));
        assert_eq!(u.to_string(), "mqtts://[::1]:8883");
        for bad in [
            "example.org",
            "http://x",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:99999",
            "mqtt://u:p@h",
            "mqtt://h/x",
        ] {
            assert!(
                matches!(BrokerUrl::parse(bad), Err(MqttError::BrokerUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn config_validation_names_the_key() {
        let mut c = MqttConfig {
            broker: "mqtts://h".into(),
            ..MqttConfig::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("ca_file"));
        c.broker = "mqtt://h".into();
        c.keep_alive_s = 0;
        assert!(
            matches!(c.validate(), Err(MqttError::Config { key, .. }) if key == "keep_alive_s")
        );
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("keep_alive_s"));
        c.keep_alive_s = 5;
        c.device = "a/b".into();
        assert!(matches!(c.validate(), Err(MqttError::Name { .. })));
        let parsed: MqttConfig = toml::from_str(
            "broker = \"mqtt://b:1\"\ndevice = \"porch\"\n[spool]\nmax_messages = 5\n[classes.scene]\nretain = true\n",
        )
        .unwrap();
        assert_eq!(parsed.spool.max_messages, 5);
        assert!(parsed.classes.policy(MessageClass::Scene).retain);
        assert!(toml::from_str::<MqttConfig>("brokr = \"x\"").is_err());
        let c: MqttConfig = toml::from_str("topic_prefix = \"site/cams\"\ndevice = \"d\"").unwrap();
        assert_eq!(c.topics().unwrap().status(), "site/cams/d/status");
        assert!(c.discovery && c.discovery_prefix == "homeassistant");
        for (key, bad) in [
            ("topic_prefix", "topic_prefix = \"a/+\""),
            ("discovery_prefix", "discovery_prefix = \"\""),
        ] {
            let c: MqttConfig = toml::from_str(bad).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn tls_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let cfg = MqttConfig {
            broker: "mqtts://h".into(),
            ca_file: Some(ca.clone()),
            ..MqttConfig::default()
        };
        match tls_config(&cfg) {
            Err(MqttError::Tls { path, .. }) => assert_eq!(path, ca),
            other => panic!("expected a TLS error naming {ca:?}, got {other:?}"),
        }
    }
}
