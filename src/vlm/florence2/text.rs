//! Florence-2's text side: task tokens → the prompts its processor writes, the BART tokenizer,
//! and streaming detokenisation.

use std::path::Path;

use tokenizers::Tokenizer;

use super::postprocess::clean_text;
use crate::vlm::VlmError;

/// Tasks whose token must be the whole prompt, and the question each stands for (the
/// Florence-2 processor's table).
const TASKS_WITHOUT_INPUT: [(&str, &str); 8] = [
    ("<OCR>", "What is the text in the image?"),
    (
        "<OCR_WITH_REGION>",
        "What is the text in the image, with regions?",
    ),
    ("<CAPTION>", "What does the image describe?"),
    (
        "<DETAILED_CAPTION>",
        "Describe in detail what is shown in the image.",
    ),
    (
        "<MORE_DETAILED_CAPTION>",
        "Describe with a paragraph what is shown in the image.",
    ),
    (
        "<OD>",
        "Locate the objects with category name in the image.",
    ),
    (
        "<DENSE_REGION_CAPTION>",
        "Locate the objects in the image, with their descriptions.",
    ),
    (
        "<REGION_PROPOSAL>",
        "Locate the region proposals in the image.",
    ),
];

/// Tasks followed by text, with `{input}` replaced by that text.
const TASKS_WITH_INPUT: [(&str, &str); 7] = [
    (
        "<CAPTION_TO_PHRASE_GROUNDING>",
        "Locate the phrases in the caption: {input}",
    ),
    (
        "<REFERRING_EXPRESSION_SEGMENTATION>",
        "Locate {input} in the image with mask",
    ),
    (
        "<REGION_TO_SEGMENTATION>",
        "What is the polygon mask of region {input}",
    ),
    (
        "<OPEN_VOCABULARY_DETECTION>",
        "Locate {input} in the image.",
    ),
    ("<REGION_TO_CATEGORY>", "What is the region {input}?"),
    (
        "<REGION_TO_DESCRIPTION>",
        "What does the region {input} describe?",
    ),
    ("<REGION_TO_OCR>", "What text is in the region {input}?"),
];

/// The task token a prompt starts with, if any (used to pick the post-processing).
pub fn task_of(prompt: &str) -> Option<&'static str> {
    TASKS_WITHOUT_INPUT
        .iter()
        .chain(TASKS_WITH_INPUT.iter())
        .map(|(t, _)| *t)
        .find(|t| prompt.contains(t))
}

/// The text the model reads for `prompt`: a task token becomes its question, other text is
/// used as written. Mirrors `Florence2Processor._construct_prompts`.
pub fn construct_prompt(prompt: &str) -> Result<String, VlmError> {
    for (task, question) in TASKS_WITHOUT_INPUT {
        if prompt.contains(task) {
            if prompt != task {
                return Err(VlmError::Input(format!(
                    "task token {task} must be the whole prompt, got {prompt:?}"
                )));
            }
            return Ok(question.to_string());
        }
    }
    for (task, template) in TASKS_WITH_INPUT {
        if prompt.contains(task) {
            let input = prompt.replace(task, "");
            return Ok(template.replace("{input}", input.trim()));
        }
    }
    Ok(prompt.to_string())
}

pub struct TextCodec {
    tokenizer: Tokenizer,
}

impl std::fmt::Debug for TextCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextCodec").finish_non_exhaustive()
    }
}

impl TextCodec {
    pub fn load(dir: &Path) -> Result<TextCodec, VlmError> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(VlmError::Tokenizer {
                path,
                reason: "missing".into(),
            });
        }
        let tokenizer = Tokenizer::from_file(&path).map_err(|e| VlmError::Tokenizer {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(TextCodec { tokenizer })
    }

    /// Encoder text ids: `<s>` + the constructed prompt + `</s>`, as the processor builds them.
    pub fn prompt_ids(&self, prompt: &str) -> Result<Vec<u32>, VlmError> {
        let text = format!("<s>{}</s>", construct_prompt(prompt)?);
        let enc = self
            .tokenizer
            .encode(text.as_str(), false)
            .map_err(|e| VlmError::Input(format!("cannot tokenize prompt: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Decoded text with special tokens kept (`<loc_N>` are special).
    pub fn decode_raw(&self, ids: &[u32]) -> Result<String, VlmError> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| VlmError::Run {
                stage: "detokenize",
                reason: e.to_string(),
            })
    }
}

/// Turns a growing id list into text increments. Byte-level BPE can end on half a UTF-8
/// character; that tail is held back until the next token completes it.
#[derive(Debug, Default)]
pub struct Streamer {
    emitted: String,
}

impl Streamer {
    /// The new text since the last call, given all ids so far.
    pub fn push(&mut self, codec: &TextCodec, ids: &[u32]) -> Result<String, VlmError> {
        let text = clean_text(&codec.decode_raw(ids)?);
        if text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        Ok(self.advance(text))
    }

    /// Whatever is left once generation ends.
    pub fn finish(&mut self, codec: &TextCodec, ids: &[u32]) -> Result<String, VlmError> {
        let text = clean_text(&codec.decode_raw(ids)?);
        Ok(self.advance(text))
    }

    fn advance(&mut self, text: String) -> String {
        let piece = match text.strip_prefix(self.emitted.as_str()) {
            Some(rest) => rest.to_string(),
            // Trimming can change the prefix (leading spaces): show the rest from the first
            // differing character.
            None => {
                let common = text
                    .char_indices()
                    .zip(self.emitted.chars())
                    .take_while(|((_, a), b)| a == b)
                    .last()
                    .map_or(0, |((i, a), _)| i + a.len_utf8());
                text[common..].to_string()
            }
        };
        self.emitted = text;
        piece
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_as_the_processor_writes_them() {
        assert_eq!(
            construct_prompt("<CAPTION>").unwrap(),
            "What does the image describe?"
        );
        assert_eq!(
            construct_prompt("<CAPTION_TO_PHRASE_GROUNDING> a person ").unwrap(),
            "Locate the phrases in the caption: a person"
        );
        assert_eq!(
            construct_prompt("<OPEN_VOCABULARY_DETECTION>red car").unwrap(),
            "Locate red car in the image."
        );
        assert_eq!(
            construct_prompt("Is the path clear?").unwrap(),
            "Is the path clear?"
        );
        assert!(construct_prompt("<OD> and more").is_err());
        assert_eq!(task_of("<OD>"), Some("<OD>"));
        assert_eq!(task_of("hello"), None);
    }
}
