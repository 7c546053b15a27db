//! RFC 9457 problem details: the one error body both HTTP services return.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod duplicates;
pub mod integers;
pub mod nul;

/// How long a client should wait before retrying a 503.
pub const RETRY_AFTER_SECONDS: &str = "1";

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// A machine-readable client or server error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// A stable identifier of the kind of problem, e.g. `/problems/version-conflict`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Problem-specific details: a list of field or row errors, conflicting aggregates,
    /// or an object (ids and versions of a conflict, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<serde_json::Value>)]
    pub errors: Option<Value>,
}

impl Problem {
    /// A problem of `kind` (a short slug such as `version-conflict`).
    pub fn new(status: StatusCode, kind: &str, title: impl Into<String>) -> Self {
        Self {
            kind: format!("/problems/{kind}"),
            title: title.into(),
            status: status.as_u16(),
            detail: None,
            errors: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_errors(mut self, errors: Value) -> Self {
        self.errors = Some(errors);
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// The opaque 500 a client sees when something it cannot fix went wrong; the cause
    /// is logged by the caller, never sent.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    }

    /// A dependency (Postgres, NATS) is unreachable: retry later.
    pub fn unavailable(what: &str) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "service unavailable",
        )
        .with_detail(format!("{what} is unreachable; retry later"))
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, axum::Json(&self)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        // Every 503 asks to retry later (a dependency away, the exports all busy):
        // said where a client's retry logic looks for it (RFC 9110 §10.2.3).
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_static(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}

/// Converts axum's body-extraction failures (malformed JSON, wrong content type, body
/// too large) into problems, so no handler ever answers a bad body with plain text.
pub fn from_json_rejection(rejection: axum::extract::rejection::JsonRejection) -> Problem {
    use axum::extract::rejection::JsonRejection::*;
    let status = rejection.status();
    let kind = match &rejection {
        JsonDataError(_) => "invalid-body",
        JsonSyntaxError(_) => "malformed-json",
        MissingJsonContentType(_) => "unsupported-media-type",
        _ if status == StatusCode::PAYLOAD_TOO_LARGE => "body-too-large",
        _ => "invalid-body",
    };
    Problem::new(status, kind, "the request body was refused").with_detail(rejection.body_text())
}

/// The charset a request's `Content-Type` names, when it is not UTF-8 (which a JSON
/// body must be: parsed as UTF-8 regardless, it was refused as malformed JSON, a 400
/// that named the wrong fault).
fn foreign_charset(headers: &axum::http::HeaderMap) -> Option<String> {
    let content_type: mime::Mime = headers
        .get(axum::http::header::CONTENT_TYPE)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    let charset = content_type.get_param(mime::CHARSET)?;
    let utf8 = charset == mime::UTF_8 || charset.as_str().eq_ignore_ascii_case("utf8");
    (!utf8).then(|| charset.as_str().to_owned())
}

/// `Json<T>` whose rejection is a [`Problem`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for ApiJson<T>
where
    axum::Json<T>:
        axum::extract::FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        // The bytes are read here (within the body limit) so they can be checked for a
        // NUL and for integers beyond 64 bits once they parse; `Bytes` shares them with
        // the JSON parser, no copy.
        let headers = req.headers().clone();
        if let Some(charset) = foreign_charset(&headers) {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "the request body was refused",
            )
            .with_detail(format!(
                "the body says it is JSON in `charset={charset}`; JSON is UTF-8 (RFC 8259): \
                 send UTF-8, with `charset=utf-8` or no charset"
            )));
        }
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| from_json_rejection(rejection.into()))?;
        // Before the typed parse, which refuses a struct's field named twice in words
        // of its own (and keeps the last of a map's).
        if let Some(found) = duplicates::repeated_key(&body) {
            return Err(duplicates::refusal(&found));
        }
        let mut request = axum::extract::Request::new(axum::body::Body::from(body.clone()));
        *request.headers_mut() = headers;
        match axum::Json::<T>::from_request(request, state).await {
            Ok(_) if nul::in_json(&body) => Err(nul::refusal("JSON body")),
            Ok(axum::Json(value)) => match integers::beyond_64_bits(&body) {
                Some(found) => Err(integers::refusal(&found)),
                None => Ok(ApiJson(value)),
            },
            Err(rejection) => {
                // A typed field given an integer beyond 64 bits (`1e20` to serde): said
                // as such, not as "invalid type: floating point".
                let typed = matches!(
                    rejection,
                    axum::extract::rejection::JsonRejection::JsonDataError(_)
                );
                match integers::beyond_64_bits(&body).filter(|_| typed) {
                    Some(found) => Err(integers::refusal(&found)),
                    None => Err(from_json_rejection(rejection)),
                }
            }
        }
    }
}

/// Query-string extraction whose rejection is a [`Problem`] (400 with the reason).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

/// The query string of a route that takes none: any parameter is refused (a 400 that
/// names it) rather than ignored, as `?dry_run=true` on an execute once ran it for real
/// and `?expected_version=` on a patch dropped its check.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

impl<T, S> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        if parts.uri.query().is_some_and(nul::in_uri) {
            return Err(nul::refusal("query string"));
        }
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(rejection) => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-query",
                "the query string was refused",
            )
            .with_detail(rejection.body_text())),
        }
    }
}

/// Path extraction whose rejection is a [`Problem`] (e.g. an id that is not a UUID).
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiPath<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for ApiPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        if nul::in_uri(parts.uri.path()) {
            return Err(nul::refusal("request path"));
        }
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-path",
                "the request path was refused",
            )
            .with_detail(rejection.body_text())),
        }
    }
}

/// Fallback for unknown routes: a 404 problem rather than an empty body.
pub async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "no such resource")
}

/// Answer to a method a route does not serve: a 405 problem rather than an empty body
/// (the router still sends the `Allow` header).
pub async fn method_not_allowed() -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "the resource does not serve this method",
    )
}

/// The probes and the scrape target: open to every caller, and they take no input to
/// refuse, so their documents list no refusals.
pub const OPERATIONAL_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// Document the refusals every operation may answer whatever it does: 400 for a
/// query string, path parameter or header it does not take or cannot parse (or, with
/// a body, malformed JSON), 503 when a dependency is unreachable; and for operations
/// with a request body 413 (too large), 415 (not a media type it reads) and 422 (not
/// the body it takes). Entries an operation documents itself are kept; the probes and
/// `/metrics` get none. Call once the paths are known, before [`document_problems`].
pub fn document_refusals(openapi: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let refusal = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
    };
    for (path, item) in openapi.paths.paths.iter_mut() {
        if OPERATIONAL_PATHS.contains(&path.as_str()) {
            continue;
        }
        for operation in crate::auth::openapi::operations(item) {
            let mut refusals = vec![
                ("400", "the request was refused: a query string, path parameter or header it does not take or cannot read, or malformed JSON"),
                ("503", "a dependency (Postgres, NATS) is unreachable or saturated; retry later"),
            ];
            if operation.request_body.is_some() {
                refusals.extend([
                    ("413", "the body is larger than the service accepts"),
                    (
                        "415",
                        "the body is not of a media type this operation reads",
                    ),
                    ("422", "the body is not one this operation takes"),
                ]);
            }
            for (status, description) in refusals {
                operation
                    .responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| refusal(description).into());
            }
        }
    }
}

/// Document the media type every error answer has: the responses of status 4xx and 5xx
/// that an operation describes as `application/json` are `application/problem+json`,
/// as [`Problem`] answers are sent. Call once the paths are known.
pub fn document_problems(openapi: &mut utoipa::openapi::OpenApi) {
    for item in openapi.paths.paths.values_mut() {
        for operation in crate::auth::openapi::operations(item) {
            for (status, response) in operation.responses.responses.iter_mut() {
                let utoipa::openapi::RefOr::T(response) = response else {
                    continue;
                };
                if !(status.starts_with('4') || status.starts_with('5')) {
                    continue;
                }
                if let Some(content) = response.content.shift_remove("application/json") {
                    response.content.insert(PROBLEM_JSON.to_owned(), content);
                }
                if status == "503" {
                    let seconds = utoipa::openapi::ObjectBuilder::new()
                        .schema_type(utoipa::openapi::schema::Type::Integer)
                        .minimum(Some(0));
                    let header = utoipa::openapi::header::HeaderBuilder::new()
                        .schema(seconds)
                        .description(Some("seconds to wait before retrying"))
                        .build();
                    response.headers.insert("Retry-After".to_owned(), header);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::PartialSchema;

    #[test]
    fn a_503_says_when_to_retry_and_other_problems_do_not() {
        let unavailable = Problem::unavailable("postgres").into_response();
        assert_eq!(unavailable.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            unavailable.headers().get(header::RETRY_AFTER),
            Some(&HeaderValue::from_static("1"))
        );
        let conflict = Problem::new(StatusCode::CONFLICT, "x", "y").into_response();
        assert_eq!(conflict.headers().get(header::RETRY_AFTER), None);
    }

    #[test]
    fn a_json_body_in_another_charset_than_utf8_is_told_apart() {
        let charset = |content_type: &str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_str(content_type).unwrap(),
            );
            foreign_charset(&headers)
        };
        for utf8 in [
            "application/json",
            "application/json; charset=utf-8",
            "application/json; charset=UTF-8",
            "application/json;charset=\"utf-8\"",
            "application/json; charset=utf8",
        ] {
            assert_eq!(charset(utf8), None, "{utf8}");
        }
        // Before: a 400 `malformed-json` for a body that may be well-formed JSON.
        assert_eq!(
            charset("application/json; charset=iso-8859-1").as_deref(),
            Some("iso-8859-1")
        );
        assert_eq!(
            charset("application/json; charset=utf-16").as_deref(),
            Some("utf-16")
        );
    }

    #[test]
    fn the_documented_errors_of_a_problem_may_be_a_list_or_an_object() {
        let schema = serde_json::to_value(Problem::schema()).unwrap_or_default();
        let errors = &schema["properties"]["errors"];
        assert!(errors.is_object(), "{schema}");
        // No `type` restricting it: field errors are a list, a conflict an object.
        assert_eq!(errors.get("type"), None, "{errors}");
    }
}
