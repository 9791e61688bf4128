//! Runs the hold and erasure controllers on the archive's shared context.

use std::sync::Arc;

use futures::StreamExt;
use kube::Api;
use kube::runtime::controller::Controller;
use kube::runtime::watcher;

use super::{Context, error_policy, stopped};
use crate::crd::{RecordingErasure, RecordingHold};

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
