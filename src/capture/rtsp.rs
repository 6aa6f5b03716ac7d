//! IP cameras over RTSP (`rtsp://`, `rtsps://`): H.264 or H.265 decoded by an ffmpeg child with
//! low-latency flags, on the board's hardware decoder when it has one.
//!
//! Why an ffmpeg child rather than a pure-Rust client such as `retina`: `retina` speaks RTSP and
//! depacketises RTP, but leaves decoding to us, and there is no maintained pure-Rust H.265
//! decoder (H.264 would need `openh264`, C code built from source, without hardware decoding).
//! ffmpeg is already what `video:` runs, decodes both codecs and every profile cameras send,
//! conceals packet loss, and reaches the boards' hardware decoders (`h264_v4l2m2m` on a
//! Raspberry Pi, `h264_nvv4l2dec` on a Jetson) by name. Its RTSP client is the most widely
//! tested one there is (TCP interleaved, UDP, RTSPS, Basic and Digest authentication). The cost
//! is a process per camera and one RGB copy through a pipe, which [`PipeSource`] already
//! handles with bounded buffers and a stop-aware read.
//!
//! Reconnection is not done here: the healing wrapper ([`super::heal`]) reopens an RTSP source
//! that ends, fails or stalls, like every other live source.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};

use super::pipe::{PipeCommand, PipeSource, PipeSpec, StreamFormat};
use super::uri::{self, Params};
use super::{CaptureError, CaptureStats, Frame, FrameSource};
use crate::imageio::MAX_SIDE;

/// How RTP packets travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// Interleaved in the RTSP TCP connection: passes NAT and firewalls, loses no packets.
    #[default]
    Tcp,
    /// Separate UDP ports: lower latency on a clean LAN, gaps on a lossy one.
    Udp,
}

/// The stream's codec, which picks the hardware decoder (the software one detects it itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Codec {
    #[default]
    H264,
    H265,
}

/// Hardware video decoding for RTSP streams (`[camera] hwdecode`, set by the board profiles).
/// Whichever is chosen, a decoder that fails before the first frame falls back to software.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HwDecode {
    /// ffmpeg's software decoders.
    #[default]
    Off,
    /// V4L2 memory-to-memory decoders (Raspberry Pi 4/5: `h264_v4l2m2m`, `hevc_v4l2m2m`).
    V4l2m2m,
    /// NVIDIA Jetson's V4L2 decoders in JetPack's ffmpeg (`h264_nvv4l2dec`, `hevc_nvv4l2dec`).
    Nvv4l2dec,
}

impl HwDecode {
    /// ffmpeg's decoder for `codec`, `None` for software decoding.
    pub fn decoder(self, codec: Codec) -> Option<String> {
        let c = match codec {
            Codec::H264 => "h264",
            Codec::H265 => "hevc",
        };
        match self {
            HwDecode::Off => None,
            HwDecode::V4l2m2m => Some(format!("{c}_v4l2m2m")),
            HwDecode::Nvv4l2dec => Some(format!("{c}_nvv4l2dec")),
        }
    }
}

/// Where and how to play the stream.
///
/// URI form:
///
/// ```text
/// rtsp://[user:password@]host[:port]/path[?query]
/// rtsp://admin:secret@192.168.1.64:554/Streaming/Channels/101
/// rtsp://10.0.0.9/cam/realmonitor?channel=1&subtype=0&transport=udp
/// rtsps://cam.local:322/stream1?fps=5&width=640
/// ```
///
/// The query belongs to the camera (many need one), except for lookout's own parameters, which
/// are taken out before the URL is handed to the camera:
///
/// - `transport`: `tcp` (default: RTP interleaved in the RTSP connection) or `udp`.
/// - `fps`: resample to this rate; absent = every decoded frame.
/// - `width`, `height`: scale; with only one of them the other follows the aspect ratio.
/// - `codec`: `h264` (default) or `h265`: which hardware decoder `[camera] hwdecode` picks.
///
/// A camera parameter that happens to share one of these names cannot be passed. The password
/// is never printed: labels, logs and errors show `user:***@`. (It is on ffmpeg's command line,
/// which other users of the machine can read in `ps`; run lookout under its own user.)
#[derive(Debug, Clone, PartialEq)]
pub struct RtspOptions {
    /// The camera's URL, credentials included, lookout's parameters removed.
    pub url: String,
    pub transport: Transport,
    pub fps: Option<f64>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub codec: Codec,
    pub hwdecode: HwDecode,
    /// The ffmpeg executable (default `ffmpeg` on `PATH`).
    pub ffmpeg: String,
}

/// lookout's own query parameters; everything else in the query goes to the camera.
const OWN_PARAMS: [&str; 5] = ["transport", "fps", "width", "height", "codec"];

impl RtspOptions {
    pub fn parse(u: &str) -> Result<Self, CaptureError> {
        let (scheme, rest) = match u.find("://") {
            Some(i) if matches!(u[..i].to_ascii_lowercase().as_str(), "rtsp" | "rtsps") => {
                (u[..i].to_ascii_lowercase(), &u[i + 3..])
            }
            _ => {
                return Err(CaptureError::uri(
                    u,
                    "scheme",
                    "expected rtsp://host[:port]/path or rtsps://…",
                ))
            }
        };
        let (rest, _fragment) = rest.split_once('#').unwrap_or((rest, ""));
        let (body, query) = uri::split_query(rest);
        let auth_end = body.find('/').unwrap_or(body.len());
        let authority = &body[..auth_end];
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| CaptureError::uri(u, "host", "unclosed [ in IPv6 address"))?;
            (h, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(CaptureError::uri(u, "host", "is empty"));
        }
        if let Some(p) = port {
            if p.parse::<u16>().ok().filter(|&p| p > 0).is_none() {
                return Err(CaptureError::uri(
                    u,
                    "port",
                    format!("'{p}' is not a port number"),
                ));
            }
        }
        if body.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(CaptureError::uri(
                u,
                "path",
                "contains spaces or control characters (percent-encode them)",
            ));
        }
        // Split the query into lookout's parameters and the camera's, keeping the camera's
        // exactly as written (its own escaping, its own order).
        let (mut own, mut camera) = (Vec::new(), Vec::new());
        for item in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
            let key = item.split_once('=').map_or(item, |(k, _)| k);
            if OWN_PARAMS.contains(&uri::percent_decode(u, "query", key)?.as_str()) {
                own.push(item);
            } else {
                camera.push(item);
            }
        }
        let own = own.join("&");
        let mut p = Params::parse(u, Some(&own))?;
        let transport = match p.take("transport").map(|t| t.to_ascii_lowercase()) {
            None => Transport::Tcp,
            Some(t) if t == "tcp" => Transport::Tcp,
            Some(t) if t == "udp" => Transport::Udp,
            Some(t) => return Err(p.err("transport", format!("'{t}' is not tcp or udp"))),
        };
        let codec = match p.take("codec").map(|t| t.to_ascii_lowercase()) {
            None => Codec::H264,
            Some(c) if c == "h264" || c == "avc" => Codec::H264,
            Some(c) if c == "h265" || c == "hevc" => Codec::H265,
            Some(c) => return Err(p.err("codec", format!("'{c}' is not h264 or h265"))),
        };
        let fps = p.f64("fps", 1000.0)?;
        if fps == Some(0.0) {
            return Err(p.err("fps", "must be above 0 (leave it out to keep every frame)"));
        }
        let (width, height) = (p.u32("width", MAX_SIDE)?, p.u32("height", MAX_SIDE)?);
        p.finish(&OWN_PARAMS)?;
        let mut url = format!("{scheme}://{body}");
        if !camera.is_empty() {
            url.push('?');
            url.push_str(&camera.join("&"));
        }
        Ok(RtspOptions {
            url,
            transport,
            fps,
            width,
            height,
            codec,
            hwdecode: HwDecode::Off,
            ffmpeg: "ffmpeg".into(),
        })
    }

    /// The camera's URL with the password left out.
    pub fn display_uri(&self) -> String {
        uri::redact_userinfo(&self.url)
    }

    /// The ffmpeg invocation, decoding with `decoder` (`None`: ffmpeg's software choice).
    pub fn to_spec(&self, decoder: Option<&str>) -> PipeSpec {
        let mut a: Vec<String> = [
            self.ffmpeg.as_str(),
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "error",
            "-rtsp_transport",
            match self.transport {
                Transport::Tcp => "tcp",
                Transport::Udp => "udp",
            },
            // Latency: no input buffering beyond what decoding needs, no frame reordering delay,
            // and half a second of stream probing instead of five (the SDP already carries the
            // codec's parameters): the first frame after a reconnect comes ~2 s sooner.
            "-fflags",
            "nobuffer",
            "-flags",
            "low_delay",
            "-analyzeduration",
            "500000",
        ]
        .map(String::from)
        .to_vec();
        if let Some(d) = decoder {
            a.extend(["-c:v".into(), d.to_string()]);
        }
        a.extend(["-i".into(), self.url.clone(), "-an".into()]);
        super::pipe::ppm_output(&mut a, self.fps, self.width, self.height);
        PipeSpec {
            command: PipeCommand::Argv(a),
            format: StreamFormat::Ppm,
            label: Some(self.display_uri()),
            // A live stream: stamped with the wall clock.
            media_fps: None,
        }
    }
}

/// Hardware decoders that failed where the software decoder then worked, for this process: the
/// next connection goes straight to software instead of failing again first.
fn broken_decoders() -> &'static Mutex<Vec<String>> {
    static BROKEN: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    BROKEN.get_or_init(|| Mutex::new(Vec::new()))
}

fn is_broken(decoder: &str) -> bool {
    broken_decoders()
        .lock()
        .map(|b| b.iter().any(|d| d == decoder))
        .unwrap_or(false)
}

/// Frames from an RTSP camera, decoded by an ffmpeg child.
pub struct RtspSource {
    opts: RtspOptions,
    pipe: PipeSource,
    /// The hardware decoder of the running child, if any.
    decoder: Option<String>,
    /// The hardware decoder just given up on, until the software decoder proves the stream
    /// itself is fine (then it is remembered as broken).
    fell_back_from: Option<String>,
    stop: Option<Arc<AtomicBool>>,
    /// Counters of children already replaced (a fallback), so that ids keep increasing.
    before: CaptureStats,
}

impl RtspSource {
    /// Start ffmpeg on the stream. A camera that cannot be reached shows as the first call to
    /// `next_frame` failing (ffmpeg exits), not here.
    pub fn open(opts: RtspOptions) -> Result<Self, CaptureError> {
        let decoder = opts.hwdecode.decoder(opts.codec).filter(|d| !is_broken(d));
        let pipe = PipeSource::spawn(opts.to_spec(decoder.as_deref()))?;
        if let Some(d) = &decoder {
            log::info!("{}: decoding with {d}", opts.display_uri());
        }
        Ok(RtspSource {
            opts,
            pipe,
            decoder,
            fell_back_from: None,
            stop: None,
            before: CaptureStats::default(),
        })
    }

    /// The hardware decoder gave nothing: restart on the software decoder.
    fn fall_back(&mut self, why: &str) -> Result<(), CaptureError> {
        let Some(d) = self.decoder.take() else {
            return Ok(());
        };
        log::warn!(
            "{}: hardware decoder {d} gave no frame ({why}); using the software decoder",
            self.opts.display_uri()
        );
        let s = self.pipe.stats();
        self.before.frames += s.frames;
        self.before.bad_frames += s.bad_frames;
        self.pipe = PipeSource::spawn(self.opts.to_spec(None))?;
        if let Some(stop) = &self.stop {
            self.pipe.watch_stop(stop.clone());
        }
        self.fell_back_from = Some(d);
        Ok(())
    }
}

impl FrameSource for RtspSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, CaptureError> {
        loop {
            let got = self.pipe.next_frame();
            let stopped = self
                .stop
                .as_ref()
                .is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed));
            let nothing_yet = self.pipe.stats().frames == 0;
            match &got {
                Ok(Some(_)) => {
                    if let Some(d) = self.fell_back_from.take() {
                        if let Ok(mut b) = broken_decoders().lock() {
                            b.push(d);
                        }
                    }
                }
                Ok(None) if self.decoder.is_some() && nothing_yet && !stopped => {
                    self.fall_back("the stream ended")?;
                    continue;
                }
                Err(e)
                    if self.decoder.is_some() && nothing_yet && !stopped && !e.is_recoverable() =>
                {
                    self.fall_back(&e.to_string())?;
                    continue;
                }
                _ => {}
            }
            // Ids continue across a fallback.
            return match got {
                Ok(Some(mut f)) => {
                    f.id += self.before.frames + self.before.bad_frames;
                    Ok(Some(f))
                }
                other => other,
            };
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} ({}, {}, ffmpeg pid {})",
            self.opts.display_uri(),
            match self.opts.transport {
                Transport::Tcp => "tcp",
                Transport::Udp => "udp",
            },
            self.decoder.as_deref().unwrap_or("software decoder"),
            self.pipe.child_id()
        )
    }

    fn stats(&self) -> CaptureStats {
        let s = self.pipe.stats();
        CaptureStats {
            frames: self.before.frames + s.frames,
            bad_frames: self.before.bad_frames + s.bad_frames,
            reconnects: 0,
            // At `-loglevel error` every line ffmpeg prints while streaming is a decoding
            // error it concealed (a lost packet, a corrupt slice).
            decode_errors: self.pipe.stderr_lines(),
        }
    }

    fn watch_stop(&mut self, stop: Arc<AtomicBool>) {
        self.pipe.watch_stop(stop.clone());
        self.stop = Some(stop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_keeps_the_cameras_query() {
        let o = RtspOptions::parse(
            "rtsp://admin:pa%40ss@10.0.0.9:554/cam/realmonitor?channel=1&transport=udp&subtype=0&fps=5",
        )
        .unwrap();
        assert_eq!(
            o.url,
            "rtsp://admin:pa%40ss@10.0.0.9:554/cam/realmonitor?channel=1&subtype=0"
        );
        assert_eq!(o.transport, Transport::Udp);
        assert_eq!(o.fps, Some(5.0));
        assert_eq!(
            o.display_uri(),
            "rtsp://admin:***@10.0.0.9:554/cam/realmonitor?channel=1&subtype=0"
        );
        let o = RtspOptions::parse("RTSPS://cam.local/s?codec=h265&width=640").unwrap();
        assert_eq!(o.url, "rtsps://cam.local/s");
        assert_eq!(
            (o.transport, o.codec, o.width),
            (Transport::Tcp, Codec::H265, Some(640))
        );
    }

    #[test]
    fn errors_name_the_part_and_hide_the_password() {
        for (u, part) in [
            ("rtsp://u:secret@cam/s?transport=sctp", "transport"),
            ("rtsp://u:secret@cam:99999/s", "port"),
            ("rtsp:///s", "host"),
            ("rtsp://u:secret@cam/s?codec=vp8", "codec"),
            ("rtsp://u:secret@cam/s?fps=0", "fps"),
            ("rtsp://u:secret@cam/a b", "path"),
            ("http://cam/s", "scheme"),
        ] {
            let e = RtspOptions::parse(u).unwrap_err().to_string();
            assert!(e.contains(&format!(": {part}:")), "{u}: {e}");
            assert!(!e.contains("secret"), "{u}: {e}");
        }
    }

    #[test]
    fn builds_a_low_latency_ffmpeg_command() {
        let mut o = RtspOptions::parse("rtsp://u:pw@cam/s?fps=5&width=320").unwrap();
        o.hwdecode = HwDecode::V4l2m2m;
        let d = o.hwdecode.decoder(o.codec);
        assert_eq!(d.as_deref(), Some("h264_v4l2m2m"));
        let spec = o.to_spec(d.as_deref());
        let PipeCommand::Argv(a) = &spec.command else {
            panic!()
        };
        let line = a.join(" ");
        assert!(
            line.contains("-rtsp_transport tcp -fflags nobuffer -flags low_delay -analyzeduration 500000 -c:v h264_v4l2m2m -i rtsp://u:pw@cam/s -an"),
            "{line}"
        );
        assert!(line.contains("-vf fps=5,scale=320:-2"), "{line}");
        assert_eq!(spec.label.as_deref(), Some("rtsp://u:***@cam/s"));
        assert_eq!(
            HwDecode::Nvv4l2dec.decoder(Codec::H265).as_deref(),
            Some("hevc_nvv4l2dec")
        );
        assert_eq!(HwDecode::Off.decoder(Codec::H264), None);
    }
}
