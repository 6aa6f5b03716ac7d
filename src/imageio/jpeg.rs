//! JPEG structure without decoding: where one JPEG ends in a byte stream (and so whether a file
//! or frame is whole), its size from the header, and repairing the Huffman-table-less frames
//! that many USB and IP cameras send. Here rather than in `capture` because the still-image
//! loader needs the same end-of-image check as the camera streams.

use std::borrow::Cow;

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// The image is the first `n` bytes.
    Complete(usize),
    /// More bytes are needed.
    Incomplete,
    /// Not a well-formed JPEG at this point.
    Invalid(&'static str),
}

/// Finds the end of a JPEG by walking its marker segments, so that an `FF D9` inside an EXIF
/// thumbnail or other segment payload is not mistaken for the end of the image. Resumable: feed
/// it the same growing buffer again after `Incomplete`, and it carries on where it stopped, so
/// a large frame arriving in small reads is scanned in linear time.
#[derive(Debug, Default)]
pub(crate) struct JpegScanner {
    pos: usize,
    entropy: bool,
}

impl JpegScanner {
    pub(crate) fn scan(&mut self, d: &[u8]) -> Scan {
        if self.pos == 0 {
            if d.len() < 2 {
                return Scan::Incomplete;
            }
            if d[0] != 0xFF || d[1] != 0xD8 {
                return Scan::Invalid("does not start with a JPEG SOI marker");
            }
            self.pos = 2;
        }
        loop {
            if self.entropy {
                // In entropy-coded data an FF is followed by 00 (a stuffed byte), a restart
                // marker, or fill bytes; anything else ends the scan.
                loop {
                    if self.pos + 1 >= d.len() {
                        return Scan::Incomplete;
                    }
                    if d[self.pos] != 0xFF {
                        match d[self.pos + 1..].iter().position(|&b| b == 0xFF) {
                            Some(k) => self.pos += 1 + k,
                            None => {
                                self.pos = d.len() - 1;
                                return Scan::Incomplete;
                            }
                        }
                        continue;
                    }
                    match d[self.pos + 1] {
                        0x00 | 0xD0..=0xD7 => self.pos += 2,
                        0xFF => self.pos += 1,
                        _ => break,
                    }
                }
                self.entropy = false;
            }
            if self.pos + 2 > d.len() {
                return Scan::Incomplete;
            }
            if d[self.pos] != 0xFF {
                return Scan::Invalid("expected a JPEG marker");
            }
            match d[self.pos + 1] {
                0xFF => self.pos += 1,
                0xD9 => return Scan::Complete(self.pos + 2),
                0xD8 => return Scan::Invalid("a new image starts before this one ended"),
                0x01 | 0xD0..=0xD7 => self.pos += 2,
                0x00 => return Scan::Invalid("stray 00 after a marker prefix"),
                m => {
                    if self.pos + 4 > d.len() {
                        return Scan::Incomplete;
                    }
                    let len = u16::from_be_bytes([d[self.pos + 2], d[self.pos + 3]]) as usize;
                    if len < 2 {
                        return Scan::Invalid("marker segment shorter than its length field");
                    }
                    if self.pos + 2 + len > d.len() {
                        return Scan::Incomplete;
                    }
                    self.pos += 2 + len;
                    if m == 0xDA {
                        self.entropy = true;
                    }
                }
            }
        }
    }
}

/// `Ok` when `d` starts with one whole JPEG, up to its end-of-image marker (bytes after it, such
/// as a camera's padding, are allowed). Decoders paint the missing rows of a cut-off JPEG grey
/// without an error, so a half-received frame or half-copied file would pass as a picture.
pub(crate) fn check_whole(d: &[u8]) -> Result<(), String> {
    match JpegScanner::default().scan(d) {
        Scan::Complete(_) => Ok(()),
        Scan::Incomplete => Err(format!(
            "truncated JPEG: the data ends after {} bytes, before the end-of-image marker",
            d.len()
        )),
        Scan::Invalid(why) => Err(format!("corrupt JPEG: {why}")),
    }
}

/// `(width, height)` from the frame header, walking the segments before it; `None` when the
/// headers are malformed or end first.
pub(crate) fn dimensions(d: &[u8]) -> Option<(u32, u32)> {
    if d.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut pos = 2;
    loop {
        if *d.get(pos)? != 0xFF {
            return None;
        }
        let m = *d.get(pos + 1)?;
        match m {
            0xFF => pos += 1,
            0x01 | 0xD0..=0xD7 => pos += 2,
            0xD8..=0xDA => return None,
            _ => {
                let len = u16::from_be_bytes([*d.get(pos + 2)?, *d.get(pos + 3)?]) as usize;
                // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
                if (0xC0..=0xCF).contains(&m) && !matches!(m, 0xC4 | 0xC8 | 0xCC) {
                    let h = u16::from_be_bytes([*d.get(pos + 5)?, *d.get(pos + 6)?]);
                    let w = u16::from_be_bytes([*d.get(pos + 7)?, *d.get(pos + 8)?]);
                    return Some((w as u32, h as u32));
                }
                if len < 2 {
                    return None;
                }
                pos += 2 + len;
            }
        }
    }
}

/// Position of the next `FF D8 FF` (a plausible JPEG start) at or after `from`.
pub(crate) fn find_soi(d: &[u8], from: usize) -> Option<usize> {
    d.get(from..)?
        .windows(3)
        .position(|w| w == [0xFF, 0xD8, 0xFF])
        .map(|i| from + i)
}

/// The Huffman tables of ITU T.81 Annex K.3 (the contents of one DHT segment: DC luminance,
/// DC chrominance, AC luminance, AC chrominance). Motion-JPEG cameras omit them and rely on the
/// decoder knowing them (OpenDML / AVI1 convention); copied byte for byte from the DHT that
/// `ffmpeg -c:v mjpeg -huffman default` writes, which a test checks.
pub(crate) const STANDARD_DHT: [u8; 416] = [
    0x00, 0x00, 0x01, 0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x01, 0x00, 0x03,
    0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
    0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x10, 0x00, 0x02, 0x01, 0x03, 0x03,
    0x02, 0x04, 0x03, 0x05, 0x05, 0x04, 0x04, 0x00, 0x00, 0x01, 0x7D, 0x01, 0x02, 0x03, 0x00, 0x04,
    0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22, 0x71, 0x14, 0x32, 0x81,
    0x91, 0xA1, 0x08, 0x23, 0x42, 0xB1, 0xC1, 0x15, 0x52, 0xD1, 0xF0, 0x24, 0x33, 0x62, 0x72, 0x82,
    0x09, 0x0A, 0x16, 0x17, 0x18, 0x19, 0x1A, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A, 0x34, 0x35, 0x36,
    0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A, 0x53, 0x54, 0x55, 0x56,
    0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A, 0x73, 0x74, 0x75, 0x76,
    0x77, 0x78, 0x79, 0x7A, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x92, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7, 0xA8, 0xA9, 0xAA, 0xB2, 0xB3,
    0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5, 0xC6, 0xC7, 0xC8, 0xC9, 0xCA,
    0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7,
    0xE8, 0xE9, 0xEA, 0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA, 0x11, 0x00, 0x02,
    0x01, 0x02, 0x04, 0x04, 0x03, 0x04, 0x07, 0x05, 0x04, 0x04, 0x00, 0x01, 0x02, 0x77, 0x00, 0x01,
    0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71, 0x13, 0x22,
    0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xA1, 0xB1, 0xC1, 0x09, 0x23, 0x33, 0x52, 0xF0, 0x15, 0x62,
    0x72, 0xD1, 0x0A, 0x16, 0x24, 0x34, 0xE1, 0x25, 0xF1, 0x17, 0x18, 0x19, 0x1A, 0x26, 0x27, 0x28,
    0x29, 0x2A, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3A, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4A,
    0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5A, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6A,
    0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7A, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8A, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0xA2, 0xA3, 0xA4, 0xA5, 0xA6, 0xA7,
    0xA8, 0xA9, 0xAA, 0xB2, 0xB3, 0xB4, 0xB5, 0xB6, 0xB7, 0xB8, 0xB9, 0xBA, 0xC2, 0xC3, 0xC4, 0xC5,
    0xC6, 0xC7, 0xC8, 0xC9, 0xCA, 0xD2, 0xD3, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8, 0xD9, 0xDA, 0xE2, 0xE3,
    0xE4, 0xE5, 0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8, 0xF9, 0xFA,
];

/// The JPEG with the standard Huffman tables inserted before its first scan when it has none
/// of its own; unchanged (borrowed) otherwise or when its headers cannot be walked.
pub(crate) fn with_huffman_tables(d: &[u8]) -> Cow<'_, [u8]> {
    if d.len() < 4 || d[0] != 0xFF || d[1] != 0xD8 {
        return Cow::Borrowed(d);
    }
    let mut pos = 2;
    while pos + 4 <= d.len() {
        if d[pos] != 0xFF {
            return Cow::Borrowed(d);
        }
        let m = d[pos + 1];
        if m == 0xFF {
            pos += 1;
            continue;
        }
        if m == 0xC4 {
            return Cow::Borrowed(d);
        }
        if m == 0xDA {
            let mut out = Vec::with_capacity(d.len() + STANDARD_DHT.len() + 4);
            out.extend_from_slice(&d[..pos]);
            out.extend_from_slice(&[0xFF, 0xC4]);
            out.extend_from_slice(&((STANDARD_DHT.len() + 2) as u16).to_be_bytes());
            out.extend_from_slice(&STANDARD_DHT);
            out.extend_from_slice(&d[pos..]);
            return Cow::Owned(out);
        }
        if (0xD0..=0xD9).contains(&m) || m == 0x01 {
            pos += 2;
            continue;
        }
        let len = u16::from_be_bytes([d[pos + 2], d[pos + 3]]) as usize;
        if len < 2 {
            return Cow::Borrowed(d);
        }
        pos += 2 + len;
    }
    Cow::Borrowed(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny but structurally real JPEG: SOI, APP1 holding a fake thumbnail with its own
    /// FF D8 … FF D9, SOS with stuffed bytes and a restart marker, EOI.
    fn sample() -> Vec<u8> {
        let mut v = vec![0xFF, 0xD8];
        let thumb = [0xFF, 0xD8, 0xFF, 0xD9, 0x12];
        v.extend_from_slice(&[0xFF, 0xE1, 0x00, (2 + thumb.len()) as u8]);
        v.extend_from_slice(&thumb);
        v.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x04, 0x01, 0x02]);
        v.extend_from_slice(&[0x11, 0xFF, 0x00, 0x22, 0xFF, 0xD0, 0x33, 0xFF, 0xFF, 0xD9]);
        v
    }

    #[test]
    fn finds_the_real_end() {
        let j = sample();
        let mut s = JpegScanner::default();
        assert_eq!(s.scan(&j), Scan::Complete(j.len()));
        let mut with_tail = j.clone();
        with_tail.extend_from_slice(b"\r\n--boundary");
        let mut s = JpegScanner::default();
        assert_eq!(s.scan(&with_tail), Scan::Complete(j.len()));
    }

    #[test]
    fn resumes_byte_by_byte() {
        let j = sample();
        let mut s = JpegScanner::default();
        for n in 0..j.len() {
            assert_eq!(s.scan(&j[..n]), Scan::Incomplete, "prefix {n}");
        }
        assert_eq!(s.scan(&j), Scan::Complete(j.len()));
    }

    #[test]
    fn rejects_junk() {
        assert!(matches!(
            JpegScanner::default().scan(b"GIF89a"),
            Scan::Invalid(_)
        ));
        let mut j = sample();
        j.truncate(12);
        j.extend_from_slice(&[0xFF, 0xD8, 0xFF]);
        assert!(matches!(JpegScanner::default().scan(&j), Scan::Invalid(_)));
        assert_eq!(find_soi(&j, 1), Some(6)); // the thumbnail: a plain search is only for resync
        assert_eq!(find_soi(&j, 7), Some(12));
    }

    #[test]
    fn whole_or_not() {
        let j = sample();
        assert_eq!(check_whole(&j), Ok(()));
        let mut padded = j.clone();
        padded.extend_from_slice(&[0; 16]);
        assert_eq!(check_whole(&padded), Ok(()));
        for cut in [2, 9, j.len() - 1] {
            let e = check_whole(&j[..cut]).unwrap_err();
            assert!(e.starts_with("truncated JPEG"), "{cut}: {e}");
        }
        assert!(check_whole(b"GIF89a")
            .unwrap_err()
            .starts_with("corrupt JPEG"));
    }

    #[test]
    fn reads_dimensions() {
        let mut j = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 0x00, 0x00];
        j.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 0x08, 0x01, 0xE0, 0x02, 0x80, 0x03]);
        assert_eq!(dimensions(&j), Some((640, 480)));
        assert_eq!(dimensions(&j[..12]), None);
        assert_eq!(dimensions(&sample()), None);
        assert_eq!(dimensions(b"junk"), None);
    }

    #[test]
    fn inserts_tables_only_when_missing() {
        let j = sample();
        let fixed = with_huffman_tables(&j);
        assert_eq!(fixed.len(), j.len() + 420);
        let sos = 2 + 4 + 5;
        assert_eq!(&fixed[sos..sos + 4], &[0xFF, 0xC4, 0x01, 0xA2]);
        assert!(matches!(with_huffman_tables(&fixed), Cow::Borrowed(_)));
        assert!(matches!(with_huffman_tables(b"junk"), Cow::Borrowed(_)));
    }
}
