//! vlmprep: a GPU-native, high-throughput preprocessing runtime for vision-language-model
//! training data. WebDataset shards in; decoded, tiled, normalized images (and later embeddings,
//! dedup decisions and packed sequences) out.
//!
//! Layout: [`shard`] reads pools without copying, [`image`] probes, decodes and tiles,
//! [`backend`] runs batch work on a device (CPU is the reference), [`model`] holds tokenizers,
//! [`pack`] lays out each sample's tokens and packs them, [`pipeline`] wires stages.

pub mod backend;
pub mod curate;
pub mod demo;
pub mod error;
pub mod image;
pub mod model;
pub mod pack;
pub mod pipeline;
pub mod problems;
pub mod serve;
pub mod shard;
pub mod sink;

pub use error::{Error, Result};
