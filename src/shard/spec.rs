//! Expansion of `--input` specs into shard sources: plain paths (tar files or image folders),
//! globs (`data/*.tar`) and WebDataset brace ranges and lists (`pool-{000000..000099}.tar`,
//! `{train,val}/*.tar`).
//!
//! Braces are expanded first, the way Python's `braceexpand` (used by WebDataset) does; each
//! result is then a path if it exists, else a glob if it has glob characters (`*`, `?`, `[`).
//! Every result must match something: a shard missing from a range is an error, not a silent gap
//! in the training data.

use std::collections::HashSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Most paths one spec may expand to before globbing: a guard against a typo such as
/// `{0..999999999}` allocating gigabytes (a billion-image pool is ~100k shards).
pub const MAX_EXPANSIONS: usize = 1_000_000;

/// Where a shard comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardSource {
    /// A tar file.
    Tar(PathBuf),
    /// A folder of images.
    Folder(PathBuf),
}

impl ShardSource {
    /// The path of the tar file or folder.
    pub fn path(&self) -> &Path {
        match self {
            ShardSource::Tar(p) | ShardSource::Folder(p) => p,
        }
    }
}

/// Expands paths, globs and brace ranges into shard sources: specs in the order given, each
/// glob's matches sorted, a path seen twice (after resolving `.`/`..`/symlinks) kept once, at its
/// first place. A directory becomes [`ShardSource::Folder`], anything else [`ShardSource::Tar`].
///
/// Errors: [`Error::InputSpec`] for a spec (or a brace expansion of it) that matches nothing, bad
/// brace or glob syntax, or too many expansions; [`Error::Io`] when a path cannot be examined.
pub fn expand_inputs(specs: &[String]) -> Result<Vec<ShardSource>> {
    let mut sources = Vec::new();
    let mut seen = HashSet::new();
    for spec in specs {
        let bad = |reason: String| Error::InputSpec {
            spec: spec.clone(),
            reason,
        };
        if spec.is_empty() {
            return Err(bad("empty input spec".into()));
        }
        let items = expand_braces(spec).map_err(bad)?;
        let mut missing = Vec::new();
        for item in &items {
            let matches = match_item(item).map_err(|e| match e {
                ItemError::Glob(reason) => bad(reason),
                ItemError::Io(e) => e,
            })?;
            if matches.is_empty() {
                missing.push(item.as_str());
            }
            for (path, is_dir) in matches {
                let identity = fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
                if seen.insert(identity) {
                    sources.push(if is_dir {
                        ShardSource::Folder(path)
                    } else {
                        ShardSource::Tar(path)
                    });
                }
            }
        }
        if !missing.is_empty() {
            return Err(bad(describe_missing(spec, &items, &missing)));
        }
    }
    Ok(sources)
}

/// Says which expansions of `spec` matched nothing, naming a few of them.
fn describe_missing(spec: &str, items: &[String], missing: &[&str]) -> String {
    if items.len() == 1 && items[0] == spec {
        return if has_glob_chars(spec) {
            "the glob matches nothing".into()
        } else {
            "no such file or directory".into()
        };
    }
    const SHOWN: usize = 5;
    let mut names: Vec<String> = missing
        .iter()
        .take(SHOWN)
        .map(|m| format!("`{m}`"))
        .collect();
    if missing.len() > SHOWN {
        names.push(format!("and {} more", missing.len() - SHOWN));
    }
    format!(
        "{} of its {} expansions match nothing: {}",
        missing.len(),
        items.len(),
        names.join(", ")
    )
}

enum ItemError {
    Glob(String),
    Io(Error),
}

fn has_glob_chars(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The paths one brace-expanded item names, with whether each is a directory: the item itself
/// when it exists (so names containing `[` still work), else its glob matches, sorted.
fn match_item(item: &str) -> std::result::Result<Vec<(PathBuf, bool)>, ItemError> {
    let path = Path::new(item);
    match fs::metadata(path) {
        Ok(meta) => return Ok(vec![(path.to_path_buf(), meta.is_dir())]),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(ItemError::Io(Error::io(path, e))),
    }
    if !has_glob_chars(item) {
        return Ok(vec![]);
    }
    // Like a shell: `*` neither crosses '/' nor matches hidden files.
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: true,
    };
    let paths = glob::glob_with(item, options)
        .map_err(|e| ItemError::Glob(format!("bad glob `{item}`: {e}")))?;
    let mut matches = Vec::new();
    for entry in paths {
        let path = entry.map_err(|e| {
            let path = e.path().to_path_buf();
            ItemError::Io(Error::io(path, std::io::Error::from(e)))
        })?;
        // A dangling symlink matches the glob but names nothing readable: leave it out.
        if let Ok(meta) = fs::metadata(&path) {
            matches.push((path, meta.is_dir()));
        }
    }
    matches.sort();
    Ok(matches)
}

/// Expands braces as Python's `braceexpand` does: lists `{a,b,c}`, numeric ranges `{0..10}`,
/// `{10..0}`, `{0..10..2}` (zero-padded to the wider end when either end is written with a
/// leading zero: `{000..099}` gives `000`, `001`, …), letter ranges `{a..e}`, nesting, and several
/// braces in one string (all combinations, leftmost varying slowest). A brace group that is
/// neither a list nor a range stays literal. An unclosed `{` is an error.
pub fn expand_braces(spec: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    expand_into(spec, "", &mut out)?;
    Ok(out)
}

/// Appends `prefix` + each expansion of `s` to `out`.
fn expand_into(s: &str, prefix: &str, out: &mut Vec<String>) -> std::result::Result<(), String> {
    let Some((open, close)) = first_group(s)? else {
        if out.len() >= MAX_EXPANSIONS {
            return Err(format!("expands to more than {MAX_EXPANSIONS} paths"));
        }
        out.push(format!("{prefix}{s}"));
        return Ok(());
    };
    let head = &s[..open];
    let inner = &s[open + 1..close];
    let tail = &s[close + 1..];
    let parts = split_top_level(inner);
    let alternatives: Vec<String> = if parts.len() > 1 {
        let mut alts = Vec::new();
        for part in parts {
            expand_into(part, "", &mut alts)?;
        }
        alts
    } else if let Some(range) = expand_range(inner)? {
        range
    } else {
        let mut alts = Vec::new();
        expand_into(inner, "", &mut alts)?;
        alts.into_iter().map(|a| format!("{{{a}}}")).collect()
    };
    for alt in alternatives {
        expand_into(tail, &format!("{prefix}{head}{alt}"), out)?;
    }
    Ok(())
}

/// Byte positions of the first `{` and its matching `}`, if there is a `{`.
fn first_group(s: &str) -> std::result::Result<Option<(usize, usize)>, String> {
    let Some(open) = s.find('{') else {
        return Ok(None);
    };
    let mut depth = 0usize;
    for (i, c) in s.char_indices().skip_while(|&(i, _)| i < open) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(Some((open, i)));
                }
            }
            _ => {}
        }
    }
    Err(format!(
        "unclosed `{{` at character {}",
        s[..open].chars().count() + 1
    ))
}

/// Splits at commas that are not inside nested braces.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// `a..b` or `a..b..step` with integer or single-letter ends; `None` when `s` is not a range.
fn expand_range(s: &str) -> std::result::Result<Option<Vec<String>>, String> {
    let ends: Vec<&str> = s.split("..").collect();
    let (left, right, step) = match ends.as_slice() {
        [l, r] => (*l, *r, None),
        [l, r, st] => (*l, *r, Some(*st)),
        _ => return Ok(None),
    };
    let step = match step {
        None => 1,
        Some(st) => match st.parse::<i64>() {
            Ok(n) => n.unsigned_abs().max(1),
            Err(_) => return Ok(None),
        },
    };
    if let (Ok(a), Ok(b)) = (left.parse::<i64>(), right.parse::<i64>()) {
        let leading_zero =
            |t: &str| t != "0" && t != "-0" && (t.starts_with('0') || t.starts_with("-0"));
        let width = if leading_zero(left) || leading_zero(right) {
            left.len().max(right.len())
        } else {
            0
        };
        let count = a.abs_diff(b) / step + 1;
        if count > MAX_EXPANSIONS as u64 {
            return Err(format!(
                "range `{{{s}}}` has more than {MAX_EXPANSIONS} values"
            ));
        }
        let values = (0..count).map(|i| {
            // i * step <= |b - a|, so this stays between a and b.
            let delta = i128::from(i) * i128::from(step);
            let v = if a <= b {
                i128::from(a) + delta
            } else {
                i128::from(a) - delta
            };
            format!("{v:0width$}")
        });
        return Ok(Some(values.collect()));
    }
    let letter = |t: &str| {
        let mut chars = t.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if c.is_ascii_alphabetic() => Some(c as u8),
            _ => None,
        }
    };
    // Letters of one case only: between 'Z' and 'a' lie characters no one means.
    if let (Some(a), Some(b)) = (letter(left), letter(right))
        && a.is_ascii_uppercase() == b.is_ascii_uppercase()
    {
        let step = usize::try_from(step).unwrap_or(usize::MAX);
        let letters = (a.min(b)..=a.max(b)).map(char::from);
        // Counting down starts from `a`, the high end.
        let values: Vec<String> = if a <= b {
            letters.step_by(step).map(String::from).collect()
        } else {
            letters.rev().step_by(step).map(String::from).collect()
        };
        return Ok(Some(values));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn braces(s: &str) -> Vec<String> {
        expand_braces(s).unwrap()
    }

    #[test]
    fn brace_ranges_keep_their_padding() {
        assert_eq!(
            braces("pool-{000000..000003}.tar"),
            [
                "pool-000000.tar",
                "pool-000001.tar",
                "pool-000002.tar",
                "pool-000003.tar"
            ]
        );
        assert_eq!(braces("{8..11}"), ["8", "9", "10", "11"]);
        assert_eq!(braces("{08..11}"), ["08", "09", "10", "11"]);
        assert_eq!(braces("{3..0}"), ["3", "2", "1", "0"]);
        assert_eq!(braces("{0..10..4}"), ["0", "4", "8"]);
        assert_eq!(braces("{-01..1}"), ["-01", "000", "001"]);
        assert_eq!(
            braces("{a..c}{C..A}"),
            ["aC", "aB", "aA", "bC", "bB", "bA", "cC", "cB", "cA"]
        );
    }

    #[test]
    fn brace_lists_nesting_and_literals() {
        assert_eq!(
            braces("{train,val}/s-{0..1}.tar"),
            [
                "train/s-0.tar",
                "train/s-1.tar",
                "val/s-0.tar",
                "val/s-1.tar"
            ]
        );
        assert_eq!(braces("x{a,b{1..2},}y"), ["xay", "xb1y", "xb2y", "xy"]);
        assert_eq!(braces("plain.tar"), ["plain.tar"]);
        assert_eq!(braces("odd{name}.tar"), ["odd{name}.tar"]);
        assert_eq!(braces("a}b"), ["a}b"]);
        assert_eq!(braces("{a..C}"), ["{a..C}"]);
        assert_eq!(braces("{a..e..2}"), ["a", "c", "e"]);
        assert_eq!(braces("{e..a..2}"), ["e", "c", "a"]);
        assert_eq!(braces("{1..x}"), ["{1..x}"]);
        assert!(
            expand_braces("pool-{0..3.tar")
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(
            expand_braces("{0..99999999999}")
                .unwrap_err()
                .contains("more than")
        );
        assert!(
            expand_braces("{0..9999}{0..9999}")
                .unwrap_err()
                .contains("more than")
        );
    }

    fn touch(dir: &Path, rel: &str) -> PathBuf {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, b"").unwrap();
        path
    }

    fn spec(dir: &Path, rel: &str) -> String {
        format!("{}/{rel}", dir.display())
    }

    #[test]
    fn paths_globs_and_ranges_in_order_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let p = |rel: &str| d.join(rel);
        touch(d, "data/b.tar");
        touch(d, "data/a.tar");
        touch(d, "data/.hidden.tar");
        touch(d, "data/c.txt");
        touch(d, "pool/pool-000.tar");
        touch(d, "pool/pool-001.tar");
        touch(d, "pool/pool-002.tar");
        touch(d, "imgs/x.jpg");
        let specs = vec![
            spec(d, "pool/pool-{001..002}.tar"),
            spec(d, "data/*.tar"),
            spec(d, "imgs"),
            spec(d, "data/a.tar"),
            spec(d, "pool/../pool/pool-001.tar"),
            spec(d, "pool/pool-000.tar"),
        ];
        let sources = expand_inputs(&specs).unwrap();
        assert_eq!(
            sources,
            vec![
                ShardSource::Tar(p("pool/pool-001.tar")),
                ShardSource::Tar(p("pool/pool-002.tar")),
                ShardSource::Tar(p("data/a.tar")),
                ShardSource::Tar(p("data/b.tar")),
                ShardSource::Folder(p("imgs")),
                ShardSource::Tar(p("pool/pool-000.tar")),
            ]
        );
        assert_eq!(expand_inputs(&[]).unwrap(), vec![]);
    }

    #[test]
    fn a_spec_that_matches_nothing_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        touch(d, "pool-000.tar");
        touch(d, "pool-002.tar");
        let err = |s: String| match expand_inputs(&[s]) {
            Err(Error::InputSpec { spec, reason }) => (spec, reason),
            other => panic!("expected an InputSpec error, got {other:?}"),
        };
        let (s, reason) = err(spec(d, "missing.tar"));
        assert_eq!(s, spec(d, "missing.tar"));
        assert_eq!(reason, "no such file or directory");
        let (_, reason) = err(spec(d, "*.zip"));
        assert_eq!(reason, "the glob matches nothing");
        let (s, reason) = err(spec(d, "pool-{000..002}.tar"));
        assert_eq!(s, spec(d, "pool-{000..002}.tar"));
        assert!(
            reason.starts_with("1 of its 3 expansions match nothing"),
            "{reason}"
        );
        assert!(reason.contains("pool-001.tar"), "{reason}");
        let (_, reason) = err(spec(d, "[.tar"));
        assert!(reason.contains("bad glob"), "{reason}");
        let (_, reason) = err(String::new());
        assert_eq!(reason, "empty input spec");
    }
}
