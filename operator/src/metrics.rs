//! Operator metrics and health endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    pub reconciles: Counter,
    pub failures: Counter,
    pub duration: Histogram,
    /// Set once this replica leads and its controller runs.
    pub leading: AtomicBool,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let reconciles = Counter::default();
        let failures = Counter::default();
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let mut registry = Registry::with_prefix("opname_operator");
        registry.register("reconciles", "Reconciliations started", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciliations that failed",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of successful reconciliations",
            duration.clone(),
        );
        Arc::new(Self {
            registry,
            reconciles,
            failures,
            duration,
            leading: AtomicBool::new(false),
        })
    }
}

pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        // A standby replica is ready too: readiness only gates traffic to the metrics port.
        .route("/readyz", get(|| async { "ready" }))
        .route(
            "/leader",
            get(|State(m): State<Arc<Metrics>>| async move {
                if m.leading.load(Ordering::Relaxed) {
                    (StatusCode::OK, "leading")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "standby")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                let mut out = String::new();
                let _ = prometheus_client::encoding::text::encode(&mut out, &m.registry);
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    out,
                )
            }),
        )
        .with_state(metrics)
}
