//! A read buffer whose window can grow to hold a whole frame, for stream parsers that must look
//! ahead (multipart boundaries, JPEG markers, PPM headers). Callers bound the window themselves.

use std::io::{self, Read};

const CHUNK: usize = 64 * 1024;

pub(crate) struct InBuf<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
}

impl<R: Read> InBuf<R> {
    pub(crate) fn new(inner: R) -> Self {
        InBuf {
            inner,
            buf: Vec::new(),
            pos: 0,
        }
    }

    /// Buffered, not yet consumed bytes.
    pub(crate) fn data(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    pub(crate) fn consume(&mut self, n: usize) {
        self.pos = (self.pos + n).min(self.buf.len());
        if self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
    }

    /// Read more bytes into the window; `Ok(0)` at end of input. Interrupted reads are retried.
    pub(crate) fn fill(&mut self) -> io::Result<usize> {
        // Compact so that the window does not creep through an ever-growing vector.
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + CHUNK, 0);
        loop {
            match self.inner.read(&mut self.buf[old..]) {
                Ok(n) => {
                    self.buf.truncate(old + n);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            }
        }
    }

    /// Move exactly `n` bytes into `out` (replacing its contents) unless the input ends first;
    /// returns how many were moved.
    pub(crate) fn take_into(&mut self, n: usize, out: &mut Vec<u8>) -> io::Result<usize> {
        out.clear();
        // Large reads go straight to `out` rather than through the window.
        let have = self.data().len().min(n);
        out.extend_from_slice(&self.data()[..have]);
        self.consume(have);
        if out.len() < n {
            out.resize(n, 0);
            let mut got = have;
            while got < n {
                match self.inner.read(&mut out[got..]) {
                    Ok(0) => break,
                    Ok(k) => got += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            out.truncate(got);
        }
        Ok(out.len())
    }

    /// One line without its `\n` / `\r\n`, or `None` at end of input. A line longer than `max`
    /// bytes is an `InvalidData` error (protocol text lines are short; binary junk is not).
    pub(crate) fn read_line(&mut self, max: usize) -> io::Result<Option<Vec<u8>>> {
        let mut scanned = 0;
        loop {
            if let Some(i) = self.data()[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i;
                if end > max {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("line longer than {max} bytes"),
                    ));
                }
                let mut line = self.data()[..end].to_vec();
                self.consume(end + 1);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
            scanned = self.data().len();
            if scanned > max {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("line longer than {max} bytes"),
                ));
            }
            if self.fill()? == 0 {
                if self.data().is_empty() {
                    return Ok(None);
                }
                let line = self.data().to_vec();
                self.consume(line.len());
                return Ok(Some(line));
            }
        }
    }
}

/// Lets a protocol layer (HTTP chunked decoding) read the body through the same buffer that
/// parsed the headers, so no byte read ahead is lost.
impl<R: Read> Read for InBuf<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.data().is_empty() {
            if out.len() >= CHUNK {
                return self.inner.read(out);
            }
            if self.fill()? == 0 {
                return Ok(0);
            }
        }
        let n = self.data().len().min(out.len());
        out[..n].copy_from_slice(&self.data()[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Position of `needle` in `hay`, if any.
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let last_start = hay.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        match hay[i..=last_start].iter().position(|&b| b == first) {
            None => return None,
            Some(k) => {
                i += k;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out input in small pieces, like a socket does.
    struct Trickle<'a>(&'a [u8], usize);
    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(self.1).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn lines_and_takes() {
        let input = b"HTTP/1.0 200 OK\r\nA: b\n\r\nBODYBODYtail";
        let mut b = InBuf::new(Trickle(input, 3));
        assert_eq!(b.read_line(100).unwrap().unwrap(), b"HTTP/1.0 200 OK");
        assert_eq!(b.read_line(100).unwrap().unwrap(), b"A: b");
        assert_eq!(b.read_line(100).unwrap().unwrap(), b"");
        let mut out = Vec::new();
        assert_eq!(b.take_into(8, &mut out).unwrap(), 8);
        assert_eq!(out, b"BODYBODY");
        assert_eq!(b.take_into(2, &mut out).unwrap(), 2);
        assert_eq!(b.take_into(10, &mut out).unwrap(), 2);
        assert_eq!(out, b"il");
        assert_eq!(b.read_line(100).unwrap(), None);
    }

    #[test]
    fn long_line_is_an_error() {
        let input = vec![b'x'; 200_000];
        let mut b = InBuf::new(Trickle(&input, 70_000));
        assert!(b.read_line(1000).is_err());
    }

    #[test]
    fn finds() {
        assert_eq!(find(b"abc--bnd", b"--bnd"), Some(3));
        assert_eq!(find(b"--bn", b"--bnd"), None);
        assert_eq!(find(b"-a--b--bnd", b"--bnd"), Some(5));
        assert_eq!(find(b"", b"x"), None);
    }
}
