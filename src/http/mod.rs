//! The live web view and Prometheus endpoint of a run: a page with the annotated stream, the
//! rules' zones and lines, the last alerts and scene text and a zone/line editor, beside
//! `/api/status`, `/api/events`, `/api/snapshot/<camera>.jpg`, `/stream.mjpg` and `/metrics`,
//! and with an event store `/api/search` and `/api/summary` ([`recall`]).
//!
//! [`state`] holds what is shown (fed by the pipeline through `pipeline::WebSink` and a per-frame
//! hook; this room never imports the pipeline), [`server`] runs the connections and routes,
//! [`wire`] reads a request and writes an answer, [`metrics`] keeps the Prometheus numbers. The
//! page is one static file, `page.html`, compiled in.
//!
//! Crates, and why: requests are parsed by `httparse` (the parser under hyper and ureq, already
//! in our tree) over `std::net`, not by a server crate. `tiny_http`, the small synchronous server
//! this started on, reads a request line and headers without any limit and sets no socket
//! timeouts, so one peer could exhaust a Pi's memory before the token is even checked; serving
//! only `GET`/`HEAD` without bodies and closing after each answer, the bounded reader in `wire.rs`
//! is smaller than working around that. `prometheus-client` is the Prometheus project's own Rust
//! client: its encoders get the escaping, the `_total`/`_bucket` suffixes and the OpenMetrics
//! variant right, which hand-written text tends not to.
//!
//! Bounded by design: one frame slot instead of a queue (slow viewers skip frames), at most
//! `max_streams` streams, a fixed pool of request threads with a bounded queue (a burst beyond it
//! gets 503), request heads of at most 8 KiB read within 5 s, viewers that stop reading dropped
//! after 10 s, rings of recent records of fixed length, and no request bodies read at all.

pub mod metrics;
pub mod recall;
pub mod server;
pub mod state;
pub mod wire;

pub use metrics::{Metrics, StageSample, Totals};
pub use recall::{RecallFn, RecallQuery};
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
