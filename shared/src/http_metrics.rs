//! HTTP metrics of every service: a latency histogram and a request counter.
//!
//! - `http_request_duration_seconds` (histogram, buckets [`LATENCY_BUCKETS`]): time from
//!   the request reaching the router to the response head being ready (a streamed body,
//!   such as a CSV export, keeps flowing after that);
//! - `http_requests_total` (counter).
//!
//! Both are labelled `service`, `method`, `route` and `status`, each from a bounded
//! set so that no client can grow the number of series: `route` is the matched route
//! template (`/assets/{id}`, never the raw path with its ids), or [`UNMATCHED_ROUTE`]
//! for a request no route matched; `method` is one of the standard methods or
//! `OTHER`; `status` is the class (`2xx`, `4xx`, ...). `service` tells the three
//! services apart where their metrics meet (a dashboard over all of them, or the tests,
//! which run all three in one process).
//!
//! Wrap a whole [`axum::Router`] with [`layer`] (`Router::layer`, which axum applies
//! after routing, so the matched route is known).

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use futures::future::BoxFuture;
use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Instant;
use tower::{Layer, Service};

/// Name of the latency histogram.
pub const REQUEST_DURATION: &str = "http_request_duration_seconds";
/// Name of the request counter.
pub const REQUESTS: &str = "http_requests_total";
/// The `route` label of a request that matched no route (a 404 from the fallback):
/// one series for all of them, whatever paths clients try.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Histogram buckets in seconds: from a cached read (~1 ms) to a large CSV import or a
/// waited-for execution (tens of seconds); the 5 s bucket is the pool's acquire timeout,
/// where a request answered 503 while Postgres is down ends up.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The layer recording both metrics for every request of `service`'s router.
pub fn layer(service: &'static str) -> HttpMetricsLayer {
    HttpMetricsLayer { service }
}

/// See [`layer`].
#[derive(Debug, Clone, Copy)]
pub struct HttpMetricsLayer {
    service: &'static str,
}

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = HttpMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpMetrics {
            inner,
            service: self.service,
        }
    }
}

/// The service [`HttpMetricsLayer`] wraps around each route.
#[derive(Debug, Clone)]
pub struct HttpMetrics<S> {
    inner: S,
    service: &'static str,
}

impl<S> Service<Request> for HttpMetrics<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let service = self.service;
        let method = method_label(request.method());
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or(UNMATCHED_ROUTE.to_owned(), |path| path.as_str().to_owned());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let labels = [
                ("service", service.to_owned()),
                ("method", method.to_owned()),
                ("route", route),
                (
                    "status",
                    status_class(response.status().as_u16()).to_owned(),
                ),
            ];
            metrics::histogram!(REQUEST_DURATION, &labels).record(started.elapsed().as_secs_f64());
            metrics::counter!(REQUESTS, &labels).increment(1);
            Ok(response)
        })
    }
}

/// The method as a label: the standard ones by name, anything else (extension methods
/// a client may invent) as `OTHER`.
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::POST, "POST"),
        (Method::PUT, "PUT"),
        (Method::PATCH, "PATCH"),
        (Method::DELETE, "DELETE"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::CONNECT, "CONNECT"),
        (Method::TRACE, "TRACE"),
    ];
    KNOWN
        .iter()
        .find(|(known, _)| known == method)
        .map_or("OTHER", |(_, label)| label)
}

/// `2xx`, `4xx`, ...: the class is what alerts look at, and it keeps the series few.
fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_standard_set_share_one_label() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let invented = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&invented), "OTHER");
    }

    #[test]
    fn statuses_are_reported_by_class() {
        assert_eq!(status_class(101), "1xx");
        assert_eq!(status_class(201), "2xx");
        assert_eq!(status_class(304), "3xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(999), "other");
    }
}
