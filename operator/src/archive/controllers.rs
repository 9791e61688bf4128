//! Runs the hold and erasure controllers on the archive's shared context.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::{Context, Error, stopped};
use crate::crd::{RecordingErasure, RecordingHold};

fn error_policy<K: ResourceExt>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(name = %obj.name_any(), namespace = ?obj.namespace(), %error, label = error.metric_label(), "request failed; retrying");
    ctx.metrics.failures.inc();
    Action::requeue(Duration::from_secs(15))
}

/// Runs the hold and erasure controllers until `stop` resolves.
pub async fn run(ctx: Arc<Context>, stop: tokio::sync::watch::Receiver<bool>) {
    let client = ctx.client.clone();
    let holds = Controller::new(
        Api::<RecordingHold>::all(client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(stopped(stop.clone()))
    .run(super::hold::reconcile, error_policy, ctx.clone())
    .for_each(|_| async {});
    let erasures = Controller::new(
        Api::<RecordingErasure>::all(client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(stopped(stop.clone()))
    .run(super::erasure::reconcile, error_policy, ctx.clone())
    .for_each(|_| async {});
    futures::join!(holds, erasures);
}
