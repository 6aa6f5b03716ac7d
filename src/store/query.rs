//! What a search query asks for exactly, beside its meaning: colour words, detector labels (and
//! their synonyms: "pedestrian" → person), zone, rule and camera names the store knows, and time
//! words ("last night", "this morning", "in the last hour", "yesterday", "in the last 10
//! minutes"). The time words are cut from the text before it is embedded; the rest stays, since
//! it means something to the embedding too.

use serde::Serialize;

use super::{local_midnight, Result, StoreError};
use crate::ground::colour::COLOURS;
use crate::ground::labels::SYNONYMS;
use crate::ground::parse::{words, Vocabulary};

/// Category words that mean several labels and are not in the grounding synonym table.
const CATEGORIES: &[(&str, &[&str])] = &[
    ("vehicle", &["car", "truck", "bus", "motorcycle"]),
    ("somebody", &["person"]),
    ("anyone", &["person"]),
    ("anybody", &["person"]),
    ("visitor", &["person"]),
    ("intruder", &["person"]),
];

/// A query taken apart.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ParsedQuery {
    /// The words that are embedded (the query without its time words).
    pub text: String,
    pub colours: Vec<String>,
    pub labels: Vec<String>,
    pub zones: Vec<String>,
    pub rules: Vec<String>,
    pub cameras: Vec<String>,
    /// The time window the time words mean (Unix seconds).
    pub since: Option<f64>,
    pub until: Option<f64>,
    /// The time words understood, as written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
}

impl ParsedQuery {
    /// Number of exact-filter groups the query names (colour, label, zone or rule, camera).
    pub fn groups(&self) -> usize {
        [
            !self.colours.is_empty(),
            !self.labels.is_empty(),
            !(self.zones.is_empty() && self.rules.is_empty()),
            !self.cameras.is_empty(),
        ]
        .iter()
        .filter(|b| **b)
        .count()
    }
}

/// `query` against the store's `vocab` ((kind, name) pairs from [`Store::vocabulary`]) at
/// time `now`.
///
/// [`Store::vocabulary`]: super::Store::vocabulary
pub fn parse(query: &str, vocab: &[(String, String)], now: f64) -> ParsedQuery {
    let names = |kind: &str| -> Vec<&str> {
        vocab
            .iter()
            .filter(|(k, _)| k == kind)
            .map(|(_, n)| n.as_str())
            .collect()
    };
    let (labels, zones, rules, cameras) = (
        names("label"),
        names("zone"),
        names("rule"),
        names("camera"),
    );
    let (rest, since, until, time) = time_words(query, now);
    let ws = words(&rest);
    let mut q = ParsedQuery {
        text: rest.trim().to_string(),
        since,
        until,
        time,
        ..Default::default()
    };
    let push = |v: &mut Vec<String>, s: &str| {
        if !v.iter().any(|x| x == s) {
            v.push(s.to_string());
        }
    };
    for w in &ws {
        let w = if w == "gray" { "grey" } else { w.as_str() };
        if COLOURS.contains(&w) {
            push(&mut q.colours, w);
        }
    }
    // Labels: the label itself (singular or plural, one typo allowed), or a synonym of one.
    let mut nouns: Vec<&str> = labels.clone();
    nouns.extend(SYNONYMS.iter().map(|(w, _)| *w));
    nouns.extend(CATEGORIES.iter().map(|(w, _)| *w));
    let nouns = Vocabulary::new(nouns);
    let joined = format!(" {} ", ws.join(" "));
    for l in &labels {
        if l.contains(' ') && joined.contains(&format!(" {l} ")) {
            push(&mut q.labels, l);
        }
    }
    for w in &ws {
        let Some(n) = nouns.normalise(w) else {
            continue;
        };
        if labels.contains(&n.as_str()) {
            push(&mut q.labels, &n);
        }
        for (syn, means) in SYNONYMS.iter().chain(CATEGORIES) {
            if *syn == n {
                for m in means.iter().filter(|m| labels.contains(m)) {
                    push(&mut q.labels, m);
                }
            }
        }
    }
    // Zones, rules and cameras: their name's words, in order ("right lane" for right-lane).
    let spaced = |name: &str| format!(" {} ", words(&name.replace(['-', '_'], " ")).join(" "));
    for (list, out) in [
        (&zones, &mut q.zones),
        (&rules, &mut q.rules),
        (&cameras, &mut q.cameras),
    ] {
        for name in list {
            if joined.contains(&spaced(name)) {
                push(out, name);
            }
        }
    }
    q.rules.retain(|r| !q.zones.contains(r));
    q
}

const NUMBERS: &[(&str, f64)] = &[
    ("a", 1.0),
    ("an", 1.0),
    ("one", 1.0),
    ("two", 2.0),
    ("three", 3.0),
    ("four", 4.0),
    ("five", 5.0),
    ("six", 6.0),
    ("ten", 10.0),
    ("fifteen", 15.0),
    ("twenty", 20.0),
    ("thirty", 30.0),
    ("few", 3.0),
    ("couple", 2.0),
];

fn unit_seconds(w: &str) -> Option<f64> {
    Some(match w.trim_end_matches('s') {
        "second" | "sec" => 1.0,
        "minute" | "min" => 60.0,
        "hour" | "hr" => 3600.0,
        "day" => 86_400.0,
        "week" => 7.0 * 86_400.0,
        _ => return None,
    })
}

/// Cuts time words from `q`: (rest, since, until, the words).
fn time_words(q: &str, now: f64) -> (String, Option<f64>, Option<f64>, Option<String>) {
    let lower = q.to_lowercase();
    let midnight = local_midnight(now);
    let h = 3600.0;
    let fixed: &[(&str, f64, f64)] = &[
        ("last night", midnight - 6.0 * h, midnight + 6.0 * h),
        ("tonight", midnight + 18.0 * h, midnight + 30.0 * h),
        ("this morning", midnight + 5.0 * h, midnight + 12.0 * h),
        ("this afternoon", midnight + 12.0 * h, midnight + 18.0 * h),
        ("this evening", midnight + 18.0 * h, midnight + 24.0 * h),
        ("yesterday", midnight - 24.0 * h, midnight),
        ("today", midnight, now),
    ];
    for (phrase, a, b) in fixed {
        if let Some(rest) = cut_phrase(&lower, phrase) {
            return (rest, Some(*a), Some(b.min(now)), Some(phrase.to_string()));
        }
    }
    // "in the last hour", "over the past 10 minutes", "last 2 days", "in the last few minutes".
    let ws: Vec<&str> = lower.split_whitespace().collect();
    for i in 0..ws.len() {
        if !matches!(ws[i], "last" | "past") {
            continue;
        }
        let (n, unit_at) = match ws.get(i + 1) {
            Some(w) if unit_seconds(w).is_some() => (1.0, i + 1),
            Some(w) => {
                let n = w
                    .parse::<f64>()
                    .ok()
                    .or_else(|| NUMBERS.iter().find(|(x, _)| x == w).map(|(_, n)| *n));
                match n {
                    Some(n) if ws.get(i + 2).is_some_and(|u| unit_seconds(u).is_some()) => {
                        (n, i + 2)
                    }
                    _ => continue,
                }
            }
            None => continue,
        };
        let secs = n * unit_seconds(ws[unit_at]).unwrap_or(0.0);
        let mut start = i;
        for lead in ["the", "in", "over", "during", "within"] {
            if start > 0 && ws[start - 1] == lead {
                start -= 1;
            }
        }
        let phrase = ws[start..=unit_at].join(" ");
        let rest: Vec<&str> = ws[..start]
            .iter()
            .chain(&ws[unit_at + 1..])
            .copied()
            .collect();
        return (rest.join(" "), Some(now - secs), Some(now), Some(phrase));
    }
    (lower, None, None, None)
}

/// `text` without `phrase` (as whole words), or `None` when it is not there.
fn cut_phrase(text: &str, phrase: &str) -> Option<String> {
    let padded = format!(
        " {} ",
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    let at = padded.find(&format!(" {phrase} "))?;
    let rest = format!("{}{}", &padded[..at], &padded[at + phrase.len() + 1..]);
    Some(rest.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// A `--since` value: a number with a unit (`90s`, `15m`, `2h`, `3d`, `1w`) → seconds.
pub fn parse_since(s: &str) -> Result<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| {
        StoreError::Query(format!(
            "--since '{s}': expected a number and a unit (90s, 15m, 2h, 3d, 1w)"
        ))
    })?;
    let mult = match unit.trim() {
        "s" | "sec" | "" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        "w" => 7.0 * 86_400.0,
        u => {
            return Err(StoreError::Query(format!(
                "--since '{s}': unknown unit '{u}' (s, m, h, d, w)"
            )))
        }
    };
    if !n.is_finite() || n < 0.0 {
        return Err(StoreError::Query(format!("--since '{s}' must be ≥ 0")));
    }
    Ok(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Vec<(String, String)> {
        [
            ("label", "car"),
            ("label", "person"),
            ("label", "cell phone"),
            ("zone", "right-lane"),
            ("zone", "gate"),
            ("rule", "lamp-post"),
            ("camera", "plaza"),
        ]
        .iter()
        .map(|(k, n)| (k.to_string(), n.to_string()))
        .collect()
    }

    #[test]
    fn filters_come_from_colours_labels_synonyms_zones_and_cameras() {
        let q = parse("red car at the gate", &vocab(), 1e9);
        assert_eq!(q.colours, ["red"]);
        assert_eq!(q.labels, ["car"]);
        assert_eq!(q.zones, ["gate"]);
        let q = parse("Pedestrians near the lamp post in the plaza", &vocab(), 1e9);
        assert_eq!(q.labels, ["person"]);
        assert_eq!(q.rules, ["lamp-post"]);
        assert_eq!(q.cameras, ["plaza"]);
        let q = parse(
            "a vehicle in the right lane, someone on a cell phone",
            &vocab(),
            1e9,
        );
        assert_eq!(q.labels, ["cell phone", "car", "person"]);
        assert_eq!(q.zones, ["right-lane"]);
        assert_eq!(q.groups(), 2);
    }

    #[test]
    fn time_words_become_a_window_and_leave_the_text() {
        let now = 1_700_000_000.0;
        let q = parse("people in the last hour", &vocab(), now);
        assert_eq!(q.since, Some(now - 3600.0));
        assert_eq!(q.text, "people");
        assert_eq!(q.time.as_deref(), Some("in the last hour"));
        let q = parse("car over the past 10 minutes", &vocab(), now);
        assert_eq!(q.since, Some(now - 600.0));
        let q = parse("red car last night", &vocab(), now);
        let m = local_midnight(now);
        assert_eq!(
            (q.since, q.until),
            (Some(m - 21_600.0), Some((m + 21_600.0).min(now)))
        );
        assert_eq!(q.text, "red car");
        let q = parse("the last car", &vocab(), now);
        assert!(q.since.is_none(), "'last' without a unit is not a time");
    }

    #[test]
    fn since_values_need_a_known_unit() {
        assert_eq!(parse_since("2h").unwrap(), 7200.0);
        assert_eq!(parse_since("90s").unwrap(), 90.0);
        assert_eq!(parse_since("1.5d").unwrap(), 129_600.0);
        assert!(parse_since("2 fortnights").is_err());
        assert!(parse_since("h").is_err());
    }
}
