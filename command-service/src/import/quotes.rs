//! Quoted cells that swallow rows.
//!
//! A quote opening a cell makes the `csv` crate read on to the closing quote, across
//! line breaks, as RFC 4180 says. So a stray quote at the start of a cell (`"6 inch
//! line` in a remarks column) turns every line after it into that one cell, up to the
//! end of the file or to the next stray quote, and the file still parses: the rows in
//! between would be lost without a word. This pass reads the quotes as the `csv` crate
//! does and finds the two signs of it: a quoted cell still open at the end of the file,
//! and one spanning lines whose closing quote is followed by more text (a legitimate
//! quoted cell ends at a delimiter or a line break).

/// A quoted cell that swallows the lines after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrayQuote {
    /// The line where its record starts (1-based, as [`super::RowError::row`]).
    pub row: u64,
    /// Its field in the record, 0-based.
    pub field: usize,
    /// The line of the quote that closes it, with text after it; `None` if it is never
    /// closed.
    pub closed_on: Option<u64>,
}

impl StrayQuote {
    pub fn message(&self) -> String {
        const FIX: &str = "double a quote that is part of the text (\"\") or quote the whole cell";
        match self.closed_on {
            None => format!(
                "a quoted cell starts here and is never closed, so every line after it \
                 would be read into this cell: {FIX}"
            ),
            Some(line) => format!(
                "a quoted cell starts here and runs to line {line}, where text follows its \
                 closing quote, so the lines in between would be read into this cell: {FIX}"
            ),
        }
    }
}

#[derive(Clone, Copy)]
enum State {
    /// At the start of a field.
    Start,
    Unquoted,
    /// Inside a quoted field opened on `line`.
    Quoted {
        line: u64,
    },
    /// Just past a quote inside a quoted field: a second quote is an escaped quote,
    /// anything else closes the field.
    QuoteInQuoted {
        line: u64,
    },
    /// Past the closing quote of a field that spanned lines, before its delimiter.
    Closed,
}

/// The first quoted cell of `text` that swallows lines, read with `delimiter`.
pub fn stray_quote(text: &str, delimiter: u8) -> Option<StrayQuote> {
    let mut state = State::Start;
    let mut line = 1u64;
    let mut row = 1u64;
    let mut field = 0usize;
    let mut record_started = false;
    let mut previous = 0u8;
    for &byte in text.as_bytes() {
        let terminator = matches!(byte, b'\r' | b'\n');
        if !record_started && !terminator {
            record_started = true;
            row = line;
        }
        state = match state {
            State::Quoted { line: opened } => match byte {
                b'"' => State::QuoteInQuoted { line: opened },
                _ => State::Quoted { line: opened },
            },
            State::QuoteInQuoted { line: opened } if byte == b'"' => State::Quoted { line: opened },
            State::QuoteInQuoted { line: opened }
                if opened != line && !terminator && byte != delimiter && !is_blank(byte) =>
            {
                return Some(StrayQuote {
                    row,
                    field,
                    closed_on: Some(line),
                });
            }
            State::QuoteInQuoted { line: opened } if opened != line && is_blank(byte) => {
                State::Closed
            }
            State::Closed if !terminator && byte != delimiter && !is_blank(byte) => {
                return Some(StrayQuote {
                    row,
                    field,
                    closed_on: Some(line),
                });
            }
            State::Closed if is_blank(byte) => State::Closed,
            _ if terminator => {
                record_started = false;
                field = 0;
                State::Start
            }
            _ if byte == delimiter => {
                field += 1;
                State::Start
            }
            State::Start if byte == b'"' => State::Quoted { line },
            // What follows a closing quote on the line it opened on is read as text,
            // as the `csv` crate reads it.
            State::Start | State::Unquoted | State::QuoteInQuoted { .. } | State::Closed => {
                State::Unquoted
            }
        };
        // A line ends at `\n`, `\r\n` or a bare `\r`, as `super::lines` counts them.
        if byte == b'\r' || (byte == b'\n' && previous != b'\r') {
            line += 1;
        }
        previous = byte;
    }
    match state {
        State::Quoted { .. } => Some(StrayQuote {
            row,
            field,
            closed_on: None,
        }),
        _ => None,
    }
}

fn is_blank(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stray(text: &str) -> Option<StrayQuote> {
        stray_quote(text, b';')
    }

    #[test]
    fn quotes_that_open_and_close_cells_are_no_stray_quotes() {
        for text in [
            "tag;note\nV-1;\"6 inch; see P&ID\"\nV-2;ok\n",
            "tag;note\nV-1;\"two\nlines\"\nV-2;ok\n",
            "tag;note\r\nV-1;\"two\r\nlines\"  ;x\r\nV-2;ok",
            "tag;note\nV-1;\"say \"\"hi\"\"\"\nV-2;ok\n",
            // A quote inside an unquoted cell is text (inches).
            "tag;size\nL-1;12\" line\nL-2;6\"\n",
            // Text after a closing quote on the same line is read as text.
            "tag;note\nV-1;\"a\"b\nV-2;ok\n",
            "",
        ] {
            assert_eq!(stray(text), None, "{text:?}");
        }
    }

    #[test]
    fn a_quote_never_closed_is_found_where_its_record_starts() {
        let text = "tag;asset_type;note\nV-1;VALVE;ok\n\n;VALVE;\"6 inch line\nV-3;VALVE;ok\n";
        assert_eq!(
            stray(text),
            Some(StrayQuote {
                row: 4,
                field: 2,
                closed_on: None
            })
        );
    }

    #[test]
    fn a_quote_closed_lines_later_with_text_after_it_is_found() {
        let text = "tag;note\nV-1;\"6 inch line\nV-2;ok\nV-3;\"12 inch\nV-4;ok\n";
        assert_eq!(
            stray(text),
            Some(StrayQuote {
                row: 2,
                field: 1,
                closed_on: Some(4)
            })
        );
        let message = stray(text).map(|stray| stray.message()).unwrap_or_default();
        assert!(message.contains("runs to line 4"), "{message}");
    }

    #[test]
    fn lines_ending_in_a_bare_carriage_return_are_lines_too() {
        // Before, only `\n` ended a line, so in such a file no quoted cell spanned
        // lines and a row was read into the cell before it without a word.
        for (text, closed_on) in [
            ("tag;note\rV-1;\"6 inch line\rV-2\" oops\rV-3;ok\r", Some(3)),
            (
                "tag;note\r\nV-1;\"6 inch line\r\nV-2\" oops\r\nV-3;ok\r\n",
                Some(3),
            ),
            ("tag;note\rV-1;ok\rV-2;\"6 inch line\rV-3;ok\r", None),
        ] {
            let found = stray(text);
            assert_eq!(
                found.as_ref().map(|stray| (stray.field, stray.closed_on)),
                Some((1, closed_on)),
                "{text:?}"
            );
            let row = if closed_on.is_some() { 2 } else { 3 };
            assert_eq!(found.map(|stray| stray.row), Some(row), "{text:?}");
        }
    }
}
