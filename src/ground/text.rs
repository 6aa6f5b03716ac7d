//! How well the text read on an object (OCR) matches the text an instruction names ("the box that
//! says FRAGILE"): case, spacing and punctuation ignored, a misread letter or two forgiven, as OCR
//! makes them.

use super::parse::edit_distance;

/// Below this an object's text does not say what was asked.
pub const MIN_TEXT_SCORE: f32 = 0.7;

/// Lower-case alphanumeric words.
fn tokens(s: &str) -> Vec<String> {
    s.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Similarity of two words, 0..1: 1 - edits / longer length.
fn word_similarity(a: &str, b: &str) -> f32 {
    let n = a.chars().count().max(b.chars().count()).max(1);
    1.0 - edit_distance(a, b) as f32 / n as f32
}

/// How well `read` (the text on the object) says `wanted`, 0..1: 1 when every wanted word is
/// there (or the words run together: "FRAGILE" read as "FRA GILE"), else the mean over wanted
/// words of the best similarity to a read word.
pub fn text_score(read: &str, wanted: &str) -> f32 {
    let read_t = tokens(read);
    let want_t = tokens(wanted);
    if want_t.is_empty() || read_t.is_empty() {
        return 0.0;
    }
    let joined_read: String = read_t.concat();
    let joined_want: String = want_t.concat();
    if joined_read.contains(&joined_want) {
        return 1.0;
    }
    let sum: f32 = want_t
        .iter()
        .map(|w| {
            read_t
                .iter()
                .map(|r| {
                    if r.contains(w.as_str()) && w.chars().count() >= 3 {
                        1.0
                    } else {
                        word_similarity(w, r)
                    }
                })
                .fold(0.0, f32::max)
        })
        .sum();
    sum / want_t.len() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_case_and_spacing_do_not_matter() {
        assert_eq!(text_score("FRAGILE - handle with care", "fragile"), 1.0);
        assert_eq!(text_score("BOMBAY Sapphire", "bombay sapphire"), 1.0);
        assert_eq!(text_score("FRA GILE", "fragile"), 1.0);
        assert!(text_score("Bombay", "Bombay Sapphire") < MIN_TEXT_SCORE);
    }

    #[test]
    fn ocr_misreads_are_forgiven_other_words_are_not() {
        assert!(text_score("FRAG1LE", "fragile") >= MIN_TEXT_SCORE);
        assert!(text_score("B0MBAY", "bombay") >= MIN_TEXT_SCORE);
        assert!(text_score("GORDON'S", "bombay") < MIN_TEXT_SCORE);
        assert!(text_score("THIS WAY UP", "fragile") < MIN_TEXT_SCORE);
        assert_eq!(text_score("", "fragile"), 0.0);
        assert_eq!(text_score("FRAGILE", ""), 0.0);
    }
}
