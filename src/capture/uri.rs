//! Splitting source URIs into scheme, body and query, with errors that name the offending part.

use super::CaptureError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    File,
    Pipe,
    Video,
    MjpegHttp,
    V4l,
    /// `rtsp://` and `rtsps://`.
    Rtsp,
}

/// Which source a URI names, and its text after `scheme:` (the whole string for a plain path).
pub(crate) fn classify(uri: &str) -> Result<(Scheme, &str), CaptureError> {
    if uri.trim().is_empty() {
        return Err(CaptureError::uri(uri, "uri", "is empty"));
    }
    let Some((scheme, rest)) = split_scheme(uri) else {
        return Ok((Scheme::File, uri));
    };
    let s = match scheme.to_ascii_lowercase().as_str() {
        "file" => Scheme::File,
        "pipe" => Scheme::Pipe,
        "video" => Scheme::Video,
        "mjpeg+http" => Scheme::MjpegHttp,
        "v4l" | "v4l2" => Scheme::V4l,
        "rtsp" | "rtsps" => Scheme::Rtsp,
        other => {
            // `name:thing` without `//` is more likely a file name with a colon than a URI.
            if !rest.starts_with("//") {
                return Ok((Scheme::File, uri));
            }
            let hint = match other {
                "http" | "https" => {
                    " (for an MJPEG camera write mjpeg+http://...; other streams: video:URL)"
                }
                "rtmp" | "udp" | "tcp" | "srt" => " (use video:URL to read it through ffmpeg)",
                "mjpeg+https" => " (TLS is not supported; use mjpeg+http:// or video:URL)",
                _ => "",
            };
            return Err(CaptureError::uri(
                uri,
                "scheme",
                format!(
                    "unsupported scheme '{scheme}'; expected file:, pipe:, video:, mjpeg+http:, rtsp:, rtsps: or v4l:{hint}"
                ),
            ));
        }
    };
    Ok((s, rest))
}

/// `scheme:rest` when the text starts with an RFC 3986 scheme of two or more characters.
fn split_scheme(uri: &str) -> Option<(&str, &str)> {
    let colon = uri.find(':')?;
    let scheme = &uri[..colon];
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let ok = first.is_ascii_alphabetic()
        && scheme.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    ok.then(|| (scheme, &uri[colon + 1..]))
}

/// The body before the first `?` and the query after it.
pub(crate) fn split_query(rest: &str) -> (&str, Option<&str>) {
    match rest.split_once('?') {
        Some((body, q)) => (body, Some(q)),
        None => (rest, None),
    }
}

/// Decode `%XX` escapes; `what` names the part for the error.
pub(crate) fn percent_decode(uri: &str, what: &str, s: &str) -> Result<String, CaptureError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(v) => {
                    out.push(v);
                    i += 3;
                }
                None => {
                    return Err(CaptureError::uri(
                        uri,
                        what,
                        format!("bad percent escape at byte {i} (write a literal % as %25)"),
                    ))
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| CaptureError::uri(uri, what, "percent escapes do not decode to UTF-8"))
}

/// `scheme://user:password@host/...` with the password replaced by `***`, for labels and logs.
pub(crate) fn redact_userinfo(s: &str) -> String {
    let Some(start) = s.find("://").map(|i| i + 3) else {
        return s.to_string();
    };
    let authority_end = s[start..]
        .find(['/', '?', '#'])
        .map_or(s.len(), |i| start + i);
    let Some(at) = s[start..authority_end].rfind('@').map(|i| start + i) else {
        return s.to_string();
    };
    match s[start..at].find(':') {
        Some(colon) => format!("{}:***{}", &s[..start + colon], &s[at..]),
        None => s.to_string(),
    }
}

/// Every `scheme://user:password@` in a text (a command line, a program's error output) with
/// the password replaced by `***`.
pub(crate) fn redact_all(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        // The URL runs from the scheme before `://` to the next blank or quote.
        let start = rest[..i]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
            .map_or(0, |k| k + 1);
        let end = rest[i..]
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>'))
            .map_or(rest.len(), |k| i + k);
        out.push_str(&rest[..start]);
        out.push_str(&redact_userinfo(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Query parameters, taken one by one by the source that understands them; whatever is left is
/// reported by [`Params::finish`] so that a misspelt key is an error rather than ignored.
pub(crate) struct Params<'a> {
    uri: &'a str,
    pairs: Vec<(String, String)>,
}

impl<'a> Params<'a> {
    pub(crate) fn parse(uri: &'a str, query: Option<&str>) -> Result<Self, CaptureError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for item in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
            let (k, v) = item.split_once('=').unwrap_or((item, ""));
            let k = percent_decode(uri, "query", k)?;
            let v = percent_decode(uri, &k, v)?;
            if pairs.iter().any(|(pk, _)| *pk == k) {
                return Err(CaptureError::uri(uri, &k, "given more than once"));
            }
            pairs.push((k, v));
        }
        Ok(Params { uri, pairs })
    }

    pub(crate) fn err(&self, key: &str, reason: impl std::fmt::Display) -> CaptureError {
        CaptureError::uri(self.uri, key, reason)
    }

    pub(crate) fn take(&mut self, key: &str) -> Option<String> {
        let i = self.pairs.iter().position(|(k, _)| k == key)?;
        Some(self.pairs.remove(i).1)
    }

    /// A positive integer no larger than `max`.
    pub(crate) fn u32(&mut self, key: &str, max: u32) -> Result<Option<u32>, CaptureError> {
        let Some(v) = self.take(key) else {
            return Ok(None);
        };
        match v.trim().parse::<u32>() {
            Ok(n) if n >= 1 && n <= max => Ok(Some(n)),
            _ => Err(self.err(key, format!("'{v}' is not a whole number from 1 to {max}"))),
        }
    }

    /// A finite number ≥ 0 and ≤ `max`.
    pub(crate) fn f64(&mut self, key: &str, max: f64) -> Result<Option<f64>, CaptureError> {
        let Some(v) = self.take(key) else {
            return Ok(None);
        };
        match v.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && (0.0..=max).contains(&x) => Ok(Some(x)),
            _ => Err(self.err(key, format!("'{v}' is not a number from 0 to {max}"))),
        }
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`); a bare `loop` means true.
    pub(crate) fn bool(&mut self, key: &str) -> Result<Option<bool>, CaptureError> {
        let Some(v) = self.take(key) else {
            return Ok(None);
        };
        match v.trim().to_ascii_lowercase().as_str() {
            "" | "true" | "1" | "yes" | "on" => Ok(Some(true)),
            "false" | "0" | "no" | "off" => Ok(Some(false)),
            _ => Err(self.err(key, format!("'{v}' is not true or false"))),
        }
    }

    pub(crate) fn finish(self, known: &[&str]) -> Result<(), CaptureError> {
        match self.pairs.first() {
            None => Ok(()),
            Some((k, _)) => Err(CaptureError::uri(
                self.uri,
                k,
                format!(
                    "unknown parameter (this scheme takes: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        assert_eq!(classify("a.jpg").unwrap().0, Scheme::File);
        assert_eq!(classify("/x/y").unwrap().0, Scheme::File);
        assert_eq!(classify("file:x").unwrap(), (Scheme::File, "x"));
        assert_eq!(classify("V4L:///dev/video0").unwrap().0, Scheme::V4l);
        assert_eq!(classify("pipe:cat x").unwrap(), (Scheme::Pipe, "cat x"));
        assert_eq!(classify("mjpeg+http://h/").unwrap().0, Scheme::MjpegHttp);
        // A colon in a file name is not a scheme.
        assert_eq!(classify("cam1:2024.jpg").unwrap().0, Scheme::File);
        assert_eq!(classify("rtsp://cam/stream").unwrap().0, Scheme::Rtsp);
        assert_eq!(classify("RTSPS://cam/stream").unwrap().0, Scheme::Rtsp);
        let e = classify("rtmp://cam/stream").unwrap_err().to_string();
        assert!(
            e.contains("scheme") && e.contains("rtmp") && e.contains("video:"),
            "{e}"
        );
        assert!(classify("").is_err());
    }

    #[test]
    fn params() {
        let uri = "file:x?fps=2.5&loop&name=a%20b";
        let mut p = Params::parse(uri, Some("fps=2.5&loop&name=a%20b")).unwrap();
        assert_eq!(p.f64("fps", 1000.0).unwrap(), Some(2.5));
        assert_eq!(p.bool("loop").unwrap(), Some(true));
        assert_eq!(p.take("name").as_deref(), Some("a b"));
        p.finish(&["fps", "loop"]).unwrap();

        let mut p = Params::parse("u", Some("fps=fast")).unwrap();
        let e = p.f64("fps", 1000.0).unwrap_err().to_string();
        assert!(e.contains("fps") && e.contains("fast"), "{e}");

        let mut p = Params::parse("u", Some("width=0")).unwrap();
        assert!(p
            .u32("width", 100)
            .unwrap_err()
            .to_string()
            .contains("width"));

        let p = Params::parse("u", Some("fsp=3")).unwrap();
        let e = p.finish(&["fps", "loop"]).unwrap_err().to_string();
        assert!(e.contains("fsp") && e.contains("fps, loop"), "{e}");

        assert!(Params::parse("u", Some("a=1&a=2"))
            .err()
            .unwrap()
            .to_string()
            .contains("more than once"));
        assert!(Params::parse("u", Some("a=%zz")).is_err());
    }

    #[test]
    fn redacts() {
        assert_eq!(
            redact_userinfo("rtsp://u:pw@h/x?a=b@c"),
            "rtsp://u:***@h/x?a=b@c"
        );
        assert_eq!(
            redact_userinfo("mjpeg+http://h:80/a@b"),
            "mjpeg+http://h:80/a@b"
        );
        assert_eq!(redact_userinfo("mjpeg+http://u@h/"), "mjpeg+http://u@h/");
        assert_eq!(redact_userinfo("a.jpg"), "a.jpg");
        assert_eq!(
            redact_all("ffmpeg -i rtsp://admin:s3cret@10.0.0.9:554/s1 -f x -"),
            "ffmpeg -i rtsp://admin:***@10.0.0.9:554/s1 -f x -"
        );
        assert_eq!(
            redact_all("[rtsp @ 0x1] 'rtsps://u:p@h/a': 401; http://x:y@z/ and a:b@c"),
            "[rtsp @ 0x1] 'rtsps://u:***@h/a': 401; http://x:***@z/ and a:b@c"
        );
        assert_eq!(redact_all("no url here"), "no url here");
    }

    #[test]
    fn decode() {
        assert_eq!(percent_decode("u", "p", "a%3Fb%25").unwrap(), "a?b%");
        assert!(percent_decode("u", "p", "50%").is_err());
        assert!(percent_decode("u", "p", "%ff").is_err());
    }
}
