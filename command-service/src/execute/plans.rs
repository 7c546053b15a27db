//! Dry-run plans: stored so `POST /rules/execute {plan_id}` applies exactly what was
//! previewed, or is refused when anything the plan read has changed since.
//!
//! A plan is a row in `execution_plans` with its reads and creations as rows beside it
//! (`execution_plan_reads`, `execution_plan_creations`): a dry run writes them chunk by
//! chunk and an apply reads those of one chunk at a time, so neither holds a whole
//! plan in memory.

use super::planner::{Creation, Ids};
use super::world::{Read, FINDINGS_FINGERPRINT};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;
use sqlx::PgConnection;
use std::collections::{BTreeMap, HashMap, HashSet};
use synapse_shared::domain::AssetState;
use uuid::Uuid;

/// A stored plan.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredPlan {
    pub plan_id: Uuid,
    pub request: Json<super::request::ExecuteRequest>,
    pub rule_versions: Json<BTreeMap<Uuid, i32>>,
    pub applied_by_correlation_id: Option<Uuid>,
}

/// What a chunk of a plan's apply read that is not what the plan read, allowing for
/// what the apply itself changed since it started: the keys (as [`Read`] names them),
/// at most [`MAX_DRIFTED`]. Run in the chunk's transaction once what it read is
/// locked and known current ([`super::ahead::still_current`], or locked reads): so
/// the chunk would change only what the plan showed, as the plan showed it.
///
/// - an aggregate must be at the version the plan read, plus one per event of this
///   batch (`correlation_id`) on it; one the plan did not read must be one this batch
///   created (the plan's reads of what it created are dropped when it closes);
/// - a tag seen free must have been free for the plan too;
/// - open findings must have the fingerprint the plan read.
pub async fn drifted(
    connection: &mut PgConnection,
    plan_id: Uuid,
    correlation_id: Uuid,
    reads: &BTreeMap<Read, i64>,
) -> Result<Vec<String>, sqlx::Error> {
    let ReadColumns {
        ids,
        absent,
        findings,
    } = ReadColumns::of(reads);
    let rows: Vec<(String,)> = sqlx::query_as(
        // Each read is looked up by its own index probe (`lateral`): a join let the
        // planner hash the whole plan's reads for every chunk.
        "select k.id::text from unnest($2::uuid[], $3::bigint[]) as k(id, version)
         left join lateral (select r.version from execution_plan_reads r
                            where r.plan_id = $1 and r.aggregate_id = k.id) r on true
         where case
             -- As the plan read it: the usual case, without a look at the log.
             when k.version = coalesce(r.version, 0) then false
             -- Else it must be as this batch left it: the aggregate's own events (few),
             -- then this batch's among them (`offset 0` keeps the planner from reading
             -- the batch's events, all of them by the correlation index, for each id).
             else k.version <> coalesce(r.version, 0) + (
                 select count(*) from (select e.correlation_id from workflow_events e
                                       where e.aggregate_id = k.id offset 0) as own
                 where own.correlation_id = $4)
         end
         union all
         select 'tag:' || t.tag from unnest($5::text[]) as t(tag)
         left join lateral (select true as found from execution_plan_reads r
                            where r.plan_id = $1 and r.absent_asset_tag = t.tag) r on true
         where r.found is null
         union all
         select 'cable:' || t.tag from unnest($6::text[]) as t(tag)
         left join lateral (select true as found from execution_plan_reads r
                            where r.plan_id = $1 and r.absent_cable_tag = t.tag) r on true
         where r.found is null
         union all
         select 'findings:' || f.asset_id || ':' || f.rule_id
         from unnest($7::uuid[], $8::uuid[], $9::bigint[]) as f(asset_id, rule_id, version)
         left join lateral (select r.version from execution_plan_reads r
                            where r.plan_id = $1 and r.finding_asset = f.asset_id
                              and r.finding_rule = f.rule_id) r on true
         where r.version is distinct from f.version
         limit $10",
    )
    .bind(plan_id)
    .bind(&ids.0)
    .bind(&ids.1)
    .bind(correlation_id)
    .bind(&absent.0)
    .bind(&absent.1)
    .bind(&findings.0)
    .bind(&findings.1)
    .bind(&findings.2)
    .bind(MAX_DRIFTED as i64)
    .fetch_all(connection)
    .await?;
    Ok(rows.into_iter().map(|(key,)| key).collect())
}

/// Of `reads` (a chunk's [`unverified`] ones), those not confirmed as the plan read
/// them: an aggregate at another version than the plan's (or one the plan did not
/// read), findings with another fingerprint, and every tag seen free. The
/// plan's rows never change, so this needs no lock and runs while the chunk is planned
/// ahead; only what it returns (usually nothing: what this apply changed itself, or
/// real drift) is checked again under lock, with the apply's own events, by
/// [`drifted`].
pub async fn unconfirmed(
    connection: &mut PgConnection,
    plan_id: Uuid,
    reads: &BTreeMap<Read, i64>,
) -> Result<BTreeMap<Read, i64>, sqlx::Error> {
    let ReadColumns { ids, findings, .. } = ReadColumns::of(reads);
    if ids.0.is_empty() && findings.0.is_empty() {
        return Ok(reads.clone());
    }
    // The ids, and the assets whose findings, that are not as the plan read them.
    let differing: HashSet<(Uuid, Option<Uuid>)> = sqlx::query_as(
        "select k.id, null::uuid from unnest($2::uuid[], $3::bigint[]) as k(id, version)
         left join lateral (select r.version from execution_plan_reads r
                            where r.plan_id = $1 and r.aggregate_id = k.id) r on true
         where k.version <> coalesce(r.version, 0)
         union all
         select f.asset_id, f.rule_id
         from unnest($4::uuid[], $5::uuid[], $6::bigint[]) as f(asset_id, rule_id, version)
         left join lateral (select r.version from execution_plan_reads r
                            where r.plan_id = $1 and r.finding_asset = f.asset_id
                              and r.finding_rule = f.rule_id) r on true
         where r.version is distinct from f.version",
    )
    .bind(plan_id)
    .bind(&ids.0)
    .bind(&ids.1)
    .bind(&findings.0)
    .bind(&findings.1)
    .bind(&findings.2)
    .fetch_all(connection)
    .await?
    .into_iter()
    .collect();
    // Tags stay for `drifted` (few: those the plan did not create).
    Ok(reads
        .iter()
        .filter(|(read, _)| match read {
            Read::Id(id) => differing.contains(&(*id, None)),
            Read::Findings { asset, rule } => differing.contains(&(*asset, Some(*rule))),
            Read::AbsentTag(_) | Read::AbsentCable(_) => true,
        })
        .map(|(read, version)| (read.clone(), *version))
        .collect())
}

/// A chunk's reads as the columns the plan checks bind: ids and their versions; tags
/// seen free (assets, cables); findings' assets, rules and fingerprints.
struct ReadColumns<'a> {
    ids: (Vec<Uuid>, Vec<i64>),
    absent: (Vec<&'a str>, Vec<&'a str>),
    findings: (Vec<Uuid>, Vec<Uuid>, Vec<i64>),
}

impl<'a> ReadColumns<'a> {
    fn of(reads: &'a BTreeMap<Read, i64>) -> Self {
        let mut columns = Self {
            ids: (Vec::new(), Vec::new()),
            absent: (Vec::new(), Vec::new()),
            findings: (Vec::new(), Vec::new(), Vec::new()),
        };
        for (read, version) in reads {
            match read {
                Read::Id(id) => {
                    columns.ids.0.push(*id);
                    columns.ids.1.push(*version);
                }
                Read::AbsentTag(tag) => columns.absent.0.push(tag.as_str()),
                Read::AbsentCable(tag) => columns.absent.1.push(tag.as_str()),
                Read::Findings { asset, rule } => {
                    columns.findings.0.push(*asset);
                    columns.findings.1.push(*rule);
                    columns.findings.2.push(*version);
                }
            }
        }
        columns
    }
}

/// Most keys [`drifted`] names.
pub const MAX_DRIFTED: usize = 20;

/// Something a plan read that is different now.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StaleRead {
    /// An aggregate id, `tag:TAG` / `cable:TAG` for something that did not exist,
    /// `findings:ASSET:RULE` for the open findings of a rule on an asset, or
    /// `relationship:KIND:FROM:TO` for a relationship the plan creates that exists now.
    pub key: String,
    /// `asset`, `cable`, `finding` or `relationship` (for one that is gone, as its
    /// last event says).
    pub aggregate_type: Option<String>,
    /// Its tag now (the tag that was free, for `tag:` and `cable:` keys; the asset's,
    /// for `findings:`; the from asset's, for a relationship); for an aggregate that
    /// is gone, its last tag.
    pub tag: Option<String>,
    /// The version read and the version now; for `findings:`, a fingerprint of the
    /// messages open then and now (0: none).
    pub planned_version: i64,
    pub current_version: i64,
}

/// Start a plan: its row, without a summary until [`close`]. Its reads and creations
/// follow with [`record`].
pub async fn open(
    connection: &mut PgConnection,
    plan_id: Uuid,
    actor: &str,
    request: &super::request::ExecuteRequest,
    rule_versions: &BTreeMap<Uuid, i32>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "insert into execution_plans (plan_id, created_by, request, rule_versions, summary)
         values ($1, $2, $3, $4, 'null')",
    )
    .bind(plan_id)
    .bind(actor)
    .bind(Json(request))
    .bind(Json(rule_versions))
    .execute(connection)
    .await?;
    Ok(())
}

/// Add what one chunk of the plan read (a read the plan made before keeps its version:
/// the plan depends on what was there before it) and the ids it handed out.
pub async fn record(
    connection: &mut PgConnection,
    plan_id: Uuid,
    rule_id: Uuid,
    reads: &BTreeMap<Read, i64>,
    creations: &[Creation],
) -> Result<(), sqlx::Error> {
    if !reads.is_empty() {
        let mut ids = Vec::with_capacity(reads.len());
        let mut asset_tags = Vec::with_capacity(reads.len());
        let mut cable_tags = Vec::with_capacity(reads.len());
        let mut finding_owners = Vec::with_capacity(reads.len());
        for read in reads.keys() {
            let (id, asset_tag, cable_tag, owner) = match read {
                Read::Id(id) => (Some(*id), None, None, (None, None)),
                Read::AbsentTag(tag) => (None, Some(tag.as_str()), None, (None, None)),
                Read::AbsentCable(tag) => (None, None, Some(tag.as_str()), (None, None)),
                Read::Findings { asset, rule } => (None, None, None, (Some(*asset), Some(*rule))),
            };
            ids.push(id);
            asset_tags.push(asset_tag);
            cable_tags.push(cable_tag);
            finding_owners.push(owner);
        }
        let (finding_assets, finding_rules): (Vec<_>, Vec<_>) = finding_owners.into_iter().unzip();
        sqlx::query(
            "insert into execution_plan_reads (plan_id, aggregate_id, absent_asset_tag,
                 absent_cable_tag, finding_asset, finding_rule, version)
             select $1, * from unnest($2::uuid[], $3::text[], $4::text[], $5::uuid[],
                 $6::uuid[], $7::bigint[])
             on conflict do nothing",
        )
        .bind(plan_id)
        .bind(&ids)
        .bind(&asset_tags)
        .bind(&cable_tags)
        .bind(&finding_assets)
        .bind(&finding_rules)
        .bind(reads.values().copied().collect::<Vec<i64>>())
        .execute(&mut *connection)
        .await?;
    }
    if !creations.is_empty() {
        sqlx::query(
            "insert into execution_plan_creations (plan_id, rule_id, key, id, planned_for)
             select $1, $5, * from unnest($2::text[], $3::uuid[], $4::uuid[])",
        )
        .bind(plan_id)
        .bind(creations.iter().map(|c| c.key.as_str()).collect::<Vec<_>>())
        .bind(creations.iter().map(|c| c.id).collect::<Vec<_>>())
        .bind(creations.iter().map(|c| c.planned_for).collect::<Vec<_>>())
        .bind(rule_id)
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// How many assets the dry run of `plan_id` planned `rule_id` over (its summary's
/// count): the total an apply of the plan goes through, which leaves out assets that
/// came to match the filter since.
pub async fn planned_total(
    connection: &mut PgConnection,
    plan_id: Uuid,
    rule_id: Uuid,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(
        "select (rule -> 'counts' ->> 'assets')::int8
         from execution_plans, jsonb_array_elements(summary -> 'rules') rule
         where plan_id = $1 and rule ->> 'rule_id' = $2::text",
    )
    .bind(plan_id)
    .bind(rule_id)
    .fetch_optional(connection)
    .await
    .map(Option::flatten)
}

/// Finish a plan: what it creates did not exist before it, so reading it later is no
/// dependency; the summary is what the dry run answered.
pub async fn close(
    connection: &mut PgConnection,
    plan_id: Uuid,
    summary: &Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "delete from execution_plan_reads r using execution_plan_creations c
         where r.plan_id = $1 and c.plan_id = $1 and r.aggregate_id = c.id",
    )
    .bind(plan_id)
    .execute(&mut *connection)
    .await?;
    sqlx::query("update execution_plans set summary = $2 where plan_id = $1")
        .bind(plan_id)
        .bind(summary)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// Load a plan and lock it, so it is applied at most once.
pub async fn load_for_apply(
    connection: &mut PgConnection,
    plan_id: Uuid,
) -> Result<Option<StoredPlan>, sqlx::Error> {
    sqlx::query_as(
        "select plan_id, request, rule_versions, applied_by_correlation_id
         from execution_plans where plan_id = $1 for update",
    )
    .bind(plan_id)
    .fetch_optional(connection)
    .await
}

pub async fn mark_applied(
    connection: &mut PgConnection,
    plan_id: Uuid,
    correlation_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query("update execution_plans set applied_by_correlation_id = $2 where plan_id = $1")
        .bind(plan_id)
        .bind(correlation_id)
        .execute(connection)
        .await?;
    Ok(())
}

/// What the plan read whose version is different now: how many, and the first `limit`
/// of them.
pub async fn stale_reads(
    connection: &mut PgConnection,
    plan_id: Uuid,
    limit: usize,
) -> Result<(i64, Vec<StaleRead>), sqlx::Error> {
    type Row = (
        Option<Uuid>,
        Option<String>,
        Option<String>,
        Option<Uuid>,
        Option<String>,
        Option<String>,
        Option<String>,
        i64,
        i64,
        i64,
    );
    let rows: Vec<Row> = sqlx::query_as(&format!(
        // One part per kind of read, each joined only with the tables it can name: for
        // 1.5 million reads against 1,000,000 assets and 500,000 cables, 1.2-1.4 s where
        // one query joining every read with all four took 5.4-5.8 s.
        "with checked as (
             select r.aggregate_id, null::text as absent_asset_tag, null::text as absent_cable_tag,
                    null::uuid as finding_rule, null::text as created,
                    case when a.id is not null then 'asset' when c.id is not null then 'cable'
                         when l.id is not null then 'relationship' end as aggregate_type,
                    coalesce(a.tag, c.tag, (select f.tag from assets f where f.id = l.from_asset))
                        as tag,
                    r.version as planned, coalesce(a.version, c.version, l.version, 0) as current
             from execution_plan_reads r
             left join assets a on a.id = r.aggregate_id
             left join cables c on c.id = r.aggregate_id
             left join relationships l on l.id = r.aggregate_id
             where r.plan_id = $1 and r.aggregate_id is not null
             union all
             select null, r.absent_asset_tag, null, null, null, 'asset', r.absent_asset_tag, r.version,
                    coalesce(a.version, 0)
             from execution_plan_reads r
             left join assets a on a.tag = r.absent_asset_tag
             where r.plan_id = $1 and r.absent_asset_tag is not null
             union all
             select null, null, r.absent_cable_tag, null, null, 'cable', r.absent_cable_tag, r.version,
                    coalesce(c.version, 0)
             from execution_plan_reads r
             left join cables c on c.tag = r.absent_cable_tag
             where r.plan_id = $1 and r.absent_cable_tag is not null
             union all
             select r.finding_asset, null, null, r.finding_rule, null, 'finding', a.tag, r.version,
                    (select {FINDINGS_FINGERPRINT} from findings f
                     where f.asset_id = r.finding_asset and f.rule_id = r.finding_rule)
             from execution_plan_reads r
             left join assets a on a.id = r.finding_asset
             where r.plan_id = $1 and r.finding_asset is not null
             union all
             -- A relationship the plan creates (`relationship:KIND:FROM:TO`, both ends
             -- 36 characters) that exists now: the plan found it absent.
             select null, null, null, null, c.key, 'relationship', a.tag, 0, l.version
             from execution_plan_creations c
             join relationships l
                 on l.kind = substr(c.key, 14, length(c.key) - 13 - 74)
                 and l.from_asset = substr(right(c.key, 73), 1, 36)::uuid
                 and l.to_asset = right(c.key, 36)::uuid
             left join assets a on a.id = l.from_asset
             where c.plan_id = $1 and c.key like 'relationship:%' and l.id <> c.id
         )
         select aggregate_id, absent_asset_tag, absent_cable_tag, finding_rule, created,
                aggregate_type, tag, planned, current, count(*) over ()
         from checked where current <> planned
         order by aggregate_id, absent_asset_tag, absent_cable_tag, finding_rule, created
         limit $2",
    ))
    .bind(plan_id)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut *connection)
    .await?;
    let count = rows.first().map_or(0, |row| row.9);
    let stale = rows
        .into_iter()
        .map(
            |(
                id,
                asset_tag,
                cable_tag,
                finding_rule,
                created,
                aggregate_type,
                tag,
                planned,
                current,
                _,
            )| {
                let key = match (id, asset_tag, cable_tag, finding_rule, created) {
                    (_, _, _, _, Some(created)) => created,
                    (Some(asset), _, _, Some(rule), _) => {
                        Read::Findings { asset, rule }.to_string()
                    }
                    (Some(id), _, _, None, _) => Read::Id(id).to_string(),
                    (None, Some(tag), _, _, _) => Read::AbsentTag(tag).to_string(),
                    (None, None, cable, _, _) => {
                        Read::AbsentCable(cable.unwrap_or_default()).to_string()
                    }
                };
                StaleRead {
                    key,
                    aggregate_type,
                    tag,
                    planned_version: planned,
                    current_version: current,
                }
            },
        )
        .collect();
    Ok((count, named_from_the_log(connection, stale).await?))
}

/// Stale reads of aggregates that are gone, with their type and tag as their last event
/// says (for a relationship, its from asset's tag if that asset is still there), so
/// an engineer reads what was deleted rather than an id alone.
async fn named_from_the_log(
    connection: &mut PgConnection,
    mut stale: Vec<StaleRead>,
) -> Result<Vec<StaleRead>, sqlx::Error> {
    let gone: Vec<Uuid> = stale
        .iter()
        .filter(|read| read.aggregate_type.is_none())
        .filter_map(|read| read.key.parse().ok())
        .collect();
    if gone.is_empty() {
        return Ok(stale);
    }
    let named: HashMap<Uuid, (String, Option<String>)> =
        sqlx::query_as::<_, (Uuid, String, Option<String>)>(
            "select g.id, e.aggregate_type,
             coalesce(e.payload->'before'->>'tag', e.payload->'after'->>'tag',
                      (select a.tag from assets a
                       where a.id = (e.payload->'before'->>'from_asset')::uuid))
         from unnest($1::uuid[]) as g(id)
         join lateral (select aggregate_type, payload from workflow_events
                       where aggregate_id = g.id
                       order by aggregate_version desc limit 1) e on true",
        )
        .bind(&gone)
        .fetch_all(connection)
        .await?
        .into_iter()
        .map(|(id, aggregate_type, tag)| (id, (aggregate_type, tag)))
        .collect();
    for read in &mut stale {
        let Ok(id) = read.key.parse::<Uuid>() else {
            continue;
        };
        if let (None, Some((aggregate_type, tag))) = (&read.aggregate_type, named.get(&id)) {
            read.aggregate_type = Some(aggregate_type.clone());
            read.tag = tag.clone();
        }
    }
    Ok(stale)
}

/// A chunk of a plan's apply: what of its page the plan covers, with which ids.
#[derive(Debug, Default)]
pub struct PlanChunk {
    /// The page's assets the plan covers (it read them, or created them).
    pub page: Vec<AssetState>,
    /// The ids the plan promised for what planning them creates.
    pub ids: Ids,
    /// The versions the plan read of the aggregates in the chunk's range of ids.
    pub versions: PlannedVersions,
    /// The aggregates the plan read in the chunk's range that are not on its page
    /// (gone since the plan, left out by the filter now, or looked up by some other
    /// asset), at their versions now (0: gone). They are read for the check alone: an
    /// asset deleted, or no longer selected, since the plan would otherwise be left
    /// out of the apply without a word.
    pub elsewhere: BTreeMap<Read, i64>,
}

/// The chunk of `page`, the assets after `after` up to the page's last (after
/// `after` to the end, if the page is empty): the part of `page` the plan covers,
/// the ids it promised them, what it read in the range.
///
/// A page is a run of assets in id order, so the plan's rows are read as ranges of
/// ids (what else falls in the range is left out of the page): a range scan of an
/// index, which the planner picks however large the plan, where a list of ids let it
/// hash the whole plan's rows for every chunk. The ranges of a rule's chunks follow
/// each other without a gap, so every aggregate the plan read falls in one of them.
pub async fn chunk(
    connection: &mut PgConnection,
    plan_id: Uuid,
    rule_id: Uuid,
    after: Uuid,
    page: Vec<AssetState>,
) -> Result<PlanChunk, sqlx::Error> {
    let last = page
        .iter()
        .map(|asset| asset.id)
        .max()
        .unwrap_or(Uuid::max());
    // What the plan read in the range, at which version (none: the plan created it).
    let rows: Vec<(Uuid, Option<i64>)> = sqlx::query_as(
        "select aggregate_id, version from execution_plan_reads
         where plan_id = $1 and aggregate_id is not null and aggregate_id > $2
           and aggregate_id <= $3
         union all
         select id, null from execution_plan_creations
         where plan_id = $1 and id > $2 and id <= $3",
    )
    .bind(plan_id)
    .bind(after)
    .bind(last)
    .fetch_all(&mut *connection)
    .await?;
    let covered: HashSet<Uuid> = rows.iter().map(|(id, _)| *id).collect();
    let versions: PlannedVersions = rows
        .into_iter()
        .filter_map(|(id, version)| Some((id, version?)))
        .collect();
    // What the plan promised for the range's assets, and whether this rule owes it.
    // Plans made before creations named their asset have `planned_for` null: theirs
    // come with every chunk, owed by none.
    let promised: Vec<(String, Uuid, bool)> = sqlx::query_as(
        "select key, id, coalesce(rule_id = $4, false) from execution_plan_creations
         where plan_id = $1 and planned_for > $2 and planned_for <= $3
         union all
         select key, id, false from execution_plan_creations
         where plan_id = $1 and planned_for is null",
    )
    .bind(plan_id)
    .bind(after)
    .bind(last)
    .bind(rule_id)
    .fetch_all(&mut *connection)
    .await?;
    let owed = promised
        .iter()
        .filter(|(_, _, owed)| *owed)
        .map(|(key, _, _)| key.clone())
        .collect();
    let promised = promised.into_iter().map(|(key, id, _)| (key, id)).collect();
    let on_page: HashSet<Uuid> = page.iter().map(|asset| asset.id).collect();
    let others: Vec<Uuid> = versions
        .keys()
        .filter(|id| !on_page.contains(id))
        .copied()
        .collect();
    let elsewhere = current_versions(connection, &others).await?;
    let page = page
        .into_iter()
        .filter(|asset| covered.contains(&asset.id))
        .collect();
    Ok(PlanChunk {
        page,
        ids: Ids::from_plan(promised, owed),
        versions,
        elsewhere,
    })
}

/// The versions of these assets, cables or relationships now, 0 for those gone.
async fn current_versions(
    connection: &mut PgConnection,
    ids: &[Uuid],
) -> Result<BTreeMap<Read, i64>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "select k.id, coalesce(a.version, c.version, l.version, 0)
         from unnest($1::uuid[]) as k(id)
         left join assets a on a.id = k.id
         left join cables c on c.id = k.id
         left join relationships l on l.id = k.id",
    )
    .bind(ids)
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, version)| (Read::Id(id), version))
        .collect())
}

/// The versions a plan read of the aggregates in a chunk's range of ids.
pub type PlannedVersions = HashMap<Uuid, i64>;

/// The reads of a chunk of a plan's apply that [`drifted`] must still check: those not
/// already known to be as planned, because the version read is the one the plan read
/// (the chunk's `versions`), or the tag found free is one the plan created (its
/// `ids`). The chunk's reads `elsewhere` count too. What is left is usually a few
/// shared lookups (an MCC), so the check under lock stays small.
pub fn unverified(reads: &BTreeMap<Read, i64>, chunk: &PlanChunk) -> BTreeMap<Read, i64> {
    // Elsewhere first: a chunk's own read of an aggregate, locked, is the one kept.
    chunk
        .elsewhere
        .iter()
        .chain(reads)
        .filter(|(read, version)| match read {
            Read::Id(id) => chunk.versions.get(id) != Some(version),
            Read::AbsentTag(tag) => !chunk.ids.promises(&format!("asset:{tag}")),
            Read::AbsentCable(tag) => !chunk.ids.promises(&format!("cable:{tag}")),
            Read::Findings { .. } => true,
        })
        .map(|(read, version)| (read.clone(), *version))
        .collect()
}
