//! Records to typed rows. The `csv` crate does the CSV (quotes, escaped quotes, line
//! breaks inside quotes, CRLF); this module turns fields into assets and collects every
//! error with its row and column, so the client fixes the file in one go.

use super::cell::{self, type_cell, ColumnTally};
use super::header::{self, Columns};
use super::lines::Lines;
use super::quotes::{stray_quote, StrayQuote};
use super::{Delimiter, ErrorList, ImportError, RowError, MAX_ROWS};
use crate::assets::input::{check_code, check_properties, check_tag, check_text, FieldError};
use csv::{ErrorKind, StringRecord};
use serde_json::Map;
use std::collections::HashMap;

/// One data row, validated by the rules of single asset creation.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportRow {
    /// Row of the file (see [`RowError::row`]).
    pub row: u64,
    pub tag: String,
    /// Upper-cased, as single creation stores it.
    pub asset_type: String,
    pub discipline: String,
    /// `None` when the file has no such column or the cell is empty (keep what is there).
    pub name: Option<String>,
    pub area: Option<String>,
    /// The row's non-empty property cells, typed.
    pub properties: Map<String, serde_json::Value>,
}

/// A file that passed every check.
#[derive(Debug, Clone)]
pub struct ParsedFile {
    pub delimiter: Delimiter,
    pub rows: Vec<ImportRow>,
}

const NO_HEADER: &str =
    "the file is empty: expected a header row naming tag, asset_type and discipline, then data rows";

/// Parse and validate `text`; `delimiter` `None` detects it from the header line.
pub fn parse(text: &str, delimiter: Option<Delimiter>) -> Result<ParsedFile, ImportError> {
    if text.trim().is_empty() {
        return Err(ImportError::Empty(NO_HEADER));
    }
    let delimiter = delimiter.unwrap_or_else(|| header::detect_delimiter(text));
    if let Some(stray) = stray_quote(text, delimiter.byte()) {
        return Err(stray_quote_error(text, delimiter, &stray));
    }
    // `has_headers(false)`: the header is read as a record so it has a position and
    // its width is the one every other record is held to (`flexible(false)`).
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter.byte())
        .has_headers(false)
        .flexible(false)
        .from_reader(text.as_bytes());
    let mut record = StringRecord::new();
    let mut lines = Lines::new(text);
    let header_row = match reader.read_record(&mut record) {
        Ok(true) => lines.of(record.position()),
        Ok(false) => return Err(ImportError::Empty(NO_HEADER)),
        Err(error) => return Err(unreadable(error)),
    };
    let fields: Vec<&str> = record.iter().collect();
    let columns = header::columns(&fields, header_row, delimiter)?;

    let mut rows = Vec::new();
    // Per row, the text of its number cells whose JSON spells them otherwise (`1.50`,
    // `-0`, `1E3`): a code column keeps them as written.
    let mut spellings = Vec::new();
    let mut errors = ErrorList::default();
    let mut tallies = vec![ColumnTally::default(); columns.properties.len()];
    let mut data_rows = 0usize;
    loop {
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                data_rows += 1;
                if data_rows > MAX_ROWS {
                    return Err(ImportError::TooManyRows);
                }
                let row = lines.of(record.position());
                if record.iter().all(|field| field.trim().is_empty()) {
                    // Spreadsheets export rows of empty cells below the data.
                    continue;
                }
                let (parsed, spelled) = read_row(&record, row, &columns, &mut errors);
                // A declared column's cells are typed already: nothing to infer.
                for (column, tally) in columns.properties.iter().zip(&mut tallies) {
                    let value = parsed.properties.get(&column.name);
                    if let (None, Some(value)) = (column.declared, value) {
                        tally.add(value);
                    }
                }
                rows.push(parsed);
                spellings.push(spelled);
            }
            Err(error) => match error.kind() {
                ErrorKind::UnequalLengths {
                    pos,
                    expected_len,
                    len,
                } => {
                    data_rows += 1;
                    let row = lines.of(pos.as_ref());
                    errors.push(RowError::new(
                        row,
                        None,
                        format!("the row has {len} fields, the header has {expected_len}"),
                    ));
                }
                _ => return Err(unreadable(error)),
            },
        }
    }
    if rows.is_empty() && errors.is_empty() {
        return Err(ImportError::Empty(
            "the file has a header but no data rows: nothing to import",
        ));
    }
    type_code_columns(&mut rows, &spellings, &columns, &tallies);
    check_file(&rows, &columns, &tallies, &mut errors);
    if !errors.is_empty() {
        return Err(ImportError::invalid(errors, None));
    }
    Ok(ParsedFile { delimiter, rows })
}

/// The refusal of a file with a quoted cell that swallows lines, naming the cell's
/// column by the header (read from the first line alone, since the header itself may
/// hold the stray quote).
fn stray_quote_error(text: &str, delimiter: Delimiter, stray: &StrayQuote) -> ImportError {
    let (header_row, first_line) = (1u64..)
        .zip(text.lines())
        .find(|(_, line)| !line.trim().is_empty())
        .unwrap_or((1, ""));
    let mut header = StringRecord::new();
    let column = match csv::ReaderBuilder::new()
        .delimiter(delimiter.byte())
        .has_headers(false)
        .from_reader(first_line.as_bytes())
        .read_record(&mut header)
    {
        Ok(true) if stray.row > header_row => header.get(stray.field).map(str::trim),
        _ => None,
    };
    let mut errors = ErrorList::default();
    errors.push(RowError::new(stray.row, column, stray.message()));
    ImportError::invalid(errors, None)
}

/// One record to a row, with the text of its number cells that JSON spells otherwise
/// (column, text); its errors go to `errors` (the row is kept so that file-wide checks
/// still see it).
fn read_row(
    record: &StringRecord,
    row: u64,
    columns: &Columns,
    errors: &mut ErrorList,
) -> (ImportRow, Spelled) {
    let cell = |index: usize| record.get(index).map(str::trim).unwrap_or("");
    let optional = |index: Option<usize>| {
        index
            .map(cell)
            .filter(|text| !text.is_empty())
            .map(str::to_owned)
    };
    let mut field_errors = Vec::new();
    let tag = cell(columns.tag).to_owned();
    check_tag(&tag, &mut field_errors);
    let asset_type = check_code("asset_type", cell(columns.asset_type), &mut field_errors);
    let discipline = check_code("discipline", cell(columns.discipline), &mut field_errors);
    let name = optional(columns.name);
    let area = optional(columns.area);
    check_text("name", name.as_deref(), &mut field_errors);
    check_text("area", area.as_deref(), &mut field_errors);
    let mut properties = Map::new();
    let mut spelled = Spelled::new();
    for column in &columns.properties {
        let text = cell(column.index);
        let value = match column.declared {
            None => {
                let value = type_cell(text);
                if let Some(serde_json::Value::Number(number)) = &value {
                    if number.to_string() != text {
                        spelled.push((column.name.clone(), text.to_owned()));
                    }
                }
                value
            }
            Some(declared) => declared.type_cell(text).unwrap_or_else(|message| {
                let header = columns.names.get(column.index).map(String::as_str);
                errors.push(RowError::new(row, header, message));
                None
            }),
        };
        if let Some(value) = value {
            properties.insert(column.name.clone(), value);
        }
    }
    check_properties(&properties, false, &mut field_errors);
    for error in field_errors {
        errors.push(located(row, columns, error));
    }
    for &index in &columns.unnamed {
        if !cell(index).is_empty() {
            errors.push(RowError::new(
                row,
                None,
                format!("column {} has a value but no header", index + 1),
            ));
        }
    }
    let parsed = ImportRow {
        row,
        tag,
        asset_type,
        discipline,
        name,
        area,
        properties,
    };
    (parsed, spelled)
}

/// A row's number cells whose JSON spells them otherwise: (column, text as written).
type Spelled = Vec<(String, String)>;

/// A field error of single creation, named by the file's own column header.
fn located(row: u64, columns: &Columns, error: FieldError) -> RowError {
    let index = match error.field.as_str() {
        "tag" => Some(columns.tag),
        "asset_type" => Some(columns.asset_type),
        "discipline" => Some(columns.discipline),
        "name" => columns.name,
        "area" => columns.area,
        // A property's column as its header says it (`serial:json`), as the cell
        // errors of that column do.
        field => field.strip_prefix("properties.").and_then(|name| {
            columns
                .properties
                .iter()
                .find(|column| column.name == name)
                .map(|column| column.index)
        }),
    };
    let column = match index.and_then(|index| columns.names.get(index)) {
        Some(name) => name.as_str(),
        None => error
            .field
            .strip_prefix("properties.")
            .unwrap_or(&error.field),
    };
    RowError::new(row, Some(column), error.message)
}

/// Every whole number of a code column back to its text ([`ColumnTally::is_codes`]).
fn type_code_columns(
    rows: &mut [ImportRow],
    spellings: &[Spelled],
    columns: &Columns,
    tallies: &[ColumnTally],
) {
    for (column, tally) in columns.properties.iter().zip(tallies) {
        if !tally.is_codes() {
            continue;
        }
        for (row, spelled) in rows.iter_mut().zip(spellings) {
            if let Some(value) = row.properties.get_mut(&column.name) {
                let written = spelled
                    .iter()
                    .find(|(name, _)| *name == column.name)
                    .map(|(_, text)| text.as_str());
                cell::as_code(value, written);
            }
        }
    }
}

/// Checks across rows: duplicate tags (every row of a duplicate is listed) and
/// non-numeric cells in numeric columns.
fn check_file(
    rows: &[ImportRow],
    columns: &Columns,
    tallies: &[ColumnTally],
    errors: &mut ErrorList,
) {
    let mut rows_by_tag: HashMap<&str, Vec<u64>> = HashMap::with_capacity(rows.len());
    for row in rows.iter().filter(|row| !row.tag.is_empty()) {
        rows_by_tag.entry(&row.tag).or_default().push(row.row);
    }
    let tag_column = columns.names.get(columns.tag).map(String::as_str);
    for (tag, on_rows) in rows_by_tag.iter().filter(|(_, on)| on.len() > 1) {
        let listed = on_rows
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        for &row in on_rows {
            errors.push(RowError::new(
                row,
                tag_column,
                format!("duplicate tag `{tag}` (rows {listed})"),
            ));
        }
    }
    for (column, tally) in columns.properties.iter().zip(tallies) {
        if !tally.has_strays() {
            continue;
        }
        let name = &column.name;
        for row in rows {
            if let Some(value) = row.properties.get(name).filter(|value| !value.is_number()) {
                errors.push(tally.stray(row.row, name, value));
            }
        }
    }
}

/// A failure of the reader itself (not a ragged row): reported with its position.
fn unreadable(error: csv::Error) -> ImportError {
    let row = error.position().map_or(0, |position| position.line());
    let mut errors = ErrorList::default();
    errors.push(RowError::new(row, None, format!("unreadable CSV: {error}")));
    ImportError::invalid(errors, None)
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
