//! Creating, changing and deleting one cable, each its own batch.

use super::{cable_store, check_ends, LinkError};
use crate::assets::commands::CommandOutcome;
use crate::assets::input::{
    as_stored_numbers, check_code, check_merged_properties, check_properties, check_tag,
};
use crate::store::batches::ChangeTarget;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sqlx::PgConnection;
use synapse_shared::domain::{CableState, Change};
use synapse_shared::{AggregateType, EventType};
use uuid::Uuid;

/// Body of `POST /cables`.
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCable {
    pub tag: String,
    /// POWER, SIGNAL, CONTROL, COMMS, ...
    pub cable_type: String,
    pub discipline: String,
    pub from_asset: Uuid,
    pub to_asset: Uuid,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
}

/// Body of `PATCH /cables/{id}`; in `properties` a `null` removes a key.
#[derive(Debug, Clone, Default, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CablePatch {
    pub expected_version: Option<i64>,
    pub cable_type: Option<String>,
    pub discipline: Option<String>,
    pub from_asset: Option<Uuid>,
    pub to_asset: Option<Uuid>,
    #[schema(value_type = Option<Object>)]
    pub properties: Option<Map<String, Value>>,
}

pub async fn create(
    connection: &mut PgConnection,
    actor: &str,
    mut input: NewCable,
) -> Result<CommandOutcome, LinkError> {
    let mut errors = Vec::new();
    check_tag(&input.tag, &mut errors);
    let cable_type = check_code("cable_type", &input.cable_type, &mut errors);
    let discipline = check_code("discipline", &input.discipline, &mut errors);
    as_stored_numbers(&mut input.properties);
    check_properties(&input.properties, false, &mut errors);
    if !errors.is_empty() {
        return Err(LinkError::Invalid(errors));
    }
    check_ends(connection, input.from_asset, input.to_asset).await?;
    let cable = CableState {
        id: Uuid::now_v7(),
        tag: input.tag,
        from_asset: input.from_asset,
        to_asset: input.to_asset,
        cable_type,
        discipline,
        properties: input.properties,
        version: 1,
    };
    write(connection, &cable).await?;
    let change = Change {
        before: None,
        after: Some(json!(cable)),
    };
    commit(
        connection,
        actor,
        EventType::CableCreated,
        &cable,
        0,
        change,
    )
    .await
}

pub async fn update(
    connection: &mut PgConnection,
    actor: &str,
    id: Uuid,
    mut patch: CablePatch,
) -> Result<CommandOutcome, LinkError> {
    let mut errors = Vec::new();
    let cable_type = patch
        .cable_type
        .as_deref()
        .map(|value| check_code("cable_type", value, &mut errors));
    let discipline = patch
        .discipline
        .as_deref()
        .map(|value| check_code("discipline", value, &mut errors));
    if let Some(properties) = &mut patch.properties {
        as_stored_numbers(properties);
        check_properties(properties, true, &mut errors);
    }
    if !errors.is_empty() {
        return Err(LinkError::Invalid(errors));
    }
    let before = load_checked(connection, id, patch.expected_version).await?;
    let mut after = before.clone();
    after.cable_type = cable_type.unwrap_or(after.cable_type);
    after.discipline = discipline.unwrap_or(after.discipline);
    after.from_asset = patch.from_asset.unwrap_or(after.from_asset);
    after.to_asset = patch.to_asset.unwrap_or(after.to_asset);
    for (key, value) in patch.properties.unwrap_or_default() {
        if value.is_null() {
            after.properties.remove(&key);
        } else {
            after.properties.insert(key, value);
        }
    }
    check_merged_properties(Some(&before.properties), &after.properties, &mut errors);
    if !errors.is_empty() {
        return Err(LinkError::Invalid(errors));
    }
    if after == before {
        return Ok(CommandOutcome {
            correlation_id: None,
            asset: None,
            cable: Some(before),
            relationship: None,
            changed: false,
            events: Vec::new(),
        });
    }
    check_ends(connection, after.from_asset, after.to_asset).await?;
    after.version = before.version + 1;
    write(connection, &after).await?;
    let change = Change {
        before: Some(json!(before)),
        after: Some(json!(after)),
    };
    commit(
        connection,
        actor,
        EventType::CableUpdated,
        &after,
        before.version,
        change,
    )
    .await
}

pub async fn delete(
    connection: &mut PgConnection,
    actor: &str,
    id: Uuid,
    expected_version: Option<i64>,
) -> Result<CommandOutcome, LinkError> {
    let before = load_checked(connection, id, expected_version).await?;
    cable_store::delete(connection, id).await?;
    let mut deleted = before.clone();
    deleted.version = before.version + 1;
    let change = Change {
        before: Some(json!(before)),
        after: None,
    };
    commit(
        connection,
        actor,
        EventType::CableDeleted,
        &deleted,
        before.version,
        change,
    )
    .await
}

async fn load_checked(
    connection: &mut PgConnection,
    id: Uuid,
    expected: Option<i64>,
) -> Result<CableState, LinkError> {
    let current = cable_store::load_for_update(connection, id)
        .await?
        .ok_or(LinkError::NotFound { kind: "cable", id })?;
    match expected {
        Some(expected) if expected != current.version => Err(LinkError::VersionConflict {
            id,
            expected,
            actual: current.version,
        }),
        _ => Ok(current),
    }
}

async fn write(connection: &mut PgConnection, cable: &CableState) -> Result<(), LinkError> {
    cable_store::upsert(connection, std::slice::from_ref(cable))
        .await
        .map_err(|error| {
            let taken = error.as_database_error().and_then(|e| e.constraint())
                == Some(cable_store::TAG_CONSTRAINT);
            if taken {
                LinkError::TagTaken(cable.tag.clone())
            } else {
                LinkError::Database(error)
            }
        })
}

async fn commit(
    connection: &mut PgConnection,
    actor: &str,
    event_type: EventType,
    cable: &CableState,
    version_before: i64,
    change: Change,
) -> Result<CommandOutcome, LinkError> {
    let target = ChangeTarget {
        event_type,
        aggregate_type: AggregateType::Cable,
        aggregate_id: cable.id,
        version: cable.version,
        discipline: Some(cable.discipline.clone()),
    };
    let mut outcome = super::commit(connection, actor, target, version_before, change).await?;
    outcome.cable = (event_type != EventType::CableDeleted).then(|| cable.clone());
    Ok(outcome)
}
