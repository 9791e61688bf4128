//! Retention: recordings are deleted when their class's period is over — by bucket lifecycle rules
//! where the store has them (`lifecycle`, with the pure rule plan in `rules`), by the sweeper
//! elsewhere (`sweeper`) — and the loops that keep either in force.

use std::sync::Arc;
use std::time::Duration;

use kube::runtime::reflector::Store;
use object_store::ObjectStore;

use crate::crd::RecordingPolicy;
use crate::metrics::Metrics;
use crate::settings::Settings;

pub mod lifecycle;
pub mod rules;
pub mod sweeper;

/// How retention was last verified to be enforced, shared with the fleet's status.
pub type Enforced = Arc<std::sync::RwLock<Option<rules::Enforcement>>>;

/// Starts the lifecycle loop (S3 with lifecycle management on) or the sweeper loop.
///
/// `store` is `None` when it could not be opened (the caller said why): then the sweeper is off.
pub fn start(
    settings: &Settings,
    policies: Store<RecordingPolicy>,
    store: Option<Arc<dyn ObjectStore>>,
    metrics: Arc<Metrics>,
    enforced: Enforced,
) {
    if lifecycle_enabled(settings) {
        tokio::spawn(lifecycle_loop(
            settings.clone(),
            policies,
            metrics,
            enforced,
        ));
    } else if let Some(store) = store {
        tokio::spawn(sweeper_loop(settings.clone(), store, metrics, enforced));
    }
}

fn lifecycle_enabled(settings: &Settings) -> bool {
    settings.retention.lifecycle && settings.store.url.starts_with("s3://")
}

/// Keeps the bucket's lifecycle rules in line with the retention classes of all policies.
async fn lifecycle_loop(
    settings: Settings,
    store: Store<RecordingPolicy>,
    metrics: Arc<Metrics>,
    enforced: Enforced,
) {
    let bucket = match lifecycle::Bucket::from_settings(&settings.store) {
        Ok(Some(b)) => b,
        Ok(None) => return,
        Err(e) => {
            tracing::error!(error = %e, "bucket lifecycle management is off: cannot reach the bucket");
            metrics.lifecycle_failures.inc();
            return;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(
        settings.retention.interval_seconds.max(10),
    ));
    loop {
        tick.tick().await;
        let _ = store.wait_until_ready().await;
        // Every class a policy names, suspended or not: its recordings exist.
        let classes: std::collections::BTreeSet<u32> = store
            .state()
            .iter()
            .map(|p| p.spec.retention_days)
            .collect();
        match lifecycle::enforce(
            &bucket,
            &settings.store.prefix,
            &classes,
            settings.export.archive_days,
        )
        .await
        {
            Ok(done) => {
                metrics.lifecycle_rules.set(done.rules.len() as i64);
                let classes = done.rules.iter().filter_map(rules::Rule::class).collect();
                if let Ok(mut e) = enforced.write() {
                    *e = Some(rules::Enforcement::LifecycleRules(classes));
                }
                metrics
                    .lifecycle_verified
                    .set(jiff::Timestamp::now().as_second());
                tracing::info!(
                    written = done.written,
                    rules = done.rules.len(),
                    "bucket lifecycle rules verified"
                );
            }
            Err(e) => {
                metrics.lifecycle_failures.inc();
                tracing::warn!(error = %e, "bucket lifecycle rules not enforced; retrying");
            }
        }
    }
}

/// Retention without lifecycle rules: sweep every interval.
async fn sweeper_loop(
    settings: Settings,
    store: Arc<dyn ObjectStore>,
    metrics: Arc<Metrics>,
    enforced: Enforced,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(
        settings.retention.interval_seconds.max(10),
    ));
    loop {
        tick.tick().await;
        match sweeper::sweep(
            store.as_ref(),
            &settings.store.prefix,
            jiff::Timestamp::now(),
            settings.retention.sweep_deletes_per_second,
            settings.export.archive_days,
        )
        .await
        {
            Ok(r) => {
                metrics.swept_objects.inc_by(r.deleted.len() as u64);
                metrics.swept_bytes.inc_by(r.bytes);
                if let Ok(mut e) = enforced.write() {
                    *e = Some(rules::Enforcement::Sweeper);
                }
                if !r.deleted.is_empty() {
                    tracing::info!(
                        objects = r.deleted.len(),
                        bytes = r.bytes,
                        "retention sweeper deleted expired recordings"
                    );
                }
            }
            Err(e) => {
                metrics.lifecycle_failures.inc();
                tracing::warn!(error = %e, "retention sweep failed; retrying next interval");
            }
        }
    }
}
