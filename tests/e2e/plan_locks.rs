//! The lock check of a chunk planned ahead (`ahead::still_current`): what the chunk
//! changes is locked against everyone, what it only read is locked against changes
//! only, so chunks that read the same MCC do not wait for each other's commit.

use command_service::execute::ahead::still_current;
use command_service::execute::world::Read;
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
