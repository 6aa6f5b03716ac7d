//! A loopback TCP proxy whose link can be cut (connections reset, new ones refused) or stalled
//! (connections stay open but nothing moves: only keep-alive can tell), to fake network faults
//! between a client and a broker without the broker losing anything.
#![allow(dead_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

const UP: u8 = 0;
const DOWN: u8 = 1;
const STALLED: u8 = 2;

pub struct Proxy {
    pub port: u16,
    state: Arc<AtomicU8>,
    /// Bumped by every fault: connections of an older generation close.
    generation: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(AtomicU8::new(UP));
        let generation = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, gen, stp) = (state.clone(), generation.clone(), stop.clone());
        let target: SocketAddr = ([127, 0, 0, 1], target).into();
        std::thread::spawn(move || {
            while !stp.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    Err(_) => continue,
                };
                if st.load(Ordering::Relaxed) != UP {
                    drop(client); // refused while the link is down
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let my_gen = gen.load(Ordering::Relaxed);
                let _ = client.set_nonblocking(false);
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let (st, gen) = (st.clone(), gen.clone());
                    std::thread::spawn(move || pump(from, to, my_gen, &st, &gen));
                }
            }
        });
        Proxy {
            port,
            state,
            generation,
            stop,
        }
    }

    /// Resets every connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.state.store(DOWN, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Keeps connections open but moves no bytes, like a dead route; refuses new ones.
    pub fn stall(&self) {
        self.state.store(STALLED, Ordering::SeqCst);
    }

    /// Closes whatever was stalled and lets new connections through.
    pub fn restore(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.state.store(UP, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, my_gen: u64, state: &AtomicU8, gen: &AtomicU64) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = [0u8; 16 << 10];
    loop {
        if gen.load(Ordering::SeqCst) != my_gen {
            break;
        }
        if state.load(Ordering::SeqCst) != UP {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
