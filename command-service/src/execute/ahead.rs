//! Planning the next chunk while the current one is written.
//!
//! A locked chunk is strictly serial: while the service plans, Postgres waits, and
//! while Postgres writes and commits, the service waits. So the runner plans chunk N+1
//! (reading without locks, on its own connection) while chunk N is written. The plan
//! starts from chunk N's planned changes ([`World::carry_over`]), which are committed
//! by the time chunk N+1 is written. The writer then locks everything the plan read
//! and checks that every version is still the one planned with; if anything changed
//! (another batch got there first), the plan is dropped and the chunk is done the
//! locked way. Either way each chunk is one transaction with its snapshots and events.

use super::apply::{self, Counts, StateWrites};
use super::planner::Claims;
use super::plans;
use super::request::AssetFilter;
use super::runner::{plan_chunk, scope, Reads};
use super::world::{Read, World, FINDINGS_FINGERPRINT};
use crate::assets::store::{self as asset_store, PageRead, Selection};
use crate::rules::definition::CompiledRule;
use crate::store::batches::Batch;
use crate::store::statistics::Table;
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeMap, HashSet};
use synapse_shared::NewEvent;
use tokio_util::task::AbortOnDropHandle;
use uuid::Uuid;

/// A chunk planned without locks.
pub struct Planned {
    /// The last asset id of the page (the next chunk starts after it).
    pub last: Uuid,
    /// The page was as long as asked for: more assets may follow. A shorter page was
    /// the end when it was read, which is only final once every chunk has committed.
    pub full: bool,
    /// What the chunk's outcomes count.
    pub counts: Counts,
    pub world: World,
    /// The chunk's state writes and events, built here rather than in the writer's
    /// transaction (its events carry versions of a detached batch: see `Batch::adopt`).
    pub writes: StateWrites,
    pub events: Vec<NewEvent>,
    /// When applying a stored plan: the reads not found as the plan read them
    /// ([`plans::unverified`], [`plans::unconfirmed`]), for the writer to check under
    /// lock, allowing for what the apply changed itself.
    pub unverified: BTreeMap<Read, i64>,
    /// When applying a stored plan: the keys of what it would create that the plan did
    /// not promise, and of what the plan promised that it would not create
    /// ([`Ids::take_departures`](super::planner::Ids::take_departures)).
    pub departures: Vec<String>,
}

/// What planning ahead needs, owned, so it can run as its own task.
#[derive(Clone)]
pub struct Planning {
    pub pool: PgPool,
    pub rule: CompiledRule,
    pub filter: AssetFilter,
    /// When applying a stored plan: the plan.
    pub plan: Option<Uuid>,
    /// The running batch, detached ([`Batch::detached`]).
    pub batch: Batch,
    pub selection: Selection,
    /// The targets the rule's run upserts, and which asset holds each.
    pub claims: Claims,
}

/// A plan in the making; dropping it aborts it.
pub type Ahead = AbortOnDropHandle<Result<Option<Planned>, sqlx::Error>>;

impl Planning {
    /// Plan the page after `after` (at most `limit` assets) in a task of its own,
    /// starting from `world`. `None` when the page is empty.
    pub fn spawn(&self, after: Uuid, limit: i64, world: World) -> Ahead {
        let planning = self.clone();
        AbortOnDropHandle::new(tokio::spawn(async move {
            planning.plan(after, limit, world).await
        }))
    }

    async fn plan(
        mut self,
        after: Uuid,
        limit: i64,
        world: World,
    ) -> Result<Option<Planned>, sqlx::Error> {
        let mut connection = self.pool.acquire().await?;
        let page = asset_store::page_for_execution(
            &mut connection,
            &self.filter,
            self.selection,
            after,
            limit,
            PageRead::Unlocked,
        )
        .await?;
        let Some(last) = page.last().map(|asset| asset.id) else {
            return Ok(None);
        };
        let full = page.len() as i64 == limit;
        let mut scoped = scope(&mut connection, self.plan, &self.rule, after, page).await?;
        let (outcomes, world) = plan_chunk(
            &mut connection,
            &self.rule,
            std::mem::take(&mut scoped.page),
            &mut scoped.ids,
            world,
            Reads::Optimistic,
            &self.claims,
        )
        .await?;
        let unverified = match self.plan {
            Some(plan_id) => {
                let unverified = plans::unverified(world.read_versions(), &scoped);
                plans::unconfirmed(&mut connection, plan_id, &unverified).await?
            }
            None => BTreeMap::new(),
        };
        let departures = scoped.ids.take_departures();
        let counts = Counts::of(&outcomes);
        // In microseconds, as Postgres keeps it: the events say what the rows hold.
        let raised_at = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6);
        let events = apply::events(&mut self.batch, &self.rule, &outcomes, raised_at);
        let writes = StateWrites::of(outcomes, raised_at);
        Ok(Some(Planned {
            last,
            full,
            counts,
            world,
            writes,
            events,
            unverified,
            departures,
        }))
    }
}

/// Lock everything a plan read and tell whether each is still at the version the plan
/// read; absent tags must still be absent; the open findings read must still be the
/// same. A tag created concurrently after this check fails the write on its unique
/// index, which the runner treats like a stale plan.
///
/// Findings have no rows to lock when there are none, so their asset's row stands in:
/// an execution's chunk that changes an asset's findings holds it `for no key update`
/// (as `written`), an asset's deletion `for update`, and a plan that read them holds
/// it at least `for share` until its commit. A rollback does not lock them: it
/// changes only what it finds (`returning`), and a chunk whose raise or resolution it
/// got to first is refused by [`StateWrites::write`](super::apply::StateWrites::write).
///
/// What the chunk will change (`written`) is locked `for no key update`, as the update
/// itself would; what it only read is locked `for share`, which keeps it from changing
/// until the commit but lets other chunks read it too. So two chunks that both read the
/// same MCC (every motor's power cable starts there) do not wait for each other's
/// commit, which `for update` on everything made them do. Rows are locked one by one in
/// id order, assets before cables before relationships, whatever the mode, so two
/// writers lock in one order.
pub async fn still_current(
    connection: &mut PgConnection,
    read_versions: &BTreeMap<Read, i64>,
    written: &HashSet<Uuid>,
) -> Result<bool, sqlx::Error> {
    let mut ids = Vec::new();
    let mut absent_assets = Vec::new();
    let mut absent_cables = Vec::new();
    let mut findings = Vec::new();
    for (key, version) in read_versions {
        match key {
            Read::Id(id) => ids.push(*id),
            Read::AbsentTag(tag) => absent_assets.push(tag.as_str()),
            Read::AbsentCable(tag) => absent_cables.push(tag.as_str()),
            Read::Findings { asset, rule } => findings.push((*asset, *rule, *version)),
        }
    }
    ids.sort_unstable();
    // Ids are of assets, cables or relationships: assets first, then the cables among
    // the ids that are no asset, then the relationships among the rest (usually none of
    // either: what a rule creates is new).
    let mut current = Vec::with_capacity(ids.len());
    let mut others = ids.clone();
    for table in Table::ALL {
        if others.is_empty() {
            break;
        }
        let found = lock_versions(connection, table, &others, written).await?;
        let found_ids: HashSet<Uuid> = found.iter().map(|(id, _)| *id).collect();
        others.retain(|id| !found_ids.contains(id));
        current.extend(found);
    }
    let unchanged = current.len() == ids.len()
        && current
            .iter()
            .all(|(id, version)| read_versions.get(&Read::Id(*id)) == Some(version));
    if !unchanged || !findings_unchanged(connection, &findings).await? {
        return Ok(false);
    }
    if absent_assets.is_empty() && absent_cables.is_empty() {
        return Ok(true);
    }
    let (created,): (bool,) = sqlx::query_as(
        "select exists (select 1 from assets where tag = any($1))
             or exists (select 1 from cables where tag = any($2))",
    )
    .bind(&absent_assets)
    .bind(&absent_cables)
    .fetch_one(&mut *connection)
    .await?;
    Ok(!created)
}

/// Whether the open findings of each (asset, rule, fingerprint read) still have that
/// fingerprint. The caller holds the assets' rows.
async fn findings_unchanged(
    connection: &mut PgConnection,
    read: &[(Uuid, Uuid, i64)],
) -> Result<bool, sqlx::Error> {
    if read.is_empty() {
        return Ok(true);
    }
    let (changed,): (bool,) = sqlx::query_as(&format!(
        "select exists (
             select 1 from unnest($1::uuid[], $2::uuid[], $3::bigint[]) as r(asset_id, rule_id, version)
             where r.version <> (select {FINDINGS_FINGERPRINT} from findings f
                                 where f.asset_id = r.asset_id and f.rule_id = r.rule_id))"
    ))
    .bind(read.iter().map(|r| r.0).collect::<Vec<_>>())
    .bind(read.iter().map(|r| r.1).collect::<Vec<_>>())
    .bind(read.iter().map(|r| r.2).collect::<Vec<_>>())
    .fetch_one(&mut *connection)
    .await?;
    Ok(!changed)
}

/// Lock the rows of `table` with these ids (sorted), in that order, each in the mode
/// its use needs ([`still_current`]), and read their versions; missing rows are left
/// out.
async fn lock_versions(
    connection: &mut PgConnection,
    table: Table,
    ids: &[Uuid],
    written: &HashSet<Uuid>,
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    let writes: Vec<bool> = ids.iter().map(|id| written.contains(id)).collect();
    // A nested loop over the ids in the order given: each row is locked when its id
    // comes up, by whichever of the two lateral reads applies to it.
    sqlx::query_as(&format!(
        "select k.id, coalesce(w.version, r.version)
         from unnest($1::uuid[], $2::bool[]) with ordinality as k(id, write, n)
         left join lateral (select version from {table} t where t.id = k.id and k.write
             for no key update) w on true
         left join lateral (select version from {table} t where t.id = k.id and not k.write
             for share) r on true
         where coalesce(w.version, r.version) is not null
         order by k.n",
        table = table.name()
    ))
    .bind(ids)
    .bind(&writes)
    .fetch_all(&mut *connection)
    .await
}
