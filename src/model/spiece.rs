//! SentencePiece unigram models (`spiece.model`), read and applied without the C++ library.
//!
//! SigLIP checkpoints ship their tokenizer as a SentencePiece model only, so vlmprep reads the
//! protobuf itself (a few fields of `ModelProto`), normalizes text the way SentencePiece's
//! `Normalizer` does (the precompiled character map, whitespace squashing, the dummy prefix,
//! spaces escaped as `▁`) and segments it with the unigram Viterbi search, unknown characters
//! merged into one unknown piece. Only what encoding needs is implemented: no sampling, no BPE
//! model type, no decoding.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, Result};

/// The character SentencePiece writes for a space.
pub const SPACE_SYMBOL: char = '\u{2581}';

/// How a piece may be produced (SentencePiece's `SentencePiece.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceType {
    /// An ordinary vocabulary piece.
    Normal,
    /// The unknown piece.
    Unknown,
    /// A control symbol (`</s>`, `<pad>`): never produced from text.
    Control,
    /// A user-defined symbol: always kept whole when it occurs in text.
    UserDefined,
    /// A byte piece `<0xAB>` of byte fallback.
    Byte,
    /// Unused: never produced.
    Unused,
}

impl PieceType {
    fn from_proto(v: u64) -> PieceType {
        match v {
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => PieceType::Normal,
        }
    }
}

/// One vocabulary entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    /// The piece's text (spaces as `▁`).
    pub text: String,
    /// Its log probability.
    pub score: f32,
    /// How it may be produced.
    pub kind: PieceType,
}

/// A SentencePiece unigram model ready to encode.
#[derive(Debug, Clone)]
pub struct SentencePiece {
    pieces: Vec<Piece>,
    /// Text → id of the pieces text may produce (normal and user-defined).
    lookup: HashMap<String, u32>,
    /// Longest producible piece, in bytes: bounds the lattice search.
    max_piece_bytes: usize,
    unk_id: u32,
    unk_score: f32,
    user_defined_score: f32,
    byte_fallback: bool,
    normalizer: Normalizer,
}

/// SentencePiece's text normalizer, configured by the model's `NormalizerSpec`.
#[derive(Debug, Clone)]
struct Normalizer {
    charsmap: Option<CharsMap>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
}

/// The precompiled character map: a double-array trie (darts-clone layout) over UTF-8 input
/// whose values index NUL-terminated replacement strings.
#[derive(Debug, Clone)]
struct CharsMap {
    units: Vec<u32>,
    replacements: Vec<u8>,
}

impl SentencePiece {
    /// Reads a serialized `ModelProto` (the bytes of an `spiece.model` file).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<SentencePiece> {
        let bad = |what: &str| Error::Tokenizer {
            path: path.to_path_buf(),
            reason: what.to_string(),
        };
        let mut pieces = Vec::new();
        let mut model_type = 1;
        let mut unk_id = 0u32;
        let mut byte_fallback = false;
        let mut normalizer = Normalizer {
            charsmap: None,
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        };
        for field in Proto::new(bytes) {
            match field.map_err(|e| bad(&e))? {
                (1, Value::Bytes(p)) => pieces.push(parse_piece(p).map_err(|e| bad(&e))?),
                (2, Value::Bytes(trainer)) => {
                    for f in Proto::new(trainer) {
                        match f.map_err(|e| bad(&e))? {
                            (3, Value::Varint(v)) => model_type = v,
                            (35, Value::Varint(v)) => byte_fallback = v != 0,
                            (40, Value::Varint(v)) => unk_id = v as u32,
                            _ => {}
                        }
                    }
                }
                (3, Value::Bytes(spec)) => {
                    for f in Proto::new(spec) {
                        match f.map_err(|e| bad(&e))? {
                            (2, Value::Bytes(map)) if !map.is_empty() => {
                                normalizer.charsmap =
                                    Some(CharsMap::parse(map).map_err(|e| bad(&e))?)
                            }
                            (3, Value::Varint(v)) => normalizer.add_dummy_prefix = v != 0,
                            (4, Value::Varint(v)) => normalizer.remove_extra_whitespaces = v != 0,
                            (5, Value::Varint(v)) => normalizer.escape_whitespaces = v != 0,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if model_type != 1 {
            return Err(bad(&format!(
                "model type {model_type} is not supported (only unigram, type 1)"
            )));
        }
        if pieces.is_empty() {
            return Err(bad("no pieces: not a SentencePiece model"));
        }
        if unk_id as usize >= pieces.len() || pieces[unk_id as usize].kind != PieceType::Unknown {
            return Err(bad(&format!("unk_id {unk_id} is not the unknown piece")));
        }
        let producible = |p: &Piece| matches!(p.kind, PieceType::Normal | PieceType::UserDefined);
        let mut lookup = HashMap::new();
        let mut max_piece_bytes = 1;
        let (mut min_score, mut max_score) = (f32::INFINITY, f32::NEG_INFINITY);
        for (id, p) in pieces.iter().enumerate() {
            if producible(p) {
                lookup.entry(p.text.clone()).or_insert(id as u32);
                max_piece_bytes = max_piece_bytes.max(p.text.len());
            }
            if p.kind == PieceType::Normal {
                min_score = min_score.min(p.score);
                max_score = max_score.max(p.score);
            }
        }
        if !min_score.is_finite() {
            (min_score, max_score) = (0.0, 0.0);
        }
        Ok(SentencePiece {
            // SentencePiece's unigram model: an unknown character costs 10 below the rarest piece.
            unk_score: min_score - 10.0,
            // and a user-defined symbol always wins against the pieces it could be split into
            user_defined_score: max_score,
            pieces,
            lookup,
            max_piece_bytes,
            unk_id,
            byte_fallback,
            normalizer,
        })
    }

    /// Number of pieces (the vocabulary size).
    pub fn len(&self) -> usize {
        self.pieces.len()
    }

    /// True for a model without pieces (never the case for a loaded model).
    pub fn is_empty(&self) -> bool {
        self.pieces.is_empty()
    }

    /// The id of the piece with exactly this text, whatever its type.
    pub fn piece_id(&self, text: &str) -> Option<u32> {
        self.lookup.get(text).copied().or_else(|| {
            self.pieces
                .iter()
                .position(|p| p.text == text)
                .map(|i| i as u32)
        })
    }

    /// The unknown piece's id.
    pub fn unk_id(&self) -> u32 {
        self.unk_id
    }

    /// Normalizes `text` as SentencePiece does before segmenting it.
    pub fn normalize(&self, text: &str) -> String {
        self.normalizer.normalize(text)
    }

    /// Encodes `text` to piece ids.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let normalized = self.normalize(text);
        self.segment(&normalized)
    }

    /// Viterbi over the lattice of producible pieces of normalized text; characters no piece
    /// starts with become the unknown piece (runs of them merged), or their bytes under byte
    /// fallback.
    fn segment(&self, s: &str) -> Vec<u32> {
        if s.is_empty() {
            return Vec::new();
        }
        let n = s.len();
        // best[j]: best score of a segmentation of s[..j]; from[j]: (start, id) of its last piece.
        let mut best = vec![f32::NEG_INFINITY; n + 1];
        let mut from = vec![(0usize, u32::MAX); n + 1];
        best[0] = 0.0;
        for (start, ch) in s.char_indices() {
            if best[start] == f32::NEG_INFINITY {
                continue;
            }
            let mut single_char_piece = false;
            let limit = (start + self.max_piece_bytes).min(n);
            let mut end = start + ch.len_utf8();
            while end <= limit {
                if let Some(&id) = self.lookup.get(&s[start..end]) {
                    let p = &self.pieces[id as usize];
                    let score = if p.kind == PieceType::UserDefined {
                        self.user_defined_score * s[start..end].chars().count() as f32 - 0.1
                    } else {
                        p.score
                    };
                    if end == start + ch.len_utf8() {
                        single_char_piece = true;
                    }
                    let total = best[start] + score;
                    if total > best[end] {
                        best[end] = total;
                        from[end] = (start, id);
                    }
                }
                end += s[end..].chars().next().map_or(1, char::len_utf8);
            }
            if !single_char_piece {
                let end = start + ch.len_utf8();
                let total = best[start] + self.unk_score;
                if total > best[end] {
                    best[end] = total;
                    from[end] = (start, self.unk_id);
                }
            }
        }
        let mut path = Vec::new();
        let mut end = n;
        while end > 0 {
            let (start, id) = from[end];
            path.push((start, end, id));
            end = start;
        }
        path.reverse();
        let mut ids: Vec<u32> = Vec::with_capacity(path.len());
        let mut prev_unk = false;
        for (start, end, id) in path {
            let unk = id == self.unk_id;
            if unk
                && self.byte_fallback
                && let Some(bytes) = self.byte_pieces(&s[start..end])
            {
                ids.extend(bytes);
                prev_unk = false;
                continue;
            }
            if !(unk && prev_unk) {
                ids.push(id);
            }
            prev_unk = unk;
        }
        ids
    }

    /// The `<0xAB>` pieces of `text`'s UTF-8 bytes, when the model has them all.
    fn byte_pieces(&self, text: &str) -> Option<Vec<u32>> {
        text.bytes()
            .map(|b| {
                let name = format!("<0x{b:02X}>");
                self.pieces
                    .iter()
                    .position(|p| p.kind == PieceType::Byte && p.text == name)
                    .map(|i| i as u32)
            })
            .collect()
    }
}

impl Normalizer {
    /// SentencePiece's `Normalizer::Normalize`: map characters, drop leading spaces, squash
    /// runs of spaces, add the dummy prefix, escape spaces as `▁`, drop trailing `▁`.
    fn normalize(&self, text: &str) -> String {
        let mut mapped = String::with_capacity(text.len() + 3);
        let mut rest = text.as_bytes();
        while !rest.is_empty() {
            let (replacement, used) = self.normalize_prefix(rest);
            mapped.push_str(&replacement);
            rest = &rest[used..];
        }
        let mut out = String::with_capacity(mapped.len() + 3);
        let body = if self.remove_extra_whitespaces {
            mapped.trim_start_matches(' ')
        } else {
            mapped.as_str()
        };
        if self.add_dummy_prefix && !body.is_empty() {
            out.push(if self.escape_whitespaces {
                SPACE_SYMBOL
            } else {
                ' '
            });
        }
        let mut prev_space = self.remove_extra_whitespaces;
        for c in body.chars() {
            if c == ' ' {
                if self.remove_extra_whitespaces && prev_space {
                    continue;
                }
                out.push(if self.escape_whitespaces {
                    SPACE_SYMBOL
                } else {
                    ' '
                });
                prev_space = true;
            } else {
                out.push(c);
                prev_space = false;
            }
        }
        if self.remove_extra_whitespaces {
            let space = if self.escape_whitespaces {
                SPACE_SYMBOL
            } else {
                ' '
            };
            while out.ends_with(space) {
                out.pop();
            }
        }
        out
    }

    /// The normalized form of the longest mapped prefix of `input`, or its first character
    /// (U+FFFD for a malformed byte), and how many bytes it consumed.
    fn normalize_prefix(&self, input: &[u8]) -> (String, usize) {
        if let Some(map) = &self.charsmap
            && let Some((replacement, used)) = map.longest_match(input)
        {
            return (replacement, used);
        }
        let len = utf8_len(input[0]).min(input.len());
        match std::str::from_utf8(&input[..len]) {
            Ok(s) => (s.to_string(), len),
            Err(_) => ("\u{FFFD}".to_string(), 1),
        }
    }
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => 1,
    }
}

impl CharsMap {
    /// Splits the blob: a little-endian u32 byte length of the trie, the trie's units, then the
    /// replacement strings.
    fn parse(blob: &[u8]) -> std::result::Result<CharsMap, String> {
        let bad = || "malformed precompiled_charsmap".to_string();
        let size = u32::from_le_bytes(
            blob.get(..4)
                .ok_or_else(bad)?
                .try_into()
                .map_err(|_| bad())?,
        ) as usize;
        let trie = blob.get(4..4 + size).ok_or_else(bad)?;
        if !size.is_multiple_of(4) || size == 0 {
            return Err(bad());
        }
        let units = trie
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(CharsMap {
            units,
            replacements: blob[4 + size..].to_vec(),
        })
    }

    /// darts-clone common-prefix search, keeping the longest key that matches.
    fn longest_match(&self, key: &[u8]) -> Option<(String, usize)> {
        let unit = |pos: usize| self.units.get(pos).copied();
        let offset = |u: u32| ((u >> 10) << ((u & (1 << 9)) >> 6)) as usize;
        let label = |u: u32| u & ((1 << 31) | 0xff);
        let has_leaf = |u: u32| (u >> 8) & 1 == 1;
        let mut pos = offset(unit(0)?);
        let mut found = None;
        for (i, &b) in key.iter().enumerate() {
            pos ^= b as usize;
            let u = unit(pos)?;
            if label(u) != u32::from(b) {
                break;
            }
            pos ^= offset(u);
            if has_leaf(u) {
                let value = (unit(pos)? & ((1 << 31) - 1)) as usize;
                found = Some((value, i + 1));
            }
        }
        let (value, used) = found?;
        let tail = self.replacements.get(value..)?;
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        let replacement = String::from_utf8_lossy(&tail[..end]).into_owned();
        Some((replacement, used))
    }
}

fn parse_piece(bytes: &[u8]) -> std::result::Result<Piece, String> {
    let mut piece = Piece {
        text: String::new(),
        score: 0.0,
        kind: PieceType::Normal,
    };
    for f in Proto::new(bytes) {
        match f? {
            (1, Value::Bytes(b)) => {
                piece.text = String::from_utf8(b.to_vec()).map_err(|_| "piece is not UTF-8")?
            }
            (2, Value::Fixed32(v)) => piece.score = f32::from_bits(v),
            (3, Value::Varint(v)) => piece.kind = PieceType::from_proto(v),
            _ => {}
        }
    }
    Ok(piece)
}

/// One protobuf field value, by wire type.
enum Value<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32(u32),
}

/// Iterator over the (field number, value) pairs of one protobuf message.
struct Proto<'a> {
    rest: &'a [u8],
}

impl<'a> Proto<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Proto { rest: bytes }
    }

    fn varint(&mut self) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self.rest.split_first().ok_or("truncated varint")?;
            self.rest = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long".into())
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        if n > self.rest.len() {
            return Err("field runs past the end of the message".into());
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }
}

impl<'a> Iterator for Proto<'a> {
    type Item = std::result::Result<(u64, Value<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = (|| {
            let key = self.varint()?;
            let value = match key & 7 {
                0 => Value::Varint(self.varint()?),
                1 => {
                    self.take(8)?;
                    Value::Fixed64
                }
                2 => {
                    let len = usize::try_from(self.varint()?).map_err(|_| "length too large")?;
                    Value::Bytes(self.take(len)?)
                }
                5 => {
                    let b = self.take(4)?;
                    Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                }
                w => return Err(format!("unsupported protobuf wire type {w}")),
            };
            Ok((key >> 3, value))
        })();
        if field.is_err() {
            self.rest = &[]; // stop after the first error
        }
        Some(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built model: pieces with scores, no charsmap.
    fn model(pieces: &[(&str, f32, u64)], dummy_prefix: bool) -> SentencePiece {
        let mut bytes = Vec::new();
        for &(text, score, kind) in pieces {
            let mut p = vec![0x0a, text.len() as u8];
            p.extend_from_slice(text.as_bytes());
            p.push(0x15);
            p.extend_from_slice(&score.to_le_bytes());
            p.extend_from_slice(&[0x18, kind as u8]);
            bytes.extend_from_slice(&[0x0a, p.len() as u8]);
            bytes.extend_from_slice(&p);
        }
        // trainer_spec { unk_id: 0 }, normalizer_spec { add_dummy_prefix }
        bytes.extend_from_slice(&[0x12, 3, 0xc0, 0x02, 0]);
        bytes.extend_from_slice(&[0x1a, 2, 0x18, u8::from(dummy_prefix)]);
        SentencePiece::from_bytes(&bytes, Path::new("test")).unwrap()
    }

    #[test]
    fn viterbi_prefers_the_higher_scoring_split_and_merges_unknowns() {
        let m = model(
            &[
                ("<unk>", 0.0, 2),
                ("▁ab", -1.0, 1),
                ("▁a", -1.0, 1),
                ("b", -1.5, 1),
                ("c", -3.0, 1),
                ("▁", -2.0, 1),
            ],
            true,
        );
        assert_eq!(m.normalize("  ab   c "), "▁ab▁c");
        // "▁ab" (-1) beats "▁a" + "b" (-2.5)
        assert_eq!(m.encode("ab"), vec![1]);
        // x and y have no piece: one merged unknown between known pieces
        assert_eq!(m.encode("abxyc"), vec![1, 0, 4]);
        assert_eq!(m.encode(""), Vec::<u32>::new());
    }

    #[test]
    fn no_dummy_prefix_leaves_the_start_alone() {
        let m = model(&[("<unk>", 0.0, 2), ("a", -1.0, 1), ("▁a", -0.5, 1)], false);
        assert_eq!(m.normalize("a a"), "a▁a");
        assert_eq!(m.encode("a a"), vec![1, 2]);
    }

    #[test]
    fn truncated_or_foreign_bytes_are_errors_not_panics() {
        for bytes in [&b"\x0a\x05ab"[..], b"\xff\xff\xff", b"\x0b", b""] {
            assert!(SentencePiece::from_bytes(bytes, Path::new("x.model")).is_err());
        }
    }
}
