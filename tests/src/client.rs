//! Typed helpers for talking to the services over HTTP.

use serde_json::Value;

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
