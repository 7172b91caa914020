//! A fast, ids-only encoder for byte-level BPE tokenizers (GPT-2, Qwen2, Llama-3 style) that gives
//! exactly the ids of the Hugging Face `tokenizers` crate for the configurations it accepts.
//!
//! The `tokenizers` pipeline spends most of its ~30 µs per caption on bookkeeping we never read
//! (normalized-string alignments, offsets, per-split allocations, a backtracking regex). This one
//! does only what decides the ids: split on added tokens, NFC-normalize (non-ASCII pieces only),
//! pre-tokenize with the same regex run by the `regex` crate's automata, and merge bytes by rank.
//!
//! Support is decided once, at load, from the `tokenizer.json` and the loaded
//! `tokenizers::Tokenizer`; [`FastBpe::new`] refuses (with a reason) anything it does not
//! reproduce exactly, and the caller then keeps using the Hugging Face path.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use super::gpt2_split;

/// The GPT-2 pre-tokenizer regex that `ByteLevel { use_regex: true }` uses (the `tokenizers`
/// crate's own constant).
const GPT2_PATTERN: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// The one look-around this module knows how to emulate: it ends every common byte-level
/// pattern, and the `regex` crate has no look-around.
const WS_LOOKAHEAD_TAIL: &str = r"|\s+(?!\S)|\s+";

/// Most words a thread caches before the cache is emptied (bounds memory on unbounded text).
const CACHE_CAP: usize = 32 * 1024;

/// FxHash (rustc's hasher): the keys here are short byte strings and id pairs from our own
/// tokenizer, so a fast non-DoS-resistant hash is the right trade.
#[derive(Default, Clone, Copy)]
struct Fx(u64);

impl Hasher for Fx {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<Fx>>;

/// A thread's memo of word (raw UTF-8 bytes) → ids.
type WordCache = FxMap<Box<[u8]>, Box<[u32]>>;

/// Distinguishes instances in the per-thread word cache.
static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Word (raw UTF-8 bytes) → ids, for the instance whose number is in the first field.
    static WORD_CACHE: RefCell<(u64, WordCache)> = RefCell::new((0, WordCache::default()));
}

/// GPT-2's byte → printable character table (`bytes_to_unicode`).
fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            u32::from(b)
        } else {
            n += 1;
            255 + n
        };
        // Codes stay below 0x144, all valid scalar values.
        table[usize::from(b)] = char::from_u32(code).unwrap_or('\0');
    }
    table
}

/// A set of added tokens matched leftmost-longest, as the `tokenizers` crate's Aho-Corasick does.
#[derive(Debug, Clone)]
struct AddedSet {
    /// (content, id), longest first so the first hit at a position is the longest.
    tokens: Vec<(Box<[u8]>, u32)>,
    /// Bytes some token starts with: the scan skips every other position at once.
    first: [bool; 256],
}

impl Default for AddedSet {
    fn default() -> Self {
        AddedSet {
            tokens: Vec::new(),
            first: [false; 256],
        }
    }
}

impl AddedSet {
    fn push(&mut self, content: &[u8], id: u32) {
        self.first[usize::from(content[0])] = true;
        self.tokens.push((content.into(), id));
        self.tokens.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
    }

    /// Calls `piece(text, None)` for each stretch between added tokens and `piece("", Some(id))`
    /// for each added token, in order.
    fn split<'t>(&self, text: &'t str, mut piece: impl FnMut(&'t str, Option<u32>)) {
        if self.tokens.is_empty() {
            piece(text, None);
            return;
        }
        let bytes = text.as_bytes();
        let (mut start, mut i) = (0, 0);
        while i < bytes.len() {
            if self.first[usize::from(bytes[i])] {
                let rest = &bytes[i..];
                if let Some((c, id)) = self.tokens.iter().find(|(c, _)| rest.starts_with(c)) {
                    // A token is valid UTF-8 and starts at a char boundary of the text, so both
                    // slice ends are char boundaries.
                    if start < i {
                        piece(&text[start..i], None);
                    }
                    piece("", Some(*id));
                    i += c.len();
                    start = i;
                    continue;
                }
            }
            i += 1;
        }
        if start < bytes.len() {
            piece(&text[start..], None);
        }
    }
}

/// The pre-tokenizer: a regex whose matches (and the gaps between them) are the words.
#[derive(Debug, Clone)]
struct Splitter {
    /// The pattern with `\s+(?!\S)` dropped when the pattern had it.
    re: regex::Regex,
    /// `^(?:P)` for the branches P before `\s+(?!\S)`: tells whether a whitespace match came
    /// from P or from the final `\s+`, which then must give back its last character.
    head: Option<regex::Regex>,
    /// The pattern is GPT-2's: ASCII text is split by [`gpt2_split`], without the regex.
    gpt2: bool,
}

impl Splitter {
    fn new(pattern: &str) -> Result<Self, String> {
        let (body, head) = match pattern.strip_suffix(WS_LOOKAHEAD_TAIL) {
            Some(p) => (format!(r"{p}|\s+"), Some(p)),
            None => (pattern.to_string(), None),
        };
        // Anchors and word boundaries would see a different context once `head` runs on a
        // slice; none of the byte-level patterns use them.
        let unanchored = !body.contains("\\b")
            && !body.contains("\\B")
            && !body.contains("\\A")
            && !body.contains("\\z")
            && !body.contains('$')
            && !body.contains("(?m")
            && body
                .match_indices('^')
                .all(|(i, _)| body[..i].ends_with('['));
        if !unanchored {
            return Err(format!("pre-tokenizer regex with anchors: {pattern}"));
        }
        // The `regex` crate refuses look-around, so compiling also proves none is left.
        let re = regex::Regex::new(&body)
            .map_err(|e| format!("pre-tokenizer regex not supported ({e}): {pattern}"))?;
        if re.is_match("") {
            // Empty matches are iterated differently by fancy-regex and the `regex` crate.
            return Err(format!("pre-tokenizer regex matches empty text: {pattern}"));
        }
        let head = match head {
            Some(p) => Some(
                regex::Regex::new(&format!("^(?:{p})"))
                    .map_err(|e| format!("pre-tokenizer regex not supported ({e}): {pattern}"))?,
            ),
            None => None,
        };
        Ok(Splitter {
            re,
            head,
            gpt2: pattern == GPT2_PATTERN,
        })
    }

    /// Calls `word` for each pre-token of `text`, in order (HF `Split` with `Isolated`).
    fn split<'t>(&self, text: &'t str, word: impl FnMut(&'t str)) {
        if self.gpt2 && text.is_ascii() {
            gpt2_split::split_ascii(text, word);
        } else {
            self.split_with_regex(text, word);
        }
    }

    /// [`Splitter::split`] by the regex, whatever the text.
    fn split_with_regex<'t>(&self, text: &'t str, mut word: impl FnMut(&'t str)) {
        let mut pos = 0;
        while pos < text.len() {
            let Some(m) = self.re.find_at(text, pos) else {
                word(&text[pos..]);
                return;
            };
            if m.start() > pos {
                word(&text[pos..m.start()]);
            }
            let mut end = m.end();
            if let Some(head) = &self.head
                && end < text.len()
                && m.as_str().chars().all(char::is_whitespace)
                && !head.is_match(&text[m.start()..])
            {
                // The match came from the last branch, `\s+`, where the original pattern's
                // `\s+(?!\S)` would have matched all but the last whitespace character (or
                // nothing, for a single one, leaving `\s+` to take it).
                if let Some((last, _)) = m.as_str().char_indices().last()
                    && last > 0
                {
                    end = m.start() + last;
                }
            }
            if end == pos {
                // Cannot happen (no empty matches); never loop forever on it regardless.
                word(&text[pos..]);
                return;
            }
            word(&text[m.start()..end]);
            pos = end;
        }
    }
}

/// An ids-only byte-level BPE encoder equivalent to a supported Hugging Face tokenizer.
#[derive(Debug)]
pub struct FastBpe {
    /// Key of this instance in the per-thread word cache.
    instance: u64,
    /// Added tokens matched on the raw text (`normalized: false`).
    raw_added: AddedSet,
    /// Added tokens matched after normalization (`normalized: true`), by normalized content.
    norm_added: AddedSet,
    /// Whether the normalizer is NFC (else there is none).
    nfc: bool,
    splitter: Splitter,
    /// Id of each single byte's token.
    byte_ids: [u32; 256],
    /// (left id, right id) packed in a u64 → (rank, merged id).
    merges: FxMap<u64, (u32, u32)>,
    /// With `ignore_merges`: whole words (as raw bytes) that are tokens of their own.
    whole_words: Option<FxMap<Box<[u8]>, u32>>,
}

impl Clone for FastBpe {
    fn clone(&self) -> Self {
        FastBpe {
            // Same tables, same ids: sharing the cache would be correct, but a fresh key keeps
            // the rule simple (one instance, one key).
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            raw_added: self.raw_added.clone(),
            norm_added: self.norm_added.clone(),
            nfc: self.nfc,
            splitter: self.splitter.clone(),
            byte_ids: self.byte_ids,
            merges: self.merges.clone(),
            whole_words: self.whole_words.clone(),
        }
    }
}

fn pair_key(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

/// NFC of `s` through the `tokenizers` crate's own normalizer, so both paths agree on Unicode
/// versions. ASCII is its own NFC.
fn nfc(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        return Cow::Borrowed(s);
    }
    use tokenizers::Normalizer;
    let mut n = tokenizers::NormalizedString::from(s);
    match tokenizers::normalizers::unicode::NFC.normalize(&mut n) {
        Ok(()) => Cow::Owned(n.get().to_string()),
        // NFC cannot fail in `tokenizers`; if it ever did, the HF path would fail too.
        Err(_) => Cow::Borrowed(s),
    }
}

fn get_bool(v: &Value, key: &str, default: bool) -> Result<bool, String> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(format!("{key} is not a boolean: {other}")),
    }
}

impl FastBpe {
    /// Builds the fast encoder for the tokenizer in `json` (already loaded as `tok`), or says why
    /// this configuration is left to the Hugging Face path.
    pub fn new(json: &[u8], tok: &tokenizers::Tokenizer) -> Result<Self, String> {
        let root: Value =
            serde_json::from_slice(json).map_err(|e| format!("tokenizer.json: {e}"))?;
        let tokenizers::models::ModelWrapper::BPE(bpe) = tok.get_model() else {
            return Err("model is not BPE".into());
        };
        if bpe.dropout.is_some() {
            return Err("BPE dropout".into());
        }
        if bpe
            .continuing_subword_prefix
            .as_deref()
            .is_some_and(|p| !p.is_empty())
            || bpe
                .end_of_word_suffix
                .as_deref()
                .is_some_and(|s| !s.is_empty())
        {
            return Err("continuing_subword_prefix / end_of_word_suffix".into());
        }
        if tok.get_encode_special_tokens() {
            return Err("encode_special_tokens is set".into());
        }

        let nfc_on = match root.get("normalizer") {
            None | Some(Value::Null) => false,
            Some(n) if n.get("type").and_then(Value::as_str) == Some("NFC") => true,
            Some(n) => return Err(format!("normalizer {n}")),
        };
        let splitter = Self::pre_tokenizer(root.get("pre_tokenizer").unwrap_or(&Value::Null))?;

        // Every byte must be a token: then no character is ever unknown, and `unk_token`,
        // `fuse_unk` and `byte_fallback` never come into play.
        let vocab = bpe.get_vocab();
        let table = byte_to_char();
        let mut byte_ids = [0u32; 256];
        let mut char_to_byte = HashMap::new();
        for (b, c) in table.iter().enumerate() {
            byte_ids[b] = *vocab
                .get(c.to_string().as_str())
                .ok_or_else(|| format!("byte {b:#04x} ({c}) is not in the vocabulary"))?;
            char_to_byte.insert(*c, b as u8);
        }
        let to_bytes = |token: &str| -> Option<Vec<u8>> {
            token
                .chars()
                .map(|c| char_to_byte.get(&c).copied())
                .collect()
        };

        let merges = Self::merges(root.pointer("/model/merges"), &vocab)?;
        let whole_words = if bpe.ignore_merges {
            let mut w = FxMap::default();
            for (token, id) in &vocab {
                if let Some(bytes) = to_bytes(token) {
                    w.insert(bytes.into_boxed_slice(), *id);
                }
            }
            Some(w)
        } else {
            None
        };

        let (mut raw_added, mut norm_added) = (AddedSet::default(), AddedSet::default());
        let mut seen = std::collections::HashSet::new();
        for t in root
            .get("added_tokens")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let content = t
                .get("content")
                .and_then(Value::as_str)
                .ok_or("added token without content")?;
            let id = t
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|i| u32::try_from(i).ok())
                .ok_or("added token without id")?;
            for flag in ["single_word", "lstrip", "rstrip"] {
                if get_bool(t, flag, false)? {
                    return Err(format!("added token {content:?} has {flag}"));
                }
            }
            if content.is_empty() || !seen.insert(content.to_string()) {
                return Err(format!("added token {content:?} empty or repeated"));
            }
            if tok.token_to_id(content) != Some(id) {
                return Err(format!("added token {content:?} id mismatch"));
            }
            // Special tokens default to normalized = false, others to true.
            let special = get_bool(t, "special", false)?;
            if get_bool(t, "normalized", !special)? {
                let normalized = if nfc_on {
                    nfc(content)
                } else {
                    Cow::Borrowed(content)
                };
                if normalized.is_empty() {
                    return Err(format!("added token {content:?} normalizes to nothing"));
                }
                norm_added.push(normalized.as_bytes(), id);
            } else {
                raw_added.push(content.as_bytes(), id);
            }
        }

        Ok(FastBpe {
            instance: NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed),
            raw_added,
            norm_added,
            nfc: nfc_on,
            splitter,
            byte_ids,
            merges,
            whole_words,
        })
    }

    /// The supported pre-tokenizers: `ByteLevel` with its own regex, or `Split(regex,
    /// Isolated)` followed by a regex-less `ByteLevel`; neither adding a prefix space.
    fn pre_tokenizer(pt: &Value) -> Result<Splitter, String> {
        let byte_level_ok = |v: &Value, regex: bool| -> Result<bool, String> {
            Ok(v.get("type").and_then(Value::as_str) == Some("ByteLevel")
                && !get_bool(v, "add_prefix_space", true)?
                && get_bool(v, "use_regex", true)? == regex)
        };
        match pt.get("type").and_then(Value::as_str) {
            Some("ByteLevel") if byte_level_ok(pt, true)? => Splitter::new(GPT2_PATTERN),
            Some("Sequence") => {
                let steps = pt
                    .get("pretokenizers")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let [split, bl] = steps else {
                    return Err(format!("pre-tokenizer {pt}"));
                };
                let pattern = split.pointer("/pattern/Regex").and_then(Value::as_str);
                let ok = split.get("type").and_then(Value::as_str) == Some("Split")
                    && split.get("behavior").and_then(Value::as_str) == Some("Isolated")
                    && !get_bool(split, "invert", false)?
                    && byte_level_ok(bl, false)?;
                match pattern {
                    Some(p) if ok => Splitter::new(p),
                    _ => Err(format!("pre-tokenizer {pt}")),
                }
            }
            _ => Err(format!("pre-tokenizer {pt}")),
        }
    }

    /// The merge table, ranked as `tokenizers` ranks it ("a b" strings skip `#version` lines; a
    /// repeated pair keeps its last rank).
    fn merges(
        merges: Option<&Value>,
        vocab: &HashMap<String, u32>,
    ) -> Result<FxMap<u64, (u32, u32)>, String> {
        let list = merges
            .and_then(Value::as_array)
            .ok_or("model.merges missing")?;
        let mut out = FxMap::default();
        let mut rank = 0u32;
        for m in list {
            let (a, b) = match m {
                Value::String(s) if s.starts_with("#version") => continue,
                Value::String(s) => match s.split(' ').collect::<Vec<_>>()[..] {
                    [a, b] => (a, b),
                    _ => return Err(format!("bad merge {s:?}")),
                },
                Value::Array(p) => match &p[..] {
                    [Value::String(a), Value::String(b)] => (a.as_str(), b.as_str()),
                    _ => return Err(format!("bad merge {m}")),
                },
                _ => return Err(format!("bad merge {m}")),
            };
            let id = |t: &str| {
                vocab
                    .get(t)
                    .copied()
                    .ok_or_else(|| format!("merge token {t:?} not in vocabulary"))
            };
            out.insert(pair_key(id(a)?, id(b)?), (rank, id(&format!("{a}{b}"))?));
            rank += 1;
        }
        Ok(out)
    }

    /// Token ids of `text`, no special tokens added: the same as
    /// `tokenizers::Tokenizer::encode_fast(text, false)` gives.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 4);
        WORD_CACHE.with(|cell| {
            // A re-entrant borrow cannot happen (nothing here calls back into `encode`); if it
            // somehow did, encoding without the cache is still correct.
            let mut guard = cell.try_borrow_mut().ok();
            let mut cache = guard.as_deref_mut().map(|(owner, map)| {
                if *owner != self.instance {
                    *owner = self.instance;
                    map.clear();
                }
                map
            });
            self.raw_added.split(text, |piece, added| match added {
                Some(id) => out.push(id),
                None => {
                    let normalized = if self.nfc {
                        nfc(piece)
                    } else {
                        Cow::Borrowed(piece)
                    };
                    self.norm_added
                        .split(&normalized, |piece, added| match added {
                            Some(id) => out.push(id),
                            None => self.splitter.split(piece, |word| {
                                self.word(word.as_bytes(), cache.as_deref_mut(), &mut out)
                            }),
                        });
                }
            });
        });
        out
    }

    /// Appends the ids of one pre-token.
    fn word(&self, word: &[u8], cache: Option<&mut WordCache>, out: &mut Vec<u32>) {
        if let [b] = word {
            out.push(self.byte_ids[usize::from(*b)]);
            return;
        }
        if let Some(id) = self.whole_words.as_ref().and_then(|w| w.get(word)) {
            out.push(*id);
            return;
        }
        let Some(cache) = cache else {
            out.extend(self.merge(word));
            return;
        };
        if let Some(ids) = cache.get(word) {
            out.extend_from_slice(ids);
            return;
        }
        let ids = self.merge(word);
        out.extend_from_slice(&ids);
        if cache.len() >= CACHE_CAP {
            cache.clear();
        }
        cache.insert(word.into(), ids.into_boxed_slice());
    }

    /// BPE on one word: repeatedly merges the lowest-ranked adjacent pair, leftmost first, which
    /// is the order the `tokenizers` crate's priority queue produces.
    fn merge(&self, word: &[u8]) -> Vec<u32> {
        let mut syms: Vec<u32> = word
            .iter()
            .map(|b| self.byte_ids[usize::from(*b)])
            .collect();
        // Rank of the pair starting at each position (u32::MAX: no merge); only the neighbours
        // of a merge change, so each step rescans for the minimum but looks up two pairs.
        let lookup = |a: u32, b: u32| self.merges.get(&pair_key(a, b)).copied();
        let mut ranks: Vec<(u32, u32)> = syms
            .windows(2)
            .map(|w| lookup(w[0], w[1]).unwrap_or((u32::MAX, 0)))
            .collect();
        loop {
            let mut best = None;
            let mut best_rank = u32::MAX;
            for (i, (rank, _)) in ranks.iter().enumerate() {
                if *rank < best_rank {
                    best_rank = *rank;
                    best = Some(i);
                }
            }
            let Some(i) = best else { break };
            syms[i] = ranks[i].1;
            syms.remove(i + 1);
            ranks.remove(i);
            if i + 1 < syms.len() {
                ranks[i] = lookup(syms[i], syms[i + 1]).unwrap_or((u32::MAX, 0));
            }
            if i > 0 {
                ranks[i - 1] = lookup(syms[i - 1], syms[i]).unwrap_or((u32::MAX, 0));
            }
        }
        syms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_table_is_gpt2() {
        let t = byte_to_char();
        assert_eq!(t[usize::from(b' ')], 'Ġ');
        assert_eq!(t[usize::from(b'\n')], 'Ċ');
        assert_eq!(t[usize::from(b'a')], 'a');
        assert_eq!(t[0], 'Ā');
        let distinct: std::collections::HashSet<_> = t.iter().collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn whitespace_lookahead_is_emulated() {
        let s = Splitter::new(GPT2_PATTERN).unwrap();
        let words = |text| {
            let mut w = Vec::new();
            s.split(text, |x| w.push(x.to_string()));
            w
        };
        assert_eq!(words("a   b"), ["a", "  ", " b"]);
        assert_eq!(words("a \tb"), ["a", " ", "\t", "b"]);
        assert_eq!(words("a  "), ["a", "  "]);
        assert_eq!(words("a b"), ["a", " b"]);
        // The same through the regex (the strings above take the ASCII scanner).
        let mut w = Vec::new();
        s.split_with_regex("a   b", |x| w.push(x.to_string()));
        assert_eq!(w, ["a", "  ", " b"]);
    }

    #[test]
    fn ascii_scanner_equals_the_regex() {
        let s = Splitter::new(GPT2_PATTERN).unwrap();
        assert!(s.gpt2);
        // Pieces that reach every branch: contractions (and near misses), each white-space
        // byte, letters, digits, punctuation, control bytes.
        let pieces = [
            "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'r", "'l", "'", "''", "'S", "a", "Zq",
            "word", "7", "2024", " ", "  ", "\t", "\n", "\r\n", "\x0b", "\x0c", ".", "!?", "-",
            "\x00", "\x1f", "\x7f", "<image>", "_", "\"", "é",
        ];
        let mut rng = crate::pack::rng::SplitMix64::new(3);
        let mut ascii_cases = 0;
        for _ in 0..20_000 {
            let text: String = (0..rng.below(12))
                .map(|_| pieces[rng.below(pieces.len())])
                .collect();
            let (mut fast, mut slow) = (Vec::new(), Vec::new());
            s.split(&text, |w| fast.push(w));
            s.split_with_regex(&text, |w| slow.push(w));
            assert_eq!(fast, slow, "{text:?}");
            ascii_cases += usize::from(text.is_ascii());
        }
        assert!(ascii_cases > 10_000, "{ascii_cases}");
    }

    #[test]
    fn added_tokens_match_leftmost_longest() {
        let mut set = AddedSet::default();
        set.push(b"<a>", 7);
        set.push(b"<a>b", 8);
        let mut got = Vec::new();
        set.split("x<a>b<a>", |p, id| got.push((p.to_string(), id)));
        assert_eq!(
            got,
            [
                ("x".to_string(), None),
                (String::new(), Some(8)),
                (String::new(), Some(7))
            ]
        );
    }
}
