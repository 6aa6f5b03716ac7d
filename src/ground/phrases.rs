//! Free phrasings rewritten to the words [`super::parse`] reads, before it reads them: distance
//! ("closest to the camera", "in front", "at the back" → nearest / farthest), "furthest to the
//! left" (→ leftmost), "in the middle of the road" when the road is nothing the detector sees
//! (→ in the middle), clothing ("the man in the blue jacket", "the woman in red" → the colour of the
//! person), participles that only describe ("the car parked next to …"), and the text an object should carry ("the box that says FRAGILE", "the
//! bottle labelled Bombay"), taken out of the words and returned on its own.

use super::parse::{colour_of, Vocabulary};

/// Clothes: "in the blue jacket" colours the person wearing it.
const CLOTHES: &[&str] = &[
    "jacket", "coat", "shirt", "t-shirt", "tshirt", "top", "dress", "hoodie", "sweater", "jumper",
    "trousers", "pants", "jeans", "hat", "cap", "helmet", "skirt", "shorts", "uniform", "clothes",
    "outfit", "scarf", "vest", "suit", "shoes", "raincoat", "anorak", "fleece", "cardigan", "tie",
];

/// Participles that describe what an object is doing, not what it is.
const DESCRIBING: &[&str] = &[
    "parked", "walking", "running", "waiting", "moving", "driving", "stopped", "flying", "hanging",
    "resting", "grazing", "crossing", "wearing", "dressed", "holding", "carrying",
];

/// Words that stand for the camera / the speaker in "closest to the camera".
const VIEWER: &[&str] = &[
    "camera",
    "me",
    "us",
    "you",
    "viewer",
    "lens",
    "robot",
    "photographer",
    "here",
];

/// Words that start the text an object carries.
const TEXT_TRIGGERS: &[&str] = &[
    "says",
    "say",
    "saying",
    "labelled",
    "labeled",
    "marked",
    "reading",
    "reads",
    "inscribed",
    "printed",
    "written",
];

/// Nouns after "with (the)" that start the text ("with the word EXIT").
const TEXT_NOUNS: &[&str] = &["word", "words", "text", "label", "writing", "lettering"];

/// Words that end the quoted text when it is not quoted.
const TEXT_END: &[&str] = &[
    "on", "in", "at", "next", "near", "beside", "behind", "under", "above", "below", "from", "to",
    "by", "and", "then", "written", "printed",
];

fn is(ws: &[String], i: usize, w: &str) -> bool {
    ws.get(i).is_some_and(|x| x == w)
}

fn is_any(ws: &[String], i: usize, set: &[&str]) -> bool {
    ws.get(i).is_some_and(|x| set.contains(&x.as_str()))
}

/// Index after an optional "the" at `i`.
fn skip_the(ws: &[String], i: usize) -> usize {
    if is(ws, i, "the") {
        i + 1
    } else {
        i
    }
}

/// Takes the text an object should carry out of `ws`; returns it lower-cased, words joined by
/// single spaces.
fn take_text(ws: &mut Vec<String>) -> Option<String> {
    let mut i = 0;
    while i < ws.len() {
        let start = if is_any(ws, i, TEXT_TRIGGERS) {
            Some(i + 1)
        } else if is(ws, i, "with") {
            let j = skip_the(ws, i + 1);
            if is_any(ws, j, TEXT_NOUNS) {
                Some(j + 1)
            } else if (i + 2..(i + 6).min(ws.len())).any(|k| is_any(ws, k, &["written", "printed"]))
            {
                // "with DHL written on it"
                Some(i + 1)
            } else {
                None
            }
        } else {
            None
        };
        if let Some(mut s) = start {
            // "labelled as X", "that says: X"
            if is_any(ws, s, &["as", "with"]) {
                s += 1;
            }
            let mut end = s;
            while end < ws.len() && !is_any(ws, end, TEXT_END) {
                end += 1;
            }
            let text: Vec<String> = ws[s..end]
                .iter()
                .map(|w| w.trim_matches(|c: char| c == '\'' || c == '-').to_string())
                .filter(|w| !w.is_empty())
                .collect();
            if !text.is_empty() {
                // and a trailing "written on it" / "on it"
                let mut cut = end;
                if is_any(ws, cut, &["written", "printed"]) {
                    cut += 1;
                }
                if is(ws, cut, "on") && is_any(ws, cut + 1, &["it", "them"]) {
                    cut += 2;
                }
                let from = if i > 0 && is_any(ws, i - 1, &["that", "which", "it"]) {
                    i - 1
                } else {
                    i
                };
                ws.drain(from..cut);
                return Some(text.join(" "));
            }
        }
        i += 1;
    }
    None
}

/// The rewritten words, and the text the object should carry.
pub fn rewrite(mut ws: Vec<String>, vocab: &Vocabulary) -> (Vec<String>, Option<String>) {
    let text = take_text(&mut ws);
    let known = |w: &str| vocab.normalise(w).is_some();
    let mut out: Vec<String> = Vec::with_capacity(ws.len());
    let mut i = 0;
    while i < ws.len() {
        let w = ws[i].as_str();
        // "closest to the camera", "nearest to me", "closest from the camera"
        if matches!(w, "closest" | "nearest" | "near-most")
            && is_any(&ws, i + 1, &["to", "from"])
            && is_any(&ws, skip_the(&ws, i + 2), VIEWER)
        {
            out.push("nearest".into());
            i = skip_the(&ws, i + 2) + 1;
            continue;
        }
        if matches!(w, "furthest" | "farthest") {
            let mut j = i + 1;
            if is(&ws, j, "away") {
                j += 1;
            }
            // "furthest from the camera"
            if is(&ws, j, "from") && is_any(&ws, skip_the(&ws, j + 1), VIEWER) {
                j = skip_the(&ws, j + 1) + 1;
            }
            // "furthest to the left" is the leftmost
            if is_any(&ws, j, &["to", "on"]) {
                let k = skip_the(&ws, j + 1);
                if let Some(side) = ws
                    .get(k)
                    .filter(|s| matches!(s.as_str(), "left" | "right" | "top" | "bottom"))
                {
                    out.push(format!("{side}most"));
                    i = k + 1;
                    continue;
                }
            }
            out.push("farthest".into());
            i = j;
            continue;
        }
        // "in front" without "of": nearest the camera; "at the front", "in the foreground"
        if matches!(w, "in" | "at" | "up") {
            let j = skip_the(&ws, i + 1);
            let place = ws.get(j).map(String::as_str);
            let then_of = is(&ws, j + 1, "of");
            match place {
                Some("front" | "foreground") if !then_of => {
                    out.push("nearest".into());
                    i = j + 1;
                    continue;
                }
                Some("back" | "background" | "distance" | "rear") if !then_of => {
                    out.push("farthest".into());
                    i = j + 1;
                    continue;
                }
                // "in the middle of the road": the road is nothing the detector sees
                Some("middle" | "centre" | "center") if then_of => {
                    let k = skip_the(&ws, j + 2);
                    if ws.get(k).is_some_and(|x| !known(x)) {
                        out.extend(ws[i..=j].iter().cloned());
                        i = k + 1;
                        continue;
                    }
                }
                _ => {}
            }
        }
        // "in the blue jacket", "wearing a red coat", "in red": the colour of the wearer
        if matches!(w, "in" | "wearing" | "dressed" | "with") {
            let mut j = i + 1;
            if is(&ws, j, "in") {
                j += 1; // "dressed in"
            }
            if is_any(&ws, j, &["the", "a", "an", "his", "her", "their"]) {
                j += 1;
            }
            let colour = ws.get(j).and_then(|c| colour_of(c));
            if let Some(c) = colour {
                let clothed = is_any(&ws, j + 1, CLOTHES);
                // "in red" alone, or a colour and a garment
                let then_noun = ws.get(j + 1).is_some_and(|n| known(n));
                if clothed || (w != "with" && !then_noun) {
                    out.push(c.to_string());
                    i = j + 1 + usize::from(clothed);
                    continue;
                }
            }
        }
        if DESCRIBING.contains(&w) {
            i += 1;
            continue;
        }
        // "far away"
        if w == "far" && is(&ws, i + 1, "away") {
            out.push("farthest".into());
            i += 2;
            continue;
        }
        out.push(ws[i].clone());
        i += 1;
    }
    (out, text)
}

#[cfg(test)]
mod tests {
    use super::super::parse::{parse, words, Selector, Side};
    use super::*;

    fn vocab() -> Vocabulary {
        Vocabulary::new([
            "horse", "person", "bottle", "box", "man", "car", "kid", "table",
        ])
    }

    fn rw(s: &str) -> (String, Option<String>) {
        let (ws, t) = rewrite(words(s), &vocab());
        (ws.join(" "), t)
    }

    #[test]
    fn distance_phrases_become_nearest_and_farthest() {
        assert_eq!(rw("the horse closest to the camera").0, "the horse nearest");
        assert_eq!(rw("the person nearest to me").0, "the person nearest");
        assert_eq!(rw("the kid in front").0, "the kid nearest");
        assert_eq!(rw("the man at the back").0, "the man farthest");
        assert_eq!(rw("the car furthest away").0, "the car farthest");
        assert_eq!(rw("the car furthest from the camera").0, "the car farthest");
        assert_eq!(rw("the pony furthest to the left").0, "the pony leftmost");
        // a relation to a real object stays a relation
        assert_eq!(
            rw("the car closest to the man").0,
            "the car closest to the man"
        );
        assert_eq!(
            rw("the dog in front of the car").0,
            "the dog in front of the car"
        );
        let p = parse("the horse closest to the camera", &vocab());
        assert_eq!(p.selector, Some(Selector::Nearest));
        assert!(p.relation.is_none());
        let p = parse("the pony furthest to the left", &vocab());
        assert_eq!(p.selector, Some(Selector::Side { side: Side::Left }));
    }

    #[test]
    fn the_middle_of_something_unseen_is_the_middle() {
        assert_eq!(
            rw("the man in the middle of the road").0,
            "the man in the middle"
        );
        // but the middle of a table the detector sees is kept
        assert_eq!(
            rw("the bottle in the middle of the table").0,
            "the bottle in the middle of the table"
        );
        let p = parse("the man in the middle of the road", &vocab());
        assert_eq!(p.selector, Some(Selector::Middle));
        assert!(p.relation.is_none());
    }

    #[test]
    fn clothes_colour_the_wearer() {
        assert_eq!(rw("the man in the blue jacket").0, "the man blue");
        assert_eq!(rw("the woman in red").0, "the woman red");
        assert_eq!(rw("the kid wearing a yellow raincoat").0, "the kid yellow");
        assert_eq!(
            rw("the car parked next to the van").0,
            "the car next to the van"
        );
        // a colour that is a place is not clothing; "with" needs a garment
        assert_eq!(rw("the cup in the middle").0, "the cup in the middle");
        assert_eq!(rw("the man with the red car").0, "the man with the red car");
        assert_eq!(rw("the man in the red car").0, "the man in the red car");
        let p = parse("the man in the blue jacket", &vocab());
        assert_eq!(p.target.noun.as_deref(), Some("man"));
        assert_eq!(p.target.colour.as_deref(), Some("blue"));
        assert!(p.relation.is_none());
    }

    #[test]
    fn text_on_the_object_is_taken_out() {
        assert_eq!(
            rw("the box that says FRAGILE"),
            ("the box".into(), Some("fragile".into()))
        );
        assert_eq!(
            rw("grab the bottle labelled 'Bombay Sapphire' on the left"),
            (
                "grab the bottle on the left".into(),
                Some("bombay sapphire".into())
            )
        );
        assert_eq!(
            rw("the sign with the word EXIT on it"),
            ("the sign".into(), Some("exit".into()))
        );
        assert_eq!(
            rw("the truck with DHL written on it"),
            ("the truck".into(), Some("dhl".into()))
        );
        assert_eq!(rw("the box that says").1, None);
        let p = parse("the bottle labelled Bombay", &vocab());
        assert_eq!(p.target.noun.as_deref(), Some("bottle"));
        assert_eq!(p.text.as_deref(), Some("bombay"));
    }
}
