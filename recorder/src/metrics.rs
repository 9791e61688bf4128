//! Prometheus metrics and the health endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

pub struct Metrics {
    registry: Registry,
    pub active_calls: Gauge,
    pub calls: Family<OutcomeLabel, Counter>,
    pub recordings: Family<OutcomeLabel, Counter>,
    pub packets_received: Counter,
    pub packets_lost: Counter,
    /// RTP dropped as not the stream's (another source or SSRC, not RTP): injection attempts
    /// or a misconfigured SBC (behind NAT without `rtp.latching`).
    pub packets_foreign: Counter,
    pub upload_seconds: Histogram,
    pub uploads_pending: Gauge,
    /// Bytes of finished recordings waiting in the spool for the store.
    pub spool_pending_bytes: Gauge,
    /// Above this many pending bytes the recorder reports not ready, so new calls go elsewhere.
    pub spool_high_water: Gauge,
    /// Concurrent calls taken before answering 503 (capacity dashboards divide by it).
    pub max_calls: Gauge,
    pub errors: Family<KindLabel, Counter>,
    pub ready: AtomicBool,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("opname");
        let m = Metrics {
            active_calls: Gauge::default(),
            calls: Family::default(),
            recordings: Family::default(),
            packets_received: Counter::default(),
            packets_lost: Counter::default(),
            packets_foreign: Counter::default(),
            upload_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            uploads_pending: Gauge::default(),
            spool_pending_bytes: Gauge::default(),
            spool_high_water: Gauge::default(),
            max_calls: Gauge::default(),
            errors: Family::default(),
            ready: AtomicBool::new(true),
            registry: Registry::default(),
        };
        registry.register(
            "active_calls",
            "Recordings in progress",
            m.active_calls.clone(),
        );
        registry.register(
            "calls",
            "New recording sessions by outcome",
            m.calls.clone(),
        );
        registry.register(
            "recordings",
            "Finished recordings by end reason",
            m.recordings.clone(),
        );
        registry.register(
            "rtp_packets_received",
            "RTP packets received in finished recordings",
            m.packets_received.clone(),
        );
        registry.register(
            "rtp_packets_lost",
            "RTP packets lost in finished recordings",
            m.packets_lost.clone(),
        );
        registry.register(
            "rtp_packets_foreign",
            "RTP packets dropped as not the stream's (another source or SSRC, or not RTP)",
            m.packets_foreign.clone(),
        );
        registry.register(
            "upload_seconds",
            "Time from end of call to both objects stored",
            m.upload_seconds.clone(),
        );
        registry.register(
            "uploads_pending",
            "Finished recordings waiting in the spool for upload",
            m.uploads_pending.clone(),
        );
        registry.register("errors", "Errors by kind", m.errors.clone());
        registry.register(
            "spool_pending_bytes",
            "Bytes of finished recordings waiting in the spool for upload",
            m.spool_pending_bytes.clone(),
        );
        m.spool_high_water.set(i64::MAX);
        registry.register(
            "spool_high_water_bytes",
            "Pending spool bytes above which the recorder reports not ready",
            m.spool_high_water.clone(),
        );
        registry.register(
            "max_calls",
            "Concurrent calls taken before answering 503",
            m.max_calls.clone(),
        );
        registry.register(
            "build",
            "The recorder's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        Arc::new(Metrics { registry, ..m })
    }

    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&KindLabel { kind: kind.into() })
            .inc();
    }

    fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(m): State<Arc<Metrics>>| async move {
                if !m.ready.load(Ordering::Relaxed) {
                    (StatusCode::SERVICE_UNAVAILABLE, "draining")
                } else if m.spool_pending_bytes.get() > m.spool_high_water.get() {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "spool above its high-water mark: the store is not keeping up",
                    )
                } else {
                    (StatusCode::OK, "ready")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.encode(),
                )
            }),
        )
        .with_state(metrics)
}
