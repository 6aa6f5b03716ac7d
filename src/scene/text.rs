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

/// One plural for the whole crate (descriptions, alerts, the frame loop).
pub(super) use crate::util::plural;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn articles_and_counts() {
        // Plurals themselves are tested with `util::plural`.
        assert_eq!(counted(1, "umbrella"), "an umbrella");
        assert_eq!(counted(1, "car"), "a car");
        assert_eq!(counted(3, "car"), "3 cars");
        assert_eq!(counted(2, "person"), "2 people");
        assert_eq!(capitalise("a dog"), "A dog");
    }
}
