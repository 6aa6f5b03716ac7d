//! English phrasing shared by descriptions and alert messages: articles, plurals, counts.

/// The first letter upper-case, to start a sentence with a generated phrase.
pub(super) fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// "a person", "an apple", "2 people".
pub(super) fn counted(n: usize, label: &str) -> String {
    if n == 1 {
        format!("{} {label}", article(label))
    } else {
        format!("{n} {}", plural(label))
    }
}

/// The indefinite article for a label, by its first letter (good enough for COCO names).
fn article(word: &str) -> &'static str {
    match word.chars().next().map(|c| c.to_ascii_lowercase()) {
        Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
        _ => "a",
    }
}

/// English plural of a detector label; covers the COCO/VOC/Open Images names and the regular
/// rules, and changes only the last word ("traffic light" → "traffic lights").
pub(super) fn plural(label: &str) -> String {
    let (head, last) = match label.rfind(' ') {
        Some(i) => (&label[..=i], &label[i + 1..]),
        None => ("", label),
    };
    let irregular = match last {
        "person" => Some("people"),
        "man" => Some("men"),
        "woman" => Some("women"),
        "child" => Some("children"),
        "mouse" => Some("mice"),
        "knife" => Some("knives"),
        "leaf" => Some("leaves"),
        "foot" => Some("feet"),
        "tooth" => Some("teeth"),
        "goose" => Some("geese"),
        "sheep" | "deer" | "fish" | "skis" | "scissors" | "broccoli" | "people" | "glasses"
        | "aircraft" | "series" | "species" => Some(last),
        _ => None,
    };
    let tail = match irregular {
        Some(p) => p.to_string(),
        None => {
            let b = last.as_bytes();
            let consonant_y = b.len() >= 2
                && b[b.len() - 1] == b'y'
                && !matches!(b[b.len() - 2], b'a' | b'e' | b'i' | b'o' | b'u');
            if ["s", "x", "z", "ch", "sh"]
                .iter()
                .any(|e| last.ends_with(e))
            {
                format!("{last}es")
            } else if consonant_y {
                format!("{}ies", &last[..last.len() - 1])
            } else {
                format!("{last}s")
            }
        }
    };
    format!("{head}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_and_articles() {
        assert_eq!(plural("person"), "people");
        assert_eq!(plural("bus"), "buses");
        assert_eq!(plural("bench"), "benches");
        assert_eq!(plural("traffic light"), "traffic lights");
        assert_eq!(plural("wine glass"), "wine glasses");
        assert_eq!(plural("butterfly"), "butterflies");
        assert_eq!(plural("toy"), "toys");
        assert_eq!(plural("sheep"), "sheep");
        assert_eq!(plural("knife"), "knives");
        assert_eq!(counted(1, "umbrella"), "an umbrella");
        assert_eq!(counted(3, "car"), "3 cars");
        assert_eq!(plural(""), "s");
    }
}
