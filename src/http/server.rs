//! The HTTP server of the web view: routes, the bearer token, and the MJPEG streams.
//!
//! One thread accepts, a fixed pool answers the short requests (page, JSON, snapshot, metrics)
//! and each MJPEG viewer gets a thread of its own, up to `max_streams`. Only `GET` and `HEAD` are
//! served and no request body is ever read.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, TrySendError};
use tiny_http::{Header, Method, Request, Response, Server};

use super::state::WebState;
use super::HttpError;

/// The page, compiled in.
const PAGE: &str = include_str!("page.html");
/// Threads answering short requests.
const WORKERS: usize = 4;
/// Requests waiting for a worker; beyond this a request gets 503 at once.
const BACKLOG: usize = 32;
/// Records `/api/events` returns at most.
const MAX_EVENTS: usize = 500;
const BOUNDARY: &str = "lookoutframe";

/// How the server behaves beyond what it serves.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub listen: SocketAddr,
    /// Every request must carry it (`Authorization: Bearer …` or `?token=…`) when set.
    pub token: Option<String>,
    /// MJPEG viewers at once; one more gets 503.
    pub max_streams: usize,
    /// Frames per second sent to one viewer at most (frames in between are skipped).
    pub stream_fps: f64,
}

/// A running web view; stopped (and its port freed) by [`HttpServer::stop`] or on drop.
pub struct HttpServer {
    server: Arc<Server>,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    state: Arc<WebState>,
}

/// What every request handler needs.
struct Ctx {
    state: Arc<WebState>,
    opts: ServerOptions,
    stop: Arc<AtomicBool>,
}

impl HttpServer {
    /// Binds `opts.listen` (port 0: any free port, see [`HttpServer::addr`]) and starts serving
    /// `state`.
    pub fn start(opts: ServerOptions, state: Arc<WebState>) -> Result<HttpServer, HttpError> {
        let bind_err = |reason: String| HttpError::Bind {
            addr: opts.listen,
            reason,
        };
        let server = Server::http(opts.listen).map_err(|e| bind_err(e.to_string()))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| bind_err("not an IP socket".into()))?;
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(Ctx {
            state: state.clone(),
            opts,
            stop: stop.clone(),
        });
        let (tx, rx) = bounded::<Request>(BACKLOG);
        for i in 0..WORKERS {
            let (rx, ctx) = (rx.clone(), ctx.clone());
            thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || {
                    for req in rx.iter() {
                        handle(req, &ctx);
                    }
                })
                .map_err(HttpError::Spawn)?;
        }
        let accept = {
            let (server, stop) = (server.clone(), stop.clone());
            thread::Builder::new()
                .name("http-accept".into())
                .spawn(move || {
                    while !stop.load(Ordering::SeqCst) {
                        let req = match server.recv_timeout(Duration::from_millis(250)) {
                            Ok(Some(r)) => r,
                            Ok(None) => continue,
                            Err(e) => {
                                log::warn!("http: {e}");
                                continue;
                            }
                        };
                        match tx.try_send(req) {
                            Ok(()) => {}
                            Err(TrySendError::Full(req)) => {
                                let _ = req.respond(text(503, "busy, try again"));
                            }
                            Err(TrySendError::Disconnected(_)) => return,
                        }
                    }
                })
                .map_err(HttpError::Spawn)?
        };
        Ok(HttpServer {
            server,
            addr,
            stop,
            accept: Some(accept),
            state,
        })
    }

    /// The address it listens on (the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, ends the open streams and frees the port.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.state.close();
        self.server.unblock();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn header(name: &str, value: &str) -> Header {
    // Only called with ASCII names and values made here, which `from_bytes` accepts.
    Header::from_bytes(name.as_bytes(), value.as_bytes())
        .unwrap_or_else(|()| Header::from_bytes(&b"X-Invalid"[..], &b"1"[..]).expect("ASCII"))
}

/// A body of known length goes out with `Content-Length`, never chunked (tiny_http chunks
/// anything over 32 KiB by default), so the simplest client can read it.
fn sized<R: std::io::Read>(r: Response<R>) -> Response<R> {
    r.with_chunked_threshold(usize::MAX)
}

fn text(code: u16, body: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    sized(
        Response::from_string(body)
            .with_status_code(code)
            .with_header(header("Content-Type", "text/plain; charset=utf-8")),
    )
}

fn json(v: &serde_json::Value) -> Response<std::io::Cursor<Vec<u8>>> {
    sized(
        Response::from_string(v.to_string())
            .with_header(header("Content-Type", "application/json"))
            .with_header(header("Cache-Control", "no-store")),
    )
}

/// `%XX` and `+` decoded; bytes that do not form UTF-8 are replaced.
fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            (b'+', _, _) => out.push(b' '),
            (c, _, _) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of `key` in a query string, decoded.
fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then(|| percent_decode(v))
    })
}

/// Compares in time independent of where the first difference is, so the token cannot be
/// guessed byte by byte from response times.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(req: &Request, query: &str, token: &str) -> bool {
    let bearer = req.headers().iter().find_map(|h| {
        if !h.field.equiv("Authorization") {
            return None;
        }
        let v = h.value.as_str().trim();
        let (scheme, rest) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim().to_string())
    });
    let given = bearer.or_else(|| query_value(query, "token"));
    given.is_some_and(|g| same(g.as_bytes(), token.as_bytes()))
}

fn accepts_openmetrics(req: &Request) -> bool {
    req.headers().iter().any(|h| {
        h.field.equiv("Accept") && h.value.as_str().contains("application/openmetrics-text")
    })
}

fn handle(req: Request, ctx: &Arc<Ctx>) {
    let url = req.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    if !matches!(req.method(), Method::Get | Method::Head) {
        let _ =
            req.respond(text(405, "only GET and HEAD").with_header(header("Allow", "GET, HEAD")));
        return;
    }
    if let Some(t) = &ctx.opts.token {
        if !authorized(&req, query, t) {
            let r = text(
                401,
                "a token is required: Authorization: Bearer <token> or ?token=<token>",
            )
            .with_header(header("WWW-Authenticate", "Bearer realm=\"lookout\""));
            let _ = req.respond(r);
            return;
        }
    }
    let st = &ctx.state;
    let res = match path {
        "/" | "/index.html" => req.respond(sized(
            Response::from_string(PAGE)
                .with_header(header("Content-Type", "text/html; charset=utf-8"))
                .with_header(header("Cache-Control", "no-store")),
        )),
        "/api/status" => req.respond(json(&st.status())),
        "/api/events" => {
            let num = |k: &str| query_value(query, k).and_then(|v| v.parse::<u64>().ok());
            let n = num("n").unwrap_or(50).min(MAX_EVENTS as u64) as usize;
            req.respond(json(&st.recent(num("since").unwrap_or(0), n)))
        }
        "/metrics" => {
            let om = accepts_openmetrics(&req);
            let ct = if om {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            } else {
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE
            };
            req.respond(sized(
                Response::from_string(st.metrics_text(om)).with_header(header("Content-Type", ct)),
            ))
        }
        "/stream.mjpg" => {
            start_stream(req, ctx);
            Ok(())
        }
        p => match p
            .strip_prefix("/api/snapshot/")
            .and_then(|r| r.strip_suffix(".jpg"))
        {
            Some(cam) if percent_decode(cam) == st.camera() => match st.jpeg() {
                Some((_, jpeg)) => req.respond(sized(
                    Response::from_data(jpeg.as_slice())
                        .with_header(header("Content-Type", "image/jpeg"))
                        .with_header(header("Cache-Control", "no-store")),
                )),
                None => req.respond(text(503, "no frame yet")),
            },
            Some(cam) => req.respond(text(
                404,
                &format!(
                    "no camera '{}' (this run has '{}')",
                    percent_decode(cam),
                    st.camera()
                ),
            )),
            None => req.respond(text(404, "not found")),
        },
    };
    if let Err(e) = res {
        log::debug!("http {path}: {e}");
    }
}

/// Hands the request to a stream thread of its own, or answers 503 when `max_streams` play.
fn start_stream(req: Request, ctx: &Arc<Ctx>) {
    let st = &ctx.state;
    let n = st.streams.fetch_add(1, Ordering::SeqCst) + 1;
    if n > ctx.opts.max_streams {
        st.streams.fetch_sub(1, Ordering::SeqCst);
        let _ = req.respond(text(
            503,
            &format!(
                "{} streams already open (http.max_streams)",
                ctx.opts.max_streams
            ),
        ));
        return;
    }
    st.metrics().stream_clients(n);
    let c = ctx.clone();
    let spawned = thread::Builder::new()
        .name("http-stream".into())
        .spawn(move || {
            if let Err(e) = stream(req, &c) {
                log::debug!("http stream ended: {e}");
            }
            let left = c.state.streams.fetch_sub(1, Ordering::SeqCst) - 1;
            c.state.metrics().stream_clients(left);
        });
    if let Err(e) = spawned {
        log::warn!("http: starting a stream thread: {e}");
        st.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `multipart/x-mixed-replace`: one JPEG part per new frame, never faster than `stream_fps`,
/// always the newest frame (a viewer that falls behind skips frames; nothing queues).
fn stream(req: Request, ctx: &Ctx) -> std::io::Result<()> {
    let head_only = *req.method() == Method::Head;
    // The head is written by hand: tiny_http's own responses buffer a body of unknown length,
    // and a stream must reach the viewer frame by frame.
    let mut w = req.into_writer();
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary={BOUNDARY}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n"
    )?;
    w.flush()?;
    if head_only {
        return Ok(());
    }
    let st = &ctx.state;
    let gap = Duration::from_secs_f64(1.0 / ctx.opts.stream_fps.clamp(0.1, 60.0));
    // The frame already there is sent at once, so a viewer of a paused source sees a picture.
    let mut seen = st.frame_seq().saturating_sub(1);
    let mut last_sent: Option<Instant> = None;
    while !ctx.stop.load(Ordering::SeqCst) && !st.is_closed() {
        if st.wait_newer(seen, Duration::from_millis(500)).is_none() {
            continue;
        }
        if let Some(t) = last_sent {
            if let Some(rest) = gap.checked_sub(t.elapsed()) {
                thread::sleep(rest);
            }
        }
        let Some((seq, jpeg)) = st.jpeg() else {
            continue;
        };
        seen = seq;
        write!(
            w,
            "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            jpeg.len()
        )?;
        w.write_all(&jpeg)?;
        w.write_all(b"\r\n")?;
        w.flush()?;
        st.metrics().stream_frame();
        last_sent = Some(Instant::now());
    }
    write!(w, "--{BOUNDARY}--\r\n")?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            query_value("a=1&token=x%2By+z", "token").as_deref(),
            Some("x+y z")
        );
        assert_eq!(query_value("token", "token").as_deref(), Some(""));
        assert_eq!(query_value("a=1", "token"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secre"));
    }
}
