//! `Idempotency-Key`: a retried request returns the first response and appends nothing.
//!
//! The key is claimed inside the command's own transaction, before any work: a
//! concurrent request with the same key blocks on the unique index until the first
//! commits (then replays its response) or rolls back (then runs itself). The response
//! is stored in the same transaction as the events, so "applied" and "remembered"
//! cannot disagree.

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;
use sqlx::PgConnection;

pub const HEADER: &str = "idempotency-key";
const MAX_KEY_LENGTH: usize = 200;

/// A stored response, replayed for a retried request.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredResponse {
    pub request_fingerprint: String,
    pub status: i16,
    pub body: Value,
}

/// The outcome of claiming a key.
pub enum Claim {
    /// First use of the key: do the work, then [`remember`] the response.
    Fresh,
    /// The key was used before: answer with this.
    Replay(StoredResponse),
}

/// The key of a request, if it sent one. Empty or overlong keys are a client error, and
/// so are two: which one the client meant is not for the service to pick.
pub fn key_of(headers: &HeaderMap) -> Result<Option<String>, &'static str> {
    let mut values = headers.get_all(HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("send one Idempotency-Key header, not several");
    }
    match value.to_str() {
        Ok(key) if !key.is_empty() && key.len() <= MAX_KEY_LENGTH => Ok(Some(key.to_owned())),
        _ => Err("Idempotency-Key must be 1 to 200 visible ASCII characters"),
    }
}

/// Claim `key` for `actor` in the caller's transaction.
pub async fn claim(
    connection: &mut PgConnection,
    actor: &str,
    key: &str,
    fingerprint: &str,
) -> Result<Claim, sqlx::Error> {
    let inserted = sqlx::query(
        "insert into idempotency_keys (actor, key, request_fingerprint, status, body)
         values ($1, $2, $3, 0, 'null')
         on conflict (actor, key) do nothing",
    )
    .bind(actor)
    .bind(key)
    .bind(fingerprint)
    .execute(&mut *connection)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::Fresh);
    }
    match stored(connection, actor, key).await? {
        Some(stored) => Ok(Claim::Replay(stored)),
        None => Err(sqlx::Error::RowNotFound),
    }
}

/// The response stored for `key`, if any (what another transaction has claimed but not
/// committed is not seen).
pub async fn stored(
    connection: &mut PgConnection,
    actor: &str,
    key: &str,
) -> Result<Option<StoredResponse>, sqlx::Error> {
    sqlx::query_as(
        "select request_fingerprint, status, body from idempotency_keys where actor = $1 and key = $2",
    )
    .bind(actor)
    .bind(key)
    .fetch_optional(connection)
    .await
}

/// Store the response of a fresh claim, in the same transaction as the work.
pub async fn remember(
    connection: &mut PgConnection,
    actor: &str,
    key: &str,
    status: StatusCode,
    body: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query("update idempotency_keys set status = $3, body = $4 where actor = $1 and key = $2")
        .bind(actor)
        .bind(key)
        .bind(status.as_u16() as i16)
        .bind(body)
        .execute(connection)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn a_request_has_no_key_one_key_or_a_refusal() {
        let mut headers = HeaderMap::new();
        assert_eq!(key_of(&headers), Ok(None));
        headers.insert(HEADER, HeaderValue::from_static("k-1"));
        assert_eq!(key_of(&headers), Ok(Some("k-1".to_owned())));
        // Before: the first of two was used without a word.
        headers.append(HEADER, HeaderValue::from_static("k-2"));
        assert_eq!(
            key_of(&headers),
            Err("send one Idempotency-Key header, not several")
        );
        headers.insert(HEADER, HeaderValue::from_static(""));
        assert!(key_of(&headers).is_err());
    }
}
