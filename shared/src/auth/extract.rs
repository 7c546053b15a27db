//! The axum extractor: a handler that takes a [`Principal`] only runs for a caller
//! with a valid bearer token.

use super::{AuthError, Authenticator, Principal};
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive);
/// `None` when there is no such header, an error when it is not a bearer token.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, AuthError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| AuthError::Invalid("the Authorization header is not ASCII"))?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Invalid(
        "the Authorization header must be `Bearer <token>`",
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Invalid(
            "the Authorization header must be `Bearer <token>`",
        ));
    }
    Ok(Some(token.trim()))
}

impl<S> FromRequestParts<S> for Principal
where
    Authenticator: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let authenticator = Authenticator::from_ref(state);
        if authenticator.is_disabled() {
            return authenticator.authenticate("");
        }
        let token = bearer_token(&parts.headers)?.ok_or(AuthError::Missing)?;
        authenticator.authenticate(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{issue_token, AuthArgs, Role, DEFAULT_AUDIENCE, DEFAULT_ISSUER};
    use axum::http::{HeaderValue, Request};
    use std::time::Duration;

    const SECRET: &str = "unit-test-secret-that-is-long-enough-for-hs256";

    async fn extract(authorization: Option<&str>) -> Result<Principal, AuthError> {
        let authenticator =
            Authenticator::from_args(&AuthArgs::with_secret(SECRET)).expect("valid settings");
        let mut request = Request::builder().uri("/");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        Principal::from_request_parts(&mut parts, &authenticator).await
    }

    #[tokio::test]
    async fn the_extractor_reads_a_bearer_token_and_refuses_everything_else() {
        let token = issue_token(
            SECRET,
            "bob",
            Role::Viewer,
            Duration::from_secs(60),
            DEFAULT_ISSUER,
            DEFAULT_AUDIENCE,
        )
        .expect("signs");
        let principal = extract(Some(&format!("bearer {token}"))).await;
        assert_eq!(principal.map(|p| p.name).ok().as_deref(), Some("bob"));
        assert_eq!(extract(None).await, Err(AuthError::Missing));
        assert!(matches!(
            extract(Some("Basic Ym9iOmJvYg==")).await,
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            extract(Some("Bearer ")).await,
            Err(AuthError::Invalid(_))
        ));
    }
}
