//! Instruction grounding: "pick up the red cup on the left" + a frame + its detections (or tracks)
//! → the box meant, with a score, the reason, and the runner-up candidates.
//!
//! [`phrases`] rewrites free phrasings ("closest to the camera") and takes out the text an object
//! should carry; [`parse`] reads the instruction; [`labels`] maps its nouns to detector labels
//! ([`kinds`] table: "taxi" → yellow car, near-miss labels; synonym table; sentence embeddings);
//! [`colour`] names each candidate's colour from its pixels; [`text`] matches the text read on
//! an object; [`relations`]
//! scores "next to", "on", "left of" … between boxes and orders candidates for "leftmost",
//! "nearest", "the second from the left". When two objects fit equally well the answer is
//! `ambiguous` with both, never a guess.

pub mod colour;
pub mod kinds;
pub mod labels;
pub mod parse;
pub mod phrases;
pub mod relations;
pub mod text;

use std::sync::Arc;

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::detect::Detection;
use crate::embed::Embedder;
use crate::error::{Error, Result};
use crate::geometry::BBox;
use crate::track::Track;

use labels::{LabelMatcher, Matches};
use parse::{NounPhrase, Parsed, RelationKind, Selector, Side, Vocabulary};

/// Detection threshold for grounding (CLI and tests): lower than `lookout detect`'s, because the
/// instruction, not the score alone, decides which boxes matter.
pub const DETECTOR_CONF: f32 = 0.25;
/// Longest instruction accepted.
pub const MAX_INSTRUCTION_BYTES: usize = 4096;
/// Below this a candidate is not considered to fit at all.
const MIN_SCORE: f32 = 0.15;
/// A colour scoring below this rules the object out ("the red cup" is not the white cup).
const MIN_COLOUR: f32 = 0.3;
/// A runner-up scoring at least this share of the best makes the answer ambiguous.
const AMBIGUITY_RATIO: f32 = 0.85;
/// Candidates a selector chooses among: at least this share of the best score.
const SELECT_RATIO: f32 = 0.5;
/// Label score given to every object when the instruction names none ("the red one").
const GENERIC_LABEL_SCORE: f32 = 0.8;
/// Runner-up candidates reported.
const MAX_CANDIDATES: usize = 5;
/// A box at least this much inside a better one of the same label is part of it (half a bicycle);
/// below, it is another object partly hidden behind (a horse behind a horse).
const PART_OVERLAP: f32 = 0.9;
/// Two boxes of different labels overlapping this much are one object seen twice.
const SAME_OBJECT_IOU: f32 = 0.8;
/// Weight of an object's second label ("truck" as well as "car") in its score.
const SECOND_VIEW_WEIGHT: f32 = 0.5;
/// How much black counts for a "dark" colour ("dark brown").
const DARK_BLACK_SHARE: f32 = 0.8;
/// Weight of an instruction word that the object's text says ("the Gordon's bottle").
const TEXT_BONUS: f32 = 0.5;
/// Label score when the noun names no label but the text says which ("the box that says FRAGILE").
const TEXT_ONLY_LABEL_SCORE: f32 = 0.6;

/// Something in the frame that can be meant: a detection, or a track (which has an id).
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub label: Arc<str>,
    pub score: f32,
    pub bbox: BBox,
    pub track_id: Option<u64>,
    /// Text read on the object (OCR), if a reader ran on it.
    pub text: Option<String>,
}

impl From<&Detection> for Object {
    fn from(d: &Detection) -> Self {
        Object {
            label: d.label.clone(),
            score: d.score,
            bbox: d.bbox,
            track_id: None,
            text: None,
        }
    }
}

impl From<&Track> for Object {
    fn from(t: &Track) -> Self {
        Object {
            label: t.label.clone(),
            score: t.score,
            bbox: t.bbox,
            track_id: (t.id > 0).then_some(t.id),
            text: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Found,
    Ambiguous,
    NotFound,
}

/// One object as an answer: the target or a candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub label: String,
    #[serde(rename = "box")]
    pub bbox: BBox,
    pub score: f32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_id: Option<u64>,
    pub reason: String,
    /// The person's mask in source pixels (COCO RLE), filled by the caller (`lookout ground`,
    /// `cmd/ground`) from `segment::PersonSegmenter` when the target is a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<crate::segment::Mask>,
}

/// The answer to one instruction; the same JSON on the CLI and in the MQTT `cmd/ground` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundResult {
    pub instruction: String,
    /// The action verb, kept for the controller ("pick up").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The object meant; `null` when not found or ambiguous.
    pub target: Option<Target>,
    /// Ambiguous: the equally likely objects. Otherwise the runner-ups, best first.
    pub candidates: Vec<Target>,
    pub status: Status,
    /// Why, in one line.
    pub reason: String,
}

/// Grounds instructions against one detector's label set.
#[derive(Debug)]
pub struct Grounder {
    matcher: LabelMatcher,
    vocab: Vocabulary,
}

/// Per-object working state of one `ground` call.
struct Scored {
    idx: usize,
    score: f32,
    colour: Option<(String, f32)>,
    relation: Option<(f32, usize)>,
    /// The text read on it and how well it says what was asked.
    text: Option<(String, f32)>,
}

fn describe_np(np: &NounPhrase) -> String {
    let mut parts = Vec::new();
    if let Some(s) = &np.size {
        parts.push(s.clone());
    }
    if let Some(c) = &np.colour {
        parts.push(c.clone());
    }
    parts.push(np.noun.clone().unwrap_or_else(|| "object".into()));
    parts.join(" ")
}

fn ordinal_word(n: usize) -> String {
    match n {
        1 => "1st".into(),
        2 => "2nd".into(),
        3 => "3rd".into(),
        n => format!("{n}th"),
    }
}

fn side_word(s: Side) -> &'static str {
    match s {
        Side::Left => "left",
        Side::Right => "right",
        Side::Top => "top",
        Side::Bottom => "bottom",
    }
}

fn relation_word(k: RelationKind) -> &'static str {
    match k {
        RelationKind::NextTo => "next to",
        RelationKind::On => "on",
        RelationKind::In => "in",
        RelationKind::InFrontOf => "in front of",
        RelationKind::Behind => "behind",
        RelationKind::LeftOf => "left of",
        RelationKind::RightOf => "right of",
        RelationKind::Above => "above",
        RelationKind::Below => "below",
    }
}

fn round3(v: f32) -> f32 {
    (v * 1000.0).round() / 1000.0
}

impl Grounder {
    /// `labels`: the detector's label names (class id = index). Without an embedder, nouns match
    /// only labels and the synonym table.
    pub fn new(labels: &[impl AsRef<str>], embedder: Option<Embedder>) -> Result<Grounder> {
        let matcher = LabelMatcher::new(labels, embedder)?;
        let vocab = Vocabulary::new(matcher.vocabulary());
        Ok(Grounder { matcher, vocab })
    }

    /// With the default embedding model (models/minilm-l6).
    pub fn with_default_embedder(labels: &[impl AsRef<str>]) -> Result<Grounder> {
        Self::new(labels, Some(Embedder::load_default()?))
    }

    pub fn parse(&self, instruction: &str) -> Parsed {
        parse::parse(instruction, &self.vocab)
    }

    pub fn matcher(&mut self) -> &mut LabelMatcher {
        &mut self.matcher
    }

    fn label_matches(&mut self, np: &NounPhrase) -> Result<Option<Matches>> {
        match &np.noun {
            Some(n) => Ok(Some(self.matcher.match_noun(n)?)),
            None => Ok(None),
        }
    }

    /// Which object `instruction` means in `img`, among `objects` (detections or tracks of it).
    /// Errors only for an unusable instruction (empty, too long); "no such object" is an answer.
    pub fn ground(
        &mut self,
        img: &RgbImage,
        objects: &[Object],
        instruction: &str,
    ) -> Result<GroundResult> {
        if instruction.trim().is_empty() {
            return Err(Error::Other("instruction: must not be empty".into()));
        }
        if instruction.len() > MAX_INSTRUCTION_BYTES {
            return Err(Error::Other(format!(
                "instruction: longer than {MAX_INSTRUCTION_BYTES} bytes"
            )));
        }
        let mut parsed = self.parse(instruction);
        let (w, h) = (img.width() as f32, img.height() as f32);
        let mut result = GroundResult {
            instruction: instruction.to_string(),
            action: parsed.action.clone(),
            target: None,
            candidates: Vec::new(),
            status: Status::NotFound,
            reason: String::new(),
        };
        let mut what = describe_np(&parsed.target);
        if let Some(t) = &parsed.text {
            what = format!("{what} that says '{t}'");
        }

        // 1. which labels the noun means
        let mut target_matches = self.label_matches(&parsed.target)?;
        if let Some(m) = &target_matches {
            // a thing no label names but whose text says which ("the box that says FRAGILE")
            if m.labels.is_empty() && parsed.text.is_some() {
                target_matches = None;
            }
        }
        // the colour the word implies: required ("taxi": yellow) or only preferred
        let mut soft_colour: Option<String> = None;
        if parsed.target.colour.is_none() {
            match target_matches.as_ref().and_then(|m| m.colour_hint) {
                Some((c, true)) => parsed.target.colour = Some(c.to_string()),
                Some((c, false)) => soft_colour = Some(c.to_string()),
                None => {}
            }
            let material_colour = parsed
                .target
                .material
                .as_deref()
                .and_then(kinds::material_of)
                .flatten();
            if let Some(c) = material_colour {
                soft_colour = soft_colour.or(Some(c.to_string()));
            }
        }
        if let Some(m) = &target_matches {
            if m.labels.is_empty() {
                result.reason = match &m.closest {
                    Some((l, s)) => format!(
                        "'{}' matches none of the detector's labels (closest: {l} at {s:.2})",
                        m.noun
                    ),
                    None => format!("'{}' matches none of the detector's labels", m.noun),
                };
                return Ok(result);
            }
        }
        let text_only = parsed.text.is_some() && parsed.target.noun.is_some();
        let label_score = |m: &Option<Matches>, label: &str| match m {
            Some(m) => m.score_of(label),
            None if text_only => TEXT_ONLY_LABEL_SCORE,
            None => GENERIC_LABEL_SCORE,
        };

        // 2. the relation's anchors
        let mut anchors: Vec<(usize, f32)> = Vec::new();
        if let Some(rel) = &parsed.relation {
            let am = self.label_matches(&rel.anchor)?;
            if let Some(m) = &am {
                if m.labels.is_empty() {
                    result.reason = format!(
                        "'{}' ({} what the {what} should be {}) matches none of the detector's labels",
                        m.noun,
                        "the object",
                        relation_word(rel.kind)
                    );
                    return Ok(result);
                }
            }
            for (j, o) in objects.iter().enumerate() {
                let mut s = label_score(&am, &o.label);
                if s <= 0.0 {
                    continue;
                }
                if let Some(c) = &rel.anchor.colour {
                    s *= colour::histogram(img, &o.bbox).score(c);
                }
                if s >= MIN_SCORE {
                    anchors.push((j, s));
                }
            }
            if anchors.is_empty() {
                result.reason = format!(
                    "no {} in view for the {what} to be {}",
                    describe_np(&rel.anchor),
                    relation_word(rel.kind)
                );
                return Ok(result);
            }
        }

        // 3. score every object; a box mostly inside a better-scoring box of the same label is
        // the detector seeing part of that object again (half a bicycle), not another one
        let fit = |o: &Object| label_score(&target_matches, &o.label) * (0.5 + 0.5 * o.score);
        let is_part = |i: usize| {
            let o = &objects[i];
            objects.iter().enumerate().any(|(j, p)| {
                let (fp, fo) = (fit(p), fit(o));
                let better = fp > fo || (fp == fo && (p.score > o.score || j < i));
                let same_label_part = p.label == o.label
                    && o.bbox.intersection(&p.bbox)
                        >= PART_OVERLAP * o.bbox.area().min(p.bbox.area());
                // one object given two labels the instruction both means (a sweet seen as
                // "sports ball" and "frisbee")
                let same_box = o.bbox.iou(&p.bbox) >= SAME_OBJECT_IOU
                    && label_score(&target_matches, &p.label) > 0.0;
                j != i && better && (same_label_part || same_box)
            })
        };
        // "the dark brown horse": the colour word after "dark"
        let dark_shade = parsed.target.colour.as_ref().is_some_and(|c| {
            parse::words(instruction)
                .windows(2)
                .any(|p| p[0] == "dark" && p[1] == *c)
        });
        // words that may be text on the object rather than its name or colour
        let loose_words: Vec<String> = parse::words(instruction)
            .into_iter()
            .filter(|w| w.chars().count() >= 3 && !parse::is_filler(w))
            .filter(|w| self.vocab.normalise(w).is_none() && !parse::COLOURS.contains(&w.as_str()))
            .collect();
        let mut scored: Vec<Scored> = Vec::new();
        let mut wrong_colour: Vec<(usize, &'static str)> = Vec::new();
        let mut wrong_text = 0usize;
        for (i, o) in objects.iter().enumerate() {
            let ls = label_score(&target_matches, &o.label);
            if ls <= 0.0 || !o.bbox.is_finite() || o.bbox.area() <= 0.0 || is_part(i) {
                continue;
            }
            let mut s = ls * (0.5 + 0.5 * o.score.clamp(0.0, 1.0));
            // the same object also seen under another label the noun means (a van as "car" and
            // as "truck"): more evidence it is one
            let second_view = objects
                .iter()
                .filter(|p| p.label != o.label && p.bbox.iou(&o.bbox) >= SAME_OBJECT_IOU)
                .map(&fit)
                .fold(0.0, f32::max);
            s += SECOND_VIEW_WEIGHT * second_view.min(s);
            let mut text_part = None;
            if let Some(want) = &parsed.text {
                let read = o.text.as_deref().unwrap_or("");
                let ts = text::text_score(read, want);
                if ts < text::MIN_TEXT_SCORE {
                    wrong_text += 1;
                    continue;
                }
                text_part = Some((read.to_string(), ts));
                s *= ts;
            }
            if let Some(c) = &soft_colour {
                s *= 0.6 + 0.4 * colour::histogram(img, &o.bbox).score(c);
            }
            // "the Gordon's bottle": a word of the instruction that the object's text says
            if let (None, Some(read)) = (&parsed.text, &o.text) {
                let said = loose_words
                    .iter()
                    .map(|w| text::text_score(read, w))
                    .filter(|&t| t >= text::MIN_TEXT_SCORE)
                    .fold(0.0, f32::max);
                if said > 0.0 {
                    text_part = Some((read.clone(), said));
                    s *= 1.0 + TEXT_BONUS * said;
                }
            }
            let mut colour_part = None;
            if let Some(c) = &parsed.target.colour {
                let hist = colour::histogram(img, &o.bbox);
                let mut cs = hist.score(c);
                if dark_shade {
                    // "dark brown" in shade is mostly black pixels
                    cs = cs.max(DARK_BLACK_SHARE * hist.score("black"));
                }
                if cs < MIN_COLOUR {
                    wrong_colour.push((i, hist.dominant().unwrap_or("unknown")));
                    continue;
                }
                colour_part = Some((c.clone(), cs));
                s *= cs;
            }
            let mut relation = None;
            if let Some(rel) = &parsed.relation {
                // the object the anchor phrase names best is the anchor, not the target, even
                // when it also fits the target's noun (the van, seen as "car" too, in "the car
                // next to the van")
                let top = anchors.iter().map(|a| a.1).fold(0.0, f32::max);
                let is_the_anchor = rel.anchor.noun != parsed.target.noun
                    && anchors.iter().any(|&(j, a)| {
                        a >= AMBIGUITY_RATIO * top
                            && (j == i || objects[j].bbox.iou(&o.bbox) >= SAME_OBJECT_IOU)
                    });
                if is_the_anchor {
                    continue;
                }
                let best = anchors
                    .iter()
                    .filter(|(j, _)| *j != i)
                    .map(|&(j, a)| {
                        (
                            relations::relation_score(rel.kind, &o.bbox, &objects[j].bbox) * a,
                            j,
                        )
                    })
                    .max_by(|a, b| a.0.total_cmp(&b.0));
                match best {
                    Some((r, j)) if r > 0.05 => {
                        relation = Some((r, j));
                        s *= r.min(1.0).powf(0.5);
                    }
                    _ => continue,
                }
            }
            if s >= MIN_SCORE {
                scored.push(Scored {
                    idx: i,
                    score: s,
                    colour: colour_part,
                    relation,
                    text: text_part,
                });
            }
        }
        if parsed.text.is_some() {
            // A box around other boxes (a bag of books, a shelf) reads their text too: when a
            // smaller candidate inside it says the words as well, the words are that one's.
            let boxes: Vec<BBox> = scored.iter().map(|c| objects[c.idx].bbox).collect();
            scored.retain(|c| {
                let b = &objects[c.idx].bbox;
                !boxes.iter().any(|inner| {
                    inner.area() < b.area() && b.intersection(inner) >= PART_OVERLAP * inner.area()
                })
            });
        }
        scored.sort_by(|a, b| b.score.total_cmp(&a.score));

        if scored.is_empty() {
            let n_label = objects
                .iter()
                .filter(|o| label_score(&target_matches, &o.label) > 0.0)
                .count();
            result.reason = if n_label > 0 && parsed.text.is_some() && wrong_text > 0 {
                let read = objects
                    .iter()
                    .filter(|o| o.text.is_some() && label_score(&target_matches, &o.label) > 0.0)
                    .count();
                format!("no {what} in view (text read on {read} of {n_label} objects)")
            } else if n_label == 0 {
                let labels: Vec<&str> = target_matches
                    .as_ref()
                    .map(|m| m.labels.iter().map(|l| l.label.as_str()).collect())
                    .unwrap_or_default();
                format!("no {} in view", labels.join(" or "))
            } else if !wrong_colour.is_empty() {
                let seen: Vec<String> = wrong_colour
                    .iter()
                    .map(|(i, c)| format!("{c} {}", objects[*i].label))
                    .collect();
                format!("no {what} in view (saw: {})", seen.join(", "))
            } else if let Some(rel) = &parsed.relation {
                format!(
                    "no {what} is {} a {}",
                    relation_word(rel.kind),
                    describe_np(&rel.anchor)
                )
            } else {
                format!("no {what} in view")
            };
            return Ok(result);
        }

        // 4. choose: a selector picks among the good ones; otherwise the best, unless a rival is
        // as good
        let selector = parsed.selector.or(match parsed.target.size.as_deref() {
            Some("big") => Some(Selector::Biggest),
            Some("small") => Some(Selector::Smallest),
            _ => None,
        });
        let best = scored[0].score;
        let mut chosen: Vec<usize> = Vec::new(); // indexes into `scored`
        let mut how: String;
        match selector {
            Some(sel) => {
                let mut good: Vec<usize> = (0..scored.len())
                    .filter(|&k| scored[k].score >= SELECT_RATIO * best)
                    .collect();
                let key =
                    |k: usize| relations::selector_key(&sel, &objects[scored[k].idx].bbox, w, h);
                good.sort_by(|&a, &b| key(b).total_cmp(&key(a)));
                let kind = match &target_matches {
                    Some(_) => crate::util::plural(&objects[scored[good[0]].idx].label),
                    None => "objects".into(),
                };
                let pick = match sel {
                    Selector::Ordinal { n, from } => {
                        if n > good.len() {
                            result.reason = format!(
                                "asked for the {} {what} from the {}, but only {} {kind} fit",
                                ordinal_word(n),
                                side_word(from),
                                good.len()
                            );
                            result.candidates = good
                                .iter()
                                .map(|&k| self.answer(objects, &scored[k], img, &parsed))
                                .collect();
                            return Ok(result);
                        }
                        how = format!(
                            "{} from the {} of {} {kind}",
                            ordinal_word(n),
                            side_word(from),
                            good.len()
                        );
                        n - 1
                    }
                    Selector::Middle if good.len() >= 3 => {
                        // the middle one in left-to-right order
                        good.sort_by(|&a, &b| {
                            objects[scored[a].idx]
                                .bbox
                                .center()
                                .0
                                .total_cmp(&objects[scored[b].idx].bbox.center().0)
                        });
                        how = format!("middle of {} {kind}", good.len());
                        if good.len().is_multiple_of(2) {
                            // two middles: the one nearer the image centre, or both if level
                            let (a, b) = (good[good.len() / 2 - 1], good[good.len() / 2]);
                            let ka =
                                relations::selector_key(&sel, &objects[scored[a].idx].bbox, w, h);
                            let kb =
                                relations::selector_key(&sel, &objects[scored[b].idx].bbox, w, h);
                            if relations::selector_tie(&sel, ka, kb, w, h) {
                                chosen = vec![a, b];
                            }
                            if ka >= kb {
                                good.len() / 2 - 1
                            } else {
                                good.len() / 2
                            }
                        } else {
                            good.len() / 2
                        }
                    }
                    other => {
                        how = match other {
                            Selector::Side { side } => {
                                format!("{}most of {} {kind}", side_word(side), good.len())
                            }
                            Selector::Middle => {
                                format!("nearest the middle of {} {kind}", good.len())
                            }
                            Selector::Nearest => format!("nearest of {} {kind}", good.len()),
                            Selector::Farthest => format!("farthest of {} {kind}", good.len()),
                            Selector::Biggest => format!("biggest of {} {kind}", good.len()),
                            Selector::Smallest => format!("smallest of {} {kind}", good.len()),
                            Selector::Ordinal { .. } => unreachable!(),
                        };
                        0
                    }
                };
                if good.len() == 1 {
                    how = format!("the only {} that fits", objects[scored[good[0]].idx].label);
                }
                if chosen.is_empty() {
                    let k = good[pick];
                    chosen.push(k);
                    // others the selector cannot tell apart from it
                    chosen.extend(good.iter().copied().filter(|&o| {
                        o != k && relations::selector_tie(&sel, key(k), key(o), w, h)
                    }));
                }
                let tied = chosen.len();
                let rest: Vec<usize> = (0..scored.len()).filter(|k| !chosen.contains(k)).collect();
                chosen.extend(rest);
                self.finish(
                    &mut result,
                    objects,
                    img,
                    &parsed,
                    &scored,
                    &chosen,
                    tied,
                    &what,
                    &how,
                );
            }
            None => {
                let order: Vec<usize> = (0..scored.len()).collect();
                // "the horses": several meant, which one is for the asker to say
                let ratio = if parsed.target.plural {
                    SELECT_RATIO
                } else {
                    AMBIGUITY_RATIO
                };
                let tied = 1 + scored[1..]
                    .iter()
                    .take_while(|s| s.score >= ratio * best)
                    .count();
                how = if scored.len() == 1 {
                    format!("the only {what} in view")
                } else {
                    format!("best of {} candidates", scored.len())
                };
                self.finish(
                    &mut result,
                    objects,
                    img,
                    &parsed,
                    &scored,
                    &order,
                    tied,
                    &what,
                    &how,
                );
            }
        }
        Ok(result)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        result: &mut GroundResult,
        objects: &[Object],
        img: &RgbImage,
        parsed: &Parsed,
        scored: &[Scored],
        order: &[usize],
        tied: usize,
        what: &str,
        how: &str,
    ) {
        let answers: Vec<Target> = order
            .iter()
            .map(|&k| self.answer(objects, &scored[k], img, parsed))
            .collect();
        if tied >= 2 {
            result.status = Status::Ambiguous;
            result.reason = format!(
                "{tied} objects fit '{what}' equally well ({}); say which",
                answers[..tied]
                    .iter()
                    .map(|a| format!(
                        "{} at [{:.0} {:.0} {:.0} {:.0}]",
                        a.label, a.bbox.x1, a.bbox.y1, a.bbox.x2, a.bbox.y2
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            result.candidates = answers.into_iter().take(tied.max(MAX_CANDIDATES)).collect();
            return;
        }
        let mut it = answers.into_iter();
        let Some(mut target) = it.next() else {
            return;
        };
        target.reason = format!("{}; {how}", target.reason);
        result.reason = target.reason.clone();
        result.status = Status::Found;
        result.target = Some(target);
        result.candidates = it.take(MAX_CANDIDATES).collect();
    }

    fn answer(&self, objects: &[Object], s: &Scored, img: &RgbImage, parsed: &Parsed) -> Target {
        let o = &objects[s.idx];
        let mut why = vec![o.label.to_string()];
        if let Some(n) = &parsed.target.noun {
            let written = parsed.target.written.as_ref().unwrap_or(n);
            if written.as_str() != &*o.label {
                why[0] = format!("'{written}' → {}", o.label);
            }
        }
        if let Some((read, ts)) = &s.text {
            why.push(format!("says '{read}' ({ts:.2})"));
        }
        match &s.colour {
            Some((c, cs)) => why.push(format!("{c} ({cs:.2})")),
            None => {
                if let Some(d) = colour::histogram(img, &o.bbox).dominant() {
                    why.push(format!("mostly {d}"));
                }
            }
        }
        if let (Some((r, j)), Some(rel)) = (s.relation, &parsed.relation) {
            let a = &objects[j];
            why.push(format!(
                "{} the {} at [{:.0} {:.0} {:.0} {:.0}] ({r:.2})",
                relation_word(rel.kind),
                a.label,
                a.bbox.x1,
                a.bbox.y1,
                a.bbox.x2,
                a.bbox.y2
            ));
        }
        Target {
            label: o.label.to_string(),
            bbox: o.bbox.rounded(),
            score: round3(s.score),
            track_id: o.track_id,
            reason: why.join(", "),
            mask: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    /// A white table with two red cups and a blue one, as a detector would report them.
    fn scene() -> (RgbImage, Vec<Object>) {
        let mut img = RgbImage::from_pixel(300, 100, Rgb([240, 240, 240]));
        let cups = [
            ([20.0, 30.0, 60.0, 80.0], [200, 20, 20]),
            ([120.0, 30.0, 160.0, 80.0], [30, 60, 210]),
            ([220.0, 30.0, 260.0, 80.0], [205, 25, 30]),
        ];
        let mut objects = Vec::new();
        for (b, c) in cups {
            for y in b[1] as u32 + 5..b[3] as u32 - 5 {
                for x in b[0] as u32 + 5..b[2] as u32 - 5 {
                    img.put_pixel(x, y, Rgb(c));
                }
            }
            objects.push(Object {
                label: Arc::from("cup"),
                score: 0.8,
                bbox: BBox::from(b),
                track_id: Some(objects.len() as u64 + 1),
                text: None,
            });
        }
        (img, objects)
    }

    fn grounder() -> Grounder {
        Grounder::new(&["person", "cup", "bottle"], None).unwrap()
    }

    #[test]
    fn two_equally_likely_objects_are_ambiguous_not_a_guess() {
        let (img, objects) = scene();
        let r = grounder()
            .ground(&img, &objects, "pick up the red cup")
            .unwrap();
        assert_eq!(r.status, Status::Ambiguous);
        assert!(r.target.is_none());
        let ids: Vec<_> = r
            .candidates
            .iter()
            .take(2)
            .filter_map(|c| c.track_id)
            .collect();
        assert!(ids.contains(&1) && ids.contains(&3), "{r:?}");
        assert_eq!(r.action.as_deref(), Some("pick up"));
    }

    #[test]
    fn colour_and_side_pick_one() {
        let (img, objects) = scene();
        let mut g = grounder();
        let r = g
            .ground(&img, &objects, "the red cup on the right")
            .unwrap();
        assert_eq!(r.status, Status::Found);
        assert_eq!(r.target.as_ref().unwrap().track_id, Some(3));
        let r = g.ground(&img, &objects, "grab the blue mug").unwrap();
        assert_eq!(r.target.as_ref().unwrap().track_id, Some(2));
        let r = g
            .ground(&img, &objects, "the second cup from the left")
            .unwrap();
        assert_eq!(r.target.as_ref().unwrap().track_id, Some(2));
        let r = g
            .ground(&img, &objects, "the cup left of the blue cup")
            .unwrap();
        assert_eq!(r.target.as_ref().unwrap().track_id, Some(1));
    }

    #[test]
    fn absent_things_are_not_found_with_a_reason() {
        let (img, objects) = scene();
        let mut g = grounder();
        let r = g.ground(&img, &objects, "the green cup").unwrap();
        assert_eq!(r.status, Status::NotFound);
        assert!(r.reason.contains("green cup"), "{}", r.reason);
        let r = g.ground(&img, &objects, "the bottle").unwrap();
        assert_eq!(r.status, Status::NotFound);
        let r = g
            .ground(&img, &objects, "the fourth cup from the left")
            .unwrap();
        assert_eq!(r.status, Status::NotFound);
        assert!(g.ground(&img, &objects, "  ").is_err());
        assert!(g
            .ground(&img, &objects, &"x".repeat(MAX_INSTRUCTION_BYTES + 1))
            .is_err());
    }

    #[test]
    fn the_answer_serialises_as_documented() {
        let (img, objects) = scene();
        let r = grounder().ground(&img, &objects, "the blue cup").unwrap();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["status"], "found");
        assert_eq!(v["target"]["label"], "cup");
        assert_eq!(
            v["target"]["box"],
            serde_json::json!([120.0, 30.0, 160.0, 80.0])
        );
        assert_eq!(v["target"]["track_id"], 2);
        assert!(v["target"]["score"].as_f64().unwrap() > 0.5);
        assert!(v["target"]["reason"].as_str().unwrap().contains("blue"));
        assert!(v["candidates"].is_array());
        assert_eq!(v["instruction"], "the blue cup");
    }
}
