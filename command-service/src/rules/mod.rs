//! Rules: versioned, immutable definitions with CEL conditions and desired-state
//! actions. Defining a rule compiles it first; a rule that does not compile is never
//! stored.

pub mod cost;
pub mod definition;
pub mod expression;
pub mod store;
pub mod template;

use chrono::Utc;
use definition::{compile, CompiledRule, RuleInput};
use expression::ExpressionError;
use sqlx::PgConnection;
use std::time::Duration;
use store::StoredRule;
use synapse_shared::{AggregateType, EventType, NewEvent};
use uuid::Uuid;

/// Why a rule definition was refused.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("the rule does not compile")]
    Invalid(Vec<ExpressionError>),
    #[error("rule {0} does not exist")]
    NotFound(Uuid),
    #[error("rule {id} is at version {current}, not {expected}")]
    VersionConflict {
        id: Uuid,
        expected: i64,
        current: i32,
    },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<crate::store::AppendError> for RuleError {
    fn from(error: crate::store::AppendError) -> Self {
        match error {
            crate::store::AppendError::Database(error) => RuleError::Database(error),
            // Two edits racing for the same version: the row lock prevents it, so
            // this only surfaces if that invariant breaks.
            crate::store::AppendError::VersionConflict { aggregate_id } => {
                RuleError::NotFound(aggregate_id.unwrap_or_default())
            }
            // Rules are not written in a batch of their own.
            crate::store::AppendError::BatchEnded(batch) => RuleError::NotFound(batch),
        }
    }
}

/// Define a new rule (version 1).
pub async fn define(
    connection: &mut PgConnection,
    actor: &str,
    input: RuleInput,
) -> Result<StoredRule, RuleError> {
    store_version(connection, actor, Uuid::now_v7(), 1, input).await
}

/// Store a new version of an existing rule; a definition equal to the latest version's
/// is that version (no new one, no event): saving a rule twice changes nothing. With
/// `expected`, the latest version must be that one (an edit of what the editor read).
pub async fn revise(
    connection: &mut PgConnection,
    actor: &str,
    id: Uuid,
    input: RuleInput,
    expected: Option<i64>,
) -> Result<StoredRule, RuleError> {
    let current = store::latest_for_update(connection, id)
        .await?
        .ok_or(RuleError::NotFound(id))?;
    if let Some(expected) = expected.filter(|expected| *expected != i64::from(current.version)) {
        return Err(RuleError::VersionConflict {
            id,
            expected,
            current: current.version,
        });
    }
    let input = input.normalized();
    // A version stored before definitions were normalized compares as normalized too.
    if current.definition.0.clone().normalized() == input {
        return Ok(current);
    }
    store_version(connection, actor, id, current.version + 1, input).await
}

/// How long checking a rule (compiling it and trying it on a sample asset) may take.
/// An expression that takes longer on one asset would take that long on every asset a
/// run reads: refused, with a message that says so.
const CHECK_TIME: Duration = Duration::from_secs(2);

/// Compile `input` off the async workers (a trial run of an expression is CPU work of
/// no fixed bound: on a worker it held up every other request), within [`CHECK_TIME`].
/// A check that overruns is abandoned: its thread finishes on its own.
async fn check(id: Uuid, version: i32, input: &RuleInput) -> Result<(), RuleError> {
    let owned = input.clone();
    let checking = tokio::task::spawn_blocking(move || compile(id, version, &owned).map(drop));
    match tokio::time::timeout(CHECK_TIME, checking).await {
        Ok(Ok(checked)) => checked.map_err(RuleError::Invalid),
        Ok(Err(failed)) => match failed.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(cancelled) => Err(RuleError::Invalid(vec![too_slow(format!(
                "its check was cancelled ({cancelled})"
            ))])),
        },
        Err(_) => Err(RuleError::Invalid(vec![too_slow(format!(
            "trying it on a sample asset took more than {} s, and a run would take that \
             for every asset it reads: make its expressions cheaper",
            CHECK_TIME.as_secs()
        ))])),
    }
}

fn too_slow(message: String) -> ExpressionError {
    ExpressionError {
        field: "rule".to_owned(),
        message,
        line: None,
        column: None,
    }
}

async fn store_version(
    connection: &mut PgConnection,
    actor: &str,
    id: Uuid,
    version: i32,
    input: RuleInput,
) -> Result<StoredRule, RuleError> {
    let input = input.normalized();
    check(id, version, &input).await?;
    // The row and the event tell one time, so the log folds into the row.
    let defined_at = Utc::now();
    let stored = store::insert(connection, id, version, &input, actor, defined_at).await?;
    let event = NewEvent {
        event_id: Uuid::now_v7(),
        event_type: EventType::RuleDefined,
        aggregate_type: AggregateType::Rule,
        aggregate_id: id,
        aggregate_version: i64::from(version),
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        rule_id: Some(id),
        rule_version: Some(version),
        discipline: Some(stored.discipline.clone()),
        actor: actor.to_owned(),
        occurred_at: defined_at,
        payload: serde_json::json!({"version": version, "definition": input}),
    };
    crate::store::append(connection, vec![event]).await?;
    Ok(stored)
}

/// Compile a stored rule version. Stored versions compiled when defined; failing now
/// means the expression engine changed underneath, which is reported per rule.
pub fn compiled(stored: &StoredRule) -> Result<CompiledRule, Vec<ExpressionError>> {
    compile(stored.id, stored.version, &stored.definition.0)
}
