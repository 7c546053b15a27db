//! `bench execute`: one rule over a whole plant, against the raw COPY of the same rows.
//!
//! Two cases, each in its own database and with a fresh service process: a small plant
//! and the full one. Same rule, same chunk size: if the service's peak memory is flat in
//! batch size, both peaks are about the same.

use crate::copy_limit::{self, CopyLimit};
use crate::environment::{with_environment, Endpoints};
use crate::plant;
use crate::profile::Profile;
use crate::report::{self, Table};
use crate::scenario::{self, per_second, seconds, Executed, Imported, PlantSizes};
use anyhow::bail;
use serde_json::json;

/// The ratio the execution should reach against the raw COPY.
const TARGET_RATIO: f64 = 0.5;

#[derive(Debug, clap::Args)]
pub struct ExecuteArgs {
    #[command(flatten)]
    pub sizes: PlantSizes,
    /// Which rule runs over the motors above 55 kW.
    #[arg(long, value_enum, default_value_t = BenchRule::Cable)]
    pub rule: BenchRule,
    /// Run the service without its relay (to see the relay's share of the time).
    #[arg(long)]
    pub no_relay: bool,
    /// Sample what the service's database connections do during the execution and
    /// print where the time goes.
    #[arg(long)]
    pub profile: bool,
    /// Also print the results as one JSON line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub endpoints: Endpoints,
}

/// The rule `bench execute` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchRule {
    /// `set_property` and `upsert_cable`: an asset update and a new cable per motor.
    Cable,
    /// A `flag`: a finding per motor, no state change.
    Flag,
}

impl BenchRule {
    fn definition(self) -> serde_json::Value {
        match self {
            Self::Cable => plant::rule(),
            Self::Flag => plant::flag_rule(),
        }
    }

    fn described(self) -> &'static str {
        match self {
            Self::Cable => "one rule (set_property + upsert_cable)",
            Self::Flag => "one rule (flag)",
        }
    }
}

/// One plant's measurements.
struct Case {
    imported: Imported,
    executed: Executed,
    limit: CopyLimit,
}

impl Case {
    fn events_per_second(&self) -> f64 {
        per_second(self.executed.events as f64, self.executed.elapsed)
    }

    fn copy_rows_per_second(&self) -> f64 {
        per_second(self.limit.rows as f64, self.limit.elapsed)
    }

    fn indexed_copy_rows_per_second(&self) -> f64 {
        per_second(self.limit.rows as f64, self.limit.indexed)
    }

    fn ratio(&self) -> f64 {
        ratio(self.events_per_second(), self.copy_rows_per_second())
    }

    fn indexed_ratio(&self) -> f64 {
        ratio(
            self.events_per_second(),
            self.indexed_copy_rows_per_second(),
        )
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "assets": self.imported.rows,
            "import_seconds": seconds(self.imported.elapsed),
            "import_rows_per_second": per_second(self.imported.rows as f64, self.imported.elapsed),
            "import_peak_kib": self.imported.peak_kib,
            "executed_assets": self.executed.executed,
            "events": self.executed.events,
            "execution_seconds": seconds(self.executed.elapsed),
            "events_per_second": self.events_per_second(),
            "execution_peak_kib": self.executed.peak_kib,
            "service_cpu_seconds": self.executed.service_cpu,
            "postgres_cpu_seconds": self.executed.postgres_cpu,
            "copy_rows": self.limit.rows,
            "copy_bytes": self.limit.bytes,
            "copy_seconds": seconds(self.limit.elapsed),
            "copy_attempt_seconds": self.limit.attempts.iter().map(|e| seconds(*e)).collect::<Vec<_>>(),
            "copy_rows_per_second": self.copy_rows_per_second(),
            "ratio": self.ratio(),
            "indexed_copy_seconds": seconds(self.limit.indexed),
            "indexed_copy_rows_per_second": self.indexed_copy_rows_per_second(),
            "indexed_ratio": self.indexed_ratio(),
        })
    }
}

pub async fn run(args: ExecuteArgs) -> anyhow::Result<()> {
    let mut cases = Vec::new();
    for assets in args.sizes.list()? {
        eprintln!("execute: {assets} assets ...");
        let case = with_environment(&args.endpoints, async |environment| {
            let relay = !args.no_relay;
            let imported = scenario::import_plant(environment, assets, relay).await?;
            eprintln!(
                "  imported {assets} rows in {:.2} s",
                seconds(imported.elapsed)
            );
            let rule_id = scenario::define(environment, &args.rule.definition()).await?;
            let executed = scenario::execute(environment, &rule_id, args.profile).await?;
            let expected = plant::expected_matches(assets) as u64;
            if executed.executed != expected {
                bail!(
                    "the rule executed on {} assets, expected {expected}",
                    executed.executed
                );
            }
            eprintln!(
                "  executed: {} events in {:.2} s",
                executed.events,
                seconds(executed.elapsed)
            );
            environment.stop_service().await;
            let limit =
                copy_limit::copy_batch(&environment.database_url, executed.correlation_id).await?;
            Ok(Case {
                imported,
                executed,
                limit,
            })
        })
        .await?;
        cases.push(case);
    }
    print(&cases, !args.no_relay, args.rule);
    for case in &cases {
        if let Some(profile) = &case.executed.profile {
            print_profile(case.imported.rows, profile);
        }
    }
    if args.json {
        let full = cases.last().map(Case::json);
        report::json_line(&json!({
            "bench": "execute",
            "relay": !args.no_relay,
            "target_ratio": TARGET_RATIO,
            "cases": cases.iter().map(Case::json).collect::<Vec<_>>(),
            "result": full,
        }));
    }
    Ok(())
}

fn print(cases: &[Case], relay: bool, rule: BenchRule) {
    let mut header = vec!["".to_owned()];
    header.extend(
        cases
            .iter()
            .map(|case| format!("{} assets", report::count(case.imported.rows as f64))),
    );
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut table = Table::new(
        format!(
            "bench execute: {}, relay {}",
            rule.described(),
            if relay { "on" } else { "off" }
        ),
        &header,
    );
    let mut row = |label: &str, cell: &dyn Fn(&Case) -> String| {
        let mut cells = vec![label.to_owned()];
        cells.extend(cases.iter().map(cell));
        table.row(cells);
    };
    row("import wall time", &|c| {
        report::secs(seconds(c.imported.elapsed))
    });
    row("import rows/s", &|c| {
        report::count(per_second(c.imported.rows as f64, c.imported.elapsed))
    });
    row("import peak memory (VmHWM)", &|c| {
        report::mib(c.imported.peak_kib)
    });
    row("assets changed by the rule", &|c| {
        report::count(c.executed.executed as f64)
    });
    row("events appended (by correlation_id)", &|c| {
        report::count(c.executed.events as f64)
    });
    row("execution wall time", &|c| {
        report::secs(seconds(c.executed.elapsed))
    });
    row("execution events/s", &|c| {
        report::count(c.events_per_second())
    });
    row("execution peak memory (VmHWM)", &|c| {
        report::mib(c.executed.peak_kib)
    });
    row("service CPU during execution", &|c| {
        report::secs(c.executed.service_cpu)
    });
    row("postgres CPU during execution (all)", &|c| {
        report::secs(c.executed.postgres_cpu)
    });
    row("LIMIT raw COPY of the same rows (fastest)", &|c| {
        report::secs(seconds(c.limit.elapsed))
    });
    row("  each raw COPY", &|c| {
        let each: Vec<String> = c
            .limit
            .attempts
            .iter()
            .map(|elapsed| format!("{:.2}", seconds(*elapsed)))
            .collect();
        format!("{} s", each.join(" / "))
    });
    row("LIMIT raw COPY rows/s", &|c| {
        report::count(c.copy_rows_per_second())
    });
    row("ratio execution / COPY", &|c| report::ratio(c.ratio()));
    row("raw COPY with the log's indexes rows/s", &|c| {
        report::count(c.indexed_copy_rows_per_second())
    });
    row("ratio execution / COPY with indexes", &|c| {
        report::ratio(c.indexed_ratio())
    });
    table.print();
    if let Some(full) = cases.last() {
        let verdict = if full.ratio() >= TARGET_RATIO {
            "meets"
        } else {
            "misses"
        };
        println!(
            "ratio {:.2} {verdict} the target of {TARGET_RATIO} (events/s of the execution over rows/s of a raw COPY of its rows)",
            full.ratio()
        );
    }
}

fn print_profile(assets: usize, profile: &Profile) {
    let mut table = Table::new(
        format!(
            "profile of the {} asset execution: service connections, {} samples every 5 ms \
             (share = fraction of the time a connection was doing this)",
            report::count(assets as f64),
            profile.rounds
        ),
        &["activity", "samples", "share"],
    );
    for (label, samples) in profile.activities.iter().take(15) {
        let share = *samples as f64 / profile.rounds.max(1) as f64;
        table.row(vec![
            label.clone(),
            samples.to_string(),
            format!("{:.0}%", share * 100.0),
        ]);
    }
    table.print();
}

/// `events` per second over `limit` rows per second; 0 without a limit.
fn ratio(events: f64, limit: f64) -> f64 {
    if limit == 0.0 {
        return 0.0;
    }
    events / limit
}
