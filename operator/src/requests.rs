//! Controllers for what admins ask of the archive: legal holds (`RecordingHold`), erasures
//! (`RecordingErasure`) and exports (`BulkExport`). They share one context: the API client, the store's catalog and the
//! Event recorder.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use crate::catalog::{Catalog, CatalogError};
use crate::crd::{BulkExport, RecordingErasure, RecordingHold};
use crate::metrics::Metrics;
use crate::settings::Settings;
use k8s_openapi::api::batch::v1::Job;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Store(#[from] object_store::Error),
    #[error("finalizer: {0}")]
    Finalizer(String),
    #[error("export: {0}")]
    Export(String),
}

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub catalog: Catalog,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
}

impl Context {
    pub async fn event(
        &self,
        on: &k8s_openapi::api::core::v1::ObjectReference,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Retention".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, on).await {
            tracing::warn!(error = %e, reason, "cannot publish event");
        }
    }
}

fn error_policy<K: ResourceExt>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(name = %obj.name_any(), namespace = ?obj.namespace(), %error, "request failed; retrying");
    ctx.metrics.failures.inc();
    Action::requeue(Duration::from_secs(15))
}

/// Runs the hold, erasure and export controllers until `stop` resolves.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let store = match crate::sweeper::open_store(&settings.store) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "holds and erasures are off: cannot open the store");
            return;
        }
    };
    let ctx = Arc::new(Context {
        catalog: Catalog::new(store, &settings.store.prefix),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: crate::controller::MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        ),
        client: client.clone(),
        settings,
        metrics,
    });
    let stopped = |mut stop: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    let holds = Controller::new(
        Api::<RecordingHold>::all(client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(stopped(stop.clone()))
    .run(crate::hold::reconcile, error_policy, ctx.clone())
    .for_each(|_| async {});
    let erasures = Controller::new(
        Api::<RecordingErasure>::all(client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(stopped(stop.clone()))
    .run(crate::erasure::reconcile, error_policy, ctx.clone())
    .for_each(|_| async {});
    let jobs = Api::<Job>::namespaced(
        client.clone(),
        &crate::bulkexport::job_namespace(&ctx.settings),
    );
    let exports = Controller::new(
        Api::<BulkExport>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        jobs,
        watcher::Config::default().labels("app.kubernetes.io/name=opname-export"),
        crate::bulkexport::export_of,
    )
    .graceful_shutdown_on(stopped(stop.clone()))
    .run(crate::bulkexport::reconcile, error_policy, ctx.clone())
    .for_each(|_| async {});
    futures::join!(holds, erasures, exports);
}
