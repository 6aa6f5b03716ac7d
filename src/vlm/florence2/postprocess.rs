//! Florence-2's answers → labels and boxes, as the reference post-processor
//! (transformers' `Florence2PostProcessor`) parses them.
//!
//! A location token `<loc_N>` (N in 0..1000) is the centre of bin N: coordinate
//! `(N + 0.5) / 1000 × width` (x) or `× height` (y). The reference returns these truncated to
//! integers; lookout keeps the exact value, so `floor(ours) == theirs`.
//!
//! Parsing follows the reference regular expressions step by step (hand-written here; the patterns
//! use look-ahead, which the `regex` crate lacks):
//! * a phrase is `[^<]+(?:<loc_\d+>){4,}` found left to right without overlap;
//! * its label is the text before the first `<loc_` (or `<od>`, `</od>`, `<box>`, `</box>`,
//!   `<bbox>`, `</bbox>`), on one line, trimmed, with non-ASCII characters dropped;
//! * its boxes are the consecutive quadruples `<loc_x1><loc_y1><loc_x2><loc_y2>`.

use serde::Serialize;

use crate::geometry::BBox;

/// One labelled box in image pixels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelledBox {
    pub label: String,
    #[serde(rename = "box")]
    pub bbox: BBox,
}

/// What a task's answer means.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskOutput {
    /// `<CAPTION>`, `<DETAILED_CAPTION>` and other free-text tasks.
    Text(String),
    /// `<OD>`, `<CAPTION_TO_PHRASE_GROUNDING>`, `<OPEN_VOCABULARY_DETECTION>`: one entry per box,
    /// a phrase with several boxes giving several entries with the same label.
    Boxes(Vec<LabelledBox>),
}

/// `<loc_N>` bin → pixel coordinate along a side of `size` pixels.
pub fn loc_to_pixel(bin: u32, size: u32) -> f32 {
    ((bin as f64 + 0.5) * size as f64 / 1000.0) as f32
}

/// If `s` starts with `<loc_DIGITS>`, the bin and the token's byte length.
fn loc_at(s: &str) -> Option<(u32, usize)> {
    let rest = s.strip_prefix("<loc_")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || rest.as_bytes().get(digits) != Some(&b'>') {
        return None;
    }
    // Out-of-range bins saturate; a model never writes them, a test string might.
    let bin = rest[..digits]
        .parse::<u64>()
        .unwrap_or(u64::MAX)
        .min(u32::MAX as u64) as u32;
    Some((bin, 5 + digits + 1))
}

fn boxes_in(s: &str, w: u32, h: u32) -> Vec<BBox> {
    // re.finditer(r"<loc_(\d+)><loc_(\d+)><loc_(\d+)><loc_(\d+)>")
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        if !s.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let mut j = i;
        let mut bins = [0u32; 4];
        let mut ok = true;
        for b in &mut bins {
            match loc_at(&s[j..]) {
                Some((bin, len)) => {
                    *b = bin;
                    j += len;
                }
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            out.push(BBox {
                x1: loc_to_pixel(bins[0], w),
                y1: loc_to_pixel(bins[1], h),
                x2: loc_to_pixel(bins[2], w),
                y2: loc_to_pixel(bins[3], h),
            });
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// Every box written as four consecutive `<loc_N>` tokens, in pixels of a `w`×`h` image.
pub fn parse_locations(text: &str, w: u32, h: u32) -> Vec<BBox> {
    boxes_in(text, w, h)
}

/// `re.findall(r"([^<]+(?:<loc_\d+>){4,})", text)`.
fn phrases(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        if !text.is_char_boundary(i) || text.as_bytes()[i] == b'<' {
            i += 1;
            continue;
        }
        // [^<]+ is greedy and only a '<' can follow it, so only the maximal run can match.
        let run_end = text[i..].find('<').map_or(text.len(), |k| i + k);
        let mut j = run_end;
        let mut locs = 0;
        while let Some((_, len)) = loc_at(&text[j..]) {
            j += len;
            locs += 1;
        }
        if locs >= 4 {
            out.push(&text[i..j]);
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

const LABEL_STOPS: [&str; 7] = [
    "<od>", "</od>", "<box>", "</box>", "<bbox>", "</bbox>", "<loc_",
];

/// `re.search(r"^\s*(.*?)(?=<od>|</od>|<box>|</box>|<bbox>|</bbox>|<loc_)", phrase).group()`,
/// stripped (the group includes the leading whitespace; `.` stops at a newline).
fn label_of(phrase: &str) -> Option<String> {
    let body = phrase.trim_start();
    let start = phrase.len() - body.len();
    for (k, ch) in body.char_indices() {
        let rest = &body[k..];
        if LABEL_STOPS.iter().any(|s| rest.starts_with(s)) {
            let label = phrase[..start + k].trim();
            return Some(label.chars().filter(char::is_ascii).collect());
        }
        if ch == '\n' {
            return None;
        }
    }
    None
}

fn replace_once(s: &str, pat: &str) -> String {
    s.replacen(pat, "", 1)
}

fn strip_specials(text: &str) -> String {
    text.replace("<s>", "")
        .replace("</s>", "")
        .replace("<pad>", "")
}

/// Labels and boxes of a detection-style answer. `banned` drops phrases (grounding only).
fn description_with_boxes(text: &str, w: u32, h: u32, banned: &[String]) -> Vec<LabelledBox> {
    let text = strip_specials(text);
    let mut out = Vec::new();
    for phrase in phrases(&text) {
        let phrase = replace_once(&replace_once(phrase, "<ground>"), "<obj>");
        if phrase.is_empty() {
            continue;
        }
        let Some(label) = label_of(&phrase) else {
            continue;
        };
        if banned.contains(&label) {
            continue;
        }
        for bbox in boxes_in(&phrase, w, h) {
            out.push(LabelledBox {
                label: label.clone(),
                bbox,
            });
        }
    }
    out
}

/// The reference's "pure_text" answer: `<s>`/`</s>` removed, whitespace trimmed.
pub fn clean_text(text: &str) -> String {
    text.replace("<s>", "")
        .replace("</s>", "")
        .trim()
        .to_string()
}

/// Parses `text` (the decoded answer, special tokens kept) for `task`, boxes in pixels of a
/// `w`×`h` image. Unknown tasks are free text, as in the reference.
pub fn parse_task_output(task: &str, text: &str, w: u32, h: u32) -> TaskOutput {
    parse_task_output_with(task, text, w, h, &[])
}

/// [`parse_task_output`] with the grounding black list of the model's `processor_config.json`.
pub fn parse_task_output_with(
    task: &str,
    text: &str,
    w: u32,
    h: u32,
    banned: &[String],
) -> TaskOutput {
    match task {
        "<OD>" | "<DENSE_REGION_CAPTION>" | "<OPEN_VOCABULARY_DETECTION>" => {
            TaskOutput::Boxes(description_with_boxes(text, w, h, &[]))
        }
        "<CAPTION_TO_PHRASE_GROUNDING>" => {
            TaskOutput::Boxes(description_with_boxes(text, w, h, banned))
        }
        _ => TaskOutput::Text(clean_text(text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loc_is_bin_centre() {
        assert_eq!(loc_to_pixel(0, 1000), 0.5);
        assert_eq!(loc_to_pixel(999, 1000), 999.5);
        assert!((loc_to_pixel(500, 640) - 320.32).abs() < 1e-4);
    }

    #[test]
    fn partial_tags_and_short_runs() {
        let t = "x<loc_1><loc_2><loc_3>cat<loc_4><loc_5><loc_6><loc_7>";
        let p = phrases(t);
        assert_eq!(p, vec!["loc_3>cat<loc_4><loc_5><loc_6><loc_7>"]);
        assert_eq!(label_of(p[0]).as_deref(), Some("loc_3>cat"));
        assert!(phrases("<loc_1><loc_2><loc_3><loc_4>").is_empty());
        assert_eq!(label_of("a\nb<loc_1>"), None);
    }
}
