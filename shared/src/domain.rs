//! The state of the things engineers manage, as carried in change-event payloads.
//!
//! Change events (`ASSET_*`, `CABLE_*`, `RELATIONSHIP_*`, `ROLLBACK`) carry a
//! [`Change`] payload: the whole state before and after, so a reader can show a diff
//! without consulting anything else, and a fold of the log rebuilds current state.

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
