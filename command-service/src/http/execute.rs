//! `POST /rules/execute`: run rules now (in the background or waiting), preview them
//! (`dry_run`), or apply a previewed plan (`plan_id`).

use super::actor::Engineer;
use super::error::ApiError;
use super::transaction::run_command;
use super::AppState;
use crate::execute::plans;
use crate::execute::preview::{self, Preview};
use crate::execute::request::{AssetFilter, ExecuteBody, MAX_RULES};
use crate::execute::runner::{Execution, Report};
use crate::idempotency;
use crate::rules::definition::{in_batch_order, CompiledRule};
use crate::rules::{self, store as rule_store};
use crate::store::append;
use crate::store::batches::{self, Batch, BatchKind};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::json;
use sqlx::PgConnection;
use std::sync::{Arc, Mutex};
use synapse_shared::problem::{ApiJson, ApiQuery, NoQuery};
use synapse_shared::{EventType, Problem};
use uuid::Uuid;

/// What the background task needs, prepared inside the request's transaction.
struct Prepared {
    batch: Batch,
    rules: Vec<CompiledRule>,
    filter: AssetFilter,
    /// When applying a stored plan: the plan.
    plan: Option<Uuid>,
}

/// The 200 answer of `POST /rules/execute`: with `dry_run` the plan, with `wait` the
/// finished batch's report (one schema each, so the OpenAPI document says which).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ExecuteAnswer {
    Plan(Preview),
    Finished(Report),
}

/// The 202 answer of `POST /rules/execute`: the batch started in the background.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Started {
    /// The batch: follow it on `/batches/{correlation_id}` or the live feed.
    pub correlation_id: Uuid,
    /// Always `running`.
    pub status: String,
    /// The plan being applied, if the request named one.
    pub plan_id: Option<Uuid>,
}

/// Execute rules over assets. Returns `202 {correlation_id}` at once and runs in the
/// background (`wait: true` answers with the report when done); `dry_run: true`
/// answers with the plan and writes nothing; `plan_id` applies a plan exactly, or is
/// refused with 409 listing what changed since it was made.
#[utoipa::path(post, path = "/rules/execute", request_body = ExecuteBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "replays the first response")),
    responses(
        (status = 200, description = "finished (wait) or the dry-run plan", body = ExecuteAnswer),
        (status = 202, description = "started; follow the correlation_id", body = Started),
        (status = 404, description = "unknown plan", body = Problem),
        (status = 409, description = "plan is stale or already applied", body = Problem),
        (status = 422, description = "invalid request or unknown rules", body = Problem),
    ))]
pub async fn execute(
    State(state): State<AppState>,
    Engineer(actor): Engineer,
    headers: HeaderMap,
    _: ApiQuery<NoQuery>,
    ApiJson(body): ApiJson<ExecuteBody>,
) -> Result<Response, ApiError> {
    let (request, mut problems) = body.into_request();
    problems.extend(request.filters.problems());
    if request.rule_ids.len() > MAX_RULES {
        problems.push(format!("rule_ids lists more than {MAX_RULES} rules"));
    }
    if request.plan_id.is_some()
        && (request.dry_run
            || !request.rule_ids.is_empty()
            || request.filters != AssetFilter::default())
    {
        problems.push(
            "plan_id applies a stored plan: send it without rule_ids, filters or dry_run"
                .to_owned(),
        );
    }
    if !problems.is_empty() {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-execution",
            "the execution request is invalid",
        )
        .with_errors(json!(problems))
        .into());
    }
    // `wait` says how to answer, not what to do: a retry may ask to wait for the batch
    // the first request started without waiting, and gets its report.
    let fingerprint = format!(
        "POST /rules/execute {}",
        serde_json::to_string(&crate::execute::request::ExecuteRequest {
            wait: false,
            ..request.clone()
        })
        .unwrap_or_default()
    );
    if request.dry_run {
        let rules = select_rules(&state, &request.rule_ids).await?;
        // Before the first connection: a dry run holds up to three at once.
        let _wide = state
            .wide
            .clone()
            .acquire_owned()
            .await
            .map_err(|error| ApiError::Internal(error.into()))?;
        if headers.contains_key(idempotency::HEADER) {
            // A retry answers with the first plan instead of making another.
            let pool = state.pool.clone();
            let actor_name = actor.0.clone();
            return run_command(&state.pool, &actor, &headers, &fingerprint, move |_| {
                Box::pin(async move {
                    let preview =
                        preview::preview(&pool, &actor_name, &request, &rules, &request.filters)
                            .await?;
                    let body = serde_json::to_value(ExecuteAnswer::Plan(preview))
                        .map_err(|error| ApiError::Internal(error.into()))?;
                    Ok((StatusCode::OK, body))
                })
            })
            .await;
        }
        // Without a key there is nothing to claim, and a dry run needs no transaction of
        // the request's own (it opens its two).
        let preview =
            preview::preview(&state.pool, &actor.0, &request, &rules, &request.filters).await?;
        return Ok((StatusCode::OK, axum::Json(ExecuteAnswer::Plan(preview))).into_response());
    }
    let prepared = Arc::new(Mutex::new(None));
    let slot = prepared.clone();
    let actor_name = actor.0.clone();
    let rules = match request.plan_id {
        Some(_) => Vec::new(),
        None => select_rules(&state, &request.rule_ids).await?,
    };
    let wait = request.wait;
    let response = run_command(
        &state.pool,
        &actor,
        &headers,
        &fingerprint,
        move |connection| {
            Box::pin(async move {
                let ready = match request.plan_id {
                    Some(plan_id) => prepare_plan(connection, &actor_name, plan_id).await?,
                    None => {
                        start(
                            connection,
                            &actor_name,
                            rules,
                            request.filters.clone(),
                            None,
                        )
                        .await?
                    }
                };
                let body = json!(Started {
                    correlation_id: ready.batch.correlation_id,
                    status: "running".to_owned(),
                    plan_id: request.plan_id,
                });
                if let Ok(mut slot) = slot.lock() {
                    *slot = Some(ready);
                }
                Ok((StatusCode::ACCEPTED, body))
            })
        },
    )
    .await?;
    let ready = prepared.lock().ok().and_then(|mut slot| slot.take());
    let Some(ready) = ready else {
        // A replayed Idempotency-Key: the first request started the batch. A retry
        // that asks to wait gets its report, whether or not the first one waited.
        if wait && response.status() == StatusCode::ACCEPTED {
            return wait_for_replayed(&state, response).await;
        }
        return Ok(response);
    };
    let execution = Execution {
        pool: state.pool.clone(),
        batch: ready.batch,
        rules: ready.rules,
        filter: ready.filter,
        plan: ready.plan,
        shutdown: state.shutdown.clone(),
        growth: Default::default(),
    };
    let handle = state.executions.spawn(execution.run());
    if !wait {
        return Ok(response);
    }
    let report: Report = handle
        .await
        .map_err(|error| ApiError::Internal(anyhow::anyhow!("execution task failed: {error}")))?;
    let answer = ExecuteAnswer::Finished(report);
    if let Ok(Some(key)) = idempotency::key_of(&headers) {
        // A retry gets the 202 it would have got while the batch ran; from now on it
        // gets what this request gets.
        remember_report(&state, &actor.0, &key, &answer).await;
    }
    Ok((StatusCode::OK, axum::Json(answer)).into_response())
}

/// Answer a replayed `202` (`response`) with the report of its batch once the batch
/// has finished, read from its closing event; the `202` itself if the service shuts
/// down first, or the batch ended without one.
async fn wait_for_replayed(state: &AppState, response: Response) -> Result<Response, ApiError> {
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_REPLAYED_BYTES)
        .await
        .map_err(|error| {
            ApiError::Internal(anyhow::anyhow!("reading a replayed answer: {error}"))
        })?;
    let replayed = || Response::from_parts(parts.clone(), axum::body::Body::from(bytes.clone()));
    let Some(correlation_id) = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|body| serde_json::from_value::<Uuid>(body["correlation_id"].clone()).ok())
    else {
        return Ok(replayed());
    };
    loop {
        if let Some(report) = batches::report(&state.pool, correlation_id).await? {
            return Ok((StatusCode::OK, axum::Json(report)).into_response());
        }
        if batches::finished(&state.pool, correlation_id).await? {
            // It may have finished between the two reads (the CI run of the session's
            // review saw the 202 answered so): its report is there now, if it has one.
            return Ok(match batches::report(&state.pool, correlation_id).await? {
                Some(report) => (StatusCode::OK, axum::Json(report)).into_response(),
                None => replayed(),
            });
        }
        tokio::select! {
            () = state.shutdown.cancelled() => return Ok(replayed()),
            () = tokio::time::sleep(REPLAY_POLL) => {}
        }
    }
}

/// The largest replayed answer read back (a `202` is a few hundred bytes).
const MAX_REPLAYED_BYTES: usize = 64 * 1024;
/// How often a waiting replay looks whether its batch has finished.
const REPLAY_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Store the finished report of a waiting request as its key's response. Best effort:
/// the batch has finished either way, so a failure is logged, not answered.
async fn remember_report(state: &AppState, actor: &str, key: &str, answer: &ExecuteAnswer) {
    let remembered: anyhow::Result<()> = async {
        let body = serde_json::to_value(answer)?;
        let mut connection = state.pool.acquire().await?;
        idempotency::remember(&mut connection, actor, key, StatusCode::OK, &body).await?;
        Ok(())
    }
    .await;
    if let Err(error) = remembered {
        tracing::warn!(
            error = format!("{error:#}"),
            "could not store the report for the Idempotency-Key"
        );
    }
}

/// Open the batch and append `BATCH_STARTED`, in the request's transaction.
async fn start(
    connection: &mut PgConnection,
    actor: &str,
    rules: Vec<CompiledRule>,
    filter: AssetFilter,
    plan: Option<Uuid>,
) -> Result<Prepared, ApiError> {
    let mut batch = Batch::new(BatchKind::RuleExecution, actor);
    let described: Vec<_> = rules
        .iter()
        .map(|rule| json!({"rule_id": rule.id, "rule_version": rule.version, "name": rule.name, "priority": rule.priority}))
        .collect();
    let request = json!({"rules": described, "filters": filter, "plan_id": plan});
    let started = batch.event(EventType::BatchStarted, json!({"kind": batch.kind.as_str(), "rules": described, "filters": filter, "plan_id": plan}));
    batches::open(connection, &batch, Some(&request)).await?;
    append(connection, vec![started])
        .await
        .map_err(|error| ApiError::Internal(error.into()))?;
    Ok(Prepared {
        batch,
        rules,
        filter,
        plan,
    })
}

/// Check a stored plan still holds and prepare to apply it exactly.
async fn prepare_plan(
    connection: &mut PgConnection,
    actor: &str,
    plan_id: Uuid,
) -> Result<Prepared, ApiError> {
    let plan = plans::load_for_apply(connection, plan_id)
        .await?
        .ok_or_else(|| {
            Problem::new(StatusCode::NOT_FOUND, "plan-not-found", "no such plan")
                .with_detail(format!("plan {plan_id} does not exist"))
        })?;
    if let Some(correlation_id) = plan.applied_by_correlation_id {
        // A plan is applied once, whatever came of it: an apply that stopped part-way
        // (a drift, a crash) leaves a failed batch, to roll back or to follow with a new
        // dry run of what is left.
        let (status,): (String,) =
            sqlx::query_as("select status from batches where correlation_id = $1")
                .bind(correlation_id)
                .fetch_optional(&mut *connection)
                .await?
                .unwrap_or_else(|| ("unknown".to_owned(),));
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "plan-already-applied",
            "the plan was applied already",
        )
        .with_detail(format!(
            "batch {correlation_id} applied it ({status}); make a new dry run for what is left"
        ))
        .with_errors(json!({"correlation_id": correlation_id, "status": status}))
        .into());
    }
    let (changed, stale) = plans::stale_reads(connection, plan_id, preview::MAX_ENTRIES).await?;
    if changed > 0 {
        let mut detail = format!("{changed} aggregates changed; make a new dry run");
        if stale.len() < changed as usize {
            detail.push_str(&format!("; the first {} are listed", stale.len()));
        }
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "stale-plan",
            "assets the plan depends on changed since it was made",
        )
        .with_detail(detail)
        .with_errors(json!(stale))
        .into());
    }
    let mut rules = Vec::new();
    for (rule_id, version) in plan.rule_versions.0.iter() {
        let stored = rule_store::version(connection, *rule_id, *version)
            .await?
            .ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!(
                    "plan {plan_id} names a missing rule version"
                ))
            })?;
        rules.push(
            rules::compiled(&stored).map_err(|errors| invalid_stored_rule(stored.id, errors))?,
        );
    }
    rule_store::own_open_findings(&mut *connection, &mut rules).await?;
    let prepared = start(
        connection,
        actor,
        in_batch_order(rules),
        plan.request.0.filters.clone(),
        Some(plan_id),
    )
    .await?;
    plans::mark_applied(connection, plan_id, prepared.batch.correlation_id).await?;
    Ok(prepared)
}

/// The rules an execution runs: the listed ones, or every enabled one; newest
/// versions, by priority.
async fn select_rules(state: &AppState, rule_ids: &[Uuid]) -> Result<Vec<CompiledRule>, ApiError> {
    let all = rule_store::latest_all(&state.pool).await?;
    let chosen: Vec<_> = if rule_ids.is_empty() {
        all.into_iter().filter(|rule| rule.enabled).collect()
    } else {
        let unknown: Vec<_> = rule_ids
            .iter()
            .filter(|id| !all.iter().any(|rule| rule.id == **id))
            .collect();
        if !unknown.is_empty() {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown-rules",
                "some rules do not exist",
            )
            .with_errors(json!(unknown))
            .into());
        }
        all.into_iter()
            .filter(|rule| rule_ids.contains(&rule.id))
            .collect()
    };
    let mut rules = chosen
        .iter()
        .map(|stored| {
            rules::compiled(stored).map_err(|errors| invalid_stored_rule(stored.id, errors))
        })
        .collect::<Result<Vec<_>, _>>()?;
    rule_store::own_open_findings(&state.pool, &mut rules).await?;
    Ok(in_batch_order(rules))
}

fn invalid_stored_rule(
    rule_id: Uuid,
    errors: Vec<crate::rules::expression::ExpressionError>,
) -> ApiError {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid-rule",
        "a stored rule no longer compiles",
    )
    .with_detail(format!("rule {rule_id}: define a new version"))
    .with_errors(json!(errors))
    .into()
}
