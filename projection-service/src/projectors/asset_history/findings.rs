//! `rm_findings`: the open findings, kept in the asset-history projector's transaction.
//!
//! A slice's finding events are folded in memory (the last event on a finding wins)
//! and written with one statement per kind. A `BATCH_ROLLED_BACK` ends the fold: what
//! came before is written first, then the rolled-back batch's findings are undone, so
//! a finding raised again after the rollback stays open.

use serde_json::Value;
use sqlx::PgConnection;
use std::collections::BTreeMap;
use synapse_shared::{EventEnvelope, EventType};
use uuid::Uuid;

/// A finding's identity: asset, rule, message.
type Key = (Uuid, Uuid, String);

/// An open finding as `rm_findings` holds it (besides its key).
#[derive(Debug, Clone, PartialEq)]
struct Raised<'a> {
    severity: &'a str,
    event: &'a EventEnvelope,
}

/// Apply the finding events and rollbacks of `events`, in order.
pub async fn apply(
    connection: &mut PgConnection,
    events: &[&EventEnvelope],
) -> Result<(), sqlx::Error> {
    let mut fold: BTreeMap<Key, Option<Raised>> = BTreeMap::new();
    for event in events {
        match event.event_type {
            EventType::FindingRaised | EventType::FindingResolved => {
                let Some((key, severity)) = key_of(event) else {
                    tracing::warn!(position = event.position, "finding event without its key");
                    continue;
                };
                let open = (event.event_type == EventType::FindingRaised)
                    .then_some(Raised { severity, event });
                fold.insert(key, open);
            }
            EventType::BatchRolledBack => {
                let target = event
                    .payload
                    .get("target_correlation_id")
                    .and_then(Value::as_str)
                    .and_then(|id| id.parse::<Uuid>().ok());
                if let Some(target) = target {
                    write(connection, std::mem::take(&mut fold)).await?;
                    undo(connection, target).await?;
                }
            }
            _ => {}
        }
    }
    write(connection, fold).await
}

/// Asset, rule and message of a finding event, and its severity.
fn key_of(event: &EventEnvelope) -> Option<(Key, &str)> {
    let text = |field: &str| event.payload.get(field).and_then(Value::as_str);
    let asset_id = text("asset_id")?.parse().ok()?;
    let key = (asset_id, event.rule_id?, text("message")?.to_owned());
    Some((key, text("severity").unwrap_or("info")))
}

/// Write a fold: delete what it resolved, insert (or replace) what it raised.
async fn write(
    connection: &mut PgConnection,
    fold: BTreeMap<Key, Option<Raised<'_>>>,
) -> Result<(), sqlx::Error> {
    let (raised, resolved): (Vec<_>, Vec<_>) =
        fold.into_iter().partition(|(_, open)| open.is_some());
    if !resolved.is_empty() {
        let (assets, rules, messages) = columns(resolved.iter().map(|(key, _)| key));
        sqlx::query(
            "delete from rm_findings f
             using unnest($1::uuid[], $2::uuid[], $3::text[]) as r(asset_id, rule_id, message)
             where f.asset_id = r.asset_id and f.rule_id = r.rule_id and f.message = r.message",
        )
        .bind(assets)
        .bind(rules)
        .bind(messages)
        .execute(&mut *connection)
        .await?;
    }
    let raised: Vec<(Key, Raised)> = raised
        .into_iter()
        .filter_map(|(key, open)| open.map(|open| (key, open)))
        .collect();
    if raised.is_empty() {
        return Ok(());
    }
    let (assets, rules, messages) = columns(raised.iter().map(|(key, _)| key));
    let events = raised.iter().map(|(_, open)| open.event);
    sqlx::query(
        "insert into rm_findings (asset_id, rule_id, message, severity, rule_version, discipline,
             raised_in, raised_at, position)
         select * from unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::integer[],
             $6::text[], $7::uuid[], $8::timestamptz[], $9::bigint[])
         on conflict (asset_id, rule_id, message) do update
         set severity = excluded.severity, rule_version = excluded.rule_version,
             discipline = excluded.discipline, raised_in = excluded.raised_in,
             raised_at = excluded.raised_at, position = excluded.position",
    )
    .bind(assets)
    .bind(rules)
    .bind(messages)
    .bind(
        raised
            .iter()
            .map(|(_, open)| open.severity)
            .collect::<Vec<_>>(),
    )
    .bind(events.clone().map(|e| e.rule_version).collect::<Vec<_>>())
    .bind(
        events
            .clone()
            .map(|e| e.discipline.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(events.clone().map(|e| e.correlation_id).collect::<Vec<_>>())
    .bind(events.clone().map(|e| e.occurred_at).collect::<Vec<_>>())
    .bind(events.map(|e| e.position).collect::<Vec<_>>())
    .execute(connection)
    .await?;
    Ok(())
}

fn columns<'a>(keys: impl Iterator<Item = &'a Key>) -> (Vec<Uuid>, Vec<Uuid>, Vec<&'a str>) {
    let mut columns = (Vec::new(), Vec::new(), Vec::new());
    for (asset, rule, message) in keys {
        columns.0.push(*asset);
        columns.1.push(*rule);
        columns.2.push(message.as_str());
    }
    columns
}

/// Findings as they were before batch `target`: what it raised is gone, what it
/// resolved is open again as first raised (its FINDING_RAISED, found in `rm_events`),
/// unless raised again since.
async fn undo(connection: &mut PgConnection, target: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("delete from rm_findings where raised_in = $1")
        .bind(target)
        .execute(&mut *connection)
        .await?;
    sqlx::query(
        "insert into rm_findings (asset_id, rule_id, message, severity, rule_version, discipline,
             raised_in, raised_at, position)
         select raised.asset_id, raised.rule_id, raised.payload->>'message',
             raised.payload->>'severity', raised.rule_version, raised.discipline,
             raised.correlation_id, raised.occurred_at, raised.position
         from rm_events resolved
         join rm_events raised
           on raised.correlation_id = (resolved.payload->>'raised_in')::uuid
          and raised.event_type = 'FINDING_RAISED'
          and raised.asset_id = resolved.asset_id
          and raised.rule_id = resolved.rule_id
          and raised.payload->>'message' = resolved.payload->>'message'
         where resolved.correlation_id = $1 and resolved.event_type = 'FINDING_RESOLVED'
         on conflict do nothing",
    )
    .bind(target)
    .execute(connection)
    .await?;
    Ok(())
}
