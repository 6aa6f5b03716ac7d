//! HTTP/1.1 on one connection, bounded: reading a request head (at most [`MAX_HEAD`] bytes, parsed
//! by `httparse`) and writing an answer with its length, then closing.
//!
//! The web view only ever serves `GET`/`HEAD` without a body and answers each connection once
//! (`Connection: close`), so this is all of HTTP it needs. Reading is bounded in bytes and (by
//! the caller's socket timeouts) in time, before any token is checked: a peer cannot make the
//! server hold more than one head's worth of memory per connection.

use std::io::{self, Read, Write};
use std::net::TcpStream;

/// A request head longer than this is refused (431): a browser's is well under 2 KiB.
pub const MAX_HEAD: usize = 8 * 1024;
/// Headers beyond this many are refused (431).
const MAX_HEADERS: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Other,
}

/// What the server uses of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The path without the query, not decoded.
    pub path: String,
    /// After `?`, not decoded.
    pub query: String,
    /// The `Authorization: Bearer` token, if one came.
    pub bearer: Option<String>,
    /// The `Accept` header, if any.
    pub accept: Option<String>,
}

/// Why no request came.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed, timed out or the socket failed: nothing to answer.
    Gone(io::Error),
    /// Answer with this status and reason, then close.
    Refuse(u16, &'static str),
}

impl From<io::Error> for ReadError {
    fn from(e: io::Error) -> Self {
        ReadError::Gone(e)
    }
}

/// Reads one request head from `s`.
pub fn read_request(s: &mut impl Read) -> Result<Request, ReadError> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    loop {
        if len == buf.len() {
            return Err(ReadError::Refuse(431, "request head too large"));
        }
        let n = s.read(&mut buf[len..])?;
        if n == 0 {
            return Err(ReadError::Gone(io::ErrorKind::UnexpectedEof.into()));
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => return Ok(request(&req)),
            Ok(httparse::Status::Partial) => continue,
            Err(httparse::Error::TooManyHeaders) => {
                return Err(ReadError::Refuse(431, "too many headers"))
            }
            Err(_) => return Err(ReadError::Refuse(400, "malformed request")),
        }
    }
}

fn request(r: &httparse::Request) -> Request {
    let method = match r.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        _ => Method::Other,
    };
    let target = r.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let header = |name: &str| {
        r.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let bearer = header("authorization").and_then(|v| {
        let (scheme, rest) = v.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| rest.trim().to_string())
    });
    Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        bearer,
        accept: header("accept").map(str::to_string),
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// An answer of known length.
pub struct Answer<'a> {
    pub code: u16,
    pub content_type: &'a str,
    pub headers: Vec<(&'static str, String)>,
    pub body: &'a [u8],
}

impl<'a> Answer<'a> {
    pub fn new(code: u16, content_type: &'a str, body: &'a [u8]) -> Self {
        Answer {
            code,
            content_type,
            headers: Vec::new(),
            body,
        }
    }

    pub fn text(code: u16, body: &'a str) -> Self {
        Answer::new(code, "text/plain; charset=utf-8", body.as_bytes())
    }

    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Writes the answer (only its head for `HEAD`) and flushes.
    pub fn send(&self, s: &mut impl Write, head_only: bool) -> io::Result<()> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\
             Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
            self.code,
            reason(self.code),
            self.content_type,
            self.body.len()
        );
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes())?;
        if !head_only {
            s.write_all(self.body)?;
        }
        s.flush()
    }
}

/// Closes the connection after an answer, letting the peer read it first.
pub fn finish(s: &TcpStream) {
    let _ = s.shutdown(std::net::Shutdown::Write);
    // Drain what the peer still sends (up to a head's worth), so closing does not reset the
    // connection before the answer was read.
    let mut sink = [0u8; 512];
    let mut left = MAX_HEAD;
    let mut r = s;
    while left > 0 {
        match r.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_head_is_parsed() {
        let raw = b"GET /api/events?since=3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer abc \r\n\
                    Accept: application/openmetrics-text\r\n\r\n";
        let r = read_request(&mut &raw[..]).unwrap();
        assert_eq!(r.method, Method::Get);
        assert_eq!(
            (r.path.as_str(), r.query.as_str()),
            ("/api/events", "since=3")
        );
        assert_eq!(r.bearer.as_deref(), Some("abc"));
        assert_eq!(r.accept.as_deref(), Some("application/openmetrics-text"));
    }

    #[test]
    fn heads_that_are_too_long_or_wrong_are_refused() {
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_HEAD * 4));
        assert!(matches!(
            read_request(&mut &long[..]),
            Err(ReadError::Refuse(431, _))
        ));
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..40 {
            many.extend(format!("H{i}: v\r\n").as_bytes());
        }
        many.extend(b"\r\n");
        assert!(matches!(
            read_request(&mut &many[..]),
            Err(ReadError::Refuse(431, _))
        ));
        assert!(matches!(
            read_request(&mut &b"\x00\x01garbage\r\n\r\n"[..]),
            Err(ReadError::Refuse(400, _))
        ));
        assert!(matches!(
            read_request(&mut &b"GET / HTTP/1.1\r\n"[..]),
            Err(ReadError::Gone(_))
        ));
    }

    #[test]
    fn an_answer_carries_its_length_and_closes() {
        let mut out = Vec::new();
        Answer::text(404, "nope")
            .with("Allow", "GET")
            .send(&mut out, false)
            .unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"), "{s}");
        assert!(s.contains("Content-Length: 4\r\n") && s.contains("Connection: close\r\n"));
        assert!(s.contains("Allow: GET\r\n") && s.ends_with("\r\n\r\nnope"));
    }
}
