//! Typed helpers for talking to the services over HTTP.

use crate::auth::{self, Role};
use serde_json::Value;

/// An HTTP client that authenticates every request as the admin [`auth::TEST_ADMIN`]
/// (tests about roles build their own with [`http_client_as`]).
pub fn http_client() -> reqwest::Client {
    http_client_as(Role::Admin, auth::TEST_ADMIN)
}

/// An HTTP client whose every request carries a bearer token for `subject` and `role`.
pub fn http_client_as(role: Role, subject: &str) -> reqwest::Client {
    let mut value = reqwest::header::HeaderValue::from_str(&auth::bearer(role, subject))
        .expect("a JWT is a valid header value");
    value.set_sensitive(true);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, value);
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("building an HTTP client")
}

/// A response, kept whole so tests can assert on status, headers and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Value,
}

impl Reply {
    pub async fn from(response: reqwest::Response) -> anyhow::Result<Self> {
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let text = response.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Self {
            status,
            content_type,
            body,
        })
    }

    /// Panics with the whole reply if the status is not `expected`: the message shows
    /// what the service said.
    pub fn expect_status(self, expected: u16) -> Self {
        assert_eq!(self.status, expected, "unexpected reply: {self:#?}");
        self
    }

    pub fn is_problem(&self) -> bool {
        self.content_type.as_deref() == Some("application/problem+json")
    }
}

/// Send a JSON request and read the reply.
pub async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<&Value>,
) -> anyhow::Result<Reply> {
    let mut request = http.request(method, url);
    if let Some(body) = body {
        request = request.json(body);
    }
    Reply::from(request.send().await?).await
}

/// Post a CSV file (as `text/csv`) and read the reply.
pub async fn post_csv(
    http: &reqwest::Client,
    url: &str,
    csv: impl Into<reqwest::Body>,
) -> anyhow::Result<Reply> {
    let response = http
        .post(url)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await?;
    Reply::from(response).await
}
