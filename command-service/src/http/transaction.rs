//! Running a command in one transaction, honouring `Idempotency-Key`.

use super::actor::Actor;
use super::error::ApiError;
use crate::assets::CommandOutcome;
use crate::idempotency::{self, Claim, StoredResponse};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use serde_json::Value;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use std::future::Future;
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
    let transaction = pool.begin().await?;
    run_command_in(transaction, actor, headers, request, async { Ok(()) }, work).await
}

/// [`run_command`] in `transaction`, which may hold locks already, with `first` run
/// once the key is claimed and before `work`: for a command that works in other
/// transactions before the one that keeps the key (a cascade rollback). A retry or a
/// reused key is answered before any of that work, and a request with the same key
/// that comes meanwhile waits for this one to end (the claim is this transaction's).
pub async fn run_command_in<F, P>(
    mut transaction: Transaction<'_, Postgres>,
    actor: &Actor,
    headers: &HeaderMap,
    request: &str,
    first: P,
    work: F,
) -> Result<Response, ApiError>
where
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<(StatusCode, Value), ApiError>>,
    P: Future<Output = Result<(), ApiError>>,
{
    let key = idempotency::key_of(headers).map_err(|reason| {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-idempotency-key", reason)
    })?;
    let fingerprint = fingerprint(request);
    if let Some(key) = &key {
        if let Claim::Replay(stored) =
            idempotency::claim(&mut transaction, &actor.0, key, &fingerprint).await?
        {
            return replay(stored, &fingerprint);
        }
    }
    first.await?;
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

/// The stored response of a key, if it was stored for this request.
fn replay(stored: StoredResponse, fingerprint: &str) -> Result<Response, ApiError> {
    if stored.request_fingerprint != fingerprint {
        // Which request it answered, as far as its stored answer says.
        let batch = stored.body["correlation_id"]
            .as_str()
            .map(|batch| format!(", batch {batch}"))
            .unwrap_or_default();
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "this Idempotency-Key was used for a different request",
        )
        .with_detail(format!(
            "the key answered another request (method, path or body differ) with status \
             {}{batch}; send a new key for a new request, or that request again to get its \
             answer",
            stored.status
        ))
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
