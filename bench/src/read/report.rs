//! The read benchmark's table (each figure next to its target) and JSON line.

use super::queries::{self, Shape};
use super::Measured;
use crate::latency::Summary;
use crate::report::{self, Table};
use serde_json::{json, Value};

/// Targets of issue 5.
const QUERY_P99_MS: f64 = 20.0;
const PROJECTION_EVENTS_PER_SECOND: f64 = 20_000.0;
const LAG_P99_MS: f64 = 250.0;
const WS_P99_MS: f64 = 100.0;

fn verdict(meets: bool) -> String {
    if meets { "meets" } else { "MISSES" }.to_owned()
}

fn rate(count: f64, seconds: f64) -> f64 {
    count / seconds.max(f64::EPSILON)
}

impl Measured {
    fn projection_rate(&self) -> f64 {
        rate(
            self.catch_up.messages as f64,
            self.catch_up.elapsed.as_secs_f64(),
        )
    }

    fn raw_rate(&self) -> f64 {
        rate(
            self.catch_up.raw.messages as f64,
            self.catch_up.raw.elapsed.as_secs_f64(),
        )
    }

    fn lag_summaries(&mut self) -> (Summary, Summary, u64) {
        let watermarks = &self.lag.watermarks;
        let (mut timeline, missing_timeline) = super::sustained::delays(
            &watermarks.log,
            &watermarks.timeline,
            self.lag.before,
            self.lag.after,
        );
        let (mut all, missing_all) = super::sustained::delays(
            &watermarks.log,
            &watermarks.all_read_models,
            self.lag.before,
            self.lag.after,
        );
        (
            timeline.summary(),
            all.summary(),
            missing_timeline + missing_all,
        )
    }
}

pub fn print(measured: &mut Measured) {
    let timeline = measured.queries.timeline.latencies.summary();
    let history = measured.queries.history.latencies.summary();
    let (lag_timeline, lag_all, lag_missing) = measured.lag_summaries();
    let ws = measured.live.all.from_commit.summary();
    let ws_stream = measured.live.all.from_stream.summary();
    let projection = measured.projection_rate();
    let raw = measured.raw_rate();
    let mut table = Table::new(
        format!(
            "bench read: {} events in the log ({} plants, {} executions, {} rollback), total wall time {:.0} s",
            report::count(measured.filled.events as f64),
            measured.filled.plants,
            measured.filled.executions,
            measured.filled.rollbacks,
            measured.total.as_secs_f64()
        ),
        &["measure", "value", "target", "verdict"],
    );
    let query_load = format!(
        "{} clients, {:.0} s",
        measured.query_clients,
        measured.queries.elapsed.as_secs_f64()
    );
    table.row(vec![
        format!("timeline p50 / p99 ({query_load}, mixed filters)"),
        timeline.p50_p99(),
        format!("p99 < {QUERY_P99_MS} ms"),
        verdict(timeline.p99_ms < QUERY_P99_MS),
    ]);
    table.row(vec![
        "asset history p50 / p99 (same load)".into(),
        history.p50_p99(),
        format!("p99 < {QUERY_P99_MS} ms"),
        verdict(history.p99_ms < QUERY_P99_MS),
    ]);
    table.row(vec![
        "  query requests/s (timeline + history)".into(),
        report::count(measured.queries.requests_per_second()),
        String::new(),
        String::new(),
    ]);
    table.row(vec![
        format!(
            "projection catch-up, 3 projectors ({})",
            report::secs(measured.catch_up.elapsed.as_secs_f64())
        ),
        format!("{} events/s", report::count(projection)),
        format!(
            ">= {} events/s",
            report::count(PROJECTION_EVENTS_PER_SECOND)
        ),
        verdict(projection >= PROJECTION_EVENTS_PER_SECOND),
    ]);
    table.row(vec![
        "  LIMIT raw ordered consumer, same stream".into(),
        format!("{} msgs/s", report::count(raw)),
        String::new(),
        String::new(),
    ]);
    table.row(vec![
        "  ratio projection / raw".into(),
        report::ratio(projection / raw.max(f64::EPSILON)),
        String::new(),
        String::new(),
    ]);
    table.row(vec![
        format!(
            "end-to-end lag p50 / p99, every read model ({:.0} events/s achieved)",
            measured.lag.achieved_rate()
        ),
        lag_all.p50_p99(),
        format!(
            "p99 < {LAG_P99_MS} ms at {} events/s",
            report::count(measured.lag_rate)
        ),
        verdict(lag_all.p99_ms < LAG_P99_MS && lag_missing == 0),
    ]);
    table.row(vec![
        "  lag p50 / p99, timeline read model only".into(),
        lag_timeline.p50_p99(),
        String::new(),
        String::new(),
    ]);
    table.row(vec![
        format!(
            "WebSocket delivery p50 / p99, commit -> client ({} clients, 1 in {} on a discipline, {:.0} events/s achieved)",
            measured.live.clients,
            measured.live.discipline_every,
            measured.live.run.achieved_rate()
        ),
        ws.p50_p99(),
        format!("p99 < {WS_P99_MS} ms"),
        verdict(ws.p99_ms < WS_P99_MS && measured.live.lagged == 0),
    ]);
    table.row(vec![
        "  of which stream -> client (query service's share)".into(),
        ws_stream.p50_p99(),
        String::new(),
        String::new(),
    ]);
    table.print();
    print_details(measured, &lag_all, lag_missing);
    print_shapes(measured);
    print_sweep(measured);
}

/// Query latency against the number of clients: the main load and `--query-sweep`.
fn print_sweep(measured: &mut Measured) {
    let mut table = Table::new(
        "query latency by concurrent clients (closed loop: each client sends its next request when the last one answered)",
        &["clients", "requests/s", "timeline p50 / p99", "history p50 / p99", "p99 < 20 ms"],
    );
    let main = (measured.query_clients, &mut measured.queries);
    let sweep = measured.query_sweep.iter_mut().map(|(c, r)| (*c, r));
    let mut rows: Vec<(usize, &mut super::queries::Results)> =
        std::iter::once(main).chain(sweep).collect();
    rows.sort_by_key(|(clients, _)| *clients);
    let mut slowest = Vec::new();
    for (clients, results) in rows {
        let timeline = results.timeline.latencies.summary();
        let history = results.history.latencies.summary();
        table.row(vec![
            clients.to_string(),
            report::count(results.requests_per_second()),
            timeline.p50_p99(),
            history.p50_p99(),
            verdict(timeline.p99_ms < QUERY_P99_MS && history.p99_ms < QUERY_P99_MS),
        ]);
        let mut shapes: Vec<(f64, &'static str)> = results
            .shapes
            .iter_mut()
            .map(|(shape, measured)| (measured.latencies.summary().p99_ms, shape.name()))
            .collect();
        shapes.sort_by(|a, b| b.0.total_cmp(&a.0));
        let named: Vec<String> = shapes
            .iter()
            .take(3)
            .map(|(p99, name)| format!("{name} {p99:.1} ms"))
            .collect();
        slowest.push(format!("{clients} clients: {}", named.join(", ")));
    }
    table.print();
    println!(
        "slowest timeline filter mixes by p99: {}",
        slowest.join("; ")
    );
}

fn print_details(measured: &mut Measured, lag: &Summary, lag_missing: u64) {
    let filled = &measured.filled;
    let catch_up = &measured.catch_up;
    println!(
        "fill: {:.1} s through the command API, then {:.1} s until the relay had published everything",
        filled.elapsed.as_secs_f64(),
        measured.relay_wait.as_secs_f64()
    );
    let projectors: Vec<String> = catch_up
        .projectors
        .iter()
        .map(|(name, at)| format!("{name} {:.1} s", at.as_secs_f64()))
        .collect();
    println!(
        "projection: {} messages; service start to /healthz {:.2} s; projectors done at {}; \
         service CPU {:.1} s, peak memory {}",
        report::count(catch_up.messages as f64),
        catch_up.startup.as_secs_f64(),
        projectors.join(", "),
        catch_up.cpu_seconds,
        report::mib(catch_up.peak_kib)
    );
    println!(
        "raw read: {} messages, {:.1} MiB in {:.2} s",
        report::count(catch_up.raw.messages as f64),
        catch_up.raw.bytes as f64 / (1024.0 * 1024.0),
        catch_up.raw.elapsed.as_secs_f64()
    );
    let cpu = &measured.query_cpu;
    println!(
        "query load: after `vacuum analyze` of the read models ({:.1} s; this Postgres runs with autovacuum off); \
         CPU over {:.1} s (warm-up included): query service {:.1} s, postgres {:.1} s \
         (every database on the machine), bench clients {:.1} s",
        measured.maintenance.as_secs_f64(),
        cpu.wall.as_secs_f64(),
        cpu.service,
        cpu.postgres,
        cpu.bench
    );
    let lag_run = &mut measured.lag;
    let responses = lag_run.driven.responses.summary();
    println!(
        "lag run: {} commands of {} events, {} events in the log, in {:.1} s ({} dropped by the pacer), command response p50 / p99 {}; \
         {} events timed, {lag_missing} never seen; max {:.1} ms; watermarks sampled {} times, longest gap {:.1} ms",
        lag_run.driven.commands,
        lag_run.driven.events,
        lag_run.after - lag_run.before,
        lag_run.driven.elapsed.as_secs_f64(),
        lag_run.driven.dropped,
        responses.p50_p99(),
        lag.count,
        lag.max_ms,
        lag_run.watermarks.rounds,
        lag_run.watermarks.longest_gap.as_secs_f64() * 1e3
    );
    let live = &mut measured.live;
    let discipline = live.discipline.from_commit.summary();
    let asset = live.asset.from_commit.summary();
    println!(
        "live feed: {} clients connected and subscribed in {:.1} s; {} messages received, {} timed; \
         by discipline p50 / p99 {} ({} deliveries), by asset {} ({} deliveries); \
         {} clients lagged, {} closed early, {} deliveries unmatched; max {:.1} ms",
        live.clients,
        live.connect_time.as_secs_f64(),
        report::count(live.messages as f64),
        report::count(live.all.from_commit.len() as f64),
        discipline.p50_p99(),
        discipline.count,
        asset.p50_p99(),
        asset.count,
        live.lagged,
        live.closed_early,
        live.all.unmatched,
        live.all.from_commit.summary().max_ms
    );
}

fn print_shapes(measured: &mut Measured) {
    print_shape_table(&mut measured.queries);
}

/// Latency per filter mix (and of the asset history) of one query load.
pub fn print_shape_table(results: &mut queries::Results) {
    let mut table = Table::new(
        "timeline by filter mix (each request is one page of up to 100 events)",
        &[
            "filters",
            "requests",
            "rows/page",
            "p50 ms",
            "p99 ms",
            "max ms",
        ],
    );
    for shape in Shape::ALL {
        let Some(measured) = results.shapes.get_mut(&shape) else {
            continue;
        };
        let rows = measured.rows_per_request();
        let summary = measured.latencies.summary();
        table.row(vec![
            shape.name().to_owned(),
            report::count(summary.count as f64),
            format!("{rows:.1}"),
            format!("{:.1}", summary.p50_ms),
            format!("{:.1}", summary.p99_ms),
            format!("{:.1}", summary.max_ms),
        ]);
    }
    let history = &mut results.history;
    let rows = history.rows_per_request();
    let summary = history.latencies.summary();
    table.row(vec![
        "(asset history)".into(),
        report::count(summary.count as f64),
        format!("{rows:.1}"),
        format!("{:.1}", summary.p50_ms),
        format!("{:.1}", summary.p99_ms),
        format!("{:.1}", summary.max_ms),
    ]);
    table.print();
}

pub fn json(measured: &mut Measured) -> Value {
    let (lag_timeline, lag_all, lag_missing) = measured.lag_summaries();
    let shapes: serde_json::Map<String, Value> = Shape::ALL
        .iter()
        .filter_map(|shape| {
            let measured = measured.queries.shapes.get_mut(shape)?;
            let rows = measured.rows_per_request();
            Some((
                shape.name().to_owned(),
                json!({"latency": measured.latencies.summary(), "rows_per_request": rows}),
            ))
        })
        .collect();
    json!({
        "bench": "read",
        "events": measured.filled.events,
        "fill_seconds": measured.filled.elapsed.as_secs_f64(),
        "total_seconds": measured.total.as_secs_f64(),
        "timeline": measured.queries.timeline.latencies.summary(),
        "history": measured.queries.history.latencies.summary(),
        "timeline_shapes": shapes,
        "query_clients": measured.query_clients,
        "query_sweep": measured.query_sweep.iter_mut().map(|(clients, results)| json!({
            "clients": clients,
            "requests_per_second": results.requests_per_second(),
            "timeline": results.timeline.latencies.summary(),
            "history": results.history.latencies.summary(),
        })).collect::<Vec<_>>(),
        "query_requests_per_second": measured.queries.requests_per_second(),
        "query_cpu_seconds": {
            "wall": measured.query_cpu.wall.as_secs_f64(),
            "query_service": measured.query_cpu.service,
            "postgres": measured.query_cpu.postgres,
            "bench": measured.query_cpu.bench,
        },
        "projection_events": measured.catch_up.messages,
        "projection_seconds": measured.catch_up.elapsed.as_secs_f64(),
        "projection_events_per_second": measured.projection_rate(),
        "raw_read_messages_per_second": measured.raw_rate(),
        "projection_ratio": measured.projection_rate() / measured.raw_rate().max(f64::EPSILON),
        "lag_rate_target": measured.lag_rate,
        "lag_rate_achieved": measured.lag.achieved_rate(),
        "lag_all_read_models": lag_all,
        "lag_timeline": lag_timeline,
        "lag_missing": lag_missing,
        "ws_clients": measured.live.clients,
        "ws_discipline_every": measured.live.discipline_every,
        "ws_rate_target": measured.live.rate,
        "ws_rate_achieved": measured.live.run.achieved_rate(),
        "ws_from_commit": measured.live.all.from_commit.summary(),
        "ws_from_stream": measured.live.all.from_stream.summary(),
        "ws_lagged_clients": measured.live.lagged,
        "targets": {
            "query_p99_ms": QUERY_P99_MS,
            "projection_events_per_second": PROJECTION_EVENTS_PER_SECOND,
            "lag_p99_ms": LAG_P99_MS,
            "ws_p99_ms": WS_P99_MS,
        },
    })
}
