//! The GPT-2 pre-tokenizer (`ByteLevel`'s regex) on ASCII text, as a hand-written scanner.
//!
//! Why: `plan` tokenizes every caption, and running the regex (two DFA passes per word plus
//! the look-ahead emulation of `bpe::Splitter`) was about a tenth of a whole `plan`. On ASCII
//! the pattern's classes are plain byte ranges, so one forward scan gives the same words. Text
//! with any non-ASCII byte keeps the regex. `bpe`'s tests check this scanner against the regex
//! path on random ASCII strings built to hit every branch.
//!
//! The pattern, `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
//! on ASCII: letters are `A-Za-z`, numbers `0-9`, white space is `\t \n \x0b \x0c \r` and
//! space (Unicode `White_Space`; note `\x0b` is one, unlike in `u8::is_ascii_whitespace`).

/// What a byte is to the pattern.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Letter,
    Number,
    Space,
    Other,
}

fn class(b: u8) -> Class {
    match b {
        b'A'..=b'Z' | b'a'..=b'z' => Class::Letter,
        b'0'..=b'9' => Class::Number,
        b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' => Class::Space,
        _ => Class::Other,
    }
}

/// The end of the run of bytes of class `c` starting at `i`.
fn run_end(bytes: &[u8], mut i: usize, c: Class) -> usize {
    while i < bytes.len() && class(bytes[i]) == c {
        i += 1;
    }
    i
}

/// Length of the contraction (`'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d`) at the start of
/// `rest`, if any.
fn contraction(rest: &[u8]) -> Option<usize> {
    match rest {
        [b'\'', b's' | b't' | b'm' | b'd', ..] => Some(2),
        [b'\'', b'r', b'e', ..] | [b'\'', b'v', b'e', ..] | [b'\'', b'l', b'l', ..] => Some(3),
        _ => None,
    }
}

/// Calls `word` for each pre-token of the ASCII `text`, in order. The caller checks
/// `text.is_ascii()`.
pub(crate) fn split_ascii<'t>(text: &'t str, mut word: impl FnMut(&'t str)) {
    let bytes = text.as_bytes();
    let mut pos = 0;
    while pos < bytes.len() {
        let end = match_at(bytes, pos);
        word(&text[pos..end]);
        pos = end;
    }
}

/// The end of the pattern's match at `pos` (every byte starts one, so there are no gaps).
fn match_at(bytes: &[u8], pos: usize) -> usize {
    if let Some(len) = contraction(&bytes[pos..]) {
        return pos + len;
    }
    // ` ?X+` for X = letters, numbers, others: an optional leading space, then a run.
    let start = if bytes[pos] == b' ' && pos + 1 < bytes.len() {
        pos + 1
    } else {
        pos
    };
    match class(bytes[start]) {
        Class::Space => {}
        c => return run_end(bytes, start, c),
    }
    // White space: `\s+(?!\S)` takes the run, minus its last byte when a non-space follows
    // (that byte then leads the next word); a single byte before a non-space is `\s+`.
    let end = run_end(bytes, pos, Class::Space);
    if end < bytes.len() && end - pos > 1 {
        end - 1
    } else {
        end
    }
}
