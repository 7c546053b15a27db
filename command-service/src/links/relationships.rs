//! Creating and deleting one relationship, each its own batch.

use super::{check_ends, relationship_store, LinkError};
use crate::assets::commands::CommandOutcome;
use crate::assets::input::{as_stored_numbers, check_code, check_properties};
use crate::store::batches::ChangeTarget;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sqlx::PgConnection;
use synapse_shared::domain::{Change, RelationshipState};
use synapse_shared::{AggregateType, EventType};
use uuid::Uuid;

/// Body of `POST /relationships`.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRelationship {
    /// FEEDS, CONTROLS, LOCATED_IN, CONNECTED_TO, ...
    pub kind: String,
    pub from_asset: Uuid,
    pub to_asset: Uuid,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
}

pub async fn create(
    connection: &mut PgConnection,
    actor: &str,
    mut input: NewRelationship,
) -> Result<CommandOutcome, LinkError> {
    let mut errors = Vec::new();
    let kind = check_code("kind", &input.kind, &mut errors);
    as_stored_numbers(&mut input.properties);
    check_properties(&input.properties, false, &mut errors);
    if !errors.is_empty() {
        return Err(LinkError::Invalid(errors));
    }
    check_ends(connection, input.from_asset, input.to_asset).await?;
    let relationship = RelationshipState {
        id: Uuid::now_v7(),
        kind,
        from_asset: input.from_asset,
        to_asset: input.to_asset,
        properties: input.properties,
        version: 1,
    };
    relationship_store::insert(connection, std::slice::from_ref(&relationship))
        .await
        .map_err(|error| {
            let exists = error.as_database_error().and_then(|e| e.constraint())
                == Some(relationship_store::KEY_CONSTRAINT);
            if exists {
                LinkError::RelationshipExists {
                    kind: relationship.kind.clone(),
                    from: relationship.from_asset,
                    to: relationship.to_asset,
                }
            } else {
                LinkError::Database(error)
            }
        })?;
    let change = Change {
        before: None,
        after: Some(json!(relationship)),
    };
    commit(
        connection,
        actor,
        EventType::RelationshipCreated,
        &relationship,
        0,
        change,
    )
    .await
}

/// Delete relationship `id`; with `expected`, only at that version (a 409 otherwise).
pub async fn delete(
    connection: &mut PgConnection,
    actor: &str,
    id: Uuid,
    expected: Option<i64>,
) -> Result<CommandOutcome, LinkError> {
    let before = relationship_store::load_for_update(connection, id)
        .await?
        .ok_or(LinkError::NotFound {
            kind: "relationship",
            id,
        })?;
    if let Some(expected) = expected.filter(|expected| *expected != before.version) {
        return Err(LinkError::VersionConflict {
            id,
            expected,
            actual: before.version,
        });
    }
    relationship_store::delete(connection, id).await?;
    let mut deleted = before.clone();
    deleted.version = before.version + 1;
    let change = Change {
        before: Some(json!(before)),
        after: None,
    };
    commit(
        connection,
        actor,
        EventType::RelationshipDeleted,
        &deleted,
        before.version,
        change,
    )
    .await
}

async fn commit(
    connection: &mut PgConnection,
    actor: &str,
    event_type: EventType,
    relationship: &RelationshipState,
    version_before: i64,
    change: Change,
) -> Result<CommandOutcome, LinkError> {
    let target = ChangeTarget {
        event_type,
        aggregate_type: AggregateType::Relationship,
        aggregate_id: relationship.id,
        version: relationship.version,
        discipline: None,
    };
    let mut outcome = super::commit(connection, actor, target, version_before, change).await?;
    outcome.relationship =
        (event_type != EventType::RelationshipDeleted).then(|| relationship.clone());
    Ok(outcome)
}
