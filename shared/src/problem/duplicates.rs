//! Refusing JSON objects that name a key twice.
//!
//! RFC 8259 leaves the meaning of `{"rated_power_kw": 55, "rated_power_kw": 75}` to
//! the receiver, and serde_json keeps the last: one of two values the client sent was
//! dropped without a word (a typed struct's fields are refused as duplicates by serde;
//! a map such as `properties` was not). The extractor refuses any object with a
//! repeated key, saying which and where.

use super::Problem;
use axum::http::StatusCode;
use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
use std::collections::HashSet;
use std::fmt;

/// The first key repeated within one object of JSON `text`, as serde_json's error
/// naming it with its line and column. Text that is no JSON (or ends early) has none:
/// its syntax error is for the typed parse to report.
pub fn repeated_key(text: &[u8]) -> Option<String> {
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    NoRepeatedKeys::deserialize(&mut deserializer)
        .err()
        .filter(|error| error.classify() == serde_json::error::Category::Data)
        .filter(|_| serde_json::from_slice::<serde::de::IgnoredAny>(text).is_ok())
        .map(|error| error.to_string())
}

/// The refusal of a JSON body whose object repeats a key (`found` as
/// [`repeated_key`] gives it).
pub fn refusal(found: &str) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "repeated-key",
        "an object in the body names a key twice",
    )
    .with_detail(format!(
        "{found}: only one of the values could count; send each key once"
    ))
}

/// A JSON value of any shape, which fails to deserialize where an object repeats a
/// key.
struct NoRepeatedKeys;

impl<'de> Deserialize<'de> for NoRepeatedKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Walk)
    }
}

struct Walk;

impl<'de> Visitor<'de> for Walk {
    type Value = NoRepeatedKeys;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(NoRepeatedKeys)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(NoRepeatedKeys)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(NoRepeatedKeys)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(NoRepeatedKeys)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(NoRepeatedKeys)
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(NoRepeatedKeys)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
        while items.next_element::<NoRepeatedKeys>()?.is_some() {}
        Ok(NoRepeatedKeys)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
        let mut keys = HashSet::new();
        while let Some(key) = entries.next_key::<std::borrow::Cow<'de, str>>()? {
            if !keys.insert(key.clone()) {
                // Still inside the object: serde_json adds where its parser is.
                return Err(A::Error::custom(format_args!(
                    "the key `{key}` appears twice in one object"
                )));
            }
            entries.next_value::<NoRepeatedKeys>()?;
        }
        Ok(NoRepeatedKeys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_repeated_in_any_object_is_found_with_where() {
        let found = repeated_key(br#"{"tag": "M-1", "properties": {"kw": 55, "kw": 75}}"#);
        assert_eq!(
            found.as_deref(),
            Some("the key `kw` appears twice in one object at line 1 column 44")
        );
        let nested = repeated_key(b"[{\"a\": 1}, {\"b\": {\"c\": [{\"d\": 1,\n\"d\": 2}]}}]");
        assert_eq!(
            nested.as_deref(),
            Some("the key `d` appears twice in one object at line 2 column 3")
        );
    }

    #[test]
    fn the_same_key_in_different_objects_or_escaped_alike_is_told_apart() {
        assert_eq!(
            repeated_key(br#"[{"a": 1}, {"a": 2}, {"b": {"a": 3}, "a": 4}]"#),
            None
        );
        assert_eq!(repeated_key(br#"{"a": 1, "A": 2, "a ": 3}"#), None);
        // An escape spells the same key as its character.
        assert!(repeated_key(br#"{"a": 1, "\u0061": 2}"#).is_some());
        assert_eq!(repeated_key(br#""text""#), None);
        // Not JSON, or cut short after a repeat: the typed parse says why.
        assert_eq!(repeated_key(br#"{"a": 1, "a" 2}"#), None);
        assert_eq!(repeated_key(br#"{"a": 1, "b": "#), None);
        assert_eq!(repeated_key(b"[1, 2.5, -3, true, null, \"x\"]"), None);
    }
}
