//! `GET /assets/export.csv`: the current assets as a CSV file the import reads back.

use crate::export::rows::AssetFilter;
use crate::export::{self, StartError};
use crate::http::error::{invalid_query, ApiError};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use synapse_shared::auth::Principal;
use synapse_shared::problem::ApiQuery;
use synapse_shared::Problem;

/// Codes one filter may list: the command side's limit for execution filters.
pub const MAX_FILTER_CODES: usize = 200;

/// Which assets to export; unknown parameters are refused so a misspelt filter never
/// silently exports the whole plant.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// Comma-separated disciplines, e.g. `ELECTRICAL,INSTRUMENT` (case-insensitive).
    pub discipline: Option<String>,
    /// Comma-separated asset types, e.g. `MOTOR,PUMP` (case-insensitive).
    pub asset_type: Option<String>,
}

/// The current (not deleted) assets as CSV, ordered by tag.
#[utoipa::path(
    get,
    path = "/assets/export.csv",
    tag = "assets",
    description = "Streams the current assets as CSV (RFC 4180, UTF-8, comma, header row). \
        Columns: `tag, asset_type, discipline, name, area`, then one column per property \
        name found in the exported assets, in byte order; an asset without a property has \
        an empty cell. Each property column declares its type (`name:text`, `:number`, \
        `:boolean`; `:json` with the value's JSON per cell where a column mixes types or \
        holds text a plain cell would not keep), so a re-import changes nothing. Text \
        cells starting with `=`, `+`, `-`, `@`, tab or carriage return are prefixed with \
        `'` so that a spreadsheet shows them instead of running them as formulas (CSV \
        injection); numbers are never prefixed. The whole file is one consistent snapshot. \
        If the read database fails after the first bytes, the transfer is broken off \
        (never a silently short file).",
    params(ExportParams),
    responses(
        (status = 200, description = "The CSV file", body = String, content_type = "text/csv"),
        (status = 400, description = "Unknown parameter or bad code", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid bearer token", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many exports running, or the read database is unreachable", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn export_assets(
    // Reading needs the viewer role, the lowest: any authenticated caller has it.
    _caller: Principal,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<ExportParams>,
) -> Result<Response, ApiError> {
    let filter = AssetFilter {
        disciplines: codes("discipline", params.discipline.as_deref())?,
        asset_types: codes("asset_type", params.asset_type.as_deref())?,
    };
    let csv = export::start(&state.pool, filter)
        .await
        .map_err(|error| match error {
            StartError::Busy => ApiError::Problem(
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "exports-busy",
                    "too many exports are running",
                )
                .with_detail(format!(
                    "at most {} exports run at once; retry shortly",
                    export::MAX_CONCURRENT_EXPORTS
                )),
            ),
            StartError::Database(error) => ApiError::Database(error),
        })?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"assets.csv\""),
            ),
        ],
        Body::from_stream(csv),
    )
        .into_response())
}

/// A comma list of codes (discipline, asset type), checked as the command side checks
/// them when it stores one, and upper-cased as it stores them.
fn codes(parameter: &str, list: Option<&str>) -> Result<Vec<String>, ApiError> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    let codes: Vec<&str> = list.split(',').map(str::trim).collect();
    if codes.len() > MAX_FILTER_CODES {
        return Err(invalid_query(format!(
            "`{parameter}` lists {} codes; at most {MAX_FILTER_CODES}",
            codes.len()
        )));
    }
    codes
        .into_iter()
        .map(|code| {
            let valid = !code.is_empty()
                && code.len() <= 64
                && code
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if valid {
                Ok(code.to_ascii_uppercase())
            } else {
                Err(invalid_query(format!(
                    "`{parameter}`: `{code}` is not a code (1 to 64 letters, digits, `_` or `-`)"
                )))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_lists_are_trimmed_upper_cased_and_checked() {
        let codes = codes("discipline", Some("electrical, Instrument")).unwrap();
        assert_eq!(codes, vec!["ELECTRICAL", "INSTRUMENT"]);
        assert!(super::codes("discipline", None).unwrap().is_empty());
        for bad in [
            "",
            "A,,B",
            "ELEC TRICAL",
            "=1+2",
            "'; drop table rm_aggregates",
        ] {
            assert!(super::codes("discipline", Some(bad)).is_err(), "{bad:?}");
        }
        let too_many = vec!["A"; MAX_FILTER_CODES + 1].join(",");
        assert!(super::codes("asset_type", Some(&too_many)).is_err());
    }
}
