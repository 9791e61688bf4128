//! Operator metrics and health endpoints.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    pub reconciles: Counter,
    pub failures: Counter,
    pub duration: Histogram,
    /// opname's lifecycle rules in force after the last verified enforcement.
    pub lifecycle_rules: Gauge,
    /// Unix time of the last enforcement whose read-back matched.
    pub lifecycle_verified: Gauge,
    pub lifecycle_failures: Counter,
    /// Objects and bytes the sweeper deleted.
    pub swept_objects: Counter,
    pub swept_bytes: Counter,
    /// Objects and bytes deleted by erasure requests.
    pub erased_objects: Counter,
    pub erased_bytes: Counter,
    /// 1 while this replica leads and its controllers run.
    pub leader: Gauge,
    /// BulkExports that ended Failed (refused, or their Job failed or vanished).
    pub exports_failed: Counter,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let reconciles = Counter::default();
        let failures = Counter::default();
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let lifecycle_rules = Gauge::default();
        let lifecycle_verified = Gauge::default();
        let lifecycle_failures = Counter::default();
        let swept_objects = Counter::default();
        let swept_bytes = Counter::default();
        let erased_objects = Counter::default();
        let erased_bytes = Counter::default();
        let leader = Gauge::default();
        let exports_failed = Counter::default();
        let mut registry = Registry::with_prefix("opname_operator");
        registry.register(
            "leader",
            "1 while this replica holds the Lease and runs the controllers",
            leader.clone(),
        );
        registry.register(
            "exports_failed",
            "BulkExports that ended Failed",
            exports_failed.clone(),
        );
        registry.register(
            "build",
            "The operator's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
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
        registry.register(
            "lifecycle_rules",
            "opname's bucket lifecycle rules in force after the last read-back",
            lifecycle_rules.clone(),
        );
        registry.register(
            "lifecycle_verified_timestamp_seconds",
            "When the lifecycle rules were last verified by read-back",
            lifecycle_verified.clone(),
        );
        registry.register(
            "lifecycle_failures",
            "Lifecycle enforcements that failed",
            lifecycle_failures.clone(),
        );
        registry.register(
            "retention_deleted_objects",
            "Objects the retention sweeper deleted",
            swept_objects.clone(),
        );
        registry.register(
            "retention_deleted_bytes",
            "Bytes the retention sweeper freed",
            swept_bytes.clone(),
        );
        registry.register(
            "erased_objects",
            "Objects deleted by erasure requests",
            erased_objects.clone(),
        );
        registry.register(
            "erased_bytes",
            "Audio bytes freed by erasure requests",
            erased_bytes.clone(),
        );
        Arc::new(Self {
            registry,
            reconciles,
            failures,
            duration,
            lifecycle_rules,
            lifecycle_verified,
            lifecycle_failures,
            swept_objects,
            swept_bytes,
            erased_objects,
            erased_bytes,
            leader,
            exports_failed,
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
                if m.leader.get() == 1 {
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
