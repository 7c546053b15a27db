//! Cables and relationships: the links between assets. Their SQL, and single changes
//! (`POST/PATCH/DELETE /cables`, `POST/DELETE /relationships`), each its own batch.

pub mod cable_store;
pub mod cables;
pub mod relationship_store;
pub mod relationships;

use crate::assets::input::FieldError;
use crate::store::AppendError;
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
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<AppendError> for LinkError {
    fn from(error: AppendError) -> Self {
        match error {
            AppendError::Database(error) => LinkError::Database(error),
            AppendError::VersionConflict { aggregate_id } => LinkError::VersionConflict {
                id: aggregate_id.unwrap_or_default(),
                expected: 0,
                actual: 0,
            },
        }
    }
}

/// Both ends must be existing assets.
async fn check_ends(
    connection: &mut sqlx::PgConnection,
    from: Uuid,
    to: Uuid,
) -> Result<(), LinkError> {
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
