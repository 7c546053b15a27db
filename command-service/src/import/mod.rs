//! CSV import (`POST /assets/import`): a spreadsheet's asset list becomes one batch.
//!
//! The work is split by what happens to the file:
//! - [`decode`]: bytes to text (UTF-8 with or without BOM, or Windows-1252 on request);
//! - [`header`]: the header row to columns, and the delimiter when none was given;
//! - [`parse`]: records to typed rows, collecting every row/column error ([`lines`]
//!   numbers them as the file's lines);
//! - [`cell`]: one cell to a JSON value, and the "numeric column" check;
//! - [`apply`]: the rows against the current assets, written as one batch;
//! - [`store`]: the set-based SQL that makes 100,000 rows a few statements.
//!
//! An import is all-or-nothing: any error anywhere in the file means nothing is written
//! and the client gets every error with its row and column. An import *sets what it
//! lists*: an existing asset keeps the properties (and `name`/`area`) that the file does
//! not list or leaves empty; an empty cell never removes anything.

pub mod apply;
pub mod cell;
pub mod decode;
pub mod header;
pub mod lines;
pub mod parse;
pub mod quotes;
pub mod store;

pub use apply::{apply, ImportOutcome};
pub use decode::Encoding;
pub use parse::{parse, ParsedFile};

use serde::Serialize;

/// Most data rows one import accepts. A whole plant of a large project fits; the bound
/// keeps one request's transaction, memory and event count predictable.
pub const MAX_ROWS: usize = 200_000;

/// Most errors listed in a refusal. A file with the wrong column in every row would
/// otherwise produce a response larger than the file; the first ones tell the story.
pub const MAX_REPORTED_ERRORS: usize = 1_000;

/// The field delimiter of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Delimiter {
    Comma,
    Semicolon,
}

impl Delimiter {
    pub fn byte(self) -> u8 {
        match self {
            Delimiter::Comma => b',',
            Delimiter::Semicolon => b';',
        }
    }

    pub fn as_char(self) -> char {
        char::from(self.byte())
    }

    /// The other delimiter: what a file that came out as one column probably uses.
    pub fn other(self) -> Self {
        match self {
            Delimiter::Comma => Delimiter::Semicolon,
            Delimiter::Semicolon => Delimiter::Comma,
        }
    }
}

/// One thing wrong with the file, located as a spreadsheet user would look for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// Line of the file where the record starts, 1-based (the header is row 1 unless
    /// blank lines precede it), as a text editor numbers lines.
    pub row: u64,
    /// The column as named in the header; absent when the whole row is wrong.
    pub column: Option<String>,
    pub message: String,
}

impl RowError {
    pub fn new(row: u64, column: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            row,
            column: column.map(str::to_owned),
            message: message.into(),
        }
    }
}

/// Why an import was refused; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// 415: the bytes are not UTF-8 and no other encoding was asked for.
    #[error("{0}")]
    Encoding(String),
    /// 422: the file has no header row, or no data rows.
    #[error("{0}")]
    Empty(&'static str),
    /// 413: more data rows than [`MAX_ROWS`].
    #[error("the file has more than {MAX_ROWS} data rows; split it into several imports")]
    TooManyRows,
    /// 422: row/column errors (at most [`MAX_REPORTED_ERRORS`] of `total`), with a hint
    /// when one explains them all (e.g. the wrong delimiter).
    #[error("the file has {total} errors")]
    Invalid {
        errors: Vec<RowError>,
        total: usize,
        hint: Option<String>,
    },
    /// 409: another request created or changed one of the tags while this one ran (the
    /// tag, as Postgres named it).
    #[error(
        "{} in the file was created by a concurrent request; retry the import",
        .0.as_deref().map_or_else(|| "a tag".to_owned(), |tag| format!("tag `{tag}`"))
    )]
    TagTaken(Option<String>),
    /// 409: an asset was changed concurrently (optimistic concurrency backstop).
    #[error("an asset was changed concurrently; retry the import")]
    Concurrent,
    #[error(transparent)]
    Database(sqlx::Error),
}

impl From<sqlx::Error> for ImportError {
    /// Conflicts with concurrent writers are the client's to retry (409), not 500s: a
    /// tag inserted meanwhile, or Postgres breaking a deadlock or serialization failure
    /// between overlapping imports.
    fn from(error: sqlx::Error) -> Self {
        let database_error = error.as_database_error();
        if database_error.and_then(|e| e.constraint()) == Some(crate::assets::store::TAG_CONSTRAINT)
        {
            let detail = database_error
                .and_then(|e| e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>())
                .and_then(|e| e.detail());
            return ImportError::TagTaken(detail.and_then(taken_tag));
        }
        let code = database_error.and_then(|e| e.code());
        if matches!(code.as_deref(), Some("40P01" | "40001")) {
            return ImportError::Concurrent;
        }
        ImportError::Database(error)
    }
}

/// The tag in Postgres's detail of a unique violation on the tag:
/// `Key (tag)=(M-101) already exists.`
fn taken_tag(detail: &str) -> Option<String> {
    let tag = detail.strip_prefix("Key (tag)=(")?;
    let tag = tag.strip_suffix(") already exists.")?;
    Some(tag.to_owned())
}

impl ImportError {
    /// Refuse with the collected errors.
    pub fn invalid(errors: ErrorList, hint: Option<String>) -> Self {
        let (errors, total) = errors.into_sorted();
        ImportError::Invalid {
            errors,
            total,
            hint,
        }
    }
}

/// Errors found in a file: all are counted, the first few thousand kept (a file with a
/// bad column in 200,000 rows must not cost 200,000 allocations to refuse).
#[derive(Debug, Default)]
pub struct ErrorList {
    errors: Vec<RowError>,
    total: usize,
}

impl ErrorList {
    pub fn push(&mut self, error: RowError) {
        self.total += 1;
        // Keep more than we report: errors found after the row pass (duplicate tags,
        // numeric columns) may belong to earlier rows and sort before these.
        if self.errors.len() < 10 * MAX_REPORTED_ERRORS {
            self.errors.push(error);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The first [`MAX_REPORTED_ERRORS`] errors by row (columns in the order found),
    /// and how many there were in all.
    pub fn into_sorted(mut self) -> (Vec<RowError>, usize) {
        self.errors.sort_by_key(|error| error.row);
        self.errors.truncate(MAX_REPORTED_ERRORS);
        (self.errors, self.total)
    }
}

impl Extend<RowError> for ErrorList {
    fn extend<I: IntoIterator<Item = RowError>>(&mut self, errors: I) {
        for error in errors {
            self.push(error);
        }
    }
}

#[cfg(test)]
mod conflict_tests {
    use super::*;

    #[test]
    fn a_tag_taken_concurrently_is_named_as_postgres_names_it() {
        // Found by a helper: the 409 said only "a tag in the file".
        let tag = taken_tag("Key (tag)=(NEW-0-000) already exists.");
        assert_eq!(tag.as_deref(), Some("NEW-0-000"));
        assert_eq!(
            ImportError::TagTaken(tag).to_string(),
            "tag `NEW-0-000` in the file was created by a concurrent request; retry the import"
        );
        assert_eq!(taken_tag("Key (id)=(x) already exists."), None);
        assert_eq!(
            ImportError::TagTaken(None).to_string(),
            "a tag in the file was created by a concurrent request; retry the import"
        );
    }
}
