//! The current assets an export reads from `rm_aggregates`, and their property names.
//!
//! Both queries run in the export's one read-only snapshot transaction, so the header
//! (the union of the property names) names exactly the properties the rows hold.

use futures::stream::BoxStream;
use futures::StreamExt;
use serde_json::Value;
use sqlx::PgConnection;
use synapse_shared::AggregateType;

/// Which assets an export holds: those in any of `disciplines` and any of
/// `asset_types`; an empty list does not restrict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssetFilter {
    pub disciplines: Vec<String>,
    pub asset_types: Vec<String>,
}

/// One current asset, as the export writes it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AssetRow {
    pub tag: String,
    pub asset_type: String,
    pub discipline: String,
    pub name: Option<String>,
    pub area: Option<String>,
    /// The `properties` object (null if the state has none).
    pub properties: Option<Value>,
}

/// The `from ... where` shared by both queries (a macro so that `concat!` makes each
/// statement one `&'static str`): live (not deleted) assets that pass the filter. `$1`
/// is the aggregate type, `$2` the disciplines, `$3` the asset types.
macro_rules! current_assets {
    () => {
        " from rm_aggregates
          where aggregate_type = $1 and state is not null
            and (cardinality($2::text[]) = 0 or state ->> 'discipline' = any($2))
            and (cardinality($3::text[]) = 0 or state ->> 'asset_type' = any($3)) "
    };
}

/// A property column of an export: its name, and the type its header declares, so
/// that a re-import reads every value back as it is: `name:text` (or `number`,
/// `boolean`) when every value it holds is of that one type, so `"100"` comes back as
/// text and `75` as a number whatever the other cells look like; `name:json` when it
/// holds several types, or text that a plain cell would not keep (empty, or with
/// spaces at either end, which the import trims): each cell is then the value's JSON
/// (`100`, `"100"`, `" padded "`). Before, a column of `100` and `"100"` declared
/// nothing and both came back as the number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub declared: Option<&'static str>,
}

impl Column {
    /// The column's header cell.
    pub fn header(&self) -> String {
        match self.declared {
            Some(declared) => format!("{}:{declared}", self.name),
            None => self.name.clone(),
        }
    }
}

/// Every property column of the filtered assets, by name in byte order (`collate "C"`:
/// the same order whatever the database's locale), with the JSON types of its values.
pub async fn property_columns(
    connection: &mut PgConnection,
    filter: &AssetFilter,
) -> Result<Vec<Column>, sqlx::Error> {
    const SQL: &str = concat!(
        "select name collate \"C\" as name,
             array_agg(distinct jsonb_typeof(value)) filter (where jsonb_typeof(value) <> 'null'),
             coalesce(bool_or(jsonb_typeof(value) = 'string'
                 and (value #>> '{}' = '' or value #>> '{}' ~ $4)), false)
         from (select state -> 'properties' as properties",
        current_assets!(),
        ") as assets,
              jsonb_each(case jsonb_typeof(properties) when 'object' then properties
                         else '{}'::jsonb end) as property(name, value)
         group by 1
         order by 1"
    );
    let rows: Vec<(String, Option<Vec<String>>, bool)> = sqlx::query_as(SQL)
        .bind(AggregateType::Asset.as_str())
        .bind(&filter.disciplines)
        .bind(&filter.asset_types)
        .bind(EDGE_SPACE)
        .fetch_all(connection)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(name, types, fragile_text)| Column {
            name,
            declared: match types.as_deref() {
                None | Some([]) => None,
                Some([only]) if !fragile_text => declared(only),
                Some(_) => Some(JSON),
            },
        })
        .collect())
}

/// What the import trims from a cell, at either end of a text (Postgres regular
/// expression): Unicode white space, as Rust's `str::trim`.
const EDGE_SPACE: &str = r"^[[:space:]\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0085]|[[:space:]\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0085]$";

/// The declaration of a column whose cells are each the value's JSON.
pub const JSON: &str = "json";

/// The import's declaration of a column whose values are all of JSON type `json_type`.
fn declared(json_type: &str) -> Option<&'static str> {
    match json_type {
        "string" => Some("text"),
        "number" => Some("number"),
        "boolean" => Some("boolean"),
        _ => None,
    }
}

/// The filtered assets ordered by tag, streamed from one query: Postgres sorts once and
/// the rows arrive as the caller reads them, so memory does not grow with the plant.
pub fn assets<'c>(
    connection: &'c mut PgConnection,
    filter: &'c AssetFilter,
) -> BoxStream<'c, Result<AssetRow, sqlx::Error>> {
    const SQL: &str = concat!(
        "select state ->> 'tag' as tag, state ->> 'asset_type' as asset_type,
             state ->> 'discipline' as discipline, state ->> 'name' as name,
             state ->> 'area' as area, state -> 'properties' as properties",
        current_assets!(),
        "order by state ->> 'tag' collate \"C\", aggregate_id"
    );
    sqlx::query_as(SQL)
        .bind(AggregateType::Asset.as_str())
        .bind(&filter.disciplines)
        .bind(&filter.asset_types)
        .fetch(connection)
        .boxed()
}
