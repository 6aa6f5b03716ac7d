//! The live web view and Prometheus endpoint of a run: a page with the annotated stream, the
//! rules' zones and lines, the last alerts and scene text and a zone/line editor, beside
//! `/api/status`, `/api/events`, `/api/snapshot/<camera>.jpg`, `/stream.mjpg` and `/metrics`.
//!
//! [`state`] holds what is shown (fed by the pipeline through `pipeline::WebSink` and a per-frame
//! hook; this room never imports the pipeline), [`server`] answers requests, [`metrics`] keeps
//! the Prometheus numbers. The page is one static file, `page.html`, compiled in.
//!
//! Crates, and why: `tiny_http` is a small synchronous server (4 dependencies, no async runtime),
//! which fits a few local viewers on a Pi better than a tokio stack, and lets an MJPEG stream be a
//! plain blocking writer on its own thread. `prometheus-client` is the Prometheus project's own
//! Rust client: its text encoder gets the escaping, `_total`/`_bucket` suffixes and the
//! OpenMetrics variant right, which hand-written text tends not to.
//!
//! Bounded by design: one frame slot instead of a queue (slow viewers skip frames), at most
//! `max_streams` streams, a fixed pool of request threads with a bounded queue (a burst beyond it
//! gets 503), rings of recent records of fixed length, and no request bodies read at all.

pub mod metrics;
pub mod server;
pub mod state;

pub use metrics::{Metrics, StageSample, Totals};
pub use server::{HttpServer, ServerOptions};
pub use state::{MqttProbe, Overlay, Shape, WebOptions, WebState};

/// Why the web view could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("http.listen {addr}: {reason}")]
    Bind {
        addr: std::net::SocketAddr,
        reason: String,
    },
    #[error("http: starting a server thread: {0}")]
    Spawn(std::io::Error),
}
