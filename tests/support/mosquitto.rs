//! A real mosquitto for integration tests: its own config, persistence and log in a temp dir,
//! on a free loopback port; stopped (SIGKILL) on drop.
#![allow(dead_code)]

#[path = "skip.rs"]
mod skip_switch;
pub use skip_switch::skip;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    extra: String,
}

/// The broker binary, also where Debian puts it outside a root PATH.
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join("mosquitto"))
        .find(|p| p.is_file())
}

/// Skips the calling test, with a printed reason, when mosquitto is not installed.
#[macro_export]
macro_rules! require_mosquitto {
    () => {
        if mosquitto::binary().is_none() {
            mosquitto::skip("the mosquitto binary is not installed (apt-get install mosquitto)");
            return;
        }
    };
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl Mosquitto {
    /// A broker with persistence on a free port.
    pub fn start() -> Mosquitto {
        Mosquitto::start_on(free_port(), "")
    }

    /// `extra` is appended to the config (e.g. a TLS listener).
    pub fn start_on(port: u16, extra: &str) -> Mosquitto {
        let mut m = Mosquitto::configure(port, extra);
        m.restart();
        m
    }

    /// Writes the config but does not start the broker (for tests that begin with it down).
    pub fn configure(port: u16, extra: &str) -> Mosquitto {
        Mosquitto {
            child: None,
            port,
            dir: tempfile::tempdir().expect("tempdir"),
            extra: extra.to_string(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    fn write_config(&self) -> PathBuf {
        let d = self.dir.path();
        // Running as root, mosquitto would switch to user `mosquitto`, which cannot read a
        // root-only temp dir.
        let user = if running_as_root() { "user root\n" } else { "" };
        let conf = format!(
            "{user}per_listener_settings false\nallow_anonymous true\n\
             persistence true\npersistence_location {}/\npersistence_file mosquitto.db\n\
             autosave_interval 1\nmax_queued_messages 100000\nmax_inflight_messages 100\n\
             log_dest file {}/mosquitto.log\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n\
             listener {} 127.0.0.1\n{}\n",
            d.display(),
            d.display(),
            self.port,
            self.extra
        );
        let p = d.join("mosquitto.conf");
        std::fs::write(&p, conf).expect("write mosquitto.conf");
        p
    }

    /// (Re)starts the broker on the same port with the same persistence and waits for it.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let conf = self.write_config();
        let bin = binary().expect("mosquitto binary");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn mosquitto");
        self.child = Some(child);
        self.wait_listening(self.port);
    }

    /// Waits until `port` (one of this broker's listeners) accepts connections.
    pub fn wait_listening(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    let mut err = String::new();
                    if let Some(mut e) = c.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    panic!("mosquitto exited ({status}): {err}\nlog:\n{}", self.log());
                }
            }
            assert!(
                Instant::now() < deadline,
                "mosquitto not listening on {port}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Graceful stop (SIGTERM): mosquitto saves sessions, queued and retained messages.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
