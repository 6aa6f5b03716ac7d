//! Florence-2's text side: task tokens → the prompts its processor writes, and how its answers
//! are tokenized and detokenized with the shared [`Tokenizer`] and [`TextStream`].

use super::postprocess::clean_text;
use crate::vlm::contract::VlmError;
use crate::vlm::tokenize::{Special, TextStream, Tokenizer};

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

/// Encoder text ids: `<s>` + the constructed prompt + `</s>`, as the processor builds them (the
/// markers are written into the text, so the tokenizer adds none of its own).
pub fn prompt_ids(tok: &Tokenizer, prompt: &str) -> Result<Vec<u32>, VlmError> {
    tok.encode_plain(&format!("<s>{}</s>", construct_prompt(prompt)?))
}

/// Decoded text with special tokens kept: `<loc_N>` are special and carry the boxes.
pub fn decode_raw(tok: &Tokenizer, ids: &[u32]) -> Result<String, VlmError> {
    tok.decode_with(ids, Special::Keep)
}

/// Streams answer text as the final [`Generation`](crate::vlm::Generation) text reads: special
/// tokens kept, then [`clean_text`].
pub fn text_stream() -> TextStream {
    TextStream::with(Special::Keep, clean_text)
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
