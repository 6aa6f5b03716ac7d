//! The spool thread: owns the [`Spool`]. Commits staged messages in batches (one fsync per
//! batch), hands up to `inflight` of them to rumqttc in key order, and deletes each one when
//! the net thread reports it delivered. After a reconnect it simply re-sends everything not yet
//! acknowledged from the spool's head; the broker session itself is durable (clean session
//! off), so subscriptions and queued commands survive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::eventloop::NetEvent;
use super::handle::PublisherHandle;
use super::protocol::Client;
use super::state::{Attempts, CommandSub, InFlight, Subscribe, Written, POISON_ATTEMPTS};
use super::{Ctl, Stop};
use crate::mqtt::spool::{Admission, Spool, SpoolMessage};
use crate::mqtt::topics::{now_ms, DeviceState, MessageClass, Qos};

/// Spool-thread batch: one fsync for up to this many messages.
const BATCH: usize = 512;
/// Bytes handed to the connection and not yet acknowledged, at most (one message may exceed
/// it): rumqttc keeps a copy of every unacknowledged QoS 1 message.
const INFLIGHT_BYTES: u64 = 8 << 20;
/// A spool that held this many bytes is compacted once it has drained: the file keeps its
/// largest size otherwise (redb reuses free pages but does not give them back).
const COMPACT_AFTER_BYTES: u64 = 4 << 20;

/// The live connection as the spool thread sees it.
struct Conn {
    gen: u64,
    client: Client,
    state: InFlight,
}

pub(super) struct SpoolSender {
    spool: Spool,
    handle: PublisherHandle,
    window: usize,
    commands: bool,
    conn: Option<Conn>,
    deletes: Vec<u64>,
    attempts: Attempts,
    sub: CommandSub,
    /// The most the spool has held since it was last empty and compacted.
    peak_bytes: u64,
    drain_until: Option<Instant>,
    stop: Arc<Stop>,
}

impl SpoolSender {
    pub fn new(
        spool: Spool,
        handle: PublisherHandle,
        window: usize,
        commands: bool,
        stop: Arc<Stop>,
    ) -> SpoolSender {
        let mut sender = SpoolSender {
            spool,
            handle,
            window,
            commands,
            conn: None,
            deletes: Vec::new(),
            attempts: Attempts::default(),
            sub: CommandSub::default(),
            peak_bytes: 0,
            drain_until: None,
            stop,
        };
        // The spool may hold messages from the last run: report them before the first publish.
        sender.update_stats();
        sender
    }

    pub fn run(
        mut self,
        staging: Receiver<SpoolMessage>,
        net: Receiver<NetEvent>,
        ctl: Receiver<Ctl>,
    ) {
        let mut batch = Vec::new();
        let mut net = net;
        loop {
            crossbeam_channel::select! {
                recv(staging) -> m => if let Ok(m) = m { batch.push(m) },
                recv(net) -> e => match e {
                    Ok(e) => self.on_net(e),
                    // The net thread is gone (it could not start its runtime): keep spooling,
                    // without spinning on a closed channel.
                    Err(_) => {
                        self.conn = None;
                        net = crossbeam_channel::never();
                    }
                },
                recv(ctl) -> c => match c {
                    Ok(Ctl::Shutdown { drain_until }) => self.drain_until = Some(drain_until),
                    Err(_) => self.drain_until = Some(Instant::now()),
                },
                default(Duration::from_millis(250)) => {}
            }
            while batch.len() < BATCH {
                match staging.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            while let Ok(e) = net.try_recv() {
                self.on_net(e);
            }
            let taken = batch.len() as u64;
            let taken_bytes: u64 = batch.iter().map(SpoolMessage::cost).sum();
            self.store(std::mem::take(&mut batch));
            self.flush_deletes();
            self.retry_subscription();
            self.fill();
            self.update_stats();
            self.compact_when_drained();
            // Only now, with spool depth published, so `flush()` never sees an empty staging
            // queue and a stale empty spool at the same time.
            self.handle.unstage(taken, taken_bytes);

            if let Some(until) = self.drain_until {
                let idle = staging.is_empty() && self.spool.is_empty();
                if idle || Instant::now() >= until {
                    // Whatever arrived after shutdown began still goes to disk.
                    let rest: Vec<_> = staging.try_iter().collect();
                    let (n, bytes) = (rest.len() as u64, rest.iter().map(SpoolMessage::cost).sum());
                    self.store(rest);
                    self.handle.unstage(n, bytes);
                    self.say_goodbye(&net);
                    self.update_stats();
                    self.stop.set();
                    return;
                }
            }
        }
    }

    fn store(&mut self, batch: Vec<SpoolMessage>) {
        if batch.is_empty() {
            return;
        }
        let classes: Vec<MessageClass> = batch.iter().map(|m| m.class).collect();
        match self.spool.push_batch(batch) {
            Ok(adm) => {
                for (a, c) in adm.iter().zip(classes) {
                    if let Admission::Refused(why) = a {
                        if c == MessageClass::Alert {
                            log::error!("mqtt: alert dropped: {why}");
                        } else {
                            log::debug!("mqtt: {c} message dropped: {why}");
                        }
                    }
                }
            }
            Err(e) => {
                log::error!(
                    "mqtt: {} messages lost, spool write failed: {e}",
                    classes.len()
                );
                for c in classes {
                    self.spool.count_drop(c);
                }
            }
        }
    }

    fn on_net(&mut self, ev: NetEvent) {
        match ev {
            NetEvent::Connected {
                gen,
                client,
                session_present,
            } => {
                let mut conn = Conn {
                    gen,
                    client,
                    state: InFlight::default(),
                };
                let status = self.handle.status_payload(DeviceState::Online, None);
                let topic = self.handle.topics().status();
                if conn
                    .client
                    .try_publish(topic, Qos::AtLeastOnce, true, status, None)
                {
                    conn.state.handed_untracked();
                }
                if self.commands {
                    match self.sub.connected(gen, session_present, Instant::now()) {
                        Subscribe::Now => subscribe(&conn.client, &self.handle),
                        Subscribe::Held => {
                            log::debug!("mqtt: the broker's session still holds cmd/# and rules/+/set")
                        }
                        Subscribe::Paused(until) => log::warn!(
                            "mqtt: connected without the command subscription (publish only) until {}s from now: subscribing brought a message over max_incoming_bytes (a retained command? clear it with an empty retained publish)",
                            until.saturating_duration_since(Instant::now()).as_secs()
                        ),
                    }
                }
                self.conn = Some(conn);
                self.handle.with_stats(|st| {
                    if st.connects > 0 {
                        st.reconnects += 1;
                    }
                    st.connects += 1;
                    st.connected = true;
                });
                log::info!("mqtt: connected");
            }
            NetEvent::SubAcked { gen } => self.sub.acked(gen),
            NetEvent::Published { gen, pkid } => {
                let Some(conn) = self.conn.as_mut().filter(|c| c.gen == gen) else {
                    return;
                };
                match conn.state.written(pkid) {
                    Written::Delivered(key) => {
                        self.deletes.push(key);
                        self.attempts.clear(key);
                    }
                    Written::Pending => {}
                    Written::Unexpected => {
                        log::warn!("mqtt: publish {pkid} written that was never queued")
                    }
                }
            }
            NetEvent::Acked { gen, pkid, refused } => {
                let Some(conn) = self.conn.as_mut().filter(|c| c.gen == gen) else {
                    return;
                };
                if let Some(key) = conn.state.acked(pkid) {
                    self.attempts.clear(key);
                    match refused {
                        None => self.deletes.push(key),
                        // Sending it again would be refused again: drop it, loudly.
                        Some(why) => self.refused(key, &why),
                    }
                }
            }
            NetEvent::DisconnectSent { .. } => {}
            NetEvent::Disconnected {
                gen,
                error,
                oversized,
            } => {
                let conn = self.conn.take_if(|c| c.gen == gen);
                let established = conn.is_some();
                // An over-sized incoming packet is no fault of the message in flight.
                if let Some(head) = conn.and_then(|c| c.state.head()).filter(|_| !oversized) {
                    self.charge(head);
                }
                if let Some(pause) = self.sub.disconnected(gen, oversized, Instant::now()) {
                    log::warn!(
                        "mqtt: subscribing to {} brought a message over max_incoming_bytes (most likely a retained command); no new subscription for {}s, publishing continues (clear it with an empty retained publish on that topic)",
                        self.handle.topics().commands_filter(),
                        pause.as_secs()
                    );
                }
                self.handle.with_stats(|st| {
                    st.connected = false;
                    st.last_error = Some(error);
                    st.last_error_ms = Some(now_ms());
                    if oversized {
                        st.incoming_oversized += 1;
                    }
                    if !established {
                        st.connect_failures += 1;
                    }
                });
            }
        }
    }

    fn compact_when_drained(&mut self) {
        self.peak_bytes = self.peak_bytes.max(self.spool.bytes());
        if self.peak_bytes < COMPACT_AFTER_BYTES || !self.spool.is_empty() {
            return;
        }
        self.peak_bytes = 0;
        match self.spool.compact() {
            Ok((before, after)) => log::info!(
                "mqtt: spool drained, {} compacted from {before} to {after} bytes",
                self.spool.path().display()
            ),
            Err(e) => log::warn!("mqtt: {e} (compacting the drained spool)"),
        }
    }

    /// Subscribes to the commands on the live connection once a pause (see [`CommandSub`]) is
    /// over.
    fn retry_subscription(&mut self) {
        let Some(conn) = self.conn.as_ref().filter(|_| self.commands) else {
            return;
        };
        if self.sub.retry_due(conn.gen, Instant::now()) {
            log::info!("mqtt: trying the command subscription again");
            subscribe(&conn.client, &self.handle);
        }
    }

    /// Counts a dropped connection against the message at the head of the queue, and drops a
    /// non-alert message that has been there for [`POISON_ATTEMPTS`] of them.
    fn charge(&mut self, key: u64) {
        if !self.attempts.charge(key) {
            return;
        }
        let Ok(found) = self.spool.peek(key, 1) else {
            return;
        };
        if let Some((k, m)) = found.into_iter().next().filter(|(k, _)| *k == key) {
            if m.class == MessageClass::Alert {
                log::error!(
                    "mqtt: alert {k} on {} was in flight for {POISON_ATTEMPTS} dropped connections; keeping it (alerts are never dropped)",
                    m.topic
                );
                return;
            }
            log::error!(
                "mqtt: dropping {} message on {} ({} bytes): the broker dropped the connection {POISON_ATTEMPTS} times while it was in flight",
                m.class,
                m.topic,
                m.payload.len()
            );
            if self.spool.remove(&[k], true).is_ok() {
                self.spool.count_drop(m.class);
            }
        }
    }

    /// A message the broker acknowledged with an error reason (MQTT v5): not authorised, quota
    /// exceeded, invalid topic... Re-sending cannot help, so it leaves the spool and is counted.
    fn refused(&mut self, key: u64, why: &str) {
        let found = self
            .spool
            .peek(key, 1)
            .ok()
            .and_then(|v| v.into_iter().next());
        if let Some((k, m)) = found.filter(|(k, _)| *k == key) {
            log::error!(
                "mqtt: broker refused {} message on {}: {why}",
                m.class,
                m.topic
            );
            if self.spool.remove(&[k], true).is_ok() {
                self.spool.count_drop(m.class);
            }
        }
        self.handle
            .with_stats(|st| st.last_error = Some(format!("broker refused a message: {why}")));
    }

    fn flush_deletes(&mut self) {
        if self.deletes.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.deletes);
        match self.spool.remove(&keys, false) {
            Ok(_) => self.handle.with_stats(|st| st.acked += keys.len() as u64),
            // They stay in the spool and go out again: a duplicate, not a loss.
            Err(e) => log::warn!("mqtt: {e}"),
        }
    }

    /// Hands spool messages to rumqttc, oldest first, until the window (count and bytes) is
    /// full or the spool has no more.
    fn fill(&mut self) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let st = &mut conn.state;
        let mut handed = 0u64;
        'outer: while st.used() < self.window && (st.bytes() < INFLIGHT_BYTES || st.used() == 0) {
            let budget = INFLIGHT_BYTES.saturating_sub(st.bytes());
            let batch = match self
                .spool
                .peek_bounded(st.cursor(), self.window - st.used(), budget)
            {
                Ok(b) => b,
                Err(e) => {
                    log::error!("mqtt: {e}");
                    break;
                }
            };
            if batch.is_empty() {
                break;
            }
            for (key, m) in batch {
                if !rumqttc::valid_topic(&m.topic) {
                    // publish() validates topics; this guards a spool written by other code.
                    log::error!(
                        "mqtt: discarding spooled message with invalid topic {:?}",
                        m.topic
                    );
                    self.deletes.push(key);
                    st.skip(key);
                    continue;
                }
                let cost = m.cost();
                if !conn
                    .client
                    .try_publish(m.topic, m.qos, m.retain, m.payload, m.correlation)
                {
                    // Request queue full or the connection just went away: its events follow.
                    break 'outer;
                }
                st.handed(key, cost);
                handed += 1;
            }
        }
        if handed > 0 {
            self.handle.with_stats(|st| st.sent += handed);
        }
    }

    /// Announces a clean `offline` and disconnects, waiting briefly for both to be written.
    fn say_goodbye(&mut self, net: &Receiver<NetEvent>) {
        let Some(conn) = self.conn.as_mut() else {
            return;
        };
        let gen = conn.gen;
        let payload = self
            .handle
            .status_payload(DeviceState::Offline, Some("shutdown"));
        if conn.client.try_publish(
            self.handle.topics().status(),
            Qos::AtLeastOnce,
            true,
            payload,
            None,
        ) {
            conn.state.handed_untracked();
        }
        if !conn.client.try_disconnect() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(ev) = net.recv_deadline(deadline) {
            match ev {
                NetEvent::DisconnectSent { gen: g } | NetEvent::Disconnected { gen: g, .. }
                    if g == gen =>
                {
                    break
                }
                other => self.on_net(other),
            }
        }
        self.flush_deletes();
    }

    fn update_stats(&mut self) {
        let paused = self
            .sub
            .paused_until()
            .map(|t| now_ms() + t.saturating_duration_since(Instant::now()).as_millis() as u64);
        let (depth, bytes) = (self.spool.len(), self.spool.bytes());
        let by_class = self.spool.depth_by_class();
        let dropped = self.spool.dropped_by_class();
        self.handle.with_stats(|st| {
            st.spool_depth = depth;
            st.spool_bytes = bytes;
            st.depth_by_class = by_class;
            st.dropped = dropped;
            st.commands_paused_until_ms = paused;
        });
        // Keys below the spool's head were delivered or evicted.
        self.attempts.forget_below(self.spool.first_key());
    }
}

fn subscribe(client: &Client, handle: &PublisherHandle) {
    let t = handle.topics();
    // Rule switches (`rules/<rule>/set`, Home Assistant) are commands too.
    for filter in [t.commands_filter(), t.rule_set_filter()] {
        if !client.try_subscribe_qos0(filter) {
            log::warn!("mqtt: cannot subscribe to commands (request queue full)");
        }
    }
}
