//! The `vlmprep` command line: parses flags, calls the library, prints.
fn main() {}
