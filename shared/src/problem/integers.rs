//! Refusing JSON integers beyond 64 bits before they are silently rounded.
//!
//! serde_json reads an integer literal that fits neither `i64` nor `u64` as an `f64`,
//! so `"serial": 123456789012345678901234` would be stored as `1.2345678901234568e23`:
//! other digits than were sent. Properties are CEL `int` (64 bits signed) when whole,
//! so the extractor refuses any integer literal outside `i64` with a 422 that says
//! where it is; a string keeps the digits (as a CSV import keeps such a cell).

use super::Problem;
use axum::http::StatusCode;

/// An integer literal outside `i64`: its text and where it starts (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub literal: String,
    pub line: usize,
    pub column: usize,
}

/// The refusal of a JSON body holding `found`.
pub fn refusal(found: &Found) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "integer-out-of-range",
        "an integer in the body does not fit in 64 bits",
    )
    .with_detail(format!(
        "{} at line {}, column {} is outside {}..={}: it would be stored rounded; \
         send it as a string to keep its digits",
        found.literal,
        found.line,
        found.column,
        i64::MIN,
        i64::MAX
    ))
}

/// The first integer literal of valid JSON `text`, outside strings, that does not fit
/// in an `i64`.
pub fn beyond_64_bits(text: &[u8]) -> Option<Found> {
    let mut index = 0;
    while index < text.len() {
        match text[index] {
            b'"' => index = after_string(text, index + 1),
            b'-' | b'0'..=b'9' => {
                let end = index
                    + text[index..]
                        .iter()
                        .take_while(|byte| {
                            matches!(byte, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                        })
                        .count();
                let literal = &text[index..end];
                let integer = !literal
                    .iter()
                    .any(|byte| matches!(byte, b'.' | b'e' | b'E'));
                let fits = std::str::from_utf8(literal).is_ok_and(|s| s.parse::<i64>().is_ok());
                if integer && !fits {
                    return Some(found_at(text, index, end));
                }
                index = end;
            }
            _ => index += 1,
        }
    }
    None
}

/// The index after the string whose contents start at `index`.
fn after_string(text: &[u8], mut index: usize) -> usize {
    while index < text.len() {
        match text[index] {
            b'\\' => index += 2,
            b'"' => return index + 1,
            _ => index += 1,
        }
    }
    index
}

fn found_at(text: &[u8], start: usize, end: usize) -> Found {
    let before = &text[..start];
    let line = 1 + before.iter().filter(|&&byte| byte == b'\n').count();
    let line_start = before
        .iter()
        .rposition(|&byte| byte == b'\n')
        .map_or(0, |newline| newline + 1);
    let column = 1 + String::from_utf8_lossy(&text[line_start..start])
        .chars()
        .count();
    Found {
        literal: String::from_utf8_lossy(&text[start..end]).into_owned(),
        line,
        column,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_integer_beyond_64_bits_is_found_where_it_is() {
        let found =
            beyond_64_bits(b"{\"tag\": \"\xc3\xa9\",\n \"serial\": 123456789012345678901234}");
        assert_eq!(
            found,
            Some(Found {
                literal: "123456789012345678901234".into(),
                line: 2,
                column: 12
            })
        );
        assert_eq!(
            beyond_64_bits(br#"[-9223372036854775809]"#).map(|f| f.literal),
            Some("-9223372036854775809".into())
        );
        assert_eq!(
            beyond_64_bits(br#"{"u": 18446744073709551615}"#).map(|f| f.column),
            Some(7)
        );
    }

    #[test]
    fn integers_that_fit_decimals_and_digits_in_strings_are_let_through() {
        for text in [
            r#"{"a": 9223372036854775807, "b": -9223372036854775808}"#,
            r#"{"kw": 1.5e300, "big": 123456789012345678901234.0, "e": 1E25}"#,
            r#"{"serial": "123456789012345678901234"}"#,
            r#"{"quoted": "a \"123456789012345678901234\" b", "n": 0}"#,
            r#"{"123456789012345678901234": true}"#,
        ] {
            assert_eq!(beyond_64_bits(text.as_bytes()), None, "{text}");
        }
    }
}
