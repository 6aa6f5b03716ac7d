//! Motion-JPEG over HTTP, as IP cameras, `mjpg-streamer`, ESP32-CAM and OctoPrint serve it: one
//! long `multipart/x-mixed-replace` response whose parts are JPEGs.
//!
//! Plain blocking `std::net`: one connection, one thread, no async runtime. Every buffer that
//! a peer can grow is bounded ([`MAX_FRAME_BYTES`] per part, small limits on header lines), and
//! so is what a part may make the reader skip, so a broken or hostile camera can cost a bad
//! frame or a reconnect but not the board's memory, nor hold the capture thread.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::inbuf::{find, InBuf};
use super::retry::{Backoff, Retry, StopFlag, STOP_POLL};
use super::stamp::FrameStamper;
use super::uri::{self, Params};
use super::{pixfmt, CaptureError, CaptureStats, Frame, FrameSource, MAX_FRAME_BYTES};
use crate::imageio::jpeg::{JpegScanner, Scan};

/// Where and how to fetch the stream.
///
/// URI form (the path and query are the camera's own and are sent as they are):
///
/// ```text
/// mjpeg+http://[user:password@]host[:port][/path][?query][#lookout-parameters]
/// mjpeg+http://192.168.1.64/video.cgi
/// mjpeg+http://admin:secret@cam.local:8080/?action=stream
/// mjpeg+http://[fe80::1%25eth0]:81/stream
/// mjpeg+http://cam.local/stream#max_part_bytes=4194304
/// ```
///
/// `user:password` (percent-decoded) is sent as HTTP Basic authentication. lookout's own
/// parameters go in the fragment (after `#`), which HTTP never sends, because the query string
/// belongs to the camera:
///
/// - `max_part_bytes` (1 to 1073741824, default 16 MiB): the largest JPEG part accepted. A part
///   that declares or turns out to be larger is counted as a bad frame and skipped by searching
///   for the next boundary, reading no more than this (plus 64 KiB) before giving up on the
///   connection and reconnecting.
///
/// Timeouts and back-off are fields here only.
#[derive(Debug, Clone, PartialEq)]
pub struct MjpegOptions {
    pub host: String,
    pub port: u16,
    /// Path and query to request, starting with `/`.
    pub path: String,
    pub credentials: Option<(String, String)>,
    pub connect_timeout: Duration,
    /// A connection that delivers nothing for this long counts as lost.
    pub read_timeout: Duration,
    pub backoff: Backoff,
    /// Largest accepted part; bigger ones are skipped and counted as bad frames.
    pub max_part_bytes: usize,
}

impl MjpegOptions {
    pub fn new(host: impl Into<String>, port: u16, path: impl Into<String>) -> Self {
        MjpegOptions {
            host: host.into(),
            port,
            path: path.into(),
            credentials: None,
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(10),
            backoff: Backoff::default(),
            max_part_bytes: MAX_FRAME_BYTES,
        }
    }

    pub fn parse(u: &str) -> Result<Self, CaptureError> {
        let rest = u
            .get(..13)
            .filter(|s| s.eq_ignore_ascii_case("mjpeg+http://"))
            .map(|_| &u[13..])
            .ok_or_else(|| {
                CaptureError::uri(u, "scheme", "expected mjpeg+http://host[:port]/path")
            })?;
        let (rest, fragment) = match rest.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (rest, None),
        };
        let mut params = Params::parse(u, fragment)?;
        let max_part = params.u32("max_part_bytes", 1 << 30)?;
        params.finish(&["max_part_bytes"])?;
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        let path = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(CaptureError::uri(
                u,
                "path",
                "contains spaces or control characters (percent-encode them)",
            ));
        }
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let credentials = match userinfo {
            None => None,
            Some(ui) => {
                let (user, pass) = ui.split_once(':').unwrap_or((ui, ""));
                Some((
                    uri::percent_decode(u, "user", user)?,
                    uri::percent_decode(u, "password", pass)?,
                ))
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| CaptureError::uri(u, "host", "unclosed [ in IPv6 address"))?;
            (uri::percent_decode(u, "host", h)?, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(CaptureError::uri(u, "host", "is empty"));
        }
        let port = match port {
            None | Some("") => 80,
            Some(p) => p.parse::<u16>().ok().filter(|&p| p > 0).ok_or_else(|| {
                CaptureError::uri(u, "port", format!("'{p}' is not a port number"))
            })?,
        };
        let mut o = MjpegOptions::new(host, port, path);
        o.credentials = credentials;
        if let Some(n) = max_part {
            o.max_part_bytes = n as usize;
        }
        Ok(o)
    }

    /// The stream's URI with the password left out.
    pub fn display_uri(&self) -> String {
        let user = match &self.credentials {
            Some((u, _)) => format!("{u}:***@"),
            None => String::new(),
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("mjpeg+http://{user}{host}:{}{}", self.port, self.path)
    }
}

/// Frames from an HTTP MJPEG stream, reconnecting with back-off when the connection drops.
pub struct MjpegHttpSource {
    opts: MjpegOptions,
    conn: Option<Multipart>,
    retry: Retry,
    stamp: FrameStamper,
}

impl MjpegHttpSource {
    /// Connect and read the response headers, so that a wrong address, path or password is
    /// reported now rather than as an endless series of reconnections.
    pub fn open(opts: MjpegOptions) -> Result<Self, CaptureError> {
        let label: Arc<str> = opts.display_uri().into();
        let retry = Retry::new(opts.backoff);
        let conn = connect(&opts, &label, retry.stop())?;
        Ok(MjpegHttpSource {
            retry,
            opts,
            conn: Some(conn),
            stamp: FrameStamper::new(label, None),
        })
    }

    fn lost(&mut self, reason: String) -> CaptureError {
        self.conn = None;
        self.retry.lost_link(self.stamp.label(), reason)
    }
}

impl FrameSource for MjpegHttpSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        if self.retry.stop().is_set() {
            self.conn = None;
            return Ok(None);
        }
        let conn = match self.conn.as_mut() {
            Some(c) => c,
            None => {
                let (opts, label, stop) =
                    (&self.opts, self.stamp.label(), self.retry.stop().clone());
                let Some(c) = self.retry.reconnect(|| connect(opts, label, &stop))? else {
                    return Ok(None);
                };
                log::info!("{label}: reconnected");
                self.stamp.reconnected();
                self.conn.insert(c)
            }
        };
        match conn.next_part() {
            Ok(Part::Jpeg(b)) => self.stamp.next(pixfmt::mjpeg_to_rgb(&b)),
            Ok(Part::Rejected(why)) => Err(self.stamp.skip(why)),
            Ok(Part::End) => Err(self.lost("the server ended the stream".into())),
            Err(_) if self.retry.stop().is_set() => {
                self.conn = None;
                Ok(None)
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                let secs = self.opts.read_timeout.as_secs_f64();
                Err(self.lost(format!("no data for {secs:.1} s")))
            }
            Err(e) => Err(self.lost(e.to_string())),
        }
    }

    fn describe(&self) -> String {
        let state = match &self.conn {
            Some(c) => format!("boundary {:?}", String::from_utf8_lossy(&c.delimiter[2..])),
            None => "disconnected".into(),
        };
        format!("{} ({state})", self.stamp.label())
    }

    fn stats(&self) -> CaptureStats {
        self.stamp.stats()
    }

    fn watch_stop(&mut self, stop: Arc<AtomicBool>) {
        self.retry.stop().watch(stop);
    }
}

/// The socket as the parsers read it. Each read waits in [`STOP_POLL`] slices so that a set
/// stop flag ends it promptly, and fails with `TimedOut` once `idle` passes without data.
struct Link {
    sock: TcpStream,
    idle: Duration,
    stop: StopFlag,
}

impl Read for Link {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let since = Instant::now();
        loop {
            if self.stop.is_set() {
                return Err(io::Error::other("stopped"));
            }
            match self.sock.read(out) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if since.elapsed() >= self.idle {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "no data"));
                    }
                }
                r => return r,
            }
        }
    }
}

const MAX_HEADER_LINE: usize = 8 * 1024;
const MAX_HEADERS: usize = 100;

/// Open the connection and read up to the start of the multipart body; reads give up when
/// `stop` is set. The errors are [`CaptureError::Fatal`], which a reconnection turns into
/// [`CaptureError::Disconnected`].
fn connect(o: &MjpegOptions, label: &Arc<str>, stop: &StopFlag) -> Result<Multipart, CaptureError> {
    let fail = |reason: String| CaptureError::fatal(label, reason);
    let addrs = (o.host.as_str(), o.port)
        .to_socket_addrs()
        .map_err(|e| fail(format!("cannot resolve {}: {e}", o.host)))?;
    let mut last = None;
    let mut stream = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, o.connect_timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(format!("cannot connect to {a}: {e}")),
        }
    }
    let mut stream =
        stream.ok_or_else(|| fail(last.unwrap_or_else(|| format!("{} has no address", o.host))))?;
    let setup = |s: &TcpStream| -> io::Result<()> {
        // Short socket timeouts; `Link` adds them up to `read_timeout`.
        s.set_read_timeout(Some(
            o.read_timeout.min(STOP_POLL).max(Duration::from_millis(1)),
        ))?;
        s.set_write_timeout(Some(o.read_timeout))?;
        s.set_nodelay(true)
    };
    setup(&stream).map_err(|e| fail(format!("socket setup: {e}")))?;

    let host = if o.host.contains(':') {
        format!("[{}]", o.host)
    } else {
        o.host.clone()
    };
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: lookout/{}\r\nAccept: multipart/x-mixed-replace, */*\r\nConnection: close\r\n",
        o.path,
        o.port,
        env!("CARGO_PKG_VERSION")
    );
    if let Some((u, p)) = &o.credentials {
        req += &format!(
            "Authorization: Basic {}\r\n",
            base64(format!("{u}:{p}").as_bytes())
        );
    }
    req += "\r\n";
    stream
        .write_all(req.as_bytes())
        .map_err(|e| fail(format!("sending request: {e}")))?;

    let mut input = InBuf::new(Link {
        sock: stream,
        idle: o.read_timeout,
        stop: stop.clone(),
    });
    let head = read_head(&mut input).map_err(|e| fail(format!("reading response: {e}")))?;
    if head.status != 200 {
        let mut msg = format!("HTTP {} {}", head.status, head.reason);
        if head.status == 401 {
            let scheme = head.header("www-authenticate").unwrap_or("");
            if scheme.to_ascii_lowercase().starts_with("digest") {
                msg += " (the camera asks for Digest authentication, which is not supported)";
            } else if o.credentials.is_none() {
                msg += " (give user:password@ in the URI)";
            } else {
                msg += " (check the user and password)";
            }
        }
        return Err(fail(msg));
    }
    let ctype = head.header("content-type").unwrap_or("").to_string();
    if !ctype.to_ascii_lowercase().starts_with("multipart/") {
        return Err(fail(format!(
            "Content-Type is {ctype:?}, not a multipart MJPEG stream (is this a snapshot URL?)"
        )));
    }
    let chunked = head
        .header("transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    let body: Box<dyn Read + Send> = if chunked {
        Box::new(Chunked {
            inner: input,
            left: 0,
            done: false,
        })
    } else {
        Box::new(input)
    };
    let mut body = InBuf::new(body);
    let boundary = match boundary_param(&ctype) {
        Some(b) => b,
        None => sniff_boundary(&mut body).map_err(|e| fail(format!("no boundary: {e}")))?,
    };
    let core = boundary.trim_start_matches('-');
    if core.is_empty() || core.len() > 200 {
        return Err(fail(format!("unusable multipart boundary {boundary:?}")));
    }
    // Cameras disagree on whether the header's boundary includes the leading "--"; searching
    // for "--" + the boundary without its dashes matches both spellings.
    let mut delimiter = b"--".to_vec();
    delimiter.extend_from_slice(core.as_bytes());
    Ok(Multipart {
        input: body,
        delimiter,
        max_part: o.max_part_bytes,
    })
}

struct Head {
    status: u16,
    reason: String,
    headers: Vec<(String, String)>,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn read_head<R: Read>(input: &mut InBuf<R>) -> io::Result<Head> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let line = input
        .read_line(MAX_HEADER_LINE)?
        .ok_or_else(|| bad("connection closed before a response".into()))?;
    let line = String::from_utf8_lossy(&line).to_string();
    let mut it = line.splitn(3, ' ');
    let version = it.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("not an HTTP/1.x response: {line:?}")));
    }
    let status = it
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad(format!("bad status line {line:?}")))?;
    let reason = it.next().unwrap_or("").trim().to_string();
    let mut headers = Vec::new();
    loop {
        let line = input
            .read_line(MAX_HEADER_LINE)?
            .ok_or_else(|| bad("connection closed inside the headers".into()))?;
        if line.is_empty() {
            break;
        }
        if headers.len() == MAX_HEADERS {
            return Err(bad(format!("more than {MAX_HEADERS} headers")));
        }
        let line = String::from_utf8_lossy(&line);
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    Ok(Head {
        status,
        reason,
        headers,
    })
}

/// The `boundary` parameter of a Content-Type, unquoted.
fn boundary_param(ctype: &str) -> Option<String> {
    ctype.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
            .filter(|b| !b.is_empty())
    })
}

/// Some cameras send `multipart/x-mixed-replace` without a boundary parameter; the first line
/// of the body that starts with `--` is then the delimiter.
fn sniff_boundary<R: Read>(body: &mut InBuf<R>) -> io::Result<String> {
    const WINDOW: usize = 4096;
    loop {
        let d = body.data();
        let window = &d[..d.len().min(WINDOW)];
        if let Some(i) = find(window, b"--") {
            if let Some(e) = window[i..].iter().position(|&b| b == b'\r' || b == b'\n') {
                let b = String::from_utf8_lossy(&window[i + 2..i + e]).to_string();
                // Leave the delimiter in place for the first part.
                body.consume(i);
                return Ok(b);
            }
        }
        if d.len() >= WINDOW || body.fill()? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "no boundary parameter and no --boundary line at the start of the body",
            ));
        }
    }
}

enum Part {
    Jpeg(Vec<u8>),
    /// A part that was skipped (too large, not a JPEG); the stream is still in step.
    Rejected(String),
    /// The stream ended (connection closed or closing delimiter).
    End,
}

struct Multipart {
    input: InBuf<Box<dyn Read + Send>>,
    delimiter: Vec<u8>,
    max_part: usize,
}

impl Multipart {
    fn next_part(&mut self) -> io::Result<Part> {
        // Skip to the next delimiter; whatever precedes it (CRLF, the tail of a part whose
        // Content-Length was wrong, junk) is dropped, within a bound.
        let keep = self.delimiter.len() - 1;
        let mut skipped = 0usize;
        loop {
            if let Some(i) = find(self.input.data(), &self.delimiter) {
                self.input.consume(i + self.delimiter.len());
                break;
            }
            let n = self.input.data().len().saturating_sub(keep);
            self.input.consume(n);
            skipped += n;
            if skipped > self.max_part + 64 * 1024 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("no multipart boundary in {skipped} bytes"),
                ));
            }
            if self.input.fill()? == 0 {
                return Ok(Part::End);
            }
        }
        let Some(rest) = self.input.read_line(1024)? else {
            return Ok(Part::End);
        };
        if rest.starts_with(b"--") {
            return Ok(Part::End);
        }
        let mut content_length = None;
        let mut count = 0;
        loop {
            let Some(line) = self.input.read_line(MAX_HEADER_LINE)? else {
                return Ok(Part::End);
            };
            if line.is_empty() {
                break;
            }
            count += 1;
            if count > MAX_HEADERS {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "too many part headers",
                ));
            }
            let line = String::from_utf8_lossy(&line);
            if let Some((k, v)) = line.split_once(':') {
                if k.trim().eq_ignore_ascii_case("content-length") {
                    content_length = v.trim().parse::<usize>().ok();
                }
            }
        }
        match content_length {
            // Not skipped by its length: a hostile or broken camera can claim any length (it
            // once took 100 GB). The next call's boundary search skips the body, within a bound.
            Some(n) if n > self.max_part => Ok(Part::Rejected(format!(
                "part of {n} bytes (Content-Length) is over the {} byte limit (max_part_bytes)",
                self.max_part
            ))),
            Some(n) => {
                let mut v = Vec::new();
                if self.input.take_into(n, &mut v)? < n {
                    return Ok(Part::End);
                }
                Ok(Part::Jpeg(v))
            }
            None => self.scan_jpeg(),
        }
    }

    /// A part without Content-Length: the JPEG's own structure says where it ends.
    fn scan_jpeg(&mut self) -> io::Result<Part> {
        // Some servers put blank lines between the part headers and the image.
        for _ in 0..64 {
            match self.input.data().first().copied() {
                Some(b) if b.is_ascii_whitespace() => self.input.consume(1),
                Some(_) => break,
                None if self.input.fill()? == 0 => return Ok(Part::End),
                None => {}
            }
        }
        let mut scanner = JpegScanner::default();
        loop {
            match scanner.scan(self.input.data()) {
                Scan::Complete(n) => {
                    let v = self.input.data()[..n].to_vec();
                    self.input.consume(n);
                    return Ok(Part::Jpeg(v));
                }
                // The bytes stay; the next delimiter search skips them.
                Scan::Invalid(why) => return Ok(Part::Rejected(format!("not a JPEG: {why}"))),
                Scan::Incomplete => {
                    if self.input.data().len() > self.max_part {
                        return Ok(Part::Rejected(format!(
                            "part without Content-Length is over the {} byte limit",
                            self.max_part
                        )));
                    }
                    if self.input.fill()? == 0 {
                        return Ok(Part::End);
                    }
                }
            }
        }
    }
}

/// `Transfer-Encoding: chunked` body decoding (servers may use it for HTTP/1.1 clients).
struct Chunked<R> {
    inner: InBuf<R>,
    left: u64,
    done: bool,
}

impl<R: Read> Read for Chunked<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.done || out.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            let bad = |m: &str| io::Error::new(io::ErrorKind::InvalidData, m.to_string());
            let line = self
                .inner
                .read_line(1024)?
                .ok_or_else(|| bad("connection closed inside chunked encoding"))?;
            let line = String::from_utf8_lossy(&line);
            let hex = line.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(hex, 16).map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                self.done = true;
                return Ok(0);
            }
            self.left = size;
        }
        let want = out
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut out[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a chunk",
            ));
        }
        self.left -= n as u64;
        if self.left == 0 {
            // The CRLF after the chunk data.
            self.inner.read_line(16)?;
        }
        Ok(n)
    }
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uris() {
        let o = MjpegOptions::parse("mjpeg+http://cam.local:8080/?action=stream").unwrap();
        assert_eq!(
            (o.host.as_str(), o.port, o.path.as_str()),
            ("cam.local", 8080, "/?action=stream")
        );
        let o = MjpegOptions::parse("MJPEG+HTTP://a%40b:p%3Aw@10.0.0.7").unwrap();
        assert_eq!(o.credentials, Some(("a@b".into(), "p:w".into())));
        assert_eq!((o.port, o.path.as_str()), (80, "/"));
        assert_eq!(o.display_uri(), "mjpeg+http://a@b:***@10.0.0.7:80/");
        let o = MjpegOptions::parse("mjpeg+http://[::1]:81?x=1#max_part_bytes=1000").unwrap();
        assert_eq!(
            (o.host.as_str(), o.port, o.path.as_str(), o.max_part_bytes),
            ("::1", 81, "/?x=1", 1000)
        );
        assert_eq!(
            MjpegOptions::parse("mjpeg+http://h/#")
                .unwrap()
                .max_part_bytes,
            MAX_FRAME_BYTES
        );
        for (bad, param) in [
            ("mjpeg+http://h:99999/", "port"),
            ("mjpeg+http://:80/", "host"),
            ("mjpeg+http://[::1/", "host"),
            ("mjpeg+http://h/a b", "path"),
            ("http://h/", "scheme"),
            ("mjpeg+http://h/#max_part_bytes=0", "max_part_bytes"),
            ("mjpeg+http://h/#frag", "frag"),
        ] {
            let e = MjpegOptions::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!(": {param}:")), "{bad}: {e}");
        }
    }

    #[test]
    fn boundaries() {
        assert_eq!(
            boundary_param("multipart/x-mixed-replace; boundary=\"--frame\"").as_deref(),
            Some("--frame")
        );
        assert_eq!(
            boundary_param("multipart/x-mixed-replace;Boundary=myboundary").as_deref(),
            Some("myboundary")
        );
        assert_eq!(boundary_param("multipart/x-mixed-replace"), None);
    }

    #[test]
    fn encodes_base64() {
        assert_eq!(base64(b"admin:secret"), "YWRtaW46c2VjcmV0");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b""), "");
    }

    fn jpeg(fill: u8) -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, fill, fill, fill];
        v.extend_from_slice(&[0xFF, 0xD9]);
        v
    }

    fn parts(body: Vec<u8>, max_part: usize) -> Vec<String> {
        let mut m = Multipart {
            input: InBuf::new(Box::new(io::Cursor::new(body))),
            delimiter: b"--bnd".to_vec(),
            max_part,
        };
        let mut out = Vec::new();
        loop {
            match m.next_part() {
                Ok(Part::Jpeg(j)) => out.push(format!("jpeg{}", j.len())),
                Ok(Part::Rejected(w)) => out.push(format!("rejected: {w}")),
                Ok(Part::End) => return out,
                Err(e) => {
                    out.push(format!("error: {e}"));
                    return out;
                }
            }
        }
    }

    #[test]
    fn splits_parts_with_and_without_lengths() {
        let j = jpeg(1);
        let mut body = Vec::new();
        // With Content-Length, preamble junk before the first delimiter.
        body.extend_from_slice(
            b"junk\r\n--bnd\r\nContent-Type: image/jpeg\r\nContent-Length: 11\r\n\r\n",
        );
        body.extend_from_slice(&j);
        // Without Content-Length, no CRLF before the next delimiter.
        body.extend_from_slice(b"\r\n--bnd\r\nContent-Type: image/jpeg\r\n\r\n");
        body.extend_from_slice(&j);
        // Not a JPEG.
        body.extend_from_slice(b"--bnd\r\n\r\nGIF89a....\r\n");
        // Too large by its Content-Length.
        body.extend_from_slice(b"--bnd\r\nContent-Length: 40\r\n\r\n");
        body.extend_from_slice(&[7u8; 40]);
        body.extend_from_slice(b"\r\n--bnd\r\ncontent-length: 11\r\n\r\n");
        body.extend_from_slice(&j);
        body.extend_from_slice(b"\r\n--bnd--\r\n");
        let got = parts(body, 32);
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(got[0], "jpeg11");
        assert_eq!(got[1], "jpeg11");
        assert!(got[2].starts_with("rejected: not a JPEG"), "{got:?}");
        assert!(got[3].contains("over the 32 byte limit"), "{got:?}");
        assert_eq!(got[4], "jpeg11");
    }

    #[test]
    fn a_huge_content_length_is_not_read() {
        let mut body = b"--bnd\r\nContent-Length: 99999999999\r\n\r\n".to_vec();
        body.extend_from_slice(&[0x55; 500]);
        body.extend_from_slice(b"\r\n--bnd\r\nContent-Length: 11\r\n\r\n");
        body.extend_from_slice(&jpeg(2));
        let got = parts(body, 1000);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains("99999999999 bytes"), "{got:?}");
        assert_eq!(got[1], "jpeg11");
    }

    #[test]
    fn junk_without_boundary_is_bounded() {
        let got = parts(vec![b'x'; 300_000], 1000);
        assert!(got[0].contains("no multipart boundary"), "{got:?}");
    }

    #[test]
    fn truncated_stream_ends() {
        let mut body = b"--bnd\r\nContent-Length: 100\r\n\r\n".to_vec();
        body.extend_from_slice(&[0u8; 50]);
        assert!(parts(body, 1000).is_empty());
    }

    #[test]
    fn dechunks() {
        let raw = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        let mut c = Chunked {
            inner: InBuf::new(io::Cursor::new(raw.to_vec())),
            left: 0,
            done: false,
        };
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello, world");
        let mut c = Chunked {
            inner: InBuf::new(io::Cursor::new(b"zz\r\n".to_vec())),
            left: 0,
            done: false,
        };
        assert!(c.read(&mut [0; 8]).is_err());
    }
}
