//! The WebSocket wire format (SPEC §9).
//!
//! Client → server: `{"type":"subscribe","filters":{...},"after":<position>}`.
//! Server → client: `SUBSCRIBED`, then events as
//! `{"type":<kind>,"position":n,"event":<EventEnvelope>}`, plus `LAGGED` and
//! `ERROR_PROTOCOL`.

use crate::read::disciplines;
use crate::read::events::{AssetMatch, EventFilter, ROLLBACK_TARGET};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use synapse_shared::{EventEnvelope, EventType};
use uuid::Uuid;

/// The protocol message kind of an event: per batch a client sees
/// `STARTED → RULE_START → ACTION (per asset) → PROGRESS → RULE_COMPLETE → COMPLETED`,
/// plus `ERROR` and `ROLLED_BACK`. Every other event is an `ACTION`.
pub fn message_kind(event_type: EventType) -> &'static str {
    use EventType::*;
    match event_type {
        BatchStarted => "STARTED",
        RuleExecutionStarted => "RULE_START",
        BatchProgress => "PROGRESS",
        RuleExecutionCompleted => "RULE_COMPLETE",
        BatchCompleted => "COMPLETED",
        RuleError | BatchFailed => "ERROR",
        BatchRolledBack => "ROLLED_BACK",
        AssetCreated | AssetUpdated | AssetDeleted | CableCreated | CableUpdated | CableDeleted
        | RelationshipCreated | RelationshipDeleted | RuleDefined | RuleExecuted | RuleSkipped
        | FindingRaised | FindingResolved | CsvImported | Rollback => "ACTION",
    }
}

/// What a client may send.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum ClientMessage {
    /// Start (or replace) the session's subscription.
    #[serde(rename = "subscribe")]
    Subscribe {
        #[serde(default)]
        filters: Filters,
        /// Resume: everything after this position, then live events.
        after: Option<i64>,
    },
}

/// A subscription's filters; all optional, combined with `and`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filters {
    /// The batch: its own events, and the `BATCH_ROLLED_BACK` (`ROLLED_BACK`) of every
    /// rollback of it, so its subscribers hear that it was undone. A rollback is a batch
    /// like any other: rolling it back tells its subscribers, not those of the batch it
    /// undid (that batch's changes are back, and it stays rolled back).
    pub correlation_id: Option<Uuid>,
    /// The event's aggregate or the asset its payload names (`payload.asset_id`).
    pub asset_id: Option<Uuid>,
    pub rule_id: Option<Uuid>,
    /// A discipline code in any case, held as the read models hold it (upper-cased),
    /// as the HTTP filters take it.
    #[serde(default, deserialize_with = "discipline_code")]
    pub discipline: Option<String>,
}

/// Deserialize the `discipline` filter through [`disciplines::code`]. A blank one, or
/// any other that is not a code, is refused: no event has it, so the subscription
/// would silently receive nothing.
fn discipline_code<'de, D>(deserializer: D) -> Result<Option<String>, D::Error>
where
    D: Deserializer<'de>,
{
    Option::<String>::deserialize(deserializer)?
        .as_deref()
        .map(disciplines::code)
        .transpose()
        .map_err(D::Error::custom)
}

impl Filters {
    /// Whether a live event matches, on envelope fields only.
    pub fn matches(&self, event: &EventEnvelope) -> bool {
        let asset_matches = |asset: Uuid| {
            event.aggregate_id == asset
                || event
                    .payload
                    .get("asset_id")
                    .and_then(|value| value.as_str())
                    .and_then(|value| value.parse::<Uuid>().ok())
                    == Some(asset)
        };
        self.correlation_id
            .is_none_or(|id| event.correlation_id == id || rolls_back(event, id))
            && self.rule_id.is_none_or(|id| event.rule_id == Some(id))
            && self
                .discipline
                .as_deref()
                .is_none_or(|discipline| event.discipline.as_deref() == Some(discipline))
            && self.asset_id.is_none_or(asset_matches)
    }

    /// The same filters as a read-model query, for replaying what a client missed.
    pub fn to_event_filter(&self) -> EventFilter {
        EventFilter {
            asset: self.asset_id.map(AssetMatch::ConcernsOrIs),
            correlation_id: self.correlation_id,
            with_rollbacks_of_batch: true,
            rule_id: self.rule_id,
            discipline: self.discipline.clone(),
            ..EventFilter::everything()
        }
    }
}

/// Whether `event` is the `BATCH_ROLLED_BACK` of a rollback of `batch`. The target is
/// compared as the text the command service writes (a UUID's lowercase hyphenated
/// form), as the replay's query compares it, so that a live and a replaying client get
/// the same messages.
fn rolls_back(event: &EventEnvelope, batch: Uuid) -> bool {
    event.event_type == EventType::BatchRolledBack
        && event.payload.get(ROLLBACK_TARGET).and_then(Value::as_str)
            == Some(batch.to_string().as_str())
}

/// One event as sent to clients.
#[derive(Debug, Serialize)]
pub struct EventMessage<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub position: i64,
    pub event: &'a EventEnvelope,
}

impl<'a> EventMessage<'a> {
    pub fn new(event: &'a EventEnvelope) -> Self {
        Self {
            kind: message_kind(event.event_type),
            position: event.position,
            event,
        }
    }
}

/// Control messages from server to client.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type")]
pub enum ControlMessage {
    /// The subscription is registered: every event published from now on that matches
    /// will be delivered (and with `after`, everything since that position first).
    #[serde(rename = "SUBSCRIBED")]
    Subscribed { after: Option<i64> },
    /// The client fell too far behind and is being disconnected; subscribing again
    /// with `after = resume_after` continues without a gap.
    #[serde(rename = "LAGGED")]
    Lagged { resume_after: i64 },
    /// The client sent something that is not a valid message; the session goes on.
    #[serde(rename = "ERROR_PROTOCOL")]
    ProtocolError { detail: String },
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;
    use synapse_shared::AggregateType;

    fn event(event_type: EventType) -> EventEnvelope {
        EventEnvelope {
            event_id: Uuid::now_v7(),
            position: 7,
            event_type,
            aggregate_type: AggregateType::Batch,
            aggregate_id: Uuid::now_v7(),
            aggregate_version: 1,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            rule_id: None,
            rule_version: None,
            discipline: Some("ELECTRICAL".to_owned()),
            actor: "tester".to_owned(),
            occurred_at: Utc::now(),
            schema_version: 1,
            payload: json!({}),
        }
    }

    #[test]
    fn every_event_type_maps_to_its_protocol_message_kind() {
        use EventType::*;
        let expected = [
            (BatchStarted, "STARTED"),
            (RuleExecutionStarted, "RULE_START"),
            (BatchProgress, "PROGRESS"),
            (RuleExecutionCompleted, "RULE_COMPLETE"),
            (BatchCompleted, "COMPLETED"),
            (RuleError, "ERROR"),
            (BatchFailed, "ERROR"),
            (BatchRolledBack, "ROLLED_BACK"),
        ];
        for event_type in EventType::ALL {
            let want = expected
                .iter()
                .find(|(t, _)| t == event_type)
                .map_or("ACTION", |(_, kind)| *kind);
            assert_eq!(message_kind(*event_type), want, "{event_type}");
        }
    }

    #[test]
    fn a_subscribe_message_parses_and_unknown_fields_are_refused() {
        let message: ClientMessage = serde_json::from_value(json!({
            "type": "subscribe", "filters": {"discipline": "ELECTRICAL"}, "after": 12
        }))
        .unwrap();
        assert_eq!(
            message,
            ClientMessage::Subscribe {
                filters: Filters {
                    discipline: Some("ELECTRICAL".to_owned()),
                    ..Filters::default()
                },
                after: Some(12)
            }
        );
        let unknown_top = json!({"type": "subscribe", "filter": {}});
        assert!(serde_json::from_value::<ClientMessage>(unknown_top).is_err());
        let unknown_filter = json!({"type": "subscribe", "filters": {"tag": "P-1"}});
        assert!(serde_json::from_value::<ClientMessage>(unknown_filter).is_err());
        let unknown_type = json!({"type": "unsubscribe"});
        assert!(serde_json::from_value::<ClientMessage>(unknown_type).is_err());
    }

    #[test]
    fn a_discipline_filter_is_upper_cased_and_a_blank_one_is_refused() {
        let subscribe = |discipline: Value| {
            serde_json::from_value::<ClientMessage>(
                json!({"type": "subscribe", "filters": {"discipline": discipline}}),
            )
        };
        let lower_case = subscribe(json!("electrical")).ok();
        let expected = ClientMessage::Subscribe {
            filters: Filters {
                discipline: Some("ELECTRICAL".to_owned()),
                ..Filters::default()
            },
            after: None,
        };
        assert_eq!(lower_case, Some(expected));
        assert!(subscribe(Value::Null).is_ok());
        for blank in ["", " \t "] {
            let refusal = subscribe(json!(blank)).err().map(|e| e.to_string());
            assert!(
                refusal.is_some_and(|refusal| refusal.contains("`discipline`")),
                "{blank:?}"
            );
        }
    }

    #[test]
    fn an_asset_filter_matches_the_aggregate_or_the_payloads_asset() {
        let asset = Uuid::now_v7();
        let filters = Filters {
            asset_id: Some(asset),
            ..Filters::default()
        };
        let mut about_the_asset = event(EventType::AssetUpdated);
        about_the_asset.aggregate_id = asset;
        let mut rule_outcome = event(EventType::RuleExecuted);
        rule_outcome.payload = json!({"asset_id": asset.to_string()});
        assert!(filters.matches(&about_the_asset));
        assert!(filters.matches(&rule_outcome));
        assert!(!filters.matches(&event(EventType::RuleExecuted)));
    }

    #[test]
    fn a_batch_filter_keeps_the_rolled_back_of_a_rollback_of_the_batch_and_no_other() {
        let batch = Uuid::now_v7();
        let filters = Filters {
            correlation_id: Some(batch),
            ..Filters::default()
        };
        let rolled_back = |target: Uuid| {
            let mut event = event(EventType::BatchRolledBack);
            event.payload = json!({"target_correlation_id": target, "mode": "strict"});
            event
        };
        let of_the_batch = rolled_back(batch);
        let mut other_type_naming_it = rolled_back(batch);
        other_type_naming_it.event_type = EventType::BatchStarted;
        assert!(filters.matches(&of_the_batch));
        assert!(!filters.matches(&rolled_back(Uuid::now_v7())));
        assert!(!filters.matches(&other_type_naming_it));
        // Rolling the rollback back tells the rollback's subscribers, not the batch's.
        let rollback = Filters {
            correlation_id: Some(of_the_batch.correlation_id),
            ..Filters::default()
        };
        let redo = rolled_back(of_the_batch.correlation_id);
        assert!(rollback.matches(&of_the_batch) && rollback.matches(&redo));
        assert!(!filters.matches(&redo));
        // The other filters still apply.
        let with_discipline = Filters {
            discipline: Some("PROCESS".to_owned()),
            ..filters.clone()
        };
        assert!(!with_discipline.matches(&of_the_batch));
        assert!(filters.to_event_filter().with_rollbacks_of_batch);
    }

    #[test]
    fn filters_combine_with_and() {
        let started = event(EventType::BatchStarted);
        let same_batch_other_discipline = Filters {
            correlation_id: Some(started.correlation_id),
            discipline: Some("PROCESS".to_owned()),
            ..Filters::default()
        };
        assert!(!same_batch_other_discipline.matches(&started));
        let same_batch = Filters {
            correlation_id: Some(started.correlation_id),
            ..Filters::default()
        };
        assert!(same_batch.matches(&started));
    }
}
