//! Running a command in one transaction, honouring `Idempotency-Key`.

use super::actor::Actor;
use super::error::ApiError;
use crate::assets::CommandOutcome;
use crate::idempotency::{self, Claim, StoredResponse};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use std::hash::{Hash, Hasher};
use synapse_shared::Problem;

/// Run `work` in a transaction. With an `Idempotency-Key`, a replay returns the stored
/// response and runs nothing; a fresh key stores the response in the same transaction.
/// `request` identifies the request (method, path, body) so a key reused for a
/// different request is refused rather than silently answered with another response.
pub async fn run_command<F>(
    pool: &PgPool,
    actor: &Actor,
    headers: &HeaderMap,
    request: &str,
    work: F,
) -> Result<Response, ApiError>
where
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<(StatusCode, Value), ApiError>>,
{
    let key = idempotency::key_of(headers).map_err(|reason| {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-idempotency-key", reason)
    })?;
    let fingerprint = fingerprint(request);
    let mut transaction = pool.begin().await?;
    if let Some(key) = &key {
        if let Claim::Replay(stored) =
            idempotency::claim(&mut transaction, &actor.0, key, &fingerprint).await?
        {
            return replay(stored, &fingerprint);
        }
    }
    let (status, body) = work(&mut transaction).await?;
    if let Some(key) = &key {
        idempotency::remember(&mut transaction, &actor.0, key, status, &body).await?;
    }
    transaction.commit().await?;
    Ok((status, axum::Json(body)).into_response())
}

/// [`run_command`] for a single change: `work` gets the transaction and the caller's
/// name and returns what it did, which is answered with `status` as JSON.
pub async fn run_single_change<F>(
    pool: &PgPool,
    actor: &Actor,
    headers: &HeaderMap,
    request: &str,
    status: StatusCode,
    work: F,
) -> Result<Response, ApiError>
where
    F: for<'c> FnOnce(
            &'c mut PgConnection,
            String,
        ) -> BoxFuture<'c, Result<CommandOutcome, ApiError>>
        + Send,
{
    let name = actor.0.clone();
    run_command(pool, actor, headers, request, move |connection| {
        let work = work(connection, name);
        Box::pin(async move {
            let outcome = work.await?;
            if let Some(correlation_id) = outcome.correlation_id {
                tracing::info!(
                    %correlation_id,
                    events = outcome.events.len(),
                    "single change appended"
                );
            }
            let body =
                serde_json::to_value(&outcome).map_err(|error| ApiError::Internal(error.into()))?;
            Ok((status, body))
        })
    })
    .await
}

/// The response stored for the request's `Idempotency-Key`, if it has one and it was
/// used before: for a command that works in several transactions before the one that
/// keeps the key (a cascade rollback), so that a retry does none of them again.
pub async fn replayed(
    pool: &PgPool,
    actor: &Actor,
    headers: &HeaderMap,
    request: &str,
) -> Result<Option<Response>, ApiError> {
    let key = idempotency::key_of(headers).map_err(|reason| {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-idempotency-key", reason)
    })?;
    let Some(key) = key else {
        return Ok(None);
    };
    let mut connection = pool.acquire().await?;
    match idempotency::stored(&mut connection, &actor.0, &key).await? {
        Some(stored) => replay(stored, &fingerprint(request)).map(Some),
        None => Ok(None),
    }
}

/// The stored response of a key, if it was stored for this request.
fn replay(stored: StoredResponse, fingerprint: &str) -> Result<Response, ApiError> {
    if stored.request_fingerprint != fingerprint {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "this Idempotency-Key was used for a different request",
        )
        .into());
    }
    let status = StatusCode::from_u16(stored.status as u16).unwrap_or(StatusCode::OK);
    Ok((status, axum::Json(stored.body)).into_response())
}

fn fingerprint(request: &str) -> String {
    // SipHash with fixed keys: stable for a given build, which is all a retry window
    // needs; the length makes accidental collisions of different bodies even rarer.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    request.hash(&mut hasher);
    format!("{:016x}-{}", hasher.finish(), request.len())
}
