//! The header row: which column is which, and the delimiter when the client gave none.

use super::cell::Declared;
use super::{Delimiter, ErrorList, ImportError, RowError};
use crate::assets::input::check_properties;
use serde_json::{Map, Value};

/// Columns every file must have.
pub const REQUIRED: [&str; 3] = ["tag", "asset_type", "discipline"];

/// Where each field of an asset sits in a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Columns {
    pub tag: usize,
    pub asset_type: usize,
    pub discipline: usize,
    pub name: Option<usize>,
    pub area: Option<usize>,
    /// Every other named column.
    pub properties: Vec<PropertyColumn>,
    /// Columns with an empty header (Excel writes them for trailing `;`); their cells
    /// must be empty too.
    pub unnamed: Vec<usize>,
    /// The header as written (trimmed), to name columns in errors.
    pub names: Vec<String>,
}

/// A column of a property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyColumn {
    pub index: usize,
    pub name: String,
    /// The type its header declares (`name:number`); inferred from the cells if none.
    pub declared: Option<Declared>,
}

/// The delimiter of a file that did not say: whichever of `;` and `,` occurs more often
/// outside quotes in the header line (a tie, e.g. a one-column file, means `,`).
pub fn detect_delimiter(text: &str) -> Delimiter {
    let first_line = text
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("");
    let (mut commas, mut semicolons, mut quoted) = (0usize, 0usize, false);
    for character in first_line.chars() {
        match character {
            '"' => quoted = !quoted,
            ',' if !quoted => commas += 1,
            ';' if !quoted => semicolons += 1,
            _ => {}
        }
    }
    if semicolons > commas {
        Delimiter::Semicolon
    } else {
        Delimiter::Comma
    }
}

/// Map the header (line `row`) to columns. Every problem with it is reported at once;
/// a header that came out as one column because of the wrong delimiter says so.
pub fn columns(header: &[&str], row: u64, delimiter: Delimiter) -> Result<Columns, ImportError> {
    let names: Vec<String> = header.iter().map(|name| name.trim().to_owned()).collect();
    let mut errors = ErrorList::default();
    let mut found: [Option<usize>; 5] = [None; 5];
    let mut properties = Vec::new();
    let mut unnamed = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (index, name) in names.iter().enumerate() {
        if name.is_empty() {
            unnamed.push(index);
            continue;
        }
        let (name, declared) = match name.split_once(':') {
            Some((name, declared)) => (name.trim(), Some(declared.trim())),
            None => (name.as_str(), None),
        };
        let key = name.to_lowercase();
        if let Some(first) = seen.insert(key.clone(), index) {
            errors.push(RowError::new(
                row,
                Some(name),
                format!("duplicate column (columns {} and {})", first + 1, index + 1),
            ));
            continue;
        }
        let slot = crate::assets::input::ASSET_FIELDS
            .iter()
            .position(|known| *known == key);
        let declared = match (declared, slot) {
            (None, _) => None,
            (Some(_), Some(_)) => {
                // Still the column: the file's other mistakes are reported with it.
                errors.push(RowError::new(
                    row,
                    Some(&names[index]),
                    format!("only property columns declare a type; `{key}` is text"),
                ));
                None
            }
            (Some(declared), None) => match Declared::parse(declared) {
                Some(declared) => Some(declared),
                None => {
                    errors.push(RowError::new(
                        row,
                        Some(&names[index]),
                        format!(
                            "unknown column type `{declared}`: declare {}",
                            Declared::NAMES
                        ),
                    ));
                    continue;
                }
            },
        };
        match slot {
            Some(slot) => found[slot] = Some(index),
            None => properties.push(PropertyColumn {
                index,
                name: name.to_owned(),
                declared,
            }),
        }
    }
    errors.extend(property_name_errors(&properties, row));

    let [Some(tag), Some(asset_type), Some(discipline), name, area] = found else {
        // Without the required columns the header is probably not a header (or was
        // split on the wrong delimiter): other complaints about it would be noise.
        let missing: Vec<&str> = REQUIRED
            .iter()
            .zip(found)
            .filter(|(_, index)| index.is_none())
            .map(|(name, _)| *name)
            .collect();
        let mut errors = ErrorList::default();
        for name in &missing {
            errors.push(RowError::new(row, Some(name), "required column is missing"));
        }
        let hint = missing_hint(&missing, &names, delimiter);
        return Err(ImportError::invalid(errors, Some(hint)));
    };
    if !errors.is_empty() {
        return Err(ImportError::invalid(errors, None));
    }
    Ok(Columns {
        tag,
        asset_type,
        discipline,
        name,
        area,
        properties,
        unnamed,
        names,
    })
}

/// Property names follow the rules of single asset creation; checking them once here
/// gives one error per bad column instead of one per row.
fn property_name_errors(properties: &[PropertyColumn], row: u64) -> Vec<RowError> {
    let sample: Map<String, Value> = properties
        .iter()
        .map(|column| (column.name.clone(), Value::Bool(true)))
        .collect();
    let mut field_errors = Vec::new();
    check_properties(&sample, false, &mut field_errors);
    field_errors
        .into_iter()
        .map(|error| {
            let column = error.field.strip_prefix("properties.");
            let message = match column {
                Some(_) => format!(
                    "column name is not a valid property name: {}",
                    error.message
                ),
                None => format!("too many property columns: {}", error.message),
            };
            RowError::new(row, column, message)
        })
        .collect()
}

/// Why the required columns are missing, when the header suggests a reason.
fn missing_hint(missing: &[&str], names: &[String], delimiter: Delimiter) -> String {
    let other = delimiter.other().as_char();
    let listed = missing.join(", ");
    if names.iter().any(|name| name.contains(other)) {
        format!(
            "required columns missing: {listed}. The header was split on `{}` but contains \
             `{other}`: the file looks {}-separated; send ?delimiter={other} or leave \
             delimiter out to detect it",
            delimiter.as_char(),
            match other {
                ';' => "semicolon",
                _ => "comma",
            },
        )
    } else {
        format!(
            "required columns missing: {listed}. The first row must be a header naming at \
             least tag, asset_type and discipline"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delimiter_is_the_more_frequent_one_outside_quotes() {
        assert_eq!(
            detect_delimiter("tag;name;\"a,b,c\"\n"),
            Delimiter::Semicolon
        );
        assert_eq!(detect_delimiter("\n\ntag,name;x,y\n"), Delimiter::Comma);
        assert_eq!(detect_delimiter("tag\n"), Delimiter::Comma);
    }

    #[test]
    fn header_names_are_case_insensitive_and_trimmed_and_the_rest_are_properties() {
        let columns = columns(
            &[" Tag ", "ASSET_TYPE", "Discipline", "power_kw", "", "Name"],
            1,
            Delimiter::Comma,
        )
        .unwrap();
        assert_eq!(
            (columns.tag, columns.asset_type, columns.discipline),
            (0, 1, 2)
        );
        assert_eq!(columns.name, Some(5));
        assert_eq!(columns.area, None);
        assert_eq!(
            columns.properties,
            vec![PropertyColumn {
                index: 3,
                name: "power_kw".to_owned(),
                declared: None
            }]
        );
        assert_eq!(columns.unnamed, vec![4]);
    }

    #[test]
    fn a_semicolon_header_split_on_commas_names_the_missing_columns_and_the_delimiter() {
        let error = columns(&["tag;asset_type;discipline"], 1, Delimiter::Comma).unwrap_err();
        let ImportError::Invalid { errors, hint, .. } = error else {
            panic!("expected invalid, got {error:?}");
        };
        let missing: Vec<_> = errors.iter().filter_map(|e| e.column.clone()).collect();
        assert_eq!(missing, vec!["tag", "asset_type", "discipline"]);
        let hint = hint.unwrap();
        assert!(hint.contains("?delimiter=;"), "{hint}");
        assert!(hint.contains("semicolon-separated"), "{hint}");
    }

    #[test]
    fn bad_property_names_and_duplicate_columns_are_header_errors() {
        let error = columns(
            &["tag", "asset_type", "discipline", "Power kW", "TAG"],
            1,
            Delimiter::Comma,
        )
        .unwrap_err();
        let ImportError::Invalid { errors, .. } = error else {
            panic!("expected invalid, got {error:?}");
        };
        let columns: Vec<_> = errors.iter().filter_map(|e| e.column.clone()).collect();
        assert_eq!(columns, vec!["TAG", "Power kW"]);
        assert!(errors.iter().all(|error| error.row == 1));
    }
}
