//! The operator's client of the recordings store, from its settings: the S3 client that also
//! manages lifecycle rules where the store is S3, the model's opener elsewhere.
//!
//! S3 credentials come from object_store's own chain, whichever the pod was given: static keys,
//! a web identity token file (EKS IRSA, or GKE/Azure workload identity federated to AWS), EKS Pod
//! Identity, an ECS task role or instance metadata. gs:// and az:// stores use their builders'
//! chains in the model's opener (workload identity included).

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};

use crate::settings::StoreSettings;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Open(#[from] opname_model::store::StoreError),
    #[error(transparent)]
    S3(#[from] object_store::Error),
}

/// The store the recorders write to.
pub fn open(settings: &StoreSettings) -> Result<Arc<dyn ObjectStore>, OpenError> {
    if let Some(s3) = s3_builder(settings) {
        return Ok(Arc::new(s3.build()?));
    }
    Ok(opname_model::store::open(&settings.url)?)
}

/// A store setting from the operator's configuration, else its environment.
pub(crate) fn setting(store: &StoreSettings, key: &str) -> Option<String> {
    store
        .env
        .get(key)
        .cloned()
        .or_else(|| std::env::var(key).ok())
        .filter(|v| !v.is_empty())
}

/// The bucket of an `s3://bucket[/…]` URL.
pub(crate) fn s3_bucket(url: &str) -> Option<String> {
    url.strip_prefix("s3://")
        .map(|b| b.split('/').next().unwrap_or(b).to_string())
}

/// An S3 client builder for `s3://` stores (`None` for others): the process environment as
/// object_store reads it, then the settings' `env` on top (the chart's non-secret settings,
/// which the operator does not have as environment variables), credentials left to the chain.
pub(crate) fn s3_builder(store: &StoreSettings) -> Option<AmazonS3Builder> {
    let bucket = s3_bucket(&store.url)?;
    let mut b = AmazonS3Builder::from_env();
    for (key, value) in &store.env {
        // Keys of other stores (GOOGLE_*, AZURE_*) are not S3's.
        if let Ok(key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            b = b.with_config(key, value);
        }
    }
    Some(b.with_bucket_name(bucket))
}
