//! Curation: per-sample signals (exact hash, perceptual hash, SigLIP embeddings and score), the
//! dedup tiers (exact, perceptual, semantic), the filters, and the manifest that records what is
//! kept and why.
//!
//! Each tier turns pairs of duplicate samples into explicit groups ([`groups`]): connected
//! components of the "is a duplicate of" graph, from which one member is kept by a rule the user
//! picks. The tiers only find pairs; the group and keep logic is shared.

pub mod crash_point;
pub mod dedup;
pub mod exact;
pub mod filters;
pub mod groups;
pub mod manifest;
pub mod perceptual;
pub mod phash;
pub mod phash_tables;
pub mod planted;
pub mod reference;
pub mod rewrite;
pub mod semantic;
pub mod signals;
