//! Upsert the parsed rows by tag as one `csv_import` batch, in the caller's transaction.
//!
//! Write order follows the store's invariant: batch row, snapshots, state, and the
//! events last (the append lock is held from the first append until commit; only the
//! batch's own row is recorded again before the last two events).

use super::parse::ImportRow;
use super::store;
use super::{ErrorList, ImportError, RowError};
use crate::assets::commands::state_json;
use crate::assets::input::check_merged_properties;
use crate::store::batches::{self, Batch, BatchKind, BatchStatus, ChangeTarget};
use crate::store::{append, AppendError};
use serde::Serialize;
use serde_json::json;
use sqlx::PgConnection;
use std::collections::HashMap;
use synapse_shared::domain::{AssetState, Change};
use synapse_shared::{AggregateType, EventType, NewEvent};
use uuid::Uuid;

/// Change events per append statement: one statement per slice keeps each bounded
/// (100,000 rows would otherwise be one 14-array statement of ~100 MB), and so does the
/// memory the events take.
const EVENT_SLICE: usize = 5_000;

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ImportOutcome {
    /// The batch of the import (also when it changed nothing: then the batch records
    /// the import, with no asset events).
    pub correlation_id: Uuid,
    pub created: usize,
    pub updated: usize,
    pub unchanged: usize,
    /// Data rows in the file.
    pub rows: usize,
    /// Events appended (batch events included).
    pub events: usize,
}

impl From<AppendError> for ImportError {
    fn from(error: AppendError) -> Self {
        match error {
            AppendError::VersionConflict { .. } | AppendError::BatchEnded(_) => {
                ImportError::Concurrent
            }
            AppendError::Database(error) => ImportError::Database(error),
        }
    }
}

/// One asset the import changes: `before` is `None` for a new asset.
struct AssetChange {
    before: Option<AssetState>,
    after: AssetState,
}

/// Create or update an asset per row. `file_name` is recorded in `CSV_IMPORTED`.
pub async fn apply(
    connection: &mut PgConnection,
    actor: &str,
    rows: Vec<ImportRow>,
    file_name: Option<&str>,
) -> Result<ImportOutcome, ImportError> {
    let row_count = rows.len();
    let tags: Vec<&str> = rows.iter().map(|row| row.tag.as_str()).collect();
    let mut existing: HashMap<String, AssetState> = store::lock_by_tags(connection, &tags)
        .await?
        .into_iter()
        .map(|asset| (asset.tag.clone(), asset))
        .collect();
    let mut changes = Vec::new();
    let mut unchanged = 0;
    let mut too_many = ErrorList::default();
    for row in rows {
        match existing.remove(&row.tag) {
            Some(before) => match merged(&before, row, &mut too_many) {
                Some(after) => changes.push(AssetChange {
                    before: Some(before),
                    after,
                }),
                None => unchanged += 1,
            },
            None => changes.push(AssetChange {
                before: None,
                after: created(row),
            }),
        }
    }
    if !too_many.is_empty() {
        return Err(ImportError::invalid(too_many, None));
    }
    let created = changes.iter().filter(|c| c.before.is_none()).count();
    let mut batch = Batch::new(BatchKind::CsvImport, actor);
    let mut outcome = ImportOutcome {
        correlation_id: batch.correlation_id,
        created,
        updated: changes.len() - created,
        unchanged,
        rows: row_count,
        events: 0,
    };
    let request = json!({"file_name": file_name, "rows": row_count});
    batches::open(connection, &batch, Some(&request)).await?;
    // Snapshots first: they read the pre-batch states from the rows about to change.
    let ids: Vec<Uuid> = changes.iter().map(|change| change.after.id).collect();
    store::snapshot_all(connection, batch.correlation_id, &ids).await?;
    let (new, changed): (Vec<&AssetChange>, Vec<&AssetChange>) =
        changes.iter().partition(|change| change.before.is_none());
    let mut new: Vec<&AssetState> = new.iter().map(|change| &change.after).collect();
    // Inserting in tag order, like the locks taken above, means two imports that both
    // create the same tags wait for each other in one order and never deadlock.
    new.sort_unstable_by(|a, b| a.tag.cmp(&b.tag));
    store::insert_all(connection, &new).await?;
    let changed: Vec<&AssetState> = changed.iter().map(|change| &change.after).collect();
    store::update_all(connection, &changed).await?;

    let started = batch.event(
        EventType::BatchStarted,
        json!({"kind": batch.kind.as_str(), "rows": row_count}),
    );
    let cause = Some(started.event_id);
    let mut appended = append(connection, vec![started]).await?.len();
    // The change events are built a slice at a time and dropped once appended: built
    // all at once, 100,000 before/after payloads were most of an import's memory.
    for slice in changes.chunks(EVENT_SLICE) {
        let events = slice
            .iter()
            .map(|change| change_event(&batch, change, cause))
            .collect();
        appended += append(connection, events).await?.len();
    }
    let imported = batch.event(
        EventType::CsvImported,
        json!({
            "created": outcome.created,
            "updated": outcome.updated,
            "unchanged": outcome.unchanged,
            "rows": row_count,
            "file_name": file_name,
        }),
    );
    let completed = batch.event(
        EventType::BatchCompleted,
        json!({"kind": batch.kind.as_str(), "changed": changes.len()}),
    );
    batches::record(connection, &batch, BatchStatus::Completed).await?;
    appended += append(connection, vec![imported, completed]).await?.len();
    outcome.events = appended;
    Ok(outcome)
}

/// The asset after applying `row`, or `None` if that changes nothing. The import sets
/// what the row lists: empty cells and properties the file lacks keep their values. A
/// row that would leave more properties than a request may send is an error.
fn merged(before: &AssetState, row: ImportRow, errors: &mut ErrorList) -> Option<AssetState> {
    let line = row.row;
    let mut after = before.clone();
    after.asset_type = row.asset_type;
    after.discipline = row.discipline;
    if row.name.is_some() {
        after.name = row.name;
    }
    if row.area.is_some() {
        after.area = row.area;
    }
    after.properties.extend(row.properties);
    let mut too_many = Vec::new();
    check_merged_properties(Some(&before.properties), &after.properties, &mut too_many);
    errors.extend(too_many.into_iter().map(|error| {
        RowError::new(
            line,
            None,
            format!("asset {}: {}: {}", before.tag, error.field, error.message),
        )
    }));
    if after == *before {
        return None;
    }
    after.version = before.version + 1;
    Some(after)
}

fn created(row: ImportRow) -> AssetState {
    AssetState {
        id: Uuid::now_v7(),
        tag: row.tag,
        asset_type: row.asset_type,
        discipline: row.discipline,
        name: row.name,
        area: row.area,
        properties: row.properties,
        version: 1,
    }
}

/// `ASSET_CREATED` or `ASSET_UPDATED` with the before/after payload of single changes.
fn change_event(batch: &Batch, change: &AssetChange, cause: Option<Uuid>) -> NewEvent {
    let event_type = match change.before {
        None => EventType::AssetCreated,
        Some(_) => EventType::AssetUpdated,
    };
    let target = ChangeTarget {
        event_type,
        aggregate_type: AggregateType::Asset,
        aggregate_id: change.after.id,
        version: change.after.version,
        discipline: Some(change.after.discipline.clone()),
    };
    let diff = Change {
        before: change.before.as_ref().map(state_json),
        after: Some(state_json(&change.after)),
    };
    batch.change(target, diff, cause)
}
