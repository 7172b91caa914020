//! The text side of a WebDataset sample, read from its `.txt` and `.json` members.
//!
//! Precedence, first match wins:
//! 1. `.json` `input_ids`: an array of token ids (non-negative integers that fit in `u32`), with
//!    optional `labels` of the same length (non-negative integers or `-100`) →
//!    [`SampleText::Pretokenized`].
//! 2. `.json` `conversations` (LLaVA / InternVL / ShareGPT: `[{"from": "human"|"gpt"|"system",
//!    "value": "..."}]`) or `messages` (chat style: `[{"role": "user"|"assistant"|"system",
//!    "content": "..."}]`) → [`SampleText::Conversation`]. Either spelling of a role is accepted in
//!    either list (`human`/`user`, `gpt`/`assistant`, `system`).
//! 3. The `.txt` member: UTF-8, one trailing newline (`\n` or `\r\n`) removed → [`SampleText::Caption`].
//! 4. `.json` `caption`, `text` or `txt` (first one present and not `null`), as img2dataset writes
//!    next to `url`, `width`, `height`, ... → [`SampleText::Caption`].
//! 5. Otherwise an empty caption.
//!
//! Anything malformed is an error that says what and where (`json: conversations[2].from: ...`),
//! never a guess: a sample with unreadable text is reported by the caller, not trained on silently.
//! The JSON is read even when a `.txt` is present, so a malformed `.json` is always reported.

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::pack::sample_json::{TextFields, read_text_fields};

/// Who speaks a turn of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Instructions; never a training target.
    System,
    /// The human side; never a training target.
    User,
    /// The model side: its text is what the model is trained to produce.
    Assistant,
}

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// Who speaks.
    pub role: Role,
    /// What is said; may contain image tags (see [`crate::pack::sequence::TextFormat`]).
    pub text: String,
}

/// A sample's text, before tokenization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SampleText {
    /// A caption (pretraining-style): every token is a target.
    Caption(String),
    /// A conversation (instruction-tuning style): only assistant turns are targets.
    Conversation(Vec<Turn>),
    /// Token ids given by the data; `labels`, if given, has the same length.
    Pretokenized {
        /// The text token ids.
        input_ids: Vec<u32>,
        /// Per-token targets, `-100` where no loss is taken; `None` means `labels = input_ids`.
        labels: Option<Vec<i64>>,
    },
}

/// Reads a sample's text from its `.txt` and `.json` member bytes (either may be absent); see the
/// module docs for the precedence and what counts as an error.
pub fn parse_sample_text(txt: Option<&[u8]>, json: Option<&[u8]>) -> Result<SampleText> {
    let json = match json {
        Some(bytes) => Some(json_text_fields(bytes)?),
        None => None,
    };
    if let Some(obj) = &json {
        if let Some(ids) = non_null(obj, "input_ids") {
            return pretokenized(ids, non_null(obj, "labels"));
        }
        if let Some(list) = non_null(obj, "conversations") {
            return conversation(list, "conversations", "from", "value");
        }
        if let Some(list) = non_null(obj, "messages") {
            return conversation(list, "messages", "role", "content");
        }
    }
    if let Some(bytes) = txt {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            bad(format!(
                "txt: invalid UTF-8 at byte {} of {}",
                e.valid_up_to(),
                bytes.len()
            ))
        })?;
        let text = text.strip_suffix('\n').unwrap_or(text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        return Ok(SampleText::Caption(text.to_string()));
    }
    if let Some(obj) = &json {
        for key in ["caption", "text", "txt"] {
            if let Some(v) = non_null(obj, key) {
                return match v {
                    Value::String(s) => Ok(SampleText::Caption(s.clone())),
                    other => Err(bad(format!(
                        "json: `{key}`: expected a string, found {}",
                        kind(other)
                    ))),
                };
            }
        }
    }
    Ok(SampleText::Caption(String::new()))
}

fn bad(reason: String) -> Error {
    Error::SampleText { reason }
}

/// The text fields of the .json: read directly when it is a well-formed object (the common
/// case, without building the rest of the document), else parsed in full for the error.
fn json_text_fields(bytes: &[u8]) -> Result<TextFields> {
    match read_text_fields(bytes) {
        Some(fields) => Ok(fields),
        None => parse_json_object(bytes).map(TextFields::from_map),
    }
}

fn parse_json_object(bytes: &[u8]) -> Result<Map<String, Value>> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(other) => Err(bad(format!(
            "json: expected an object at the top level, found {}",
            kind(&other)
        ))),
        Err(e) => Err(bad(format!("json: malformed: {e}"))),
    }
}

/// `obj[key]` unless absent or `null` (writers such as img2dataset emit `null` for missing fields).
fn non_null<'a>(obj: &'a TextFields, key: &str) -> Option<&'a Value> {
    obj.non_null(key)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn pretokenized(ids: &Value, labels: Option<&Value>) -> Result<SampleText> {
    let Value::Array(ids) = ids else {
        return Err(bad(format!(
            "json: `input_ids`: expected an array, found {}",
            kind(ids)
        )));
    };
    let input_ids = ids
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .ok_or_else(|| {
                    bad(format!(
                        "json: input_ids[{i}]: expected a token id (integer 0..=4294967295), found {v}"
                    ))
                })
        })
        .collect::<Result<Vec<u32>>>()?;
    let labels = match labels {
        None => None,
        Some(Value::Array(labels)) => {
            if labels.len() != input_ids.len() {
                return Err(bad(format!(
                    "json: `labels` has {} entries but `input_ids` has {}",
                    labels.len(),
                    input_ids.len()
                )));
            }
            let labels = labels
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_i64().filter(|&x| x >= 0 || x == -100).ok_or_else(|| {
                        bad(format!(
                            "json: labels[{i}]: expected a token id or -100, found {v}"
                        ))
                    })
                })
                .collect::<Result<Vec<i64>>>()?;
            Some(labels)
        }
        Some(other) => {
            return Err(bad(format!(
                "json: `labels`: expected an array, found {}",
                kind(other)
            )));
        }
    };
    Ok(SampleText::Pretokenized { input_ids, labels })
}

fn conversation(list: &Value, name: &str, role_key: &str, text_key: &str) -> Result<SampleText> {
    let Value::Array(items) = list else {
        return Err(bad(format!(
            "json: `{name}`: expected an array, found {}",
            kind(list)
        )));
    };
    let mut turns = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(turn) = item else {
            return Err(bad(format!(
                "json: {name}[{i}]: expected an object, found {}",
                kind(item)
            )));
        };
        let role = match turn.get(role_key) {
            Some(Value::String(r)) => match r.as_str() {
                "human" | "user" => Role::User,
                "gpt" | "assistant" => Role::Assistant,
                "system" => Role::System,
                other => {
                    return Err(bad(format!(
                        "json: {name}[{i}].{role_key}: unknown role `{other}` \
                         (expected human, gpt, system, user or assistant)"
                    )));
                }
            },
            Some(other) => {
                return Err(bad(format!(
                    "json: {name}[{i}].{role_key}: expected a string, found {}",
                    kind(other)
                )));
            }
            None => return Err(bad(format!("json: {name}[{i}]: no `{role_key}`"))),
        };
        let text = match turn.get(text_key) {
            Some(Value::String(t)) => t.clone(),
            Some(other) => {
                return Err(bad(format!(
                    "json: {name}[{i}].{text_key}: expected a string, found {}",
                    kind(other)
                )));
            }
            None => return Err(bad(format!("json: {name}[{i}]: no `{text_key}`"))),
        };
        turns.push(Turn { role, text });
    }
    Ok(SampleText::Conversation(turns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(txt: Option<&str>, json: Option<&str>) -> Result<SampleText> {
        parse_sample_text(txt.map(str::as_bytes), json.map(str::as_bytes))
    }

    fn err(txt: Option<&str>, json: Option<&str>) -> String {
        match parse(txt, json) {
            Err(Error::SampleText { reason }) => reason,
            other => panic!("expected a SampleText error, got {other:?}"),
        }
    }

    fn caption(s: &str) -> SampleText {
        SampleText::Caption(s.to_string())
    }

    #[test]
    fn nothing_is_an_empty_caption() {
        assert_eq!(parse(None, None).unwrap(), caption(""));
        assert_eq!(parse(None, Some("{}")).unwrap(), caption(""));
    }

    #[test]
    fn txt_caption_strips_one_trailing_newline() {
        assert_eq!(parse(Some("a dog\n"), None).unwrap(), caption("a dog"));
        assert_eq!(parse(Some("a dog\r\n"), None).unwrap(), caption("a dog"));
        assert_eq!(parse(Some("a dog\n\n"), None).unwrap(), caption("a dog\n"));
        assert_eq!(parse(Some(" a dog "), None).unwrap(), caption(" a dog "));
        assert_eq!(parse(Some(""), None).unwrap(), caption(""));
        assert_eq!(parse(Some("🐶 ok"), None).unwrap(), caption("🐶 ok"));
    }

    #[test]
    fn txt_invalid_utf8_is_an_error() {
        let e = parse_sample_text(Some(b"ab\xffcd"), None).unwrap_err();
        assert!(
            e.to_string().contains("txt: invalid UTF-8 at byte 2 of 5"),
            "{e}"
        );
    }

    #[test]
    fn img2dataset_json_caption() {
        let j = r#"{"url": "http://x/y.jpg", "key": "000001", "status": "success",
                    "error_message": null, "width": 640, "height": 480,
                    "original_width": 1280, "original_height": 960,
                    "exif": "{}", "sha256": "abc", "caption": "a red apple"}"#;
        assert_eq!(parse(None, Some(j)).unwrap(), caption("a red apple"));
        // img2dataset without a caption column: no caption key at all, or null.
        let j = r#"{"url": "http://x/y.jpg", "width": 640, "height": 480}"#;
        assert_eq!(parse(None, Some(j)).unwrap(), caption(""));
        let j = r#"{"url": "http://x/y.jpg", "caption": null, "text": "fallback"}"#;
        assert_eq!(parse(None, Some(j)).unwrap(), caption("fallback"));
        let j = r#"{"txt": "third key"}"#;
        assert_eq!(parse(None, Some(j)).unwrap(), caption("third key"));
    }

    #[test]
    fn txt_beats_json_caption() {
        let j = r#"{"caption": "from json"}"#;
        assert_eq!(
            parse(Some("from txt\n"), Some(j)).unwrap(),
            caption("from txt")
        );
    }

    #[test]
    fn conversations_beat_txt() {
        let j = r#"{"conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "<image>\nWhat is this?"},
            {"from": "gpt", "value": "A dog."}]}"#;
        let want = SampleText::Conversation(vec![
            Turn {
                role: Role::System,
                text: "Be brief.".into(),
            },
            Turn {
                role: Role::User,
                text: "<image>\nWhat is this?".into(),
            },
            Turn {
                role: Role::Assistant,
                text: "A dog.".into(),
            },
        ]);
        assert_eq!(parse(Some("caption"), Some(j)).unwrap(), want);
    }

    #[test]
    fn messages_style() {
        let j = r#"{"messages": [{"role": "user", "content": "Hi"},
                                 {"role": "assistant", "content": "Hello"}], "caption": "x"}"#;
        let want = SampleText::Conversation(vec![
            Turn {
                role: Role::User,
                text: "Hi".into(),
            },
            Turn {
                role: Role::Assistant,
                text: "Hello".into(),
            },
        ]);
        assert_eq!(parse(None, Some(j)).unwrap(), want);
        // An empty list is a conversation with no turns, not a fall-through to the caption.
        let j = r#"{"messages": [], "caption": "x"}"#;
        assert_eq!(
            parse(None, Some(j)).unwrap(),
            SampleText::Conversation(vec![])
        );
    }

    #[test]
    fn input_ids_beat_everything() {
        let j = r#"{"input_ids": [5, 0, 4294967295], "labels": [-100, 0, 7],
                    "conversations": [{"from": "human", "value": "x"}], "caption": "c"}"#;
        assert_eq!(
            parse(Some("t"), Some(j)).unwrap(),
            SampleText::Pretokenized {
                input_ids: vec![5, 0, u32::MAX],
                labels: Some(vec![-100, 0, 7]),
            }
        );
        let j = r#"{"input_ids": [1, 2], "labels": null}"#;
        assert_eq!(
            parse(None, Some(j)).unwrap(),
            SampleText::Pretokenized {
                input_ids: vec![1, 2],
                labels: None,
            }
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cases: &[(Option<&str>, &str, &str)] = &[
            (None, "{not json", "json: malformed"),
            (
                None,
                "[1, 2]",
                "expected an object at the top level, found an array",
            ),
            (Some("caption"), "{\"a\": ", "json: malformed"),
            (
                None,
                r#"{"input_ids": "1 2"}"#,
                "`input_ids`: expected an array, found a string",
            ),
            (
                None,
                r#"{"input_ids": [1, -2]}"#,
                "input_ids[1]: expected a token id",
            ),
            (
                None,
                r#"{"input_ids": [1, 2.5]}"#,
                "input_ids[1]: expected a token id",
            ),
            (
                None,
                r#"{"input_ids": [4294967296]}"#,
                "input_ids[0]: expected a token id",
            ),
            (
                None,
                r#"{"input_ids": [1, 2], "labels": [1]}"#,
                "`labels` has 1 entries but `input_ids` has 2",
            ),
            (
                None,
                r#"{"input_ids": [1], "labels": [-5]}"#,
                "labels[0]: expected a token id or -100, found -5",
            ),
            (
                None,
                r#"{"input_ids": [1], "labels": 3}"#,
                "`labels`: expected an array, found a number",
            ),
            (
                None,
                r#"{"conversations": {"from": "human"}}"#,
                "`conversations`: expected an array, found an object",
            ),
            (
                None,
                r#"{"conversations": ["hi"]}"#,
                "conversations[0]: expected an object, found a string",
            ),
            (
                None,
                r#"{"conversations": [{"from": "bot", "value": "x"}]}"#,
                "conversations[0].from: unknown role `bot`",
            ),
            (
                None,
                r#"{"conversations": [{"from": 1, "value": "x"}]}"#,
                "conversations[0].from: expected a string, found a number",
            ),
            (
                None,
                r#"{"conversations": [{"value": "x"}]}"#,
                "conversations[0]: no `from`",
            ),
            (
                None,
                r#"{"conversations": [{"from": "gpt"}]}"#,
                "conversations[0]: no `value`",
            ),
            (
                None,
                r#"{"conversations": [{"from": "gpt", "value": ["x"]}]}"#,
                "conversations[0].value: expected a string, found an array",
            ),
            (
                None,
                r#"{"messages": [{"role": "user", "content": [{"type": "text"}]}]}"#,
                "messages[0].content: expected a string, found an array",
            ),
            (
                None,
                r#"{"messages": [{"role": "tool", "content": "x"}]}"#,
                "messages[0].role: unknown role `tool`",
            ),
            (
                None,
                r#"{"caption": 5}"#,
                "json: `caption`: expected a string, found a number",
            ),
        ];
        for (txt, json, want) in cases {
            let got = err(*txt, Some(json));
            assert!(got.contains(want), "{json}: got `{got}`, want `{want}`");
        }
        let e = parse_sample_text(None, Some(b"{\"caption\": \"\xff\"}")).unwrap_err();
        assert!(e.to_string().contains("json: malformed"), "{e}");
    }
}
