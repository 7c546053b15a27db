//! Why a request was refused, as a problem with the RFC 6750 `WWW-Authenticate` header.

use super::Role;
use crate::Problem;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Authentication or authorization failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// 401: no `Authorization: Bearer` header (or ticket).
    #[error("no bearer token")]
    Missing,
    /// 401: the token has expired.
    #[error("the token has expired")]
    Expired,
    /// 401: the token is not one this service accepts; the reason is safe to show.
    #[error("{0}")]
    Invalid(&'static str),
    /// 403: authenticated, but the role does not allow this.
    #[error("this needs the {required} role; the token grants {granted}")]
    Forbidden { required: Role, granted: Role },
    /// 403: a browser handshake from an origin that is not allowed.
    #[error("origin `{0}` may not open the live feed")]
    Origin(String),
}

impl AuthError {
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Missing | AuthError::Expired | AuthError::Invalid(_) => {
                StatusCode::UNAUTHORIZED
            }
            AuthError::Forbidden { .. } | AuthError::Origin(_) => StatusCode::FORBIDDEN,
        }
    }

    /// The problem body (without the `WWW-Authenticate` header).
    pub fn to_problem(&self) -> Problem {
        let detail = self.to_string();
        match self {
            AuthError::Missing => {
                Problem::new(self.status(), "unauthenticated", "authentication required")
                    .with_detail("send `Authorization: Bearer <token>`")
            }
            AuthError::Expired | AuthError::Invalid(_) => Problem::new(
                self.status(),
                "invalid-token",
                "the bearer token was refused",
            )
            .with_detail(detail),
            AuthError::Forbidden { .. } => {
                Problem::new(self.status(), "forbidden", "your role does not allow this")
                    .with_detail(detail)
            }
            AuthError::Origin(_) => Problem::new(
                self.status(),
                "origin-refused",
                "this origin is not allowed",
            )
            .with_detail(detail),
        }
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 §3), if the status calls for one.
    fn challenge(&self) -> Option<&'static str> {
        match self {
            AuthError::Missing => Some(r#"Bearer realm="synapse""#),
            AuthError::Expired => Some(
                r#"Bearer realm="synapse", error="invalid_token", error_description="the token has expired""#,
            ),
            AuthError::Invalid(_) => Some(r#"Bearer realm="synapse", error="invalid_token""#),
            AuthError::Forbidden { .. } => {
                Some(r#"Bearer realm="synapse", error="insufficient_scope""#)
            }
            AuthError::Origin(_) => None,
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        tracing::info!(status = self.status().as_u16(), reason = %self, "request refused");
        let mut response = self.to_problem().into_response();
        if let Some(challenge) = self.challenge() {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}
