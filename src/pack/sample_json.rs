//! The fields of a sample's `.json` that its text can come from (`input_ids`, `labels`,
//! `conversations`, `messages`, `caption`, `text`, `txt`), read in one pass without building
//! the rest of the document.
//!
//! Why: `plan` reads every sample's .json, and img2dataset's carry `url`, `key`, `status`, EXIF
//! and more that the text never uses; building a `serde_json::Value` map of all of it was about
//! a tenth of a whole `plan`. The other values are still parsed through the same serde_json
//! paths as `Value` (numbers, escapes and surrogates validated alike), only not kept, so a
//! document is accepted here exactly when `serde_json::from_slice::<Value>` accepts it. Even so,
//! the caller falls back to the full parse on any failure (it words the errors).

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The keys kept, in the order of [`TextFields::values`].
const KEYS: [&str; 7] = [
    "input_ids",
    "labels",
    "conversations",
    "messages",
    "caption",
    "text",
    "txt",
];

/// The text-bearing fields of a top-level JSON object; a key given twice keeps its last value,
/// as `serde_json::Map` does.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct TextFields {
    values: [Option<Value>; KEYS.len()],
}

impl TextFields {
    /// `key`'s value unless absent or `null` (writers such as img2dataset emit `null` for
    /// missing fields). Keys other than [`KEYS`] are never present.
    pub(crate) fn non_null(&self, key: &str) -> Option<&Value> {
        let i = KEYS.iter().position(|&k| k == key)?;
        self.values[i].as_ref().filter(|v| !v.is_null())
    }

    /// The kept fields of a fully parsed object.
    pub(crate) fn from_map(mut map: Map<String, Value>) -> TextFields {
        TextFields {
            values: KEYS.map(|k| map.remove(k)),
        }
    }
}

/// Reads the text fields of a JSON document whose top level is an object. `None` when the
/// bytes are not one JSON object (malformed, or another kind of value): the caller parses
/// them fully to say why.
pub(crate) fn read_text_fields(bytes: &[u8]) -> Option<TextFields> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let fields = de.deserialize_map(TopLevel).ok()?;
    de.end().ok()?;
    Some(fields)
}

/// Visits the top-level object.
struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = TextFields;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TextFields, A::Error> {
        let mut fields = TextFields::default();
        while let Some(key) = map.next_key_seed(KeySlot)? {
            match key {
                Some(i) => fields.values[i] = Some(map.next_value::<Value>()?),
                None => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(fields)
    }
}

/// A key of the top-level object: the index of a kept key, or `None`. Read with
/// `deserialize_str`, as `Value`'s maps read theirs, without allocating.
struct KeySlot;

impl<'de> DeserializeSeed<'de> for KeySlot {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Option<usize>, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySlot {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(KEYS.iter().position(|&k| k == key))
    }
}

/// A value parsed the way `Value` parses it (`deserialize_any`, so numbers are range-checked
/// and string escapes validated) and thrown away. Unlike serde's `IgnoredAny`, which skips
/// strings and numbers without those checks.
struct Skip;

impl<'de> serde::Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Skip, D::Error> {
        de.deserialize_any(SkipVisitor)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_none<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        // Keys as `Value` reads them (a string, escapes validated), then the value.
        while map.next_key_seed(KeySlot)?.is_some() {
            map.next_value::<Skip>()?;
        }
        Ok(Skip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the full parse keeps, or `None` when it refuses the bytes as a top-level object.
    fn model(bytes: &[u8]) -> Option<TextFields> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::Object(map)) => Some(TextFields::from_map(map)),
            _ => None,
        }
    }

    #[test]
    fn equals_the_full_parse_on_tricky_documents() {
        let docs: Vec<&[u8]> = vec![
            br#"{"url": "https://e.com/1.jpg", "caption": "a cat", "key": "000", "status": "success"}"#,
            br#"{"caption": null, "text": "t", "width": 640, "exif": {"a": [1, 2.5, -3e2, true]}}"#,
            br#"{"caption": "first", "caption": "second"}"#,
            br#"{"caption": "x", "caption": null}"#,
            br#"{"capt\u0069on": "escaped key", "\u00e9": 1}"#,
            br#"{"input_ids": [1, 2, 3], "labels": [-100, 2, 3], "other": {"deep": [[[]]]}}"#,
            br#"{"conversations": [{"from": "human", "value": "<image>\nhi"}], "id": 7}"#,
            br#"{"messages": [{"role": "user", "content": "x"}]}"#,
            br#"{"u": "\ud83d\ude00 paired surrogates"}"#,
            // Refused by the full parse: must be refused here too.
            br#"{"u": "\ud800 lone surrogate in a skipped value"}"#,
            br#"{"n": 1e400}"#,
            br#"{"n": -1e400, "caption": "x"}"#,
            br#"{"bad escape": "\q"}"#,
            b"{\"ctl\": \"a\x01b\"}",
            b"{\"utf8\": \"\xff\xfe\"}",
            br#"{"caption": "x"} trailing"#,
            br#"{"caption": "x",}"#,
            br#"{"a": [1, 2,]}"#,
            br#"{"a" 1}"#,
            br#"{"#,
            br#""#,
            br#"[1, 2]"#,
            br#""just a string""#,
            br#"null"#,
            br#"{}"#,
            br#"  {"txt": "spaces around"}  "#,
        ];
        for doc in docs {
            assert_eq!(
                read_text_fields(doc),
                model(doc),
                "{}",
                String::from_utf8_lossy(doc)
            );
        }
    }

    #[test]
    fn nesting_limit_is_the_full_parses() {
        for depth in [10, 126, 127, 128, 129, 200] {
            let doc = format!(r#"{{"x": {}1{}}}"#, "[".repeat(depth), "]".repeat(depth));
            assert_eq!(
                read_text_fields(doc.as_bytes()).is_some(),
                model(doc.as_bytes()).is_some(),
                "depth {depth}"
            );
        }
    }

    #[test]
    fn kept_keys_only() {
        let fields = read_text_fields(br#"{"caption": "c", "url": "u", "txt": null}"#).unwrap();
        assert_eq!(fields.non_null("caption"), Some(&Value::from("c")));
        assert_eq!(fields.non_null("txt"), None);
        assert_eq!(fields.non_null("url"), None);
    }
}
