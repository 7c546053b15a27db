//! The plant as a CSV file, in the layout the command API's CSV import takes:
//! `tag,asset_type,discipline,name,area` then one column per property key.

use std::collections::BTreeSet;
use std::io::Write;

use serde_json::Value;

use crate::plant::Plant;

/// The fixed columns before the property columns.
pub const FIXED_COLUMNS: [&str; 5] = ["tag", "asset_type", "discipline", "name", "area"];

/// Write `plant` as CSV (UTF-8, comma-separated, RFC 4180 quoting, `\n` line ends).
/// Property columns are sorted by name; a property an asset lacks is an empty cell.
pub fn write_csv(plant: &Plant, out: &mut impl Write) -> std::io::Result<()> {
    let property_columns: BTreeSet<&str> = plant
        .assets
        .iter()
        .flat_map(|asset| asset.properties.keys().map(String::as_str))
        .collect();
    let header: Vec<&str> = FIXED_COLUMNS
        .iter()
        .copied()
        .chain(property_columns.iter().copied())
        .collect();
    write_row(out, header.iter().map(|column| column.to_string()))?;
    for asset in &plant.assets {
        let fixed = [
            asset.tag.clone(),
            asset.asset_type.to_owned(),
            asset.discipline.to_owned(),
            asset.name.clone(),
            asset.area.clone(),
        ];
        let properties = property_columns
            .iter()
            .map(|key| asset.properties.get(*key).map(cell).unwrap_or_default());
        write_row(out, fixed.into_iter().chain(properties))?;
    }
    Ok(())
}

/// A JSON scalar as a CSV cell: strings bare, numbers and booleans as JSON writes them.
fn cell(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn write_row(out: &mut impl Write, cells: impl Iterator<Item = String>) -> std::io::Result<()> {
    let line: Vec<String> = cells.map(|cell| quote(&cell)).collect();
    writeln!(out, "{}", line.join(","))
}

/// Quote a cell when it holds a separator, a quote or a line break (RFC 4180).
fn quote(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r', ';']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plant::generate;

    #[test]
    fn the_csv_has_a_header_and_one_line_per_asset() {
        let plant = generate(300, 5);
        let mut out = Vec::new();
        write_csv(&plant, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 301);
        assert!(lines[0].starts_with("tag,asset_type,discipline,name,area,"));
        assert!(lines[0].contains(",rated_power_kw,"));
        let columns = lines[0].split(',').count();
        assert!(lines.iter().all(|line| !line.contains('"')) || columns > 5);
    }

    #[test]
    fn cells_with_separators_or_quotes_are_quoted() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
