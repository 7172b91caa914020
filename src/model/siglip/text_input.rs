//! Captions to SigLIP text-tower input ids, as transformers prepares them.
//!
//! Two tokenizers are found in SigLIP folders:
//! - `spiece.model` with `tokenizer_class: SiglipTokenizer` (the original SigLIP checkpoints).
//!   transformers canonicalizes each caption first (lowercase, ASCII punctuation removed,
//!   whitespace squashed, stripped), splits out special tokens written in the text, encodes each
//!   piece after an `<unk>` prefix that it then cuts off (so the dummy prefix never attaches to
//!   the text), appends `</s>`, truncates and pads with `</s>` to the text length.
//! - `tokenizer.json` (SigLIP 2 fixed-resolution checkpoints and others): encoded by the
//!   `tokenizers` crate with its own special tokens, truncated and padded to the text length.
//!
//! Either way the result has exactly `max_position_embeddings` ids, because SigLIP's text tower
//! pools the last position and was trained with `padding="max_length"`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::spiece::{SPACE_SYMBOL, SentencePiece};

/// A SigLIP text tokenizer with its length.
#[derive(Debug, Clone)]
pub struct SiglipTextInput {
    kind: Kind,
    /// Output length: the text tower's `max_position_embeddings`.
    max_len: usize,
    pad_id: u32,
}

#[derive(Debug, Clone)]
enum Kind {
    Spiece(Box<SpieceRules>),
    Json(Box<tokenizers::Tokenizer>),
}

/// transformers' `SiglipTokenizer` around a SentencePiece model.
#[derive(Debug, Clone)]
struct SpieceRules {
    sp: SentencePiece,
    lowercase: bool,
    eos_id: u32,
    /// Special tokens split out of the text before encoding, longest first.
    specials: Vec<(String, u32)>,
    /// Pieces that `<unk>` itself encodes to (the prefix cut off every encoding).
    unk_prefix_len: usize,
    /// Id of the bare `▁` piece, dropped when it is all that precedes a special token.
    space_piece: Option<u32>,
}

impl SiglipTextInput {
    /// Loads the tokenizer of a model folder; `max_len` is the text tower's length and
    /// `config_pad_id` the config's `pad_token_id` (used when the tokenizer names none).
    pub fn from_dir(dir: &Path, max_len: usize, config_pad_id: Option<u32>) -> Result<Self> {
        let tok_config = read_tokenizer_config(dir)?;
        let class = tok_config
            .get("tokenizer_class")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        let spiece = dir.join("spiece.model");
        let json = dir.join("tokenizer.json");
        let use_spiece = spiece.is_file() && (class == "SiglipTokenizer" || !json.is_file());
        if use_spiece {
            Self::spiece(&spiece, &tok_config, max_len)
        } else if json.is_file() {
            Self::json(&json, &tok_config, max_len, config_pad_id)
        } else {
            Err(Error::Tokenizer {
                path: dir.to_path_buf(),
                reason: "no tokenizer in the model folder (spiece.model or tokenizer.json)".into(),
            })
        }
    }

    fn spiece(path: &Path, config: &serde_json::Value, max_len: usize) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let sp = SentencePiece::from_bytes(&bytes, path)?;
        let token = |key: &str, default: &str| token_name(config, key).unwrap_or(default.into());
        let id_of = |name: &str| {
            sp.piece_id(name).ok_or_else(|| Error::Tokenizer {
                path: path.to_path_buf(),
                reason: format!("special token `{name}` is not in the model"),
            })
        };
        let (eos, pad, unk) = (
            token("eos_token", "</s>"),
            token("pad_token", "</s>"),
            token("unk_token", "<unk>"),
        );
        let (eos_id, pad_id, unk_id) = (id_of(&eos)?, id_of(&pad)?, id_of(&unk)?);
        let mut specials = vec![(eos.clone(), eos_id), (unk.clone(), unk_id)];
        if pad != eos {
            specials.push((pad.clone(), pad_id));
        }
        specials.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        let unk_prefix_len = sp.encode(&unk).len();
        let space_piece = sp.piece_id(&SPACE_SYMBOL.to_string());
        let lowercase = config
            .get("do_lower_case")
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        let rules = SpieceRules {
            sp,
            lowercase,
            eos_id,
            specials,
            unk_prefix_len,
            space_piece,
        };
        Ok(SiglipTextInput {
            kind: Kind::Spiece(Box::new(rules)),
            max_len,
            pad_id,
        })
    }

    fn json(
        path: &Path,
        config: &serde_json::Value,
        max_len: usize,
        config_pad_id: Option<u32>,
    ) -> Result<Self> {
        let err = |reason: String| Error::Tokenizer {
            path: path.to_path_buf(),
            reason,
        };
        let mut tok =
            tokenizers::Tokenizer::from_file(path).map_err(|e| err(format!("cannot load: {e}")))?;
        let pad_id = token_name(config, "pad_token")
            .and_then(|name| tok.token_to_id(&name))
            .or(config_pad_id)
            .ok_or_else(|| {
                err("no pad token: neither tokenizer_config nor config name one".into())
            })?;
        tok.with_truncation(Some(tokenizers::TruncationParams {
            max_length: max_len,
            ..Default::default()
        }))
        .map_err(|e| err(format!("cannot set truncation: {e}")))?;
        tok.with_padding(None);
        Ok(SiglipTextInput {
            kind: Kind::Json(Box::new(tok)),
            max_len,
            pad_id,
        })
    }

    /// Text length of every encoding.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The ids the text tower takes for `text`: exactly `max_len` of them.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = match &self.kind {
            Kind::Spiece(rules) => rules.encode(text, self.max_len),
            Kind::Json(tok) => tok
                .encode(text, true)
                .map_err(|e| Error::Encode {
                    tokenizer: "tokenizer.json".into(),
                    reason: e.to_string(),
                })?
                .get_ids()
                .to_vec(),
        };
        ids.truncate(self.max_len);
        ids.resize(self.max_len, self.pad_id);
        Ok(ids)
    }
}

impl SpieceRules {
    fn encode(&self, text: &str, max_len: usize) -> Vec<u32> {
        let escaped: String = std::iter::once(SPACE_SYMBOL)
            .chain(
                text.chars()
                    .map(|c| if c == SPACE_SYMBOL { ' ' } else { c }),
            )
            .collect();
        let mut ids = Vec::new();
        let mut leading_space_only = false;
        for (i, chunk) in self.split_specials(&escaped).into_iter().enumerate() {
            match chunk {
                Chunk::Special(id) => {
                    // transformers drops a lone leading `▁` that only precedes a special token
                    if i == 1 && leading_space_only {
                        ids.clear();
                    }
                    ids.push(id);
                }
                Chunk::Text(t) => {
                    let canonical = canonicalize(t, self.lowercase);
                    let prefixed = format!(
                        "{}{}",
                        self.specials
                            .iter()
                            .find(|(_, id)| *id == self.sp.unk_id())
                            .map_or("<unk>", |(s, _)| s.as_str()),
                        canonical
                    );
                    let all = self.sp.encode(&prefixed);
                    let piece = if all.len() >= self.unk_prefix_len {
                        &all[self.unk_prefix_len..]
                    } else {
                        &all[..]
                    };
                    if i == 0 {
                        leading_space_only = piece.len() == 1 && Some(piece[0]) == self.space_piece;
                    }
                    ids.extend_from_slice(piece);
                }
            }
        }
        // transformers truncates to leave room for `</s>`, then appends it unless already last.
        ids.truncate(max_len.saturating_sub(1));
        if ids.last() != Some(&self.eos_id) {
            ids.push(self.eos_id);
        }
        ids
    }

    /// Splits out the special tokens written in the text, leftmost first, longest on a tie.
    fn split_specials<'a>(&self, text: &'a str) -> Vec<Chunk<'a>> {
        let mut out = Vec::new();
        let mut rest = text;
        loop {
            let next = self
                .specials
                .iter()
                .filter_map(|(s, id)| rest.find(s.as_str()).map(|at| (at, s.len(), *id)))
                .min_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
            match next {
                Some((at, len, id)) => {
                    if at > 0 {
                        out.push(Chunk::Text(&rest[..at]));
                    }
                    out.push(Chunk::Special(id));
                    rest = &rest[at + len..];
                }
                None => {
                    if !rest.is_empty() {
                        out.push(Chunk::Text(rest));
                    }
                    return out;
                }
            }
        }
    }
}

enum Chunk<'a> {
    Text(&'a str),
    Special(u32),
}

/// transformers' `SiglipTokenizer.canonicalize_text`: lowercase (optionally), drop ASCII
/// punctuation, squash whitespace runs to one space, strip. Whitespace is Python's `str.isspace`.
pub fn canonicalize(text: &str, lowercase: bool) -> String {
    let lowered;
    let text = if lowercase {
        lowered = text.to_lowercase();
        lowered.as_str()
    } else {
        text
    };
    let mut out = String::with_capacity(text.len());
    let mut in_space = false;
    for c in text.chars().filter(|c| !c.is_ascii_punctuation()) {
        if py_isspace(c) {
            in_space = true;
        } else {
            if in_space && !out.is_empty() {
                out.push(' ');
            }
            in_space = false;
            out.push(c);
        }
    }
    out
}

/// Python's `str.isspace`: Unicode White_Space plus the ASCII information separators.
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn read_tokenizer_config(dir: &Path) -> Result<serde_json::Value> {
    let path: PathBuf = dir.join("tokenizer_config.json");
    if !path.is_file() {
        return Ok(serde_json::Value::Null);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Tokenizer {
        path,
        reason: format!("not JSON: {e}"),
    })
}

/// A token named in tokenizer_config.json: a string, or an object with `content`.
fn token_name(config: &serde_json::Value, key: &str) -> Option<String> {
    match config.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        v => v.get("content")?.as_str().map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonicalize_matches_transformers_rules() {
        assert_eq!(
            canonicalize("  Hello,   World!\t\nA-b ", true),
            "hello world ab"
        );
        assert_eq!(canonicalize("Keep CASE.", false), "Keep CASE");
        assert_eq!(canonicalize("!!!", true), "");
        // U+3000 (ideographic space) and U+001F are whitespace to Python; U+2581 is not
        assert_eq!(canonicalize("a\u{3000}b\u{1f}c ▁d", true), "a b c ▁d");
    }
}
