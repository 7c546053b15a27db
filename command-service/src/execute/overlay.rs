//! A dry run's private layer over the state, so that a dry run locks nothing.
//!
//! A dry run must see its own changes (a later chunk or rule reads what an earlier one
//! set or created) without making them where anyone else can see or wait for them.
//! Written into the live tables inside a transaction that is rolled back, they held
//! the row locks of every asset the dry run would change until it ended: an execution
//! or import over the same assets waited for the whole preview (half a minute at
//! 1,000,000 assets).
//!
//! Instead, the dry run's connection gets temporary tables for what it writes
//! (`pg_temp.dry_assets`, ...) and temporary views named like the live tables, which
//! show the dry run's rows over the live ones. Postgres resolves an unqualified table
//! name in the session's temporary schema first, so every query of the planner reads
//! through the views unchanged, while [`TABLES`] sends the dry run's writes to the
//! temporary tables. Temporary objects belong to the connection and to the dry run's
//! transaction: rolling it back removes them. The connection is closed afterwards,
//! so no statement it prepared against them outlives the dry run.

use super::apply::StateTables;
use crate::store::statistics::{Growth, Table};
use sqlx::PgConnection;

/// Where a dry run writes its chunks' state.
pub const TABLES: StateTables = StateTables {
    assets: "pg_temp.dry_assets",
    cables: "pg_temp.dry_cables",
    relationships: "pg_temp.dry_relationships",
    findings: "pg_temp.dry_findings",
    live: false,
};

/// Assets and cables a dry run writes replace the live row with the same id;
/// relationships and findings a dry run writes are always new rows.
const OPEN: &str = "
    create temporary table dry_assets (like public.assets including all) on commit drop;
    create temporary table dry_cables (like public.cables including all) on commit drop;
    create temporary table dry_relationships (like public.relationships including all) on commit drop;
    create temporary table dry_findings (like public.findings including all) on commit drop;
    create temporary view assets as
        select * from pg_temp.dry_assets
        union all
        select * from public.assets a where not exists (select from pg_temp.dry_assets d where d.id = a.id);
    create temporary view cables as
        select * from pg_temp.dry_cables
        union all
        select * from public.cables c where not exists (select from pg_temp.dry_cables d where d.id = c.id);
    create temporary view relationships as
        select * from public.relationships union all select * from pg_temp.dry_relationships;
    create temporary view findings as
        select * from public.findings union all select * from pg_temp.dry_findings;
    -- The temporary tables grow from nothing while the dry run plans against them:
    -- each query is planned for their size at the time, not once for all.
    set local plan_cache_mode = force_custom_plan;
";

/// The overlay of one dry run, open in its transaction.
#[derive(Debug, Default)]
pub struct Overlay {
    growth: Growth,
}

impl Overlay {
    /// Open the overlay in `transaction`, the dry run's: from here on its reads see
    /// the overlay. The caller closes the connection after the transaction ends.
    pub async fn open(transaction: &mut PgConnection) -> Result<Self, sqlx::Error> {
        // Statements this connection prepared before resolved `assets` to the live
        // table, and creating a view of the same name does not make Postgres plan them
        // again.
        sqlx::Connection::clear_cached_statements(&mut *transaction).await?;
        sqlx::Executor::execute(&mut *transaction, OPEN).await?;
        Ok(Self::default())
    }

    /// `rows` written into the overlay's copy of `table`; its statistics are refreshed
    /// each time it has grown fourfold (temporary tables are never analyzed by
    /// autovacuum), so that a lookup stays an index probe of it rather than a scan.
    pub async fn wrote(
        &mut self,
        transaction: &mut PgConnection,
        table: Table,
        rows: u64,
    ) -> Result<(), sqlx::Error> {
        if self.growth.due(table, rows).is_none() {
            return Ok(());
        }
        let name = match table {
            Table::Assets => TABLES.assets,
            Table::Cables => TABLES.cables,
            Table::Relationships => TABLES.relationships,
        };
        // The name is one of ours, never input.
        sqlx::query(&format!("analyze {name}"))
            .execute(transaction)
            .await?;
        Ok(())
    }
}
