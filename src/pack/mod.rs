//! Packing: what each sample's token sequence is ([`sample_text`], [`sequence`]) and, elsewhere, how
//! samples are packed into fixed-length sequences.

pub mod sample_text;
pub mod sequence;
