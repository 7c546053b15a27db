//! The lock check of a chunk planned ahead (`ahead::still_current`): what the chunk
//! changes is locked against everyone, what it only read is locked against changes
//! only, so chunks that read the same MCC do not wait for each other's commit.

use command_service::execute::ahead::still_current;
use command_service::execute::world::{Read, FINDINGS_FINGERPRINT};
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeMap, HashSet};
use synapse_tests::TestDatabase;
use uuid::Uuid;

/// Postgres's "could not obtain lock" (`nowait`, `lock_timeout`).
const LOCK_NOT_AVAILABLE: &str = "55P03";

struct Plant {
    _database: TestDatabase,
    pool: PgPool,
    mcc: Uuid,
    motors: [Uuid; 2],
}

async fn plant() -> anyhow::Result<Plant> {
    let database = TestDatabase::create().await?;
    let pool = PgPool::connect(&database.url).await?;
    synapse_shared::db::migrate_command(&pool).await?;
    let mcc = Uuid::now_v7();
    let motors = [Uuid::now_v7(), Uuid::now_v7()];
    for (id, tag, asset_type) in [
        (mcc, "MCC-01", "MOTOR_CONTROL_CENTER"),
        (motors[0], "M-1", "ELECTRIC_MOTOR"),
        (motors[1], "M-2", "ELECTRIC_MOTOR"),
    ] {
        sqlx::query(
            "insert into assets (id, tag, asset_type, discipline, version)
             values ($1, $2, $3, 'ELECTRICAL', 3)",
        )
        .bind(id)
        .bind(tag)
        .bind(asset_type)
        .execute(&pool)
        .await?;
    }
    Ok(Plant {
        _database: database,
        pool,
        mcc,
        motors,
    })
}

fn read(ids: &[Uuid], version: i64) -> BTreeMap<Read, i64> {
    ids.iter().map(|id| (Read::Id(*id), version)).collect()
}

/// Whether `select ... for {mode} nowait` of asset `id` gets its lock at once.
async fn lockable(connection: &mut PgConnection, id: Uuid, mode: &str) -> anyhow::Result<bool> {
    let locked = sqlx::query(&format!(
        "select 1 from assets where id = $1 for {mode} nowait"
    ))
    .bind(id)
    .execute(&mut *connection)
    .await;
    match locked {
        Ok(_) => Ok(true),
        Err(error)
            if error.as_database_error().and_then(|e| e.code()).as_deref()
                == Some(LOCK_NOT_AVAILABLE) =>
        {
            Ok(false)
        }
        Err(error) => Err(error.into()),
    }
}

#[tokio::test]
async fn a_chunk_locks_what_it_changes_against_all_and_what_it_read_against_changes(
) -> anyhow::Result<()> {
    let plant = plant().await?;
    let [motor, other_motor] = plant.motors;

    // Chunk 1 changes motor 1 and read the MCC (its cable starts there).
    let mut first = plant.pool.begin().await?;
    let written = HashSet::from([motor]);
    assert!(still_current(&mut first, &read(&[plant.mcc, motor], 3), &written).await?);

    // Chunk 2, before chunk 1 commits: changes motor 2, reads the same MCC. It must get
    // its locks at once (a wait would be the lock timeout's error here).
    let mut second = plant.pool.begin().await?;
    sqlx::query("set local lock_timeout = '2s'")
        .execute(&mut *second)
        .await?;
    let written = HashSet::from([other_motor]);
    assert!(still_current(&mut second, &read(&[plant.mcc, other_motor], 3), &written).await?);

    // Meanwhile nobody may change the MCC or either motor, nor read a motor for a
    // change of its own; the MCC can still be read by a third chunk.
    let mut third = plant.pool.acquire().await?;
    assert!(!lockable(&mut third, plant.mcc, "update").await?);
    assert!(!lockable(&mut third, plant.mcc, "no key update").await?);
    assert!(!lockable(&mut third, motor, "share").await?);
    assert!(!lockable(&mut third, other_motor, "share").await?);
    assert!(lockable(&mut third, plant.mcc, "share").await?);

    // Once both commit, everything is free again.
    first.commit().await?;
    second.commit().await?;
    for id in [plant.mcc, motor, other_motor] {
        assert!(lockable(&mut third, id, "update").await?);
    }
    Ok(())
}

#[tokio::test]
async fn a_plan_is_stale_when_a_version_it_read_moved_or_a_row_it_read_is_gone(
) -> anyhow::Result<()> {
    let plant = plant().await?;
    let [motor, _] = plant.motors;
    let written = HashSet::from([motor]);

    let mut connection = plant.pool.begin().await?;
    let mut versions = read(&[plant.mcc, motor], 3);
    assert!(still_current(&mut connection, &versions, &written).await?);
    // The MCC moved on since the plan read it (read-only rows are checked too).
    versions.insert(Read::Id(plant.mcc), 2);
    assert!(!still_current(&mut connection, &versions, &written).await?);
    // A row the plan read no longer exists.
    let mut versions = read(&[plant.mcc, motor], 3);
    versions.insert(Read::Id(Uuid::now_v7()), 1);
    assert!(!still_current(&mut connection, &versions, &written).await?);
    // A tag the plan saw absent now exists.
    let mut versions = read(&[plant.mcc], 3);
    versions.insert(Read::AbsentTag("M-2".to_owned()), 0);
    assert!(!still_current(&mut connection, &versions, &HashSet::new()).await?);
    Ok(())
}

/// [`still_current`] in a transaction of its own, rolled back.
async fn current_alone(pool: &PgPool, reads: BTreeMap<Read, i64>) -> anyhow::Result<bool> {
    let mut transaction = pool.begin().await?;
    let current = still_current(&mut transaction, &reads, &HashSet::new()).await?;
    transaction.rollback().await?;
    Ok(current)
}

#[tokio::test]
async fn a_plan_is_stale_when_the_open_findings_it_read_changed() -> anyhow::Result<()> {
    let plant = plant().await?;
    let [motor, other_motor] = plant.motors;
    let rule = Uuid::now_v7();
    let reads = |fingerprint: i64| {
        BTreeMap::from([
            (Read::Id(motor), 3),
            (Read::Findings { asset: motor, rule }, fingerprint),
        ])
    };
    let raise = |asset: Uuid, rule: Uuid| {
        sqlx::query(
            "insert into findings (asset_id, rule_id, message, severity, correlation_id)
             values ($1, $2, 'M-1: inspect', 'info', $3)",
        )
        .bind(asset)
        .bind(rule)
        .bind(Uuid::now_v7())
        .execute(&plant.pool)
    };
    let current = |fingerprint: i64| current_alone(&plant.pool, reads(fingerprint));

    // The plan read no open finding of the rule on the motor, and there is none.
    assert!(current(0).await?);
    // Another writer raised one since.
    raise(motor, rule).await?;
    assert!(!current(0).await?);
    // A plan that read the finding is current.
    let (fingerprint,): (i64,) = sqlx::query_as(&format!(
        "select {FINDINGS_FINGERPRINT} from findings f where f.asset_id = $1 and f.rule_id = $2"
    ))
    .bind(motor)
    .bind(rule)
    .fetch_one(&plant.pool)
    .await?;
    assert_ne!(fingerprint, 0);
    assert!(current(fingerprint).await?);
    // Findings of another rule, or on another asset, are not what it read.
    raise(motor, Uuid::now_v7()).await?;
    raise(other_motor, rule).await?;
    assert!(current(fingerprint).await?);
    // Resolved since: stale again.
    sqlx::query("delete from findings where asset_id = $1 and rule_id = $2")
        .bind(motor)
        .bind(rule)
        .execute(&plant.pool)
        .await?;
    assert!(!current(fingerprint).await?);
    assert!(current(0).await?);
    Ok(())
}

#[tokio::test]
async fn a_plan_is_stale_when_a_relationship_it_read_is_gone_and_holds_it_until_commit(
) -> anyhow::Result<()> {
    // Arrange: the MCC feeds motor 1; a chunk read that (so it did not create it).
    let plant = plant().await?;
    let [motor, _] = plant.motors;
    let feeds = Uuid::now_v7();
    sqlx::query(
        "insert into relationships (id, kind, from_asset, to_asset, version)
         values ($1, 'FEEDS', $2, $3, 1)",
    )
    .bind(feeds)
    .bind(plant.mcc)
    .bind(motor)
    .execute(&plant.pool)
    .await?;
    let reads = read(&[plant.mcc, motor, feeds], 3)
        .into_iter()
        .map(|(read, version)| {
            let version = if read == Read::Id(feeds) { 1 } else { version };
            (read, version)
        })
        .collect::<BTreeMap<_, _>>();

    // Act / Assert: current, and held against deletion until the chunk commits.
    let mut chunk = plant.pool.begin().await?;
    assert!(still_current(&mut chunk, &reads, &HashSet::from([motor])).await?);
    let mut other = plant.pool.acquire().await?;
    sqlx::query("set lock_timeout = '200ms'")
        .execute(&mut *other)
        .await?;
    let delete = sqlx::query("delete from relationships where id = $1")
        .bind(feeds)
        .execute(&mut *other)
        .await;
    let code = delete.err().and_then(|error| {
        error
            .as_database_error()?
            .code()
            .map(|code| code.to_string())
    });
    assert_eq!(code.as_deref(), Some(LOCK_NOT_AVAILABLE));
    chunk.rollback().await?;

    // Once deleted, a plan that read it is stale.
    sqlx::query("delete from relationships where id = $1")
        .bind(feeds)
        .execute(&plant.pool)
        .await?;
    assert!(!current_alone(&plant.pool, reads).await?);
    Ok(())
}
