//! Text tokenizers: a Hugging Face `tokenizer.json` (BPE, WordPiece, Unigram, ...) through the
//! `tokenizers` crate, or a byte fallback when no tokenizer is given.
//!
//! Byte-level BPE tokenizers (GPT-2, Qwen2, Llama-3 style) are encoded by [`FastBpe`] instead,
//! about an order of magnitude faster and with the same ids; whether a tokenizer qualifies is
//! decided when it is loaded, and every other configuration goes through `tokenizers`.
//!
//! Encoding never adds special tokens (BOS/EOS, templates): the sequence layout
//! ([`crate::pack::sequence`]) decides every token that is not text. Truncation and padding saved in
//! a `tokenizer.json` are switched off on load, because the planner must see each text's full
//! length and do its own truncation.

use std::path::Path;

use crate::error::{Error, Result};
use crate::model::bpe::FastBpe;

/// The tiny byte-level BPE tokenizer made by `tests/fixtures/text/make_tokenizer.py`, for the `demo`
/// command and tests. Its special tokens: `<|endoftext|>` = 0, `<img>` = 1, `<IMG_CONTEXT>` = 2,
/// `</img>` = 3.
const DEMO_TOKENIZER_JSON: &str = include_str!("demo_tokenizer.json");

/// Turns text into token ids. `Sync`: one instance is shared by all rayon workers.
#[derive(Debug, Clone)]
pub enum TextTokenizer {
    /// A Hugging Face tokenizer loaded from `tokenizer.json`.
    Hf(Box<HfTokenizer>),
    /// One token per UTF-8 byte, id = byte value: a stand-in that needs no files, for counting and
    /// tests. It has no special tokens.
    Bytes,
}

/// A loaded `tokenizer.json`: the `tokenizers` crate's tokenizer, and the fast encoder when the
/// configuration is one it reproduces exactly.
#[derive(Debug, Clone)]
pub struct HfTokenizer {
    tok: tokenizers::Tokenizer,
    fast: Option<FastBpe>,
    /// Why `fast` is `None` (for logs and tests).
    fallback_reason: Option<String>,
}

impl TextTokenizer {
    /// Loads a Hugging Face `tokenizer.json`. `path` may also be a model directory holding one.
    pub fn from_file(path: &Path) -> Result<Self> {
        let file = if path.is_dir() {
            path.join("tokenizer.json")
        } else {
            path.to_path_buf()
        };
        let err = |reason: String| Error::Tokenizer {
            path: file.clone(),
            reason,
        };
        let bytes = std::fs::read(&file).map_err(|e| err(format!("cannot read: {e}")))?;
        Self::from_json_bytes(&bytes).map_err(err)
    }

    /// The embedded tiny demo tokenizer: byte-level BPE, vocabulary of 400, made by
    /// `tests/fixtures/text/make_tokenizer.py`; `<img>` = 1, `<IMG_CONTEXT>` = 2, `</img>` = 3.
    pub fn demo() -> Self {
        match Self::from_json_bytes(DEMO_TOKENIZER_JSON.as_bytes()) {
            Ok(t) => t,
            // The file is compiled in and tested by `demo_tokenizer_loads`; failing here is a
            // build defect, not bad input data.
            Err(e) => unreachable!("embedded demo tokenizer is invalid: {e}"),
        }
    }

    /// The byte fallback: one token per UTF-8 byte.
    pub fn bytes() -> Self {
        TextTokenizer::Bytes
    }

    fn from_json_bytes(bytes: &[u8]) -> std::result::Result<Self, String> {
        let mut tok = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| format!("not a valid Hugging Face tokenizer.json: {e}"))?;
        tok.with_truncation(None)
            .map_err(|e| format!("cannot disable truncation: {e}"))?;
        tok.with_padding(None);
        let (fast, fallback_reason) = match FastBpe::new(bytes, &tok) {
            Ok(f) => (Some(f), None),
            Err(reason) => (None, Some(reason)),
        };
        Ok(TextTokenizer::Hf(Box::new(HfTokenizer {
            tok,
            fast,
            fallback_reason,
        })))
    }

    /// Whether `encode` takes the fast byte-level BPE path; `Err` says why not.
    pub fn fast_path(&self) -> std::result::Result<(), String> {
        match self {
            TextTokenizer::Bytes => Err("byte tokenizer".to_string()),
            TextTokenizer::Hf(h) if h.fast.is_some() => Ok(()),
            TextTokenizer::Hf(h) => Err(h.fallback_reason.clone().unwrap_or_default()),
        }
    }

    /// `encode` through the `tokenizers` crate even where the fast path exists: the reference
    /// that tests and benches compare the fast path with.
    pub fn encode_reference(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            TextTokenizer::Bytes => self.encode(text),
            TextTokenizer::Hf(h) => self.encode_hf(&h.tok, text),
        }
    }

    fn encode_hf(&self, tok: &tokenizers::Tokenizer, text: &str) -> Result<Vec<u32>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        // encode_fast skips the offset bookkeeping we never read.
        let enc = tok.encode_fast(text, false).map_err(|e| Error::Encode {
            tokenizer: self.name(),
            reason: e.to_string(),
        })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Token ids of `text`, with no special tokens added. Special tokens written in the text itself
    /// (e.g. a literal `<img>` in a caption) are matched as such, as Hugging Face does.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            TextTokenizer::Bytes => Ok(text.bytes().map(u32::from).collect()),
            TextTokenizer::Hf(h) => match &h.fast {
                Some(fast) => Ok(fast.encode(text)),
                None => self.encode_hf(&h.tok, text),
            },
        }
    }

    /// Number of tokens of `text` (same as `encode(text)?.len()`).
    pub fn count(&self, text: &str) -> Result<usize> {
        match self {
            TextTokenizer::Bytes => Ok(text.len()),
            TextTokenizer::Hf(_) => Ok(self.encode(text)?.len()),
        }
    }

    /// The id of a token (meant for special tokens such as `<img>`); `None` if it is not in the
    /// vocabulary. The byte tokenizer has no tokens by name and always answers `None`.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        match self {
            TextTokenizer::Bytes => None,
            TextTokenizer::Hf(h) => h.tok.token_to_id(token),
        }
    }

    /// Like [`token_id`](Self::token_id), but a missing token is an error naming it.
    pub fn require_token_id(&self, token: &str) -> Result<u32> {
        self.token_id(token).ok_or_else(|| Error::MissingToken {
            tokenizer: self.name(),
            token: token.to_string(),
        })
    }

    /// Vocabulary size including added tokens (256 for the byte tokenizer).
    pub fn vocab_size(&self) -> usize {
        match self {
            TextTokenizer::Bytes => 256,
            TextTokenizer::Hf(h) => h.tok.get_vocab_size(true),
        }
    }

    /// A short description for logs, e.g. `hf-bpe (vocab 400)` or `bytes`.
    pub fn name(&self) -> String {
        match self {
            TextTokenizer::Bytes => "bytes".to_string(),
            TextTokenizer::Hf(h) => {
                use tokenizers::models::ModelWrapper;
                let tok = &h.tok;
                let kind = match tok.get_model() {
                    ModelWrapper::BPE(_) => "bpe",
                    ModelWrapper::WordPiece(_) => "wordpiece",
                    ModelWrapper::WordLevel(_) => "wordlevel",
                    ModelWrapper::Unigram(_) => "unigram",
                };
                format!("hf-{kind} (vocab {})", tok.get_vocab_size(true))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_tokenizer_loads() {
        let t = TextTokenizer::demo();
        assert_eq!(t.name(), "hf-bpe (vocab 400)");
        assert_eq!(t.token_id("<img>"), Some(1));
        assert_eq!(t.token_id("<IMG_CONTEXT>"), Some(2));
        assert_eq!(t.token_id("</img>"), Some(3));
        assert_eq!(t.token_id("<nope>"), None);
        assert!(matches!(
            t.require_token_id("<nope>"),
            Err(Error::MissingToken { .. })
        ));
        let ids = t.encode("A photo of a dog.").unwrap();
        assert!(!ids.is_empty());
        assert_eq!(t.count("A photo of a dog.").unwrap(), ids.len());
        assert_eq!(t.encode("").unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn bytes_tokenizer_is_utf8_bytes() {
        let t = TextTokenizer::bytes();
        assert_eq!(t.encode("aé").unwrap(), vec![97, 0xc3, 0xa9]);
        assert_eq!(t.count("aé").unwrap(), 3);
        assert_eq!(t.token_id("<img>"), None);
        assert_eq!(t.name(), "bytes");
        assert_eq!(t.vocab_size(), 256);
    }

    #[test]
    fn missing_and_invalid_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.json");
        let e = TextTokenizer::from_file(&missing).unwrap_err().to_string();
        assert!(
            e.contains("absent.json") && e.contains("cannot read"),
            "{e}"
        );

        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, b"{\"model\": 3}").unwrap();
        let e = TextTokenizer::from_file(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.json") && e.contains("not a valid"), "{e}");

        // A directory means its tokenizer.json.
        let e = TextTokenizer::from_file(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("tokenizer.json"), "{e}");
        std::fs::write(dir.path().join("tokenizer.json"), DEMO_TOKENIZER_JSON).unwrap();
        assert!(TextTokenizer::from_file(dir.path()).is_ok());
    }

    #[test]
    fn saved_truncation_is_ignored() {
        // A tokenizer.json that asks for truncation at 4 tokens must still encode whole texts.
        let mut json: serde_json::Value = serde_json::from_str(DEMO_TOKENIZER_JSON).unwrap();
        json["truncation"] = serde_json::json!({
            "direction": "Right", "max_length": 4, "strategy": "LongestFirst", "stride": 0
        });
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.json");
        std::fs::write(&p, json.to_string()).unwrap();
        let t = TextTokenizer::from_file(&p).unwrap();
        let text = "The quick brown fox jumps over the lazy dog.";
        assert!(t.encode(text).unwrap().len() > 4);
        assert_eq!(
            t.encode(text).unwrap(),
            TextTokenizer::demo().encode(text).unwrap()
        );
    }

    #[test]
    fn tokenizer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<TextTokenizer>();
    }

    /// Prints encode speed for short captions; run with `--nocapture` to see it. The assertion
    /// only guards against something pathological (it must pass on a loaded debug build).
    #[test]
    fn encode_speed_short_captions() {
        let t = TextTokenizer::demo();
        let captions = [
            "A photo of a dog running on the beach at sunset.",
            "Two people riding bicycles down a city street in the rain.",
            "一只猫坐在窗台上。 A cat on a windowsill 🐱",
            "An aerial view of a river winding through a green forest, 2024.",
        ];
        let n = 2000;
        let start = std::time::Instant::now();
        let mut tokens = 0;
        for i in 0..n {
            tokens += t.encode(captions[i % captions.len()]).unwrap().len();
        }
        let per = start.elapsed().as_secs_f64() * 1e6 / n as f64;
        println!("demo tokenizer: {per:.2} µs/caption ({tokens} tokens over {n} captions)");
        assert!(per < 5_000.0);
    }
}
