//! Subcommands of the `vlmprep` binary that live outside main.rs: flags, defaults and printed
//! summaries only; the work is in the library.

pub mod curate;
pub mod device;
pub mod embed;
pub mod packing;
pub mod serve;
