//! Models and the text side of them: the SigLIP towers, weights loading, and tokenizers.

pub mod bpe;
mod gpt2_split;
pub mod siglip;
pub mod spiece;
pub mod tokenizer;
pub mod weights;
