//! SQL for the `rules` table: immutable versions, the newest one is current.

use super::definition::RuleInput;
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A stored rule version.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct StoredRule {
    pub id: Uuid,
    pub version: i32,
    pub name: String,
    pub discipline: String,
    pub priority: i32,
    pub enabled: bool,
    #[schema(value_type = Object)]
    pub definition: Json<RuleInput>,
    pub defined_by: String,
    pub defined_at: chrono::DateTime<chrono::Utc>,
}

const COLUMNS: &str =
    "id, version, name, discipline, priority, enabled, definition, defined_by, defined_at";

pub async fn insert(
    connection: &mut PgConnection,
    id: Uuid,
    version: i32,
    input: &RuleInput,
    actor: &str,
    defined_at: chrono::DateTime<chrono::Utc>,
) -> Result<StoredRule, sqlx::Error> {
    sqlx::query_as(&format!(
        "insert into rules (id, version, name, discipline, priority, enabled, definition, defined_by,
             defined_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning {COLUMNS}"
    ))
    .bind(id)
    .bind(version)
    .bind(&input.name)
    .bind(input.discipline.to_ascii_uppercase())
    .bind(input.priority)
    .bind(input.enabled)
    .bind(Json(input))
    .bind(actor)
    .bind(defined_at)
    .fetch_one(connection)
    .await
}

/// The newest version of a rule, with the rule locked so two edits cannot both make
/// version N+1. The lock is on the first version, the row every edit shares: locking
/// the newest one let an edit that waited for another read the version the other
/// replaced, and make the same version (a unique violation, answered 500).
pub async fn latest_for_update(
    connection: &mut PgConnection,
    id: Uuid,
) -> Result<Option<StoredRule>, sqlx::Error> {
    let first: Option<i32> = sqlx::query_scalar(
        "select version from rules where id = $1 order by version limit 1 for update",
    )
    .bind(id)
    .fetch_optional(&mut *connection)
    .await?;
    if first.is_none() {
        return Ok(None);
    }
    // A statement of its own, so it sees the versions committed while it waited.
    sqlx::query_as(&format!(
        "select {COLUMNS} from rules where id = $1 order by version desc limit 1"
    ))
    .bind(id)
    .fetch_optional(connection)
    .await
}

/// The newest version of one rule.
pub async fn latest(pool: &PgPool, id: Uuid) -> Result<Option<StoredRule>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from rules where id = $1 order by version desc limit 1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The newest version of every rule, by priority then name.
pub async fn latest_all(pool: &PgPool) -> Result<Vec<StoredRule>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select * from (select distinct on (id) {COLUMNS} from rules order by id, version desc) newest
         order by priority, name, id"
    ))
    .fetch_all(pool)
    .await
}

/// Specific versions, e.g. those a plan was made with.
pub async fn version(
    connection: &mut PgConnection,
    id: Uuid,
    version: i32,
) -> Result<Option<StoredRule>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from rules where id = $1 and version = $2"
    ))
    .bind(id)
    .bind(version)
    .fetch_optional(connection)
    .await
}

/// Mark which rules have open findings: a rule whose version dropped its `flag` still
/// owns (and resolves) what earlier versions raised, and a rule with none need not
/// look any up while it runs.
pub async fn own_open_findings<'c, E>(
    executor: E,
    rules: &mut [super::definition::CompiledRule],
) -> Result<(), sqlx::Error>
where
    E: sqlx::PgExecutor<'c>,
{
    let ids: Vec<Uuid> = rules.iter().map(|rule| rule.id).collect();
    let with_findings: Vec<Uuid> =
        // One index probe per rule, however many findings each has.
        sqlx::query_scalar(
            "select r.id from unnest($1::uuid[]) as r(id)
             where exists (select 1 from findings f where f.rule_id = r.id)",
        )
            .bind(ids)
            .fetch_all(executor)
            .await?;
    for rule in rules {
        let open = with_findings.contains(&rule.id);
        rule.owns_findings |= open;
        rule.may_have_open_findings = open;
    }
    Ok(())
}
