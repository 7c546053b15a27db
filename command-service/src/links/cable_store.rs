//! SQL for the command-side `cables` table.

use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::PgConnection;
use synapse_shared::domain::CableState;
use uuid::Uuid;

#[derive(sqlx::FromRow)]
struct CableRow {
    id: Uuid,
    tag: String,
    from_asset: Uuid,
    to_asset: Uuid,
    cable_type: String,
    discipline: String,
    properties: Json<Map<String, Value>>,
    version: i64,
}

impl From<CableRow> for CableState {
    fn from(row: CableRow) -> Self {
        CableState {
            id: row.id,
            tag: row.tag,
            from_asset: row.from_asset,
            to_asset: row.to_asset,
            cable_type: row.cable_type,
            discipline: row.discipline,
            properties: row.properties.0,
            version: row.version,
        }
    }
}

/// Cables with these tags; when `lock`, locked until the transaction ends.
pub async fn by_tags(
    connection: &mut PgConnection,
    tags: &[String],
    lock: bool,
) -> Result<Vec<CableState>, sqlx::Error> {
    let rows: Vec<CableRow> = sqlx::query_as(&format!(
        "select id, tag, from_asset, to_asset, cable_type, discipline, properties, version
         from cables where tag = any($1) order by id {}",
        if lock { "for update" } else { "" }
    ))
    .bind(tags)
    .fetch_all(connection)
    .await?;
    Ok(rows.into_iter().map(CableState::from).collect())
}

/// Insert or overwrite cables (by id).
pub async fn upsert(
    connection: &mut PgConnection,
    cables: &[CableState],
) -> Result<(), sqlx::Error> {
    upsert_into(connection, "cables", cables).await
}

/// [`upsert`] into `table`: `cables` or a dry run's copy of it.
pub async fn upsert_into(
    connection: &mut PgConnection,
    table: &str,
    cables: &[CableState],
) -> Result<(), sqlx::Error> {
    if cables.is_empty() {
        return Ok(());
    }
    let properties: Vec<Value> = cables
        .iter()
        .map(|c| Value::Object(c.properties.clone()))
        .collect();
    sqlx::query(&format!(
        "insert into {table} (id, tag, from_asset, to_asset, cable_type, discipline, properties, version)
         select * from unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::jsonb[], $8::int8[])
         on conflict (id) do update set tag = excluded.tag, from_asset = excluded.from_asset,
             to_asset = excluded.to_asset, cable_type = excluded.cable_type, discipline = excluded.discipline,
             properties = excluded.properties, version = excluded.version"
    ))
    .bind(cables.iter().map(|c| c.id).collect::<Vec<_>>())
    .bind(cables.iter().map(|c| c.tag.clone()).collect::<Vec<_>>())
    .bind(cables.iter().map(|c| c.from_asset).collect::<Vec<_>>())
    .bind(cables.iter().map(|c| c.to_asset).collect::<Vec<_>>())
    .bind(cables.iter().map(|c| c.cable_type.clone()).collect::<Vec<_>>())
    .bind(cables.iter().map(|c| c.discipline.clone()).collect::<Vec<_>>())
    .bind(properties)
    .bind(cables.iter().map(|c| c.version).collect::<Vec<_>>())
    .execute(connection)
    .await?;
    Ok(())
}

/// The unique constraint on cable tags.
pub const TAG_CONSTRAINT: &str = "cables_tag_key";

/// Load a cable and lock its row until the transaction ends.
pub async fn load_for_update(
    connection: &mut PgConnection,
    id: Uuid,
) -> Result<Option<CableState>, sqlx::Error> {
    let row: Option<CableRow> = sqlx::query_as(
        "select id, tag, from_asset, to_asset, cable_type, discipline, properties, version
         from cables where id = $1 for update",
    )
    .bind(id)
    .fetch_optional(connection)
    .await?;
    Ok(row.map(CableState::from))
}

/// Delete the cables from or to `asset`; what they were, by tag.
pub async fn delete_of_asset(
    connection: &mut PgConnection,
    asset: Uuid,
) -> Result<Vec<CableState>, sqlx::Error> {
    let rows: Vec<CableRow> = sqlx::query_as(
        "delete from cables where from_asset = $1 or to_asset = $1
         returning id, tag, from_asset, to_asset, cable_type, discipline, properties, version",
    )
    .bind(asset)
    .fetch_all(connection)
    .await?;
    let mut cables: Vec<CableState> = rows.into_iter().map(CableState::from).collect();
    cables.sort_by(|a, b| a.tag.cmp(&b.tag));
    Ok(cables)
}

pub async fn delete(connection: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("delete from cables where id = $1")
        .bind(id)
        .execute(connection)
        .await?;
    Ok(())
}
