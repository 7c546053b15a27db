//! `rm_findings`: the open findings, kept in the asset-history projector's transaction.
//!
//! Only finding events move it: a `FINDING_RAISED` opens a finding, a
//! `FINDING_RESOLVED` closes it. A rollback needs nothing of its own here: it closes
//! what its batch raised and reopens what its batch resolved with events of its own.
//! A slice's finding events are folded in memory (the last event on a finding wins)
//! and written with one statement per kind.

use serde::Deserialize;
use sqlx::PgConnection;
use std::collections::BTreeMap;
use synapse_shared::domain::FindingPayload;
use synapse_shared::{EventEnvelope, EventType};
use uuid::Uuid;

/// A finding's identity: asset, rule, message.
type Key = (Uuid, Uuid, String);

/// An open finding: the event that opened it, its severity, and the batch that first
/// raised it and when (a rollback that reopens a finding names both).
#[derive(Debug, Clone, PartialEq)]
struct Opened<'a> {
    event: &'a EventEnvelope,
    severity: String,
    raised_in: Uuid,
    raised_at: chrono::DateTime<chrono::Utc>,
}

/// Apply the finding events of `events`.
pub async fn apply(
    connection: &mut PgConnection,
    events: &[&EventEnvelope],
) -> Result<(), sqlx::Error> {
    let mut fold: BTreeMap<Key, Option<Opened>> = BTreeMap::new();
    for event in events {
        let opens = match event.event_type {
            EventType::FindingRaised => true,
            EventType::FindingResolved => false,
            _ => continue,
        };
        let (Some(rule_id), Ok(payload)) =
            (event.rule_id, FindingPayload::deserialize(&event.payload))
        else {
            tracing::warn!(position = event.position, "finding event without its key");
            continue;
        };
        let raised_in = payload.raised_in_or(event.correlation_id);
        let key = (payload.asset_id, rule_id, payload.message);
        let opened = opens.then_some(Opened {
            event,
            severity: payload.severity,
            raised_in,
            raised_at: payload.raised_at.unwrap_or(event.occurred_at),
        });
        fold.insert(key, opened);
    }
    let (opened, closed): (Vec<_>, Vec<_>) = fold.into_iter().partition(|(_, open)| open.is_some());
    close(connection, closed.iter().map(|(key, _)| key)).await?;
    let opened: Vec<(Key, Opened)> = opened
        .into_iter()
        .filter_map(|(key, open)| open.map(|open| (key, open)))
        .collect();
    open(connection, &opened).await
}

async fn close<'a>(
    connection: &mut PgConnection,
    keys: impl Iterator<Item = &'a Key>,
) -> Result<(), sqlx::Error> {
    let (assets, rules, messages) = columns(keys);
    if assets.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "delete from rm_findings f
         using unnest($1::uuid[], $2::uuid[], $3::text[]) as r(asset_id, rule_id, message)
         where f.asset_id = r.asset_id and f.rule_id = r.rule_id and f.message = r.message",
    )
    .bind(assets)
    .bind(rules)
    .bind(messages)
    .execute(connection)
    .await?;
    Ok(())
}

async fn open(
    connection: &mut PgConnection,
    opened: &[(Key, Opened<'_>)],
) -> Result<(), sqlx::Error> {
    if opened.is_empty() {
        return Ok(());
    }
    let (assets, rules, messages) = columns(opened.iter().map(|(key, _)| key));
    let events = || opened.iter().map(|(_, open)| open.event);
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
        opened
            .iter()
            .map(|(_, open)| open.severity.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(events().map(|e| e.rule_version).collect::<Vec<_>>())
    .bind(
        events()
            .map(|e| e.discipline.as_deref())
            .collect::<Vec<_>>(),
    )
    .bind(
        opened
            .iter()
            .map(|(_, open)| open.raised_in)
            .collect::<Vec<_>>(),
    )
    .bind(
        opened
            .iter()
            .map(|(_, open)| open.raised_at)
            .collect::<Vec<_>>(),
    )
    .bind(events().map(|e| e.position).collect::<Vec<_>>())
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
