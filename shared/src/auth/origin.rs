//! The `Origin` check of the WebSocket handshake.
//!
//! Browsers send `Origin` on every WebSocket handshake and let any page open a socket
//! to any host, so the server decides. Non-browser clients send none and are let
//! through (they still need a token). A browser origin must be listed in
//! `ALLOWED_ORIGINS`, or, when that list is empty, be the very host the request went to.

use super::AuthError;
use axum::http::{header, HeaderMap};

/// The parsed `ALLOWED_ORIGINS`: normalized `scheme://host[:port]`, lowercase.
#[derive(Debug, Clone, Default)]
pub(super) struct AllowedOrigins(Vec<String>);

impl AllowedOrigins {
    pub(super) fn parse(listed: &[String]) -> Result<Self, String> {
        let mut origins = Vec::new();
        for origin in listed.iter().map(|origin| origin.trim()) {
            if origin.is_empty() {
                continue;
            }
            if authority(origin).is_none() {
                return Err(format!(
                    "`{origin}` is not an origin: write scheme://host[:port], e.g. https://ops.example.com"
                ));
            }
            origins.push(normalize(origin));
        }
        Ok(Self(origins))
    }

    /// The origins listed (none: only the service's own host).
    pub(super) fn listed(&self) -> &[String] {
        &self.0
    }

    pub(super) fn check(&self, headers: &HeaderMap) -> Result<(), AuthError> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        let origin = origin
            .to_str()
            .map_err(|_| AuthError::Origin("(not ASCII)".to_owned()))?;
        let normalized = normalize(origin);
        let allowed = if self.0.is_empty() {
            let host = headers
                .get(header::HOST)
                .and_then(|host| host.to_str().ok())
                .map(|host| host.trim().to_ascii_lowercase());
            authority(&normalized).is_some_and(|origin_host| Some(origin_host) == host.as_deref())
        } else {
            self.0.contains(&normalized)
        };
        if allowed {
            Ok(())
        } else {
            Err(AuthError::Origin(origin.chars().take(200).collect()))
        }
    }
}

fn normalize(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// The `host[:port]` of an `http(s)://host[:port]` origin; `None` for anything else
/// (including the opaque origin `null`).
fn authority(origin: &str) -> Option<&str> {
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .or_else(|| origin.strip_prefix("HTTP://"))
        .or_else(|| origin.strip_prefix("HTTPS://"))?;
    let rest = rest.trim_end_matches('/');
    (!rest.is_empty() && !rest.contains(['/', '?', '#', '@', ' '])).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(origin: Option<&'static str>, host: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static(host));
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_static(origin));
        }
        headers
    }

    #[test]
    fn without_a_list_only_no_origin_or_the_same_host_is_allowed() {
        let policy = AllowedOrigins::parse(&[]).expect("empty list");
        assert!(policy.check(&headers(None, "localhost:8082")).is_ok());
        assert!(policy
            .check(&headers(Some("http://localhost:8082"), "localhost:8082"))
            .is_ok());
        assert!(policy
            .check(&headers(Some("https://evil.example"), "localhost:8082"))
            .is_err());
        assert!(policy
            .check(&headers(Some("null"), "localhost:8082"))
            .is_err());
    }

    #[test]
    fn with_a_list_only_listed_origins_are_allowed() {
        let policy =
            AllowedOrigins::parse(&["https://Ops.Example.com/".to_owned()]).expect("valid list");
        assert!(policy
            .check(&headers(Some("https://ops.example.com"), "api:8082"))
            .is_ok());
        assert!(policy
            .check(&headers(Some("http://api:8082"), "api:8082"))
            .is_err());
        assert!(AllowedOrigins::parse(&["ops.example.com".to_owned()]).is_err());
    }
}
