//! The archive as stored: the catalog of recordings (`catalog`), the recordings service's
//! per-day listing indexes (`index`), and the controllers for what admins ask of it — legal holds
//! (`hold`) and erasures (`erasure`). They and the export controller share one context: the API
//! client, the store's catalog and the Event recorder.

use std::sync::Arc;

use kube::Client;
use kube::runtime::events::{EventType, Recorder, Reporter};

use crate::archive::catalog::{Catalog, CatalogError};

use crate::metrics::Metrics;
use crate::settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Store(#[from] object_store::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// A controller error's short label, for metrics and logs.
pub trait MetricLabel {
    fn metric_label(&self) -> &'static str;
}

impl MetricLabel for Error {
    fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Catalog(_) => "catalog",
            Error::Store(_) => "store",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

/// What the archive and export controllers do after a failed reconcile: log, count, retry in 15 s.
pub fn error_policy<K: kube::ResourceExt, E: std::fmt::Display + MetricLabel>(
    obj: std::sync::Arc<K>,
    error: &E,
    ctx: std::sync::Arc<Context>,
) -> kube::runtime::controller::Action {
    tracing::warn!(name = %obj.name_any(), namespace = ?obj.namespace(), %error, label = error.metric_label(), "request failed; retrying");
    ctx.metrics.failures.inc();
    kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(15))
}

pub mod catalog;
pub mod controllers;
pub mod erasure;
pub mod hold;
pub mod index;

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
        crate::kube::publish(&self.recorder, on, type_, reason, "Retention", note).await;
    }
}

/// The shared context, or `None` (logged) when the store cannot be opened.
pub fn context(client: &Client, settings: Settings, metrics: Arc<Metrics>) -> Option<Arc<Context>> {
    let store = match crate::store::open(&settings.store) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "holds, erasures and exports are off: cannot open the store");
            return None;
        }
    };
    Some(Arc::new(Context {
        catalog: Catalog::new(store, &settings.store.prefix),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: crate::kube::MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        ),
        client: client.clone(),
        settings,
        metrics,
    }))
}

/// Waits until `stop` says so.
pub async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
