//! `bench relay`: how fast the relay empties a backlog of events into JetStream,
//! against a raw pipelined publish of the very same messages.

use crate::environment::{with_environment, Endpoints};
use crate::plant;
use crate::report::{self, Table};
use crate::scenario::{self, per_second, seconds};
use crate::stream::{self, RawMessage};
use anyhow::{bail, Context};
use serde_json::json;
use std::time::{Duration, Instant};
use synapse_shared::{event_log, nats, SubjectScheme};

/// Events read from the log per query while preparing the raw messages.
const READ_PAGE: i64 = 10_000;
/// How long the relay may take to publish the backlog.
const RELAY_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, clap::Args)]
pub struct RelayArgs {
    /// Events in the backlog (about: an import of this many assets plus its batch
    /// events); at most 200,000.
    #[arg(long, default_value_t = 50_000)]
    pub events: usize,
    /// Also print the results as one JSON line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub endpoints: Endpoints,
}

struct Measured {
    events: u64,
    payload_bytes: usize,
    raw: Duration,
    startup: Duration,
    relay: Duration,
}

pub async fn run(args: RelayArgs) -> anyhow::Result<()> {
    if args.events <= plant::MCCS || args.events > plant::IMPORT_ROWS {
        bail!(
            "--events must be between {} and {}",
            plant::MCCS + 1,
            plant::IMPORT_ROWS
        );
    }
    eprintln!("relay: {} events ...", args.events);
    let measured = with_environment(&args.endpoints, async |environment| {
        // The backlog: an import with the relay off.
        scenario::import_plant(environment, args.events, false).await?;
        environment.stop_service().await;
        let pool = environment.pool().await?;
        let raw_prefix = format!("{}_raw.events", environment.name);
        let subjects = SubjectScheme::new(raw_prefix.clone());
        let mut messages = Vec::new();
        let mut after = 0;
        loop {
            let page = event_log::read_after(&pool, after, READ_PAGE)
                .await
                .context("reading the backlog")?;
            let Some(last) = page.last() else { break };
            after = last.position;
            for event in &page {
                messages.push(RawMessage {
                    subject: subjects.for_event(event),
                    headers: nats::headers_for(event),
                    payload: serde_json::to_vec(event)?,
                });
            }
        }
        let events = messages.len() as u64;
        let payload_bytes = messages.iter().map(|m| m.payload.len()).sum();
        let raw_stream = format!("{}_RAW", environment.stream);
        let raw = stream::raw_publish(
            &environment.endpoints.nats_url,
            &raw_stream,
            &raw_prefix,
            messages,
        )
        .await?;
        // The relay: a fresh service with its relay on, timed from process start until
        // the stream holds the whole backlog.
        let started = Instant::now();
        environment.start_service(true).await?;
        let startup = started.elapsed();
        stream::wait_for_messages(
            &environment.endpoints.nats_url,
            &environment.stream,
            events,
            RELAY_TIMEOUT,
        )
        .await?;
        let relay = started.elapsed();
        Ok(Measured {
            events,
            payload_bytes,
            raw,
            startup,
            relay,
        })
    })
    .await?;
    let raw_rate = per_second(measured.events as f64, measured.raw);
    let relay_rate = per_second(measured.events as f64, measured.relay);
    let ratio = if raw_rate == 0.0 {
        0.0
    } else {
        relay_rate / raw_rate
    };
    let mut table = Table::new(
        format!(
            "bench relay: {} events in the log ({:.1} MiB of JSON)",
            report::count(measured.events as f64),
            measured.payload_bytes as f64 / (1024.0 * 1024.0)
        ),
        &["", "wall time", "messages/s"],
    );
    table.row(vec![
        "LIMIT raw JetStream publish (pipelined)".into(),
        report::secs(seconds(measured.raw)),
        report::count(raw_rate),
    ]);
    table.row(vec![
        "relay, from process start".into(),
        report::secs(seconds(measured.relay)),
        report::count(relay_rate),
    ]);
    table.row(vec![
        "  of which service start to /healthz".into(),
        report::secs(seconds(measured.startup)),
        String::new(),
    ]);
    table.row(vec![
        "ratio relay / raw".into(),
        report::ratio(ratio),
        String::new(),
    ]);
    table.print();
    if args.json {
        report::json_line(&json!({
            "bench": "relay",
            "events": measured.events,
            "payload_bytes": measured.payload_bytes,
            "raw_seconds": seconds(measured.raw),
            "raw_messages_per_second": raw_rate,
            "relay_seconds": seconds(measured.relay),
            "relay_startup_seconds": seconds(measured.startup),
            "relay_messages_per_second": relay_rate,
            "ratio": ratio,
        }));
    }
    Ok(())
}
