//! One stored item ([`Record`]: a tracked object, an alert, a scene description or a raw
//! lifecycle event) and its search-index entry ([`IndexEntry`]): the few facts search filters on
//! plus the int8-quantised text embedding, packed so a search scans 100 000 entries without
//! decoding a single JSON record.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a stored item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One tracked object, from its `new` to its `end` (what Frigate calls an event).
    Object,
    Alert,
    /// A scene description (and the VLM's text when there is one); repeats extend the last.
    Scene,
    /// A raw lifecycle event (`new`/`update`/`end`) as published.
    Event,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Object, Kind::Alert, Kind::Scene, Kind::Event];

    pub fn as_u8(self) -> u8 {
        match self {
            Kind::Object => 0,
            Kind::Alert => 1,
            Kind::Scene => 2,
            Kind::Event => 3,
        }
    }
    pub fn from_u8(b: u8) -> Option<Kind> {
        Kind::ALL.get(b as usize).copied()
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::Object => "object",
            Kind::Alert => "alert",
            Kind::Scene => "scene",
            Kind::Event => "event",
        }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("'{s}' is not one of object, alert, scene, event"))
    }
}

/// A stay of an object in a zone (times are when the store saw it in and first saw it out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZoneVisit {
    pub zone: String,
    pub enter: f64,
    pub exit: f64,
}

/// One stored item. Fields that do not apply to its kind are empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub key: u64,
    pub kind: Kind,
    pub camera: String,
    /// Start (first seen, alert time, description time), Unix seconds.
    pub ts: f64,
    /// End (last seen; for a repeated description the last repeat).
    pub end_ts: f64,
    /// Object label, or the alert's labels joined by ", ".
    #[serde(default)]
    pub label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_id: Option<u64>,
    /// Objects: every stay in a zone; alerts: the rule's zone (enter = exit = alert time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zones: Vec<ZoneVisit>,
    /// Dominant colour name of the best crop (objects).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub colour: Option<String>,
    /// Which way the object went over its life ("left to right", "towards the camera", …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// Best detection score (objects).
    #[serde(default)]
    pub score: f32,
    /// The sentence that was embedded for search.
    pub text: String,
    /// Alert message, scene text or VLM text, as produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlm: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// Alert or event id as published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub track_ids: Vec<u64>,
    /// Scene counts per label.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counts: BTreeMap<String, usize>,
    /// Best crop / snapshot, relative to the store folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crop: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The event or alert as published (raw events and alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<serde_json::Value>,
    /// Alerts: the video clip around it, relative to the store folder (several alerts close
    /// together share one clip).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip: Option<String>,
    /// Bytes of `clip` charged to this record: set on the newest alert sharing the clip, which
    /// retention removes last, and which deletes the file with it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub clip_bytes: u64,
    /// Objects: the text last read on it (`[ocr]`, the events' `after.text`); part of `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reading: Option<String>,
}

fn is_zero(x: &u64) -> bool {
    *x == 0
}

impl Record {
    pub fn new(kind: Kind, camera: &str, ts: f64) -> Record {
        Record {
            key: 0,
            kind,
            camera: camera.to_string(),
            ts,
            end_ts: ts,
            label: String::new(),
            track_id: None,
            zones: vec![],
            colour: None,
            direction: None,
            score: 0.0,
            text: String::new(),
            message: None,
            vlm: None,
            rule: None,
            alert_kind: None,
            severity: None,
            source_id: None,
            track_ids: vec![],
            counts: BTreeMap::new(),
            crop: None,
            snapshot: None,
            raw: None,
            clip: None,
            clip_bytes: 0,
            reading: None,
        }
    }

    /// Distinct zone names, in the order first visited.
    pub fn zone_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = Vec::new();
        for z in &self.zones {
            if !v.contains(&z.zone.as_str()) {
                v.push(&z.zone);
            }
        }
        v
    }

    /// Labels: an object's one, an alert's several.
    pub fn labels(&self) -> Vec<&str> {
        self.label.split(", ").filter(|s| !s.is_empty()).collect()
    }

    /// Whether search ranks this kind (raw events are reached through their object).
    pub fn searchable(&self) -> bool {
        self.kind != Kind::Event
    }

    /// The search-index entry of this record, with its embedding (if any).
    pub fn index_entry(&self, vector: Option<&[f32]>) -> IndexEntry {
        IndexEntry {
            kind: self.kind,
            ts: self.ts,
            end_ts: self.end_ts,
            camera: self.camera.clone(),
            labels: self.labels().iter().map(|s| s.to_string()).collect(),
            colour: self.colour.clone().unwrap_or_default(),
            zones: self.zone_names().iter().map(|s| s.to_string()).collect(),
            rule: self.rule.clone().unwrap_or_default(),
            vector: vector.map(Quantised::from_f32),
        }
    }
}

/// An embedding as int8 with one scale: a quarter of the bytes, and a dot product in integers.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantised {
    pub scale: f32,
    pub values: Vec<i8>,
}

impl Quantised {
    pub fn from_f32(v: &[f32]) -> Quantised {
        let max = v.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-12);
        let scale = max / 127.0;
        Quantised {
            scale,
            values: v
                .iter()
                .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8)
                .collect(),
        }
    }

    /// ≈ cosine similarity with another unit vector, quantised the same way.
    pub fn dot(&self, o: &Quantised) -> f32 {
        dot_i8(&self.values, &o.values) as f32 * self.scale * o.scale
    }
}

/// Integer dot product (the hot loop of a search).
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] as i32 * y[i] as i32;
        }
    }
    let tail: i32 = ra.iter().zip(rb).map(|(x, y)| *x as i32 * *y as i32).sum();
    acc.iter().sum::<i32>() + tail
}

/// What a search filters and ranks on, without the record.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    pub kind: Kind,
    pub ts: f64,
    pub end_ts: f64,
    pub camera: String,
    pub labels: Vec<String>,
    pub colour: String,
    pub zones: Vec<String>,
    pub rule: String,
    pub vector: Option<Quantised>,
}

const INDEX_VERSION: u8 = 1;
/// Separates the facet strings (never in a camera, label, zone or rule name users type).
const SEP: char = '\u{1f}';

impl IndexEntry {
    /// version, kind, ts, end_ts, facet length (u16), facets, dim (u16), scale (f32), values.
    pub fn encode(&self) -> Vec<u8> {
        let facets = [
            self.camera.as_str(),
            &self.labels.join(","),
            &self.colour,
            &self.zones.join(","),
            &self.rule,
        ]
        .join(&SEP.to_string());
        let facets = &facets.as_bytes()[..facets.len().min(u16::MAX as usize)];
        let dim = self.vector.as_ref().map_or(0, |q| q.values.len());
        let mut v = Vec::with_capacity(24 + facets.len() + dim + 6);
        v.push(INDEX_VERSION);
        v.push(self.kind.as_u8());
        v.extend_from_slice(&self.ts.to_le_bytes());
        v.extend_from_slice(&self.end_ts.to_le_bytes());
        v.extend_from_slice(&(facets.len() as u16).to_le_bytes());
        v.extend_from_slice(facets);
        v.extend_from_slice(&(dim as u16).to_le_bytes());
        if let Some(q) = &self.vector {
            v.extend_from_slice(&q.scale.to_le_bytes());
            v.extend(q.values.iter().map(|x| *x as u8));
        }
        v
    }
}

/// A borrowed view of an encoded [`IndexEntry`]: what a search reads per item, without copying.
#[derive(Debug, Clone, Copy)]
pub struct IndexView<'a> {
    pub kind: Kind,
    pub ts: f64,
    pub end_ts: f64,
    /// camera, labels, colour, zones, rule.
    facets: [&'a str; 5],
    pub scale: f32,
    pub values: &'a [i8],
}

impl<'a> IndexView<'a> {
    pub fn parse(b: &'a [u8]) -> Option<IndexView<'a>> {
        if b.len() < 20 || b[0] != INDEX_VERSION {
            return None;
        }
        let kind = Kind::from_u8(b[1])?;
        let ts = f64::from_le_bytes(b[2..10].try_into().ok()?);
        let end_ts = f64::from_le_bytes(b[10..18].try_into().ok()?);
        let flen = u16::from_le_bytes([b[18], b[19]]) as usize;
        let text = std::str::from_utf8(b.get(20..20 + flen)?).ok()?;
        let mut facets = [""; 5];
        for (slot, f) in facets.iter_mut().zip(text.split(SEP)) {
            *slot = f;
        }
        let at = 20 + flen;
        let dim = u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize;
        let (scale, values) = if dim == 0 {
            (0.0, &[][..])
        } else {
            let scale = f32::from_le_bytes(b.get(at + 2..at + 6)?.try_into().ok()?);
            let raw = b.get(at + 6..at + 6 + dim)?;
            // SAFETY: i8 and u8 have the same size and alignment; every bit pattern is valid.
            let values = unsafe { std::slice::from_raw_parts(raw.as_ptr() as *const i8, dim) };
            (scale, values)
        };
        Some(IndexView {
            kind,
            ts,
            end_ts,
            facets,
            scale,
            values,
        })
    }

    fn facet(&self, i: usize) -> &'a str {
        self.facets[i]
    }
    pub fn camera(&self) -> &'a str {
        self.facet(0)
    }
    pub fn labels(&self) -> impl Iterator<Item = &'a str> {
        self.facet(1).split(',').filter(|s| !s.is_empty())
    }
    pub fn colour(&self) -> &'a str {
        self.facet(2)
    }
    pub fn zones(&self) -> impl Iterator<Item = &'a str> {
        self.facet(3).split(',').filter(|s| !s.is_empty())
    }
    pub fn rule(&self) -> &'a str {
        self.facet(4)
    }
    pub fn has_vector(&self) -> bool {
        !self.values.is_empty()
    }
    /// ≈ cosine similarity with a quantised query.
    pub fn similarity(&self, q: &Quantised) -> f32 {
        if self.values.len() != q.values.len() {
            return 0.0;
        }
        dot_i8(self.values, &q.values) as f32 * self.scale * q.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_entries_round_trip_and_quantised_dot_is_close() {
        let mut r = Record::new(Kind::Object, "gate", 10.0);
        r.label = "car".into();
        r.colour = Some("red".into());
        r.zones.push(ZoneVisit {
            zone: "drive".into(),
            enter: 10.0,
            exit: 12.0,
        });
        let v: Vec<f32> = (0..384).map(|i| ((i as f32) * 0.37).sin()).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        let v: Vec<f32> = v.iter().map(|x| x / n).collect();
        let bytes = r.index_entry(Some(&v)).encode();
        let view = IndexView::parse(&bytes).unwrap();
        assert_eq!(view.kind, Kind::Object);
        assert_eq!(view.camera(), "gate");
        assert_eq!(view.labels().collect::<Vec<_>>(), ["car"]);
        assert_eq!(view.colour(), "red");
        assert_eq!(view.zones().collect::<Vec<_>>(), ["drive"]);
        let q = Quantised::from_f32(&v);
        assert!((view.similarity(&q) - 1.0).abs() < 0.01);
        assert!(IndexView::parse(&bytes[..10]).is_none());
        let none = r.index_entry(None).encode();
        assert!(!IndexView::parse(&none).unwrap().has_vector());
    }
}
