//! Creating, changing and deleting one asset: each call is one batch
//! (`BATCH_STARTED`, the change, `BATCH_COMPLETED`) written in the caller's transaction.

use super::input::{
    as_stored_numbers, check_asset_property_names, check_code, check_merged_properties,
    check_properties, check_tag, check_text, AssetPatch, FieldError, NewAsset,
};
use super::store;
use crate::links::{cable_store, relationship_store};
use crate::store::batches::ChangeTarget;
use crate::store::single::{self, Consequences, Dependent};
use crate::store::AppendError;
use serde::Serialize;
use serde_json::{json, Map, Value};
use sqlx::PgConnection;
use synapse_shared::domain::{AssetState, CableState, Change, RelationshipState};
use synapse_shared::{AggregateType, EventEnvelope, EventType};
use uuid::Uuid;

/// Why an asset command was refused.
#[derive(Debug, thiserror::Error)]
pub enum AssetError {
    #[error("the request is invalid")]
    Invalid(Vec<FieldError>),
    #[error("asset {0} does not exist")]
    NotFound(Uuid),
    #[error("tag `{0}` is already used by another asset")]
    TagTaken(String),
    #[error("asset {id} is at version {actual}, not {expected}")]
    VersionConflict {
        id: Uuid,
        expected: i64,
        actual: i64,
    },
    #[error("the asset was changed concurrently")]
    Concurrent,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl From<AppendError> for AssetError {
    fn from(error: AppendError) -> Self {
        match error {
            AppendError::VersionConflict { .. } | AppendError::BatchEnded(_) => {
                AssetError::Concurrent
            }
            AppendError::Database(error) => AssetError::Database(error),
        }
    }
}

/// What a single change did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CommandOutcome {
    /// The batch of this change (absent when nothing changed).
    pub correlation_id: Option<Uuid>,
    /// The asset after the change; absent after a deletion.
    pub asset: Option<AssetState>,
    /// The cable after a cable change (its `id` for later changes); absent after a
    /// deletion and for other changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cable: Option<CableState>,
    /// The relationship after a relationship change; absent after a deletion and for
    /// other changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relationship: Option<RelationshipState>,
    /// Whether anything changed (a patch that sets what is already there does not).
    pub changed: bool,
    /// The events appended, in order.
    pub events: Vec<EventSummary>,
}

/// An appended event, as reported to the client.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventSummary {
    pub event_id: Uuid,
    pub position: i64,
    pub event_type: EventType,
}

impl From<&EventEnvelope> for EventSummary {
    fn from(event: &EventEnvelope) -> Self {
        Self {
            event_id: event.event_id,
            position: event.position,
            event_type: event.event_type,
        }
    }
}

/// Create an asset.
pub async fn create(
    connection: &mut PgConnection,
    actor: &str,
    mut input: NewAsset,
) -> Result<CommandOutcome, AssetError> {
    let mut errors = Vec::new();
    check_tag(&input.tag, &mut errors);
    let asset_type = check_code("asset_type", &input.asset_type, &mut errors);
    let discipline = check_code("discipline", &input.discipline, &mut errors);
    check_text("name", input.name.as_deref(), &mut errors);
    check_text("area", input.area.as_deref(), &mut errors);
    as_stored_numbers(&mut input.properties);
    check_properties(&input.properties, false, &mut errors);
    check_asset_property_names(&input.properties, &mut errors);
    if !errors.is_empty() {
        return Err(AssetError::Invalid(errors));
    }
    let asset = AssetState {
        id: Uuid::now_v7(),
        tag: input.tag,
        asset_type,
        discipline,
        name: input.name,
        area: input.area,
        properties: input.properties,
        version: 1,
    };
    store::insert(connection, &asset)
        .await
        .map_err(|error| tag_taken_or(error, &asset.tag))?;
    let change = Change {
        before: None,
        after: Some(state_json(&asset)),
    };
    let events = commit_single_change(
        connection,
        actor,
        EventType::AssetCreated,
        &asset,
        0,
        change,
        Consequences::default(),
    )
    .await?;
    Ok(outcome(Some(asset), events))
}

/// Apply a patch to an asset, refusing a stale `expected_version`.
pub async fn update(
    connection: &mut PgConnection,
    actor: &str,
    id: Uuid,
    mut patch: AssetPatch,
) -> Result<CommandOutcome, AssetError> {
    let mut errors = Vec::new();
    if let Some(tag) = &patch.tag {
        check_tag(tag, &mut errors);
    }
    let asset_type = patch
        .asset_type
        .as_deref()
        .map(|value| check_code("asset_type", value, &mut errors));
    let discipline = patch
        .discipline
        .as_deref()
        .map(|value| check_code("discipline", value, &mut errors));
    check_text(
        "name",
        patch.name.as_ref().and_then(Option::as_deref),
        &mut errors,
    );
    check_text(
        "area",
        patch.area.as_ref().and_then(Option::as_deref),
        &mut errors,
    );
    if let Some(properties) = &mut patch.properties {
        as_stored_numbers(properties);
        check_properties(properties, true, &mut errors);
        check_asset_property_names(properties, &mut errors);
    }
    if !errors.is_empty() {
        return Err(AssetError::Invalid(errors));
    }

    let before = load_checked(connection, id, patch.expected_version).await?;
    let mut after = before.clone();
    if let Some(tag) = patch.tag {
        after.tag = tag;
    }
    if let Some(asset_type) = asset_type {
        after.asset_type = asset_type;
    }
    if let Some(discipline) = discipline {
        after.discipline = discipline;
    }
    if let Some(name) = patch.name {
        after.name = name;
    }
    if let Some(area) = patch.area {
        after.area = area;
    }
    for (key, value) in patch.properties.unwrap_or_default() {
        if value.is_null() {
            after.properties.remove(&key);
        } else {
            after.properties.insert(key, value);
        }
    }
    check_merged_properties(Some(&before.properties), &after.properties, &mut errors);
    if !errors.is_empty() {
        return Err(AssetError::Invalid(errors));
    }
    if after == before {
        return Ok(CommandOutcome {
            correlation_id: None,
            asset: Some(before),
            cable: None,
            relationship: None,
            changed: false,
            events: Vec::new(),
        });
    }
    after.version = before.version + 1;
    store::update(connection, &after)
        .await
        .map_err(|error| tag_taken_or(error, &after.tag))?;
    let change = Change {
        before: Some(state_json(&before)),
        after: Some(state_json(&after)),
    };
    let events = commit_single_change(
        connection,
        actor,
        EventType::AssetUpdated,
        &after,
        before.version,
        change,
        Consequences::default(),
    )
    .await?;
    Ok(outcome(Some(after), events))
}

/// Delete an asset, refusing a stale `expected_version`.
pub async fn delete(
    connection: &mut PgConnection,
    actor: &str,
    id: Uuid,
    expected_version: Option<i64>,
) -> Result<CommandOutcome, AssetError> {
    let before = load_checked(connection, id, expected_version).await?;
    store::delete(connection, id).await?;
    // Its cables and relationships go with it, each with its own deletion event (and
    // snapshot, so that a rollback of the deletion brings them back): a link must not
    // name an asset that does not exist.
    let mut links = Vec::new();
    for cable in cable_store::delete_of_asset(connection, id).await? {
        links.push(Dependent {
            target: ChangeTarget {
                event_type: EventType::CableDeleted,
                aggregate_type: AggregateType::Cable,
                aggregate_id: cable.id,
                version: cable.version + 1,
                discipline: Some(cable.discipline.clone()),
            },
            version_before: cable.version,
            change: Change {
                before: Some(json!(cable)),
                after: None,
            },
        });
    }
    for relationship in relationship_store::delete_of_asset(connection, id).await? {
        links.push(Dependent {
            target: ChangeTarget {
                event_type: EventType::RelationshipDeleted,
                aggregate_type: AggregateType::Relationship,
                aggregate_id: relationship.id,
                version: relationship.version + 1,
                discipline: None,
            },
            version_before: relationship.version,
            change: Change {
                before: Some(json!(relationship)),
                after: None,
            },
        });
    }
    // Its findings go with it, each with a FINDING_RESOLVED (a rollback of the deletion
    // reopens them from those events).
    let closed = single::close_findings_of(connection, &[(id, before.tag.clone())]).await?;
    let change = Change {
        before: Some(state_json(&before)),
        after: None,
    };
    let mut deleted = before.clone();
    deleted.version = before.version + 1;
    let events = commit_single_change(
        connection,
        actor,
        EventType::AssetDeleted,
        &deleted,
        before.version,
        change,
        Consequences {
            changes: links,
            closed,
        },
    )
    .await?;
    Ok(outcome(None, events))
}

async fn load_checked(
    connection: &mut PgConnection,
    id: Uuid,
    expected_version: Option<i64>,
) -> Result<AssetState, AssetError> {
    let current = store::load_for_update(connection, id)
        .await?
        .ok_or(AssetError::NotFound(id))?;
    match expected_version {
        Some(expected) if expected != current.version => Err(AssetError::VersionConflict {
            id,
            expected,
            actual: current.version,
        }),
        _ => Ok(current),
    }
}

/// Write the single-change batch of an asset change. `asset` carries the version after
/// the change; `version_before` the one before.
async fn commit_single_change(
    connection: &mut PgConnection,
    actor: &str,
    event_type: EventType,
    asset: &AssetState,
    version_before: i64,
    change: Change,
    consequences: Consequences,
) -> Result<Vec<EventEnvelope>, AssetError> {
    let target = ChangeTarget {
        event_type,
        aggregate_type: AggregateType::Asset,
        aggregate_id: asset.id,
        version: asset.version,
        discipline: Some(asset.discipline.clone()),
    };
    Ok(single::commit_with(
        connection,
        actor,
        target,
        version_before,
        change,
        consequences,
    )
    .await?)
}

fn outcome(asset: Option<AssetState>, events: Vec<EventEnvelope>) -> CommandOutcome {
    CommandOutcome {
        correlation_id: events.first().map(|event| event.correlation_id),
        asset,
        cable: None,
        relationship: None,
        changed: true,
        events: events.iter().map(EventSummary::from).collect(),
    }
}

/// The asset as carried in event payloads.
pub fn state_json(asset: &AssetState) -> Value {
    into_state_json(asset.clone())
}

/// [`state_json`], moving the asset's text and properties in rather than copying them.
pub fn into_state_json(asset: AssetState) -> Value {
    let text = Value::String;
    let mut state = Map::with_capacity(8);
    state.insert("id".to_owned(), text(asset.id.to_string()));
    state.insert("tag".to_owned(), text(asset.tag));
    state.insert("asset_type".to_owned(), text(asset.asset_type));
    state.insert("discipline".to_owned(), text(asset.discipline));
    state.insert("name".to_owned(), asset.name.map_or(Value::Null, text));
    state.insert("area".to_owned(), asset.area.map_or(Value::Null, text));
    state.insert("properties".to_owned(), Value::Object(asset.properties));
    state.insert("version".to_owned(), Value::from(asset.version));
    Value::Object(state)
}

fn tag_taken_or(error: sqlx::Error, tag: &str) -> AssetError {
    let taken = error
        .as_database_error()
        .and_then(|database_error| database_error.constraint())
        == Some(store::TAG_CONSTRAINT);
    if taken {
        AssetError::TagTaken(tag.to_owned())
    } else {
        AssetError::Database(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_payload_state_has_every_field_of_the_asset_and_nothing_else() {
        let mut properties = Map::new();
        properties.insert("rated_power_kw".into(), json!(75.5));
        properties.insert("needs_vfd".into(), json!(true));
        let asset = AssetState {
            id: Uuid::now_v7(),
            tag: "P-101A-M01".into(),
            asset_type: "ELECTRIC_MOTOR".into(),
            discipline: "ELECTRICAL".into(),
            name: Some("Feed pump motor".into()),
            area: None,
            properties,
            version: 3,
        };
        let state = state_json(&asset);
        assert_eq!(state, serde_json::to_value(&asset).unwrap_or_default());
        assert_eq!(state["id"], json!(asset.id.to_string()));
        assert_eq!(state["area"], Value::Null);
        assert_eq!(state["properties"]["rated_power_kw"], json!(75.5));
        assert_eq!(state["version"], json!(3));
        let back: AssetState =
            serde_json::from_value(state).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(back, asset);
    }
}
