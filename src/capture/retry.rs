//! Reconnection pacing shared by the live sources (network cameras, V4L2 devices).

use std::time::{Duration, Instant};

/// Exponential back-off between reconnection attempts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Wait before the first attempt after a loss.
    pub initial: Duration,
    /// The wait never grows past this, so a camera that comes back is picked up soon.
    pub max: Duration,
    /// Growth per failed attempt (≥ 1).
    pub factor: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(10),
            factor: 2.0,
        }
    }
}

/// Where a live source stands between losing its link and getting it back.
#[derive(Debug)]
pub(crate) struct Retry {
    backoff: Backoff,
    delay: Duration,
    next_at: Option<Instant>,
}

impl Retry {
    pub(crate) fn new(backoff: Backoff) -> Self {
        Retry {
            backoff,
            delay: backoff.initial,
            next_at: None,
        }
    }

    /// The link was just lost: the first attempt comes after the initial delay.
    pub(crate) fn lost(&mut self) -> Duration {
        self.delay = self.backoff.initial;
        self.next_at = Some(Instant::now() + self.delay);
        self.delay
    }

    /// An attempt failed: wait longer before the next one.
    pub(crate) fn failed(&mut self) -> Duration {
        let grown = self.delay.as_secs_f64() * self.backoff.factor.max(1.0);
        self.delay = Duration::from_secs_f64(grown.min(self.backoff.max.as_secs_f64()));
        self.next_at = Some(Instant::now() + self.delay);
        self.delay
    }

    pub(crate) fn connected(&mut self) {
        self.delay = self.backoff.initial;
        self.next_at = None;
    }

    /// Sleep until the next attempt is due.
    pub(crate) fn wait(&self) {
        if let Some(at) = self.next_at {
            let now = Instant::now();
            if at > now {
                std::thread::sleep(at - now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_caps() {
        let mut r = Retry::new(Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            factor: 2.0,
        });
        assert_eq!(r.lost(), Duration::from_millis(100));
        assert_eq!(r.failed(), Duration::from_millis(200));
        assert_eq!(r.failed(), Duration::from_millis(400));
        assert_eq!(r.failed(), Duration::from_millis(500));
        assert_eq!(r.failed(), Duration::from_millis(500));
        r.connected();
        assert_eq!(r.lost(), Duration::from_millis(100));
    }
}
