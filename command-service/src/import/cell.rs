//! One cell to a property value, and the check that a numeric column holds numbers.
//!
//! Typing is deliberately strict so data survives the trip: only plain decimal
//! numbers become JSON numbers. A leading `+` (phone numbers), leading zeros (`007`,
//! cable numbers), integers beyond 64 bits (serial numbers), `NaN`/`inf` and formulas
//! (`=SUM(A1)`, `@ref`) stay strings, verbatim; so does every whole number of a column
//! that has a zero-padded one (`001` ... `150`). Nothing is ever evaluated.
//!
//! A column can also say what it holds (`line_number:text`, [`Declared`]): then every
//! cell is that type or an error, whatever it looks like. A `:json` column holds each
//! cell as a JSON number, string or boolean (`100`, `"100"`, `true`, `" padded "`):
//! what an export writes for a column of several types, or of text a plain cell
//! would not keep (empty, or with spaces at either end).

use super::RowError;
use serde_json::{Number, Value};

/// The type a header declares for its column: `name:text`, `name:number`,
/// `name:boolean`, `name:json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    Text,
    Number,
    Boolean,
    Json,
}

impl Declared {
    pub const NAMES: &str = "text, number, boolean or json";

    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "text" => Some(Self::Text),
            "number" => Some(Self::Number),
            "boolean" => Some(Self::Boolean),
            "json" => Some(Self::Json),
            _ => None,
        }
    }

    /// The JSON value of a cell (already trimmed) of a column of this type; `None` for
    /// an empty cell (absent); the error message for a cell that is not of the type.
    pub fn type_cell(self, text: &str) -> Result<Option<Value>, String> {
        if text.is_empty() {
            return Ok(None);
        }
        let digits = text.strip_prefix('-').unwrap_or(text);
        let integer = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        if self == Self::Json && integer && text.parse::<i64>().is_err() {
            return Err(format!(
                "`{text}` is beyond the integers a property holds ({} to {}): send it as \
                 a string, `\"{text}\"`, to keep its digits",
                i64::MIN,
                i64::MAX
            ));
        }
        let value = match self {
            Self::Text => Some(Value::String(text.to_owned())),
            Self::Boolean => match type_cell(text) {
                Some(Value::Bool(flag)) => Some(Value::Bool(flag)),
                _ => None,
            },
            Self::Number => declared_number(text),
            Self::Json => json_cell(text),
        };
        value.map(Some).ok_or_else(|| {
            let hint = if self == Self::Number && looks_like_decimal_comma(text) {
                " (use `.` as the decimal separator)"
            } else {
                ""
            };
            format!(
                "`{text}` is not a {} as the header declares{hint}",
                self.noun()
            )
        })
    }

    fn noun(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Number => "number",
            Self::Boolean => "boolean (true or false)",
            Self::Json => "JSON number, string or boolean (`7.5`, `\"007\"`, `true`)",
        }
    }
}

/// A cell of a `:json` column: a JSON string, `true`, `false`, or a number as the
/// import reads any other (a plain decimal: `1e400` or 20 digits would change).
fn json_cell(text: &str) -> Option<Value> {
    match text {
        "true" => Some(Value::Bool(true)),
        "false" => Some(Value::Bool(false)),
        _ if text.starts_with('"') => serde_json::from_str::<String>(text).ok().map(Value::String),
        _ => number(text),
    }
}

/// The JSON value of a cell (already trimmed); `None` for an empty cell (absent).
pub fn type_cell(text: &str) -> Option<Value> {
    if text.is_empty() {
        return None;
    }
    if text.eq_ignore_ascii_case("true") {
        return Some(Value::Bool(true));
    }
    if text.eq_ignore_ascii_case("false") {
        return Some(Value::Bool(false));
    }
    Some(number(text).unwrap_or_else(|| Value::String(text.to_owned())))
}

/// `text` as a JSON number if it is a plain decimal number.
fn number(text: &str) -> Option<Value> {
    if !is_plain_number(text) {
        return None;
    }
    if let Ok(integer) = text.parse::<i64>() {
        return Some(Value::Number(integer.into()));
    }
    let is_integer = !text.contains(['.', 'e', 'E']);
    if is_integer {
        // Too large for 64 bits: a float would silently change the digits.
        return None;
    }
    let value = text.parse::<f64>().ok()?;
    // Too small for a double (`1e-400`) reads as zero: as for one too large (which reads
    // as infinity), a number would silently change it.
    let mantissa = text.split(['e', 'E']).next().unwrap_or(text);
    if value == 0.0 && mantissa.contains(|c: char| ('1'..='9').contains(&c)) {
        return None;
    }
    // The number the log will hold (no negative zero; `1e16` an integer).
    let mut value = Value::Number(Number::from_f64(value)?);
    crate::assets::input::as_stored_number(&mut value);
    Some(value)
}

/// A cell of a column declared numeric: a plain number, zero-padded or not (`007`,
/// `-05.5`): the column says its digits count.
fn declared_number(text: &str) -> Option<Value> {
    let (sign, unsigned) = match text.strip_prefix('-') {
        Some(unsigned) => ("-", unsigned),
        None => ("", text),
    };
    let unpadded = unsigned.trim_start_matches('0');
    // Put back the one zero the padding held (`000` is 0, `00.5` is 0.5), and the one
    // a leading point leaves out (`.5`); never a zero that no digit was written for
    // (`-`, `e5` are no numbers).
    let padded = unpadded.len() < unsigned.len();
    let zero = if (padded && (unpadded.is_empty() || unpadded.starts_with(['.', 'e', 'E'])))
        || unpadded.starts_with('.')
    {
        "0"
    } else {
        ""
    };
    number(&format!("{sign}{zero}{unpadded}"))
}

/// `-?digits[.digits][e[+-]digits]`, without superfluous leading zeros.
fn is_plain_number(text: &str) -> bool {
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (mantissa, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    let exponent_valid = exponent
        .is_none_or(|exponent| digits(exponent.strip_prefix(['+', '-']).unwrap_or(exponent)));
    digits(whole)
        && !(whole.len() > 1 && whole.starts_with('0'))
        && fraction.is_none_or(digits)
        && exponent_valid
}

/// Counts of a property column's non-empty cells, to find a numeric column's strays: a
/// stray `n/a` or `75,5` in a power column would otherwise become a string and make
/// every rule that compares numbers fail on that asset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ColumnTally {
    pub numbers: usize,
    pub values: usize,
    /// Cells of digits with a leading zero (`007`): codes, not numbers.
    pub codes: usize,
    /// Cells that are numbers written with a decimal comma (`75,5`).
    pub decimal_commas: usize,
}

impl ColumnTally {
    pub fn add(&mut self, value: &Value) {
        self.values += 1;
        if value.is_number() {
            self.numbers += 1;
        } else if value.as_str().is_some_and(is_zero_padded) {
            self.codes += 1;
        } else if value.as_str().is_some_and(looks_like_decimal_comma) {
            self.decimal_commas += 1;
        }
    }

    /// Whether the column holds codes (`001` ... `150`): a leading zero says its digits
    /// name something, so all of it stays text, `100` as well as `007`.
    pub fn is_codes(&self) -> bool {
        self.codes > 0
    }

    /// Whether most cells are numbers but not all: then the others are errors. Numbers
    /// written with a decimal comma count as numbers here, so that they are errors (with
    /// a hint) rather than silently text in a column of numbers, however few its other
    /// numbers are.
    pub fn has_strays(&self) -> bool {
        let others = self.values - self.numbers;
        let numeric = self.numbers + self.decimal_commas;
        !self.is_codes() && others > 0 && numeric > others - self.decimal_commas
    }

    /// The error for a non-numeric `value` in this (mostly numeric) column.
    pub fn stray(&self, row: u64, column: &str, value: &Value) -> RowError {
        let shown = match value {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        let hint = if looks_like_decimal_comma(&shown) {
            " (use `.` as the decimal separator, or declare the column `NAME:text`)"
        } else {
            " (if the column mixes numbers and text on purpose, declare it `NAME:text`)"
        };
        RowError::new(
            row,
            Some(column),
            format!(
                "non-numeric value `{shown}` in a numeric column \
                 ({} of {} values are numbers){hint}",
                self.numbers, self.values
            ),
        )
    }
}

/// A number of a code column as the text it was: `written` when its JSON spells it
/// otherwise (`1.50`, `-0`, `1E3`), else its JSON. Other values are kept.
pub fn as_code(value: &mut Value, written: Option<&str>) {
    if value.is_number() {
        let text = written.map_or_else(|| value.to_string(), str::to_owned);
        *value = Value::String(text);
    }
}

/// Digits with a leading zero: `007`, not `0` or `0.5`.
fn is_zero_padded(text: &str) -> bool {
    text.len() > 1 && text.starts_with('0') && text.bytes().all(|byte| byte.is_ascii_digit())
}

fn looks_like_decimal_comma(text: &str) -> bool {
    text.split_once(',')
        .is_some_and(|(whole, fraction)| is_plain_number(whole) && is_plain_number(fraction))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cells_are_typed_as_numbers_booleans_or_strings_and_empty_is_absent() {
        assert_eq!(type_cell("75"), Some(json!(75)));
        assert_eq!(type_cell("-5"), Some(json!(-5)));
        assert_eq!(type_cell("0.75"), Some(json!(0.75)));
        assert_eq!(type_cell("1.5e3"), Some(json!(1500.0)));
        assert_eq!(type_cell("0e-400"), Some(json!(0.0)));
        assert_eq!(type_cell("1e-300"), Some(json!(1e-300)));
        assert_eq!(type_cell("TRUE"), Some(json!(true)));
        assert_eq!(type_cell("False"), Some(json!(false)));
        assert_eq!(type_cell("IP55"), Some(json!("IP55")));
        assert_eq!(type_cell(""), None);
        // The cell is the number the log will hold: no negative zero, and a double
        // written with an exponent from 1e16 up is an integer there.
        for (text, held) in [
            ("-0.0", "0.0"),
            ("-0e5", "0.0"),
            ("1e16", "10000000000000000"),
        ] {
            let typed = type_cell(text).map(|value| value.to_string());
            assert_eq!(typed.as_deref(), Some(held), "{text}");
        }
    }

    #[test]
    fn formulas_and_lookalike_numbers_stay_verbatim_strings() {
        for text in [
            "=SUM(A1)",
            "+49 30 1234",
            "+5",
            "@ref",
            "-",
            "007",
            "NaN",
            "inf",
            "1_000",
            "1.",
            ".5",
            "99999999999999999999",
            "1e400",
            "1e-400",
            "-2.5E-999",
            "75,5",
        ] {
            assert_eq!(type_cell(text), Some(json!(text)), "{text}");
        }
    }

    #[test]
    fn a_json_column_keeps_each_cells_type_and_text_as_written() {
        let json = |cell| Declared::Json.type_cell(cell);
        assert_eq!(json("100"), Ok(Some(json!(100))));
        assert_eq!(json("-7.5"), Ok(Some(json!(-7.5))));
        assert_eq!(json("\"100\""), Ok(Some(json!("100"))));
        assert_eq!(json("true"), Ok(Some(json!(true))));
        assert_eq!(json("\"true\""), Ok(Some(json!("true"))));
        assert_eq!(json("\"\""), Ok(Some(json!(""))));
        assert_eq!(
            json("\"  padded \\\"x\\\" \""),
            Ok(Some(json!("  padded \"x\" ")))
        );
        assert_eq!(json("\"caf\\u00e9\""), Ok(Some(json!("café"))));
        assert_eq!(json(""), Ok(None));
        // Not a JSON scalar, or a number the import would not keep as written.
        for cell in ["abc", "\"open", "[1]", "{}", "null", "TRUE", "007", "1e400"] {
            let error = json(cell).unwrap_err();
            assert!(
                error.contains("is not a JSON number, string or boolean"),
                "{cell}: {error}"
            );
        }
        // An integer beyond 64 bits is said to be one, with what to send instead.
        for cell in [
            "123456789012345678901234",
            "9223372036854775808",
            "-9223372036854775809",
        ] {
            let error = json(cell).unwrap_err();
            assert!(
                error.contains("beyond the integers a property holds"),
                "{cell}: {error}"
            );
            assert!(error.contains(&format!("`\"{cell}\"`")), "{cell}: {error}");
        }
    }

    #[test]
    fn a_declared_column_types_every_cell_as_declared_or_says_why_not() {
        assert_eq!(Declared::parse("TEXT"), Some(Declared::Text));
        assert_eq!(Declared::parse("json"), Some(Declared::Json));
        assert_eq!(Declared::parse("integer"), None);
        let text = |cell| Declared::Text.type_cell(cell);
        assert_eq!(text("1001"), Ok(Some(json!("1001"))));
        assert_eq!(text("true"), Ok(Some(json!("true"))));
        assert_eq!(text(""), Ok(None));
        let number = |cell| Declared::Number.type_cell(cell);
        assert_eq!(number("007"), Ok(Some(json!(7))));
        assert_eq!(number("-05.5"), Ok(Some(json!(-5.5))));
        assert_eq!(number("0"), Ok(Some(json!(0))));
        assert_eq!(number("0.25"), Ok(Some(json!(0.25))));
        assert_eq!(number("000"), Ok(Some(json!(0))));
        assert_eq!(number("00e5"), Ok(Some(json!(0.0))));
        // No digit, no number (before: each read as 0).
        for cell in ["-", "e5", "-e5", "E9", "-."] {
            assert!(number(cell).is_err(), "{cell}");
        }
        assert_eq!(
            number("n/a"),
            Err("`n/a` is not a number as the header declares".to_owned())
        );
        assert!(number("75,5")
            .unwrap_err()
            .ends_with("(use `.` as the decimal separator)"));
        let boolean = |cell| Declared::Boolean.type_cell(cell);
        assert_eq!(boolean("FALSE"), Ok(Some(json!(false))));
        assert_eq!(
            boolean("yes"),
            Err("`yes` is not a boolean (true or false) as the header declares".to_owned())
        );
    }

    fn tally(values: &[Value]) -> ColumnTally {
        let mut tally = ColumnTally::default();
        values.iter().for_each(|value| tally.add(value));
        tally
    }

    #[test]
    fn a_mostly_numeric_column_reports_its_non_numeric_cells() {
        let tally = tally(&[
            json!(75),
            json!("n/a"),
            json!(90.5),
            json!("75,5"),
            json!(1),
        ]);
        assert!(tally.has_strays());
        let error = tally.stray(3, "power_kw", &json!("n/a"));
        assert_eq!((error.row, error.column.as_deref()), (3, Some("power_kw")));
        assert_eq!(
            error.message,
            "non-numeric value `n/a` in a numeric column (3 of 5 values are numbers) \
             (if the column mixes numbers and text on purpose, declare it `NAME:text`)"
        );
        let comma = tally.stray(5, "power_kw", &json!("75,5"));
        assert!(comma
            .message
            .ends_with("(use `.` as the decimal separator, or declare the column `NAME:text`)"));
    }

    #[test]
    fn a_mostly_text_or_all_numeric_column_has_no_strays() {
        assert!(!tally(&[json!("IP55"), json!("IP65"), json!(5)]).has_strays());
        assert!(!tally(&[json!(1), json!("x")]).has_strays());
        assert!(!tally(&[json!(1), json!(2.5)]).has_strays());
    }

    #[test]
    fn numbers_with_a_decimal_comma_are_strays_however_few_the_other_numbers() {
        // Half the cells: before, the column became text, `75,5` with it.
        let half = tally(&[json!(75), json!("75,5")]);
        assert!(half.has_strays());
        let error = half.stray(3, "rated_power_kw", &json!("75,5"));
        assert!(
            error.message.contains("use `.` as the decimal separator"),
            "{error:?}"
        );
        // All of them: a column of numbers, each written the wrong way.
        assert!(tally(&[json!("1,5"), json!("2,25")]).has_strays());
        // Text stays text.
        assert!(!tally(&[json!("IP55"), json!("1,5"), json!("IP65")]).has_strays());
    }
}
