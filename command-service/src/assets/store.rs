//! SQL for the command-side `assets` table.

use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::PgConnection;
use synapse_shared::domain::AssetState;
use uuid::Uuid;

#[derive(sqlx::FromRow)]
struct AssetRow {
    id: Uuid,
    tag: String,
    asset_type: String,
    discipline: String,
    name: Option<String>,
    area: Option<String>,
    properties: Json<Map<String, Value>>,
    version: i64,
}

impl From<AssetRow> for AssetState {
    fn from(row: AssetRow) -> Self {
        AssetState {
            id: row.id,
            tag: row.tag,
            asset_type: row.asset_type,
            discipline: row.discipline,
            name: row.name,
            area: row.area,
            properties: row.properties.0,
            version: row.version,
        }
    }
}

/// The unique constraint on tags, mapped to a client error by callers.
pub const TAG_CONSTRAINT: &str = "assets_tag_key";

/// Load an asset and lock its row until the transaction ends.
pub async fn load_for_update(
    connection: &mut PgConnection,
    id: Uuid,
) -> Result<Option<AssetState>, sqlx::Error> {
    let row: Option<AssetRow> = sqlx::query_as(
        "select id, tag, asset_type, discipline, name, area, properties, version
         from assets where id = $1 for update",
    )
    .bind(id)
    .fetch_optional(connection)
    .await?;
    Ok(row.map(AssetState::from))
}

pub async fn insert(connection: &mut PgConnection, asset: &AssetState) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into assets (id, tag, asset_type, discipline, name, area, properties, version)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(asset.id)
    .bind(&asset.tag)
    .bind(&asset.asset_type)
    .bind(&asset.discipline)
    .bind(&asset.name)
    .bind(&asset.area)
    .bind(Json(&asset.properties))
    .bind(asset.version)
    .execute(connection)
    .await?;
    Ok(())
}

/// Overwrite a locked asset with its new state.
pub async fn update(connection: &mut PgConnection, asset: &AssetState) -> Result<(), sqlx::Error> {
    sqlx::query(
        "update assets set tag = $2, asset_type = $3, discipline = $4, name = $5, area = $6,
             properties = $7, version = $8
         where id = $1",
    )
    .bind(asset.id)
    .bind(&asset.tag)
    .bind(&asset.asset_type)
    .bind(&asset.discipline)
    .bind(&asset.name)
    .bind(&asset.area)
    .bind(Json(&asset.properties))
    .bind(asset.version)
    .execute(connection)
    .await?;
    Ok(())
}

pub async fn delete(connection: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("delete from assets where id = $1")
        .bind(id)
        .execute(connection)
        .await?;
    Ok(())
}
