//! The store's redb file: four tables and the retention that keeps them bounded.
//!
//! - `items`: key → the [`Record`] as JSON (keys count up in commit order, so key order is
//!   roughly time order);
//! - `index`: key → the packed [`IndexEntry`](super::record::IndexEntry) of searchable items;
//! - `ledger`: key → end time, bytes charged and kind: what retention reads, 17 bytes a row;
//! - `meta` (next key, bytes held) and `vocab` (every label, zone and camera seen, for parsing
//!   queries).
//!
//! Every write is one transaction committed with fsync (`Durability::Immediate`, redb's
//! default): after a `kill -9` the file opens at the last commit, and the writer's next open
//! repairs redb's allocator state by itself. Files are opened in redb's `MultiWriter` mode so
//! several `lookout run` processes (one per camera) may write one store and the CLI may read it
//! while they do.
//!
//! Retention charges each record its JSON, its index entry and its JPEGs. Past `max_age_days`
//! a record goes; past `max_bytes` the oldest records go first, alerts only when nothing else is
//! left.

use std::path::{Path, PathBuf};

use redb::{
    Builder, ConcurrencyMode, Database, ReadOnlyDatabase, ReadableDatabase, ReadableTable,
    TableDefinition,
};
use serde::Serialize;

use super::record::{IndexView, Kind, Record};
use super::{Result, StoreError, DB_FILE, MEDIA_DIR};

const ITEMS: TableDefinition<u64, &[u8]> = TableDefinition::new("items");
const INDEX: TableDefinition<u64, &[u8]> = TableDefinition::new("index");
const LEDGER: TableDefinition<u64, &[u8]> = TableDefinition::new("ledger");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const VOCAB: TableDefinition<&str, u64> = TableDefinition::new("vocab");
const NEXT_KEY: &str = "next_key";
const BYTES: &str = "bytes";
/// Bytes charged per record beyond its own (keys, ledger row, B-tree slack).
const OVERHEAD: u64 = 64;
/// redb's page cache; its default (1 GiB) is more than a Pi should give a store.
const CACHE_BYTES: usize = 32 << 20;

/// One record to write: key 0 takes a new key; `media_bytes` is what its JPEGs weigh.
#[derive(Debug, Clone)]
pub struct Put {
    pub record: Record,
    pub index: Option<Vec<u8>>,
    pub media_bytes: u64,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Retained {
    pub removed: u64,
    pub removed_alerts: u64,
    pub freed_bytes: u64,
}

/// Counts and sizes, for `lookout events --stats` and the benches.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreStats {
    pub objects: u64,
    pub alerts: u64,
    pub scenes: u64,
    pub events: u64,
    /// Bytes charged against `max_bytes` (records, index entries, JPEGs).
    pub bytes: u64,
    /// The database file on disk.
    pub file_bytes: u64,
    /// The JPEGs on disk.
    pub media_bytes: u64,
    pub oldest_ts: Option<f64>,
    pub newest_ts: Option<f64>,
}

enum Db {
    Rw(Database),
    Ro(ReadOnlyDatabase),
}

/// An open store folder (writer or reader).
pub struct Store {
    db: Db,
    dir: PathBuf,
    file: PathBuf,
    max_bytes: u64,
    max_age_s: f64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

fn ledger_row(end_ts: f64, cost: u64, kind: Kind) -> [u8; 17] {
    let mut b = [0u8; 17];
    b[..8].copy_from_slice(&end_ts.to_le_bytes());
    b[8..16].copy_from_slice(&cost.to_le_bytes());
    b[16] = kind.as_u8();
    b
}

/// (end time, bytes charged, kind) of a ledger row.
fn parse_ledger(b: &[u8]) -> Option<(f64, u64, Kind)> {
    if b.len() != 17 {
        return None;
    }
    Some((
        f64::from_le_bytes(b[..8].try_into().ok()?),
        u64::from_le_bytes(b[8..16].try_into().ok()?),
        Kind::from_u8(b[16])?,
    ))
}

fn builder() -> Builder {
    let mut b = Builder::new();
    b.set_concurrency_mode(ConcurrencyMode::MultiWriter)
        .set_cache_size(CACHE_BYTES);
    b
}

impl Store {
    /// Opens (or creates) the store in `dir` for writing, removes JPEGs no record names (left by
    /// a crash between writing a file and committing its record) and applies retention.
    pub fn open(dir: impl AsRef<Path>, max_bytes: u64, max_age_days: f64) -> Result<Store> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(dir.join(MEDIA_DIR)).map_err(|e| StoreError::Io {
            path: dir.join(MEDIA_DIR),
            reason: format!("cannot create the folder: {e}"),
        })?;
        let file = dir.join(DB_FILE);
        let db = builder().create(&file).map_err(|e| db_err(&file, e))?;
        let store = Store {
            db: Db::Rw(db),
            dir,
            file,
            max_bytes,
            max_age_s: max_age_days * 86_400.0,
        };
        store.write(|txn| {
            txn.open_table(ITEMS)?;
            txn.open_table(INDEX)?;
            txn.open_table(LEDGER)?;
            txn.open_table(META)?;
            txn.open_table(VOCAB)?;
            Ok(())
        })?;
        store.sweep_media()?;
        store.retain(crate::util::unix_now())?;
        Ok(store)
    }

    /// Opens an existing store for reading. A file left by a killed writer that redb will only
    /// open after a repair is opened as a writer once (which repairs it), then read.
    pub fn open_read(dir: impl AsRef<Path>) -> Result<Store> {
        let dir = dir.as_ref().to_path_buf();
        let file = dir.join(DB_FILE);
        if !file.is_file() {
            return Err(StoreError::Missing { path: dir });
        }
        let db = match builder().open_read_only(&file) {
            Ok(db) => Db::Ro(db),
            Err(ro) => match builder().open(&file) {
                Ok(db) => Db::Rw(db),
                Err(_) => return Err(db_err(&file, ro)),
            },
        };
        Ok(Store {
            db,
            dir,
            file,
            max_bytes: u64::MAX,
            max_age_s: 0.0,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn rw(&self) -> Result<&Database> {
        match &self.db {
            Db::Rw(d) => Ok(d),
            Db::Ro(_) => Err(StoreError::Db {
                path: self.file.clone(),
                reason: "opened read-only".into(),
            }),
        }
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction> {
        match &self.db {
            Db::Rw(d) => d.begin_read(),
            Db::Ro(d) => d.begin_read(),
        }
        .map_err(|e| db_err(&self.file, e))
    }

    /// Runs `f` in one write transaction and commits it (with fsync).
    fn write<T>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> std::result::Result<T, redb::Error>,
    ) -> Result<T> {
        let txn = self
            .rw()?
            .begin_write()
            .map_err(|e| db_err(&self.file, e))?;
        let out = f(&txn).map_err(|e| db_err(&self.file, e))?;
        txn.commit().map_err(|e| db_err(&self.file, e))?;
        Ok(out)
    }

    /// Writes records in one transaction; returns their keys (new ones for key 0).
    pub fn put(&self, puts: &mut [Put]) -> Result<Vec<u64>> {
        if puts.is_empty() {
            return Ok(vec![]);
        }
        self.write(|txn| {
            let mut items = txn.open_table(ITEMS)?;
            let mut index = txn.open_table(INDEX)?;
            let mut ledger = txn.open_table(LEDGER)?;
            let mut meta = txn.open_table(META)?;
            let mut vocab = txn.open_table(VOCAB)?;
            let mut next = meta.get(NEXT_KEY)?.map_or(1, |g| g.value()).max(1);
            let mut bytes = meta.get(BYTES)?.map_or(0, |g| g.value());
            let mut keys = Vec::with_capacity(puts.len());
            for p in puts.iter_mut() {
                if p.record.key == 0 {
                    p.record.key = next;
                    next += 1;
                }
                let key = p.record.key;
                let json = serde_json::to_vec(&p.record).unwrap_or_default();
                let old = ledger
                    .get(key)?
                    .and_then(|g| parse_ledger(g.value()))
                    .map_or(0, |(_, c, _)| c);
                let cost = json.len() as u64
                    + p.index.as_ref().map_or(0, |i| i.len() as u64)
                    + p.media_bytes
                    + OVERHEAD;
                items.insert(key, json.as_slice())?;
                match &p.index {
                    Some(i) => drop(index.insert(key, i.as_slice())?),
                    None => drop(index.remove(key)?),
                }
                let row = ledger_row(p.record.end_ts, cost, p.record.kind);
                ledger.insert(key, row.as_slice())?;
                bytes = bytes.saturating_sub(old) + cost;
                let r = &p.record;
                let words = r
                    .labels()
                    .into_iter()
                    .map(|l| format!("label:{l}"))
                    .chain(r.zone_names().into_iter().map(|z| format!("zone:{z}")))
                    .chain(r.rule.iter().map(|z| format!("rule:{z}")))
                    .chain(std::iter::once(format!("camera:{}", r.camera)));
                for w in words {
                    if vocab.get(w.as_str())?.is_none() {
                        vocab.insert(w.as_str(), 1)?;
                    }
                }
                keys.push(key);
            }
            meta.insert(NEXT_KEY, next)?;
            meta.insert(BYTES, bytes)?;
            Ok(keys)
        })
    }

    /// Applies the age and size bounds now; removes the JPEGs of what it deletes.
    pub fn retain(&self, now: f64) -> Result<Retained> {
        let (max_bytes, max_age_s) = (self.max_bytes, self.max_age_s);
        let (report, gone) = self.write(|txn| {
            let mut items = txn.open_table(ITEMS)?;
            let mut index = txn.open_table(INDEX)?;
            let mut ledger = txn.open_table(LEDGER)?;
            let mut meta = txn.open_table(META)?;
            let mut bytes = meta.get(BYTES)?.map_or(0, |g| g.value());
            let cutoff = if max_age_s > 0.0 {
                now - max_age_s
            } else {
                f64::NEG_INFINITY
            };
            let mut victims: Vec<(u64, u64, Kind)> = Vec::new();
            let mut rest: Vec<(u64, u64, Kind)> = Vec::new();
            let mut held = 0u64;
            for row in ledger.iter()? {
                let (k, v) = row?;
                let Some((end, cost, kind)) = parse_ledger(v.value()) else {
                    victims.push((k.value(), 0, Kind::Event));
                    continue;
                };
                if end < cutoff {
                    victims.push((k.value(), cost, kind));
                } else {
                    held += cost;
                    rest.push((k.value(), cost, kind));
                }
            }
            if held > max_bytes {
                // Oldest first, alerts after everything else.
                for pass_alerts in [false, true] {
                    for &(k, cost, kind) in &rest {
                        if held <= max_bytes {
                            break;
                        }
                        if (kind == Kind::Alert) == pass_alerts {
                            victims.push((k, cost, kind));
                            held -= cost;
                        }
                    }
                }
            }
            let mut report = Retained::default();
            let mut gone = Vec::new();
            for (k, cost, kind) in victims {
                if let Some(g) = items.remove(k)? {
                    if let Ok(r) = serde_json::from_slice::<Record>(g.value()) {
                        // A shared clip goes with the newest alert naming it (the one charged).
                        let clip = r.clip.filter(|_| r.clip_bytes > 0);
                        gone.extend(r.crop.into_iter().chain(r.snapshot).chain(clip));
                    }
                }
                index.remove(k)?;
                ledger.remove(k)?;
                bytes = bytes.saturating_sub(cost);
                report.removed += 1;
                report.removed_alerts += (kind == Kind::Alert) as u64;
                report.freed_bytes += cost;
            }
            meta.insert(BYTES, bytes)?;
            Ok((report, gone))
        })?;
        for rel in gone {
            let p = self.dir.join(&rel);
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    log::warn!("{}: cannot remove: {e}", p.display());
                }
            }
        }
        if report.removed > 0 {
            log::info!(
                "store {}: retention removed {} record(s) ({} alert(s)), {} bytes",
                self.dir.display(),
                report.removed,
                report.removed_alerts,
                report.freed_bytes
            );
        }
        Ok(report)
    }

    /// Removes JPEGs under `media/` that no record names and that are older than ten minutes
    /// (a younger one may belong to a record another writer is about to commit).
    fn sweep_media(&self) -> Result<()> {
        let mut named = std::collections::HashSet::new();
        self.for_each_record(|r| {
            named.extend(r.crop.iter().chain(&r.snapshot).chain(&r.clip).cloned());
            true
        })?;
        let media = self.dir.join(MEDIA_DIR);
        let Ok(cams) = std::fs::read_dir(&media) else {
            return Ok(());
        };
        let young = std::time::SystemTime::now() - std::time::Duration::from_secs(600);
        for cam in cams.flatten() {
            let Ok(files) = std::fs::read_dir(cam.path()) else {
                continue;
            };
            for f in files.flatten() {
                let rel = format!(
                    "{MEDIA_DIR}/{}/{}",
                    cam.file_name().to_string_lossy(),
                    f.file_name().to_string_lossy()
                );
                let old = f
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < young);
                if old && !named.contains(&rel) {
                    log::info!("store: removing unreferenced {rel}");
                    let _ = std::fs::remove_file(f.path());
                }
            }
        }
        Ok(())
    }

    /// One record by key.
    pub fn get(&self, key: u64) -> Result<Option<Record>> {
        let txn = self.begin_read()?;
        let t = match txn.open_table(ITEMS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(db_err(&self.file, e)),
        };
        let g = t.get(key).map_err(|e| db_err(&self.file, e))?;
        Ok(g.and_then(|g| serde_json::from_slice(g.value()).ok()))
    }

    /// Records by key, in one read transaction (missing ones are left out).
    pub fn get_many(&self, keys: &[u64]) -> Result<Vec<Record>> {
        let txn = self.begin_read()?;
        let t = match txn.open_table(ITEMS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
            Err(e) => return Err(db_err(&self.file, e)),
        };
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(g) = t.get(k).map_err(|e| db_err(&self.file, e))? {
                if let Ok(r) = serde_json::from_slice(g.value()) {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// Every record in key order until `f` returns false (records that do not decode are
    /// skipped with a warning).
    pub fn for_each_record(&self, mut f: impl FnMut(&Record) -> bool) -> Result<()> {
        let txn = self.begin_read()?;
        let t = match txn.open_table(ITEMS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(db_err(&self.file, e)),
        };
        for row in t.iter().map_err(|e| db_err(&self.file, e))? {
            let (k, v) = row.map_err(|e| db_err(&self.file, e))?;
            match serde_json::from_slice::<Record>(v.value()) {
                Ok(r) => {
                    if !f(&r) {
                        break;
                    }
                }
                Err(e) => log::warn!("{}: record {}: {e}", self.file.display(), k.value()),
            }
        }
        Ok(())
    }

    /// Records of `kinds` whose time span overlaps `[since, until]`, in time order. The ledger
    /// picks them, so records outside the window are never decoded.
    pub fn records(&self, kinds: &[Kind], since: f64, until: f64) -> Result<Vec<Record>> {
        let txn = self.begin_read()?;
        let (items, ledger) = match (txn.open_table(ITEMS), txn.open_table(LEDGER)) {
            (Ok(i), Ok(l)) => (i, l),
            _ => return Ok(vec![]),
        };
        let mut out = Vec::new();
        for row in ledger.iter().map_err(|e| db_err(&self.file, e))? {
            let (k, v) = row.map_err(|e| db_err(&self.file, e))?;
            let Some((end, _, kind)) = parse_ledger(v.value()) else {
                continue;
            };
            if end < since || !kinds.contains(&kind) {
                continue;
            }
            let Some(g) = items.get(k.value()).map_err(|e| db_err(&self.file, e))? else {
                continue;
            };
            if let Ok(r) = serde_json::from_slice::<Record>(g.value()) {
                if r.ts <= until {
                    out.push(r);
                }
            }
        }
        out.sort_by(|a, b| a.ts.total_cmp(&b.ts).then(a.key.cmp(&b.key)));
        Ok(out)
    }

    /// Calls `f` with every search-index entry (key order).
    pub fn scan_index(&self, mut f: impl FnMut(u64, IndexView<'_>)) -> Result<()> {
        let txn = self.begin_read()?;
        let t = match txn.open_table(INDEX) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(db_err(&self.file, e)),
        };
        for row in t.iter().map_err(|e| db_err(&self.file, e))? {
            let (k, v) = row.map_err(|e| db_err(&self.file, e))?;
            if let Some(view) = IndexView::parse(v.value()) {
                f(k.value(), view);
            }
        }
        Ok(())
    }

    /// Every label, zone, rule and camera the store has seen, as (kind, name): kind is `label`,
    /// `zone`, `rule` or `camera`.
    pub fn vocabulary(&self) -> Result<Vec<(String, String)>> {
        let txn = self.begin_read()?;
        let t = match txn.open_table(VOCAB) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(vec![]),
            Err(e) => return Err(db_err(&self.file, e)),
        };
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| db_err(&self.file, e))? {
            let (k, _) = row.map_err(|e| db_err(&self.file, e))?;
            if let Some((kind, name)) = k.value().split_once(':') {
                out.push((kind.to_string(), name.to_string()));
            }
        }
        Ok(out)
    }

    pub fn stats(&self) -> Result<StoreStats> {
        let txn = self.begin_read()?;
        let mut s = StoreStats {
            file_bytes: std::fs::metadata(&self.file).map_or(0, |m| m.len()),
            media_bytes: dir_bytes(&self.dir.join(MEDIA_DIR)),
            ..Default::default()
        };
        if let Ok(meta) = txn.open_table(META) {
            s.bytes = meta
                .get(BYTES)
                .map_err(|e| db_err(&self.file, e))?
                .map_or(0, |g| g.value());
        }
        if let Ok(ledger) = txn.open_table(LEDGER) {
            for row in ledger.iter().map_err(|e| db_err(&self.file, e))? {
                let (_, v) = row.map_err(|e| db_err(&self.file, e))?;
                let Some((end, _, kind)) = parse_ledger(v.value()) else {
                    continue;
                };
                match kind {
                    Kind::Object => s.objects += 1,
                    Kind::Alert => s.alerts += 1,
                    Kind::Scene => s.scenes += 1,
                    Kind::Event => s.events += 1,
                }
                s.oldest_ts = Some(s.oldest_ts.map_or(end, |o: f64| o.min(end)));
                s.newest_ts = Some(s.newest_ts.map_or(end, |o: f64| o.max(end)));
            }
        }
        Ok(s)
    }

    /// The bound on the bytes charged.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The bytes charged now (records, index entries, JPEGs).
    pub fn bytes(&self) -> Result<u64> {
        let txn = self.begin_read()?;
        let Ok(meta) = txn.open_table(META) else {
            return Ok(0);
        };
        Ok(meta
            .get(BYTES)
            .map_err(|e| db_err(&self.file, e))?
            .map_or(0, |g| g.value()))
    }
}

/// Total size of the files under `dir` (one level of sub-folders, as `media/<camera>/`).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn db_err(path: &Path, e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db {
        path: path.to_path_buf(),
        reason: e.into().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(kind: Kind, ts: f64, text: &str) -> Put {
        let mut r = Record::new(kind, "cam", ts);
        r.text = text.into();
        r.label = "person".into();
        Put {
            index: Some(r.index_entry(None).encode()),
            record: r,
            media_bytes: 0,
        }
    }

    #[test]
    fn records_survive_reopen_and_size_retention_keeps_alerts_longest() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::util::unix_now();
        {
            let s = Store::open(dir.path(), 1 << 20, 0.0).unwrap();
            let mut puts = vec![rec(Kind::Alert, now - 100.0, "alert")];
            for i in 0..50 {
                puts.push(rec(Kind::Object, now - 90.0 + i as f64, &"x".repeat(100)));
            }
            let keys = s.put(&mut puts).unwrap();
            assert_eq!(keys.len(), 51);
            assert_eq!(s.get(keys[0]).unwrap().unwrap().text, "alert");
            // An upsert keeps its key and recharges its bytes.
            let mut again = vec![puts[1].clone()];
            again[0].record.text = "changed".into();
            assert_eq!(s.put(&mut again).unwrap(), vec![keys[1]]);
            assert_eq!(s.stats().unwrap().objects, 50);
        }
        let r = Store::open_read(dir.path()).unwrap();
        assert_eq!(r.stats().unwrap().alerts, 1);
        assert_eq!(r.records(&[Kind::Object], 0.0, f64::MAX).unwrap().len(), 50);
        drop(r);
        // A tight bound: objects go oldest first, the older alert stays.
        let total = Store::open_read(dir.path()).unwrap().stats().unwrap().bytes;
        let s = Store::open(dir.path(), total / 2, 0.0).unwrap();
        let st = s.stats().unwrap();
        assert!(st.bytes <= total / 2, "{st:?}");
        assert_eq!(st.alerts, 1);
        let objs = s.records(&[Kind::Object], 0.0, f64::MAX).unwrap();
        assert!(objs.len() < 50 && objs[0].ts > now - 90.0);
        // Age: everything older than a day goes, alerts too.
        let mut old = vec![rec(Kind::Alert, now - 3.0 * 86_400.0, "old")];
        s.put(&mut old).unwrap();
        let s = Store::open(dir.path(), u64::MAX, 1.0).unwrap();
        assert!(s.get(old[0].record.key).unwrap().is_none());
        assert_eq!(s.stats().unwrap().alerts, 1);
    }

    #[test]
    fn reading_a_missing_store_names_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let e = Store::open_read(dir.path().join("nope")).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }
}
