//! The bookkeeping of one connection, without sockets: which spool messages were handed to
//! rumqttc, which packet id each was written under, which the broker has acknowledged, and how
//! often a message at the head of the queue was in flight when the connection dropped.
//!
//! rumqttc numbers QoS 1 packets itself and writes requests in the order they are queued, so
//! the handed-over keys are remembered in order and each is paired with the packet id reported
//! when it is written. Kept free of I/O so the pairing rules are unit-tested on their own.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A non-alert message at the head of the queue that was in flight for this many consecutive
/// dropped connections is taken to be what makes the broker drop us (too large, refused) and
/// is discarded, so one bad message cannot stall the queue forever.
pub(super) const POISON_ATTEMPTS: u32 = 8;

enum Slot {
    Spool(u64),
    /// Status messages: not in the spool, re-sent on every connection anyway.
    Untracked,
}

/// What a publish reported written by rumqttc means for the spool.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Written {
    /// QoS 0: the spool message with this key is delivered as far as it ever will be.
    Delivered(u64),
    /// QoS 1, or a message not from the spool: wait for its PUBACK.
    Pending,
    /// Nothing was queued: rumqttc wrote something this side did not hand it.
    Unexpected,
}

/// In-flight state of one connection; a new connection starts with a fresh one.
#[derive(Default)]
pub(super) struct InFlight {
    /// Handed to rumqttc, not yet reported written; rumqttc writes them in this order.
    sent: VecDeque<Slot>,
    /// Written QoS 1 messages by packet id, awaiting PUBACK (`None`: untracked).
    acks: HashMap<u16, Option<u64>>,
    /// Next spool key to hand over.
    cursor: u64,
    /// Cost of each spool message handed over and not yet delivered, and their sum.
    sizes: HashMap<u64, u64>,
    bytes: u64,
}

impl InFlight {
    /// Messages handed over and not yet acknowledged (or written, for QoS 0).
    pub fn used(&self) -> usize {
        self.sent.len() + self.acks.len()
    }

    /// Bytes of spool messages handed over and not yet delivered.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The next spool key to hand over.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Spool message `key` was handed to rumqttc.
    pub fn handed(&mut self, key: u64, cost: u64) {
        self.sizes.insert(key, cost);
        self.bytes += cost;
        self.sent.push_back(Slot::Spool(key));
        self.cursor = key + 1;
    }

    /// A message that is not in the spool (the status) was handed to rumqttc.
    pub fn handed_untracked(&mut self) {
        self.sent.push_back(Slot::Untracked);
    }

    /// Spool message `key` is not handed over and never will be on this connection.
    pub fn skip(&mut self, key: u64) {
        self.cursor = key + 1;
    }

    /// rumqttc wrote the oldest handed-over publish as packet `pkid` (0 for QoS 0).
    pub fn written(&mut self, pkid: u16) -> Written {
        match self.sent.pop_front() {
            Some(Slot::Spool(key)) if pkid == 0 => {
                self.delivered(key);
                Written::Delivered(key)
            }
            Some(Slot::Spool(key)) => {
                self.acks.insert(pkid, Some(key));
                Written::Pending
            }
            Some(Slot::Untracked) => {
                if pkid != 0 {
                    self.acks.insert(pkid, None);
                }
                Written::Pending
            }
            None => Written::Unexpected,
        }
    }

    /// The broker acknowledged packet `pkid`; the spool key it carried, if it was a spool message.
    pub fn acked(&mut self, pkid: u16) -> Option<u64> {
        let key = self.acks.remove(&pkid).flatten()?;
        self.delivered(key);
        Some(key)
    }

    /// The oldest spool message this connection handed over and the broker has not acknowledged.
    pub fn head(&self) -> Option<u64> {
        let a = self.acks.values().flatten().min().copied();
        let b = self.sent.iter().find_map(|s| match s {
            Slot::Spool(k) => Some(*k),
            Slot::Untracked => None,
        });
        a.into_iter().chain(b).min()
    }

    fn delivered(&mut self, key: u64) {
        if let Some(b) = self.sizes.remove(&key) {
            self.bytes -= b;
        }
    }
}

/// Consecutive dropped connections during which a key was the oldest unacknowledged one; see
/// [`POISON_ATTEMPTS`].
#[derive(Default)]
pub(super) struct Attempts(HashMap<u64, u32>);

impl Attempts {
    /// Counts one dropped connection against `key`; `true` when it has reached
    /// [`POISON_ATTEMPTS`] (and the count starts over).
    pub fn charge(&mut self, key: u64) -> bool {
        let n = self.0.entry(key).or_insert(0);
        *n += 1;
        if *n < POISON_ATTEMPTS {
            return false;
        }
        self.0.remove(&key);
        true
    }

    /// `key` got through: it is no longer suspect.
    pub fn clear(&mut self, key: u64) {
        self.0.remove(&key);
    }

    /// Forgets keys below the spool's head (`None`: the spool is empty): they were delivered or
    /// evicted.
    pub fn forget_below(&mut self, first: Option<u64>) {
        match first {
            Some(first) => self.0.retain(|k, _| *k >= first),
            None => self.0.clear(),
        }
    }
}

/// The first pause of the command subscription after it cost a connection; it doubles with
/// each repeat up to [`SUBSCRIBE_PAUSE_MAX`].
pub(super) const SUBSCRIBE_PAUSE_MIN: Duration = Duration::from_secs(30);
pub(super) const SUBSCRIBE_PAUSE_MAX: Duration = Duration::from_secs(3600);

/// What to do about the command subscription on a new connection.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Subscribe {
    /// Send SUBSCRIBE now.
    Now,
    /// The broker's durable session already holds the subscription: subscribing again would
    /// only make a 3.1.1 broker re-send every retained command.
    Held,
    /// Paused until then: the last subscriptions cost the connection (see [`CommandSub`]).
    Paused(Instant),
}

/// When to subscribe to `cmd/#`. A 3.1.1 broker sends the retained messages under a filter on
/// every SUBSCRIBE; one larger than `max_incoming_bytes` makes rumqttc drop the connection
/// before it is read, so subscribing on every connection would loop forever and nothing would
/// be delivered. So: subscribe only when the broker's session lacks the subscription, and after
/// a connection that subscribed was lost to an over-sized message, pause subscribing (publish
/// only) with a doubling back-off before trying again.
#[derive(Debug, Default)]
pub(super) struct CommandSub {
    /// The broker acknowledged our SUBSCRIBE in the durable session it still holds.
    in_session: bool,
    /// The connection that last sent SUBSCRIBE.
    subscribed_on: Option<u64>,
    /// Subscribing connections lost to an over-sized message, in a row.
    strikes: u32,
    retry_at: Option<Instant>,
}

impl CommandSub {
    /// Connection `gen` is up.
    pub fn connected(&mut self, gen: u64, session_present: bool, now: Instant) -> Subscribe {
        if !session_present {
            self.in_session = false;
        }
        if self.in_session {
            return Subscribe::Held;
        }
        match self.retry_at {
            Some(t) if now < t => Subscribe::Paused(t),
            _ => {
                self.sent(gen);
                Subscribe::Now
            }
        }
    }

    /// While connected without the subscription: `true` when the pause is over and SUBSCRIBE
    /// is to be sent on connection `gen` now.
    pub fn retry_due(&mut self, gen: u64, now: Instant) -> bool {
        if self.in_session || self.retry_at.is_none_or(|t| now < t) {
            return false;
        }
        self.sent(gen);
        true
    }

    fn sent(&mut self, gen: u64) {
        self.subscribed_on = Some(gen);
        self.retry_at = None;
    }

    /// The broker acknowledged a SUBSCRIBE on connection `gen`.
    pub fn acked(&mut self, gen: u64) {
        if self.subscribed_on == Some(gen) {
            self.in_session = true;
        }
    }

    /// Connection `gen` ended; the pause it starts, when it subscribed and was then lost to an
    /// over-sized message (most likely a retained one the subscription brought).
    pub fn disconnected(&mut self, gen: u64, oversized: bool, now: Instant) -> Option<Duration> {
        if self.subscribed_on != Some(gen) {
            return None;
        }
        if !oversized {
            self.strikes = 0;
            return None;
        }
        // The broker sends retained messages only after it has taken the SUBSCRIBE, so the
        // session holds it even if the SUBACK, read with the over-sized packet, was never seen.
        self.in_session = true;
        self.strikes += 1;
        let pause = SUBSCRIBE_PAUSE_MIN
            .saturating_mul(1 << (self.strikes - 1).min(16))
            .min(SUBSCRIBE_PAUSE_MAX);
        self.retry_at = Some(now + pause);
        Some(pause)
    }

    /// When subscribing is next tried, while the subscription is missing and paused.
    pub fn paused_until(&self) -> Option<Instant> {
        self.retry_at.filter(|_| !self.in_session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qos1_messages_pair_with_their_packet_ids() {
        let mut f = InFlight::default();
        f.handed_untracked(); // the online status goes first on every connection
        f.handed(10, 100);
        f.handed(11, 50);
        assert_eq!((f.used(), f.bytes(), f.cursor()), (3, 150, 12));
        assert_eq!(f.head(), Some(10));

        assert_eq!(f.written(1), Written::Pending); // the status
        assert_eq!(f.written(2), Written::Pending); // key 10
        assert_eq!(f.written(3), Written::Pending); // key 11
        assert_eq!(f.used(), 3);
        // PUBACKs may come in any order.
        assert_eq!(f.acked(3), Some(11));
        assert_eq!(f.head(), Some(10));
        assert_eq!(f.acked(1), None, "the status is not a spool message");
        assert_eq!(f.acked(2), Some(10));
        assert_eq!((f.used(), f.bytes(), f.head()), (0, 0, None));
        assert_eq!(f.acked(2), None, "a duplicate PUBACK is ignored");
    }

    #[test]
    fn qos0_messages_are_delivered_once_written() {
        let mut f = InFlight::default();
        f.handed(5, 10);
        f.handed_untracked();
        assert_eq!(f.written(0), Written::Delivered(5));
        assert_eq!(f.written(0), Written::Pending);
        assert_eq!((f.used(), f.bytes(), f.head()), (0, 0, None));
        assert_eq!(f.written(7), Written::Unexpected);
    }

    #[test]
    fn skipped_keys_only_move_the_cursor() {
        let mut f = InFlight::default();
        f.skip(4);
        assert_eq!((f.cursor(), f.used(), f.head()), (5, 0, None));
    }

    #[test]
    fn command_subscription_pauses_after_oversized_losses() {
        let t0 = Instant::now();
        let mut c = CommandSub::default();
        assert_eq!(c.connected(1, false, t0), Subscribe::Now);
        // A retained over-sized command follows the SUBACK and costs the connection (the SUBACK
        // may be lost with it).
        assert_eq!(c.disconnected(1, true, t0), Some(SUBSCRIBE_PAUSE_MIN));
        // The durable session keeps the subscription: no re-subscribe, no re-sent retained.
        assert_eq!(c.connected(2, true, t0), Subscribe::Held);
        assert_eq!(c.paused_until(), None);
        assert_eq!(c.disconnected(2, false, t0), None);
        // The broker lost the session: publish only until the pause is over.
        assert_eq!(
            c.connected(3, false, t0),
            Subscribe::Paused(t0 + SUBSCRIBE_PAUSE_MIN)
        );
        assert!(c.paused_until().is_some());
        assert!(!c.retry_due(3, t0));
        let later = t0 + SUBSCRIBE_PAUSE_MIN;
        assert!(c.retry_due(3, later));
        assert!(!c.retry_due(3, later), "sent once");
        // It fails again: the pause doubles.
        assert_eq!(
            c.disconnected(3, true, later),
            Some(SUBSCRIBE_PAUSE_MIN * 2)
        );
        // A SUBSCRIBE never acknowledged does not count as held.
        let mut d = CommandSub::default();
        assert_eq!(d.connected(1, false, t0), Subscribe::Now);
        assert_eq!(d.disconnected(1, false, t0), None);
        assert_eq!(d.connected(2, true, t0), Subscribe::Now);
        // Losses on connections that did not subscribe start no pause.
        d.acked(2);
        assert_eq!(d.disconnected(5, true, t0), None);
    }

    #[test]
    fn a_head_dropped_often_enough_is_poison() {
        let mut a = Attempts::default();
        for _ in 1..POISON_ATTEMPTS {
            assert!(!a.charge(7));
        }
        assert!(a.charge(7));
        assert!(!a.charge(7), "the count starts over");
        a.clear(7);
        for _ in 1..POISON_ATTEMPTS {
            assert!(!a.charge(8));
        }
        a.forget_below(Some(9));
        assert!(!a.charge(8), "keys below the head are forgotten");
        a.forget_below(None);
        assert!(a.0.is_empty());
    }
}
