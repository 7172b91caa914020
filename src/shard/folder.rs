//! A folder of images as a shard: every image (jpg, jpeg, png, webp, any case) is a sample, with
//! the same-named `.txt` / `.json` beside it as extra members. Files are mapped one at a time
//! when their bytes are asked for.
//!
//! Rules: the walk is recursive and sorted, so the index is the same on every run. The key is the
//! file's path relative to the folder, '/'-separated, without its last extension (`a/cat.2.jpg`
//! → key `a/cat.2`, ext `jpg`): unlike tar shards, where WebDataset cuts at the first '.', image
//! folders often have dots in their names and pair `x.y.jpg` with `x.y.txt`. Extensions are
//! lower-cased. Hidden files and folders (name starting with '.') are skipped, as are symlinks to
//! folders (they can make cycles) and sidecars with no image. Files that cannot be listed or opened
//! become `io` problems; two files differing only in the case of their extension are a
//! `duplicate-member` (the first in sorted order is kept).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::{MemberData, MemberEntry, SampleEntry};
use crate::error::{Error, Result};
use crate::problems::Problem;

/// Extensions (lower case) that make a sample.
pub const IMAGE_EXTS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];
/// Extensions (lower case) kept as extra members of the image with the same stem.
pub const SIDECAR_EXTS: [&str; 2] = ["txt", "json"];

/// A folder of images with optional same-named .txt/.json.
pub struct FolderShard {
    path: PathBuf,
    /// Every member's file; `MemberEntry::file` indexes this.
    files: Vec<PathBuf>,
    samples: Vec<SampleEntry>,
    problems: Vec<Problem>,
}

/// A file found by the walk, before grouping.
struct Found {
    ext: String,
    path: PathBuf,
    len: u64,
}

impl FolderShard {
    /// Lists and indexes a folder. Errors only when the folder itself cannot be read; files and
    /// subfolders that cannot be read are recorded as problems.
    pub fn open(path: &Path) -> Result<FolderShard> {
        let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if !meta.is_dir() {
            let e = std::io::Error::new(ErrorKind::NotADirectory, "not a folder");
            return Err(Error::io(path, e));
        }
        let entries = fs::read_dir(path).map_err(|e| Error::io(path, e))?;
        let mut shard = FolderShard {
            path: path.to_path_buf(),
            files: Vec::new(),
            samples: Vec::new(),
            problems: Vec::new(),
        };
        let mut found = BTreeMap::new();
        shard.walk(entries, path, "", &mut found);
        shard.group(found);
        if shard.samples.is_empty() {
            let message = format!("no images ({}) in the folder", IMAGE_EXTS.join(", "));
            shard.problem(None, "empty-shard", message);
        }
        Ok(shard)
    }

    /// Path of the folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Samples in key order.
    pub fn samples(&self) -> &[SampleEntry] {
        &self.samples
    }

    /// Problems found while listing.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The files that members refer to (by [`MemberEntry::file`]).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Maps one member's file (an empty file gives [`MemberData::Empty`]: it cannot be mapped).
    ///
    /// As with tar shards, the file must not be modified while its mapping is alive.
    pub fn member_data(&self, m: &MemberEntry) -> Result<MemberData<'_>> {
        let Some(path) = usize::try_from(m.file).ok().and_then(|i| self.files.get(i)) else {
            let message = format!("member file index {} is not in this folder's list", m.file);
            let e = std::io::Error::new(ErrorKind::InvalidInput, message);
            return Err(Error::io(&self.path, e));
        };
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len == 0 {
            return Ok(MemberData::Empty);
        }
        // SAFETY: read-only private mapping; files are not modified while being read (see above).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        Ok(MemberData::Mapped(map))
    }

    fn problem(&mut self, key: Option<&str>, kind: &'static str, message: String) {
        self.problems.push(Problem {
            shard: self.path.clone(),
            offset: None,
            key: key.map(str::to_owned),
            kind,
            message,
        });
    }

    /// Collects the image and sidecar files under one folder into `found` (key → files).
    fn walk(
        &mut self,
        entries: fs::ReadDir,
        dir: &Path,
        rel: &str,
        found: &mut BTreeMap<String, Vec<Found>>,
    ) {
        let mut listed = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => listed.push(entry),
                Err(e) => {
                    let message = format!("cannot list {}: {e}", dir.display());
                    self.problem(None, "io", message);
                }
            }
        }
        listed.sort_by_key(|e| e.file_name());
        for entry in listed {
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                let message = format!("{}: name is not UTF-8; skipped", path.display());
                self.problem(None, "io", message);
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            // `metadata` follows symlinks; `file_type` tells whether this entry is one.
            let (is_link, meta) = match entry.file_type() {
                Ok(t) => (t.is_symlink(), fs::metadata(&path)),
                Err(e) => (false, Err(e)),
            };
            let meta = match meta {
                Ok(meta) => meta,
                Err(e) => {
                    self.problem(None, "io", format!("{}: {e}", path.display()));
                    continue;
                }
            };
            let rel_name = if rel.is_empty() {
                name.to_owned()
            } else {
                format!("{rel}/{name}")
            };
            if meta.is_dir() {
                if is_link {
                    continue;
                }
                match fs::read_dir(&path) {
                    Ok(sub) => self.walk(sub, &path, &rel_name, found),
                    Err(e) => {
                        let message = format!("cannot list {}: {e}", path.display());
                        self.problem(None, "io", message);
                    }
                }
                continue;
            }
            let Some((stem, ext)) = rel_name.rsplit_once('.') else {
                continue;
            };
            let ext = ext.to_lowercase();
            if stem.is_empty() || stem.ends_with('/') {
                continue;
            }
            if !IMAGE_EXTS.contains(&ext.as_str()) && !SIDECAR_EXTS.contains(&ext.as_str()) {
                continue;
            }
            // Opening now finds unreadable files at listing time rather than mid-run.
            if let Err(e) = File::open(&path) {
                let message = format!("{}: {e}; skipped", path.display());
                self.problem(Some(stem), "io", message);
                continue;
            }
            let len = meta.len();
            found
                .entry(stem.to_owned())
                .or_default()
                .push(Found { ext, path, len });
        }
    }

    /// Turns the found files into samples: one per key with at least one image.
    fn group(&mut self, found: BTreeMap<String, Vec<Found>>) {
        for (key, files) in found {
            if !files.iter().any(|f| IMAGE_EXTS.contains(&f.ext.as_str())) {
                continue;
            }
            let mut members: Vec<MemberEntry> = Vec::with_capacity(files.len());
            for f in files {
                if members.iter().any(|m| m.ext == f.ext) {
                    let message = format!(
                        "{}: a second `{}` file for this key; the first one is kept",
                        f.path.display(),
                        f.ext
                    );
                    self.problem(Some(&key), "duplicate-member", message);
                    continue;
                }
                let Ok(index) = u32::try_from(self.files.len()) else {
                    let message = "more than 2^32 files; the rest of the folder is ignored";
                    self.problem(None, "io", message.into());
                    return;
                };
                self.files.push(f.path);
                members.push(MemberEntry {
                    ext: f.ext,
                    offset: 0,
                    len: f.len,
                    file: index,
                });
            }
            self.samples.push(SampleEntry {
                key,
                offset: 0,
                members,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, data: &[u8]) {
        let path = dir.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }

    fn bytes(shard: &FolderShard, m: &MemberEntry) -> Vec<u8> {
        shard.member_data(m).unwrap().to_vec()
    }

    #[test]
    fn one_sample_per_image_with_its_sidecars() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "a.jpg", b"JPEG a");
        write(d, "a.txt", b"caption a");
        write(d, "a.json", b"{\"w\":1}");
        write(d, "sub/b.PNG", b"PNG b");
        write(d, "sub/b.txt", b"caption b");
        write(d, "sub/deeper/c.2.webp", b"");
        write(d, "sub/deeper/c.2.txt", b"c");
        write(d, "lonely.txt", b"no image");
        write(d, "notes.md", b"ignored");
        write(d, ".hidden.jpg", b"hidden");
        write(d, ".git/x.jpg", b"hidden dir");
        write(d, "d.JPEG", b"JPEG d");
        let shard = FolderShard::open(d).unwrap();
        assert_eq!(shard.problems(), &[]);
        let summary: Vec<(&str, Vec<&str>)> = shard
            .samples()
            .iter()
            .map(|s| {
                (
                    s.key.as_str(),
                    s.members.iter().map(|m| m.ext.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("a", vec!["jpg", "json", "txt"]),
                ("d", vec!["jpeg"]),
                ("sub/b", vec!["png", "txt"]),
                ("sub/deeper/c.2", vec!["txt", "webp"]),
            ]
        );
        let a = &shard.samples()[0];
        assert_eq!(bytes(&shard, a.member("jpg").unwrap()), b"JPEG a");
        assert_eq!(bytes(&shard, a.member("txt").unwrap()), b"caption a");
        assert_eq!(a.member("json").unwrap().len, 7);
        let b = &shard.samples()[2];
        assert_eq!(bytes(&shard, b.member("png").unwrap()), b"PNG b");
        let c = &shard.samples()[3];
        let webp = c.member("webp").unwrap();
        assert!(matches!(
            shard.member_data(webp).unwrap(),
            MemberData::Empty
        ));
        assert_eq!(
            shard.files()[webp.file as usize],
            d.join("sub/deeper/c.2.webp")
        );
        // An index from elsewhere is an error, not a panic.
        let foreign = MemberEntry {
            ext: "jpg".into(),
            offset: 0,
            len: 0,
            file: 999,
        };
        assert!(shard.member_data(&foreign).is_err());
    }

    #[test]
    fn duplicate_extensions_and_unreadable_entries_are_problems() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write(d, "x.JPG", b"upper");
        write(d, "x.jpg", b"lower");
        #[cfg(unix)]
        std::os::unix::fs::symlink(d.join("missing.jpg"), d.join("broken.jpg")).unwrap();
        let shard = FolderShard::open(d).unwrap();
        let kinds: Vec<_> = shard.problems().iter().map(|p| p.kind).collect();
        #[cfg(unix)]
        assert_eq!(kinds, vec!["io", "duplicate-member"]);
        #[cfg(unix)]
        assert!(shard.problems()[0].message.contains("broken.jpg"));
        assert_eq!(shard.problems().last().unwrap().key.as_deref(), Some("x"));
        assert_eq!(shard.samples().len(), 1);
        let x = &shard.samples()[0];
        assert_eq!(bytes(&shard, &x.members[0]), b"upper");
    }

    #[test]
    fn empty_folder_and_missing_folder() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "only.txt", b"t");
        let shard = FolderShard::open(dir.path()).unwrap();
        assert_eq!(shard.samples(), &[]);
        let kinds: Vec<_> = shard.problems().iter().map(|p| p.kind).collect();
        assert_eq!(kinds, vec!["empty-shard"]);
        assert!(matches!(
            FolderShard::open(&dir.path().join("nope")),
            Err(Error::Io { .. })
        ));
        assert!(matches!(
            FolderShard::open(&dir.path().join("only.txt")),
            Err(Error::Io { .. })
        ));
    }
}
