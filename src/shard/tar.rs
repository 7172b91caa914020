//! WebDataset tar shards: the file is memory-mapped and indexed in one pass into samples whose
//! members are byte ranges of the map, so nothing is copied. A damaged shard is read as far as it
//! can be; every defect becomes a [`Problem`] carrying the byte offset of the header concerned.
//!
//! # What is read
//!
//! - Headers: POSIX ustar (with the 155-byte name prefix), old GNU and v7 (no prefix). Header
//!   checksums are accepted as either the unsigned or the signed byte sum, like GNU tar and Python.
//! - Numeric fields: octal text, or GNU base-256 (high bit of the first byte set) for sizes of
//!   8 GiB and more. Negative base-256 values are a `bad-header`.
//! - GNU long names (`L`) name the next entry; long link names (`K`) are read past and ignored.
//! - pax extended headers (`x`): `path` and `size` override the next entry's header fields
//!   (an empty value means "use the header's field", as POSIX says); other keywords are ignored.
//!   Global pax headers (`g`) are read past and ignored: a global `path` or `size` would give every
//!   later member the same name or length, which no WebDataset writer means (the common `g` is
//!   `git archive`'s `comment=<commit>`).
//! - Regular files (`0`, NUL, `7`) become members. Directories, links, devices and FIFOs carry no
//!   data and are skipped. Unknown typeflags are skipped over their declared size, as Python's
//!   `tarfile` does. Sparse members (old GNU `S`, pax `GNU.sparse.*`) are skipped with a
//!   `bad-header` problem, because their stored bytes are not the file's content.
//!
//! # Samples (WebDataset's rules, from `webdataset.tariterators`)
//!
//! - key = the member path up to the first '.' of its last path component, ext = the rest,
//!   lower-cased (`a/b/x.y.JPG` → key `a/b/x`, ext `y.jpg`). A member whose last component has no
//!   '.', or starts with '.' (hidden files, macOS `._*` resource forks), has no key and is skipped.
//!   (WebDataset's regular expression gives `d/._x.jpg` the odd key `d/`; we skip it instead.)
//! - Metadata members whose first path component is `__name__` are skipped, as WebDataset does.
//! - Consecutive members with the same key form one sample. A key that comes back later is a
//!   `duplicate-key`: the first sample is kept and the later run is dropped. An extension seen
//!   twice in one sample is a `duplicate-member`: the first is kept.
//!
//! # Damage
//!
//! Problem kinds: `truncated`, `bad-checksum`, `past-end`, `not-a-tar`, `empty-shard`,
//! `duplicate-key`, `duplicate-member`, `bad-header`. Every problem has `offset: Some(o)` with
//! `o <= bytes.len()`; `o == bytes.len()` only for a shard that stops without an end-of-archive
//! marker and for a 0-byte shard. A bad header makes the reader scan forward block by block for
//! the next valid header (non-zero block with a correct checksum) and go on from there. A member
//! whose data runs past the end of the file is dropped whole: it is `truncated` when the file
//! looks cut short, `past-end` when its size field is wrong (a valid header, or the end-of-archive
//! blocks, lie inside the region it claims; reading resumes at that header).

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::{MemberEntry, SampleEntry};
use crate::error::{Error, Result};
use crate::problems::Problem;

/// Size of a tar block: headers are one block, data is padded to whole blocks.
const BLOCK: u64 = 512;

/// An indexed tar shard: the memory map and the samples found in it.
pub struct TarShard {
    path: PathBuf,
    /// `None` for a 0-byte file, which cannot be mapped.
    map: Option<memmap2::Mmap>,
    samples: Vec<SampleEntry>,
    problems: Vec<Problem>,
}

impl TarShard {
    /// Maps and indexes a tar file. Errors only when the file cannot be opened or mapped; any
    /// damage inside it is reported by [`TarShard::problems`].
    ///
    /// The file must not be truncated or rewritten while the shard is open: like every memory
    /// map, the bytes would change (or fault) under the borrowed member slices.
    pub fn open(path: &Path) -> Result<TarShard> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let map = if len == 0 {
            None
        } else {
            // SAFETY: the map is read-only and private to this process; the documented contract
            // is that shards are not modified while they are being read.
            Some(unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?)
        };
        let (samples, problems) = index_tar(map.as_deref().unwrap_or(&[]), path);
        Ok(TarShard {
            path: path.to_path_buf(),
            map,
            samples,
            problems,
        })
    }

    /// Path of the shard.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Samples in shard order.
    pub fn samples(&self) -> &[SampleEntry] {
        &self.samples
    }

    /// Problems found while indexing.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The whole mapped file (empty for a 0-byte file).
    pub fn bytes(&self) -> &[u8] {
        self.map.as_deref().unwrap_or(&[])
    }

    /// Bytes of a member, borrowed from the mapping. Entries from this shard's index are always
    /// in bounds; an entry that is not (one from another shard) gives an empty slice, not a panic.
    pub fn member_bytes(&self, m: &MemberEntry) -> &[u8] {
        m.offset
            .checked_add(m.len)
            .and_then(|end| slice(self.bytes(), m.offset, end))
            .unwrap_or(&[])
    }
}

/// Indexes a tar image held in memory: the samples (members as offsets into `bytes`) and the
/// problems found, each naming `shard`. Never panics, whatever the bytes; see the module docs for
/// the rules. Every member range lies inside `bytes`, and ranges increase without overlapping.
pub fn index_tar(bytes: &[u8], shard: &Path) -> (Vec<SampleEntry>, Vec<Problem>) {
    let mut indexer = Indexer {
        bytes,
        len: bytes.len() as u64,
        shard,
        problems: Vec::new(),
        groups: Grouper::default(),
        entries: 0,
    };
    indexer.run();
    let samples = indexer.groups.finish();
    (samples, indexer.problems)
}

/// `bytes[start..end]` when that range exists.
fn slice(bytes: &[u8], start: u64, end: u64) -> Option<&[u8]> {
    let start = usize::try_from(start).ok()?;
    let end = usize::try_from(end).ok()?;
    bytes.get(start..end)
}

/// Rounds up to a whole number of blocks.
fn round_up(n: u64) -> Option<u64> {
    Some(n.checked_add(BLOCK - 1)? / BLOCK * BLOCK)
}

/// The 512-byte block at `pos`, when a whole one is there.
fn block_at(bytes: &[u8], pos: u64) -> Option<&[u8; 512]> {
    slice(bytes, pos, pos.checked_add(BLOCK)?)?.try_into().ok()
}

fn is_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Parses a numeric header field: GNU base-256 when the high bit of the first byte is set,
/// otherwise octal text ended by NUL and padded with spaces. `None` for anything else, for
/// negative base-256 values and for values that do not fit in a u64.
fn parse_numeric(field: &[u8]) -> Option<u64> {
    let (&first, rest) = field.split_first()?;
    if first & 0x80 != 0 {
        // 0xff starts a negative (two's complement) number: never a valid size.
        if first == 0xff {
            return None;
        }
        let mut value = u64::from(first & 0x7f);
        for &b in rest {
            value = value.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(value);
    }
    let text = field.split(|&b| b == 0).next().unwrap_or(&[]);
    let text = text.trim_ascii();
    let mut value: u64 = 0;
    for &b in text {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        value = value.checked_mul(8)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(value)
}

/// True when the block's stored checksum equals the unsigned or the signed sum of its bytes,
/// with the checksum field itself counted as spaces. All-zero blocks are never headers.
fn is_valid_header(block: &[u8; 512]) -> bool {
    if is_zero(block) {
        return false;
    }
    let Some(stored) = parse_numeric(&block[148..156]) else {
        return false;
    };
    // Every header of a shard is checked, so the sums are taken the cheap way: one widening sum
    // of the whole block (vectorized), the field's own bytes swapped for eight spaces after.
    let field = &block[148..156];
    let sum = |bytes: &[u8]| bytes.iter().map(|&b| u32::from(b)).sum::<u32>();
    let unsigned = u64::from(sum(block) - sum(field) + 8 * u32::from(b' '));
    if stored == unsigned {
        return true;
    }
    // Signed: each byte >= 0x80 counts 256 less (spaces are < 0x80).
    let high = |bytes: &[u8]| bytes.iter().filter(|&&b| b >= 0x80).count() as u64;
    let signed = unsigned as i64 - 256 * (high(block) - high(field)) as i64;
    i64::try_from(stored).is_ok_and(|s| s == signed)
}

/// A NUL-terminated text field as a string (lossy: tar names are bytes, keys are strings).
fn field_str(field: &[u8]) -> String {
    let text = field.split(|&b| b == 0).next().unwrap_or(&[]);
    String::from_utf8_lossy(text).into_owned()
}

/// The member name from the header alone: `prefix/name` for POSIX ustar, `name` otherwise.
fn header_name(block: &[u8; 512]) -> String {
    let name = field_str(&block[0..100]);
    // Only POSIX ustar ("ustar\0") has a prefix field; old GNU ("ustar  \0") keeps times there.
    if &block[257..263] == b"ustar\0" {
        let prefix = field_str(&block[345..500]);
        if !prefix.is_empty() {
            return format!("{prefix}/{name}");
        }
    }
    name
}

/// WebDataset's split of a member path into (key, ext): the key ends at the first '.' of the last
/// path component. `None` when that component has no '.' or starts with one.
pub fn split_key(name: &str) -> Option<(&str, &str)> {
    let base_start = name.rfind('/').map_or(0, |i| i + 1);
    let base = name.get(base_start..)?;
    let dot = base.find('.')?;
    if dot == 0 {
        return None;
    }
    let key = name.get(..base_start + dot)?;
    let ext = base.get(dot + 1..)?;
    Some((key, ext))
}

/// WebDataset's metadata members (`__name__`, or anything under a `__name__/` folder), which it
/// skips.
fn is_meta(name: &str) -> bool {
    let first = name.split('/').next().unwrap_or("");
    let wrapped = |s: &str| s.starts_with("__") && s.ends_with("__");
    (first.len() >= 4 && wrapped(first)) || (!name.contains('/') && wrapped(name))
}

/// Fields of extension headers (`L`, `x`) waiting for the entry they describe.
#[derive(Default)]
struct Pending {
    /// Offset of the first extension header of the entry.
    start: Option<u64>,
    long_name: Option<String>,
    pax_path: Option<String>,
    pax_size: Option<u64>,
    pax_sparse: bool,
}

/// What a pax extended header says about the next entry.
#[derive(Default)]
struct PaxFields {
    path: Option<String>,
    size: Option<u64>,
    sparse: bool,
}

/// Parses pax records (`"<len> <key>=<value>\n"`, `len` counting the whole record).
fn parse_pax(data: &[u8]) -> std::result::Result<PaxFields, String> {
    let mut fields = PaxFields::default();
    let mut rest = data;
    // Writers pad the data with NULs after the last record.
    while !rest.is_empty() && !is_zero(rest) {
        let space = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("pax record without a length")?;
        let len_text = std::str::from_utf8(&rest[..space]).map_err(|_| "bad pax record length")?;
        let len: usize = len_text
            .parse()
            .map_err(|_| format!("bad pax record length `{len_text}`"))?;
        let record = rest
            .get(..len)
            .filter(|r| r.len() > space + 1 && r.last() == Some(&b'\n'))
            .ok_or_else(|| format!("pax record of length {len} overruns its header data"))?;
        let body = &record[space + 1..record.len() - 1];
        let eq = body
            .iter()
            .position(|&b| b == b'=')
            .ok_or("pax record without '='")?;
        let (key, value) = (&body[..eq], &body[eq + 1..]);
        match key {
            b"path" if !value.is_empty() => {
                fields.path = Some(String::from_utf8_lossy(value).into_owned());
            }
            // An empty value means "use the header's field" (POSIX).
            b"size" if !value.is_empty() => {
                let text = std::str::from_utf8(value).unwrap_or("?");
                let size = text
                    .parse()
                    .map_err(|_| format!("bad pax size `{}`", text.escape_default()))?;
                fields.size = Some(size);
            }
            k if k.starts_with(b"GNU.sparse.") => fields.sparse = true,
            _ => {}
        }
        rest = &rest[len..];
    }
    Ok(fields)
}

/// Groups members into samples by key, with WebDataset's duplicate rules.
#[derive(Default)]
struct Grouper {
    samples: Vec<SampleEntry>,
    seen: HashSet<String>,
    /// The sample being built, and whether it repeats an earlier key (then it is dropped).
    current: Option<(SampleEntry, bool)>,
}

impl Grouper {
    /// Adds one member; returns a problem (kind, message) when it is dropped as a duplicate.
    fn add(
        &mut self,
        key: &str,
        member: MemberEntry,
        entry_offset: u64,
    ) -> Option<(&'static str, String)> {
        if let Some((sample, duplicate)) = &mut self.current
            && sample.key == key
        {
            if *duplicate {
                // The whole run was reported once when it started.
                return None;
            }
            if sample.member(&member.ext).is_some() {
                return Some((
                    "duplicate-member",
                    format!(
                        "a second `{}` member in sample `{key}`; the first one is kept",
                        member.ext
                    ),
                ));
            }
            sample.members.push(member);
            return None;
        }
        self.flush();
        let duplicate = !self.seen.insert(key.to_owned());
        let sample = SampleEntry {
            key: key.to_owned(),
            offset: entry_offset,
            members: vec![member],
        };
        self.current = Some((sample, duplicate));
        duplicate.then(|| {
            (
                "duplicate-key",
                format!("key `{key}` appeared earlier in the shard; this later sample is dropped"),
            )
        })
    }

    fn flush(&mut self) {
        if let Some((sample, false)) = self.current.take() {
            self.samples.push(sample);
        }
    }

    fn finish(mut self) -> Vec<SampleEntry> {
        self.flush();
        self.samples
    }
}

/// What to do after one header has been handled.
enum Step {
    /// Read the next header here.
    Next(u64),
    /// Stop: the rest of the shard holds nothing more to read.
    Stop,
}

struct Indexer<'a> {
    bytes: &'a [u8],
    len: u64,
    shard: &'a Path,
    problems: Vec<Problem>,
    groups: Grouper,
    /// Entries (headers that are not extension headers) seen, for the empty-shard message.
    entries: u64,
}

impl Indexer<'_> {
    fn problem(&mut self, offset: u64, key: Option<&str>, kind: &'static str, message: String) {
        self.problems.push(Problem {
            shard: self.shard.to_path_buf(),
            offset: Some(offset),
            key: key.map(str::to_owned),
            kind,
            message,
        });
    }

    /// The first valid header at or after `from` (block-aligned), scanning block by block.
    fn find_header(&self, from: u64) -> Option<u64> {
        let mut pos = from;
        while let Some(block) = block_at(self.bytes, pos) {
            if is_valid_header(block) {
                return Some(pos);
            }
            pos += BLOCK;
        }
        None
    }

    fn run(&mut self) {
        if self.len == 0 {
            self.problem(0, None, "empty-shard", "the file is empty (0 bytes)".into());
            return;
        }
        let mut pending = Pending::default();
        let mut pos = 0u64;
        while let Step::Next(next) = self.step(pos, &mut pending) {
            pos = next;
        }
        if self.groups.samples.is_empty()
            && self.groups.current.is_none()
            && self.problems.is_empty()
        {
            let message = if self.entries == 0 {
                "no members: the shard holds only end-of-archive blocks".to_owned()
            } else {
                format!(
                    "no samples: none of its {} entries is a regular file with a WebDataset key",
                    self.entries
                )
            };
            self.problem(0, None, "empty-shard", message);
        }
    }

    /// Handles the header block at `pos`.
    fn step(&mut self, pos: u64, pending: &mut Pending) -> Step {
        if pos >= self.len {
            // Also reached when the last member's padding is missing (pos > len).
            let message = if pos == self.len {
                "the shard ends without an end-of-archive marker; it may have been cut short"
            } else {
                "the shard ends inside the padding of its last member, without an end-of-archive \
                 marker"
            };
            self.problem(self.len, None, "truncated", message.into());
            return Step::Stop;
        }
        let Some(block) = block_at(self.bytes, pos) else {
            let left = self.len - pos;
            let has_magic = slice(self.bytes, 257, 262) == Some(b"ustar");
            if pos == 0 && !has_magic {
                let message = format!("{left} bytes, shorter than one tar header");
                self.problem(0, None, "not-a-tar", message);
            } else {
                let message = format!("the shard ends inside a header ({left} of 512 bytes)");
                self.problem(pos, None, "truncated", message);
            }
            return Step::Stop;
        };
        if is_zero(block) {
            return self.end_of_archive(pos, pending);
        }
        if !is_valid_header(block) {
            return self.bad_checksum(pos, pending);
        }

        let typeflag = block[156];
        let Some(header_size) = parse_numeric(&block[124..136]) else {
            let message = format!(
                "unreadable size field {:?}",
                String::from_utf8_lossy(&block[124..136])
            );
            self.problem(pos, None, "bad-header", message);
            return self.resync(pos, pending);
        };

        if matches!(typeflag, b'L' | b'K' | b'x' | b'g') {
            return self.extension(pos, typeflag, header_size, pending);
        }

        // A real entry: its extension headers apply now and are then used up.
        let pend = std::mem::take(pending);
        self.entries += 1;
        let entry_start = pend.start.unwrap_or(pos);
        let name = pend
            .pax_path
            .or(pend.long_name)
            .unwrap_or_else(|| header_name(block));
        let size = pend.pax_size.unwrap_or(header_size);

        let regular = matches!(typeflag, b'0' | b'7') || (typeflag == 0 && !name.ends_with('/'));
        // Links, devices, directories and FIFOs have no data whatever their size field says.
        let size = if !regular && matches!(typeflag, b'1'..=b'6' | 0) {
            0
        } else {
            size
        };
        // Old GNU sparse headers may be followed by extension blocks listing more holes.
        let mut data_start = pos + BLOCK;
        if typeflag == b'S' && block[482] != 0 {
            loop {
                let Some(ext_block) = block_at(self.bytes, data_start) else {
                    let message = format!(
                        "the shard ends inside the sparse map of member `{name}`; it is dropped"
                    );
                    self.problem(pos, None, "truncated", message);
                    return Step::Stop;
                };
                data_start += BLOCK;
                if ext_block[504] == 0 {
                    break;
                }
            }
        }
        let Some(data) = self.data(data_start, size) else {
            return self.overrun(pos, &name, data_start, size);
        };
        let next = round_up(data.1).unwrap_or(u64::MAX);

        if typeflag == b'S' || pend.pax_sparse {
            let message = format!("sparse member `{name}` is not supported; it is skipped");
            self.problem(entry_start, None, "bad-header", message);
        } else if regular
            && !is_meta(&name)
            && let Some((key, ext)) = split_key(&name)
        {
            let member = MemberEntry {
                ext: ext.to_lowercase(),
                offset: data.0,
                len: size,
                file: 0,
            };
            if let Some((kind, message)) = self.groups.add(key, member, entry_start) {
                self.problem(entry_start, Some(key), kind, message);
            }
        }
        Step::Next(next)
    }

    /// The data range `[start, start + size)` when it lies inside the shard.
    fn data(&self, start: u64, size: u64) -> Option<(u64, u64)> {
        let end = start.checked_add(size)?;
        (end <= self.len).then_some((start, end))
    }

    /// An extension header (`L`, `K`, `x`, `g`): reads it and records what it says in `pending`.
    fn extension(&mut self, pos: u64, typeflag: u8, size: u64, pending: &mut Pending) -> Step {
        let label = match typeflag {
            b'L' => "GNU long name",
            b'K' => "GNU long link name",
            b'x' => "pax header",
            _ => "pax global header",
        };
        let Some((start, end)) = self.data(pos + BLOCK, size) else {
            *pending = Pending::default();
            return self.overrun(pos, label, pos + BLOCK, size);
        };
        let data = slice(self.bytes, start, end).unwrap_or(&[]);
        // A global header belongs to no entry in particular.
        if typeflag != b'g' {
            pending.start.get_or_insert(pos);
        }
        match typeflag {
            b'L' => pending.long_name = Some(field_str(data)),
            b'x' => match parse_pax(data) {
                Ok(fields) => {
                    if fields.path.is_some() {
                        pending.pax_path = fields.path;
                    }
                    if fields.size.is_some() {
                        pending.pax_size = fields.size;
                    }
                    pending.pax_sparse |= fields.sparse;
                }
                Err(reason) => {
                    let message = format!("{reason}; this pax header is ignored");
                    self.problem(pos, None, "bad-header", message);
                }
            },
            // `K` and `g`: read past, see the module docs.
            _ => {}
        }
        Step::Next(round_up(end).unwrap_or(u64::MAX))
    }

    /// An entry (or extension header) at `pos` whose data would end past the end of the file.
    fn overrun(&mut self, pos: u64, name: &str, data_start: u64, size: u64) -> Step {
        let present = self.len.saturating_sub(data_start);
        // A valid header inside the claimed region means the size field is wrong, not the file.
        if let Some(next) = self.find_header(data_start) {
            let message = format!(
                "`{name}` declares {size} bytes but only {present} remain in the shard; it is \
                 dropped and reading resumes at the next valid header, at byte {next}"
            );
            self.problem(pos, None, "past-end", message);
            return Step::Next(next);
        }
        let ends_with_marker = self.len.is_multiple_of(BLOCK)
            && self.len >= data_start + 2 * BLOCK
            && slice(self.bytes, self.len - 2 * BLOCK, self.len).is_some_and(is_zero);
        let (kind, message) = if ends_with_marker {
            let message = format!(
                "`{name}` declares {size} bytes but only {present} remain, and the shard ends \
                 with an end-of-archive marker: its size field is wrong; it is dropped"
            );
            ("past-end", message)
        } else {
            let message = format!(
                "the shard ends inside `{name}` ({present} of {size} bytes present); it is dropped"
            );
            ("truncated", message)
        };
        self.problem(pos, None, kind, message);
        Step::Stop
    }

    /// A block whose checksum does not match: not-a-tar at the start of a shard with no valid
    /// header anywhere, otherwise bad-checksum and a resync.
    fn bad_checksum(&mut self, pos: u64, pending: &mut Pending) -> Step {
        *pending = Pending::default();
        let next = self.find_header(pos + BLOCK);
        if pos == 0 && next.is_none() {
            let message = match self.bytes {
                [0x1f, 0x8b, ..] => {
                    "gzip-compressed data; decompress the shard first (members of a compressed \
                     stream cannot be borrowed)"
                }
                [0x28, 0xb5, 0x2f, 0xfd, ..] => {
                    "zstd-compressed data; decompress the shard first (members of a compressed \
                     stream cannot be borrowed)"
                }
                _ => "no valid tar header anywhere in the file",
            };
            self.problem(0, None, "not-a-tar", message.into());
            return Step::Stop;
        }
        let message = match next {
            Some(next) => format!(
                "header checksum mismatch; skipped {} bytes to the next valid header, at byte {next}",
                next - pos
            ),
            None => "header checksum mismatch, and no valid header after it; the rest of the \
                     shard is ignored"
                .to_owned(),
        };
        self.problem(pos, None, "bad-checksum", message);
        next.map_or(Step::Stop, Step::Next)
    }

    /// After a header that could not be used: go on at the next valid header, if any.
    fn resync(&mut self, pos: u64, pending: &mut Pending) -> Step {
        *pending = Pending::default();
        self.find_header(pos + BLOCK).map_or(Step::Stop, Step::Next)
    }

    /// A zero block: the end of the archive, unless valid headers follow (concatenated tars, or a
    /// header that was zeroed out), in which case reading goes on there.
    fn end_of_archive(&mut self, pos: u64, pending: &mut Pending) -> Step {
        if let Some(start) = pending.start {
            let message = "extension header(s) not followed by any entry".to_owned();
            self.problem(start, None, "bad-header", message);
        }
        *pending = Pending::default();
        match self.find_header(pos + BLOCK) {
            Some(next) => {
                let message = format!(
                    "the archive goes on after an end-of-archive block; resumed at byte {next}"
                );
                self.problem(pos, None, "bad-header", message);
                Step::Next(next)
            }
            None => Step::Stop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARD: &str = "test.tar";

    /// A POSIX ustar header with a correct checksum.
    fn header(name: &str, size: u64, typeflag: u8) -> [u8; 512] {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0001750\0");
        h[116..124].copy_from_slice(b"0001750\0");
        h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"14712345670\0");
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        set_checksum(&mut h);
        h
    }

    /// Writes the unsigned checksum the way GNU tar does: six octal digits, NUL, space.
    fn set_checksum(h: &mut [u8; 512]) {
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    /// Data padded to whole blocks.
    fn padded(data: &[u8]) -> Vec<u8> {
        let mut v = data.to_vec();
        v.resize(data.len().div_ceil(512) * 512, 0);
        v
    }

    fn entry_with(h: [u8; 512], data: &[u8]) -> Vec<u8> {
        let mut v = h.to_vec();
        v.extend(padded(data));
        v
    }

    /// A regular-file entry.
    fn file(name: &str, data: &[u8]) -> Vec<u8> {
        entry_with(header(name, data.len() as u64, b'0'), data)
    }

    /// A GNU long-name (or, with `K`, long-link-name) entry for the next header.
    fn gnu_long(typeflag: u8, name: &str) -> Vec<u8> {
        let mut data = name.as_bytes().to_vec();
        data.push(0);
        let mut h = header("././@LongLink", data.len() as u64, typeflag);
        h[257..265].copy_from_slice(b"ustar  \0");
        set_checksum(&mut h);
        entry_with(h, &data)
    }

    /// A pax extended header (`x` or `g`) holding these records.
    fn pax(typeflag: u8, records: &[(&str, &str)]) -> Vec<u8> {
        let mut data = Vec::new();
        for (k, v) in records {
            let body = format!(" {k}={v}\n");
            let mut len = body.len() + 1;
            while len.to_string().len() + body.len() != len {
                len += 1;
            }
            data.extend(format!("{len}{body}").as_bytes());
        }
        entry_with(header("PaxHeaders/x", data.len() as u64, typeflag), &data)
    }

    fn end() -> Vec<u8> {
        vec![0; 1024]
    }

    fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    /// Indexes, checks the invariants every index must hold, and returns the result.
    fn index(bytes: &[u8]) -> (Vec<SampleEntry>, Vec<Problem>) {
        let (samples, problems) = index_tar(bytes, Path::new(SHARD));
        let len = bytes.len() as u64;
        let mut last_end = 0u64;
        for s in &samples {
            assert!(!s.key.is_empty());
            for m in &s.members {
                assert!(m.offset >= last_end, "members overlap or go back");
                assert!(m.offset + m.len <= len);
                last_end = m.offset + m.len;
            }
        }
        for p in &problems {
            assert!(p.offset.is_some_and(|o| o <= len), "{p}");
            assert_eq!(p.shard, Path::new(SHARD));
        }
        (samples, problems)
    }

    /// (key, [(ext, bytes)]) per sample, for comparing whole results.
    type Contents<'a> = Vec<(String, Vec<(String, &'a [u8])>)>;

    fn contents<'a>(bytes: &'a [u8], samples: &[SampleEntry]) -> Contents<'a> {
        samples
            .iter()
            .map(|s| {
                let members = s
                    .members
                    .iter()
                    .map(|m| {
                        let data = &bytes[m.offset as usize..(m.offset + m.len) as usize];
                        (m.ext.clone(), data)
                    })
                    .collect();
                (s.key.clone(), members)
            })
            .collect()
    }

    fn kinds(problems: &[Problem]) -> Vec<(&'static str, Option<u64>)> {
        problems.iter().map(|p| (p.kind, p.offset)).collect()
    }

    type Expected<'a> = Vec<(&'a str, Vec<(&'a str, &'a [u8])>)>;

    fn assert_contents(bytes: &[u8], samples: &[SampleEntry], expected: Expected<'_>) {
        let got = contents(bytes, samples);
        let expected: Vec<_> = expected
            .into_iter()
            .map(|(k, ms)| {
                let ms: Vec<_> = ms.into_iter().map(|(e, d)| (e.to_owned(), d)).collect();
                (k.to_owned(), ms)
            })
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn groups_consecutive_members_by_key() {
        let big = vec![7u8; 1300];
        let tar = cat(&[
            file("a.jpg", b"JPEG-A"),
            file("a.txt", b"caption a"),
            file("b.jpg", &big),
            file("b.json", b"{}"),
            end(),
        ]);
        let (samples, problems) = index(&tar);
        assert_eq!(problems, vec![]);
        assert_contents(
            &tar,
            &samples,
            vec![
                ("a", vec![("jpg", b"JPEG-A"), ("txt", b"caption a")]),
                ("b", vec![("jpg", &big), ("json", b"{}")]),
            ],
        );
        assert_eq!(samples[0].offset, 0);
        assert_eq!(samples[1].offset, 2048);
        assert_eq!(samples[0].members[0].offset, 512);
        assert_eq!(samples[1].members[1].offset, 2048 + 512 + 1536 + 512);
        assert_eq!(samples[1].member("json").map(|m| m.len), Some(2));
    }

    #[test]
    fn key_is_path_up_to_first_dot_of_last_component() {
        let tar = cat(&[
            header("a/", 0, b'5').to_vec(),
            file("a/b/x.y.jpg", b"seg"),
            file("a/b/x.TXT", b"t"),
            file("a.d/z.JPG", b"z"),
            header("a.d/link.jpg", 0, b'2').to_vec(),
            file(".DS_Store", b"junk"),
            file("d/._z.jpg", b"fork"),
            file("__meta__", b"m"),
            file("__index__/0.json", b"m"),
            file("README", b"no dot"),
            file("./c.png", b"png"),
            end(),
        ]);
        let (samples, problems) = index(&tar);
        assert_eq!(problems, vec![]);
        assert_contents(
            &tar,
            &samples,
            vec![
                ("a/b/x", vec![("y.jpg", b"seg"), ("txt", b"t")]),
                ("a.d/z", vec![("jpg", b"z")]),
                ("./c", vec![("png", b"png")]),
            ],
        );
    }

    #[test]
    fn split_key_follows_webdataset() {
        assert_eq!(split_key("a/b/x.y.jpg"), Some(("a/b/x", "y.jpg")));
        assert_eq!(split_key("x.jpg"), Some(("x", "jpg")));
        assert_eq!(split_key("d.e/x"), None);
        assert_eq!(split_key(".hidden.jpg"), None);
        assert_eq!(split_key("x."), Some(("x", "")));
        assert!(is_meta("__key__") && is_meta("__a__/b.json") && !is_meta("__key__.json"));
    }

    #[test]
    fn gnu_long_names_and_ustar_prefix() {
        let long = format!("{}/sample_{}.jpg", "dir".repeat(40), "9".repeat(60));
        let mut prefixed = header("p.jpg", 3, b'0');
        prefixed[345..354].copy_from_slice(b"some/path");
        set_checksum(&mut prefixed);
        // Old GNU magic: bytes 345.. are not a prefix there.
        let mut old_gnu = header("g.jpg", 2, b'0');
        old_gnu[257..265].copy_from_slice(b"ustar  \0");
        old_gnu[345..350].copy_from_slice(b"12345");
        set_checksum(&mut old_gnu);
        let tar = cat(&[
            gnu_long(b'L', &long),
            file("truncated-name-ignored.jpg", b"long"),
            gnu_long(b'K', &"t".repeat(200)),
            header("sym.jpg", 0, b'2').to_vec(),
            entry_with(prefixed, b"pre"),
            entry_with(old_gnu, b"gg"),
            end(),
        ]);
        let (samples, problems) = index(&tar);
        assert_eq!(problems, vec![]);
        let long_key = long.strip_suffix(".jpg").unwrap();
        assert_contents(
            &tar,
            &samples,
            vec![
                (long_key, vec![("jpg", b"long")]),
                ("some/path/p", vec![("jpg", b"pre")]),
                ("g", vec![("jpg", b"gg")]),
            ],
        );
        // The sample starts at its long-name header.
        assert_eq!(samples[0].offset, 0);
    }

    #[test]
    fn pax_path_and_size_override_the_header() {
        let data = vec![42u8; 700];
        let long = format!("{}/é-{}.webp", "p".repeat(120), "k".repeat(30));
        // Header size 0: only the pax size says how long the data is.
        let tar = cat(&[
            pax(b'g', &[("comment", "0123abcd"), ("path", "ignored.jpg")]),
            pax(b'x', &[("mtime", "1.5"), ("path", &long), ("size", "700")]),
            entry_with(header("short.webp", 0, b'0'), &data),
            pax(b'x', &[("path", "")]),
            file("kept-name.txt", b"x"),
            end(),
        ]);
        let (samples, problems) = index(&tar);
        assert_eq!(problems, vec![]);
        let key = long.strip_suffix(".webp").unwrap();
        assert_contents(
            &tar,
            &samples,
            vec![
                (key, vec![("webp", &data)]),
                ("kept-name", vec![("txt", b"x")]),
            ],
        );
        assert_eq!(samples[0].offset, 1024, "sample starts at its pax header");
    }

    #[test]
    fn bad_pax_record_is_reported_and_ignored() {
        let mut bad = header("PaxHeaders/x", 12, b'x');
        set_checksum(&mut bad);
        let tar = cat(&[
            file("a.jpg", b"a"),
            entry_with(bad, b"99 path=zz\n\0"),
            file("b.jpg", b"b"),
            end(),
        ]);
        let (samples, problems) = index(&tar);
        assert_eq!(kinds(&problems), vec![("bad-header", Some(1024))]);
        assert_contents(
            &tar,
            &samples,
            vec![("a", vec![("jpg", b"a")]), ("b", vec![("jpg", b"b")])],
        );
    }

    /// The checksum rule as tar states it, byte by byte: the model the fast sums must equal.
    fn valid_header_model(block: &[u8; 512]) -> bool {
        if is_zero(block) {
            return false;
        }
        let Some(stored) = parse_numeric(&block[148..156]) else {
            return false;
        };
        let (mut unsigned, mut signed) = (0i64, 0i64);
        for (i, &b) in block.iter().enumerate() {
            let b = if (148..156).contains(&i) { b' ' } else { b };
            unsigned += i64::from(b);
            signed += i64::from(b as i8);
        }
        i64::try_from(stored).is_ok_and(|s| s == unsigned || s == signed)
    }

    #[test]
    fn checksum_check_equals_the_byte_by_byte_rule() {
        let mut rng = crate::pack::rng::SplitMix64::new(7);
        let (mut valid, mut invalid) = (0, 0);
        for case in 0..3000 {
            // Mostly-ASCII headers, some with high bytes, some all high.
            let mut h = header("k.jpg", case, b'0');
            for _ in 0..rng.below(40) {
                let at = rng.below(512);
                h[at] = match case % 3 {
                    0 => rng.below(0x80) as u8,
                    _ => rng.below(256) as u8,
                };
            }
            if case % 50 == 0 {
                h.fill(0xff);
            }
            h[148..156].copy_from_slice(b"        ");
            let unsigned: i64 = h.iter().map(|&b| i64::from(b)).sum();
            let signed: i64 = h.iter().map(|&b| i64::from(b as i8)).sum();
            let stored = match rng.below(4) {
                0 => unsigned,
                1 => signed,
                2 => unsigned + rng.below(3) as i64 - 1,
                _ => signed.abs() + 1,
            };
            // A negative signed sum cannot be written (and never matches): 0 instead.
            let stored = stored.max(0);
            match rng.below(4) {
                0 => h[148..156].copy_from_slice(format!("{stored:07o}\0").as_bytes()),
                1 => h[148..156].copy_from_slice(b"nonsense"),
                _ => h[148..156].copy_from_slice(format!("{stored:06o}\0 ").as_bytes()),
            }
            let model = valid_header_model(&h);
            assert_eq!(is_valid_header(&h), model, "case {case}");
            if model { valid += 1 } else { invalid += 1 }
        }
        assert!(
            valid > 500 && invalid > 500,
            "{valid} valid, {invalid} invalid"
        );
        assert!(!is_valid_header(&[0; 512]));
    }

    #[test]
    fn base256_size_v7_header_and_signed_checksum() {
        let data = vec![1u8; 1000];
        let mut h = header("big.bin", 0, b'0');
        h[124..136].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x03, 0xe8]);
        set_checksum(&mut h);
        // v7: no magic, typeflag NUL.
        let mut v7 = header("old.txt", 2, 0);
        v7[257..265].fill(0);
        set_checksum(&mut v7);
        // A name byte >= 0x80, with the checksum written as the signed sum (old Unix tars).
        let mut signed = header("s\u{e9}.jpg", 1, b'0');
        signed[148..156].copy_from_slice(b"        ");
        let sum: i64 = signed.iter().map(|&b| i64::from(b as i8)).sum();
        signed[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let tar = cat(&[
            entry_with(h, &data),
            entry_with(v7, b"v7"),
            entry_with(signed, b"s"),
            end(),
        ]);
        let (samples, problems) = index(&tar);
        assert_eq!(problems, vec![]);
        assert_contents(
            &tar,
            &samples,
            vec![
                ("big", vec![("bin", &data)]),
                ("old", vec![("txt", b"v7")]),
                ("s\u{e9}", vec![("jpg", b"s")]),
            ],
        );
        assert_eq!(
            parse_numeric(&[0xff, 0xff, 0xff]),
            None,
            "negative base-256"
        );
        assert_eq!(parse_numeric(b" 17 \0"), Some(15));
        assert_eq!(parse_numeric(b"19\0"), None);
    }

    #[test]
    fn truncated_inside_a_member() {
        let full = cat(&[file("a.jpg", b"aaa"), file("b.jpg", &[9; 2000]), end()]);
        let cut = &full[..1024 + 512 + 700];
        let (samples, problems) = index(cut);
        assert_eq!(kinds(&problems), vec![("truncated", Some(1024))]);
        assert!(
            problems[0].message.contains("700 of 2000"),
            "{}",
            problems[0].message
        );
        assert_contents(cut, &samples, vec![("a", vec![("jpg", b"aaa")])]);
    }

    #[test]
    fn truncated_inside_a_header() {
        let full = cat(&[file("a.jpg", b"aaa"), file("b.jpg", b"bbb"), end()]);
        let cut = &full[..1024 + 100];
        let (samples, problems) = index(cut);
        assert_eq!(kinds(&problems), vec![("truncated", Some(1024))]);
        assert_contents(cut, &samples, vec![("a", vec![("jpg", b"aaa")])]);
    }

    #[test]
    fn missing_end_marker_or_padding_is_truncated_at_the_end() {
        let tar = cat(&[file("a.jpg", b"aaa"), file("b.jpg", b"bb")]);
        let (samples, problems) = index(&tar);
        assert_eq!(kinds(&problems), vec![("truncated", Some(2048))]);
        assert_eq!(samples.len(), 2);
        // Cut inside the last member's padding: the member's bytes are all there and kept.
        let cut = &tar[..1536 + 2];
        let (samples, problems) = index(cut);
        assert_eq!(kinds(&problems), vec![("truncated", Some(1538))]);
        assert_contents(
            cut,
            &samples,
            vec![("a", vec![("jpg", b"aaa")]), ("b", vec![("jpg", b"bb")])],
        );
    }

    #[test]
    fn size_past_the_end_with_a_valid_header_after_it() {
        let tar = cat(&[
            file("a.jpg", b"aaa"),
            entry_with(header("b.jpg", 1 << 20, b'0'), b"bbb"),
            file("c.jpg", b"ccc"),
            end(),
        ]);
        let (samples, problems) = index(&tar);
        assert_eq!(kinds(&problems), vec![("past-end", Some(1024))]);
        assert!(
            problems[0].message.contains("byte 2048"),
            "{}",
            problems[0].message
        );
        assert_contents(
            &tar,
            &samples,
            vec![("a", vec![("jpg", b"aaa")]), ("c", vec![("jpg", b"ccc")])],
        );
    }

    #[test]
    fn size_past_the_end_of_a_complete_archive() {
        let tar = cat(&[
            file("a.jpg", b"aaa"),
            entry_with(header("b.jpg", 5000, b'0'), b"bbb"),
            end(),
        ]);
        let (samples, problems) = index(&tar);
        assert_eq!(kinds(&problems), vec![("past-end", Some(1024))]);
        assert_contents(&tar, &samples, vec![("a", vec![("jpg", b"aaa")])]);
    }

    #[test]
    fn huge_size_does_not_overflow() {
        let mut h = header("b.jpg", 0, b'0');
        h[124..136].copy_from_slice(&[
            0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ]);
        set_checksum(&mut h);
        let tar = cat(&[file("a.jpg", b"a"), h.to_vec(), end()]);
        let (samples, problems) = index(&tar);
        // 0x80ff.. does not fit in a u64: an unreadable size field.
        assert_eq!(kinds(&problems), vec![("bad-header", Some(1024))]);
        assert_eq!(samples.len(), 1);
        h[124..136].copy_from_slice(&[
            0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ]);
        set_checksum(&mut h);
        let tar = cat(&[file("a.jpg", b"a"), h.to_vec(), end()]);
        let (samples, problems) = index(&tar);
        assert_eq!(kinds(&problems), vec![("past-end", Some(1024))]);
        assert_eq!(samples.len(), 1);
    }

    #[test]
    fn bad_checksum_resyncs_at_the_next_valid_header() {
        let mut tar = cat(&[
            file("a.jpg", b"aaa"),
            file("b.jpg", &[5; 1500]),
            file("c.jpg", b"ccc"),
            file("c.txt", b"cap"),
            end(),
        ]);
        tar[1024 + 3] ^= 0x20; // the name of b's header: "b.jpg" -> "b.Jpg"
        let (samples, problems) = index(&tar);
        assert_eq!(kinds(&problems), vec![("bad-checksum", Some(1024))]);
        assert!(
            problems[0].message.contains("byte 3072"),
            "{}",
            problems[0].message
        );
        assert_contents(
            &tar,
            &samples,
            vec![
                ("a", vec![("jpg", b"aaa")]),
                ("c", vec![("jpg", b"ccc"), ("txt", b"cap")]),
            ],
        );
    }

    #[test]
    fn bad_checksum_with_nothing_after_it() {
        let mut tar = cat(&[file("a.jpg", b"aaa"), file("b.jpg", b"bbb"), end()]);
        tar[1024 + 140] = b'7'; // the mtime field
        let (samples, problems) = index(&tar);
        assert_eq!(kinds(&problems), vec![("bad-checksum", Some(1024))]);
        assert_contents(&tar, &samples, vec![("a", vec![("jpg", b"aaa")])]);
    }

    #[test]
    fn bad_first_header_with_valid_ones_later() {
        let mut tar = cat(&[file("a.jpg", b"aaa"), file("b.jpg", b"bbb"), end()]);
        tar[0] = b'A';
        let (samples, problems) = index(&tar);
        assert_eq!(kinds(&problems), vec![("bad-checksum", Some(0))]);
        assert_contents(&tar, &samples, vec![("b", vec![("jpg", b"bbb")])]);
    }

    #[test]
    fn unreadable_size_field_resyncs() {
        let mut h = header("b.jpg", 0, b'0');
        h[124..136].copy_from_slice(b"00000000x12\0");
        set_checksum(&mut h);
        let tar = cat(&[
            file("a.jpg", b"a"),
            entry_with(h, b"zz"),
            file("c.jpg", b"c"),
            end(),
        ]);
        let (samples, problems) = index(&tar);
        assert_eq!(kinds(&problems), vec![("bad-header", Some(1024))]);
        assert_contents(
            &tar,
            &samples,
            vec![("a", vec![("jpg", b"a")]), ("c", vec![("jpg", b"c")])],
        );
    }

    #[test]
    fn not_a_tar() {
        let text = "this is a plain text file, not an archive\n".repeat(100);
        let (samples, problems) = index(text.as_bytes());
        assert_eq!(kinds(&problems), vec![("not-a-tar", Some(0))]);
        assert!(samples.is_empty());
        let (samples, problems) = index(b"tiny");
        assert_eq!(kinds(&problems), vec![("not-a-tar", Some(0))]);
        assert!(samples.is_empty());
        let mut gz = vec![0x1f, 0x8b, 8, 0];
        gz.resize(2000, 0x55);
        let (_, problems) = index(&gz);
        assert_eq!(kinds(&problems), vec![("not-a-tar", Some(0))]);
        assert!(problems[0].message.contains("gzip"));
    }

    #[test]
    fn first_header_cut_short() {
        let tar = file("a.jpg", b"aaa");
        let (samples, problems) = index(&tar[..300]);
        assert_eq!(kinds(&problems), vec![("truncated", Some(0))]);
        assert!(samples.is_empty());
    }

    #[test]
    fn empty_shards() {
        let (samples, problems) = index(&[]);
        assert_eq!(kinds(&problems), vec![("empty-shard", Some(0))]);
        assert!(samples.is_empty());
        let (samples, problems) = index(&[0; 10240]);
        assert_eq!(kinds(&problems), vec![("empty-shard", Some(0))]);
        assert!(problems[0].message.contains("only end-of-archive"));
        assert!(samples.is_empty());
        let dirs = cat(&[
            header("a/", 0, b'5').to_vec(),
            header("b/", 0, b'5').to_vec(),
            end(),
        ]);
        let (samples, problems) = index(&dirs);
        assert_eq!(kinds(&problems), vec![("empty-shard", Some(0))]);
        assert!(problems[0].message.contains("2 entries"));
        assert!(samples.is_empty());
    }

    #[test]
    fn duplicate_key_keeps_the_first_sample() {
        let tar = cat(&[
            file("a.jpg", b"a1"),
            file("b.jpg", b"b"),
            file("a.jpg", b"a2"),
            file("a.txt", b"a2 caption"),
            file("c.jpg", b"c"),
            end(),
        ]);
        let (samples, problems) = index(&tar);
        assert_eq!(kinds(&problems), vec![("duplicate-key", Some(2048))]);
        assert_eq!(problems[0].key.as_deref(), Some("a"));
        assert_contents(
            &tar,
            &samples,
            vec![
                ("a", vec![("jpg", b"a1")]),
                ("b", vec![("jpg", b"b")]),
                ("c", vec![("jpg", b"c")]),
            ],
        );
    }

    #[test]
    fn duplicate_member_keeps_the_first() {
        let tar = cat(&[
            file("a.jpg", b"first"),
            file("a.JPG", b"second"),
            file("a.txt", b"t"),
            end(),
        ]);
        let (samples, problems) = index(&tar);
        assert_eq!(kinds(&problems), vec![("duplicate-member", Some(1024))]);
        assert_eq!(problems[0].key.as_deref(), Some("a"));
        assert_contents(
            &tar,
            &samples,
            vec![("a", vec![("jpg", b"first"), ("txt", b"t")])],
        );
    }

    #[test]
    fn concatenated_archives_are_both_read() {
        let tar = cat(&[file("a.jpg", b"a"), end(), file("b.jpg", b"b"), end()]);
        let (samples, problems) = index(&tar);
        assert_eq!(kinds(&problems), vec![("bad-header", Some(1024))]);
        assert_contents(
            &tar,
            &samples,
            vec![("a", vec![("jpg", b"a")]), ("b", vec![("jpg", b"b")])],
        );
    }

    #[test]
    fn sparse_members_are_skipped_with_a_problem() {
        let mut sparse = header("s.img", 3, b'S');
        sparse[482] = 1; // one extension block follows
        set_checksum(&mut sparse);
        let mut ext = [0u8; 512];
        ext[0..3].copy_from_slice(b"abc");
        let tar = cat(&[
            sparse.to_vec(),
            ext.to_vec(),
            padded(b"xyz"),
            file("a.jpg", b"a"),
            end(),
        ]);
        let (samples, problems) = index(&tar);
        assert_eq!(kinds(&problems), vec![("bad-header", Some(0))]);
        assert_contents(&tar, &samples, vec![("a", vec![("jpg", b"a")])]);
    }

    #[test]
    fn open_maps_the_file_and_borrows_members() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.tar");
        std::fs::write(
            &path,
            cat(&[file("a.jpg", b"JPEG"), file("a.txt", b"cap"), end()]),
        )
        .unwrap();
        let shard = TarShard::open(&path).unwrap();
        assert_eq!(shard.problems(), &[]);
        let sample = &shard.samples()[0];
        assert_eq!(shard.member_bytes(sample.member("jpg").unwrap()), b"JPEG");
        assert_eq!(shard.member_bytes(sample.member("txt").unwrap()), b"cap");
        let foreign = MemberEntry {
            ext: "jpg".into(),
            offset: u64::MAX - 1,
            len: 10,
            file: 0,
        };
        assert_eq!(shard.member_bytes(&foreign), b"");

        let empty = dir.path().join("empty.tar");
        std::fs::write(&empty, b"").unwrap();
        let shard = TarShard::open(&empty).unwrap();
        assert_eq!(kinds(shard.problems()), vec![("empty-shard", Some(0))]);

        let missing = dir.path().join("missing.tar");
        assert!(matches!(TarShard::open(&missing), Err(Error::Io { .. })));
    }
}
