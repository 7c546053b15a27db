//! Structured logs and Prometheus metrics, set up the same way by every service.

use crate::http_metrics;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// Install the global tracing subscriber: JSON lines when `LOG_FORMAT=json`, readable
/// text otherwise; the level from `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|format| format == "json");
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // `try_init` fails only when a subscriber is already installed (tests start several
    // services in one process), which is fine.
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// The process-wide Prometheus recorder. Installed once (several services may run in
/// one test process); a background task runs the exporter's upkeep, without which
/// histograms grow without bound.
///
/// Histograms are rendered as Prometheus histograms (buckets, aggregatable across
/// replicas) where buckets are set below, and as summaries otherwise.
pub fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = builder().build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; we then still render
            // our (empty) handle rather than crash.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            let upkeep = handle.clone();
            std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            });
            handle
        })
        .clone()
}

/// The exporter's settings: bucket boundaries per histogram.
fn builder() -> PrometheusBuilder {
    let latency = Matcher::Full(http_metrics::REQUEST_DURATION.to_owned());
    // Fails only for an empty bucket list, which the constant is not.
    PrometheusBuilder::new()
        .set_buckets_for_metric(latency, http_metrics::LATENCY_BUCKETS)
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "HTTP latency buckets refused; rendering a summary");
            PrometheusBuilder::new()
        })
}
