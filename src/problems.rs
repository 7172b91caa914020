//! Problems found in a pool (bad shards, bad members, images that fail to probe or decode): each one
//! names where it happened, they are counted by kind, and the run goes on with the rest.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// One problem, located as precisely as the reader knows.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The shard (tar file or folder) it was found in.
    pub shard: PathBuf,
    /// Byte offset in the shard of the header or member concerned, when there is one.
    pub offset: Option<u64>,
    /// The sample key, when known.
    pub key: Option<String>,
    /// Short machine-readable category, e.g. `bad-checksum`, `decode`; used for counting.
    pub kind: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.shard.display())?;
        if let Some(offset) = self.offset {
            write!(f, " @ byte {offset}")?;
        }
        if let Some(key) = &self.key {
            write!(f, " [{key}]")?;
        }
        write!(f, ": {}: {}", self.kind, self.message)
    }
}

/// A running list of problems with counts per kind.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ProblemLog {
    /// Every problem, in the order found.
    pub problems: Vec<Problem>,
}

impl ProblemLog {
    /// Records one problem.
    pub fn push(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    /// Appends all problems of another log.
    pub fn extend(&mut self, other: impl IntoIterator<Item = Problem>) {
        self.problems.extend(other);
    }

    /// Number of problems recorded.
    pub fn len(&self) -> usize {
        self.problems.len()
    }

    /// True when nothing went wrong.
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// Counts per kind, sorted by kind.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for p in &self.problems {
            *counts.entry(p.kind).or_insert(0) += 1;
        }
        counts
    }
}
