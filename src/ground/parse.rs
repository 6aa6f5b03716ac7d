//! Instruction → what is meant: the action verb, the target noun with its colour and size words,
//! where it is (left/right/middle/top/bottom, nearest/farthest, biggest/smallest, "the second …
//! from the left") and its relation to another object ("next to the laptop", "on the table").
//!
//! Rule-based English: words are lower-cased, punctuation dropped, fillers ("please", "the",
//! "can you") skipped; nouns are singularised and misspelt common nouns corrected by edit distance
//! against a vocabulary (the detector's labels and the synonym table).

use serde::Serialize;

/// Colour names the pixel side can tell apart.
pub const COLOURS: [&str; 11] = [
    "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "grey",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    Left,
    Right,
    Top,
    Bottom,
}

/// Picks one object out of several that fit the description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Selector {
    /// "on the left", "the leftmost", "top", "bottom".
    Side {
        side: Side,
    },
    /// "in the middle", "the centre one".
    Middle,
    Nearest,
    Farthest,
    Biggest,
    Smallest,
    /// "the second bottle from the left" (n from 1); "the last" is n = 1 from the other side.
    Ordinal {
        n: usize,
        from: Side,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RelationKind {
    NextTo,
    On,
    In,
    InFrontOf,
    Behind,
    LeftOf,
    RightOf,
    Above,
    Below,
}

/// A noun phrase: the thing itself, or the anchor of a relation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct NounPhrase {
    /// Head noun, singular, typos corrected; `None` for "the red one", "that thing".
    pub noun: Option<String>,
    pub colour: Option<String>,
    /// "big"/"small" (not the superlatives, which are selectors).
    pub size: Option<String>,
    /// The noun as written, when it was corrected or singularised.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written: Option<String>,
    /// Written as a plural ("the horses").
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub plural: bool,
    /// A material or pattern word ("porcelain", "striped"), see [`super::kinds::MATERIALS`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub material: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Relation {
    pub kind: RelationKind,
    pub anchor: NounPhrase,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Parsed {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    pub target: NounPhrase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relation: Option<Relation>,
    /// Text the object carries ("the box that says FRAGILE" → "fragile"), lower case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// Verb phrases a controller starts with; longest first so "pick up" wins over "pick".
const ACTIONS: &[&str] = &[
    "pick up",
    "put down",
    "hand me",
    "give me",
    "bring me",
    "point at",
    "point to",
    "look at",
    "go to",
    "move to",
    "drive to",
    "walk to",
    "navigate to",
    "where is",
    "where's",
    "show me",
    "pick",
    "grab",
    "take",
    "get",
    "fetch",
    "bring",
    "find",
    "locate",
    "follow",
    "track",
    "push",
    "pull",
    "touch",
    "lift",
    "hold",
    "open",
    "close",
    "move",
    "put",
    "place",
    "select",
    "choose",
    "highlight",
    "approach",
    "avoid",
    "watch",
    "show",
    "catch",
    "kick",
    "hit",
];

const FILLERS: &[&str] = &[
    "please",
    "pls",
    "kindly",
    "can",
    "could",
    "would",
    "will",
    "you",
    "u",
    "robot",
    "hey",
    "ok",
    "okay",
    "now",
    "quickly",
    "just",
    "the",
    "a",
    "an",
    "that",
    "this",
    "these",
    "those",
    "there",
    "is",
    "are",
    "which",
    "who",
    "me",
    "for",
    "i",
    "want",
    "need",
    "to",
    "go",
    "and",
    "then",
    "it",
    "object",
    "thing",
    "item",
    "one",
    "ones",
    "something",
    "some",
    "of",
    "see",
    "seen",
    "lying",
    "sitting",
    "standing",
    "placed",
    "located",
    "visible",
    "picture",
    "image",
    "scene",
    "frame",
    "please,",
    "so",
    "very",
    "really",
    "little",
    "bit",
    "kind",
    "sort",
    "like",
    "we",
    "my",
    "your",
];

/// Whether `w` is a filler or part of an action verb (not a word that could name or describe).
pub fn is_filler(w: &str) -> bool {
    FILLERS.contains(&w) || ACTIONS.iter().any(|a| a.split(' ').any(|p| p == w))
}

/// Words that mean "any object" when no noun is given.
pub const GENERIC: &[&str] = &["object", "thing", "item", "one", "something", "stuff"];

const SIZE_WORDS: &[(&str, &str)] = &[
    ("big", "big"),
    ("large", "big"),
    ("huge", "big"),
    ("giant", "big"),
    ("tall", "big"),
    ("small", "small"),
    ("tiny", "small"),
    ("short", "small"),
    ("mini", "small"),
];

const COLOUR_ALIASES: &[(&str, &str)] = &[
    ("gray", "grey"),
    ("violet", "purple"),
    ("magenta", "pink"),
    ("navy", "blue"),
    ("cyan", "blue"),
    ("turquoise", "blue"),
    ("teal", "green"),
    ("lime", "green"),
    ("golden", "yellow"),
    ("gold", "yellow"),
    ("silver", "grey"),
    ("crimson", "red"),
    ("scarlet", "red"),
    ("maroon", "red"),
    ("beige", "brown"),
    ("tan", "brown"),
    ("reddish", "red"),
    ("greenish", "green"),
    ("bluish", "blue"),
    ("blueish", "blue"),
    ("yellowish", "yellow"),
    ("dark", "black"),
];

/// The colour a word names ("gray" → grey), if any.
pub fn colour_of(w: &str) -> Option<&'static str> {
    COLOURS.iter().find(|c| **c == w).copied().or_else(|| {
        COLOUR_ALIASES
            .iter()
            .find(|(a, _)| *a == w)
            .map(|(_, c)| *c)
    })
}

fn ordinal_of(w: &str) -> Option<usize> {
    Some(match w {
        "first" | "1st" => 1,
        "second" | "2nd" => 2,
        "third" | "3rd" => 3,
        "fourth" | "4th" => 4,
        "fifth" | "5th" => 5,
        "sixth" | "6th" => 6,
        "seventh" | "7th" => 7,
        "eighth" | "8th" => 8,
        "ninth" | "9th" => 9,
        "tenth" | "10th" => 10,
        _ => return None,
    })
}

fn side_of(w: &str) -> Option<Side> {
    Some(match w {
        "left" | "leftmost" | "left-most" | "lefthand" => Side::Left,
        "right" | "rightmost" | "right-most" | "righthand" => Side::Right,
        "top" | "topmost" | "upper" | "uppermost" | "highest" => Side::Top,
        "bottom" | "bottommost" | "lower" | "lowest" => Side::Bottom,
        _ => return None,
    })
}

fn opposite(s: Side) -> Side {
    match s {
        Side::Left => Side::Right,
        Side::Right => Side::Left,
        Side::Top => Side::Bottom,
        Side::Bottom => Side::Top,
    }
}

/// Lower-cased words with punctuation dropped ("bottle," → "bottle"; "left-most" kept whole).
pub fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .replace("’", "'")
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '.' | '!' | '?' | ';' | ':' | '"'))
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric() && c != '-' && c != '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Irregular plurals of nouns the detector knows.
const IRREGULAR: &[(&str, &str)] = &[
    ("people", "person"),
    ("persons", "person"),
    ("men", "man"),
    ("women", "woman"),
    ("children", "child"),
    ("kids", "kid"),
    ("mice", "mouse"),
    ("knives", "knife"),
    ("skis", "skis"),
    ("scissors", "scissors"),
    ("glasses", "glass"),
    ("buses", "bus"),
    ("sheep", "sheep"),
    ("couches", "couch"),
    ("sandwiches", "sandwich"),
    ("benches", "bench"),
    ("dishes", "dish"),
    ("boxes", "box"),
    ("leaves", "leaf"),
    ("shelves", "shelf"),
    ("teddies", "teddy"),
    ("puppies", "puppy"),
    ("kitties", "kitty"),
    ("lorries", "lorry"),
];

/// Edit distance with adjacent transpositions counted as one edit ("bottel" → "bottle").
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j - 1] + cost)
                .min(d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// The nouns the parser knows, for singularising and correcting typos. Multi-word entries
/// ("cell phone") are matched as two words.
#[derive(Debug, Clone, Default)]
pub struct Vocabulary {
    words: Vec<String>,
}

impl Vocabulary {
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(entries: I) -> Self {
        let mut words: Vec<String> = entries
            .into_iter()
            .map(|s| s.as_ref().to_lowercase())
            .collect();
        words.sort();
        words.dedup();
        Vocabulary { words }
    }
    pub fn contains(&self, w: &str) -> bool {
        self.words.binary_search_by(|x| x.as_str().cmp(w)).is_ok()
    }

    /// The vocabulary form of a written word: itself, its singular, or the one entry within a
    /// small edit distance (1 for 4-6 letters, 2 for longer). `None`: not a known noun.
    pub fn normalise(&self, w: &str) -> Option<String> {
        if self.contains(w) {
            return Some(w.to_string());
        }
        if let Some((_, s)) = IRREGULAR.iter().find(|(p, _)| *p == w) {
            if self.contains(s) {
                return Some(s.to_string());
            }
        }
        for suffix in ["es", "s"] {
            if let Some(stem) = w.strip_suffix(suffix) {
                if self.contains(stem) {
                    return Some(stem.to_string());
                }
            }
        }
        if let Some(stem) = w.strip_suffix("ies") {
            let s = format!("{stem}y");
            if self.contains(&s) {
                return Some(s);
            }
        }
        let n = w.chars().count();
        let max = match n {
            0..=3 => return None,
            4..=6 => 1,
            _ => 2,
        };
        let single = w.strip_suffix('s').unwrap_or(w);
        let mut best: Option<(usize, &str)> = None;
        let mut tie = false;
        for v in self.words.iter().filter(|v| !v.contains(' ')) {
            let d = edit_distance(w, v).min(edit_distance(single, v));
            if d <= max {
                match best {
                    Some((bd, _)) if d > bd => {}
                    Some((bd, _)) if d == bd => tie = true,
                    _ => {
                        best = Some((d, v));
                        tie = false;
                    }
                }
            }
        }
        match (best, tie) {
            (Some((_, v)), false) => Some(v.to_string()),
            _ => None,
        }
    }
}

/// Words that start a relation, and the kind. Checked longest first, at each position.
const RELATIONS: &[(&[&str], RelationKind)] = &[
    (&["to", "the", "left", "of"], RelationKind::LeftOf),
    (&["to", "the", "right", "of"], RelationKind::RightOf),
    (&["on", "the", "left", "of"], RelationKind::LeftOf),
    (&["on", "the", "right", "of"], RelationKind::RightOf),
    (&["in", "front", "of"], RelationKind::InFrontOf),
    (&["on", "top", "of"], RelationKind::On),
    (&["next", "to"], RelationKind::NextTo),
    (&["close", "to"], RelationKind::NextTo),
    (&["closest", "to"], RelationKind::NextTo),
    (&["nearest", "to"], RelationKind::NextTo),
    (&["near", "to"], RelationKind::NextTo),
    (&["left", "of"], RelationKind::LeftOf),
    (&["right", "of"], RelationKind::RightOf),
    (&["inside", "of"], RelationKind::In),
    (&["beside"], RelationKind::NextTo),
    (&["besides"], RelationKind::NextTo),
    (&["near"], RelationKind::NextTo),
    (&["by"], RelationKind::NextTo),
    (&["with"], RelationKind::NextTo),
    (&["alongside"], RelationKind::NextTo),
    (&["on"], RelationKind::On),
    (&["onto"], RelationKind::On),
    (&["upon"], RelationKind::On),
    (&["in"], RelationKind::In),
    (&["inside"], RelationKind::In),
    (&["within"], RelationKind::In),
    (&["behind"], RelationKind::Behind),
    (&["above"], RelationKind::Above),
    (&["over"], RelationKind::Above),
    (&["below"], RelationKind::Below),
    (&["under"], RelationKind::Below),
    (&["underneath"], RelationKind::Below),
    (&["beneath"], RelationKind::Below),
];

/// "on the left", "in the middle", "at the top": a place in the picture, not a relation.
fn place_after(ws: &[String], i: usize) -> Option<(Selector, usize)> {
    let mut j = i + 1;
    while j < ws.len() && matches!(ws[j].as_str(), "the" | "very" | "far") {
        j += 1;
    }
    let w = ws.get(j)?;
    if ws.get(j + 1).map(String::as_str) == Some("of") {
        return None;
    }
    let sel = match w.as_str() {
        "middle" | "center" | "centre" => Selector::Middle,
        other => Selector::Side {
            side: side_of(other)?,
        },
    };
    // "on the left side" / "at the top end"
    let mut end = j + 1;
    if matches!(
        ws.get(end).map(String::as_str),
        Some("side" | "end" | "edge" | "corner" | "hand" | "part")
    ) {
        end += 1;
    }
    Some((sel, end))
}

/// Parse an instruction. `vocab` lets typos and plurals of known nouns be fixed.
pub fn parse(text: &str, vocab: &Vocabulary) -> Parsed {
    let (ws, carried_text) = super::phrases::rewrite(words(text), vocab);
    let mut i = 0;
    // fillers first ("please, could you pick up …")
    while i < ws.len() && FILLERS.contains(&ws[i].as_str()) && ws[i] != "go" {
        i += 1;
    }
    let mut action = None;
    for a in ACTIONS {
        let parts: Vec<&str> = a.split(' ').collect();
        if ws.len() >= i + parts.len()
            && ws[i..i + parts.len()]
                .iter()
                .zip(&parts)
                .all(|(w, p)| w == p)
        {
            action = Some(a.to_string());
            i += parts.len();
            break;
        }
    }
    let rest = &ws[i..];

    let mut selector = None;
    // "the last X from the left" is the first from the right
    let mut is_last = false;
    let mut relation_at: Option<(usize, usize, RelationKind)> = None;
    let mut target_words: Vec<String> = Vec::new();
    let mut anchor_words: Vec<String> = Vec::new();
    let mut k = 0;
    while k < rest.len() {
        let w = rest[k].as_str();
        // a place in the picture: "on the left", "in the middle", "at the bottom"
        if matches!(w, "on" | "in" | "at" | "to" | "towards" | "toward") {
            if let Some((sel, end)) = place_after(rest, k) {
                if relation_at.is_none() {
                    selector = selector.or(Some(sel));
                } else {
                    anchor_words.push(format!("@{}", k));
                }
                k = end;
                continue;
            }
        }
        if relation_at.is_none() {
            if let Some((pat, kind)) = RELATIONS.iter().find(|(pat, _)| {
                rest.len() >= k + pat.len()
                    && rest[k..k + pat.len()]
                        .iter()
                        .zip(pat.iter())
                        .all(|(a, b)| a == b)
            }) {
                // "from the left" is part of an ordinal, not a relation
                relation_at = Some((k, k + pat.len(), *kind));
                k += pat.len();
                continue;
            }
        }
        if w == "from" {
            // "second from the left"
            let mut j = k + 1;
            while j < rest.len() && rest[j] == "the" {
                j += 1;
            }
            if let Some(side) = rest.get(j).and_then(|s| side_of(s)) {
                if let Some(Selector::Ordinal { n, .. }) = selector {
                    let from = if is_last { opposite(side) } else { side };
                    selector = Some(Selector::Ordinal { n, from });
                } else if selector.is_none() {
                    selector = Some(Selector::Ordinal { n: 1, from: side });
                }
                k = j + 1;
                if matches!(rest.get(k).map(String::as_str), Some("side" | "end")) {
                    k += 1;
                }
                continue;
            }
        }
        let sel = match w {
            "nearest" | "closest" | "near-most" => Some(Selector::Nearest),
            "farthest" | "furthest" | "far-most" | "farthest-away" => Some(Selector::Farthest),
            "biggest" | "largest" | "tallest" | "huge-est" => Some(Selector::Biggest),
            "smallest" | "tiniest" | "shortest" => Some(Selector::Smallest),
            "middle" | "center" | "centre" | "central" => Some(Selector::Middle),
            "last" => Some(Selector::Ordinal {
                n: 1,
                from: Side::Right,
            }),
            _ => ordinal_of(w)
                .map(|n| Selector::Ordinal {
                    n,
                    from: Side::Left,
                })
                .or_else(|| {
                    // bare "left"/"leftmost" before or after the noun; "left" after a relation
                    // word is handled above
                    side_of(w).map(|side| Selector::Side { side })
                }),
        };
        if let Some(s) = sel {
            if relation_at.is_none() || selector.is_none() {
                selector = Some(match (selector, s) {
                    // "the last one from the left" → the one furthest from the left
                    (Some(Selector::Ordinal { n, .. }), Selector::Side { side }) if n >= 1 => {
                        Selector::Ordinal { n, from: side }
                    }
                    _ => s,
                });
                if w == "last" {
                    is_last = true;
                }
                k += 1;
                continue;
            }
        }
        if relation_at.is_some() {
            anchor_words.push(w.to_string());
        } else {
            target_words.push(w.to_string());
        }
        k += 1;
    }
    let target = noun_phrase(&target_words, vocab, true);
    let relation = relation_at.map(|(_, _, kind)| Relation {
        kind,
        anchor: noun_phrase(
            &anchor_words
                .into_iter()
                .filter(|w| !w.starts_with('@'))
                .collect::<Vec<_>>(),
            vocab,
            false,
        ),
    });
    // "the cup on the left of the laptop" parsed the place first; a relation without an anchor
    // noun is really a place ("the one next to" … nothing): drop it.
    let relation = relation.filter(|r| r.anchor.noun.is_some() || r.anchor.colour.is_some());
    Parsed {
        action,
        target,
        selector,
        relation,
        text: carried_text,
    }
}

/// Whether `written` is a plural of `noun` (not a typo of it).
fn is_plural(written: &str, noun: &str) -> bool {
    IRREGULAR
        .iter()
        .any(|(p, s)| *p == written && *s == noun && p != s)
        || written == format!("{noun}s")
        || written == format!("{noun}es")
        || noun
            .strip_suffix('y')
            .is_some_and(|stem| written == format!("{stem}ies"))
}

fn noun_phrase(ws: &[String], vocab: &Vocabulary, _is_target: bool) -> NounPhrase {
    let mut np = NounPhrase::default();
    let mut content: Vec<&str> = Vec::new();
    for w in ws {
        let w = w.as_str();
        if let Some(c) = colour_of(w) {
            // "dark" is black only when nothing else colours the phrase
            if w == "dark" && np.colour.is_some() {
                continue;
            }
            if np.colour.is_none() || np.colour.as_deref() == Some("black") && w != "dark" {
                np.colour = Some(c.to_string());
            }
            content.push(w);
            continue;
        }
        if let Some((_, s)) = SIZE_WORDS.iter().find(|(a, _)| *a == w) {
            np.size = Some(s.to_string());
            continue;
        }
        if FILLERS.contains(&w) || matches!(w, "'s" | "its") {
            continue;
        }
        content.push(w);
    }
    // the noun: a known two-word noun at the end, else the last known word, else the last word
    // that is not a colour. A colour word last with nothing after it may be the noun ("the orange").
    let non_colour: Vec<&str> = content
        .iter()
        .copied()
        .filter(|w| colour_of(w).is_none())
        .collect();
    let mut noun = None;
    if non_colour.len() >= 2 {
        let two = format!(
            "{} {}",
            non_colour[non_colour.len() - 2],
            non_colour[non_colour.len() - 1]
        );
        let two_single = format!(
            "{} {}",
            non_colour[non_colour.len() - 2],
            vocab
                .normalise(non_colour[non_colour.len() - 1])
                .unwrap_or_else(|| non_colour[non_colour.len() - 1].to_string())
        );
        if vocab.contains(&two) {
            noun = Some((two.clone(), two));
        } else if vocab.contains(&two_single) {
            noun = Some((two_single, two));
        }
    }
    if noun.is_none() {
        if let Some(last) = non_colour.last() {
            noun = Some(match vocab.normalise(last) {
                Some(n) => (n, last.to_string()),
                None => (last.to_string(), last.to_string()),
            });
        } else if let Some(c) = content.last() {
            // "the orange", "the green orange": a colour word that is also a noun, last
            if vocab.contains(c) {
                np.colour = content[..content.len() - 1]
                    .iter()
                    .rev()
                    .find_map(|w| colour_of(w))
                    .map(str::to_string);
                noun = Some((c.to_string(), c.to_string()));
            }
        }
    }
    if let Some((n, written)) = noun {
        let last = written.rsplit(' ').next().unwrap_or(&written);
        let n_last = n.rsplit(' ').next().unwrap_or(&n);
        np.plural = is_plural(last, n_last) || matches!(last, "ones" | "things" | "objects");
        np.material = content
            .iter()
            .filter(|w| **w != last)
            .find(|w| super::kinds::material_of(w).is_some())
            .map(|w| w.to_string());
        if GENERIC.contains(&n.as_str()) {
            np.noun = None;
        } else {
            if n != written {
                np.written = Some(written);
            }
            np.noun = Some(n);
        }
    }
    np
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Vocabulary {
        Vocabulary::new([
            "cup",
            "bottle",
            "person",
            "laptop",
            "table",
            "dining table",
            "cell phone",
            "phone",
            "orange",
            "apple",
            "ball",
            "sports ball",
            "chair",
            "mug",
            "knife",
            "car",
            "glass",
            "wine glass",
            "banana",
            "dog",
            "tv",
            "telly",
            "mouse",
            "clock",
            "bowl",
            "man",
        ])
    }

    fn p(s: &str) -> Parsed {
        parse(s, &vocab())
    }

    #[test]
    fn action_colour_noun_and_side() {
        let r = p("pick up the red cup on the left");
        assert_eq!(r.action.as_deref(), Some("pick up"));
        assert_eq!(r.target.noun.as_deref(), Some("cup"));
        assert_eq!(r.target.colour.as_deref(), Some("red"));
        assert_eq!(r.selector, Some(Selector::Side { side: Side::Left }));
        assert!(r.relation.is_none());
    }

    #[test]
    fn fillers_plurals_and_typos() {
        let r = p("Please, could you grab the bottel?");
        assert_eq!(r.action.as_deref(), Some("grab"));
        assert_eq!(r.target.noun.as_deref(), Some("bottle"));
        assert_eq!(r.target.written.as_deref(), Some("bottel"));
        assert_eq!(p("find the cups").target.noun.as_deref(), Some("cup"));
        assert_eq!(
            p("look at the people").target.noun.as_deref(),
            Some("person")
        );
        assert_eq!(p("the laptpo").target.noun.as_deref(), Some("laptop"));
        assert_eq!(p("the knives").target.noun.as_deref(), Some("knife"));
        // unknown words stay as written (the label matcher decides)
        assert_eq!(p("the unicorn").target.noun.as_deref(), Some("unicorn"));
    }

    #[test]
    fn ordinals_from_either_side() {
        assert_eq!(
            p("the second bottle from the left").selector,
            Some(Selector::Ordinal {
                n: 2,
                from: Side::Left
            })
        );
        assert_eq!(
            p("grab the 3rd cup from the right").selector,
            Some(Selector::Ordinal {
                n: 3,
                from: Side::Right
            })
        );
        assert_eq!(
            p("the last clock").selector,
            Some(Selector::Ordinal {
                n: 1,
                from: Side::Right
            })
        );
        assert_eq!(
            p("the last clock from the right").selector,
            Some(Selector::Ordinal {
                n: 1,
                from: Side::Left
            })
        );
        assert_eq!(
            p("the last clock from the left").target.noun.as_deref(),
            Some("clock")
        );
        let r = p("the first person");
        assert_eq!(
            r.selector,
            Some(Selector::Ordinal {
                n: 1,
                from: Side::Left
            })
        );
        assert_eq!(r.target.noun.as_deref(), Some("person"));
    }

    #[test]
    fn relations_with_anchor_phrases() {
        let r = p("the cup next to the laptop");
        let rel = r.relation.unwrap();
        assert_eq!(rel.kind, RelationKind::NextTo);
        assert_eq!(rel.anchor.noun.as_deref(), Some("laptop"));
        assert_eq!(r.target.noun.as_deref(), Some("cup"));

        let r = p("the bottle to the left of the blue mug");
        let rel = r.relation.unwrap();
        assert_eq!(rel.kind, RelationKind::LeftOf);
        assert_eq!(rel.anchor.noun.as_deref(), Some("mug"));
        assert_eq!(rel.anchor.colour.as_deref(), Some("blue"));
        assert!(r.selector.is_none());

        assert_eq!(
            p("the cup on the table").relation.unwrap().kind,
            RelationKind::On
        );
        assert_eq!(
            p("the dog in front of the car").relation.unwrap().kind,
            RelationKind::InFrontOf
        );
        assert_eq!(
            p("the ball under the chair").relation.unwrap().kind,
            RelationKind::Below
        );
        // a place, not a relation
        let r = p("the cup on the right");
        assert!(r.relation.is_none());
        assert_eq!(r.selector, Some(Selector::Side { side: Side::Right }));
        let r = p("the chair in the middle");
        assert!(r.relation.is_none());
        assert_eq!(r.selector, Some(Selector::Middle));
    }

    #[test]
    fn extremes_and_sizes() {
        assert_eq!(p("the nearest car").selector, Some(Selector::Nearest));
        assert_eq!(p("the farthest person").selector, Some(Selector::Farthest));
        assert_eq!(p("the biggest orange").selector, Some(Selector::Biggest));
        assert_eq!(p("the smallest ball").selector, Some(Selector::Smallest));
        assert_eq!(p("the big dog").target.size.as_deref(), Some("big"));
        assert_eq!(
            p("the leftmost chair").selector,
            Some(Selector::Side { side: Side::Left })
        );
        let r = p("the car closest to the dog");
        assert_eq!(r.relation.unwrap().kind, RelationKind::NextTo);
        assert!(r.selector.is_none());
    }

    #[test]
    fn colour_word_that_is_also_a_noun() {
        let r = p("the orange");
        assert_eq!(r.target.noun.as_deref(), Some("orange"));
        assert_eq!(r.target.colour, None);
        let r = p("the orange ball");
        assert_eq!(r.target.noun.as_deref(), Some("ball"));
        assert_eq!(r.target.colour.as_deref(), Some("orange"));
        let r = p("the green orange");
        assert_eq!(r.target.noun.as_deref(), Some("orange"));
        assert_eq!(r.target.colour.as_deref(), Some("green"));
        let r = p("the green one");
        assert_eq!(r.target.noun, None);
        assert_eq!(r.target.colour.as_deref(), Some("green"));
        assert_eq!(p("the grey mouse").target.colour.as_deref(), Some("grey"));
        assert_eq!(p("the gray mouse").target.colour.as_deref(), Some("grey"));
    }

    #[test]
    fn two_word_nouns() {
        assert_eq!(
            p("the cell phone").target.noun.as_deref(),
            Some("cell phone")
        );
        assert_eq!(
            p("the dining tables").target.noun.as_deref(),
            Some("dining table")
        );
        assert_eq!(
            p("the wine glass").target.noun.as_deref(),
            Some("wine glass")
        );
    }

    #[test]
    fn edit_distance_counts_transpositions_once() {
        assert_eq!(edit_distance("bottle", "bottle"), 0);
        assert_eq!(edit_distance("bottel", "bottle"), 1);
        assert_eq!(edit_distance("cup", "cap"), 1);
        assert_eq!(edit_distance("cat", "dog"), 3);
        assert_eq!(edit_distance("clok", "clock"), 1);
    }
}
