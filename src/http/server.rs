//! The HTTP server of the web view: connections, routes, the bearer token, the MJPEG streams.
//!
//! One thread accepts; a fixed pool of [`WORKERS`] threads reads each request (bounded, see
//! [`super::wire`]) and answers the short ones (page, JSON, snapshot, metrics); each MJPEG viewer
//! gets a thread of its own, up to `max_streams`. Only `GET` and `HEAD` are served, every answer
//! closes its connection, and sockets time out, so an idle or stalled peer holds nothing long.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, TrySendError};

use super::state::WebState;
use super::wire::{finish, read_request, Answer, Method, ReadError, Request};
use super::HttpError;

/// The page, compiled in.
const PAGE: &str = include_str!("page.html");
/// Threads reading requests and answering the short ones.
const WORKERS: usize = 4;
/// Connections waiting for a worker; beyond this a connection gets 503 at once.
const BACKLOG: usize = 32;
/// Records `/api/events` returns at most.
const MAX_EVENTS: usize = 500;
const BOUNDARY: &str = "lookoutframe";
/// A peer has this long to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A viewer that reads nothing for this long is dropped (its stream thread is freed).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// A pause after a failed accept (out of file descriptors and the like), so it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

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
        let bind_err = |e: std::io::Error| HttpError::Bind {
            addr: opts.listen,
            reason: e.to_string(),
        };
        let listener = TcpListener::bind(opts.listen).map_err(bind_err)?;
        let addr = listener.local_addr().map_err(bind_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let ctx = Arc::new(Ctx {
            state: state.clone(),
            opts,
            stop: stop.clone(),
        });
        let (tx, rx) = bounded::<TcpStream>(BACKLOG);
        for i in 0..WORKERS {
            let (rx, ctx) = (rx.clone(), ctx.clone());
            thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || {
                    for conn in rx.iter() {
                        serve(conn, &ctx);
                    }
                })
                .map_err(HttpError::Spawn)?;
        }
        let accept = thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || accept_loop(listener, tx, &stop))
            .map_err(HttpError::Spawn)?;
        Ok(HttpServer {
            addr,
            stop: ctx.stop.clone(),
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
        let Some(t) = self.accept.take() else {
            return;
        };
        // The accept loop blocks in `accept`; one connection of our own wakes it to see `stop`.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok() {
            let _ = t.join();
        } else {
            // Cannot wake it: leave the thread; it ends with the process.
            log::warn!("http: could not wake the accept loop on {wake}");
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(listener: TcpListener, tx: crossbeam_channel::Sender<TcpStream>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let conn = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                log::warn!("http: accept: {e}");
                thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        // Nodelay: an answer goes out as its head and body, and a stream part by part; waiting
        // to coalesce them (Nagle) would only add latency.
        let ready = conn.set_nodelay(true).is_ok()
            && conn.set_read_timeout(Some(READ_TIMEOUT)).is_ok()
            && conn.set_write_timeout(Some(WRITE_TIMEOUT)).is_ok();
        if !ready {
            continue;
        }
        match tx.try_send(conn) {
            Ok(()) => {}
            Err(TrySendError::Full(mut conn)) => {
                let _ = Answer::text(503, "busy, try again").send(&mut conn, false);
                finish(&conn);
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
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

/// Whether the request carries the token, as a bearer header or `?token=`.
fn authorized(req: &Request, token: &str) -> bool {
    let given = req
        .bearer
        .clone()
        .or_else(|| query_value(&req.query, "token"));
    given.is_some_and(|g| same(g.as_bytes(), token.as_bytes()))
}

/// Reads one request from `conn` and answers it (a stream moves to a thread of its own).
fn serve(mut conn: TcpStream, ctx: &Arc<Ctx>) {
    let req = match read_request(&mut conn) {
        Ok(r) => r,
        Err(ReadError::Gone(_)) => return,
        Err(ReadError::Refuse(code, why)) => {
            let _ = Answer::text(code, why).send(&mut conn, false);
            finish(&conn);
            return;
        }
    };
    if req.method == Method::Get && req.path == "/stream.mjpg" && allowed(&req, ctx) {
        start_stream(conn, ctx);
        return;
    }
    if let Err(e) = answer(&req, &mut conn, ctx) {
        log::debug!("http {}: {e}", req.path);
    }
    finish(&conn);
}

fn allowed(req: &Request, ctx: &Ctx) -> bool {
    ctx.opts.token.as_deref().is_none_or(|t| authorized(req, t))
}

/// Answers every request but a `GET` of the stream.
fn answer(req: &Request, conn: &mut TcpStream, ctx: &Arc<Ctx>) -> std::io::Result<()> {
    let head_only = req.method == Method::Head;
    if req.method == Method::Other {
        return Answer::text(405, "only GET and HEAD")
            .with("Allow", "GET, HEAD")
            .send(conn, false);
    }
    if !allowed(req, ctx) {
        return Answer::text(
            401,
            "a token is required: Authorization: Bearer <token> or ?token=<token>",
        )
        .with("WWW-Authenticate", "Bearer realm=\"lookout\"")
        .send(conn, head_only);
    }
    let st = &ctx.state;
    let query = req.query.as_str();
    let json = |v: serde_json::Value| v.to_string().into_bytes();
    match req.path.as_str() {
        "/" | "/index.html" => {
            Answer::new(200, "text/html; charset=utf-8", PAGE.as_bytes()).send(conn, head_only)
        }
        "/api/status" => {
            Answer::new(200, "application/json", &json(st.status())).send(conn, head_only)
        }
        "/api/events" => {
            let num = |k: &str| query_value(query, k).and_then(|v| v.parse::<u64>().ok());
            let n = num("n").unwrap_or(50).min(MAX_EVENTS as u64) as usize;
            let body = json(st.recent(num("since").unwrap_or(0), n));
            Answer::new(200, "application/json", &body).send(conn, head_only)
        }
        "/metrics" => {
            let om = req
                .accept
                .as_deref()
                .is_some_and(|a| a.contains("application/openmetrics-text"));
            let ct = if om {
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            } else {
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE
            };
            Answer::new(200, ct, st.metrics_text(om).as_bytes()).send(conn, head_only)
        }
        "/api/search" | "/api/summary" => {
            let get = |k: &str| query_value(query, k);
            let (code, body) = super::recall::answer(&req.path, get, st.recall());
            Answer::new(code, "application/json", &json(body)).send(conn, head_only)
        }
        // Only HEAD gets here (a GET becomes a stream in `serve`).
        "/stream.mjpg" => Answer::new(200, &stream_type(), b"").send(conn, true),
        p => match p
            .strip_prefix("/api/snapshot/")
            .and_then(|r| r.strip_suffix(".jpg"))
        {
            Some(cam) if percent_decode(cam) == st.camera() => match st.jpeg() {
                Some((_, jpeg)) => Answer::new(200, "image/jpeg", &jpeg).send(conn, head_only),
                None => Answer::text(503, "no frame yet").send(conn, head_only),
            },
            Some(cam) => {
                // Echo a bounded part of what was asked for.
                let asked: String = percent_decode(cam).chars().take(64).collect();
                let msg = format!("no camera '{asked}' (this run has '{}')", st.camera());
                Answer::text(404, &msg).send(conn, head_only)
            }
            None => Answer::text(404, "not found").send(conn, head_only),
        },
    }
}

fn stream_type() -> String {
    format!("multipart/x-mixed-replace; boundary={BOUNDARY}")
}

/// Hands the connection to a stream thread of its own, or answers 503 when `max_streams` play.
fn start_stream(mut conn: TcpStream, ctx: &Arc<Ctx>) {
    let st = &ctx.state;
    let n = st.streams.fetch_add(1, Ordering::SeqCst) + 1;
    if n > ctx.opts.max_streams {
        st.streams.fetch_sub(1, Ordering::SeqCst);
        let msg = format!(
            "{} streams already open (http.max_streams)",
            ctx.opts.max_streams
        );
        let _ = Answer::text(503, &msg).send(&mut conn, false);
        finish(&conn);
        return;
    }
    st.metrics().stream_clients(n);
    let c = ctx.clone();
    let spawned = thread::Builder::new()
        .name("http-stream".into())
        .spawn(move || {
            if let Err(e) = stream(&mut conn, &c) {
                log::debug!("http stream ended: {e}");
            }
            let _ = conn.shutdown(std::net::Shutdown::Both);
            let left = c.state.streams.fetch_sub(1, Ordering::SeqCst) - 1;
            c.state.metrics().stream_clients(left);
        });
    if let Err(e) = spawned {
        log::warn!("http: starting a stream thread: {e}");
        st.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `multipart/x-mixed-replace`: one JPEG part per new frame, never faster than `stream_fps`,
/// always the newest frame (a viewer that falls behind skips frames; nothing queues). A viewer
/// that stops reading is dropped after `WRITE_TIMEOUT`.
fn stream(w: &mut TcpStream, ctx: &Ctx) -> std::io::Result<()> {
    // No Content-Length: the stream ends when the connection does.
    write!(
        w,
        "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nCache-Control: no-store\r\n\
         Connection: close\r\n\r\n",
        stream_type()
    )?;
    w.flush()?;
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
        // Counted before the write, so a viewer that has read a part always finds it counted
        // (a part cut off by a viewer leaving is counted too).
        st.metrics().stream_frame();
        write!(
            w,
            "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            jpeg.len()
        )?;
        w.write_all(&jpeg)?;
        w.write_all(b"\r\n")?;
        w.flush()?;
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
