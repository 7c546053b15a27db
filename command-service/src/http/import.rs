//! `POST /assets/import`: a CSV file becomes one batch of asset creations and updates.

use super::actor::Engineer;
use super::error::ApiError;
use super::transaction::run_command;
use super::{AppState, MAX_BODY_BYTES};
use crate::import::{self, Delimiter, Encoding, ImportError, ImportOutcome, MAX_ROWS};
use crate::store::statistics::{self, Table};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use synapse_shared::problem::ApiQuery;
use synapse_shared::Problem;

/// Query string of `POST /assets/import`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImportParams {
    /// `,` or `;` (or `comma`, `semicolon`); detected from the header line when absent.
    pub delimiter: Option<String>,
    /// `utf-8` (the default; a BOM is fine) or `windows-1252` (alias `latin1`).
    pub encoding: Option<String>,
    /// The uploaded file's name, recorded in the `CSV_IMPORTED` event.
    pub file_name: Option<String>,
}

/// Import assets from a CSV file, upserting by tag as one batch (all-or-nothing).
///
/// The header names `tag`, `asset_type`, `discipline` (required), `name`, `area`
/// (case-insensitive); every other column is a property, typed per cell (numbers,
/// `true`/`false`, else text; an empty cell is absent), or as its header declares:
/// `line_number:text`, `power_kw:number`, `spare:boolean`, or `size:json` (a JSON
/// number, string or boolean per cell, as an export writes a column of mixed types).
/// An existing asset keeps what
/// the file does not list: properties missing from the file and empty cells never
/// remove anything. Any error refuses the whole file with every row/column error.
#[utoipa::path(post, path = "/assets/import",
    request_body(content = String, content_type = "text/csv",
        description = "the CSV file, comma- or semicolon-separated, UTF-8 with or without BOM"),
    params(ImportParams,
        ("Idempotency-Key" = Option<String>, Header, description = "replays the first response")),
    responses(
        (status = 200, description = "imported; nothing new was created", body = ImportOutcome),
        (status = 201, description = "imported; at least one asset was created", body = ImportOutcome),
        (status = 409, description = "a concurrent change to the same tags; retry", body = Problem),
        (status = 413, description = "body over 32 MiB or more than 200,000 rows", body = Problem),
        (status = 415, description = "not CSV, or not UTF-8 without ?encoding=windows-1252", body = Problem),
        (status = 422, description = "errors by row and column; nothing imported", body = Problem),
    ))]
pub async fn import_assets(
    State(state): State<AppState>,
    Engineer(actor): Engineer,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<ImportParams>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(body_refused)?;
    let delimiter = delimiter(params.delimiter.as_deref())?;
    let encoding = encoding(params.encoding.as_deref(), &headers)?;
    let file_name = params.file_name;
    if file_name.as_ref().is_some_and(|name| name.len() > 256) {
        return Err(bad_query("file_name is longer than 256 bytes").into());
    }
    let request = format!(
        "POST /assets/import {delimiter:?} {encoding:?} {file_name:?} {}",
        body_hash(&body)
    );
    // Decoding and parsing 100,000 rows is CPU work: keep it off the async workers.
    let parsed = tokio::task::spawn_blocking(move || {
        let text = import::decode::decode(&body, encoding)?;
        import::parse(&text, delimiter)
    })
    .await
    .map_err(|error| ApiError::Internal(error.into()))??;

    let actor_name = actor.0.clone();
    let changed = Arc::new(AtomicU64::new(0));
    let changed_by_import = changed.clone();
    let response = run_command(&state.pool, &actor, &headers, &request, move |connection| {
        Box::pin(async move {
            let outcome =
                import::apply(connection, &actor_name, parsed.rows, file_name.as_deref()).await?;
            changed_by_import.store(
                (outcome.created + outcome.updated) as u64,
                Ordering::Relaxed,
            );
            tracing::info!(
                correlation_id = ?outcome.correlation_id,
                created = outcome.created,
                updated = outcome.updated,
                unchanged = outcome.unchanged,
                "csv import applied"
            );
            let status = if outcome.created > 0 {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let body =
                serde_json::to_value(&outcome).map_err(|error| ApiError::Internal(error.into()))?;
            Ok((status, body))
        })
    })
    .await?;
    // Committed: an execution right after a large import plans with fresh statistics.
    let changed = changed.load(Ordering::Relaxed);
    statistics::refresh_if_stale(&state.pool, Table::Assets, changed).await;
    Ok(response)
}

fn delimiter(given: Option<&str>) -> Result<Option<Delimiter>, Problem> {
    match given {
        None => Ok(None),
        Some("," | "comma") => Ok(Some(Delimiter::Comma)),
        Some(";" | "semicolon") => Ok(Some(Delimiter::Semicolon)),
        Some(other) => Err(bad_query(format!(
            "delimiter `{other}` is not supported: use `,` or `;` (or leave it out to detect it)"
        ))),
    }
}

/// The encoding from `?encoding=`, else from a `charset` in the Content-Type, else UTF-8.
/// Also refuses bodies that are clearly not a CSV file (JSON, multipart forms).
fn encoding(given: Option<&str>, headers: &HeaderMap) -> Result<Encoding, Problem> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    let accepted = [
        "",
        "text/csv",
        "text/plain",
        "application/csv",
        "text/comma-separated-values",
        "application/vnd.ms-excel",
        "application/octet-stream",
        // What `curl --data-binary @plant.csv` sends unless told otherwise.
        "application/x-www-form-urlencoded",
    ];
    if !accepted.contains(&media_type) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "the body must be the CSV file itself",
        )
        .with_detail(format!(
            "Content-Type `{media_type}` is not accepted: send the file's bytes as text/csv \
             or application/octet-stream (not JSON, not a multipart form)"
        )));
    }
    let charset = content_type
        .split(';')
        .filter_map(|parameter| parameter.trim().strip_prefix("charset="))
        .next()
        .map(|charset| charset.trim_matches('"').to_owned());
    let unsupported =
        |label: &str| format!("encoding `{label}` is not supported: use `utf-8` or `windows-1252`");
    match (given, charset) {
        (Some(label), _) => {
            Encoding::from_label(label).ok_or_else(|| bad_query(unsupported(label)))
        }
        // The charset is the Content-Type's: a refusal of the media type, not the query.
        (None, Some(label)) => Encoding::from_label(&label).ok_or_else(|| {
            Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "the body must be the CSV file itself",
            )
            .with_detail(format!(
                "the Content-Type's charset: {}",
                unsupported(&label)
            ))
        }),
        (None, None) => Ok(Encoding::Utf8),
    }
}

fn bad_query(detail: impl Into<String>) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        "invalid-query",
        "the query string was refused",
    )
    .with_detail(detail)
}

/// The router's body limit answers in plain text; make it a problem like every error.
fn body_refused(rejection: BytesRejection) -> Problem {
    let status = rejection.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::new(status, "body-too-large", "the file is too large").with_detail(format!(
            "the body is larger than {} MiB; split the file into several imports",
            MAX_BODY_BYTES / (1024 * 1024)
        ))
    } else {
        Problem::new(status, "invalid-body", "the request body could not be read")
            .with_detail(rejection.body_text())
    }
}

/// Identifies the body for the idempotency fingerprint without copying 32 MiB into it.
fn body_hash(body: &[u8]) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    format!("{:016x}-{}", hasher.finish(), body.len())
}

impl From<ImportError> for ApiError {
    fn from(error: ImportError) -> Self {
        let detail = error.to_string();
        let problem = match error {
            ImportError::Database(error) => return ApiError::from(error),
            ImportError::Encoding(_) => Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-encoding",
                "the file is not UTF-8",
            ),
            ImportError::Empty(_) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "empty-file",
                "the file has nothing to import",
            ),
            ImportError::TooManyRows => Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-many-rows",
                format!("an import takes at most {MAX_ROWS} rows"),
            ),
            ImportError::Invalid {
                errors,
                total,
                hint,
            } => {
                let listed = errors.len();
                return Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid-csv",
                    "the file has errors; nothing was imported",
                )
                .with_detail(hint.unwrap_or_else(|| {
                    if listed < total {
                        format!("{total} errors; the first {listed} are listed")
                    } else if total == 1 {
                        "1 error".to_owned()
                    } else {
                        format!("{total} errors")
                    }
                }))
                .with_errors(json!(errors))
                .into();
            }
            ImportError::TagTaken(tag) => Problem::new(
                StatusCode::CONFLICT,
                "import-conflict",
                "assets in the file changed concurrently",
            )
            .with_errors(json!({"tag": tag})),
            ImportError::Concurrent => Problem::new(
                StatusCode::CONFLICT,
                "import-conflict",
                "assets in the file changed concurrently",
            ),
        };
        ApiError::Client(problem.with_detail(detail))
    }
}
