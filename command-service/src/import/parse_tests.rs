use super::*;
use serde_json::json;

fn invalid(text: &str, delimiter: Option<Delimiter>) -> Vec<RowError> {
    match parse(text, delimiter) {
        Err(ImportError::Invalid { errors, .. }) => errors,
        other => panic!("expected row errors, got {other:?}"),
    }
}

fn error(row: u64, column: Option<&str>, message: &str) -> RowError {
    RowError::new(row, column, message)
}

#[test]
fn a_semicolon_file_is_detected_and_its_cells_typed() {
    let text = "tag;asset_type;discipline;name;power_kw;is_spare;note\n\
                M-1;motor;electrical;Feed pump motor;75;TRUE;=SUM(A1)\n\
                M-2;MOTOR;ELECTRICAL;;-5.5;false;\n";

    let parsed = parse(text, None).unwrap();

    assert_eq!(parsed.delimiter, Delimiter::Semicolon);
    assert_eq!(
        parsed.rows,
        vec![
            ImportRow {
                row: 2,
                tag: "M-1".into(),
                asset_type: "MOTOR".into(),
                discipline: "ELECTRICAL".into(),
                name: Some("Feed pump motor".into()),
                area: None,
                properties: json!({"power_kw": 75, "is_spare": true, "note": "=SUM(A1)"})
                    .as_object()
                    .cloned()
                    .unwrap(),
            },
            ImportRow {
                row: 3,
                tag: "M-2".into(),
                asset_type: "MOTOR".into(),
                discipline: "ELECTRICAL".into(),
                name: None,
                area: None,
                properties: json!({"power_kw": -5.5, "is_spare": false})
                    .as_object()
                    .cloned()
                    .unwrap(),
            },
        ]
    );
}

#[test]
fn quoted_fields_may_hold_delimiters_quotes_and_line_breaks() {
    let text = "tag,asset_type,discipline,name,note\r\n\
                P-1,PUMP,PROCESS,\"Pump, \"\"main\"\"\",\"two\nlines\"\r\n\
                P-2,PUMP,PROCESS,x,y\r\n";

    let parsed = parse(text, None).unwrap();

    assert_eq!(parsed.rows[0].name.as_deref(), Some("Pump, \"main\""));
    assert_eq!(parsed.rows[0].properties["note"], json!("two\nlines"));
    // Rows are lines of the file: the record after a two-line cell starts on line 4.
    assert_eq!(parsed.rows[1].row, 4);
}

#[test]
fn blank_lines_count_as_rows_so_numbers_match_the_file() {
    let errors = invalid("tag,asset_type,discipline\n\nM 1,MOTOR,E\n", None);
    assert_eq!(errors[0].row, 3);
}

#[test]
fn every_bad_cell_and_ragged_row_is_reported_with_row_and_column() {
    let text = "tag,asset_type,discipline,power_kw\n\
                M-1,MOTOR,ELECTRICAL,75\n\
                M 2,MOTOR,ELEC TRICAL,90\n\
                M-3,MOTOR,ELECTRICAL\n\
                M-4,MOTOR,ELECTRICAL,n/a\n\
                ,MOTOR,ELECTRICAL,110\n";

    let errors = invalid(text, None);

    assert_eq!(
        errors,
        vec![
            error(
                3,
                Some("tag"),
                "must not contain whitespace, control or invisible characters"
            ),
            error(
                3,
                Some("discipline"),
                "must be 1 to 64 letters, digits, `_` or `-`"
            ),
            error(4, None, "the row has 3 fields, the header has 4"),
            error(
                5,
                Some("power_kw"),
                "non-numeric value `n/a` in a numeric column (3 of 4 values are numbers) \
                 (if the column mixes numbers and text on purpose, declare it `NAME:text`)"
            ),
            error(6, Some("tag"), "must not be empty"),
        ]
    );
}

#[test]
fn duplicate_tags_list_every_row_they_are_on() {
    let text = "tag,asset_type,discipline\nM-1,MOTOR,E\nM-2,MOTOR,E\nM-1,MOTOR,E\n";

    let errors = invalid(text, None);

    let message = "duplicate tag `M-1` (rows 2, 4)";
    assert_eq!(
        errors,
        vec![
            error(2, Some("tag"), message),
            error(4, Some("tag"), message)
        ]
    );
}

#[test]
fn a_header_without_rows_or_an_empty_file_is_empty() {
    for text in [
        "",
        " \r\n",
        "tag,asset_type,discipline\n",
        "tag;asset_type;discipline\n;;\n",
    ] {
        assert!(
            matches!(parse(text, None), Err(ImportError::Empty(_))),
            "{text:?}"
        );
    }
}

#[test]
fn more_rows_than_the_limit_are_refused_before_any_other_check() {
    let mut text = String::from("tag,asset_type,discipline\n");
    for index in 0..=MAX_ROWS {
        text.push_str(&format!("M-{index},MOTOR,E\n"));
    }
    assert!(matches!(parse(&text, None), Err(ImportError::TooManyRows)));
}

#[test]
fn a_value_under_an_empty_header_is_an_error_but_empty_trailing_columns_are_fine() {
    let fine = parse("tag;asset_type;discipline;;\nM-1;MOTOR;E;;\n", None).unwrap();
    assert_eq!(fine.rows.len(), 1);

    let errors = invalid("tag;asset_type;discipline;\nM-1;MOTOR;E;oops\n", None);
    assert_eq!(
        errors,
        vec![error(2, None, "column 4 has a value but no header")]
    );
}

#[test]
fn a_column_with_zero_padded_numbers_is_text_throughout() {
    // Cable numbers 001 to 150: the padded ones would be strings and the rest numbers,
    // or, where most are numbers, refused as strays.
    let mut text = String::from("tag,asset_type,discipline,cable_no,power_kw\n");
    for number in 1..=150 {
        text.push_str(&format!(
            "W-{number},CABLE,ELECTRICAL,{number:03},{number}\n"
        ));
    }
    text.push_str("W-X,CABLE,ELECTRICAL,0,n/a\n");

    let errors = invalid(&text, None);

    // The power column is numeric and `n/a` a stray; the cable numbers are no error.
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].row, 152);
    assert_eq!(errors[0].column.as_deref(), Some("power_kw"));

    let parsed = parse(&text.replace(",n/a", ",7"), None).unwrap();
    let numbers: Vec<&serde_json::Value> = parsed
        .rows
        .iter()
        .map(|row| &row.properties["cable_no"])
        .collect();
    assert_eq!(numbers[0], &json!("001"));
    assert_eq!(numbers[99], &json!("100"));
    assert_eq!(numbers[149], &json!("150"));
    assert_eq!(numbers[150], &json!("0"));
    assert_eq!(parsed.rows[0].properties["power_kw"], json!(1));
}

#[test]
fn a_header_can_declare_a_column_text_number_or_boolean() {
    // Line numbers look like numbers but name lines; the one stray `n/a` would make a
    // mostly textual column pass unnoticed.
    let text = "tag,asset_type,discipline,line_number:text,power_kw : NUMBER,spare:boolean\n\
                M-1,MOTOR,ELECTRICAL,1001,007,true\n\
                M-2,MOTOR,ELECTRICAL,true,n/a,yes\n\
                M-3,MOTOR,ELECTRICAL,,,\n";

    let errors = invalid(text, None);

    assert_eq!(
        errors,
        vec![
            error(
                3,
                Some("power_kw : NUMBER"),
                "`n/a` is not a number as the header declares"
            ),
            error(
                3,
                Some("spare:boolean"),
                "`yes` is not a boolean (true or false) as the header declares"
            ),
        ]
    );
    let parsed = parse(&text.replace("n/a,yes", "90.5,FALSE"), None).unwrap();
    let properties: Vec<serde_json::Value> = parsed
        .rows
        .iter()
        .map(|row| json!(row.properties))
        .collect();
    assert_eq!(
        properties,
        vec![
            json!({"line_number": "1001", "power_kw": 7, "spare": true}),
            json!({"line_number": "true", "power_kw": 90.5, "spare": false}),
            json!({}),
        ]
    );
}

#[test]
fn an_unknown_type_or_a_type_on_a_fixed_column_is_a_header_error() {
    let errors = invalid(
        "tag:text,asset_type,discipline,power_kw:integer\nM-1,MOTOR,ELECTRICAL,5\n",
        None,
    );

    assert_eq!(
        errors,
        vec![
            error(
                1,
                Some("tag:text"),
                "only property columns declare a type; `tag` is text"
            ),
            error(
                1,
                Some("power_kw:integer"),
                "unknown column type `integer`: declare text, number, boolean or json"
            ),
        ]
    );
}

#[test]
fn a_quote_never_closed_refuses_the_file_instead_of_swallowing_the_rows_after_it() {
    // 60 valves; the remark of the 31st opens a quote that nothing closes. The file
    // used to import 31 valves, the last with the other 29 rows as its remark.
    let mut text = String::from("tag;asset_type;discipline;name;remarks\n");
    for index in 0..60 {
        let remark = if index == 30 {
            "\"6 inch line, see P&ID"
        } else {
            "ok"
        };
        text.push_str(&format!(
            "FV-T{index:04};CONTROL_VALVE;INSTRUMENTATION;Valve {index};{remark}\n"
        ));
    }

    let errors = invalid(&text, None);

    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        (errors[0].row, errors[0].column.as_deref()),
        (32, Some("remarks"))
    );
    assert!(errors[0].message.contains("never closed"), "{errors:?}");
}

#[test]
fn a_quote_closed_by_a_later_stray_quote_refuses_the_file() {
    let text = "tag,asset_type,discipline,size\n\
                L-20,PIPE,PROCESS,\"12 inch\n\
                L-21,PIPE,PROCESS,6\n\
                L-22,PIPE,PROCESS,\"8 inch\n\
                L-23,PIPE,PROCESS,4\n";

    let errors = invalid(text, None);

    assert_eq!(
        errors,
        vec![error(
            2,
            Some("size"),
            &crate::import::quotes::StrayQuote {
                row: 2,
                field: 3,
                closed_on: Some(4)
            }
            .message()
        )]
    );
}

#[test]
fn a_code_column_keeps_every_cell_as_written_and_a_number_column_its_numbers() {
    // `007` makes `tag_no` a column of codes: its other cells are codes too, as written
    // (before, `-0` became `0` and `1E3` and `1.50` stayed the numbers 1000.0 and 1.5).
    let text = "tag,asset_type,discipline,tag_no,power_kw\n\
                V-1,VALVE,PROCESS,007,1.50\n\
                V-2,VALVE,PROCESS,-0,-0\n\
                V-3,VALVE,PROCESS,1E3,1E3\n\
                V-4,VALVE,PROCESS,1.50,75\n\
                V-5,VALVE,PROCESS,100,0\n";

    let parsed = parse(text, None).unwrap();

    let column = |name: &str| -> Vec<serde_json::Value> {
        parsed
            .rows
            .iter()
            .map(|row| row.properties[name].clone())
            .collect()
    };
    assert_eq!(
        column("tag_no"),
        vec![
            json!("007"),
            json!("-0"),
            json!("1E3"),
            json!("1.50"),
            json!("100")
        ]
    );
    assert_eq!(
        column("power_kw"),
        vec![json!(1.5), json!(0), json!(1000.0), json!(75), json!(0)]
    );
}

#[test]
fn a_property_error_names_the_column_as_its_header_says() {
    // Found by a helper: a NUL in a `:json` cell was reported in column `j`, and the
    // cells' own errors in column `j:json`.
    let text = "tag,asset_type,discipline,j:json,plain\n\
                M-1,MOTOR,ELECTRICAL,\"\"\"a\\u0000b\"\"\",x\n\
                M-2,MOTOR,ELECTRICAL,\"\"\"open\",y\n";

    let errors = invalid(text, None);

    let columns: Vec<Option<&str>> = errors.iter().map(|e| e.column.as_deref()).collect();
    assert_eq!(columns, vec![Some("j:json"), Some("j:json")], "{errors:?}");
    assert!(errors[0].message.contains("NUL"), "{errors:?}");
}
