//! Refusing U+0000 (NUL) before it reaches Postgres.
//!
//! Postgres stores neither a NUL in `text` nor a `\u0000` escape in `jsonb`, and reports
//! either as an error, which a handler can only answer with a 500. NUL is never
//! meaningful in SYNAPSE's tags, names, filters or property values, so the extractors
//! refuse it up front with a 400 that says where it was (found by schemathesis: a
//! property value, a timeline `actor` filter and a discipline path segment each gave
//! a 500).

use super::Problem;
use axum::http::StatusCode;

/// The refusal of a request whose `place` (e.g. "JSON body") holds a NUL.
pub fn refusal(place: &str) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "nul-character",
        "the request contains a NUL character",
    )
    .with_detail(format!(
        "the {place} contains U+0000 (NUL), which cannot be stored; remove it"
    ))
}

/// Whether JSON text escapes a NUL (`\u0000`) anywhere. Raw NUL bytes are not valid JSON
/// and never get this far; an escaped backslash followed by `u0000` is not a NUL.
pub fn in_json(text: &[u8]) -> bool {
    let mut index = 0;
    while index < text.len() {
        if text[index] == b'\\' {
            if text[index + 1..].starts_with(b"u0000") {
                return true;
            }
            // Skip the escaped character, so `\\` cannot start another escape.
            index += 2;
        } else {
            index += 1;
        }
    }
    false
}

/// Whether a URI path or query percent-encodes a NUL (`%00`); a raw NUL is not a valid
/// URI character and is refused by the HTTP server.
pub fn in_uri(component: &str) -> bool {
    component.contains("%00")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_escaped_nul_is_found_anywhere_in_json() {
        assert!(in_json(br#"{"tag":"A\u0000"}"#));
        assert!(in_json(br#"{"a\u0000":1}"#));
        assert!(in_json(br#"["x", {"deep": ["\u0000"]}]"#));
    }

    #[test]
    fn an_escaped_backslash_before_u0000_is_not_a_nul() {
        assert!(!in_json(br#"{"path":"C:\\u0000"}"#));
        assert!(!in_json(br#"{"quote":"\"u0000"}"#));
        assert!(!in_json(br#"{"tag":"\u00e9"}"#));
        assert!(!in_json(br#"{"tag":"trailing\"#));
    }

    #[test]
    fn a_percent_encoded_nul_is_found_in_a_uri() {
        assert!(in_uri("actor=a%00b"));
        assert!(in_uri("/disciplines/a%00"));
        assert!(!in_uri("actor=a%20b&limit=100"));
    }
}
