//! The command API as the benchmark calls it: each call returns the JSON body and how
//! long the request took, or an error with the service's problem document.

use anyhow::{bail, Context};
use serde_json::Value;
use std::time::{Duration, Instant};

/// A timed answer.
pub struct Timed {
    pub body: Value,
    pub elapsed: Duration,
}

async fn finish(
    response: reqwest::Response,
    started: Instant,
    what: &str,
) -> anyhow::Result<Timed> {
    let status = response.status();
    let text = response
        .text()
        .await
        .with_context(|| format!("reading the answer to {what}"))?;
    let elapsed = started.elapsed();
    if !status.is_success() {
        bail!("{what} answered {status}: {text}");
    }
    let body = serde_json::from_str(&text)
        .with_context(|| format!("{what} answered with something other than JSON: {text}"))?;
    Ok(Timed { body, elapsed })
}

pub async fn post_json(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    what: &str,
) -> anyhow::Result<Timed> {
    send_json(http.post(url), body, what).await
}

pub async fn patch_json(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
    what: &str,
) -> anyhow::Result<Timed> {
    send_json(http.patch(url), body, what).await
}

async fn send_json(
    request: reqwest::RequestBuilder,
    body: &Value,
    what: &str,
) -> anyhow::Result<Timed> {
    let started = Instant::now();
    let response = request
        .json(body)
        .send()
        .await
        .with_context(|| format!("sending {what}"))?;
    finish(response, started, what).await
}

pub async fn import_csv(http: &reqwest::Client, url: &str, csv: String) -> anyhow::Result<Timed> {
    let started = Instant::now();
    let response = http
        .post(url)
        .header("content-type", "text/csv")
        .body(csv)
        .send()
        .await
        .context("sending the CSV import")?;
    finish(response, started, "POST /assets/import").await
}

/// A string field of an answer.
pub fn field<'a>(body: &'a Value, name: &str) -> anyhow::Result<&'a str> {
    body[name]
        .as_str()
        .with_context(|| format!("the answer has no `{name}`: {body}"))
}
