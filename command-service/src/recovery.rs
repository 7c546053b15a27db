//! Batches whose executor died: a running batch without a heartbeat for a while is
//! marked failed (`BATCH_FAILED`), so nothing stays "running" forever and the batch
//! can be rolled back like any other.
//!
//! A running execution refreshes its batch's heartbeat every [`HEARTBEAT`] from a
//! ticker of its own (not only per chunk, so a slow chunk does not look dead); every
//! command-service replica sweeps for stale batches every [`SWEEP`].

use crate::execute::apply::Counts;
use crate::execute::runner::RuleReport;
use crate::store::append;
use chrono::Utc;
use serde_json::json;
use sqlx::PgPool;
use std::time::Duration;
use synapse_shared::shutdown::CancellationToken;
use synapse_shared::{AggregateType, EventType, NewEvent};
use uuid::Uuid;

/// How often a running execution proves it is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// How often each replica looks for abandoned batches.
pub const SWEEP: Duration = Duration::from_secs(10);

/// Keep `correlation_id`'s heartbeat fresh until `stop` is cancelled.
pub async fn heartbeat(pool: PgPool, correlation_id: Uuid, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(HEARTBEAT) => {}
        }
        let refreshed = sqlx::query("update batches set heartbeat_at = now() where correlation_id = $1 and status = 'running'")
            .bind(correlation_id)
            .execute(&pool)
            .await;
        if let Err(error) = refreshed {
            tracing::warn!(%error, %correlation_id, "could not refresh the batch heartbeat");
        }
    }
}

/// Mark every running batch silent for longer than `stale_after` as failed; returns
/// their correlation ids.
pub async fn fail_abandoned(
    pool: &PgPool,
    stale_after: Duration,
) -> Result<Vec<Uuid>, crate::store::AppendError> {
    let mut transaction = pool.begin().await?;
    let stale: Vec<(Uuid, i64, String, String, chrono::DateTime<Utc>)> = sqlx::query_as(
        // The batch's newest version: its row's, which `for update` reads as the
        // last chunk committed it (an executor records it with each chunk), or the
        // log's. The log's alone is read as of the statement's start, and a chunk
        // committed between that and the row lock made the sweep append a version the
        // chunk had taken (a unique violation, the sweep failing until the next round).
        "select b.correlation_id,
                 greatest(b.version, coalesce((select max(e.aggregate_version) from workflow_events e where e.aggregate_id = b.correlation_id), 0)),
                 b.actor, b.kind, b.heartbeat_at
         from batches b
         where b.status = 'running' and b.heartbeat_at < now() - make_interval(secs => $1)
         order by b.correlation_id
         for update of b skip locked",
    )
    .bind(stale_after.as_secs_f64())
    .fetch_all(&mut *transaction)
    .await?;
    let mut events = Vec::with_capacity(stale.len());
    for (correlation_id, version, actor, kind, heartbeat_at) in &stale {
        let mut payload = json!({"kind": kind, "error": format!("the executor stopped: no heartbeat since {heartbeat_at}")});
        let (rules, totals) = landed(&mut transaction, *correlation_id).await?;
        if !rules.is_empty() {
            payload["rules"] = json!(rules);
            payload["totals"] = json!(totals);
        }
        events.push(NewEvent {
            event_id: Uuid::now_v7(),
            event_type: EventType::BatchFailed,
            aggregate_type: AggregateType::Batch,
            aggregate_id: *correlation_id,
            aggregate_version: version + 1,
            correlation_id: *correlation_id,
            causation_id: None,
            rule_id: None,
            rule_version: None,
            discipline: None,
            actor: actor.clone(),
            occurred_at: Utc::now(),
            payload,
        });
        sqlx::query("update batches set status = 'failed', version = $2, finished_at = now() where correlation_id = $1")
            .bind(correlation_id)
            .bind(version + 1)
            .execute(&mut *transaction)
            .await?;
    }
    append(&mut transaction, events).await?;
    transaction.commit().await?;
    Ok(stale
        .into_iter()
        .map(|(correlation_id, ..)| correlation_id)
        .collect())
}

/// What the chunks of an abandoned execution that landed did, per rule in the order the
/// rules ran and in all, as its executor would have reported them: each rule's last
/// `BATCH_PROGRESS` (or `RULE_EXECUTION_COMPLETED`) carries its counts so far. So a
/// retry of a waiting request, and the batch's readers, see what the log holds.
async fn landed(
    connection: &mut sqlx::PgConnection,
    correlation_id: Uuid,
) -> Result<(Vec<RuleReport>, Counts), sqlx::Error> {
    /// Rule, version, name, counts so far.
    type Row = (Uuid, Option<i32>, Option<String>, Option<serde_json::Value>);
    let rows: Vec<Row> = sqlx::query_as(
        "with rule_events as (
                 select rule_id, rule_version, event_type, position, payload
                 from workflow_events
                 where correlation_id = $1 and aggregate_type = 'batch' and rule_id is not null
                   and event_type in ('RULE_EXECUTION_STARTED', 'BATCH_PROGRESS',
                                      'RULE_EXECUTION_COMPLETED')
             ),
             started as (
                 select distinct on (rule_id) rule_id, rule_version, position, payload
                 from rule_events where event_type = 'RULE_EXECUTION_STARTED'
                 order by rule_id, position
             )
             select s.rule_id, s.rule_version, s.payload->>'name', last.payload->'counts'
             from started s
             left join lateral (
                 select payload from rule_events r
                 where r.rule_id = s.rule_id and r.event_type <> 'RULE_EXECUTION_STARTED'
                 order by r.position desc limit 1
             ) last on true
             order by s.position",
    )
    .bind(correlation_id)
    .fetch_all(connection)
    .await?;
    let mut totals = Counts::default();
    let rules = rows
        .into_iter()
        .map(|(rule_id, rule_version, name, counts)| {
            let counts: Counts = counts
                .and_then(|counts| serde_json::from_value(counts).ok())
                .unwrap_or_default();
            totals.merge(&counts);
            RuleReport {
                rule_id,
                rule_version: rule_version.unwrap_or_default(),
                name: name.unwrap_or_default(),
                counts,
            }
        })
        .collect();
    Ok((rules, totals))
}

/// Sweep every [`SWEEP`] until shutdown.
pub async fn sweep(pool: PgPool, stale_after: Duration, shutdown: CancellationToken) {
    loop {
        match fail_abandoned(&pool, stale_after).await {
            Ok(failed) if !failed.is_empty() => {
                tracing::warn!(?failed, "marked abandoned batches as failed")
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "abandoned-batch sweep failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(SWEEP) => {}
        }
    }
}
