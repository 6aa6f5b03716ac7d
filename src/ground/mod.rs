//! Instruction grounding (placeholder while the embedding step is built).
