//! `/metrics` of all three services: HTTP latency by route template, and the pipeline's
//! own gauges and counters (append rate, relay lag, projector lag, WebSocket clients).
//!
//! The Prometheus recorder is process-wide and nextest runs every test in a process of
//! its own (`deploy/test.sh`), so the counts below are this test's requests exactly.

use serde_json::json;
use synapse_tests::apps::System;
use synapse_tests::metrics::{self, scrape_until, Sample};
use uuid::Uuid;

/// The requests of one `(method, route, status class)` series of one service.
struct Expected {
    service: &'static str,
    method: &'static str,
    route: &'static str,
    status: &'static str,
    count: f64,
}

const fn expect(
    service: &'static str,
    method: &'static str,
    route: &'static str,
    status: &'static str,
    count: f64,
) -> Expected {
    Expected {
        service,
        method,
        route,
        status,
        count,
    }
}

/// Checks one series: the histogram's count, its buckets (cumulative, `+Inf` = count),
/// a positive sum, and the request counter with the same labels.
fn check_series(samples: &[Sample], expected: &Expected) {
    let labels = [
        ("service", expected.service),
        ("method", expected.method),
        ("route", expected.route),
        ("status", expected.status),
    ];
    let described = format!(
        "{} {} {} {}",
        expected.service, expected.method, expected.route, expected.status
    );
    let count = metrics::value(samples, "http_request_duration_seconds_count", &labels);
    assert_eq!(
        count,
        Some(expected.count),
        "histogram count of {described}"
    );
    let requests = metrics::value(samples, "http_requests_total", &labels);
    assert_eq!(
        requests,
        Some(expected.count),
        "request counter of {described}"
    );
    let sum = metrics::value(samples, "http_request_duration_seconds_sum", &labels);
    assert!(
        sum.is_some_and(|sum| sum > 0.0),
        "sum of {described}: {sum:?}"
    );
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|sample| {
            sample.name == "http_request_duration_seconds_bucket" && sample.has(&labels)
        })
        .map(|sample| {
            let bound = sample.labels["le"].parse::<f64>().unwrap_or(f64::NAN);
            (bound, sample.value)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    // The configured buckets (1 ms .. 30 s) plus +Inf.
    assert_eq!(buckets.len(), 15, "buckets of {described}: {buckets:?}");
    assert_eq!(buckets.first().map(|b| b.0), Some(0.001));
    assert_eq!(buckets.last(), Some(&(f64::INFINITY, expected.count)));
    assert!(
        buckets.windows(2).all(|pair| pair[0].1 <= pair[1].1),
        "buckets of {described} are not cumulative: {buckets:?}"
    );
}

#[tokio::test]
async fn every_service_reports_http_latency_per_route_template_and_the_pipeline_metrics(
) -> anyhow::Result<()> {
    // Arrange
    let system = System::start().await?;
    let http = &system.http;
    let live =
        synapse_tests::ws::subscribe(system.query.port, json!({"type": "subscribe"})).await?;
    let mut ids = Vec::new();
    for tag in ["M-1", "M-2"] {
        let created = http
            .post(system.command.url("/assets"))
            .json(
                &json!({"tag": tag, "asset_type": "MOTOR", "discipline": "ELECTRICAL",
                          "properties": {"rated_power_kw": 75}}),
            )
            .send()
            .await?;
        assert_eq!(created.status(), 201);
        let body: serde_json::Value = created.json().await?;
        ids.push(
            body["asset"]["id"]
                .as_str()
                .unwrap_or_default()
                .parse::<Uuid>()?,
        );
    }
    system.wait_for_projection().await?;

    // Act
    let status =
        |url: String| async move { anyhow::Ok(http.get(url).send().await?.status().as_u16()) };
    assert_eq!(status(system.command.url("/rules")).await?, 200);
    assert_eq!(status(system.command.url("/no/such/route")).await?, 404);
    for id in ids.iter().chain(ids.first()) {
        assert_eq!(
            status(system.query.url(&format!("/assets/{id}"))).await?,
            200
        );
    }
    assert_eq!(
        status(system.query.url("/events/timeline?colour=red")).await?,
        400
    );
    assert_eq!(
        status(system.query.url(&format!("/nothing/{}", ids[0]))).await?,
        404
    );
    for _ in 0..2 {
        assert_eq!(status(system.projection.url("/healthz")).await?, 200);
    }
    assert_eq!(status(system.projection.url("/elsewhere")).await?, 404);

    // Assert: every service serves its page, with its own series.
    let events_logged: i64 = {
        let pool = sqlx::PgPool::connect(&system.database.url).await?;
        sqlx::query_scalar("select count(*) from workflow_events")
            .fetch_one(&pool)
            .await?
    };
    let projectors = projection_service::projectors::ALL;
    let pipeline_settled = |samples: &[Sample]| {
        let caught_up = |name: &str| {
            projectors.iter().all(|projector| {
                metrics::value(samples, name, &[("projector", *projector)]) == Some(0.0)
            })
        };
        metrics::value(samples, "synapse_relay_lag_events", &[]) == Some(0.0)
            && metrics::value(samples, "synapse_relay_published_total", &[])
                == Some(events_logged as f64)
            && caught_up("synapse_projector_lag_events")
            && caught_up("synapse_projector_lag_seconds")
    };
    let (_, command) =
        scrape_until(http, &system.command.url("/metrics"), pipeline_settled).await?;
    let (projection_page, projection) =
        scrape_until(http, &system.projection.url("/metrics"), |_| true).await?;
    let (query_page, query) = scrape_until(http, &system.query.url("/metrics"), |_| true).await?;
    // A projector's batch time is a histogram, which adds up across replicas.
    assert!(projection_page.contains("# TYPE synapse_projector_batch_seconds histogram"));
    assert!(projection_page.contains("synapse_projector_batch_seconds_bucket{"));

    for expected in [
        expect("command", "POST", "/assets", "2xx", 2.0),
        expect("command", "GET", "/rules", "2xx", 1.0),
        expect("command", "GET", "unmatched", "4xx", 1.0),
    ] {
        check_series(&command, &expected);
    }
    for expected in [
        expect("projection", "GET", "/healthz", "2xx", 2.0),
        expect("projection", "GET", "unmatched", "4xx", 1.0),
    ] {
        check_series(&projection, &expected);
    }
    for expected in [
        expect("query", "GET", "/assets/{id}", "2xx", 3.0),
        expect("query", "GET", "/events/timeline", "4xx", 1.0),
        expect("query", "GET", "unmatched", "4xx", 1.0),
        expect("query", "GET", "/ws", "1xx", 1.0),
    ] {
        check_series(&query, &expected);
    }
    // Raw paths never become labels: the asset ids appear nowhere on the page.
    for id in &ids {
        assert!(
            !query_page.contains(&id.to_string()),
            "{id} leaked into a label"
        );
    }
    // Append rate: the counter equals the events in the log.
    assert_eq!(
        metrics::value(&command, "synapse_events_appended_total", &[]),
        Some(events_logged as f64)
    );
    assert!(events_logged >= 6, "two single changes log 3 events each");
    // WebSocket clients: this test's one subscriber.
    assert_eq!(metrics::value(&query, "synapse_ws_clients", &[]), Some(1.0));
    drop(live);
    Ok(())
}

#[tokio::test]
async fn the_pipeline_counters_and_the_client_gauge_are_there_at_0_before_anything_happens(
) -> anyhow::Result<()> {
    // Arrange: fresh services, no command, no client.
    let system = System::start().await?;
    let http = &system.http;

    // Act
    let (_, command) = scrape_until(http, &system.command.url("/metrics"), |_| true).await?;
    let (_, query) = scrape_until(http, &system.query.url("/metrics"), |_| true).await?;
    let (_, projection) = scrape_until(http, &system.projection.url("/metrics"), |_| true).await?;

    // Assert
    for name in [
        "synapse_events_appended_total",
        "synapse_relay_published_total",
        "synapse_execution_chunks_replanned_total",
    ] {
        assert_eq!(metrics::value(&command, name, &[]), Some(0.0), "{name}");
    }
    for name in ["synapse_ws_clients", "synapse_ws_lagged_clients_total"] {
        assert_eq!(metrics::value(&query, name, &[]), Some(0.0), "{name}");
    }
    // The live feed's position, once it follows the (empty) stream.
    let (_, query) = scrape_until(http, &system.query.url("/metrics"), |samples| {
        samples
            .iter()
            .any(|sample| sample.name == "synapse_live_hub_position")
    })
    .await?;
    let positions: Vec<f64> = query
        .iter()
        .filter(|sample| sample.name == "synapse_live_hub_position")
        .map(|sample| sample.value)
        .collect();
    assert_eq!(positions, [0.0]);
    assert_eq!(
        metrics::value(
            &projection,
            "synapse_projector_undecodable_messages_total",
            &[]
        ),
        Some(0.0)
    );
    Ok(())
}
