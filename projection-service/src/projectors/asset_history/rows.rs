//! What one event contributes to the asset-history tables, without touching a database.

use serde_json::Value;
use std::collections::HashMap;
use synapse_shared::{AggregateType, EventEnvelope};
use uuid::Uuid;

/// The asset an event is about: the aggregate itself for asset events, else the
/// `asset_id` a rule-outcome payload names, else none.
pub fn asset_id(event: &EventEnvelope) -> Option<Uuid> {
    if event.aggregate_type == AggregateType::Asset {
        return Some(event.aggregate_id);
    }
    event
        .payload
        .get("asset_id")
        .and_then(Value::as_str)
        .and_then(|id| id.parse().ok())
}

/// The assets at the ends of the cable or relationship a change event is about: every
/// `from_asset` and `to_asset` its `before` and `after` name, each once, in order; none
/// for any other event. Both sides count, so that a link whose end moved (a cable
/// updated with another `from_asset`) is in the history of its old end and its new
/// one, and a deletion (only a `before`) in those of the ends it had. An end that is not
/// a UUID names no asset and is passed over.
pub fn link_ends(event: &EventEnvelope) -> Vec<Uuid> {
    if !matches!(
        event.aggregate_type,
        AggregateType::Cable | AggregateType::Relationship
    ) {
        return Vec::new();
    }
    let Some((before, after)) = sides(event) else {
        return Vec::new();
    };
    let mut ends: Vec<Uuid> = [before, after]
        .into_iter()
        .flatten()
        .flat_map(|state| ["from_asset", "to_asset"].map(|end| state.get(end)))
        .flatten()
        .filter_map(|end| end.as_str()?.parse().ok())
        .collect();
    ends.sort_unstable();
    ends.dedup();
    ends
}

/// The `before` and `after` sides of a change event, borrowed from its payload (a
/// missing or null side is `None`); `None` for any other event. Read directly rather
/// than deserialising the payload: a change event may carry more fields than
/// `synapse_shared::domain::Change` knows, and copying whole states for every event of a batch is what the
/// projector would otherwise spend its time on.
pub fn sides(event: &EventEnvelope) -> Option<(Option<&Value>, Option<&Value>)> {
    if !event.event_type.is_state_change() {
        return None;
    }
    let side = |name: &str| event.payload.get(name).filter(|value| !value.is_null());
    Some((side("before"), side("after")))
}

/// The RFC 6902 patch of a change event as the JSON text stored in `rm_events.diff`;
/// `None` for any other event. The same patch as `Change::diff`, without copying the
/// states.
pub fn diff(event: &EventEnvelope) -> Option<String> {
    let (before, after) = sides(event)?;
    let patch = json_patch::diff(
        before.unwrap_or(&Value::Null),
        after.unwrap_or(&Value::Null),
    );
    // A patch is a list of plain operations; turning it into JSON cannot fail.
    serde_json::to_string(&patch).ok()
}

/// The current state of an asset, cable or relationship after an event.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateState {
    pub aggregate_id: Uuid,
    pub aggregate_type: AggregateType,
    /// `None` once deleted.
    pub state: Option<Value>,
    pub version: i64,
    pub last_position: i64,
}

/// Whether an aggregate type has a row in `rm_aggregates`.
fn has_current_state(aggregate_type: AggregateType) -> bool {
    matches!(
        aggregate_type,
        AggregateType::Asset | AggregateType::Cable | AggregateType::Relationship
    )
}

/// The newest state of each aggregate the events change. One statement cannot upsert
/// the same row twice, so a batch that changes an aggregate several times keeps only
/// its last change (events arrive in position order); only that state is copied.
pub fn latest_states(events: &[&EventEnvelope]) -> Vec<AggregateState> {
    let mut latest: HashMap<Uuid, &EventEnvelope> = HashMap::new();
    for event in events {
        if !has_current_state(event.aggregate_type) || !event.event_type.is_state_change() {
            continue;
        }
        latest
            .entry(event.aggregate_id)
            .and_modify(|current| {
                if event.position > current.position {
                    *current = event;
                }
            })
            .or_insert(event);
    }
    let mut states: Vec<AggregateState> = latest
        .into_values()
        .map(|event| AggregateState {
            aggregate_id: event.aggregate_id,
            aggregate_type: event.aggregate_type,
            state: sides(event).and_then(|(_, after)| after.cloned()),
            version: event.aggregate_version,
            last_position: event.position,
        })
        .collect();
    // A stable order keeps concurrent upserts of the same rows from deadlocking.
    states.sort_by_key(|state| state.aggregate_id);
    states
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;
    use synapse_shared::EventType;

    fn event(
        position: i64,
        event_type: EventType,
        aggregate_type: AggregateType,
        aggregate_id: Uuid,
        payload: Value,
    ) -> EventEnvelope {
        EventEnvelope {
            event_id: Uuid::now_v7(),
            position,
            event_type,
            aggregate_type,
            aggregate_id,
            aggregate_version: position,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            rule_id: None,
            rule_version: None,
            discipline: Some("ELECTRICAL".to_owned()),
            actor: "tester".to_owned(),
            occurred_at: Utc::now(),
            schema_version: 1,
            payload,
        }
    }

    #[test]
    fn a_rule_outcome_is_about_the_asset_its_payload_names() {
        let asset = Uuid::now_v7();
        let outcome = event(
            1,
            EventType::RuleSkipped,
            AggregateType::Batch,
            Uuid::now_v7(),
            json!({ "asset_id": asset.to_string(), "reason": "unchanged" }),
        );
        let batch_event = event(
            2,
            EventType::BatchStarted,
            AggregateType::Batch,
            Uuid::now_v7(),
            json!({}),
        );

        assert_eq!(asset_id(&outcome), Some(asset));
        assert_eq!(asset_id(&batch_event), None);
    }

    #[test]
    fn a_moved_cable_is_at_its_old_and_new_ends_and_only_links_have_ends() {
        let (old_box, new_box, transmitter) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let cable =
            |from: Uuid| json!({ "tag": "W-1", "from_asset": from, "to_asset": transmitter });
        let moved = event(
            1,
            EventType::CableUpdated,
            AggregateType::Cable,
            Uuid::now_v7(),
            json!({ "before": cable(old_box), "after": cable(new_box) }),
        );
        let undone = event(
            2,
            EventType::Rollback,
            AggregateType::Relationship,
            Uuid::now_v7(),
            json!({ "before": cable(old_box), "after": null, "rolled_back_correlation_id": Uuid::now_v7() }),
        );
        let asset_change = event(
            3,
            EventType::AssetUpdated,
            AggregateType::Asset,
            old_box,
            json!({ "before": cable(old_box), "after": cable(new_box) }),
        );
        let mut expected = vec![old_box, new_box, transmitter];
        expected.sort_unstable();

        assert_eq!(link_ends(&moved), expected);
        let mut deleted = vec![old_box, transmitter];
        deleted.sort_unstable();
        assert_eq!(link_ends(&undone), deleted);
        assert_eq!(link_ends(&asset_change), Vec::<Uuid>::new());
    }

    #[test]
    fn an_update_diff_lists_only_the_changed_fields() {
        let update = event(
            1,
            EventType::AssetUpdated,
            AggregateType::Asset,
            Uuid::now_v7(),
            json!({ "before": { "tag": "P-1", "properties": { "power_kw": 50 } },
                    "after": { "tag": "P-1", "properties": { "power_kw": 75 } } }),
        );

        let patch: Option<Value> = diff(&update).and_then(|text| serde_json::from_str(&text).ok());

        assert_eq!(
            patch,
            Some(json!([{ "op": "replace", "path": "/properties/power_kw", "value": 75 }]))
        );
    }

    #[test]
    fn events_that_are_not_changes_have_no_diff() {
        let started = event(
            1,
            EventType::BatchStarted,
            AggregateType::Batch,
            Uuid::now_v7(),
            json!({}),
        );

        assert_eq!(sides(&started), None);
        assert_eq!(diff(&started), None);
    }

    #[test]
    fn only_the_last_change_of_an_aggregate_in_a_batch_counts() {
        let pump = Uuid::now_v7();
        let created = event(
            1,
            EventType::AssetCreated,
            AggregateType::Asset,
            pump,
            json!({ "before": null, "after": { "tag": "P-1" } }),
        );
        let deleted = event(
            2,
            EventType::AssetDeleted,
            AggregateType::Asset,
            pump,
            json!({ "before": { "tag": "P-1" }, "after": null }),
        );
        let started = event(
            3,
            EventType::BatchStarted,
            AggregateType::Batch,
            Uuid::now_v7(),
            json!({}),
        );

        let states = latest_states(&[&created, &deleted, &started]);

        assert_eq!(
            states,
            [AggregateState {
                aggregate_id: pump,
                aggregate_type: AggregateType::Asset,
                state: None,
                version: 2,
                last_position: 2,
            }]
        );
    }
}
