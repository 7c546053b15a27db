//! `synapse-demo`: generate a realistic demo plant (CFIHOS-based) and load it into a
//! running SYNAPSE through the command API, or write it as CSV.
//!
//! ```text
//! synapse-demo                          # load 5,000 assets into http://127.0.0.1:8081
//! synapse-demo --assets 20000 --seed 7  # a bigger, different plant
//! synapse-demo csv --out plant.csv      # the same plant as a CSV file
//! ```

mod export;
mod load;
mod plant;
mod rng;
mod rules;

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// Generate the SYNAPSE demo plant and load it, or write it as CSV.
#[derive(Debug, Parser)]
#[command(name = "synapse-demo", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Base URL of the command API.
    #[arg(
        long,
        env = "SYNAPSE_COMMAND_URL",
        default_value = "http://127.0.0.1:8081",
        global = true
    )]
    command_url: String,
    /// Number of assets in the plant.
    #[arg(long, default_value_t = 5_000, global = true)]
    assets: usize,
    /// Seed of the generator: the same seed gives the same plant.
    #[arg(long, default_value_t = 1, global = true)]
    seed: u64,
    /// Requests in flight at once while loading. 16 keeps two cores busy without
    /// queueing requests in the service.
    #[arg(long, default_value_t = 16, global = true)]
    concurrency: usize,
    /// Bearer token for the command API (a role that may create assets).
    #[arg(long, env = "SYNAPSE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Import the plant as one CSV batch, define the demo rules and run them once
    /// (the default). Needs an admin token (rules are defined by admins).
    Load,
    /// Load the plant through `POST /assets`, one request per asset, and nothing else.
    LoadEach,
    /// Write the plant as CSV: `tag,asset_type,discipline,name,area,<properties>`.
    Csv {
        /// Output file; `-` writes to standard output.
        #[arg(long)]
        out: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let plant = plant::generate(cli.assets, cli.seed);
    match cli.command.unwrap_or(Command::Load) {
        Command::Load => {
            print_summary(&plant);
            let mut csv = Vec::new();
            export::write_csv(&plant, &mut csv).context("writing the plant as CSV")?;
            rules::import_define_and_run(&cli.command_url, cli.token.as_deref(), csv).await?;
        }
        Command::LoadEach => {
            print_summary(&plant);
            let options = load::LoadOptions {
                command_url: cli.command_url.clone(),
                concurrency: cli.concurrency,
                token: cli.token.clone(),
            };
            let report = load::load(&plant, &options).await?;
            eprintln!(
                "demo plant loaded into {}: {} created, {} already present",
                cli.command_url, report.created, report.already_present
            );
        }
        Command::Csv { out } => {
            if out.as_os_str() == "-" {
                let stdout = std::io::stdout();
                let mut writer = BufWriter::new(stdout.lock());
                export::write_csv(&plant, &mut writer).context("writing CSV to stdout")?;
                writer.flush().context("writing CSV to stdout")?;
            } else {
                let file = std::fs::File::create(&out)
                    .with_context(|| format!("creating {}", out.display()))?;
                let mut writer = BufWriter::new(file);
                export::write_csv(&plant, &mut writer)
                    .and_then(|()| writer.flush())
                    .with_context(|| format!("writing {}", out.display()))?;
                eprintln!("wrote {} assets to {}", plant.assets.len(), out.display());
            }
        }
    }
    Ok(())
}

/// One line per discipline and the count of assets missing a mandatory property.
fn print_summary(plant: &plant::Plant) {
    let mut by_discipline: BTreeMap<&str, usize> = BTreeMap::new();
    for asset in &plant.assets {
        *by_discipline.entry(asset.discipline).or_default() += 1;
    }
    eprintln!(
        "demo plant: {} assets in {} areas",
        plant.assets.len(),
        plant::AREAS.len()
    );
    for (discipline, count) in by_discipline {
        eprintln!("  {discipline:<16} {count:>6}");
    }
    eprintln!(
        "  {} references between assets by tag ({})",
        plant.reference_count(),
        plant::REFERENCE_KEYS.join(", ")
    );
    eprintln!(
        "  {} assets miss a mandatory property (for validation rules to find)",
        plant.missing_mandatory_count()
    );
}
