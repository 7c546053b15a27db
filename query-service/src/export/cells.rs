//! One value to the text of one CSV cell, defused for spreadsheets.
//!
//! A spreadsheet opening a CSV runs a cell that starts with `=`, `+`, `-` or `@` as a
//! formula (`=HYPERLINK(...)`, `=cmd|' /C calc'!A0`), and tab or carriage return
//! at the start are tricks to hide such a cell: OWASP's "CSV injection". Text starting
//! with any of them is written with a leading `'`, which spreadsheets take as "this is
//! text" and do not show. Numbers are never prefixed: `-5.5` typed as a number is data
//! to every spreadsheet, and must stay a number for a re-import.
//!
//! The import (command service) keeps such cells as verbatim strings and evaluates
//! nothing; a re-imported export therefore carries the `'` in its text cells, which
//! is the price of a file that is safe to open.

use serde_json::Value;
use std::borrow::Cow;

/// First characters that make a spreadsheet read a text cell as a formula.
pub const FORMULA_TRIGGERS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Text as a cell: prefixed with `'` when it starts with a formula trigger.
pub fn text(text: &str) -> Cow<'_, str> {
    if text.starts_with(FORMULA_TRIGGERS) {
        Cow::Owned(format!("'{text}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// A property value as a cell: numbers and booleans as the import reads them back
/// (`-5.5`, `true`), text defused by [`text`], an absent or null value empty. Arrays
/// and objects (which no import or command writes, but the read model may hold one
/// day) are written as their JSON text, defused like any text.
pub fn property(value: Option<&Value>) -> Cow<'_, str> {
    match value {
        None | Some(Value::Null) => Cow::Borrowed(""),
        Some(Value::Number(number)) => Cow::Owned(number.to_string()),
        Some(Value::Bool(true)) => Cow::Borrowed("true"),
        Some(Value::Bool(false)) => Cow::Borrowed("false"),
        Some(Value::String(string)) => text(string),
        Some(other) => Cow::Owned(text(&other.to_string()).into_owned()),
    }
}

/// A property value as a cell of a `:json` column: its JSON (`100`, `"100"`, `true`);
/// an absent or null value empty. Text starts with `"`, which no spreadsheet reads as
/// a formula.
pub fn json(value: Option<&Value>) -> Cow<'_, str> {
    match value {
        None | Some(Value::Null) => Cow::Borrowed(""),
        Some(value) => Cow::Owned(value.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_starting_with_a_formula_trigger_gets_a_quote() {
        for (raw, cell) in [
            ("=1+2", "'=1+2"),
            ("+cmd", "'+cmd"),
            ("-x", "'-x"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tTAB", "'\tTAB"),
            ("\rCR", "'\rCR"),
            ("-5", "'-5"),
        ] {
            assert_eq!(text(raw), cell, "{raw:?}");
        }
    }

    #[test]
    fn other_text_is_left_alone() {
        for raw in ["P-101", "a=b", "", " =1", "'quoted", "Ünïcödé ✓", "1,5"] {
            assert_eq!(text(raw), raw, "{raw:?}");
        }
    }

    #[test]
    fn numbers_and_booleans_are_written_as_the_import_reads_them() {
        assert_eq!(property(Some(&json!(-5.5))), "-5.5");
        assert_eq!(property(Some(&json!(-7))), "-7");
        assert_eq!(property(Some(&json!(1500.0))), "1500.0");
        assert_eq!(property(Some(&json!(true))), "true");
        assert_eq!(property(Some(&json!(false))), "false");
        assert_eq!(property(Some(&json!(null))), "");
        assert_eq!(property(None), "");
        assert_eq!(property(Some(&json!("-x"))), "'-x");
        assert_eq!(property(Some(&json!(["=a"]))), "[\"=a\"]");
        assert_eq!(property(Some(&json!({"k": 1}))), "{\"k\":1}");
    }
}
