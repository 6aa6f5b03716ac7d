//! The event store at scale (benches/STORE.md): fills a store with N synthetic items (objects,
//! alerts, scene descriptions, raw events in the proportions of the bundled clip), embedded with
//! the real MiniLM model, then times searches and reports the store's size.
//!
//! `cargo run --example store_bench -- [ITEMS] [DIR]` (default 100000 items in a temporary folder).
//! Texts repeat from a vocabulary of colour × label × zone × direction, so only the distinct ones
//! are embedded (the embedder caches them, as on a device where descriptions repeat).

use std::time::Instant;

use lookout::embed::Embedder;
use lookout::store::db::Put;
use lookout::store::{search, Kind, Record, SearchOptions, Store, ZoneVisit};

const COLOURS: [&str; 8] = [
    "red", "blue", "white", "black", "grey", "green", "yellow", "brown",
];
const LABELS: [&str; 6] = ["person", "car", "bicycle", "dog", "truck", "bottle"];
const ZONES: [&str; 4] = ["gate", "path", "drive", "porch"];
const DIRS: [&str; 3] = [
    "moving left to right",
    "moving towards the camera",
    "staying in place",
];
const CAMERAS: [&str; 4] = ["front", "back", "drive", "porch"];

fn p95(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.95))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let tmp = tempfile::tempdir().unwrap();
    let dir = args
        .get(2)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().join("store"));
    let mut emb = Embedder::load_default().expect("models/minilm-l6");
    let store = Store::open(&dir, u64::MAX, 0.0).unwrap();
    let t0 = 1_790_000_000.0;
    let (mut embed_s, mut put_s) = (0.0, 0.0);
    let mut batch = Vec::new();
    let started = Instant::now();
    for i in 0..n {
        let cam = CAMERAS[i % 4];
        let ts = t0 + i as f64 * 3.0;
        // Per 10 items: 4 raw events, 3 objects, 1 alert, 2 scene descriptions.
        let (kind, text, label, zone, colour) = {
            let (c, l, z, d) = (
                COLOURS[(i / 7) % 8],
                LABELS[(i / 3) % 6],
                ZONES[(i / 11) % 4],
                DIRS[(i / 5) % 3],
            );
            match i % 10 {
                0..=3 => (Kind::Event, format!("update {l} #{i}"), l, z, None),
                4..=6 => (
                    Kind::Object,
                    format!("{c} {l} in the {z} zone, {d}"),
                    l,
                    z,
                    Some(c),
                ),
                7 => (Kind::Alert, format!("{l} entered zone {z}"), l, z, None),
                _ => (
                    Kind::Scene,
                    format!("In view: 2 {l}s. A {l} on the left, near, in {z}."),
                    l,
                    z,
                    None,
                ),
            }
        };
        let mut r = Record::new(kind, cam, ts);
        r.end_ts = ts + 5.0;
        r.label = label.into();
        r.colour = colour.map(str::to_string);
        r.zones.push(ZoneVisit {
            zone: zone.into(),
            enter: ts,
            exit: ts + 5.0,
        });
        r.text = text;
        if kind == Kind::Alert {
            r.rule = Some(zone.into());
            r.message = Some(r.text.clone());
        }
        let index = if kind == Kind::Event {
            None
        } else {
            let t = Instant::now();
            let v = emb.embed(&r.text).unwrap();
            embed_s += t.elapsed().as_secs_f64();
            Some(r.index_entry(Some(&v)).encode())
        };
        batch.push(Put {
            record: r,
            index,
            media_bytes: 0,
        });
        if batch.len() == 256 || i + 1 == n {
            let t = Instant::now();
            store.put(&mut batch).unwrap();
            put_s += t.elapsed().as_secs_f64();
            batch.clear();
        }
    }
    let fill_s = started.elapsed().as_secs_f64();
    let stats = store.stats().unwrap();
    drop(store);
    let store = Store::open_read(&dir).unwrap();
    let queries = [
        "red car at the gate",
        "person on the path",
        "a dog in the drive zone",
        "white truck moving towards the camera",
        "someone entered the porch",
        "bicycle",
        "two bottles on the left",
        "black car in the last hour",
        "green person staying in place",
        "grey truck on the drive",
    ];
    let (mut scan, mut qemb) = (Vec::new(), Vec::new());
    let now = t0 + n as f64 * 3.0;
    for round in 0..7 {
        for q in queries {
            let t = Instant::now();
            let v = emb.embed(&format!("{q} {round}")).unwrap();
            qemb.push(t.elapsed().as_secs_f64() * 1e3);
            drop(v);
            // The query's own embedding is cached after round 0, so this times the scan,
            // the int8 dot products, the ranking and fetching the hits.
            let t = Instant::now();
            let (_, hits) = search(
                &store,
                q,
                Some(&mut emb),
                &SearchOptions {
                    limit: 10,
                    now,
                    ..Default::default()
                },
            )
            .unwrap();
            if round > 0 {
                scan.push(t.elapsed().as_secs_f64() * 1e3);
            }
            assert!(!hits.is_empty());
        }
    }
    let t = Instant::now();
    let _ = Store::open_read(&dir).unwrap();
    let open_ms = t.elapsed().as_secs_f64() * 1e3;
    let (s50, s95) = p95(scan);
    let (e50, e95) = p95(qemb);
    println!("items: {n} ({stats:?})");
    println!(
        "fill: {fill_s:.1} s (embedding {embed_s:.1} s for {} distinct texts, commits {put_s:.1} s = {:.0} items/s)",
        emb_count(),
        n as f64 / put_s.max(1e-9)
    );
    println!(
        "store size: {} bytes accounted, {} bytes file ({:.0} bytes/item)",
        stats.bytes,
        stats.file_bytes,
        stats.file_bytes as f64 / n as f64
    );
    println!("search (scan + int8 dot products + rank + fetch; query embedding cached): p50 {s50:.1} ms, p95 {s95:.1} ms over 60");
    println!("query embedding alone: p50 {e50:.1} ms, p95 {e95:.1} ms; opening the store: {open_ms:.1} ms");
}

/// Distinct object/alert/scene texts the generator makes (what was embedded).
fn emb_count() -> usize {
    let mut s = std::collections::HashSet::new();
    for i in 0..1_000_000usize {
        let (c, l, z, d) = (
            COLOURS[(i / 7) % 8],
            LABELS[(i / 3) % 6],
            ZONES[(i / 11) % 4],
            DIRS[(i / 5) % 3],
        );
        match i % 10 {
            4..=6 => s.insert(format!("o{c}{l}{z}{d}")),
            7 => s.insert(format!("a{l}{z}")),
            8 | 9 => s.insert(format!("s{l}{z}")),
            _ => false,
        };
    }
    s.len()
}
