//! SQL for the command-side `relationships` table.

use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::PgConnection;
use synapse_shared::domain::RelationshipState;
use uuid::Uuid;

#[derive(sqlx::FromRow)]
struct RelationshipRow {
    id: Uuid,
    kind: String,
    from_asset: Uuid,
    to_asset: Uuid,
    properties: Json<Map<String, Value>>,
    version: i64,
}

impl From<RelationshipRow> for RelationshipState {
    fn from(row: RelationshipRow) -> Self {
        RelationshipState {
            id: row.id,
            kind: row.kind,
            from_asset: row.from_asset,
            to_asset: row.to_asset,
            properties: row.properties.0,
            version: row.version,
        }
    }
}

/// Relationships matching any of `keys` (kind, from, to).
pub async fn by_keys(
    connection: &mut PgConnection,
    keys: &[(String, Uuid, Uuid)],
    lock: bool,
) -> Result<Vec<RelationshipState>, sqlx::Error> {
    let rows: Vec<RelationshipRow> = sqlx::query_as(&format!(
        "select r.id, r.kind, r.from_asset, r.to_asset, r.properties, r.version
         from relationships r
         join unnest($1::text[], $2::uuid[], $3::uuid[]) as k(kind, from_asset, to_asset)
           on r.kind = k.kind and r.from_asset = k.from_asset and r.to_asset = k.to_asset
         order by r.id {}",
        // Read only: shared, as an execution's reads are (see `ahead::still_current`).
        if lock { "for share of r" } else { "" }
    ))
    .bind(keys.iter().map(|k| k.0.clone()).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.1).collect::<Vec<_>>())
    .bind(keys.iter().map(|k| k.2).collect::<Vec<_>>())
    .fetch_all(connection)
    .await?;
    Ok(rows.into_iter().map(RelationshipState::from).collect())
}

pub async fn insert(
    connection: &mut PgConnection,
    relationships: &[RelationshipState],
) -> Result<(), sqlx::Error> {
    insert_into(connection, "relationships", relationships).await
}

/// [`insert`] into `table`: `relationships` or a dry run's copy of it.
pub async fn insert_into(
    connection: &mut PgConnection,
    table: &str,
    relationships: &[RelationshipState],
) -> Result<(), sqlx::Error> {
    if relationships.is_empty() {
        return Ok(());
    }
    let properties: Vec<Value> = relationships
        .iter()
        .map(|r| Value::Object(r.properties.clone()))
        .collect();
    sqlx::query(&format!(
        "insert into {table} (id, kind, from_asset, to_asset, properties, version)
         select * from unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::jsonb[], $6::int8[])"
    ))
    .bind(relationships.iter().map(|r| r.id).collect::<Vec<_>>())
    .bind(relationships.iter().map(|r| r.kind.clone()).collect::<Vec<_>>())
    .bind(relationships.iter().map(|r| r.from_asset).collect::<Vec<_>>())
    .bind(relationships.iter().map(|r| r.to_asset).collect::<Vec<_>>())
    .bind(properties)
    .bind(relationships.iter().map(|r| r.version).collect::<Vec<_>>())
    .execute(connection)
    .await?;
    Ok(())
}

/// The unique constraint on (kind, from, to).
pub const KEY_CONSTRAINT: &str = "relationships_kind_from_to_key";

/// Load a relationship and lock its row until the transaction ends.
pub async fn load_for_update(
    connection: &mut PgConnection,
    id: Uuid,
) -> Result<Option<RelationshipState>, sqlx::Error> {
    let row: Option<RelationshipRow> = sqlx::query_as(
        "select id, kind, from_asset, to_asset, properties, version from relationships where id = $1 for update",
    )
    .bind(id)
    .fetch_optional(connection)
    .await?;
    Ok(row.map(RelationshipState::from))
}

/// Delete the relationships from or to `asset`; what they were, by kind and ends.
pub async fn delete_of_asset(
    connection: &mut PgConnection,
    asset: Uuid,
) -> Result<Vec<RelationshipState>, sqlx::Error> {
    let rows: Vec<RelationshipRow> = sqlx::query_as(
        "delete from relationships where from_asset = $1 or to_asset = $1
         returning id, kind, from_asset, to_asset, properties, version",
    )
    .bind(asset)
    .fetch_all(connection)
    .await?;
    let mut relationships: Vec<RelationshipState> =
        rows.into_iter().map(RelationshipState::from).collect();
    relationships.sort_by(|a, b| {
        (&a.kind, a.from_asset, a.to_asset).cmp(&(&b.kind, b.from_asset, b.to_asset))
    });
    Ok(relationships)
}

pub async fn delete(connection: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("delete from relationships where id = $1")
        .bind(id)
        .execute(connection)
        .await?;
    Ok(())
}
