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
    // A log line that cannot be written (stdout closed: `service | head -1`) is
    // dropped; by default the subscriber reported it with `eprint!`, which panics when
    // stderr is closed too, killing the task that logged: the service died at start,
    // or its shutdown task did and SIGTERM no longer stopped it.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .log_internal_errors(false);
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

/// How long a projector took to apply one batch (projection service; a histogram).
pub const PROJECTOR_BATCH_SECONDS: &str = "synapse_projector_batch_seconds";

/// The histograms rendered with buckets (aggregatable across replicas, unlike the
/// summaries of the others), all with [`http_metrics::LATENCY_BUCKETS`].
const BUCKETED: [&str; 2] = [http_metrics::REQUEST_DURATION, PROJECTOR_BATCH_SECONDS];

/// The exporter's settings: bucket boundaries per histogram.
fn builder() -> PrometheusBuilder {
    BUCKETED
        .iter()
        .fold(PrometheusBuilder::new(), |builder, name| {
            // Fails only for an empty bucket list, which the constant is not.
            builder
                .set_buckets_for_metric(
                    Matcher::Full((*name).to_owned()),
                    http_metrics::LATENCY_BUCKETS,
                )
                .unwrap_or_else(|error| {
                    tracing::warn!(%error, "histogram buckets refused; rendering summaries");
                    PrometheusBuilder::new()
                })
        })
}

/// Show `counters` and `gauges` (without labels) from the start, at 0 until something
/// counts: a series that appears only at its first increment reads as "no data" on
/// an idle replica, and `rate()` misses its first count. Values already recorded (by
/// another service in the same process) are left as they are.
pub fn register(counters: &[&'static str], gauges: &[&'static str]) {
    let _ = metrics();
    for name in counters {
        metrics::counter!(*name).increment(0);
    }
    for name in gauges {
        metrics::gauge!(*name).increment(0.0);
    }
}
