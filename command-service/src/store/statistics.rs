//! Fresh planner statistics after a batch that changed a large share of a table.
//!
//! Postgres plans each query from its statistics of the tables. Autovacuum refreshes
//! them some time after a large change (a minute at the earliest, never where it is
//! off). Until then the planner takes a freshly imported table of 100,000 assets for
//! the few rows it last counted: an execution started right after the import read
//! every remaining asset (a bitmap scan and a sort) for each 1,000-asset page, where an
//! index scan in id order reads just the page.

use sqlx::PgPool;

/// Tables a batch can grow or change in bulk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Assets,
    Cables,
    Relationships,
}

impl Table {
    pub const ALL: [Table; 3] = [Table::Assets, Table::Cables, Table::Relationships];

    pub fn name(self) -> &'static str {
        match self {
            Table::Assets => "assets",
            Table::Cables => "cables",
            Table::Relationships => "relationships",
        }
    }
}

/// Fewer changed rows than this never make statistics stale enough to matter.
pub const MIN_CHANGED_ROWS: u64 = 1_000;
/// The share of a table's rows (as last counted) that a batch must change for its
/// statistics to count as stale: autovacuum's default threshold.
const STALE_SHARE: f64 = 0.1;

/// How much a batch's created rows grow between two refreshes of a table's statistics.
/// The plans they fix (an index lookup rather than a scan of every row) hold over a
/// wide range of row counts; each `analyze` of a large table reads a 30,000-row sample,
/// and at every doubling they took 2.7% of the machine's CPU during a 100,000-asset
/// execution.
const GROWTH_PER_REFRESH: u64 = 4;

/// Rows a running batch has created, per table: the statistics of a table are
/// refreshed (in the background) each time the batch has created
/// [`GROWTH_PER_REFRESH`] times as many as at the last refresh, from
/// [`MIN_CHANGED_ROWS`] on. An execution that creates 50,000 cables in an empty table
/// otherwise plans its cable lookups for an empty table to the end (the lookup of a
/// chunk's 500 cable tags became a scan of every cable).
#[derive(Debug, Clone)]
pub struct Growth {
    created: [u64; Table::ALL.len()],
    next_refresh: [u64; Table::ALL.len()],
}

impl Default for Growth {
    fn default() -> Self {
        Self {
            created: [0; Table::ALL.len()],
            next_refresh: [MIN_CHANGED_ROWS; Table::ALL.len()],
        }
    }
}

impl Growth {
    /// `rows` more created in `table` (committed, or about to be).
    pub fn add(&mut self, pool: &PgPool, table: Table, rows: u64) {
        if let Some(created) = self.due(table, rows) {
            let pool = pool.clone();
            tokio::spawn(async move { refresh_if_stale(&pool, table, created).await });
        }
    }

    /// Count `rows`; the rows created so far if that is a refresh's worth.
    pub(crate) fn due(&mut self, table: Table, rows: u64) -> Option<u64> {
        let index = table as usize;
        self.created[index] += rows;
        if self.created[index] < self.next_refresh[index] {
            return None;
        }
        self.next_refresh[index] = self.created[index] * GROWTH_PER_REFRESH;
        Some(self.created[index])
    }
}

/// After a batch committed that changed up to `changed` rows of `table`: analyze the
/// table if that is a large share of what the statistics last counted. Best effort: a
/// failure is logged, never the caller's failure.
pub async fn refresh_if_stale(pool: &PgPool, table: Table, changed: u64) {
    if changed < MIN_CHANGED_ROWS {
        return;
    }
    let refreshed: Result<bool, sqlx::Error> = async {
        // `reltuples` is -1 for a table never analyzed.
        let (counted,): (f32,) =
            sqlx::query_as("select reltuples from pg_class where oid = $1::regclass")
                .bind(table.name())
                .fetch_one(pool)
                .await?;
        if counted >= 0.0 && (changed as f64) < f64::from(counted) * STALE_SHARE {
            return Ok(false);
        }
        // The name comes from `Table`, never from input.
        sqlx::query(&format!("analyze {}", table.name()))
            .execute(pool)
            .await?;
        Ok(true)
    }
    .await;
    match refreshed {
        Ok(true) => tracing::debug!(table = table.name(), changed, "statistics refreshed"),
        Ok(false) => {}
        Err(error) => {
            tracing::warn!(%error, table = table.name(), "could not refresh statistics")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_refreshes_a_table_from_a_thousand_rows_on_each_time_it_quadrupled_them() {
        let mut growth = Growth::default();
        let refreshes: Vec<u64> = (0..200)
            .filter_map(|_| growth.due(Table::Cables, 500))
            .collect();
        assert_eq!(refreshes, vec![1_000, 4_000, 16_000, 64_000]);
        // Tables count apart.
        assert_eq!(growth.due(Table::Assets, 999), None);
        assert_eq!(growth.due(Table::Assets, 1), Some(1_000));
    }
}
