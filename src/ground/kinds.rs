//! What people call things the detector has no label for, as data: kinds of a labelled thing
//! ("taxi" is a yellow car, "van" a truck or car, "mug" a cup), materials that hint at a colour
//! ("porcelain" → white), and near-miss label groups (a horse the detector calls a cow) whose
//! other labels match below an exact match.
//!
//! Kept as tables, not rules in code, so a new word is one line.

/// Score of the first label reached through [`KINDS`].
pub const KIND_SCORE: f32 = 0.9;
/// Each further label of a kind scores this share of the first ("van": a truck before a car).
pub const KIND_ALTERNATIVE: f32 = 0.8;
/// A near-miss label scores this share of the label it stands in for.
pub const NEAR_MISS_FACTOR: f32 = 0.7;

/// A word beyond the detector's labels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Kind {
    /// One or two words, singular, lower case.
    pub word: &'static str,
    /// The labels a detector gives such a thing, usual first.
    pub labels: &'static [&'static str],
    /// The colour it usually has ("taxi" → yellow).
    pub colour: Option<&'static str>,
    /// Whether an object of another colour is not one ("taxi": a white car is not a taxi), or
    /// the colour only prefers ("ambulance": white, but not always).
    pub colour_required: bool,
}

const fn kind(word: &'static str, labels: &'static [&'static str]) -> Kind {
    Kind {
        word,
        labels,
        colour: None,
        colour_required: false,
    }
}

const fn coloured(
    word: &'static str,
    labels: &'static [&'static str],
    colour: &'static str,
    required: bool,
) -> Kind {
    Kind {
        word,
        labels,
        colour: Some(colour),
        colour_required: required,
    }
}

/// Kinds of things, by what the detector sees. Checked before the synonym table.
pub const KINDS: &[Kind] = &[
    // vehicles
    coloured("taxi", &["car"], "yellow", true),
    coloured("cab", &["car"], "yellow", true),
    coloured("yellow cab", &["car"], "yellow", true),
    kind("van", &["truck", "car"]),
    kind("minivan", &["car", "truck"]),
    kind("camper", &["truck", "car"]),
    kind("pickup", &["truck", "car"]),
    kind("pickup truck", &["truck", "car"]),
    kind("pick-up", &["truck", "car"]),
    kind("jeep", &["car", "truck"]),
    kind("suv", &["car", "truck"]),
    kind("hatchback", &["car"]),
    kind("sedan", &["car"]),
    kind("saloon", &["car"]),
    kind("police car", &["car"]),
    coloured("ambulance", &["truck", "car"], "white", false),
    coloured("fire engine", &["truck"], "red", false),
    coloured("fire truck", &["truck"], "red", false),
    kind("lorry", &["truck"]),
    kind("minibus", &["bus", "truck"]),
    kind("coach", &["bus"]),
    kind("tram", &["train", "bus"]),
    kind("streetcar", &["train", "bus"]),
    kind("locomotive", &["train"]),
    kind("scooter", &["motorcycle", "bicycle"]),
    kind("moped", &["motorcycle"]),
    kind("cycle", &["bicycle"]),
    kind("yacht", &["boat"]),
    kind("canoe", &["boat"]),
    kind("jet", &["airplane"]),
    // containers
    kind("mug", &["cup"]),
    kind("teacup", &["cup"]),
    kind("coffee cup", &["cup"]),
    kind("tumbler", &["cup", "wine glass"]),
    // a jug has a handle and a spout: a detector sees a vase or a cup, not a bottle
    kind("jug", &["vase", "cup"]),
    kind("pitcher", &["vase", "cup"]),
    kind("jar", &["vase", "bottle", "cup"]),
    kind("can", &["bottle", "cup"]),
    kind("flask", &["bottle"]),
    kind("pot", &["potted plant", "vase", "bowl"]),
    kind("flower pot", &["potted plant", "vase", "bowl"]),
    kind("flowerpot", &["potted plant", "vase", "bowl"]),
    kind("plant pot", &["potted plant", "vase", "bowl"]),
    kind("planter", &["potted plant", "vase", "bowl"]),
    kind("dish", &["bowl"]),
    kind("basin", &["bowl"]),
    // animals
    kind("pony", &["horse"]),
    kind("foal", &["horse"]),
    kind("stallion", &["horse"]),
    kind("mare", &["horse"]),
    kind("donkey", &["horse"]),
    kind("calf", &["cow"]),
    kind("bull", &["cow"]),
    kind("ox", &["cow"]),
    kind("cattle", &["cow"]),
    kind("lamb", &["sheep"]),
    kind("goat", &["sheep"]),
    kind("eagle", &["bird"]),
    kind("hawk", &["bird"]),
    kind("pigeon", &["bird"]),
    kind("seagull", &["bird"]),
    kind("gull", &["bird"]),
    kind("duck", &["bird"]),
    kind("goose", &["bird"]),
    kind("swan", &["bird"]),
    kind("parrot", &["bird"]),
    kind("owl", &["bird"]),
    // small things with no label of their own: what the detector calls them
    kind("pencil", &["toothbrush", "knife", "scissors"]),
    kind("pen", &["toothbrush", "knife", "scissors"]),
    kind("marker", &["toothbrush", "knife", "scissors"]),
    kind("screwdriver", &["knife", "scissors", "toothbrush"]),
    kind("tablet", &["laptop", "cell phone"]),
];

/// Groups of labels a detector confuses with each other. A noun matching one label also
/// matches the others at [`NEAR_MISS_FACTOR`] of its score.
pub const NEAR_MISS: &[&[&str]] = &[
    &["horse", "cow", "sheep", "zebra"],
    &["dog", "cat"],
    &["bear", "teddy bear"],
    &["cup", "vase", "bowl", "wine glass"],
    &["car", "truck"],
    &["truck", "bus"],
    &["bicycle", "motorcycle"],
    &["tv", "laptop"],
    &["remote", "cell phone"],
    &["handbag", "backpack", "suitcase"],
    &["knife", "scissors", "toothbrush"],
];

/// Material and pattern words: not nouns, but a hint at the colour ("the porcelain cup").
pub const MATERIALS: &[(&str, Option<&str>)] = &[
    ("porcelain", Some("white")),
    ("ceramic", None),
    ("china", Some("white")),
    ("terracotta", Some("orange")),
    ("clay", Some("orange")),
    ("wooden", Some("brown")),
    ("wood", Some("brown")),
    ("leather", Some("brown")),
    ("cardboard", Some("brown")),
    ("paper", None),
    ("metal", Some("grey")),
    ("metallic", Some("grey")),
    ("steel", Some("grey")),
    ("chrome", Some("grey")),
    ("plastic", None),
    ("glass", None),
    ("striped", None),
    ("spotted", None),
    ("furry", None),
];

/// The [`KINDS`] entry for a word or two-word phrase.
pub fn kind_of(word: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.word == word)
}

/// The material entry for a word (`Some(None)`: a material without a colour).
pub fn material_of(word: &str) -> Option<Option<&'static str>> {
    MATERIALS.iter().find(|(w, _)| *w == word).map(|(_, c)| *c)
}

/// The labels `label` is confused with (not itself).
pub fn near_misses(label: &str) -> impl Iterator<Item = &'static str> + '_ {
    NEAR_MISS
        .iter()
        .filter(move |g| g.contains(&label))
        .flat_map(|g| g.iter().copied())
        .filter(move |l| *l != label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_are_consistent() {
        for k in KINDS {
            assert_eq!(k.word, k.word.to_lowercase(), "{}", k.word);
            assert!(!k.labels.is_empty(), "{}", k.word);
            assert!(k.colour_required <= k.colour.is_some(), "{}", k.word);
            if let Some(c) = k.colour {
                assert!(super::super::parse::COLOURS.contains(&c), "{}", k.word);
            }
        }
        for (_, c) in MATERIALS {
            if let Some(c) = c {
                assert!(super::super::parse::COLOURS.contains(c));
            }
        }
        assert_eq!(kind_of("taxi").unwrap().colour, Some("yellow"));
        let horse: Vec<_> = near_misses("horse").collect();
        assert!(horse.contains(&"cow") && !horse.contains(&"horse"));
        assert_eq!(near_misses("person").count(), 0);
    }
}
