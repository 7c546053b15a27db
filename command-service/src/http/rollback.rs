//! `POST /rules/rollback`: roll a batch back, preview it, or cascade through the later
//! batches in its way.

use super::actor::Admin;
use super::error::ApiError;
use super::transaction::{run_command, run_command_in};
use super::AppState;
use crate::rollback::analyze::{analyze, Analysis, AnalysisCounts, ListedAnalysis};
use crate::rollback::cascade::{self, clear_the_way, lock_batch, rollback_one};
use crate::rollback::restore::RollbackOutcome;
use crate::rollback::{Mode, RollbackError, RollbackRequest, MAX_LISTED};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::json;
use synapse_shared::problem::{ApiJson, ApiQuery, NoQuery};
use synapse_shared::Problem;

/// The advisory lock cascades take one after the other (`'casc'` as a number, apart
/// from the relay's and the projectors' keys).
const CASCADE_LOCK: i64 = 0x6361_7363;

impl From<RollbackError> for ApiError {
    fn from(error: RollbackError) -> Self {
        let mut detail = error.to_string();
        let problem = match error {
            RollbackError::Database(error) => return error.into(),
            RollbackError::NotFound(_) => {
                Problem::new(StatusCode::NOT_FOUND, "batch-not-found", "no such batch")
            }
            RollbackError::StillRunning(_) => Problem::new(
                StatusCode::CONFLICT,
                "batch-running",
                "the batch is still running",
            ),
            RollbackError::AlreadyRolledBack {
                correlation_id,
                rolled_back_by,
                redone_by,
                undone_again_by,
            } => Problem::new(
                StatusCode::CONFLICT,
                "already-rolled-back",
                "the batch was already rolled back",
            )
            .with_errors(json!({"correlation_id": correlation_id,
                "rolled_back_by": rolled_back_by, "redone_by": redone_by,
                "undone_again_by": undone_again_by})),
            RollbackError::Conflicts(analysis) => {
                let nothing_else = analysis.restorations.is_empty();
                let (conflicts, truncated) = analysis.listed_conflicts();
                if truncated {
                    detail.push_str(&format!("; the first {MAX_LISTED} are listed"));
                }
                if nothing_else {
                    detail.push_str(
                        "; none is left that a rollback could restore: roll back the later \
                         batches first (mode cascade)",
                    );
                }
                Problem::new(
                    StatusCode::CONFLICT,
                    "rollback-conflict",
                    "later batches changed aggregates this batch touched",
                )
                .with_errors(json!(conflicts))
            }
            RollbackError::Concurrent => Problem::new(
                StatusCode::CONFLICT,
                "concurrent-change",
                "an aggregate changed while rolling back; retry",
            ),
            RollbackError::CascadeTooLong(_) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "cascade-too-long",
                "the cascade is too long",
            ),
        };
        problem.with_detail(detail).into()
    }
}

/// The 200 answer of `POST /rules/rollback`: what was done, or with `dry_run` what
/// would be (one schema each, so the OpenAPI document says which fields come back).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum RollbackAnswer {
    RolledBack(RollbackOutcome),
    DryRun(RollbackPreview),
}

/// A rollback dry run: the analysis, and whether the rollback would go ahead.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RollbackPreview {
    /// Always `true`.
    pub dry_run: bool,
    pub mode: Mode,
    /// Whether this mode would roll back now (`strict` refuses when there are
    /// conflicts; `cascade` when what is in the way is still running, goes in a circle,
    /// is longer than 50 batches, or leaves conflicts after it).
    pub would_roll_back: bool,
    /// Every aggregate of the analysis, by what the rollback does to it; in `cascade`
    /// mode, what it does once the batches of `cascade` are rolled back (conflicts they
    /// clear counted by what the rollback then does to them).
    pub counts: AnalysisCounts,
    /// The analysis lists at most 1,000 restorations and 1,000 conflicts; `true` when
    /// it left some out (`counts` covers them all).
    pub truncated: bool,
    /// The batches in the way (not rolled back): what `cascade` rolls back first,
    /// newest first, with what is in their way in turn.
    pub later_batches: Vec<uuid::Uuid>,
    /// `cascade` mode: the batches it would roll back before this one, in that order
    /// (each one's rollback taken to return what it touched to before it, but for its
    /// own conflicts that nothing clears). Empty in the other modes.
    pub cascade: Vec<uuid::Uuid>,
    /// The analysis as things stand now, before any cascade.
    pub analysis: ListedAnalysis,
}

/// Roll back a batch by its `correlation_id`. `mode`: `strict` (default; 409 with a
/// conflict report if later batches changed what it touched), `partial` (roll back the
/// rest, report the conflicts) or `cascade` (roll back the later batches first, newest
/// first). `dry_run` answers with what would be restored and the conflicts.
#[utoipa::path(post, path = "/rules/rollback", request_body = RollbackRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "replays the first response")),
    responses(
        (status = 200, description = "rolled back, or the dry-run analysis", body = RollbackAnswer),
        (status = 404, description = "no such batch", body = Problem),
        (status = 409, description = "conflicts, still running, or already rolled back", body = Problem),
    ))]
pub async fn rollback(
    State(state): State<AppState>,
    Admin(actor): Admin,
    headers: HeaderMap,
    _: ApiQuery<NoQuery>,
    ApiJson(request): ApiJson<RollbackRequest>,
) -> Result<Response, ApiError> {
    let fingerprint = format!(
        "POST /rules/rollback {}",
        serde_json::to_string(&request).unwrap_or_default()
    );
    if request.dry_run {
        // Writes nothing, but keeps its key like any command: a retry answers with the
        // first analysis, and the key cannot be taken for another request.
        return run_command(
            &state.pool,
            &actor,
            &headers,
            &fingerprint,
            move |connection| Box::pin(async move { dry_run(connection, &request).await }),
        )
        .await;
    }
    let work = rollback_work(actor.0.clone(), request.correlation_id, request.mode);
    if request.mode != Mode::Cascade {
        return run_command(&state.pool, &actor, &headers, &fingerprint, work).await;
    }
    // A cascade rolls back the batches in the way first, each in its own transaction;
    // the target's rollback comes last, in the transaction that claimed the key before
    // any of them: a retry of a cascade that finished, or a key used for another
    // request, is answered before any of it, and a request with the same key waits.
    //
    // One cascade at a time: two at once took each other's rollbacks for later batches
    // in their way and undid them, back and forth, until both hit the step limit with
    // over a hundred rollbacks written and the target left as it was. The lock is that
    // transaction's, so that it is released however this request ends (a dropped
    // transaction rolls back); the next cascade then finds the target rolled back (409)
    // or the way as this one left it. Cascades of this process wait for their turn
    // before they take a connection: waiting on the lock with one each, ten of them
    // held the whole pool while the one holding the lock needed more (5 s, then a 503
    // from the pool's acquire timeout).
    let _turn = state.cascades.lock().await;
    let mut cascading = state.pool.begin().await?;
    // Open while the cascade's own rollbacks run in other transactions.
    sqlx::query("set local idle_in_transaction_session_timeout = 0")
        .execute(&mut *cascading)
        .await?;
    sqlx::query("select pg_advisory_xact_lock($1)")
        .bind(CASCADE_LOCK)
        .execute(&mut *cascading)
        .await?;
    let clear = async {
        clear_the_way(&state.pool, &actor.0, request.correlation_id).await?;
        Ok(())
    };
    run_command_in(cascading, &actor, &headers, &fingerprint, clear, work).await
}

/// The rollback of `correlation_id` as the work of a command's transaction: the
/// target's own rollback (a cascade has cleared the way before).
fn rollback_work(
    actor: String,
    correlation_id: uuid::Uuid,
    mode: Mode,
) -> impl for<'c> FnOnce(
    &'c mut sqlx::PgConnection,
) -> futures::future::BoxFuture<
    'c,
    Result<(StatusCode, serde_json::Value), ApiError>,
> {
    move |connection| {
        Box::pin(async move {
            let mut outcome = rollback_one(connection, &actor, correlation_id, mode).await?;
            if mode == Mode::Cascade {
                outcome.cascaded = cascade::cascaded_for(connection, correlation_id).await?;
            }
            Ok((StatusCode::OK, json!(RollbackAnswer::RolledBack(outcome))))
        })
    }
}

/// What a rollback would do, on `connection` (which it leaves as it found it).
async fn dry_run(
    connection: &mut sqlx::PgConnection,
    request: &RollbackRequest,
) -> Result<(StatusCode, serde_json::Value), ApiError> {
    let partially = lock_batch(connection, request.correlation_id).await?;
    let analysis: Analysis = analyze(connection, request.correlation_id).await?;
    let (would, counts, cascade) = match request.mode {
        Mode::Cascade => {
            let preview = cascade::preview(connection, &analysis).await?;
            (preview.would_roll_back, preview.counts, preview.order)
        }
        mode => (
            cascade::goes_ahead(&analysis, mode, partially),
            analysis.counts(),
            Vec::new(),
        ),
    };
    let later_batches = analysis.later_batches.iter().copied().collect();
    let (analysis, truncated) = analysis.listed(connection).await?;
    let preview = RollbackAnswer::DryRun(RollbackPreview {
        dry_run: true,
        mode: request.mode,
        would_roll_back: would,
        counts,
        truncated,
        later_batches,
        cascade,
        analysis,
    });
    Ok((StatusCode::OK, json!(preview)))
}
