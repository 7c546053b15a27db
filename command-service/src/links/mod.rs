//! Cables and relationships: the links between assets. Their SQL, and single changes
//! (`POST/PATCH/DELETE /cables`, `POST/DELETE /relationships`), each its own batch.

pub mod cable_store;
pub mod cables;
pub mod relationship_store;
pub mod relationships;

use crate::assets::commands::{CommandOutcome, EventSummary};
use crate::assets::input::FieldError;
use crate::store::batches::ChangeTarget;
use crate::store::AppendError;
use synapse_shared::domain::Change;
use uuid::Uuid;

/// Why a cable or relationship command was refused.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("the request is invalid")]
    Invalid(Vec<FieldError>),
    #[error("{kind} {id} does not exist")]
    NotFound { kind: &'static str, id: Uuid },
    #[error("asset {0} (an end of the link) does not exist")]
    EndMissing(Uuid),
    #[error("tag `{0}` is already used by another cable")]
    TagTaken(String),
    #[error("a {kind} relationship from {from} to {to} already exists")]
    RelationshipExists { kind: String, from: Uuid, to: Uuid },
    #[error("{id} is at version {actual}, not {expected}")]
    VersionConflict {
        id: Uuid,
        expected: i64,
        actual: i64,
    },
    #[error("the link was changed concurrently; read it again and retry")]
    Concurrent,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<AppendError> for LinkError {
    fn from(error: AppendError) -> Self {
        match error {
            AppendError::Database(error) => LinkError::Database(error),
            AppendError::VersionConflict { .. } | AppendError::BatchEnded(_) => {
                LinkError::Concurrent
            }
        }
    }
}

/// Both ends must be existing assets, and two different ones: a cable or relationship
/// from an asset to itself links nothing.
async fn check_ends(
    connection: &mut sqlx::PgConnection,
    from: Uuid,
    to: Uuid,
) -> Result<(), LinkError> {
    if from == to {
        return Err(LinkError::Invalid(vec![FieldError::new(
            "to_asset",
            "must be another asset than from_asset",
        )]));
    }
    let found: Vec<(Uuid,)> = sqlx::query_as("select id from assets where id = any($1) for share")
        .bind(vec![from, to])
        .fetch_all(connection)
        .await?;
    for end in [from, to] {
        if !found.iter().any(|(id,)| *id == end) {
            return Err(LinkError::EndMissing(end));
        }
    }
    Ok(())
}

/// Write the single-change batch of a link change and describe it to the client.
async fn commit(
    connection: &mut sqlx::PgConnection,
    actor: &str,
    target: ChangeTarget,
    version_before: i64,
    change: Change,
) -> Result<CommandOutcome, LinkError> {
    let events =
        crate::store::single::commit(connection, actor, target, version_before, change).await?;
    Ok(CommandOutcome {
        correlation_id: events.first().map(|event| event.correlation_id),
        asset: None,
        cable: None,
        relationship: None,
        changed: true,
        events: events.iter().map(EventSummary::from).collect(),
    })
}
