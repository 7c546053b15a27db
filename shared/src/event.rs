//! The event envelope and the closed set of event types.
//!
//! The envelope is stored in `workflow_events` and published to JetStream in exactly the
//! same JSON shape: a downstream consumer and the projection service read one format.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// Version of the envelope and payload layout. Bumped when a payload changes shape.
pub const SCHEMA_VERSION: i16 = 1;

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $wire:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire)] $variant,)+
        }

        // By hand: utoipa's derive does not see a `serde(rename)` whose name comes from a
        // macro argument, and documented the Rust variant names instead of the wire names.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($wire,)+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stable wire name, as stored in Postgres and used in NATS subjects.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire,)+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    other => Err(UnknownName { kind: stringify!($name), name: other.to_owned() }),
                }
            }
        }
    };
}

/// A name that is not one of an enum's wire names.
#[derive(Debug, thiserror::Error)]
#[error("unknown {kind} `{name}`")]
pub struct UnknownName {
    pub kind: &'static str,
    pub name: String,
}

wire_enum! {
    /// What happened. Past tense; the wire names are a public contract (NATS subjects).
    EventType {
        AssetCreated => "ASSET_CREATED",
        AssetUpdated => "ASSET_UPDATED",
        AssetDeleted => "ASSET_DELETED",
        CableCreated => "CABLE_CREATED",
        CableUpdated => "CABLE_UPDATED",
        CableDeleted => "CABLE_DELETED",
        RelationshipCreated => "RELATIONSHIP_CREATED",
        RelationshipDeleted => "RELATIONSHIP_DELETED",
        /// A rule version was defined (created or edited).
        RuleDefined => "RULE_DEFINED",
        RuleExecutionStarted => "RULE_EXECUTION_STARTED",
        RuleExecuted => "RULE_EXECUTED",
        RuleSkipped => "RULE_SKIPPED",
        RuleError => "RULE_ERROR",
        RuleExecutionCompleted => "RULE_EXECUTION_COMPLETED",
        /// A rule's `flag` action found something worth an engineer's attention.
        FindingRaised => "FINDING_RAISED",
        /// A finding no longer holds: its rule ran on the asset again and no longer
        /// flags it (the condition is false now, or the message differs).
        FindingResolved => "FINDING_RESOLVED",
        BatchStarted => "BATCH_STARTED",
        /// A chunk of a batch committed: carries `done` and `total`.
        BatchProgress => "BATCH_PROGRESS",
        BatchCompleted => "BATCH_COMPLETED",
        /// A batch ended in error or its executor died; it can still be rolled back.
        BatchFailed => "BATCH_FAILED",
        BatchRolledBack => "BATCH_ROLLED_BACK",
        CsvImported => "CSV_IMPORTED",
        Rollback => "ROLLBACK",
    }
}

wire_enum! {
    /// The kind of thing an event belongs to; its id is the event's `aggregate_id`.
    AggregateType {
        Asset => "asset",
        Cable => "cable",
        Relationship => "relationship",
        Rule => "rule",
        /// Batch-level events (`BATCH_*`, `RULE_EXECUTION_*`, per-asset rule outcomes)
        /// belong to the batch whose id is the `correlation_id`.
        Batch => "batch",
    }
}

impl EventType {
    /// Events that change an asset, cable or relationship and carry a before/after diff.
    pub fn is_state_change(self) -> bool {
        use EventType::*;
        matches!(
            self,
            AssetCreated
                | AssetUpdated
                | AssetDeleted
                | CableCreated
                | CableUpdated
                | CableDeleted
                | RelationshipCreated
                | RelationshipDeleted
                | Rollback
        )
    }
}

/// An event as stored in the log and published on JetStream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventEnvelope {
    /// UUIDv7, unique; also the JetStream `Nats-Msg-Id`.
    pub event_id: Uuid,
    /// Global order in the log. Gaps are possible (aborted transactions), reordering is not.
    pub position: i64,
    pub event_type: EventType,
    pub aggregate_type: AggregateType,
    pub aggregate_id: Uuid,
    /// The aggregate's version after this event; unique per aggregate.
    pub aggregate_version: i64,
    /// The batch this event belongs to.
    pub correlation_id: Uuid,
    /// The event or request that caused this one.
    pub causation_id: Option<Uuid>,
    pub rule_id: Option<Uuid>,
    pub rule_version: Option<i32>,
    pub discipline: Option<String>,
    /// Who caused it: the authenticated caller.
    pub actor: String,
    pub occurred_at: DateTime<Utc>,
    pub schema_version: i16,
    /// Event-specific data; change events carry `before` and `after`.
    #[schema(value_type = Object)]
    pub payload: Value,
}

/// An event about to be appended: everything but the position the log assigns.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub event_type: EventType,
    pub aggregate_type: AggregateType,
    pub aggregate_id: Uuid,
    pub aggregate_version: i64,
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub rule_id: Option<Uuid>,
    pub rule_version: Option<i32>,
    pub discipline: Option<String>,
    pub actor: String,
    pub occurred_at: DateTime<Utc>,
    pub payload: Value,
}

impl NewEvent {
    /// The envelope this event becomes once the log has given it `position`.
    pub fn into_envelope(self, position: i64) -> EventEnvelope {
        EventEnvelope {
            event_id: self.event_id,
            position,
            event_type: self.event_type,
            aggregate_type: self.aggregate_type,
            aggregate_id: self.aggregate_id,
            aggregate_version: self.aggregate_version,
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            rule_id: self.rule_id,
            rule_version: self.rule_version,
            discipline: self.discipline,
            actor: self.actor,
            occurred_at: self.occurred_at,
            schema_version: SCHEMA_VERSION,
            payload: self.payload,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_round_trips_through_its_wire_name() {
        for event_type in EventType::ALL {
            let wire = event_type.as_str();
            assert_eq!(wire.parse::<EventType>().unwrap(), *event_type);
            let json = serde_json::to_string(event_type).unwrap();
            assert_eq!(json, format!("\"{wire}\""));
        }
    }

    #[test]
    fn the_openapi_schema_lists_the_wire_names() {
        use utoipa::PartialSchema;
        let schema = serde_json::to_value(EventType::schema()).unwrap();
        let wire: Vec<&str> = EventType::ALL.iter().map(|kind| kind.as_str()).collect();
        assert_eq!(schema["type"], "string");
        assert_eq!(schema["enum"], serde_json::json!(wire));
        let aggregates = serde_json::to_value(AggregateType::schema()).unwrap();
        assert_eq!(
            aggregates["enum"],
            serde_json::json!(["asset", "cable", "relationship", "rule", "batch"])
        );
    }

    #[test]
    fn an_unknown_event_type_is_refused_with_its_name() {
        let error = "ASSET_EXPLODED".parse::<EventType>().unwrap_err();
        assert_eq!(error.to_string(), "unknown EventType `ASSET_EXPLODED`");
    }
}
