//! Retention: recordings are deleted when their class's period is over — by bucket lifecycle rules
//! where the store has them (`lifecycle`, with the pure rule plan in `rules`), by the sweeper
//! elsewhere (`sweeper`) — and the loops that keep either in force.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::reflector::Store;
use object_store::ObjectStore;

use crate::crd::RecordingPolicy;
use crate::metrics::Metrics;
use crate::settings::Settings;

pub mod lifecycle;
pub mod rules;
pub mod sweeper;

/// How retention was last verified to be enforced, shared with the fleet's status: a watch, so
/// a change re-plans every namespace at once instead of at its next periodic reconcile.
pub type Enforced = Arc<tokio::sync::watch::Sender<Option<rules::Enforcement>>>;

/// A new verification result; receivers hear of it only when it differs from the last.
fn publish(enforced: &Enforced, now: rules::Enforcement) {
    enforced.send_if_modified(|e| {
        let changed = e.as_ref() != Some(&now);
        *e = Some(now);
        changed
    });
}

/// Starts the lifecycle loop (S3 with lifecycle management on) or the sweeper loop.
///
/// `store` is `None` when it could not be opened (the caller said why): then the sweeper is off.
/// `synced` turns true once `policies` holds every policy (before that, a class could be missed
/// and its rule dropped).
pub fn start(
    settings: &Settings,
    policies: Store<RecordingPolicy>,
    synced: tokio::sync::watch::Receiver<bool>,
    store: Option<Arc<dyn ObjectStore>>,
    metrics: Arc<Metrics>,
    enforced: Enforced,
) {
    if lifecycle_enabled(settings) {
        tokio::spawn(lifecycle_loop(
            settings.clone(),
            policies,
            synced,
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
    mut synced: tokio::sync::watch::Receiver<bool>,
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
    let every = Duration::from_secs(settings.retention.interval_seconds.max(10));
    let mut poll = tokio::time::interval(CLASS_POLL);
    let mut last: Option<(BTreeSet<u32>, Instant)> = None;
    loop {
        poll.tick().await;
        if synced.wait_for(|s| *s).await.is_err() {
            return;
        }
        // Every class a policy names, suspended or not: its recordings exist.
        let classes: BTreeSet<u32> = store
            .state()
            .iter()
            .map(|p| p.spec.retention_days)
            .collect();
        let now = Instant::now();
        if !due(last.as_ref(), &classes, now, every) {
            continue;
        }
        last = Some((classes.clone(), now));
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
                publish(&enforced, rules::Enforcement::LifecycleRules(classes));
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

/// How often the policies' retention classes are compared with those last enforced.
const CLASS_POLL: Duration = Duration::from_secs(2);

/// Whether the rules are to be enforced now: never yet, a class came or went (a new policy's class
/// gets its rule within seconds, not at the next interval), or the interval has passed since the
/// last attempt (a failed one included, so an outage is retried at that pace, not every poll).
fn due(
    last: Option<&(BTreeSet<u32>, Instant)>,
    classes: &BTreeSet<u32>,
    now: Instant,
    every: Duration,
) -> bool {
    last.is_none_or(|(c, at)| c != classes || now.duration_since(*at) >= every)
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
                publish(&enforced, rules::Enforcement::Sweeper);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforcement_is_due_first_on_a_class_change_and_after_the_interval() {
        let t0 = Instant::now();
        let every = Duration::from_secs(300);
        let thirty = BTreeSet::from([30]);
        assert!(due(None, &BTreeSet::new(), t0, every));
        let last = (BTreeSet::new(), t0);
        assert!(due(Some(&last), &thirty, t0 + CLASS_POLL, every));
        let last = (thirty.clone(), t0);
        assert!(!due(
            Some(&last),
            &thirty,
            t0 + Duration::from_secs(299),
            every
        ));
        assert!(due(Some(&last), &thirty, t0 + every, every));
        assert!(due(
            Some(&last),
            &BTreeSet::from([30, 90]),
            t0 + CLASS_POLL,
            every
        ));
    }

    #[test]
    fn only_a_changed_verification_is_announced() {
        let enforced: Enforced = Arc::new(tokio::sync::watch::channel(None).0);
        let mut rx = enforced.subscribe();
        publish(&enforced, rules::Enforcement::Sweeper);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        publish(&enforced, rules::Enforcement::Sweeper);
        assert!(!rx.has_changed().unwrap());
        publish(
            &enforced,
            rules::Enforcement::LifecycleRules(BTreeSet::from([30])),
        );
        assert!(rx.has_changed().unwrap());
    }
}
