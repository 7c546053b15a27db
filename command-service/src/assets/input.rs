//! What a client may send to create or change an asset, and its validation.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Longest tag, name, area or string property accepted; a plant tag is short, a limit
/// keeps a hostile body from storing megabytes per row.
pub const MAX_TEXT: usize = 256;
pub const MAX_STRING_PROPERTY: usize = 4096;
/// Most properties one asset may carry (CFIHOS tag classes carry well under 100).
pub const MAX_PROPERTIES: usize = 200;
/// Longest name of a property.
pub const MAX_PROPERTY_NAME: usize = 64;

/// Body of `POST /assets`.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAsset {
    /// Unique plant tag, e.g. `P-101A`.
    pub tag: String,
    /// Asset class, e.g. `ELECTRIC_MOTOR`.
    pub asset_type: String,
    /// Owning discipline, e.g. `ELECTRICAL`; stored upper-case.
    pub discipline: String,
    pub name: Option<String>,
    pub area: Option<String>,
    /// Typed attributes: numbers, strings or booleans.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
}

/// Body of `PATCH /assets/{id}`: fields to set; in `properties` a `null` removes a key.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssetPatch {
    /// The version the client last saw; a different current version is a 409. May also
    /// be given as an `If-Match` header.
    pub expected_version: Option<i64>,
    pub tag: Option<String>,
    pub asset_type: Option<String>,
    pub discipline: Option<String>,
    /// `null` clears the name; absent leaves it (and is left out when the patch is
    /// written out, e.g. for an idempotency key's fingerprint).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, nullable)]
    pub name: Option<Option<String>>,
    /// `null` clears the area; absent leaves it.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, nullable)]
    pub area: Option<Option<String>>,
    #[schema(value_type = Option<Object>)]
    pub properties: Option<Map<String, Value>>,
}

/// A field that is present, `null` included (`Some(None)`); an absent one stays `None`
/// through `#[serde(default)]`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// One thing wrong with a request, for the problem's `errors` list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Check a tag: non-empty, short, printable, no whitespace.
pub fn check_tag(tag: &str, errors: &mut Vec<FieldError>) {
    if tag.is_empty() {
        errors.push(FieldError::new("tag", "must not be empty"));
    } else if tag.len() > MAX_TEXT {
        errors.push(FieldError::new(
            "tag",
            format!("longer than {MAX_TEXT} bytes"),
        ));
    } else if tag
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || is_invisible(c))
    {
        errors.push(FieldError::new(
            "tag",
            "must not contain whitespace, control or invisible characters",
        ));
    } else if !unicode_normalization::is_nfkc(tag) {
        // `Ü` as `U` and a combining mark, fullwidth `Ｍ`: each looks like a tag it is
        // not, and a rule's end `{asset.properties.motor}` would find only one of them.
        let usual: String = unicode_normalization::UnicodeNormalization::nfkc(tag).collect();
        errors.push(FieldError::new(
            "tag",
            format!(
                "is written with characters that look like `{usual}` but are not \
                 (combining marks, fullwidth or other compatibility forms): write `{usual}`"
            ),
        ));
    }
}

/// Unicode format characters that print as nothing (zero-width spaces and joiners, the
/// byte-order mark, bidirectional marks, the soft hyphen): two tags that differ only by
/// one would look the same.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
    )
}

pub use synapse_shared::domain::{is_code, CODE_FORMAT};

/// Check a code such as a discipline or asset type and return it upper-cased.
pub fn check_code(field: &str, value: &str, errors: &mut Vec<FieldError>) -> String {
    if let Some(message) = synapse_shared::domain::code_error(field, value) {
        errors.push(FieldError::new(field, message));
    }
    value.to_ascii_uppercase()
}

/// Why Postgres cannot store a text: it holds no NUL character (U+0000) in `text` or
/// `jsonb`. JSON bodies are refused before they get here; a CSV cell or a string a
/// rule makes at run time is checked with this.
pub const NUL_MESSAGE: &str = "contains a NUL character (U+0000), which cannot be stored";

/// Check an optional free-text field.
pub fn check_text(field: &str, value: Option<&str>, errors: &mut Vec<FieldError>) {
    let Some(text) = value else { return };
    if text.len() > MAX_TEXT {
        errors.push(FieldError::new(
            field,
            format!("longer than {MAX_TEXT} bytes"),
        ));
    } else if text.contains('\0') {
        errors.push(FieldError::new(field, NUL_MESSAGE));
    }
}

/// What is wrong with a property's value, if anything: a string too long or holding a
/// NUL, an integer beyond what a signed 64-bit number holds (a rule's unsigned
/// arithmetic can make one; a request cannot send one).
fn value_error(value: &Value) -> Option<String> {
    match value {
        Value::String(text) if text.len() > MAX_STRING_PROPERTY => {
            Some(format!("longer than {MAX_STRING_PROPERTY} bytes"))
        }
        Value::String(text) if text.contains('\0') => Some(NUL_MESSAGE.to_owned()),
        Value::Number(number) if number.is_u64() && !number.is_i64() => Some(format!(
            "{number} is beyond the integers a property holds ({} to {}); a whole number \
             written as a double (`1e19`) is stored as this integer too: send it as a string",
            i64::MIN,
            i64::MAX
        )),
        _ => None,
    }
}

/// The asset's fields a CSV file has columns for: an asset property of one of these
/// names (in any case) could not be told from the field in a file, so an export of it
/// would not import again.
pub const ASSET_FIELDS: [&str; 5] = ["tag", "asset_type", "discipline", "name", "area"];

/// What is wrong with `name` as the name of an asset's property, beyond
/// [`check_properties`]: it is one of the [`ASSET_FIELDS`].
pub fn asset_field_clash(name: &str) -> Option<&'static str> {
    ASSET_FIELDS
        .iter()
        .any(|field| field.eq_ignore_ascii_case(name))
        .then_some(
            "is the name of an asset field (tag, asset_type, discipline, name, area), \
             which a CSV file could not tell from the property",
        )
}

/// Check that no property an asset is given has the name of one of its fields; one
/// removed (`null` in a patch) may.
pub fn check_asset_property_names(properties: &Map<String, Value>, errors: &mut Vec<FieldError>) {
    for (key, value) in properties {
        if let Some(message) = asset_field_clash(key).filter(|_| !value.is_null()) {
            errors.push(FieldError::new(format!("properties.{key}"), message));
        }
    }
}

/// Make every number among `properties` the number the log gives back
/// ([`as_stored_number`]).
pub fn as_stored_numbers(properties: &mut Map<String, Value>) {
    for value in properties.values_mut() {
        as_stored_number(value);
    }
}

/// `value` as Postgres' `jsonb` gives it back, so that what a command answers and a
/// rule compares is what the log holds: a negative zero is a zero (`jsonb` has none),
/// and a whole double of at least 1e16 in magnitude (which `serde_json` writes with an
/// exponent, `1e16`, and `jsonb` gives back as `10000000000000000`) is that integer
/// where 64 bits hold it. Without this a rule computing `1e16` found it changed on
/// every run.
pub fn as_stored_number(value: &mut Value) {
    let Value::Number(number) = value else {
        return;
    };
    let Some(float) = number.as_f64().filter(|_| number.is_f64()) else {
        return;
    };
    // 2^63 and 2^64, exactly.
    const I64_END: f64 = 9_223_372_036_854_775_808.0;
    const U64_END: f64 = 18_446_744_073_709_551_616.0;
    if float == 0.0 {
        *value = Value::from(0.0);
    } else if float.fract() == 0.0 && float.abs() >= 1e16 {
        if (-I64_END..I64_END).contains(&float) {
            *value = Value::from(float as i64);
        } else if (0.0..U64_END).contains(&float) {
            *value = Value::from(float as u64);
        }
    }
}

/// Check property names and values: scalars only (`null` allowed when `allow_null`,
/// meaning "remove" in a patch).
pub fn check_properties(
    properties: &Map<String, Value>,
    allow_null: bool,
    errors: &mut Vec<FieldError>,
) {
    if properties.len() > MAX_PROPERTIES {
        errors.push(FieldError::new(
            "properties",
            format!("more than {MAX_PROPERTIES} properties"),
        ));
        return;
    }
    for (key, value) in properties {
        let field = format!("properties.{key}");
        let key_valid = !key.is_empty()
            && key.len() <= MAX_PROPERTY_NAME
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !key_valid {
            errors.push(FieldError::new(
                field.clone(),
                "property names are 1 to 64 ASCII letters, digits or `_`",
            ));
        }
        match value {
            Value::Number(_) | Value::Bool(_) | Value::String(_) => {
                if let Some(message) = value_error(value) {
                    errors.push(FieldError::new(field, message));
                }
            }
            Value::Null if allow_null => {}
            _ => errors.push(FieldError::new(
                field,
                "must be a number, a string or a boolean",
            )),
        }
    }
    // A change's body may rename one to the other (`{"Power": null, "power": 5}`):
    // its merged result is checked instead.
    if !allow_null {
        check_case_twins(None, properties, errors);
    }
}

/// Check the properties a change leaves on an aggregate (`before`: what it had): at most
/// [`MAX_PROPERTIES`], as a request may send, once merged with what was there. One the
/// change does not grow stays editable, whatever it holds.
pub fn check_merged_properties(
    before: Option<&Map<String, Value>>,
    after: &Map<String, Value>,
    errors: &mut Vec<FieldError>,
) {
    let had = before.map_or(0, Map::len);
    if after.len() > MAX_PROPERTIES && after.len() > had {
        errors.push(FieldError::new(
            "properties",
            format!(
                "the change leaves {} (there were {had}), more than {MAX_PROPERTIES}",
                after.len()
            ),
        ));
    }
    check_case_twins(before, after, errors);
}

/// Two property names that differ only in case (`Power`, `power`) that the change
/// would leave side by side, where `before` did not have both: an export's header
/// names each column once whatever the case, so such an asset could not be imported
/// back, and a rule's `asset.properties.power` would not see `Power`.
fn check_case_twins(
    before: Option<&Map<String, Value>>,
    after: &Map<String, Value>,
    errors: &mut Vec<FieldError>,
) {
    // No pair without two names, and none new without a new name (most changes a run
    // or an import makes): nothing to look at, on the hot path.
    let added = |key: &String| before.is_none_or(|before| !before.contains_key(key));
    if after.len() < 2 || !after.keys().any(added) {
        return;
    }
    let mut seen: std::collections::HashMap<String, &str> = std::collections::HashMap::new();
    for key in after.keys() {
        let Some(other) = seen.insert(key.to_ascii_lowercase(), key) else {
            continue;
        };
        let had_both =
            before.is_some_and(|before| before.contains_key(key) && before.contains_key(other));
        if !had_both {
            let (kept, new) = match before.is_some_and(|before| before.contains_key(key)) {
                true => (key.as_str(), other),
                false => (other, key.as_str()),
            };
            errors.push(FieldError::new(
                format!("properties.{new}"),
                format!(
                    "differs from property `{kept}` only in case: names are one property \
                     whatever their case; write it as `{kept}`"
                ),
            ));
        }
    }
}

/// Check what a rule's change writes as [`check_text`] and [`check_properties`] check
/// what a request sends: `name` and `area`, the property values that differ from
/// `before`'s, and the merged properties' count.
pub fn check_written(
    name: Option<&str>,
    area: Option<&str>,
    before: Option<&Map<String, Value>>,
    after: &Map<String, Value>,
    errors: &mut Vec<FieldError>,
) {
    check_text("name", name, errors);
    check_text("area", area, errors);
    for (key, value) in after {
        let new = before.and_then(|before| before.get(key)) != Some(value);
        if let Some(message) = value_error(value).filter(|_| new) {
            errors.push(FieldError::new(format!("properties.{key}"), message));
        }
    }
    check_merged_properties(before, after, errors);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_names_that_differ_only_in_case_are_refused_where_a_change_makes_them() {
        let map = |value: Value| value.as_object().cloned().unwrap_or_default();
        let fields = |before: Option<Value>, after: Value| {
            let mut errors = Vec::new();
            let before = before.map(map);
            check_merged_properties(before.as_ref(), &map(after), &mut errors);
            errors
                .into_iter()
                .map(|error| error.field)
                .collect::<Vec<_>>()
        };
        // Before: both kept side by side, and the asset's export could not be imported.
        assert_eq!(
            fields(Some(json!({"Power": 5})), json!({"Power": 5, "power": 7})),
            ["properties.power"]
        );
        assert_eq!(
            fields(None, json!({"Power": 1, "power": 2})),
            ["properties.power"]
        );
        // Renamed in one change, or a pair that was there before: left alone.
        assert!(fields(Some(json!({"Power": 5})), json!({"power": 5})).is_empty());
        assert!(fields(Some(json!({"A": 1, "a": 2})), json!({"A": 1, "a": 3})).is_empty());
        let mut errors = Vec::new();
        check_properties(&map(json!({"Power": 1, "power": 2})), false, &mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
        check_properties(&map(json!({"Power": null, "power": 2})), true, &mut errors);
        assert_eq!(errors.len(), 1, "a patch body may rename");
    }

    #[test]
    fn a_double_from_2_63_to_2_64_is_refused_saying_it_would_be_an_integer() {
        // Before: "10000000000000000000 is beyond the integers ..." for a request that
        // sent 1e19, without a word on why it became an integer.
        let mut properties = json!({"big": 1e19})
            .as_object()
            .cloned()
            .unwrap_or_default();
        as_stored_numbers(&mut properties);
        let mut errors = Vec::new();
        check_properties(&properties, false, &mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].message.ends_with(
                "written as a double (`1e19`) is stored as this integer too: send it as a string"
            ),
            "{errors:?}"
        );
    }

    #[test]
    fn numbers_are_made_what_the_log_gives_back() {
        let stored = |value: Value| {
            let mut value = value;
            as_stored_number(&mut value);
            value.to_string()
        };
        assert_eq!(stored(json!(-0.0)), "0.0");
        assert_eq!(stored(json!(1e16)), "10000000000000000");
        assert_eq!(stored(json!(-1.5e16)), "-15000000000000000");
        assert_eq!(stored(json!(1e19)), "10000000000000000000");
        assert_eq!(
            stored(json!(9_223_372_036_854_775_808.0)),
            "9223372036854775808"
        );
        // Written without an exponent, or beyond 64 bits: given back as doubles.
        assert_eq!(stored(json!(1e15)), "1000000000000000.0");
        assert_eq!(stored(json!(1e20)), "1e+20");
        assert_eq!(stored(json!(0.5)), "0.5");
        assert_eq!(stored(json!(7)), "7");
    }
    use serde_json::json;

    #[test]
    fn nested_property_values_are_refused_with_their_path() {
        let mut errors = Vec::new();
        let properties = json!({"power_kw": 75, "wiring": {"a": 1}, "tags": [1]});
        check_properties(properties.as_object().unwrap(), false, &mut errors);
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["properties.tags", "properties.wiring"]);
    }

    #[test]
    fn a_tag_with_an_invisible_character_is_refused() {
        for tag in [
            "P-101\u{200B}",
            "\u{FEFF}P-101",
            "P-\u{00AD}101",
            "P-101\u{202E}",
        ] {
            let mut errors = Vec::new();
            check_tag(tag, &mut errors);
            assert_eq!(errors.len(), 1, "{tag:?}");
        }
        let mut errors = Vec::new();
        check_tag("P-101/Ä", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn a_tag_that_only_looks_like_another_is_refused() {
        // Before: each became an asset of its own beside `Ü-401` and `M-101`.
        for (tag, usual) in [("U\u{0308}-401", "Ü-401"), ("\u{FF2D}-101", "M-101")] {
            let mut errors = Vec::new();
            check_tag(tag, &mut errors);
            assert_eq!(errors.len(), 1, "{tag:?}");
            assert!(
                errors[0].message.ends_with(&format!("write `{usual}`")),
                "{errors:?}"
            );
        }
        let mut errors = Vec::new();
        check_tag("Ü-401", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn a_nul_or_an_integer_beyond_i64_is_refused_where_it_would_be_stored() {
        let mut errors = Vec::new();
        check_text("name", Some("Motor\0"), &mut errors);
        let properties = json!({"note": "a\0b", "serial": u64::MAX, "kw": -5, "big": i64::MAX});
        check_properties(properties.as_object().unwrap(), false, &mut errors);
        check_written(
            None,
            Some("U\0"),
            None,
            properties.as_object().unwrap(),
            &mut errors,
        );
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec![
                "name",
                "properties.note",
                "properties.serial",
                "area",
                "properties.note",
                "properties.serial"
            ]
        );
        assert!(
            errors[2].message.contains("18446744073709551615"),
            "{errors:?}"
        );
    }

    #[test]
    fn null_removes_a_property_only_in_a_patch() {
        let properties = json!({"power_kw": null});
        let mut errors = Vec::new();
        check_properties(properties.as_object().unwrap(), true, &mut errors);
        assert!(errors.is_empty());
        check_properties(properties.as_object().unwrap(), false, &mut errors);
        assert_eq!(errors.len(), 1);
    }

    #[test]
    fn merged_properties_over_the_limit_are_refused_only_when_the_change_grows_them() {
        let many = |count: usize| -> Map<String, Value> {
            (0..count).map(|n| (format!("p{n}"), json!(n))).collect()
        };
        let mut errors = Vec::new();
        check_merged_properties(Some(&many(150)), &many(200), &mut errors);
        check_merged_properties(None, &many(200), &mut errors);
        check_merged_properties(Some(&many(300)), &many(300), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        check_merged_properties(Some(&many(150)), &many(201), &mut errors);
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].message,
            "the change leaves 201 (there were 150), more than 200"
        );
    }

    #[test]
    fn what_a_rule_writes_is_held_to_the_limits_of_a_request() {
        let before = json!({"note": "x".repeat(5_000), "kw": 75});
        let before = before.as_object().cloned().unwrap_or_default();
        let mut after = before.clone();
        let mut errors = Vec::new();
        check_written(Some("Motor"), None, Some(&before), &after, &mut errors);
        assert!(
            errors.is_empty(),
            "an unchanged long value stays: {errors:?}"
        );
        after.insert("remark".into(), json!("y".repeat(4_097)));
        check_written(
            Some(&"n".repeat(257)),
            Some("U1"),
            Some(&before),
            &after,
            &mut errors,
        );
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["name", "properties.remark"]);
    }

    #[test]
    fn codes_are_upper_cased_and_checked() {
        let mut errors = Vec::new();
        assert_eq!(
            check_code("discipline", "electrical", &mut errors),
            "ELECTRICAL"
        );
        assert!(errors.is_empty());
        check_code("discipline", "elec trical", &mut errors);
        assert_eq!(errors[0].field, "discipline");
    }

    #[test]
    fn no_property_takes_the_name_of_an_asset_field_unless_it_is_removed() {
        let mut errors = Vec::new();
        let properties = json!({"Tag": "x", "area": null, "area_code": "U1", "kw": 1});
        check_asset_property_names(properties.as_object().unwrap(), &mut errors);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["properties.Tag"]);
    }

    #[test]
    fn none_is_no_discipline_but_may_be_another_code() {
        let mut errors = Vec::new();
        check_code("asset_type", "none", &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        check_code("discipline", "None", &mut errors);
        assert_eq!(
            errors,
            [FieldError::new(
                "discipline",
                synapse_shared::domain::RESERVED_DISCIPLINE
            )]
        );
    }
}
