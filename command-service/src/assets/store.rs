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

/// Insert or overwrite many assets (by id) in one statement.
pub async fn upsert_many(
    connection: &mut PgConnection,
    assets: &[AssetState],
) -> Result<(), sqlx::Error> {
    upsert_many_into(connection, "assets", assets).await
}

/// [`upsert_many`] into `table`: `assets` or a dry run's copy of it.
pub async fn upsert_many_into(
    connection: &mut PgConnection,
    table: &str,
    assets: &[AssetState],
) -> Result<(), sqlx::Error> {
    if assets.is_empty() {
        return Ok(());
    }
    // Text and properties are bound borrowed: this runs for every chunk of an execution.
    sqlx::query(&format!(
        "insert into {table} (id, tag, asset_type, discipline, name, area, properties, version)
         select * from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::int8[])
         on conflict (id) do update set tag = excluded.tag, asset_type = excluded.asset_type,
             discipline = excluded.discipline, name = excluded.name, area = excluded.area,
             properties = excluded.properties, version = excluded.version"
    ))
    .bind(assets.iter().map(|a| a.id).collect::<Vec<_>>())
    .bind(assets.iter().map(|a| a.tag.as_str()).collect::<Vec<_>>())
    .bind(assets.iter().map(|a| a.asset_type.as_str()).collect::<Vec<_>>())
    .bind(assets.iter().map(|a| a.discipline.as_str()).collect::<Vec<_>>())
    .bind(assets.iter().map(|a| a.name.as_deref()).collect::<Vec<_>>())
    .bind(assets.iter().map(|a| a.area.as_deref()).collect::<Vec<_>>())
    .bind(assets.iter().map(|a| Json(&a.properties)).collect::<Vec<_>>())
    .bind(assets.iter().map(|a| a.version).collect::<Vec<_>>())
    .execute(connection)
    .await?;
    Ok(())
}

/// Assets with these tags; when `lock`, locked until the transaction ends.
pub async fn by_tags(
    connection: &mut PgConnection,
    tags: &[String],
    lock: bool,
) -> Result<Vec<AssetState>, sqlx::Error> {
    let rows: Vec<AssetRow> = sqlx::query_as(&format!(
        "select id, tag, asset_type, discipline, name, area, properties, version
         from assets where tag = any($1) order by id {}",
        if lock { "for update" } else { "" }
    ))
    .bind(tags)
    .fetch_all(connection)
    .await?;
    Ok(rows.into_iter().map(AssetState::from).collect())
}

/// The assets a rule runs over, fixed when it starts: how many, and the last id (in
/// id order). Ids are time-ordered (UUIDv7), so what is created after the start
/// (by this rule itself, say) sorts after `last` and is left out.
#[derive(Debug, Clone, Copy)]
pub struct Selection {
    pub total: i64,
    pub last: Uuid,
}

/// How a page of an execution is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageRead {
    /// Locked until the transaction ends.
    Locked,
    Unlocked,
    /// Through a dry run's [`overlay`](crate::execute::overlay), without locks.
    DryRun,
}

/// One page of a rule's [`Selection`], in id order after `after`: locked in a real
/// run, read through the overlay in a dry run.
pub async fn page_for_execution(
    connection: &mut PgConnection,
    filter: &crate::execute::request::AssetFilter,
    selection: Selection,
    after: Uuid,
    limit: i64,
    read: PageRead,
) -> Result<Vec<AssetState>, sqlx::Error> {
    const COLUMNS: &str = "id, tag, asset_type, discipline, name, area, properties, version";
    const PAGE: &str = "id > $1 and id <= $7
           and (cardinality($2::uuid[]) = 0 or id = any($2))
           and (cardinality($3::text[]) = 0 or discipline = any($3))
           and (cardinality($4::text[]) = 0 or asset_type = any($4))
           and ($5::text is null or tag like $5)";
    let sql = match read {
        PageRead::Locked => format!(
            "select {COLUMNS} from assets where {PAGE} order by id limit $6 for update"
        ),
        PageRead::Unlocked => {
            format!("select {COLUMNS} from assets where {PAGE} order by id limit $6")
        }
        // The overlay's view of `assets` as a query of its own, so that each side is
        // read in id order up to the limit: through the view, Postgres read every
        // live asset of the filter and sorted them, for every page.
        PageRead::DryRun => format!(
            "select * from (
                 (select {COLUMNS} from {dry} where {PAGE} order by id limit $6)
                 union all
                 (select {COLUMNS} from public.assets a where {PAGE}
                      and not exists (select from {dry} d where d.id = a.id and d.id > $1 and d.id <= $7)
                  order by id limit $6)
             ) page order by id limit $6",
            dry = crate::execute::overlay::TABLES.assets
        ),
    };
    let rows: Vec<AssetRow> = sqlx::query_as(&sql)
        .bind(after)
        .bind(&filter.asset_ids)
        .bind(filter.disciplines_upper())
        .bind(filter.asset_types_upper())
        .bind(filter.tag_like())
        .bind(limit)
        .bind(selection.last)
        .fetch_all(connection)
        .await?;
    Ok(rows.into_iter().map(AssetState::from).collect())
}

/// What a filter selects now ([`Selection`]); `last` is the nil id when nothing.
pub async fn select_for_execution(
    connection: &mut PgConnection,
    filter: &crate::execute::request::AssetFilter,
) -> Result<Selection, sqlx::Error> {
    const SELECTED: &str = "from assets
         where (cardinality($1::uuid[]) = 0 or id = any($1))
           and (cardinality($2::text[]) = 0 or discipline = any($2))
           and (cardinality($3::text[]) = 0 or asset_type = any($3))
           and ($4::text is null or tag like $4)";
    let (total, last): (i64, Option<Uuid>) = sqlx::query_as(&format!(
        "select (select count(*) {SELECTED}), (select id {SELECTED} order by id desc limit 1)"
    ))
    .bind(&filter.asset_ids)
    .bind(filter.disciplines_upper())
    .bind(filter.asset_types_upper())
    .bind(filter.tag_like())
    .fetch_one(connection)
    .await?;
    Ok(Selection {
        total,
        last: last.unwrap_or(Uuid::nil()),
    })
}
