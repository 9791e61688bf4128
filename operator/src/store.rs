//! The operator's client of the recordings store, from its settings: the S3 client that also
//! manages lifecycle rules where the store is S3, the model's opener elsewhere.

use std::sync::Arc;

use object_store::ObjectStore;

use crate::retention::lifecycle::{Bucket, LifecycleError};
use crate::settings::StoreSettings;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Open(#[from] opname_model::store::StoreError),
    #[error(transparent)]
    Bucket(#[from] LifecycleError),
}

/// The store the recorders write to.
pub fn open(settings: &StoreSettings) -> Result<Arc<dyn ObjectStore>, OpenError> {
    if let Some(bucket) = Bucket::from_settings(settings)? {
        return Ok(bucket.objects());
    }
    Ok(opname_model::store::open(&settings.url)?)
}
