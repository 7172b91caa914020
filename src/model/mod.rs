//! Models and the text side of them: tokenizers (SigLIP towers will live here too).

pub mod bpe;
pub mod tokenizer;
