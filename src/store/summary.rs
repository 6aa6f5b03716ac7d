//! A time window told in a few lines with timestamps, from the store alone: tracked objects are
//! grouped into episodes (activity with no gap longer than a minute), and each episode says what
//! was seen, which zones were entered and for how long, which alerts fired, and what a VLM wrote.
//!
//! "14:02:10–14:05:03 plaza: 2 people; 2 people entered the path zone, one stayed 3 min 10 s;
//! alerts: 2 path entries."

use std::collections::BTreeMap;

use serde::Serialize;

use super::db::Store;
use super::record::{Kind, Record};
use super::{clock, Result};
use crate::util::plural;

/// Objects further apart than this start a new episode.
const EPISODE_GAP_S: f64 = 60.0;

/// One line of the narrative.
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub camera: String,
    pub start: f64,
    pub end: f64,
    /// Distinct tracked objects per label.
    pub counts: BTreeMap<String, usize>,
    /// Per zone, per label: objects that entered it.
    pub zones: BTreeMap<String, BTreeMap<String, usize>>,
    /// Per zone: the longest stay, seconds.
    pub longest_stay: BTreeMap<String, f64>,
    /// Alerts per rule.
    pub alerts: BTreeMap<String, usize>,
    pub text: String,
}

/// The narrative and its facts.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub since: f64,
    pub until: f64,
    /// Distinct tracked objects per label, over the window.
    pub counts: BTreeMap<String, usize>,
    pub zones: BTreeMap<String, BTreeMap<String, usize>>,
    pub alerts: BTreeMap<String, usize>,
    pub lines: Vec<Line>,
    /// Scene text written by a VLM in the window, with its time.
    pub vlm: Vec<(f64, String)>,
    pub text: String,
}

/// Summarises `[since, until]` (optionally one camera).
pub fn summarise(store: &Store, since: f64, until: f64, camera: Option<&str>) -> Result<Summary> {
    let recs = store.records(&[Kind::Object, Kind::Alert, Kind::Scene], since, until)?;
    let recs: Vec<Record> = recs
        .into_iter()
        .filter(|r| camera.is_none_or(|c| r.camera == c))
        .collect();
    let mut cameras: Vec<&str> = recs.iter().map(|r| r.camera.as_str()).collect();
    cameras.sort();
    cameras.dedup();
    let mut lines = Vec::new();
    for cam in cameras {
        let objs: Vec<&Record> = recs
            .iter()
            .filter(|r| r.camera == cam && r.kind == Kind::Object)
            .collect();
        let alerts: Vec<&Record> = recs
            .iter()
            .filter(|r| r.camera == cam && r.kind == Kind::Alert)
            .collect();
        for (start, end) in episodes(&objs, &alerts) {
            let inside = |r: &&&Record| r.ts <= end && r.end_ts >= start;
            let o: Vec<&Record> = objs.iter().filter(inside).copied().collect();
            let a: Vec<&Record> = alerts
                .iter()
                .filter(|r| r.ts >= start && r.ts <= end)
                .copied()
                .collect();
            lines.push(line(cam, start, end, &o, &a));
        }
    }
    lines.sort_by(|a, b| a.start.total_cmp(&b.start));
    let mut s = Summary {
        since,
        until,
        counts: BTreeMap::new(),
        zones: BTreeMap::new(),
        alerts: BTreeMap::new(),
        vlm: recs
            .iter()
            .filter_map(|r| r.vlm.as_ref().map(|v| (r.ts, v.clone())))
            .collect(),
        lines,
        text: String::new(),
    };
    for l in &s.lines {
        for (k, n) in &l.counts {
            *s.counts.entry(k.clone()).or_default() += n;
        }
        for (z, m) in &l.zones {
            for (k, n) in m {
                *s.zones
                    .entry(z.clone())
                    .or_default()
                    .entry(k.clone())
                    .or_default() += n;
            }
        }
        for (k, n) in &l.alerts {
            *s.alerts.entry(k.clone()).or_default() += n;
        }
    }
    let mut text: Vec<String> = s.lines.iter().map(|l| l.text.clone()).collect();
    for (ts, v) in &s.vlm {
        text.push(format!("{} the camera model wrote: \"{v}\"", clock(*ts)));
    }
    s.text = if text.is_empty() {
        "Nothing was seen.".into()
    } else {
        text.join("\n")
    };
    Ok(s)
}

/// Time spans of activity: objects (and alerts) with no gap longer than [`EPISODE_GAP_S`].
fn episodes(objs: &[&Record], alerts: &[&Record]) -> Vec<(f64, f64)> {
    let mut spans: Vec<(f64, f64)> = objs
        .iter()
        .map(|r| (r.ts, r.end_ts))
        .chain(alerts.iter().map(|r| (r.ts, r.ts)))
        .collect();
    spans.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out: Vec<(f64, f64)> = Vec::new();
    for (a, b) in spans {
        match out.last_mut() {
            Some(last) if a <= last.1 + EPISODE_GAP_S => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn line(cam: &str, start: f64, end: f64, objs: &[&Record], alerts: &[&Record]) -> Line {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut zones: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut stays: BTreeMap<String, f64> = BTreeMap::new();
    let mut still: BTreeMap<String, usize> = BTreeMap::new();
    for o in objs {
        *counts.entry(o.label.clone()).or_default() += 1;
        for z in o.zone_names() {
            *zones
                .entry(z.to_string())
                .or_default()
                .entry(o.label.clone())
                .or_default() += 1;
        }
        for v in &o.zones {
            let e = stays.entry(v.zone.clone()).or_default();
            *e = e.max(v.exit - v.enter);
        }
        if o.direction.as_deref() == Some("staying in place") {
            *still.entry(o.label.clone()).or_default() += 1;
        }
    }
    let mut alert_counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut alert_words: BTreeMap<String, usize> = BTreeMap::new();
    for a in alerts {
        let rule = a.rule.clone().unwrap_or_default();
        *alert_counts.entry(rule.clone()).or_default() += 1;
        let kind = a.alert_kind.clone().unwrap_or_default();
        *alert_words.entry(format!("{rule} {kind}")).or_default() += 1;
    }
    let mut parts = vec![join_counts(&counts)];
    for (z, m) in &zones {
        let total: usize = m.values().sum();
        let who = join_counts(m);
        let mut p = format!("{who} entered the {z} zone");
        if let Some(s) = stays.get(z).filter(|s| **s >= 1.0) {
            let one = if total == 1 { "it" } else { "one" };
            p.push_str(&format!(", {one} stayed {}", duration(*s)));
        }
        parts.push(p);
    }
    for (label, n) in &still {
        parts.push(format!("{} stayed in place", count_of(*n, label)));
    }
    if !alert_words.is_empty() {
        let a: Vec<String> = alert_words
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        parts.push(format!("alerts: {}", a.join(", ")));
    }
    let text = format!(
        "{}–{} {cam}: {}.",
        clock(start),
        clock(end),
        parts
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    );
    Line {
        camera: cam.to_string(),
        start,
        end,
        counts,
        zones,
        longest_stay: stays,
        alerts: alert_counts,
        text,
    }
}

/// "2 people and a car".
fn join_counts(m: &BTreeMap<String, usize>) -> String {
    let mut v: Vec<(&String, &usize)> = m.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let words: Vec<String> = v.iter().map(|(l, n)| count_of(**n, l)).collect();
    match words.len() {
        0 => String::new(),
        1 => words[0].clone(),
        n => format!("{} and {}", words[..n - 1].join(", "), words[n - 1]),
    }
}

fn count_of(n: usize, label: &str) -> String {
    if n == 1 {
        let article = if label.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        format!("{article} {label}")
    } else {
        format!("{n} {}", plural(label))
    }
}

/// "7 s", "3 min 10 s", "2 h 5 min".
pub fn duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 if s.is_multiple_of(60) => format!("{} min", s / 60),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::Put;
    use crate::store::record::ZoneVisit;

    #[test]
    fn episodes_split_on_a_gap_and_lines_tell_counts_zones_and_stays() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), u64::MAX, 0.0).unwrap();
        let t = 1_700_000_000.0;
        let mut puts = Vec::new();
        for (label, ts, end, zone) in [
            ("person", t, t + 190.0, Some((t + 5.0, t + 195.0))),
            ("person", t + 20.0, t + 40.0, Some((t + 21.0, t + 30.0))),
            ("car", t + 1000.0, t + 1010.0, None),
        ] {
            let mut r = Record::new(Kind::Object, "gate", ts);
            r.end_ts = end;
            r.label = label.into();
            if let Some((a, b)) = zone {
                r.zones.push(ZoneVisit {
                    zone: "path".into(),
                    enter: a,
                    exit: b,
                });
            }
            puts.push(Put {
                index: None,
                record: r,
                media_bytes: 0,
            });
        }
        s.put(&mut puts).unwrap();
        let sum = summarise(&s, t - 10.0, t + 2000.0, None).unwrap();
        assert_eq!(sum.lines.len(), 2, "{}", sum.text);
        assert_eq!(sum.counts["person"], 2);
        assert_eq!(sum.zones["path"]["person"], 2);
        assert!(
            sum.lines[0].text.ends_with(
                "gate: 2 people; 2 people entered the path zone, one stayed 3 min 10 s."
            ),
            "{}",
            sum.lines[0].text
        );
        assert!(sum.lines[1].text.ends_with("gate: a car."), "{}", sum.text);
        assert_eq!(duration(7200.0 + 300.0), "2 h 5 min");
    }
}
