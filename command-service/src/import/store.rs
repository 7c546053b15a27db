//! Set-based SQL for an import: whatever the file's size, a handful of statements
//! (one array parameter per column, `unnest` on the server) instead of one round trip
//! per row. It writes the same `assets` and `execution_snapshots` rows as the single
//! commands in `assets::store` and `store::snapshot`.

use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::PgConnection;
use synapse_shared::domain::AssetState;
use synapse_shared::AggregateType;
use uuid::Uuid;

type AssetRow = (
    Uuid,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    Json<Map<String, Value>>,
    i64,
);

/// The existing assets among `tags`, locked until the transaction ends. Locking in tag
/// order makes two imports of overlapping files wait for each other instead of
/// deadlocking.
pub async fn lock_by_tags(
    connection: &mut PgConnection,
    tags: &[&str],
) -> Result<Vec<AssetState>, sqlx::Error> {
    let rows: Vec<AssetRow> = sqlx::query_as(
        "select id, tag, asset_type, discipline, name, area, properties, version
         from assets where tag = any($1) order by tag for update",
    )
    .bind(tags)
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, tag, asset_type, discipline, name, area, properties, version)| AssetState {
                id,
                tag,
                asset_type,
                discipline,
                name,
                area,
                properties: properties.0,
                version,
            },
        )
        .collect())
}

/// The assets as column arrays.
struct Columns<'a> {
    id: Vec<Uuid>,
    tag: Vec<&'a str>,
    asset_type: Vec<&'a str>,
    discipline: Vec<&'a str>,
    name: Vec<Option<&'a str>>,
    area: Vec<Option<&'a str>>,
    properties: Vec<Json<&'a Map<String, Value>>>,
    version: Vec<i64>,
}

impl<'a> Columns<'a> {
    fn of(assets: &[&'a AssetState]) -> Self {
        Self {
            id: assets.iter().map(|asset| asset.id).collect(),
            tag: assets.iter().map(|asset| asset.tag.as_str()).collect(),
            asset_type: assets
                .iter()
                .map(|asset| asset.asset_type.as_str())
                .collect(),
            discipline: assets
                .iter()
                .map(|asset| asset.discipline.as_str())
                .collect(),
            name: assets.iter().map(|asset| asset.name.as_deref()).collect(),
            area: assets.iter().map(|asset| asset.area.as_deref()).collect(),
            properties: assets.iter().map(|asset| Json(&asset.properties)).collect(),
            version: assets.iter().map(|asset| asset.version).collect(),
        }
    }
}

/// Insert new assets in one statement. A tag taken meanwhile by another transaction
/// fails on `assets_tag_key`.
pub async fn insert_all(
    connection: &mut PgConnection,
    assets: &[&AssetState],
) -> Result<(), sqlx::Error> {
    if assets.is_empty() {
        return Ok(());
    }
    let columns = Columns::of(assets);
    sqlx::query(
        "insert into assets (id, tag, asset_type, discipline, name, area, properties, version)
         select * from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
             $6::text[], $7::jsonb[], $8::int8[])",
    )
    .bind(&columns.id)
    .bind(&columns.tag)
    .bind(&columns.asset_type)
    .bind(&columns.discipline)
    .bind(&columns.name)
    .bind(&columns.area)
    .bind(&columns.properties)
    .bind(&columns.version)
    .execute(connection)
    .await?;
    Ok(())
}

/// Overwrite locked assets with their new states in one statement.
pub async fn update_all(
    connection: &mut PgConnection,
    assets: &[&AssetState],
) -> Result<(), sqlx::Error> {
    if assets.is_empty() {
        return Ok(());
    }
    let columns = Columns::of(assets);
    sqlx::query(
        "update assets set asset_type = u.asset_type, discipline = u.discipline,
             name = u.name, area = u.area, properties = u.properties, version = u.version
         from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
             $6::jsonb[], $7::int8[])
             as u(id, asset_type, discipline, name, area, properties, version)
         where assets.id = u.id",
    )
    .bind(&columns.id)
    .bind(&columns.asset_type)
    .bind(&columns.discipline)
    .bind(&columns.name)
    .bind(&columns.area)
    .bind(&columns.properties)
    .bind(&columns.version)
    .execute(connection)
    .await?;
    Ok(())
}

/// Remember the pre-batch state of every existing asset in `ids` (before the batch
/// writes them), in one statement with the same rows and `on conflict` rule as
/// `store::snapshot::take`. The database reads each state from the locked row itself,
/// in the shape of `assets::commands::state_json`, rather than receiving 100,000 JSON
/// documents it already has. An id with no row (a new asset) gets no snapshot: what a
/// batch creates has no pre-batch state.
pub async fn snapshot_all(
    connection: &mut PgConnection,
    correlation_id: Uuid,
    ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "insert into execution_snapshots (correlation_id, aggregate_type, aggregate_id, state, version)
         select $1, $2, s.id,
             json_build_object(
                 'id', a.id, 'tag', a.tag, 'asset_type', a.asset_type,
                 'discipline', a.discipline, 'name', a.name, 'area', a.area,
                 'properties', a.properties, 'version', a.version),
             a.version
         from unnest($3::uuid[]) as s(id) join assets a on a.id = s.id
         on conflict (correlation_id, aggregate_id) do nothing",
    )
    .bind(correlation_id)
    .bind(AggregateType::Asset.as_str())
    .bind(ids)
    .execute(connection)
    .await?;
    Ok(())
}
