//! Small helpers that several layers need and none owns: the wall clock as Unix seconds and the
//! English plural of a detector label.
//!
//! They live here, below every other module, so a capture source, a rule and the frame loop can
//! share one copy without importing each other.

/// Seconds since the Unix epoch (UTC), with sub-second precision; 0 if the clock is before 1970.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// English plural of a detector label; covers the COCO/VOC/Open Images names and the regular
/// rules, and changes only the last word ("traffic light" → "traffic lights").
pub fn plural(label: &str) -> String {
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
    fn plurals() {
        assert_eq!(plural("person"), "people");
        assert_eq!(plural("bus"), "buses");
        assert_eq!(plural("bench"), "benches");
        assert_eq!(plural("traffic light"), "traffic lights");
        assert_eq!(plural("wine glass"), "wine glasses");
        assert_eq!(plural("butterfly"), "butterflies");
        assert_eq!(plural("toy"), "toys");
        assert_eq!(plural("sheep"), "sheep");
        assert_eq!(plural("knife"), "knives");
        assert_eq!(plural(""), "s");
    }

    #[test]
    fn unix_now_is_after_2020() {
        assert!(unix_now() > 1_577_836_800.0);
    }
}
