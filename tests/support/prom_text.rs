//! A strict reader of the Prometheus text exposition format (0.0.4), for tests: it refuses what
//! Prometheus would refuse (bad names, bad escapes, samples without a `# TYPE`, a family split in
//! two, duplicate series, histogram buckets out of order or not cumulative, `+Inf` ≠ `_count`).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Family {
    pub name: String,
    pub kind: String,
    pub help: Option<String>,
    pub samples: Vec<Sample>,
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut c = s.chars();
    let ok_first = |ch: char| ch.is_ascii_alphabetic() || ch == '_' || (colon && ch == ':');
    c.next().is_some_and(ok_first)
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || (colon && ch == ':'))
}

fn value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse::<f64>().map_err(|e| format!("value '{s}': {e}")),
    }
}

/// `{a="x",b="y\"z"}` → labels, and the rest of the line after `}`.
fn labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut out = BTreeMap::new();
    let b = s.as_bytes();
    let mut i = 1; // after '{'
    loop {
        if b.get(i) == Some(&b'}') {
            return Ok((out, &s[i + 1..]));
        }
        let eq = s[i..].find('=').ok_or("label without '='")? + i;
        let name = s[i..eq].trim();
        if !is_name(name, false) || name.starts_with("__") {
            return Err(format!("bad label name '{name}'"));
        }
        if b.get(eq + 1) != Some(&b'"') {
            return Err(format!("label {name}: value not quoted"));
        }
        let mut v = String::new();
        let mut j = eq + 2;
        loop {
            match b.get(j) {
                None => return Err(format!("label {name}: unterminated value")),
                Some(b'"') => break,
                Some(b'\\') => {
                    match b.get(j + 1) {
                        Some(b'\\') => v.push('\\'),
                        Some(b'"') => v.push('"'),
                        Some(b'n') => v.push('\n'),
                        other => return Err(format!("label {name}: bad escape {other:?}")),
                    }
                    j += 2;
                    continue;
                }
                Some(_) => {
                    let ch = s[j..].chars().next().ok_or("cut")?;
                    v.push(ch);
                    j += ch.len_utf8();
                    continue;
                }
            }
        }
        if out.insert(name.to_string(), v).is_some() {
            return Err(format!("label {name} twice"));
        }
        i = j + 1;
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => {}
            other => return Err(format!("after label {name}: {other:?}")),
        }
    }
}

/// The family a sample name belongs to, given the declared types.
fn family_of<'a>(name: &'a str, types: &BTreeMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if matches!(
                types.get(base).map(String::as_str),
                Some("histogram" | "summary")
            ) {
                return Some(base);
            }
        }
    }
    None
}

/// Every family, in order, or the first problem with its line number.
pub fn parse(text: &str) -> Result<Vec<Family>, String> {
    let mut fams: Vec<Family> = Vec::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut series: BTreeSet<String> = BTreeSet::new();
    if !text.ends_with('\n') {
        return Err("the text must end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kw, name) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let tail = parts.next().unwrap_or("");
            match kw {
                "TYPE" | "HELP" => {
                    if !is_name(name, true) {
                        return Err(at(format!("bad metric name '{name}'")));
                    }
                    if fams.last().is_none_or(|f| f.name != name) {
                        if let Some(prev) = fams.last() {
                            finished.insert(prev.name.clone());
                        }
                        if finished.contains(name) || fams.iter().any(|f| f.name == name) {
                            return Err(at("family appears twice".into()));
                        }
                        fams.push(Family {
                            name: name.to_string(),
                            kind: "untyped".into(),
                            ..Default::default()
                        });
                    }
                    let f = fams.last_mut().ok_or("no family")?;
                    if kw == "TYPE" {
                        if !f.samples.is_empty() || types.contains_key(name) {
                            return Err(at("TYPE after samples or twice".into()));
                        }
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&tail)
                        {
                            return Err(at(format!("unknown type '{tail}'")));
                        }
                        f.kind = tail.to_string();
                        types.insert(name.to_string(), tail.to_string());
                    } else {
                        if f.help.is_some() {
                            return Err(at("HELP twice".into()));
                        }
                        f.help = Some(tail.to_string());
                    }
                }
                _ => {} // other comments are allowed
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        if !is_name(name, true) {
            return Err(at(format!("bad metric name '{name}'")));
        }
        let (lbl, rest) = if line[name_end..].starts_with('{') {
            labels(&line[name_end..]).map_err(at)?
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let mut fields = rest.split_whitespace();
        let v = value(fields.next().ok_or_else(|| at("no value".into()))?).map_err(at)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .map_err(|e| at(format!("timestamp: {e}")))?;
        }
        if fields.next().is_some() {
            return Err(at("trailing text".into()));
        }
        let fam = family_of(name, &types).ok_or_else(|| at("sample without a # TYPE".into()))?;
        let f = fams.last_mut().ok_or_else(|| at("no family".into()))?;
        if f.name != fam {
            return Err(at(format!("sample of '{fam}' inside family '{}'", f.name)));
        }
        let key = format!("{name}{lbl:?}");
        if !series.insert(key) {
            return Err(at("duplicate series".into()));
        }
        f.samples.push(Sample {
            name: name.to_string(),
            labels: lbl,
            value: v,
        });
    }
    for f in &fams {
        if f.kind == "histogram" {
            check_histogram(f)?;
        }
        if f.kind == "counter" && f.samples.iter().any(|s| s.value < 0.0) {
            return Err(format!("{}: negative counter", f.name));
        }
    }
    Ok(fams)
}

/// Per series (labels without `le`): `le` ascending, counts cumulative, `+Inf` last and equal
/// to `_count`, and a `_sum`.
fn check_histogram(f: &Family) -> Result<(), String> {
    /// Per series: its (le, count) buckets, `_count` and `_sum`.
    type Series = (Vec<(f64, f64)>, Option<f64>, Option<f64>);
    let mut groups: BTreeMap<String, Series> = BTreeMap::new();
    for s in &f.samples {
        let mut l = s.labels.clone();
        let le = l.remove("le");
        let g = groups.entry(format!("{l:?}")).or_default();
        if s.name.ends_with("_bucket") {
            let le = le.ok_or(format!("{}: bucket without le", f.name))?;
            g.0.push((value(&le)?, s.value));
        } else if s.name.ends_with("_count") {
            g.1 = Some(s.value);
        } else if s.name.ends_with("_sum") {
            g.2 = Some(s.value);
        }
    }
    for (k, (buckets, count, sum)) in groups {
        let what = format!("{}{k}", f.name);
        if buckets
            .windows(2)
            .any(|w| w[0].0 >= w[1].0 || w[0].1 > w[1].1)
        {
            return Err(format!("{what}: buckets not ascending and cumulative"));
        }
        let last = buckets.last().ok_or(format!("{what}: no buckets"))?;
        if last.0 != f64::INFINITY || Some(last.1) != count || sum.is_none() {
            return Err(format!("{what}: +Inf bucket, _count and _sum disagree"));
        }
    }
    Ok(())
}

#[test]
fn the_parser_refuses_what_prometheus_refuses() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\\\"\"} 3\n";
    assert_eq!(parse(good).unwrap()[0].samples[0].labels["x"], "1\"");
    for bad in [
        "a 1\n",                                                      // no TYPE
        "# TYPE a gauge\na{x=1} 1\n",                                 // unquoted
        "# TYPE a gauge\na 1\na 2\n",                                 // duplicate
        "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# TYPE a gauge\n", // split family
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 0\n",
        "# TYPE a gauge\na x\n", // value
        "# TYPE a gauge\na 1",   // no final newline
    ] {
        assert!(parse(bad).is_err(), "accepted: {bad}");
    }
}
