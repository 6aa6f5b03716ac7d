//! A persistent, bounded store-and-forward queue between the pipeline and the broker.
//!
//! One redb table maps a monotonically increasing `u64` key to an encoded message. A message
//! leaves the table only once the broker has it (PUBACK for QoS 1, written to the socket for
//! QoS 0), so whatever was accepted survives a broker outage, a network outage and a restart of
//! this process; on reopen, pending messages are read back in key order.
//!
//! ## Bounds and who is dropped
//! The spool is bounded by message count and by bytes (topic + payload + a small header).
//! When a new message does not fit:
//! 1. the oldest message of the lowest-priority class present is evicted (detections, then stats,
//!    snapshots, scene, replies, events), repeatedly, but only from classes of priority ≤ the
//!    new message's — a detection never pushes out an event;
//! 2. if that is not enough the new message is refused;
//! 3. alerts are never evicted. An alert first evicts every lower class; if the spool then holds
//!    only alerts, alerts may grow past the normal bounds up to the alert hard cap
//!    (`alert_max_messages`/`alert_max_bytes`), which exists only so a broker that never comes
//!    back cannot fill the disk. At the hard cap the *new* alert is refused (the older, still
//!    undelivered ones are kept) and counted.
//!
//! Every eviction and refusal is counted per class.
//!
//! Appends are committed with fsync (`Durability::Immediate`), in batches by the caller. Deletes
//! are committed without fsync: losing one in a crash only means the message is sent again,
//! which QoS 1 allows and the payload `id` makes harmless.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{
    Database, DatabaseError, Durability, ReadableDatabase, ReadableTable, StorageError,
    TableDefinition,
};
use serde::{Deserialize, Serialize};

use super::error::{MqttError, Result};
use super::topics::{MessageClass, Qos};

const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const NEXT_KEY: &str = "next_key";

/// Record layouts: 1 = header, topic, payload; 2 = header, topic, correlation data (a u16
/// length, then the bytes), payload. Version 2 is written only for messages that carry
/// correlation data, so spools stay readable by the version that only knew 1.
const RECORD_VERSION: u8 = 1;
const RECORD_VERSION_CORRELATED: u8 = 2;
/// Bytes of a record before the topic: version, class, qos, retain, created_ts, topic length.
const HEADER: usize = 14;
const CLASSES: usize = MessageClass::ALL.len();

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpoolLimits {
    /// Normal bound on the number of messages held.
    pub max_messages: u64,
    /// Normal bound on bytes held (topic + payload + 14 bytes per message).
    pub max_bytes: u64,
    /// Hard cap on alerts alone, which may exceed the normal bounds.
    pub alert_max_messages: u64,
    pub alert_max_bytes: u64,
    /// Largest single message accepted.
    pub max_message_bytes: u64,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        SpoolLimits {
            max_messages: 10_000,
            max_bytes: 64 << 20,
            alert_max_messages: 100_000,
            alert_max_bytes: 256 << 20,
            max_message_bytes: 16 << 20,
        }
    }
}

/// One message as the spool keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolMessage {
    pub class: MessageClass,
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: Qos,
    pub retain: bool,
    /// Milliseconds since the Unix epoch when the message was accepted.
    pub created_ts: u64,
    /// MQTT v5 correlation data, for replies to a v5 request (ignored on 3.1.1 connections).
    pub correlation: Option<Vec<u8>>,
}

impl SpoolMessage {
    /// The size counted against the byte bounds.
    pub fn cost(&self) -> u64 {
        let corr = self.correlation.as_ref().map_or(0, |c| 2 + c.len());
        (HEADER + self.topic.len() + corr + self.payload.len()) as u64
    }

    fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.cost() as usize);
        v.push(match self.correlation {
            Some(_) => RECORD_VERSION_CORRELATED,
            None => RECORD_VERSION,
        });
        v.push(self.class as u8);
        v.push(self.qos as u8);
        v.push(self.retain as u8);
        v.extend_from_slice(&self.created_ts.to_le_bytes());
        v.extend_from_slice(&(self.topic.len() as u16).to_le_bytes());
        v.extend_from_slice(self.topic.as_bytes());
        if let Some(c) = &self.correlation {
            v.extend_from_slice(&(c.len() as u16).to_le_bytes());
            v.extend_from_slice(c);
        }
        v.extend_from_slice(&self.payload);
        v
    }

    fn decode(b: &[u8]) -> std::result::Result<SpoolMessage, String> {
        let (class, qos, retain, created_ts, tlen) = decode_header(b)?;
        let topic = std::str::from_utf8(&b[HEADER..HEADER + tlen])
            .map_err(|_| "topic is not UTF-8".to_string())?
            .to_string();
        let mut at = HEADER + tlen;
        let correlation = if b[0] == RECORD_VERSION_CORRELATED {
            let Some(len) = b.get(at..at + 2) else {
                return Err("correlation data runs past the end of the record".into());
            };
            let len = u16::from_le_bytes([len[0], len[1]]) as usize;
            let Some(c) = b.get(at + 2..at + 2 + len) else {
                return Err("correlation data runs past the end of the record".into());
            };
            at += 2 + len;
            Some(c.to_vec())
        } else {
            None
        };
        Ok(SpoolMessage {
            class,
            topic,
            payload: b[at..].to_vec(),
            qos,
            retain,
            created_ts,
            correlation,
        })
    }
}

fn decode_header(b: &[u8]) -> std::result::Result<(MessageClass, Qos, bool, u64, usize), String> {
    if b.len() < HEADER {
        return Err(format!(
            "record of {} bytes is shorter than its header",
            b.len()
        ));
    }
    if b[0] != RECORD_VERSION && b[0] != RECORD_VERSION_CORRELATED {
        return Err(format!("unknown record version {}", b[0]));
    }
    let class = MessageClass::from_index(b[1]).ok_or_else(|| format!("unknown class {}", b[1]))?;
    let qos = Qos::try_from(b[2])?;
    let retain = b[3] != 0;
    let created_ts = u64::from_le_bytes(b[4..12].try_into().unwrap_or_default());
    let tlen = u16::from_le_bytes([b[12], b[13]]) as usize;
    if HEADER + tlen > b.len() {
        return Err("topic runs past the end of the record".into());
    }
    Ok((class, qos, retain, created_ts, tlen))
}

/// What happened to a pushed message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Stored(u64),
    Refused(Refusal),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Larger than `max_message_bytes` (or than the whole spool).
    TooLarge,
    /// Full of messages of higher priority than this one.
    Full,
    /// An alert arrived while alerts alone fill the alert hard cap.
    AlertCapReached,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::TooLarge => "message larger than the spool accepts",
            Refusal::Full => "spool full of higher-priority messages",
            Refusal::AlertCapReached => "alert hard cap reached",
        })
    }
}

pub struct Spool {
    db: Database,
    path: PathBuf,
    limits: SpoolLimits,
    next_key: u64,
    /// Per class: key → cost, so eviction finds the oldest of a class without touching disk.
    index: [BTreeMap<u64, u64>; CLASSES],
    bytes: [u64; CLASSES],
    dropped: [u64; CLASSES],
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("path", &self.path)
            .field("len", &self.len())
            .field("bytes", &self.bytes())
            .finish()
    }
}

impl Spool {
    /// Opens (or creates) the spool file and indexes what it holds. Records that cannot be decoded
    /// (written by a newer version, or damaged) are deleted with a warning rather than blocking
    /// the queue forever.
    pub fn open(path: impl AsRef<Path>, limits: SpoolLimits) -> Result<Spool> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| MqttError::Spool {
                path: dir.to_path_buf(),
                reason: format!("cannot create the folder: {e}"),
            })?;
        }
        let err = |e: &dyn std::fmt::Display| db_err(&path, e);
        let db = Database::create(&path).map_err(|e| err(&e))?;
        let mut spool = Spool {
            db,
            path: path.clone(),
            limits,
            next_key: 1,
            index: Default::default(),
            bytes: [0; CLASSES],
            dropped: [0; CLASSES],
        };
        let txn = spool.db.begin_write().map_err(|e| err(&e))?;
        let mut bad = Vec::new();
        {
            let mut meta = txn.open_table(META).map_err(|e| err(&e))?;
            let table = txn.open_table(MESSAGES).map_err(|e| err(&e))?;
            let stored_next = meta
                .get(NEXT_KEY)
                .map_err(|e| err(&e))?
                .map(|g| g.value())
                .unwrap_or(1);
            let mut last = 0;
            for row in table.iter().map_err(|e| err(&e))? {
                let (k, v) = row.map_err(|e| err(&e))?;
                let (key, value) = (k.value(), v.value());
                last = last.max(key);
                match decode_header(value) {
                    Ok((class, ..)) => {
                        spool.index[class.index()].insert(key, value.len() as u64);
                        spool.bytes[class.index()] += value.len() as u64;
                    }
                    Err(why) => {
                        log::warn!("{}: dropping spool record {key}: {why}", path.display());
                        bad.push(key);
                    }
                }
            }
            spool.next_key = stored_next.max(last + 1).max(1);
            meta.insert(NEXT_KEY, spool.next_key).map_err(|e| err(&e))?;
        }
        {
            let mut table = txn.open_table(MESSAGES).map_err(|e| err(&e))?;
            for k in bad {
                table.remove(k).map_err(|e| err(&e))?;
            }
        }
        txn.commit().map_err(|e| err(&e))?;
        Ok(spool)
    }

    /// [`Spool::open`], and when the file is damaged past what that handles (redb cannot open
    /// it, or its tables are not what they should be): moves it aside to
    /// `<file>.damaged-<ms>` (kept for inspection), starts a fresh spool at `path` and copies
    /// into it every record that can still be read from the damaged file — so a broken file
    /// neither blocks start-up nor loses the alerts that are still readable. A spool held by
    /// another process is not damaged: that stays an error.
    pub fn open_or_recover(path: impl AsRef<Path>, limits: SpoolLimits) -> Result<Spool> {
        let path = path.as_ref();
        let first = match Spool::open(path, limits) {
            Ok(s) => return Ok(s),
            Err(e) => e,
        };
        // Damaged: redb says so, or it opens the file but our tables are not what they should
        // be. Anything else (held by another process, I/O, an old format) is not for us to fix.
        match Database::create(path) {
            Ok(db) => drop(db),
            Err(DatabaseError::Storage(StorageError::Corrupted(_))) => {}
            // What redb says of a file that is not a redb database (a wrong magic number).
            Err(DatabaseError::Storage(StorageError::Io(e)))
                if e.kind() == std::io::ErrorKind::InvalidData => {}
            Err(_) => return Err(first),
        }
        let mut aside = path.as_os_str().to_owned();
        aside.push(format!(".damaged-{}", super::topics::now_ms()));
        let aside = PathBuf::from(aside);
        std::fs::rename(path, &aside).map_err(|e| MqttError::Spool {
            path: path.to_path_buf(),
            reason: format!(
                "{first}; moving it aside to {} failed: {e}",
                aside.display()
            ),
        })?;
        let mut spool = Spool::open(path, limits)?;
        let (read, kept) = spool.salvage(&aside);
        log::error!(
            "{first}: moved the damaged spool aside to {} and started a fresh one; {read} records could be read from it, {kept} kept",
            aside.display()
        );
        Ok(spool)
    }

    /// Copies the readable records of the spool file `from` into this one, in key order;
    /// returns how many were read and how many the bounds admitted.
    fn salvage(&mut self, from: &Path) -> (usize, usize) {
        let mut msgs = Vec::new();
        let mut read = || -> std::result::Result<(), Box<dyn std::error::Error>> {
            let db = Database::open(from)?;
            let txn = db.begin_read()?;
            let table = txn.open_table(MESSAGES)?;
            for row in table.iter()? {
                let Ok((_, v)) = row else { break };
                if let Ok(m) = SpoolMessage::decode(v.value()) {
                    msgs.push(m);
                }
            }
            Ok(())
        };
        if let Err(e) = read() {
            log::warn!("{}: reading the damaged spool: {e}", from.display());
        }
        let n = msgs.len();
        let kept = match self.push_batch(msgs) {
            Ok(adm) => adm
                .iter()
                .filter(|a| !matches!(a, Admission::Refused(_)))
                .count(),
            Err(e) => {
                log::error!("{e}");
                0
            }
        };
        (n, kept)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn limits(&self) -> SpoolLimits {
        self.limits
    }

    pub fn len(&self) -> u64 {
        self.index.iter().map(|m| m.len() as u64).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.index.iter().all(|m| m.is_empty())
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.iter().sum()
    }

    pub fn len_of(&self, class: MessageClass) -> u64 {
        self.index[class.index()].len() as u64
    }

    /// Messages evicted or refused, per class, since this spool was opened.
    pub fn dropped(&self, class: MessageClass) -> u64 {
        self.dropped[class.index()]
    }

    pub fn dropped_by_class(&self) -> BTreeMap<MessageClass, u64> {
        per_class(&self.dropped)
    }

    pub fn depth_by_class(&self) -> BTreeMap<MessageClass, u64> {
        let counts: Vec<u64> = self.index.iter().map(|m| m.len() as u64).collect();
        per_class(&counts)
    }

    /// Smallest key held, if any.
    pub fn first_key(&self) -> Option<u64> {
        self.index
            .iter()
            .filter_map(|m| m.keys().next().copied())
            .min()
    }

    /// Counts a message the caller refused before it reached the spool (e.g. a full staging
    /// queue), so all drops show up in one place.
    pub fn count_drop(&mut self, class: MessageClass) {
        self.dropped[class.index()] += 1;
    }

    pub fn push(&mut self, msg: SpoolMessage) -> Result<Admission> {
        Ok(self.push_batch(vec![msg])?[0])
    }

    /// Stores messages in one transaction (one fsync), evicting per the module's policy.
    pub fn push_batch(&mut self, msgs: Vec<SpoolMessage>) -> Result<Vec<Admission>> {
        let mut out = Vec::with_capacity(msgs.len());
        if msgs.is_empty() {
            return Ok(out);
        }
        let saved = (self.index.clone(), self.bytes, self.dropped, self.next_key);
        let res = self.push_batch_txn(msgs, &mut out);
        if let Err(e) = res {
            // The transaction was rolled back; so is the in-memory view of it.
            (self.index, self.bytes, self.dropped, self.next_key) = saved;
            return Err(e);
        }
        Ok(out)
    }

    fn push_batch_txn(&mut self, msgs: Vec<SpoolMessage>, out: &mut Vec<Admission>) -> Result<()> {
        let path = self.path.clone();
        let err = |e: &dyn std::fmt::Display| db_err(&path, e);
        let txn = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut table = txn.open_table(MESSAGES).map_err(|e| err(&e))?;
            for msg in msgs {
                let cost = msg.cost();
                match self.make_room(msg.class, cost) {
                    Ok(victims) => {
                        for k in victims {
                            table.remove(k).map_err(|e| err(&e))?;
                        }
                        let key = self.next_key;
                        self.next_key += 1;
                        table
                            .insert(key, msg.encode().as_slice())
                            .map_err(|e| err(&e))?;
                        self.index[msg.class.index()].insert(key, cost);
                        self.bytes[msg.class.index()] += cost;
                        out.push(Admission::Stored(key));
                    }
                    Err(why) => {
                        self.dropped[msg.class.index()] += 1;
                        out.push(Admission::Refused(why));
                    }
                }
            }
            let mut meta = txn.open_table(META).map_err(|e| err(&e))?;
            meta.insert(NEXT_KEY, self.next_key).map_err(|e| err(&e))?;
        }
        txn.commit().map_err(|e| err(&e))?;
        Ok(())
    }

    /// Decides whether a message of `class` and `cost` fits; on success the in-memory index no
    /// longer holds the returned victims (the caller deletes them in the same transaction).
    fn make_room(
        &mut self,
        class: MessageClass,
        cost: u64,
    ) -> std::result::Result<Vec<u64>, Refusal> {
        let l = self.limits;
        let hard_max = if class == MessageClass::Alert {
            l.max_message_bytes.min(l.alert_max_bytes.max(l.max_bytes))
        } else {
            l.max_message_bytes.min(l.max_bytes)
        };
        if cost > hard_max {
            return Err(Refusal::TooLarge);
        }
        // Plan on copies so a refusal leaves nothing evicted.
        let mut planned: Vec<(MessageClass, u64, u64)> = Vec::new();
        let mut len = self.len();
        let mut bytes = self.bytes();
        let mut cursors: [Option<std::collections::btree_map::Iter<'_, u64, u64>>; CLASSES] =
            Default::default();
        while len + 1 > l.max_messages || bytes + cost > l.max_bytes {
            let victim = MessageClass::ALL
                .iter()
                .copied()
                .filter(|c| *c != MessageClass::Alert && *c <= class)
                .find_map(|c| {
                    let it = cursors[c.index()].get_or_insert_with(|| self.index[c.index()].iter());
                    it.next().map(|(k, cost)| (c, *k, *cost))
                });
            match victim {
                Some(v) => {
                    planned.push(v);
                    len -= 1;
                    bytes -= v.2;
                }
                None if class == MessageClass::Alert => {
                    let a = MessageClass::Alert.index();
                    let alerts = self.index[a].len() as u64;
                    if alerts + 1 > l.alert_max_messages || self.bytes[a] + cost > l.alert_max_bytes
                    {
                        return Err(Refusal::AlertCapReached);
                    }
                    break;
                }
                None => return Err(Refusal::Full),
            }
        }
        let mut victims = Vec::with_capacity(planned.len());
        for (c, k, cost) in planned {
            self.index[c.index()].remove(&k);
            self.bytes[c.index()] -= cost;
            self.dropped[c.index()] += 1;
            victims.push(k);
        }
        Ok(victims)
    }

    /// Up to `limit` messages with key ≥ `from`, in key order.
    pub fn peek(&self, from: u64, limit: usize) -> Result<Vec<(u64, SpoolMessage)>> {
        self.peek_bounded(from, limit, u64::MAX)
    }

    /// Like [`Spool::peek`], but stops once the messages read reach `max_bytes` of cost (at least
    /// one message is returned if any is there), so a backlog of large snapshots is not all read
    /// into memory at once.
    pub fn peek_bounded(
        &self,
        from: u64,
        limit: usize,
        max_bytes: u64,
    ) -> Result<Vec<(u64, SpoolMessage)>> {
        let err = |e: &dyn std::fmt::Display| db_err(&self.path, e);
        let txn = self.db.begin_read().map_err(|e| err(&e))?;
        let table = txn.open_table(MESSAGES).map_err(|e| err(&e))?;
        let mut out = Vec::new();
        let mut bytes = 0u64;
        for row in table.range(from..).map_err(|e| err(&e))? {
            if out.len() >= limit || (bytes >= max_bytes && !out.is_empty()) {
                break;
            }
            let (k, v) = row.map_err(|e| err(&e))?;
            match SpoolMessage::decode(v.value()) {
                Ok(m) => {
                    bytes += m.cost();
                    out.push((k.value(), m))
                }
                // Open() removed undecodable records; one appearing now is damage on disk.
                Err(why) => log::warn!(
                    "{}: skipping spool record {}: {why}",
                    self.path.display(),
                    k.value()
                ),
            }
        }
        Ok(out)
    }

    /// Deletes delivered messages; unknown keys (already evicted) are ignored. `durable` decides
    /// whether to fsync: see the module docs for why deletes usually need not.
    pub fn remove(&mut self, keys: &[u64], durable: bool) -> Result<usize> {
        if keys.is_empty() {
            return Ok(0);
        }
        let path = self.path.clone();
        let err = |e: &dyn std::fmt::Display| db_err(&path, e);
        let mut txn = self.db.begin_write().map_err(|e| err(&e))?;
        if !durable {
            txn.set_durability(Durability::None).map_err(|e| err(&e))?;
        }
        let mut removed = Vec::new();
        {
            let mut table = txn.open_table(MESSAGES).map_err(|e| err(&e))?;
            for &k in keys {
                if let Some(v) = table.remove(k).map_err(|e| err(&e))? {
                    if let Ok((class, ..)) = decode_header(v.value()) {
                        removed.push((class, k));
                    }
                }
            }
        }
        txn.commit().map_err(|e| err(&e))?;
        for (class, k) in &removed {
            if let Some(cost) = self.index[class.index()].remove(k) {
                self.bytes[class.index()] -= cost;
            }
        }
        Ok(removed.len())
    }

    /// Gives the free pages back to the file system (a spool that grew during an outage stays
    /// that size otherwise). Makes earlier commits durable first; returns the file's size in
    /// bytes before and after.
    pub fn compact(&mut self) -> Result<(u64, u64)> {
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let before = size(&self.path);
        self.sync()?;
        // Each pass moves what is left towards the start; a few are enough.
        for _ in 0..4 {
            match self.db.compact() {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => return Err(db_err(&self.path, &e)),
            }
        }
        Ok((before, size(&self.path)))
    }

    /// Makes every earlier non-durable commit durable.
    pub fn sync(&mut self) -> Result<()> {
        let err = |e: &dyn std::fmt::Display| db_err(&self.path, e);
        let txn = self.db.begin_write().map_err(|e| err(&e))?;
        txn.commit().map_err(|e| err(&e))
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            log::warn!("{e}");
        }
    }
}

fn per_class(counts: &[u64]) -> BTreeMap<MessageClass, u64> {
    MessageClass::ALL
        .iter()
        .map(|c| (*c, counts[c.index()]))
        .collect()
}

fn db_err(path: &Path, e: &dyn std::fmt::Display) -> MqttError {
    MqttError::Spool {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(class: MessageClass, topic: &str, n: usize) -> SpoolMessage {
        SpoolMessage {
            class,
            topic: topic.into(),
            payload: vec![b'x'; n],
            qos: Qos::AtLeastOnce,
            retain: false,
            created_ts: 7,
            correlation: None,
        }
    }

    fn limits(max_messages: u64, alert_max_messages: u64) -> SpoolLimits {
        SpoolLimits {
            max_messages,
            alert_max_messages,
            ..SpoolLimits::default()
        }
    }

    #[test]
    fn a_damaged_spool_is_moved_aside_and_what_is_readable_kept() {
        let dir = tempfile::tempdir().unwrap();
        // Not a redb file at all: moved aside, a fresh spool starts.
        let junk = dir.path().join("junk.redb");
        std::fs::write(&junk, vec![0xA5; 64 << 10]).unwrap();
        assert!(Spool::open(&junk, SpoolLimits::default()).is_err());
        let s = Spool::open_or_recover(&junk, SpoolLimits::default()).unwrap();
        assert!(s.is_empty());
        drop(s);
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".damaged-"))
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(
            std::fs::read(aside[0].path()).unwrap(),
            vec![0xA5; 64 << 10]
        );

        // Readable messages, but a table of the wrong type: the messages are kept.
        let p = dir.path().join("meta.redb");
        {
            let mut s = Spool::open(&p, SpoolLimits::default()).unwrap();
            s.push(msg(MessageClass::Alert, "a/1", 10)).unwrap();
            s.push(msg(MessageClass::Alert, "a/2", 10)).unwrap();
        }
        {
            let db = Database::create(&p).unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(META).unwrap();
            let bad: TableDefinition<&str, &str> = TableDefinition::new("meta");
            txn.open_table(bad).unwrap().insert("x", "y").unwrap();
            txn.commit().unwrap();
        }
        assert!(Spool::open(&p, SpoolLimits::default()).is_err());
        let s = Spool::open_or_recover(&p, SpoolLimits::default()).unwrap();
        let topics: Vec<_> = s
            .peek(0, 10)
            .unwrap()
            .into_iter()
            .map(|(_, m)| m.topic)
            .collect();
        assert_eq!(topics, ["a/1", "a/2"]);
    }

    #[test]
    fn a_drained_spool_shrinks_when_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path().join("c.redb"), SpoolLimits::default()).unwrap();
        let batch: Vec<_> = (0..2000)
            .map(|_| msg(MessageClass::Event, "e", 4096))
            .collect();
        s.push_batch(batch).unwrap();
        let keys: Vec<u64> = s
            .peek(0, 5000)
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        s.remove(&keys, false).unwrap();
        assert!(s.is_empty());
        let (before, after) = s.compact().unwrap();
        assert!(before > 8 << 20, "{before}");
        assert!(after < before / 4, "{before} -> {after}");
        drop(s);
        let s = Spool::open(dir.path().join("c.redb"), SpoolLimits::default()).unwrap();
        assert!(s.is_empty());
    }

    #[test]
    fn survives_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("spool.redb");
        {
            let mut s = Spool::open(&p, SpoolLimits::default()).unwrap();
            for i in 0..5 {
                s.push(msg(MessageClass::Event, &format!("t/{i}"), i))
                    .unwrap();
            }
            let first = s.first_key().unwrap();
            assert_eq!(s.remove(&[first], false).unwrap(), 1);
        }
        let s = Spool::open(&p, SpoolLimits::default()).unwrap();
        let got = s.peek(0, 100).unwrap();
        let topics: Vec<_> = got.iter().map(|(_, m)| m.topic.as_str()).collect();
        assert_eq!(topics, ["t/1", "t/2", "t/3", "t/4"]);
        assert_eq!(got[2].1, msg(MessageClass::Event, "t/3", 3));
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn correlation_data_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        let mut m = msg(MessageClass::Reply, "r", 3);
        m.correlation = Some(vec![1, 2, 3, 4]);
        {
            let mut s = Spool::open(&p, SpoolLimits::default()).unwrap();
            s.push(m.clone()).unwrap();
            s.push(msg(MessageClass::Event, "e", 2)).unwrap();
        }
        let s = Spool::open(&p, SpoolLimits::default()).unwrap();
        let got = s.peek(0, 10).unwrap();
        assert_eq!(got[0].1, m);
        assert_eq!(got[1].1.correlation, None);
        assert_eq!(
            s.bytes(),
            m.cost() + msg(MessageClass::Event, "e", 2).cost()
        );
    }

    #[test]
    fn keys_keep_growing_after_the_spool_empties() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.redb");
        let k1 = {
            let mut s = Spool::open(&p, SpoolLimits::default()).unwrap();
            let Admission::Stored(k) = s.push(msg(MessageClass::Event, "a", 1)).unwrap() else {
                panic!()
            };
            s.remove(&[k], true).unwrap();
            k
        };
        let mut s = Spool::open(&p, SpoolLimits::default()).unwrap();
        let Admission::Stored(k2) = s.push(msg(MessageClass::Event, "a", 1)).unwrap() else {
            panic!()
        };
        assert!(k2 > k1);
    }

    #[test]
    fn lowest_class_is_evicted_first_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path().join("s"), limits(4, 100)).unwrap();
        s.push(msg(MessageClass::Stats, "s", 1)).unwrap();
        s.push(msg(MessageClass::Detections, "d", 1)).unwrap();
        s.push(msg(MessageClass::Event, "e", 1)).unwrap();
        s.push(msg(MessageClass::Scene, "c", 1)).unwrap();
        // Full: an event evicts the detection, then the stats.
        assert!(matches!(
            s.push(msg(MessageClass::Event, "e2", 1)).unwrap(),
            Admission::Stored(_)
        ));
        assert_eq!(s.dropped(MessageClass::Detections), 1);
        assert!(matches!(
            s.push(msg(MessageClass::Event, "e3", 1)).unwrap(),
            Admission::Stored(_)
        ));
        assert_eq!(s.dropped(MessageClass::Stats), 1);
        // A detection may not push out anything of higher priority.
        assert_eq!(
            s.push(msg(MessageClass::Detections, "d2", 1)).unwrap(),
            Admission::Refused(Refusal::Full)
        );
        assert_eq!(s.dropped(MessageClass::Detections), 2);
        assert_eq!(s.len(), 4);
    }

    #[test]
    fn same_class_replaces_its_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path().join("s"), limits(3, 100)).unwrap();
        for i in 0..10 {
            s.push(msg(MessageClass::Detections, &format!("d{i}"), 1))
                .unwrap();
        }
        let topics: Vec<_> = s
            .peek(0, 10)
            .unwrap()
            .into_iter()
            .map(|(_, m)| m.topic)
            .collect();
        assert_eq!(topics, ["d7", "d8", "d9"]);
        assert_eq!(s.dropped(MessageClass::Detections), 7);
    }

    #[test]
    fn alerts_are_never_evicted_and_grow_to_their_cap() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path().join("s"), limits(3, 5)).unwrap();
        s.push(msg(MessageClass::Event, "e", 1)).unwrap();
        for i in 0..5 {
            let a = s
                .push(msg(MessageClass::Alert, &format!("a{i}"), 1))
                .unwrap();
            assert!(matches!(a, Admission::Stored(_)), "alert {i}: {a:?}");
        }
        assert_eq!(s.dropped(MessageClass::Event), 1);
        assert_eq!(s.len_of(MessageClass::Alert), 5);
        assert_eq!(
            s.push(msg(MessageClass::Alert, "a5", 1)).unwrap(),
            Admission::Refused(Refusal::AlertCapReached)
        );
        assert_eq!(
            s.push(msg(MessageClass::Event, "e", 1)).unwrap(),
            Admission::Refused(Refusal::Full)
        );
        let topics: Vec<_> = s
            .peek(0, 10)
            .unwrap()
            .into_iter()
            .map(|(_, m)| m.topic)
            .collect();
        assert_eq!(topics, ["a0", "a1", "a2", "a3", "a4"]);
    }

    #[test]
    fn byte_bound_applies() {
        let dir = tempfile::tempdir().unwrap();
        let l = SpoolLimits {
            max_bytes: 1000,
            max_message_bytes: 800,
            ..SpoolLimits::default()
        };
        let mut s = Spool::open(dir.path().join("s"), l).unwrap();
        assert_eq!(
            s.push(msg(MessageClass::Snapshot, "big", 900)).unwrap(),
            Admission::Refused(Refusal::TooLarge)
        );
        s.push(msg(MessageClass::Snapshot, "a", 500)).unwrap();
        s.push(msg(MessageClass::Snapshot, "b", 500)).unwrap();
        assert_eq!(s.len(), 1);
        assert!(s.bytes() <= 1000);
    }

    #[test]
    fn bounded_peek_stops_at_the_byte_budget() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(dir.path().join("s"), SpoolLimits::default()).unwrap();
        for i in 0..5 {
            s.push(msg(MessageClass::Snapshot, &format!("s{i}"), 1000))
                .unwrap();
        }
        assert_eq!(s.peek_bounded(0, 10, 2500).unwrap().len(), 3);
        // One message always comes back, however small the budget.
        assert_eq!(s.peek_bounded(0, 10, 0).unwrap().len(), 1);
        assert_eq!(s.peek_bounded(0, 2, u64::MAX).unwrap().len(), 2);
    }

    #[test]
    fn damaged_records_are_dropped_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        {
            let s = Spool::open(&p, SpoolLimits::default()).unwrap();
            let txn = s.db.begin_write().unwrap();
            {
                let mut t = txn.open_table(MESSAGES).unwrap();
                t.insert(5, [9u8, 9, 9].as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let mut s = Spool::open(&p, SpoolLimits::default()).unwrap();
        assert_eq!(s.len(), 0);
        let Admission::Stored(k) = s.push(msg(MessageClass::Event, "e", 1)).unwrap() else {
            panic!()
        };
        assert!(k > 5);
    }
}
