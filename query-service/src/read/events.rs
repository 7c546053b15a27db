//! `rm_events`: one row per event, with the columns readers filter on.

use super::scan::{self, Driver, Key};
use super::time_index;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;
use sqlx::{PgPool, Postgres, QueryBuilder};
use synapse_shared::event::{UnknownName, SCHEMA_VERSION};
use synapse_shared::{EventEnvelope, EventType};
use uuid::Uuid;

/// The columns every event query selects, in [`TimelineEntry`] order.
const COLUMNS: &str = "position, event_id, event_type, aggregate_type, aggregate_id, asset_id, \
     correlation_id, causation_id, rule_id, rule_version, discipline, actor, occurred_at, \
     payload, diff, rolled_back, rolled_back_by, aggregate_version, schema_version";

/// The payload field of a `BATCH_ROLLED_BACK` event that names the batch it undid, as
/// the command service's rollback writes it (the event itself belongs to the rollback's
/// own batch).
pub const ROLLBACK_TARGET: &str = "target_correlation_id";

/// One event as the timeline and histories show it: the envelope's fields, the asset it
/// concerns, its diff and whether a rollback undid it.
///
/// `payload` and `diff` stay the JSON text Postgres sent: a page goes out without
/// building and re-serialising a value tree per event, which was most of the query
/// service's CPU under load. [`TimelineEntry::payload_value`] parses it where needed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TimelineEntry {
    /// Global order in the event log; the keyset of pagination.
    pub position: i64,
    pub event_id: Uuid,
    /// Wire name, e.g. `ASSET_UPDATED`.
    pub event_type: String,
    /// `asset`, `cable`, `relationship`, `rule` or `batch`.
    pub aggregate_type: String,
    pub aggregate_id: Uuid,
    /// The asset this event concerns (the aggregate itself for asset events, the target
    /// asset for rule outcomes).
    pub asset_id: Option<Uuid>,
    /// The batch the event belongs to.
    pub correlation_id: Uuid,
    pub causation_id: Option<Uuid>,
    pub rule_id: Option<Uuid>,
    pub rule_version: Option<i32>,
    pub discipline: Option<String>,
    /// Who caused the event.
    pub actor: String,
    pub occurred_at: DateTime<Utc>,
    #[schema(value_type = Object)]
    #[sqlx(json)]
    pub payload: Box<RawValue>,
    /// RFC 6902 patch from `before` to `after`, for change events.
    #[schema(value_type = Option<Vec<Object>>)]
    #[sqlx(json(nullable))]
    pub diff: Option<Box<RawValue>>,
    /// Whether a rollback has undone this event (history itself is never rewritten).
    pub rolled_back: bool,
    /// The correlation id of the rollback batch that undid it.
    pub rolled_back_by: Option<Uuid>,
    /// The aggregate's version after the event, as in the envelope; null for events
    /// projected before the read model kept it (until it is rebuilt).
    pub aggregate_version: Option<i64>,
    /// The envelope's schema version; null like `aggregate_version`.
    pub schema_version: Option<i16>,
}

/// Why a row cannot be replayed as an envelope.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error(transparent)]
    UnknownName(#[from] UnknownName),
    #[error("the payload is not JSON: {0}")]
    Payload(#[from] serde_json::Error),
}

impl TimelineEntry {
    /// The payload parsed. Postgres only stores valid JSON in a `jsonb` column, so an
    /// error here is a decoding failure like any other.
    pub fn payload_value(&self) -> Result<Value, sqlx::Error> {
        serde_json::from_str(self.payload.get()).map_err(|error| sqlx::Error::Decode(error.into()))
    }

    /// The envelope a live-feed client receives for this row, so replayed and live
    /// events look alike.
    ///
    /// Rows projected before `rm_events` kept `aggregate_version` and `schema_version`
    /// (read migration 2003) have neither: their version is taken from the state the
    /// change event carries (`after.version`, else `before.version`, else 0) and their
    /// schema version is the current one.
    pub fn to_envelope(&self) -> Result<EventEnvelope, EnvelopeError> {
        let payload: Value = serde_json::from_str(self.payload.get())?;
        let version_of = |side: &str| payload.get(side)?.get("version")?.as_i64();
        Ok(EventEnvelope {
            event_id: self.event_id,
            position: self.position,
            event_type: self.event_type.parse()?,
            aggregate_type: self.aggregate_type.parse()?,
            aggregate_id: self.aggregate_id,
            aggregate_version: self.aggregate_version.unwrap_or_else(|| {
                version_of("after")
                    .or_else(|| version_of("before"))
                    .unwrap_or(0)
            }),
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            rule_id: self.rule_id,
            rule_version: self.rule_version,
            discipline: self.discipline.clone(),
            actor: self.actor.clone(),
            occurred_at: self.occurred_at,
            schema_version: self.schema_version.unwrap_or(SCHEMA_VERSION),
            payload,
        })
    }
}

/// How an asset filter matches an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetMatch {
    /// `asset_id` column equals the asset (timeline `asset_id` filter).
    Concerns(Uuid),
    /// The asset is the event's `asset_id` or its aggregate (asset history, live-feed
    /// replay). The projection fills `asset_id` from the aggregate of asset events and
    /// from `payload.asset_id` otherwise, so this selects the events a live
    /// subscription's asset filter matches on the envelope.
    ConcernsOrIs(Uuid),
}

/// Conditions on `rm_events`; every field is optional and they combine with `and`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    pub asset: Option<AssetMatch>,
    pub aggregate_id: Option<Uuid>,
    pub correlation_id: Option<Uuid>,
    /// With `correlation_id`, also keep the `BATCH_ROLLED_BACK` of every rollback of that
    /// batch (its payload names the batch under [`ROLLBACK_TARGET`]). The live feed's
    /// batch filter means this (SPEC §9: a batch's subscribers hear that it was rolled
    /// back); the timeline's, the batch's own events, does not.
    pub with_rollbacks_of_batch: bool,
    /// With `asset` = [`AssetMatch::ConcernsOrIs`], also keep the change events of every
    /// cable and relationship the asset is an end of, as the projection lists them in
    /// `rm_asset_links` (either end, before or after the change): the asset's history
    /// (SPEC §7: every change to an asset, cable or relationship). The live feed's asset
    /// filter, matched on the envelope alone, does not.
    pub with_links_of_asset: bool,
    /// Wire names of the event types to keep; empty keeps every type.
    pub event_types: Vec<String>,
    pub rule_id: Option<Uuid>,
    pub discipline: Option<String>,
    pub actor: Option<String>,
    /// Inclusive lower bound of `occurred_at`.
    pub from: Option<DateTime<Utc>>,
    /// Inclusive upper bound of `occurred_at`.
    pub to: Option<DateTime<Utc>>,
    /// Keep events a rollback has undone.
    pub include_rolled_back: bool,
}

impl EventFilter {
    /// A filter that keeps everything (rolled-back events included).
    pub fn everything() -> Self {
        Self {
            include_rolled_back: true,
            ..Self::default()
        }
    }

    /// The batch whose rollbacks' `BATCH_ROLLED_BACK` the filter keeps besides its own
    /// events, when it keeps that event type at all.
    fn rolled_back_batch(&self) -> Option<Uuid> {
        let rolled_back = EventType::BatchRolledBack.as_str();
        let typed_out = !self.event_types.is_empty()
            && !self.event_types.iter().any(|name| name == rolled_back);
        self.correlation_id
            .filter(|_| self.with_rollbacks_of_batch && !typed_out)
    }

    /// The asset whose links' change events the filter keeps besides its own events.
    fn linked_asset(&self) -> Option<Uuid> {
        match self.asset {
            Some(AssetMatch::ConcernsOrIs(asset)) if self.with_links_of_asset => Some(asset),
            _ => None,
        }
    }

    /// The column and value of `driver`, when its index leads with that one column.
    fn key(&self, driver: Driver) -> Option<(&'static str, Key)> {
        match driver {
            Driver::Asset => match self.asset {
                Some(AssetMatch::Concerns(asset)) => Some(("asset_id", Key::Uuid(asset))),
                _ => None,
            },
            Driver::AssetOrAggregate => None,
            Driver::Aggregate => Some(("aggregate_id", Key::Uuid(self.aggregate_id?))),
            Driver::Correlation => Some(("correlation_id", Key::Uuid(self.correlation_id?))),
            Driver::Rule => Some(("rule_id", Key::Uuid(self.rule_id?))),
            Driver::Actor => Some(("actor", Key::Text(self.actor.clone()?))),
            Driver::Discipline => Some(("discipline", Key::Text(self.discipline.clone()?))),
        }
    }

    /// `and ...` for every condition but the event types, which a branch of
    /// [`page`] reads one at a time, and but the driver's column when `bounded` (the
    /// branch bounds it with [`scan::bound`]).
    fn push_conditions(&self, query: &mut QueryBuilder<'_, Postgres>, bounded: Option<Driver>) {
        let compare = |column: Driver| bounded != Some(column);
        match self.asset {
            Some(AssetMatch::Concerns(asset)) if compare(Driver::Asset) => {
                query.push(" and asset_id = ").push_bind(asset);
            }
            Some(AssetMatch::Concerns(_)) => {}
            Some(AssetMatch::ConcernsOrIs(asset)) => {
                query
                    .push(" and (asset_id = ")
                    .push_bind(asset)
                    .push(" or aggregate_id = ")
                    .push_bind(asset)
                    .push(")");
            }
            None => {}
        }
        if let Some(aggregate_id) = self.aggregate_id.filter(|_| compare(Driver::Aggregate)) {
            query.push(" and aggregate_id = ").push_bind(aggregate_id);
        }
        if let Some(correlation_id) = self.correlation_id.filter(|_| compare(Driver::Correlation)) {
            query
                .push(" and correlation_id = ")
                .push_bind(correlation_id);
        }
        if let Some(rule_id) = self.rule_id.filter(|_| compare(Driver::Rule)) {
            query.push(" and rule_id = ").push_bind(rule_id);
        }
        if let Some(discipline) = self
            .discipline
            .as_ref()
            .filter(|_| compare(Driver::Discipline))
        {
            query
                .push(" and discipline = ")
                .push_bind(discipline.clone());
        }
        if let Some(actor) = self.actor.as_ref().filter(|_| compare(Driver::Actor)) {
            query.push(" and actor = ").push_bind(actor.clone());
        }
        if let Some(from) = self.from {
            query.push(" and occurred_at >= ").push_bind(from);
        }
        if let Some(to) = self.to {
            query.push(" and occurred_at <= ").push_bind(to);
        }
        if !self.include_rolled_back {
            query.push(" and not rolled_back");
        }
    }
}

/// Up to `limit` events matching `filter` with a position above `after`, ascending.
/// The keyset (`position > after`) makes every page an index range scan, however deep;
/// [`scan`] says which index and which ranges.
pub async fn page(
    pool: &PgPool,
    filter: &EventFilter,
    after: i64,
    limit: i64,
) -> Result<Vec<TimelineEntry>, sqlx::Error> {
    let ranges = match (filter.from, filter.to) {
        (None, None) => None,
        (from, to) => Some(time_index::summary(pool).await?.ranges(from, to)),
    };
    let driver = Driver::of(filter);
    let mut query = QueryBuilder::new("select ");
    query.push(COLUMNS).push(" from (");
    let mut first = true;
    for segment in scan::segments(after, ranges) {
        for event_type in scan::type_branches(filter) {
            if !first {
                query.push(" union all ");
            }
            first = false;
            query
                .push("(select ")
                .push(COLUMNS)
                .push(" from rm_events where ");
            push_range(&mut query, "position", segment);
            // The leading keys of the index the branch reads (see `scan::order`).
            let mut keys = Vec::new();
            let driver_key = driver.and_then(|driver| filter.key(driver));
            keys.extend(driver_key.clone());
            if let Some(event_type) = event_type {
                if scan::typed_index(driver) {
                    keys.push(("event_type", Key::Text(event_type.to_owned())));
                } else {
                    query
                        .push(" and event_type = ")
                        .push_bind(event_type.to_owned());
                }
            }
            filter.push_conditions(&mut query, driver.filter(|_| driver_key.is_some()));
            scan::bound(&mut query, &keys);
            query
                .push(" order by ")
                .push(scan::order(driver, event_type.is_some()))
                .push(" limit ")
                .push_bind(limit)
                .push(")");
        }
        if let Some(batch) = filter.rolled_back_batch() {
            query.push(" union all ");
            push_rollbacks_of(&mut query, filter, batch, segment, limit);
        }
        if let Some(asset) = filter.linked_asset() {
            query.push(" union all ");
            push_links_of(&mut query, filter, asset, segment, limit);
        }
    }
    query
        .push(") as page order by position limit ")
        .push_bind(limit);
    query.build_query_as().fetch_all(pool).await
}

/// The branch of [`page`] with the `BATCH_ROLLED_BACK` events of rollbacks of `batch`,
/// and the filter's other conditions but the batch's (the event is the rollback's own).
///
/// It reads `rm_events_type_idx`, bounded like a typed branch ([`scan::bound`]), and
/// tests each entry's payload: one entry per rollback in the segment, and rollbacks are
/// rare beside the events they undo, so no index on the payload is needed. The payload
/// is compared as text, as the live feed compares it, so that a replaying and a live
/// client agree. A rollback never targets its own batch; `correlation_id <> batch` says
/// so, so that no row can come from both branches.
fn push_rollbacks_of(
    query: &mut QueryBuilder<'_, Postgres>,
    filter: &EventFilter,
    batch: Uuid,
    segment: scan::Segment,
    limit: i64,
) {
    let rolled_back = EventType::BatchRolledBack.as_str().to_owned();
    query
        .push("(select ")
        .push(COLUMNS)
        .push(" from rm_events where ");
    push_range(query, "position", segment);
    scan::bound(query, &[("event_type", Key::Text(rolled_back))]);
    query
        .push(format!(" and payload ->> '{ROLLBACK_TARGET}' = "))
        .push_bind(batch.to_string())
        .push(" and correlation_id <> ")
        .push_bind(batch);
    filter.push_conditions(query, Some(Driver::Correlation));
    query
        .push(" order by ")
        .push(scan::order(None, true))
        .push(" limit ")
        .push_bind(limit)
        .push(")");
}

/// The branch of [`page`] with the change events of the cables and relationships
/// `asset` is an end of, and the filter's other conditions.
///
/// It walks the asset's `rm_asset_links` entries in position order from the keyset
/// (its primary key) and fetches each event by position: a handful of links per asset,
/// each one primary-key probe of `rm_events`, and the walk stops once the page is full.
/// The event's own conditions sit in a lateral subquery, where unqualified columns are
/// `rm_events`' own. Link events are about a cable or relationship and name no asset
/// outside `before` and `after`, so the other branch never holds them; the subquery
/// says so (`aggregate_id`, `asset_id` not the asset), so that no row can come from
/// both.
fn push_links_of(
    query: &mut QueryBuilder<'_, Postgres>,
    filter: &EventFilter,
    asset: Uuid,
    segment: scan::Segment,
    limit: i64,
) {
    query
        .push("(select e.* from rm_asset_links l cross join lateral (select ")
        .push(COLUMNS)
        .push(" from rm_events where position = l.position and aggregate_id <> ")
        .push_bind(asset)
        .push(" and asset_id is distinct from ")
        .push_bind(asset);
    if !filter.event_types.is_empty() {
        query
            .push(" and event_type = any(")
            .push_bind(filter.event_types.clone())
            .push(")");
    }
    let others = EventFilter {
        asset: None,
        ..filter.clone()
    };
    others.push_conditions(query, None);
    query
        .push(") as e where l.asset_id = ")
        .push_bind(asset)
        .push(" and ");
    push_range(query, "l.position", segment);
    query
        .push(" order by l.position limit ")
        .push_bind(limit)
        .push(")");
}

/// `column > above`, and `column <= upto` when the segment ends: a branch's positions.
fn push_range(query: &mut QueryBuilder<'_, Postgres>, column: &str, segment: scan::Segment) {
    query.push(format!("{column} > ")).push_bind(segment.above);
    if let Some(upto) = segment.upto {
        query.push(format!(" and {column} <= ")).push_bind(upto);
    }
}

/// Whether `id` is an asset's: an event of the asset aggregate has it (a cable's,
/// a relationship's or a batch's id is not, though events have it too).
pub async fn is_asset(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "select exists(select 1 from rm_events where aggregate_id = $1 and aggregate_type = 'asset')",
    )
    .bind(id)
    .fetch_one(pool)
    .await
}

/// The last change event of an aggregate that occurred at or before `as_of`: its
/// payload's `after` is the aggregate's state at that time.
pub async fn last_change_as_of(
    pool: &PgPool,
    aggregate_id: Uuid,
    change_types: &[&str],
    as_of: DateTime<Utc>,
) -> Result<Option<TimelineEntry>, sqlx::Error> {
    let change_types: Vec<String> = change_types.iter().map(|t| (*t).to_owned()).collect();
    let mut query = QueryBuilder::new("select ");
    query
        .push(COLUMNS)
        .push(" from rm_events where aggregate_id = ")
        .push_bind(aggregate_id)
        .push(" and event_type = any(")
        .push_bind(change_types)
        .push(") and occurred_at <= ")
        .push_bind(as_of)
        .push(" order by position desc limit 1");
    query.build_query_as().fetch_optional(pool).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(event_type: &str, payload: Value) -> TimelineEntry {
        let payload = serde_json::value::to_raw_value(&payload).unwrap();
        TimelineEntry {
            position: 42,
            event_id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            aggregate_type: "asset".to_owned(),
            aggregate_id: Uuid::now_v7(),
            asset_id: None,
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            rule_id: None,
            rule_version: None,
            discipline: Some("ELECTRICAL".to_owned()),
            actor: "alice".to_owned(),
            occurred_at: Utc::now(),
            payload,
            diff: None,
            rolled_back: false,
            rolled_back_by: None,
            aggregate_version: None,
            schema_version: None,
        }
    }

    #[test]
    fn a_replayed_row_becomes_the_envelope_the_live_feed_would_have_sent() {
        let row = entry(
            "ASSET_UPDATED",
            json!({"before": {"version": 1}, "after": {"version": 2}}),
        );
        let envelope = row.to_envelope().unwrap();
        assert_eq!(envelope.position, 42);
        assert_eq!(envelope.event_type, synapse_shared::EventType::AssetUpdated);
        assert_eq!(envelope.aggregate_version, 2);
        assert_eq!(envelope.payload, row.payload_value().unwrap());
        let deletion = entry(
            "ASSET_DELETED",
            json!({"before": {"version": 3}, "after": null}),
        );
        assert_eq!(deletion.to_envelope().unwrap().aggregate_version, 3);
        // A row that kept the envelope's versions gives them back as they were.
        let definition = TimelineEntry {
            aggregate_version: Some(4),
            schema_version: Some(1),
            ..entry("RULE_DEFINED", json!({"version": 4}))
        };
        let envelope = definition.to_envelope().unwrap();
        assert_eq!(
            (envelope.aggregate_version, envelope.schema_version),
            (4, 1)
        );
    }

    #[test]
    fn only_a_batch_filter_asking_for_them_and_keeping_their_type_reads_its_rollbacks() {
        let batch = Uuid::now_v7();
        let live = EventFilter {
            correlation_id: Some(batch),
            with_rollbacks_of_batch: true,
            ..EventFilter::everything()
        };
        assert_eq!(live.rolled_back_batch(), Some(batch));
        let timeline = EventFilter {
            with_rollbacks_of_batch: false,
            ..live.clone()
        };
        assert_eq!(timeline.rolled_back_batch(), None);
        let no_batch = EventFilter {
            correlation_id: None,
            ..live.clone()
        };
        assert_eq!(no_batch.rolled_back_batch(), None);
        let other_types = EventFilter {
            event_types: vec!["BATCH_STARTED".to_owned()],
            ..live.clone()
        };
        assert_eq!(other_types.rolled_back_batch(), None);
        let with_the_type = EventFilter {
            event_types: vec!["BATCH_STARTED".to_owned(), "BATCH_ROLLED_BACK".to_owned()],
            ..live
        };
        assert_eq!(with_the_type.rolled_back_batch(), Some(batch));
    }

    #[test]
    fn only_a_history_asking_for_them_reads_the_links_of_its_asset() {
        let asset = Uuid::now_v7();
        for (matched, links, linked) in [
            (AssetMatch::ConcernsOrIs(asset), true, Some(asset)),
            (AssetMatch::ConcernsOrIs(asset), false, None),
            (AssetMatch::Concerns(asset), true, None),
        ] {
            let filter = EventFilter {
                asset: Some(matched),
                with_links_of_asset: links,
                ..EventFilter::everything()
            };
            assert_eq!(filter.linked_asset(), linked, "{matched:?}, links {links}");
        }
    }

    #[test]
    fn a_row_of_an_unknown_event_type_is_reported_not_guessed() {
        assert!(entry("ASSET_EXPLODED", json!({})).to_envelope().is_err());
    }
}
