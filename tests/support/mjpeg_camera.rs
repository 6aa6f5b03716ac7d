//! A loopback MJPEG camera for tests: one scripted HTTP response per connection, in order,
//! after which it stops listening (so a source that loses its connection cannot quietly get a
//! fresh one), and the multipart pieces the scripts write.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::Duration;

use lookout::capture::mjpeg_http::MjpegOptions;
use lookout::capture::Backoff;

pub type Script = Box<dyn FnOnce(&mut TcpStream) + Send>;

/// A camera that serves one scripted response per connection, in order, then stops listening.
/// Returns the request heads it saw.
pub struct Camera {
    pub addr: SocketAddr,
    thread: Option<JoinHandle<Vec<String>>>,
}

impl Camera {
    pub fn start(scripts: Vec<Script>) -> Camera {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let mut heads = Vec::new();
            for script in scripts {
                let Ok((mut s, _)) = listener.accept() else {
                    break;
                };
                // Read the whole request first: closing a socket with unread input resets it,
                // and the client would lose the response.
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap_or(0) == 1 {
                    head.push(b[0]);
                }
                heads.push(String::from_utf8_lossy(&head).to_string());
                script(&mut s);
                let _ = s.flush();
            }
            heads
        });
        Camera {
            addr,
            thread: Some(thread),
        }
    }

    pub fn uri(&self, path: &str) -> String {
        format!("mjpeg+http://{}{path}", self.addr)
    }

    pub fn options(&self) -> MjpegOptions {
        let mut o = MjpegOptions::parse(&self.uri("/video?action=stream")).unwrap();
        o.backoff = Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(80),
            factor: 2.0,
        };
        o.read_timeout = Duration::from_secs(5);
        o
    }

    pub fn heads(mut self) -> Vec<String> {
        self.thread.take().unwrap().join().unwrap()
    }
}

pub const OK_HEAD: &str =
    "HTTP/1.0 200 OK\r\nServer: test-cam\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n";

pub fn part(s: &mut TcpStream, jpeg: &[u8]) {
    let _ = write!(
        s,
        "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
        jpeg.len()
    );
    let _ = s.write_all(jpeg);
    let _ = s.write_all(b"\r\n");
}
