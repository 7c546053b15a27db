//! Every read model's rows as plain JSON, to compare a live projection with a rebuild
//! (or with another run) table by table.

use serde_json::Value;
use sqlx::PgPool;
use std::collections::BTreeMap;

/// Each read-model table with the key it is ordered by.
pub const TABLES: &[(&str, &str)] = &[
    ("rm_events", "position"),
    ("rm_asset_links", "asset_id, position"),
    ("rm_aggregates", "aggregate_id"),
    ("rm_findings", "position"),
    ("rm_batches", "correlation_id"),
    ("rm_batch_rules", "correlation_id, rule_id"),
    ("rm_disciplines", "discipline, event_type"),
    ("rm_discipline_batches", "discipline, correlation_id"),
];

/// The rows of every read-model table, each as `to_jsonb(row)`, in key order.
pub async fn snapshot(pool: &PgPool) -> anyhow::Result<BTreeMap<&'static str, Vec<Value>>> {
    let mut tables = BTreeMap::new();
    for (table, key) in TABLES {
        let rows: Vec<Value> =
            sqlx::query_scalar(&format!("select to_jsonb(t) from {table} t order by {key}"))
                .fetch_all(pool)
                .await?;
        tables.insert(*table, rows);
    }
    Ok(tables)
}

/// How many rows differ between two snapshots, per table (rows only one side has count
/// too); empty when they are equal.
pub fn differences(
    left: &BTreeMap<&'static str, Vec<Value>>,
    right: &BTreeMap<&'static str, Vec<Value>>,
) -> BTreeMap<&'static str, usize> {
    let empty = Vec::new();
    TABLES
        .iter()
        .filter_map(|(table, _)| {
            let left = left.get(table).unwrap_or(&empty);
            let right = right.get(table).unwrap_or(&empty);
            let unequal = left.iter().zip(right).filter(|(l, r)| l != r).count()
                + left.len().abs_diff(right.len());
            (unequal > 0).then_some((*table, unequal))
        })
        .collect()
}
