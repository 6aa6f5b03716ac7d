//! Noun → detector labels, each with a score: the label itself (1.0), the kinds table
//! ([`super::kinds`], 0.9, with a colour hint: "taxi" → yellow car), the synonym table (0.95),
//! else sentence-embedding similarity between the noun and every label name. Below
//! [`MATCH_THRESHOLD`] there is no such object. Each matched label brings the labels a detector
//! confuses it with (near misses: cow for horse) at a lower score.
//!
//! The table is there for words the embedding gets wrong: "telly" (WordPiece splits it into
//! "tell" "##y"; nearest label: donut), "bag" (backpack before handbag), "ball" (the COCO label is
//! "sports ball"), and category words ("fruit") that mean several labels.

use serde::Serialize;

use super::kinds::{self, KIND_ALTERNATIVE, KIND_SCORE, NEAR_MISS_FACTOR};
use crate::embed::{cosine, Embedder};
use crate::error::Result;

/// Lowest embedding similarity that still names a label. all-MiniLM-L6-v2 scores right matches
/// from 0.68 ("table" → dining table) up; wrong best matches ("soda can" → bottle 0.42,
/// "unicorn" → horse) stay below 0.6.
pub const MATCH_THRESHOLD: f32 = 0.6;
/// Labels within this much of the best embedding match are kept as alternatives.
const ALTERNATIVE_MARGIN: f32 = 0.08;
pub const SYNONYM_SCORE: f32 = 0.95;

/// word → COCO labels it means. Words that are labels themselves are not listed.
pub const SYNONYMS: &[(&str, &[&str])] = &[
    ("mug", &["cup"]),
    ("coffee mug", &["cup"]),
    ("teacup", &["cup"]),
    ("sofa", &["couch"]),
    ("settee", &["couch"]),
    ("automobile", &["car"]),
    ("auto", &["car"]),
    // also in kinds::KINDS (with its colour); kept here for the store's search words
    ("taxi", &["car"]),
    ("telly", &["tv"]),
    ("television", &["tv"]),
    ("monitor", &["tv"]),
    ("screen", &["tv"]),
    ("bag", &["handbag", "backpack", "suitcase"]),
    ("purse", &["handbag"]),
    ("rucksack", &["backpack"]),
    ("luggage", &["suitcase"]),
    ("ball", &["sports ball"]),
    ("football", &["sports ball"]),
    ("soccer ball", &["sports ball"]),
    ("basketball", &["sports ball"]),
    ("man", &["person"]),
    ("woman", &["person"]),
    ("boy", &["person"]),
    ("girl", &["person"]),
    ("child", &["person"]),
    ("kid", &["person"]),
    ("guy", &["person"]),
    ("lady", &["person"]),
    ("player", &["person"]),
    ("pedestrian", &["person"]),
    ("human", &["person"]),
    ("someone", &["person"]),
    ("puppy", &["dog"]),
    ("kitty", &["cat"]),
    ("kitten", &["cat"]),
    ("bike", &["bicycle"]),
    ("motorbike", &["motorcycle"]),
    ("phone", &["cell phone"]),
    ("cellphone", &["cell phone"]),
    ("mobile", &["cell phone"]),
    ("smartphone", &["cell phone"]),
    ("table", &["dining table"]),
    ("desk", &["dining table"]),
    ("plant", &["potted plant"]),
    ("houseplant", &["potted plant"]),
    ("glass", &["wine glass", "cup"]),
    ("computer", &["laptop"]),
    ("notebook", &["laptop"]),
    ("remote control", &["remote"]),
    ("fridge", &["refrigerator"]),
    ("lorry", &["truck"]),
    ("plane", &["airplane"]),
    ("aeroplane", &["airplane"]),
    ("ship", &["boat"]),
    ("doughnut", &["donut"]),
    ("hotdog", &["hot dog"]),
    ("teddy", &["teddy bear"]),
    ("pot", &["potted plant", "vase"]),
    ("fruit", &["apple", "orange", "banana"]),
    (
        "animal",
        &[
            "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe",
        ],
    ),
    (
        "vehicle",
        &["car", "truck", "bus", "motorcycle", "bicycle", "train"],
    ),
    ("seat", &["chair", "couch", "bench"]),
    ("sweet", &["sports ball", "orange", "apple", "donut"]),
    ("candy", &["sports ball", "orange", "apple", "donut"]),
];

/// How a label was matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchKind {
    Exact,
    Synonym,
    /// Through the kinds table ("van" → truck).
    Kind,
    Embedding,
    /// A label the detector confuses with the one meant (horse → cow).
    NearMiss,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelMatch {
    pub label: String,
    pub score: f32,
    pub how: MatchKind,
}

/// The answer for one noun: the labels it may mean (best first), or the closest miss.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Matches {
    pub noun: String,
    pub labels: Vec<LabelMatch>,
    /// When nothing matched: the nearest label and its similarity, for the "no such object" reason.
    pub closest: Option<(String, f32)>,
    /// The colour the word implies ("taxi" → yellow) and whether it is required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub colour_hint: Option<(&'static str, bool)>,
}

impl Matches {
    pub fn score_of(&self, label: &str) -> f32 {
        self.labels
            .iter()
            .find(|m| m.label == label)
            .map_or(0.0, |m| m.score)
    }
}

/// Maps nouns to a detector's labels.
pub struct LabelMatcher {
    labels: Vec<String>,
    embedder: Option<Embedder>,
    label_embeddings: Vec<Vec<f32>>,
}

impl std::fmt::Debug for LabelMatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelMatcher")
            .field("labels", &self.labels.len())
            .field("embedder", &self.embedder)
            .finish()
    }
}

impl LabelMatcher {
    /// With an embedder, label names are embedded once here. Without one, only the labels and the
    /// synonym table match.
    pub fn new(labels: &[impl AsRef<str>], mut embedder: Option<Embedder>) -> Result<Self> {
        let labels: Vec<String> = labels.iter().map(|l| l.as_ref().to_string()).collect();
        let mut label_embeddings = Vec::new();
        if let Some(e) = embedder.as_mut() {
            for l in &labels {
                label_embeddings.push(e.embed(l)?);
            }
        }
        Ok(LabelMatcher {
            labels,
            embedder,
            label_embeddings,
        })
    }

    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Every word the parser should recognise as a noun: labels, their words, synonym keys.
    pub fn vocabulary(&self) -> Vec<String> {
        let mut v: Vec<String> = self.labels.clone();
        for l in &self.labels {
            v.extend(l.split(' ').map(str::to_string));
        }
        v.extend(SYNONYMS.iter().map(|(w, _)| w.to_string()));
        v.extend(kinds::KINDS.iter().map(|k| k.word.to_string()));
        v
    }

    pub fn has_embedder(&self) -> bool {
        self.embedder.is_some()
    }

    /// The labels `noun` may mean, with their near misses.
    pub fn match_noun(&mut self, noun: &str) -> Result<Matches> {
        let mut out = self.match_direct(noun)?;
        self.add_near_misses(&mut out);
        Ok(out)
    }

    /// Labels a detector confuses with the matched ones, each below the label it stands in for.
    fn add_near_misses(&self, m: &mut Matches) {
        let mut extra: Vec<LabelMatch> = Vec::new();
        // not for an embedding match: that is already a guess, and a guess's stand-in is too far
        for l in m.labels.iter().filter(|l| {
            matches!(
                l.how,
                MatchKind::Exact | MatchKind::Synonym | MatchKind::Kind
            )
        }) {
            for near in kinds::near_misses(&l.label) {
                let score = l.score * NEAR_MISS_FACTOR;
                let known = self.labels.iter().any(|x| x == near);
                let seen = m.labels.iter().chain(&extra).any(|x| x.label == near);
                if known && !seen {
                    extra.push(LabelMatch {
                        label: near.to_string(),
                        score,
                        how: MatchKind::NearMiss,
                    });
                }
            }
        }
        m.labels.extend(extra);
    }

    /// The labels `noun` names: itself, the kinds table, the synonym table, the embedding.
    fn match_direct(&mut self, noun: &str) -> Result<Matches> {
        let noun = noun.trim().to_lowercase();
        let mut out = Matches {
            noun: noun.clone(),
            labels: Vec::new(),
            closest: None,
            colour_hint: None,
        };
        if self.labels.contains(&noun) {
            out.labels.push(LabelMatch {
                label: noun.clone(),
                score: 1.0,
                how: MatchKind::Exact,
            });
            return Ok(out);
        }
        if let Some(k) = kinds::kind_of(&noun) {
            for (i, t) in k.labels.iter().enumerate() {
                if self.labels.iter().any(|l| l == t) {
                    out.labels.push(LabelMatch {
                        label: t.to_string(),
                        // the first label is what such a thing usually is ("van": truck)
                        score: KIND_SCORE * if i == 0 { 1.0 } else { KIND_ALTERNATIVE },
                        how: MatchKind::Kind,
                    });
                }
            }
            if !out.labels.is_empty() {
                out.colour_hint = k.colour.map(|c| (c, k.colour_required));
                return Ok(out);
            }
        }
        if let Some((_, targets)) = SYNONYMS.iter().find(|(w, _)| *w == noun) {
            for (i, t) in targets.iter().enumerate() {
                if self.labels.iter().any(|l| l == t) {
                    out.labels.push(LabelMatch {
                        label: t.to_string(),
                        // the first meaning is the usual one
                        score: SYNONYM_SCORE - 0.02 * i as f32,
                        how: MatchKind::Synonym,
                    });
                }
            }
            if !out.labels.is_empty() {
                return Ok(out);
            }
        }
        let by_embedding = self.match_by_embedding(&noun)?;
        out.labels = by_embedding.labels;
        out.closest = by_embedding.closest;
        Ok(out)
    }

    /// The embedding side alone (no table): labels whose names are similar enough to `noun`.
    pub fn match_by_embedding(&mut self, noun: &str) -> Result<Matches> {
        let mut out = Matches {
            noun: noun.to_string(),
            labels: Vec::new(),
            closest: None,
            colour_hint: None,
        };
        let Some(e) = self.embedder.as_mut() else {
            return Ok(out);
        };
        let v = e.embed(noun)?;
        let mut scored: Vec<(usize, f32)> = self
            .label_embeddings
            .iter()
            .enumerate()
            .map(|(i, le)| (i, cosine(&v, le)))
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        let Some(&(_, best)) = scored.first() else {
            return Ok(out);
        };
        if best < MATCH_THRESHOLD {
            out.closest = Some((self.labels[scored[0].0].clone(), best));
            return Ok(out);
        }
        for (i, s) in scored {
            if s < MATCH_THRESHOLD || s < best - ALTERNATIVE_MARGIN {
                break;
            }
            out.labels.push(LabelMatch {
                label: self.labels[i].clone(),
                score: s,
                how: MatchKind::Embedding,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_synonyms_without_an_embedder() {
        let mut m =
            LabelMatcher::new(&["cup", "couch", "tv", "sports ball", "handbag"], None).unwrap();
        let r = m.match_noun("cup").unwrap();
        assert_eq!(r.labels[0].label, "cup");
        assert_eq!(r.labels[0].how, MatchKind::Exact);
        let r = m.match_noun("telly").unwrap();
        assert_eq!(r.labels[0].label, "tv");
        assert_eq!(r.labels[0].score, SYNONYM_SCORE);
        // "bag" names three labels; only those this detector has are kept
        let r = m.match_noun("bag").unwrap();
        assert_eq!(r.labels.len(), 1);
        assert_eq!(r.labels[0].label, "handbag");
        assert!(m.match_noun("unicorn").unwrap().labels.is_empty());
    }

    fn coco_with_embedder() -> LabelMatcher {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let labels: Vec<String> = std::fs::read_to_string(dir.join("tests/fixtures/coco.txt"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        let m = crate::embed::EmbeddingManifest::load(&dir.join("models/minilm-l6")).unwrap();
        LabelMatcher::new(&labels, Some(Embedder::load(&m).unwrap())).unwrap()
    }

    #[test]
    fn nouns_map_to_coco_labels_with_scores() {
        let mut m = coco_with_embedder();
        // the embedding alone gets these right, with a margin over the threshold
        for (noun, want) in [
            ("mug", "cup"),
            ("sofa", "couch"),
            ("automobile", "car"),
            ("hound", "dog"),
        ] {
            let r = m.match_by_embedding(noun).unwrap();
            assert_eq!(r.labels[0].label, want, "{noun}: {r:?}");
            assert!(r.labels[0].score >= MATCH_THRESHOLD, "{noun}: {r:?}");
            assert_eq!(r.labels[0].how, MatchKind::Embedding);
        }
        // "telly" needs the table: the embedding's best guess is wrong
        let r = m.match_by_embedding("telly").unwrap();
        assert_ne!(r.labels.first().map(|l| l.label.as_str()), Some("tv"));
        let r = m.match_noun("telly").unwrap();
        assert_eq!(
            (r.labels[0].label.as_str(), r.labels[0].how),
            ("tv", MatchKind::Synonym)
        );
        assert!(r.labels[0].score > 0.9);
        // the full matcher, each with a score
        for (noun, want) in [
            ("mug", "cup"),
            ("sofa", "couch"),
            ("automobile", "car"),
            ("telly", "tv"),
        ] {
            let r = m.match_noun(noun).unwrap();
            assert_eq!(r.labels[0].label, want);
            assert!(r.labels[0].score > MATCH_THRESHOLD);
        }
        // no such object: nothing above the threshold, the closest miss reported
        for noun in ["unicorn", "soda can"] {
            let r = m.match_noun(noun).unwrap();
            assert!(r.labels.is_empty(), "{noun}: {r:?}");
            let (_, s) = r.closest.unwrap();
            assert!(s < MATCH_THRESHOLD);
        }
    }
}
