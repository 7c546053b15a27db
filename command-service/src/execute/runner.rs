//! Running an execution: rule by rule (in priority order), chunk by chunk (in asset id
//! order), each chunk one transaction with its snapshots and events, so progress is
//! visible while a large batch runs and memory stays flat.

use super::ahead::{self, Ahead, Planned, Planning};
use super::apply::{self, AssetOutcome, Counts, StateWrites};
use super::planner::{self, Claims, Ids};
use super::plans;
use super::request::AssetFilter;
use super::world::{FindingOwner, Loaded, OpenFinding, World, FINDINGS_FINGERPRINT};
use crate::assets::store::{self as asset_store, PageRead, Selection};
use crate::links::{cable_store as cables, relationship_store as relationships};
use crate::rules::definition::CompiledRule;
use crate::store::batches::{self, Batch, BatchStatus};
use crate::store::statistics::Growth;
use crate::store::{append, AppendError};
use anyhow::Context;
use serde::Serialize;
use serde_json::json;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use synapse_shared::domain::CableState;
use synapse_shared::shutdown::CancellationToken;
use synapse_shared::{EventType, NewEvent};
use uuid::Uuid;

/// Assets per chunk: one transaction. Big enough that per-transaction costs vanish,
/// small enough that a chunk's locks and events stay short-lived (a few MB).
pub const CHUNK_SIZE: i64 = 1_000;
/// The smallest chunk [`Pace`] goes down to for slow rules.
const MIN_CHUNK_SIZE: i64 = 50;
/// Each chunk ends with a `BATCH_PROGRESS`: chunks are kept short enough that one
/// comes at least this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How often a chunk is retried after a deadlock, serialization failure or a tag
/// created concurrently by another batch.
const CHUNK_ATTEMPTS: u32 = 5;
/// How many times planning may discover things it needs to load (a chain of lookups
/// such as "cable to the VFD this rule creates" needs two rounds).
const DISCOVERY_ROUNDS: usize = 4;

/// What one rule did over the whole batch.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RuleReport {
    pub rule_id: Uuid,
    pub rule_version: i32,
    pub name: String,
    pub counts: Counts,
}

/// What an execution did.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Report {
    pub correlation_id: Uuid,
    /// `completed` or `failed`.
    pub status: String,
    pub rules: Vec<RuleReport>,
    pub totals: Counts,
    pub duration_ms: u64,
    pub error: Option<String>,
}

/// A real execution, started after its `BATCH_STARTED` was committed.
pub struct Execution {
    pub pool: PgPool,
    pub batch: Batch,
    pub rules: Vec<CompiledRule>,
    pub filter: AssetFilter,
    /// When applying a stored plan: the plan, which says which assets of each chunk it
    /// covers and which ids it promised them.
    pub plan: Option<Uuid>,
    pub shutdown: CancellationToken,
    /// What the batch created so far, to keep the planner's statistics current.
    pub growth: Growth,
}

impl Execution {
    /// Run every rule; the batch ends `BATCH_COMPLETED` or `BATCH_FAILED`.
    pub async fn run(mut self) -> Report {
        let started = Instant::now();
        tracing::info!(
            correlation_id = %self.batch.correlation_id,
            actor = %self.batch.actor,
            rules = self.rules.len(),
            plan_id = ?self.plan,
            "execution started"
        );
        let alive = CancellationToken::new();
        tokio::spawn(crate::recovery::heartbeat(
            self.pool.clone(),
            self.batch.correlation_id,
            alive.clone(),
        ));
        let _stop_heartbeat = alive.drop_guard();
        let mut reports = Vec::new();
        let mut failure = None;
        let mut earlier = Arc::default();
        for rule in self.rules.clone() {
            // What the rule's committed chunks did: a rule that fails keeps the counts
            // of the chunks that landed before it failed, as the log has their events.
            let mut counts = Counts::default();
            let claims = Claims::after(earlier);
            let outcome = self.run_rule(&rule, &claims, &mut counts).await;
            earlier = claims.with_earlier(rule.id);
            reports.push(RuleReport {
                rule_id: rule.id,
                rule_version: rule.version,
                name: rule.name.clone(),
                counts,
            });
            if let Err(error) = outcome {
                failure = Some(error);
                break;
            }
        }
        let mut totals = Counts::default();
        reports
            .iter()
            .for_each(|report| totals.merge(&report.counts));
        let duration_ms = started.elapsed().as_millis() as u64;
        let error = failure.map(|error| format!("{error:#}"));
        let status = self
            .finish(&reports, &totals, duration_ms, error.as_deref())
            .await;
        tracing::info!(
            correlation_id = %self.batch.correlation_id,
            status = status.as_str(),
            duration_ms,
            assets = totals.assets,
            executed = totals.executed,
            skipped = totals.skipped,
            errors = totals.errors,
            error = error.as_deref(),
            "execution finished"
        );
        Report {
            correlation_id: self.batch.correlation_id,
            status: status.as_str().to_owned(),
            rules: reports,
            totals,
            duration_ms,
            error,
        }
    }

    /// Run `rule` chunk by chunk; `counts` are those of the chunks committed so far,
    /// also when it fails.
    async fn run_rule(
        &mut self,
        rule: &CompiledRule,
        claims: &Claims,
        counts: &mut Counts,
    ) -> anyhow::Result<()> {
        let mut attempt = 0;
        let selection = loop {
            let batch = self.batch.clone();
            match self.start_rule(rule).await {
                Ok(selection) => break selection,
                Err(error) if attempt + 1 < CHUNK_ATTEMPTS && retryable(&error) => {
                    self.batch = batch;
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
                }
                Err(error) => return Err(error.into()),
            }
        };
        let total = selection.total;

        let mut after = Uuid::nil();
        let mut pace = Pace::new();
        let mut planning = Planning {
            pool: self.pool.clone(),
            rule: rule.clone(),
            filter: self.filter.clone(),
            plan: self.plan,
            batch: self.batch.detached(),
            selection,
            claims: claims.clone(),
        };
        // The plan of the next chunk, made while this one is written (dropping it
        // aborts it).
        let mut ahead: Option<Ahead> = None;
        // The chunk whose events are appended and committed while the next one writes
        // its state.
        let mut committing: Option<Committing> = None;
        loop {
            let planned: anyhow::Result<Option<Planned>> = if self.shutdown.is_cancelled() {
                Err(anyhow::anyhow!(
                    "the command service shut down during the batch"
                ))
            } else {
                match ahead.take() {
                    Some(ahead) => flatten(ahead.await, "planning a chunk ahead"),
                    // After the chunk still committing, if one is.
                    None => flatten(
                        planning
                            .spawn(
                                committing.as_ref().map_or(after, |chunk| chunk.undo.last),
                                pace.size,
                                World::default(),
                            )
                            .await,
                        "planning a chunk",
                    ),
                }
            };
            let planned = match planned {
                Ok(planned) => planned,
                Err(error) => {
                    // The batch ends here; the chunk already sealed still lands, so
                    // the batch's versions stay without a gap.
                    if let Some(chunk) = committing.take() {
                        let committed = chunk.commit.await;
                        self.settle(chunk.undo, committed, &mut after, counts, &mut pace)?;
                    }
                    return Err(error);
                }
            };
            // Whether the next chunk is done the locked way: nothing was planned (nothing
            // was left when the page was read: read again, locked, once every earlier
            // chunk has committed), or the plan is stale.
            let mut locked = planned.is_none();
            match planned {
                Some(planned) => {
                    if planned.full {
                        ahead = Some(planning.spawn(
                            planned.last,
                            pace.size,
                            planned.world.carry_over(),
                        ));
                    }
                    let (previous, prepared) = match committing.take() {
                        Some(chunk) => {
                            let (committed, prepared) =
                                tokio::join!(chunk.commit, self.prepare(rule, planned));
                            (Some((chunk.undo, committed)), prepared)
                        }
                        None => (None, self.prepare(rule, planned).await),
                    };
                    let previous_committed = match previous {
                        Some((undo, committed)) => {
                            self.settle(undo, committed, &mut after, counts, &mut pace)?
                        }
                        None => true,
                    };
                    match prepared {
                        // Planned on top of a chunk that did not commit: dropped (its
                        // transaction rolls back), like the plans made after it.
                        _ if !previous_committed => locked = true,
                        Ok(Prepare::Ready(prepared)) => {
                            committing = Some(self.seal(rule, *prepared, counts, total));
                        }
                        Ok(Prepare::Stale) => {
                            replanned("something a chunk planned ahead read has changed");
                            locked = true;
                        }
                        Ok(Prepare::Drifted(keys)) => return Err(drifted(&keys)),
                        Err(error) if retryable(&error) => {
                            replanned("a chunk planned ahead ran into another writer");
                            locked = true;
                        }
                        Err(error) => return Err(error.into()),
                    }
                }
                None => {
                    if let Some(chunk) = committing.take() {
                        let committed = chunk.commit.await;
                        self.settle(chunk.undo, committed, &mut after, counts, &mut pace)?;
                    }
                }
            }
            if locked {
                // Whatever was planned ahead was planned on what is being redone. If the
                // rule had no findings open when the batch started, it may have now.
                ahead = None;
                planning.rule.may_have_open_findings |= rule.owns_findings;
                match self
                    .chunk_with_retries(rule, &planning.claims, selection, after, counts, pace.size)
                    .await?
                {
                    Some(last) => {
                        after = last;
                        pace.committed();
                    }
                    None => break,
                }
            }
        }
        let mut attempt = 0;
        loop {
            let batch = self.batch.clone();
            match self.complete_rule(rule, counts).await {
                Ok(()) => return Ok(()),
                Err(error) if attempt + 1 < CHUNK_ATTEMPTS && retryable(&error) => {
                    self.batch = batch;
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// `RULE_EXECUTION_STARTED` of `rule`, with the assets it runs over: those selected
    /// now, not what this rule (or anyone) creates meanwhile.
    async fn start_rule(&mut self, rule: &CompiledRule) -> Result<Selection, AppendError> {
        let mut transaction = self.pool.begin().await?;
        let mut selection =
            asset_store::select_for_execution(&mut transaction, &self.filter).await?;
        if let Some(plan_id) = self.plan {
            // An apply goes through what the plan covers, not what matches now.
            if let Some(total) = plans::planned_total(&mut transaction, plan_id, rule.id).await? {
                selection.total = total;
            }
        }
        let payload = json!({"rule_id": rule.id, "rule_version": rule.version, "name": rule.name, "total": selection.total});
        let started = apply::rule_event(
            &mut self.batch,
            rule,
            EventType::RuleExecutionStarted,
            payload,
        );
        batches::record(&mut transaction, &self.batch, BatchStatus::Running).await?;
        append(&mut transaction, vec![started]).await?;
        transaction.commit().await?;
        Ok(selection)
    }

    /// `RULE_EXECUTION_COMPLETED` of `rule` with its final `counts`.
    async fn complete_rule(
        &mut self,
        rule: &CompiledRule,
        counts: &Counts,
    ) -> Result<(), AppendError> {
        let mut transaction = self.pool.begin().await?;
        let payload = json!({"rule_id": rule.id, "rule_version": rule.version, "name": rule.name, "counts": counts});
        let completed = apply::rule_event(
            &mut self.batch,
            rule,
            EventType::RuleExecutionCompleted,
            payload,
        );
        batches::record(&mut transaction, &self.batch, BatchStatus::Running).await?;
        append(&mut transaction, vec![completed]).await?;
        transaction.commit().await?;
        Ok(())
    }

    async fn chunk_with_retries(
        &mut self,
        rule: &CompiledRule,
        claims: &Claims,
        selection: Selection,
        after: Uuid,
        counts: &mut Counts,
        limit: i64,
    ) -> anyhow::Result<Option<Uuid>> {
        let mut attempt = 0;
        loop {
            let batch = self.batch.clone();
            let mut chunk_counts = *counts;
            match self
                .chunk(rule, claims, selection, after, &mut chunk_counts, limit)
                .await
            {
                Ok(Locked::Committed(last)) => {
                    *counts = chunk_counts;
                    return Ok(Some(last));
                }
                Ok(Locked::Done) => return Ok(None),
                Ok(Locked::Drifted(keys)) => return Err(drifted(&keys)),
                Err(error) if attempt + 1 < CHUNK_ATTEMPTS && retryable(&error) => {
                    tracing::info!(%error, attempt, correlation_id = %self.batch.correlation_id, "retrying chunk");
                    self.batch = batch;
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
                }
                Err(error) => return Err(given_up(error, attempt + 1)),
            }
        }
    }

    /// One chunk in one transaction, everything it reads locked; `None` when no
    /// assets are left.
    async fn chunk(
        &mut self,
        rule: &CompiledRule,
        claims: &Claims,
        selection: Selection,
        after: Uuid,
        counts: &mut Counts,
        limit: i64,
    ) -> Result<Locked, AppendError> {
        let mut transaction = self.pool.begin().await?;
        let page = asset_store::page_for_execution(
            &mut transaction,
            &self.filter,
            selection,
            after,
            limit,
            PageRead::Locked,
        )
        .await?;
        let last = page.last().map(|asset| asset.id);
        let mut scoped = scope(&mut transaction, self.plan, rule, after, page).await?;
        let Some(last) = last else {
            // What the plan read after the last asset must be as it read it too.
            let unverified = plans::unverified(&std::collections::BTreeMap::new(), &scoped);
            return Ok(match self.drift(&mut transaction, &unverified).await? {
                Some(keys) => Locked::Drifted(keys),
                None => Locked::Done,
            });
        };
        let (outcomes, world) = plan_chunk(
            &mut transaction,
            rule,
            std::mem::take(&mut scoped.page),
            &mut scoped.ids,
            World::default(),
            Reads::Locked,
            claims,
        )
        .await?;
        let unverified = match self.plan {
            Some(_) => plans::unverified(world.read_versions(), &scoped),
            None => std::collections::BTreeMap::new(),
        };
        let departures = scoped.ids.take_departures();
        if !departures.is_empty() {
            return Ok(Locked::Drifted(departures));
        }
        if let Some(keys) = self.drift(&mut transaction, &unverified).await? {
            return Ok(Locked::Drifted(keys));
        }
        self.write_chunk(&mut transaction, rule, outcomes, counts, selection.total)
            .await?;
        transaction.commit().await?;
        Ok(Locked::Committed(last))
    }

    /// When applying a stored plan: what this chunk read (locked, or checked current
    /// under lock) that is not what the plan read, allowing for this batch's own
    /// changes ([`plans::drifted`]); `None` when it is all as planned, or no plan is
    /// applied.
    async fn drift(
        &self,
        connection: &mut PgConnection,
        reads: &std::collections::BTreeMap<super::world::Read, i64>,
    ) -> Result<Option<Vec<String>>, sqlx::Error> {
        let Some(plan_id) = self.plan else {
            return Ok(None);
        };
        if reads.is_empty() {
            return Ok(None);
        }
        let keys = plans::drifted(connection, plan_id, self.batch.correlation_id, reads).await?;
        Ok((!keys.is_empty()).then_some(keys))
    }

    /// Open the transaction of a chunk planned ahead and write its state, if everything
    /// its plan read is unchanged: `None` (nothing written) if it is stale. Its writes
    /// and events were built by the planning task: the transaction only runs
    /// statements. Runs while the previous chunk commits; locking what the plan read
    /// waits for that commit only where this chunk changes a row the previous one
    /// changed or read.
    async fn prepare(&self, rule: &CompiledRule, planned: Planned) -> Result<Prepare, AppendError> {
        let Planned {
            last,
            counts,
            world,
            writes,
            events,
            unverified,
            departures,
            ..
        } = planned;
        let mut transaction = self.pool.begin().await?;
        if !ahead::still_current(&mut transaction, world.read_versions(), &writes.written()).await?
        {
            return Ok(Prepare::Stale);
        }
        if !departures.is_empty() {
            return Ok(Prepare::Drifted(departures));
        }
        if let Some(keys) = self.drift(&mut transaction, &unverified).await? {
            return Ok(Prepare::Drifted(keys));
        }
        writes
            .write(&mut transaction, self.batch.correlation_id, rule)
            .await?;
        Ok(Prepare::Ready(Box::new(Prepared {
            transaction,
            last,
            counts,
            writes,
            events,
        })))
    }

    /// Give a prepared chunk its place in the batch (its counts, the batch versions of
    /// its events, a `BATCH_PROGRESS`) and start appending its events and committing.
    /// The append waits for the log's append lock, which the previous chunk holds until
    /// it commits, so chunks land in order.
    fn seal(
        &mut self,
        rule: &CompiledRule,
        prepared: Prepared,
        counts: &mut Counts,
        total: i64,
    ) -> Committing {
        let Prepared {
            mut transaction,
            last,
            counts: chunk_counts,
            writes,
            mut events,
        } = prepared;
        writes.count_in(&mut self.growth, &self.pool);
        let undo = Undo {
            last,
            batch: self.batch.clone(),
            counts: *counts,
        };
        counts.merge(&chunk_counts);
        self.batch.adopt(&mut events);
        events.push(self.progress(rule, counts, total));
        let batch = self.batch.clone();
        let commit = async move {
            batches::record(&mut transaction, &batch, BatchStatus::Running).await?;
            append(&mut transaction, events).await?;
            transaction.commit().await?;
            Ok(())
        };
        Committing {
            commit: Box::pin(commit),
            undo,
        }
    }

    /// The outcome of a chunk's commit: `true` if it committed (the batch goes on
    /// after it); `false` if it ran into another writer, with the batch and counts back
    /// as they were before it, to be redone the locked way; any other failure ends the
    /// batch.
    fn settle(
        &mut self,
        undo: Undo,
        committed: Result<(), AppendError>,
        after: &mut Uuid,
        counts: &mut Counts,
        pace: &mut Pace,
    ) -> Result<bool, AppendError> {
        match committed {
            Ok(()) => {
                *after = undo.last;
                pace.committed();
                Ok(true)
            }
            Err(error) => {
                self.batch = undo.batch;
                *counts = undo.counts;
                if !retryable(&error) {
                    return Err(error);
                }
                replanned("the commit of a chunk planned ahead ran into another writer");
                Ok(false)
            }
        }
    }

    /// The `BATCH_PROGRESS` that ends a chunk.
    fn progress(&mut self, rule: &CompiledRule, counts: &Counts, total: i64) -> NewEvent {
        let progress =
            json!({"rule_id": rule.id, "done": counts.assets, "total": total, "counts": counts});
        apply::rule_event(&mut self.batch, rule, EventType::BatchProgress, progress)
    }

    /// State, snapshots, the outcome and change events and a `BATCH_PROGRESS`, in the
    /// chunk's transaction (events last).
    async fn write_chunk(
        &mut self,
        transaction: &mut PgConnection,
        rule: &CompiledRule,
        outcomes: Vec<AssetOutcome>,
        counts: &mut Counts,
        total: i64,
    ) -> Result<(), AppendError> {
        counts.merge(&Counts::of(&outcomes));
        // In microseconds, as Postgres keeps it: the events say what the rows hold.
        let raised_at = chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6);
        let mut events = apply::events(&mut self.batch, rule, &outcomes, raised_at);
        events.push(self.progress(rule, counts, total));
        let writes = StateWrites::of(outcomes, raised_at);
        writes
            .write(transaction, self.batch.correlation_id, rule)
            .await?;
        writes.count_in(&mut self.growth, &self.pool);
        batches::record(transaction, &self.batch, BatchStatus::Running).await?;
        append(transaction, events).await?;
        Ok(())
    }

    async fn finish(
        &mut self,
        reports: &[RuleReport],
        totals: &Counts,
        duration_ms: u64,
        error: Option<&str>,
    ) -> BatchStatus {
        let (status, event_type, payload) = match error {
            None => (
                BatchStatus::Completed,
                EventType::BatchCompleted,
                json!({"kind": self.batch.kind.as_str(), "rules": reports, "totals": totals, "duration_ms": duration_ms}),
            ),
            Some(error) => (
                BatchStatus::Failed,
                EventType::BatchFailed,
                json!({"kind": self.batch.kind.as_str(), "rules": reports, "totals": totals, "duration_ms": duration_ms, "error": error}),
            ),
        };
        // The closing events must land; retry briefly if Postgres hiccups. If it stays
        // down, the batch stays "running" and the abandoned-batch sweep marks it failed.
        for attempt in 0..5u32 {
            let mut batch = self.batch.clone();
            let event = batch.event(event_type, payload.clone());
            let result: Result<(), anyhow::Error> = async {
                let mut transaction = self.pool.begin().await?;
                batches::record(&mut transaction, &batch, status).await?;
                append(&mut transaction, vec![event]).await?;
                transaction.commit().await?;
                Ok(())
            }
            .await;
            match result {
                Ok(()) => {
                    self.batch = batch;
                    return status;
                }
                Err(error)
                    if matches!(
                        error.downcast_ref::<AppendError>(),
                        Some(AppendError::BatchEnded(_))
                    ) =>
                {
                    // Another replica closed it (and wrote its `BATCH_FAILED`).
                    tracing::warn!(correlation_id = %self.batch.correlation_id, "{error}");
                    return BatchStatus::Failed;
                }
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        attempt,
                        "could not close the batch; retrying"
                    );
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
        BatchStatus::Failed
    }
}

/// What preparing a chunk planned ahead came to.
enum Prepare {
    Ready(Box<Prepared>),
    /// Something it read changed: redo it the locked way.
    Stale,
    /// Applying a stored plan, it read what the plan did not ([`Execution::drift`]).
    Drifted(Vec<String>),
}

/// What a chunk done the locked way came to.
enum Locked {
    /// Committed; the batch goes on after this asset.
    Committed(Uuid),
    /// No asset was left.
    Done,
    /// Applying a stored plan, it read what the plan did not ([`Execution::drift`]).
    Drifted(Vec<String>),
}

/// The error that ends the apply of a plan whose reads changed while it was applied:
/// what earlier chunks committed stays (as planned), and can be rolled back.
fn drifted(keys: &[String]) -> anyhow::Error {
    anyhow::anyhow!(
        "what the plan read changed while it was applied ({}): the apply stopped there, \
         having changed only what the plan showed; roll it back or make a new plan",
        keys.join(", ")
    )
}

/// A chunk planned ahead whose state is written in its open transaction; its events
/// are appended when it is sealed.
struct Prepared {
    transaction: Transaction<'static, Postgres>,
    last: Uuid,
    counts: Counts,
    writes: StateWrites,
    events: Vec<NewEvent>,
}

/// A chunk appending its events and committing, while the runner prepares the next.
struct Committing {
    commit: Pin<Box<dyn Future<Output = Result<(), AppendError>> + Send>>,
    undo: Undo,
}

/// Where the batch stood before a committing chunk, to go back to if it fails.
struct Undo {
    /// The chunk's last asset: where the batch goes on from once it has committed.
    last: Uuid,
    batch: Batch,
    counts: Counts,
}

/// The outcome of a planning task, its panic or abort included.
fn flatten(
    planned: Result<Result<Option<Planned>, sqlx::Error>, tokio::task::JoinError>,
    what: &'static str,
) -> anyhow::Result<Option<Planned>> {
    planned.context(what)?.context(what)
}

/// A chunk planned ahead is dropped and redone the locked way.
fn replanned(reason: &str) {
    tracing::info!(reason, "redoing a chunk planned ahead the locked way");
    metrics::counter!("synapse_execution_chunks_replanned_total").increment(1);
}

/// Chunk sizes that keep `BATCH_PROGRESS` coming about every second: halved after a
/// chunk that took longer than [`PROGRESS_EVERY`], doubled (up to [`CHUNK_SIZE`]) after
/// one that took under half of it.
struct Pace {
    size: i64,
    since: Instant,
}

impl Pace {
    fn new() -> Self {
        Self {
            size: CHUNK_SIZE,
            since: Instant::now(),
        }
    }

    /// A chunk committed.
    fn committed(&mut self) {
        let took = self.since.elapsed();
        if took > PROGRESS_EVERY {
            self.size = (self.size / 2).max(MIN_CHUNK_SIZE);
        } else if took < PROGRESS_EVERY / 2 {
            self.size = (self.size * 2).min(CHUNK_SIZE);
        }
        self.since = Instant::now();
    }
}

/// How planning reads what it needs from the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Locked until the transaction ends: nothing read can change before the chunk
    /// commits.
    Locked,
    /// Without locks: the writer checks every version read, under lock, before it
    /// writes ([`ahead::still_current`]).
    Optimistic,
}

/// What of `page` (the assets after `after`) a chunk plans, and with which ids: all
/// of it with fresh ids, or, when a stored plan is applied, what the plan covers with
/// the ids it promised ([`plans::chunk`]).
pub(super) async fn scope(
    connection: &mut PgConnection,
    plan: Option<Uuid>,
    rule: &CompiledRule,
    after: Uuid,
    page: Vec<synapse_shared::domain::AssetState>,
) -> Result<plans::PlanChunk, sqlx::Error> {
    match plan {
        Some(plan_id) => plans::chunk(connection, plan_id, rule.id, after, page).await,
        None => Ok(plans::PlanChunk {
            page,
            ..plans::PlanChunk::default()
        }),
    }
}

/// Plan `rule` over `page`, starting from `world`: discover what planning needs, load
/// it (as `reads` says), plan.
pub async fn plan_chunk(
    connection: &mut PgConnection,
    rule: &CompiledRule,
    page: Vec<synapse_shared::domain::AssetState>,
    ids: &mut Ids,
    mut world: World,
    reads: Reads,
    claims: &Claims,
) -> Result<(Vec<AssetOutcome>, World), sqlx::Error> {
    let order: Vec<(Uuid, String)> = page
        .iter()
        .map(|asset| (asset.id, asset.tag.clone()))
        .collect();
    world.load_assets(page);
    if rule.owns_findings {
        // Planning asks every asset of the page for its findings of the rule: load them
        // all first rather than plan the chunk twice; none to load if the rule had none
        // when the execution started (a plan still depends on there being none), unless
        // read locked: a chunk is redone that way when another writer changed what it
        // read, such as a concurrent run of the rule raising findings.
        let owners: BTreeSet<FindingOwner> = order
            .iter()
            .map(|(asset_id, _)| (*asset_id, rule.id))
            .collect();
        let findings = if rule.may_have_open_findings || reads == Reads::Locked {
            open_findings(connection, owners).await?
        } else {
            owners
                .into_iter()
                .map(|owner| (owner, Vec::new(), 0))
                .collect()
        };
        world.record(Loaded {
            findings,
            ..Loaded::default()
        });
    }
    let plan_all = |world: &mut World, ids: &mut Ids| -> Vec<AssetOutcome> {
        order
            .iter()
            .map(|(asset_id, tag)| AssetOutcome {
                asset_id: *asset_id,
                tag: tag.clone(),
                outcome: planner::plan(rule, *asset_id, world, ids, claims),
            })
            .collect()
    };
    // Plan; whatever the world did not know, planning took as absent. Load it: if
    // none of it exists, the pass stands (the usual case: a cable or asset the rule
    // creates). Otherwise undo the pass and plan again with it loaded. Lookups of
    // existing things (an MCC by tag) are carried from chunk to chunk, so most chunks
    // plan once.
    for _ in 0..DISCOVERY_ROUNDS {
        let before = world.clone();
        let mark = ids.mark();
        let outcomes = plan_all(&mut world, ids);
        if world.needs.is_empty() {
            return Ok((outcomes, world));
        }
        let needs = std::mem::take(&mut world.needs);
        let loaded = fetch(connection, needs, reads).await?;
        if loaded.all_absent() {
            world.record(loaded);
            return Ok((outcomes, world));
        }
        world = before;
        ids.rewind(mark);
        world.record(loaded);
    }
    let outcomes = plan_all(&mut world, ids);
    Ok((outcomes, world))
}

/// Load what planning needed (locked when `reads` says so).
async fn fetch(
    connection: &mut PgConnection,
    needs: super::world::Needs,
    reads: Reads,
) -> Result<Loaded, sqlx::Error> {
    let lock = reads == Reads::Locked;
    let mut loaded = Loaded::default();
    if !needs.asset_tags.is_empty() {
        let tags: Vec<String> = needs.asset_tags.into_iter().collect();
        loaded.assets = asset_store::by_tags(connection, &tags, lock).await?;
        let found: HashSet<&str> = loaded.assets.iter().map(|a| a.tag.as_str()).collect();
        loaded.absent_tags = tags
            .iter()
            .filter(|tag| !found.contains(tag.as_str()))
            .cloned()
            .collect();
    }
    if !needs.cable_tags.is_empty() {
        let tags: Vec<String> = needs.cable_tags.into_iter().collect();
        let mut found: HashMap<String, CableState> = cables::by_tags(connection, &tags, lock)
            .await?
            .into_iter()
            .map(|cable| (cable.tag.clone(), cable))
            .collect();
        loaded.cables = tags
            .into_iter()
            .map(|tag| {
                let cable = found.remove(&tag);
                (tag, cable)
            })
            .collect();
    }
    if !needs.relationships.is_empty() {
        let keys: Vec<_> = needs.relationships.into_iter().collect();
        let found = relationships::by_keys(connection, &keys, lock).await?;
        loaded.relationships = keys
            .into_iter()
            .map(|key| {
                let relationship = found
                    .iter()
                    .find(|r| r.kind == key.0 && r.from_asset == key.1 && r.to_asset == key.2)
                    .cloned();
                (key, relationship)
            })
            .collect();
    }
    if !needs.findings.is_empty() {
        loaded.findings = open_findings(connection, needs.findings).await?;
    }
    Ok(loaded)
}

/// The open findings of each (asset, rule) pair (an empty list for a pair with none)
/// and their fingerprint, the version a plan's read of them has.
async fn open_findings(
    connection: &mut PgConnection,
    owners: BTreeSet<FindingOwner>,
) -> Result<Vec<(FindingOwner, Vec<OpenFinding>, i64)>, sqlx::Error> {
    type Row = (
        Uuid,
        Uuid,
        Vec<String>,
        Vec<String>,
        Vec<Uuid>,
        Vec<Option<i32>>,
        Vec<chrono::DateTime<chrono::Utc>>,
        i64,
    );
    let (assets, rules): (Vec<Uuid>, Vec<Uuid>) = owners.into_iter().unzip();
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "select o.asset_id, o.rule_id,
             coalesce(array_agg(f.message order by f.message) filter (where f.message is not null), '{{}}'),
             coalesce(array_agg(f.severity order by f.message) filter (where f.message is not null), '{{}}'),
             coalesce(array_agg(f.correlation_id order by f.message) filter (where f.message is not null), '{{}}'),
             coalesce(array_agg(f.rule_version order by f.message) filter (where f.message is not null), '{{}}'),
             coalesce(array_agg(f.raised_at order by f.message) filter (where f.message is not null), '{{}}'),
             {FINDINGS_FINGERPRINT}
         from unnest($1::uuid[], $2::uuid[]) as o(asset_id, rule_id)
         left join findings f on f.asset_id = o.asset_id and f.rule_id = o.rule_id
         group by o.asset_id, o.rule_id"
    ))
    .bind(assets)
    .bind(rules)
    .fetch_all(&mut *connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(asset, rule, messages, severities, raisers, versions, times, fingerprint)| {
                let open = messages
                    .into_iter()
                    .zip(severities)
                    .zip(raisers.into_iter().zip(versions))
                    .zip(times)
                    .map(
                        |(((message, severity), (raised_in, rule_version)), raised_at)| {
                            OpenFinding {
                                message,
                                severity,
                                raised_in,
                                rule_version,
                                raised_at,
                            }
                        },
                    )
                    .collect();
                ((asset, rule), open, fingerprint)
            },
        )
        .collect())
}

/// Failures a fresh attempt can get past: deadlocks, serialization failures, a tag
/// another batch created meanwhile (unique violation), a version raced by a writer, and
/// a connection lost mid-chunk (terminated by an operator, a failover, a network cut):
/// the chunk's transaction did not commit, or, lost during its commit, did, and then the
/// batch's next version is taken and the retry is refused by the log (never applied
/// twice). Before, one terminated connection failed the whole batch.
/// The error a chunk ends its batch with after `attempts` tries. A tag that another
/// command took while the chunk was creating it, on every try (a steady stream of
/// creates of the very tags a rule makes), is told as such, not in the database's
/// words (`duplicate key value violates unique constraint "assets_tag_key"`).
pub fn given_up(error: AppendError, attempts: u32) -> anyhow::Error {
    let taken = match &error {
        AppendError::Database(database) => database.as_database_error().and_then(|error| {
            let kind = match error.constraint()? {
                "assets_tag_key" => "an asset",
                "cables_tag_key" => "a cable",
                _ => return None,
            };
            let detail = error
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .and_then(|error| error.detail())
                .unwrap_or("")
                .to_owned();
            Some((kind, detail))
        }),
        _ => None,
    };
    match taken {
        Some((kind, detail)) => anyhow::anyhow!(
            "another command created {kind} with a tag this execution was creating ({detail}), \
             in each of its {attempts} tries at this chunk; the chunk wrote nothing: run the \
             rules again, and they update what exists by then"
        ),
        None => error.into(),
    }
}

fn retryable(error: &AppendError) -> bool {
    let error = match error {
        AppendError::Database(error) => error,
        AppendError::VersionConflict { .. } => return true,
        // Another replica ended the batch: no retry can write in its name.
        AppendError::BatchEnded(_) => return false,
    };
    if matches!(error, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut) {
        return true;
    }
    error
        .as_database_error()
        .and_then(|database_error| database_error.code())
        .is_some_and(|code| {
            matches!(
                code.as_ref(),
                "40P01" | "40001" | "23505" | "57P01" | "57P02"
            ) || code.starts_with("08")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(pace: &mut Pace, took: Duration) {
        pace.since = Instant::now() - took;
        pace.committed();
    }

    #[test]
    fn chunks_shrink_after_a_slow_one_and_grow_back_after_fast_ones() {
        let mut pace = Pace::new();
        assert_eq!(pace.size, CHUNK_SIZE);
        after(&mut pace, Duration::from_millis(1_500));
        assert_eq!(pace.size, CHUNK_SIZE / 2);
        for _ in 0..10 {
            after(&mut pace, Duration::from_secs(3));
        }
        assert_eq!(pace.size, MIN_CHUNK_SIZE);
        // Between half a second and a second: the size stays.
        after(&mut pace, Duration::from_millis(800));
        assert_eq!(pace.size, MIN_CHUNK_SIZE);
        for _ in 0..10 {
            after(&mut pace, Duration::from_millis(10));
        }
        assert_eq!(pace.size, CHUNK_SIZE);
    }
}
