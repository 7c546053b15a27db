//! The state of the things engineers manage, as carried in change-event payloads.
//!
//! Change events (`ASSET_*`, `CABLE_*`, `RELATIONSHIP_*`, `ROLLBACK`) carry a
//! [`Change`] payload: the whole state before and after, so a reader can show a diff
//! without consulting anything else, and a fold of the log rebuilds current state.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// A plant asset: a motor, pump, transmitter, MCC, junction box...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AssetState {
    pub id: Uuid,
    /// Unique plant tag, e.g. `P-101A`.
    pub tag: String,
    pub asset_type: String,
    pub discipline: String,
    pub name: Option<String>,
    pub area: Option<String>,
    /// Typed attributes: numbers, strings and booleans.
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
    pub version: i64,
}

/// A cable between two assets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CableState {
    pub id: Uuid,
    pub tag: String,
    pub from_asset: Uuid,
    pub to_asset: Uuid,
    /// POWER, SIGNAL, CONTROL, COMMS, ...
    pub cable_type: String,
    pub discipline: String,
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
    pub version: i64,
}

/// A typed link between two assets: FEEDS, CONTROLS, LOCATED_IN, CONNECTED_TO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RelationshipState {
    pub id: Uuid,
    pub kind: String,
    pub from_asset: Uuid,
    pub to_asset: Uuid,
    #[schema(value_type = Object)]
    pub properties: Map<String, Value>,
    pub version: i64,
}

/// Payload of `FINDING_RAISED` and `FINDING_RESOLVED`. A finding is the event's
/// `rule_id` with `asset_id` and `message`: a rule raises one message once per asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingPayload {
    pub asset_id: Uuid,
    /// The asset's tag when the event was written (events written before it was added
    /// have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// `info`, `warning` or `error`.
    pub severity: String,
    pub message: String,
    /// The batch that first raised the finding; absent where that is the event's own
    /// batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raised_in: Option<Uuid>,
    /// The rule version that raised the finding, where that is not the event's own
    /// (a resolution by a later version): a rollback of the resolution reopens it as
    /// raised by this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raised_by_rule_version: Option<i32>,
    /// On the events of a rollback: the batch it undid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_correlation_id: Option<Uuid>,
    /// When the finding was first raised, where that is not the event's own time: on a
    /// resolution, and on a rollback's reopening (which keeps the first raise's time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raised_at: Option<DateTime<Utc>>,
}

impl FindingPayload {
    /// The batch that first raised the finding, for an event of batch `correlation_id`.
    pub fn raised_in_or(&self, correlation_id: Uuid) -> Uuid {
        self.raised_in.unwrap_or(correlation_id)
    }
}

/// Payload of every change event: the aggregate's state before and after.
/// `before` is absent for a creation, `after` for a deletion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Change {
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub after: Option<Value>,
}

impl Change {
    /// The event payload `{"before": ..., "after": ...}` (absent sides are `null`),
    /// moving the two states in rather than copying them.
    pub fn into_payload(self) -> Value {
        let mut payload = Map::with_capacity(2);
        payload.insert("before".to_owned(), self.before.unwrap_or(Value::Null));
        payload.insert("after".to_owned(), self.after.unwrap_or(Value::Null));
        Value::Object(payload)
    }

    /// The RFC 6902 patch that turns `before` into `after` (absent sides are `null`).
    pub fn diff(&self) -> json_patch::Patch {
        json_patch::diff(
            self.before.as_ref().unwrap_or(&Value::Null),
            self.after.as_ref().unwrap_or(&Value::Null),
        )
    }
}

/// Why `NONE` is no discipline: the subject token of events without one (every batch
/// event), so a discipline of that name would share their subjects.
pub const RESERVED_DISCIPLINE: &str =
    "`NONE` is reserved: subjects name events without a discipline with it";

/// Whether `value` is the discipline code that subjects reserve (in any case).
pub fn is_reserved_discipline(value: &str) -> bool {
    value.eq_ignore_ascii_case(crate::subject::NO_DISCIPLINE)
}

/// What is wrong with `value` as the code in `field` (a discipline, an asset or cable
/// type, a relationship kind), if anything: not a code ([`CODE_FORMAT`]), or, as a
/// discipline, the one subjects reserve ([`RESERVED_DISCIPLINE`]).
pub fn code_error(field: &str, value: &str) -> Option<&'static str> {
    if !is_code(value) {
        Some(CODE_FORMAT)
    } else if field == "discipline" && is_reserved_discipline(value) {
        Some(RESERVED_DISCIPLINE)
    } else {
        None
    }
}

/// What [`is_code`] asks of a code, as an error message.
pub const CODE_FORMAT: &str = "must be 1 to 64 letters, digits, `_` or `-`";

/// Whether `value` is a code such as a discipline, asset type, cable type or
/// relationship kind (the command side stores codes upper-cased).
pub fn is_code(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_finding_payload_names_only_the_fields_it_has_and_reads_older_ones() {
        let asset_id = Uuid::from_u128(1);
        let raised = FindingPayload {
            asset_id,
            tag: Some("P-1".into()),
            severity: "warning".into(),
            message: "P-1: no driver".into(),
            raised_in: None,
            raised_by_rule_version: None,
            rolled_back_correlation_id: None,
            raised_at: None,
        };
        assert_eq!(
            serde_json::to_value(&raised).unwrap(),
            json!({"asset_id": asset_id, "tag": "P-1", "severity": "warning",
                   "message": "P-1: no driver"})
        );
        // Events written before `tag` and `raised_in` existed.
        let older: FindingPayload = serde_json::from_value(
            json!({"asset_id": asset_id, "severity": "info", "message": "m"}),
        )
        .unwrap();
        assert_eq!(older.tag, None);
        assert_eq!(older.raised_in_or(Uuid::from_u128(7)), Uuid::from_u128(7));
    }
}
