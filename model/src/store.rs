//! The one way a store URL becomes an object store, for the recorder and the operator alike.

use std::sync::Arc;
use std::time::Duration;

use object_store::path::Path;
use object_store::{BackoffConfig, ObjectStore, ObjectStoreExt, RetryConfig};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store URL {url:?}: {source}")]
    Url {
        url: String,
        source: url::ParseError,
    },
    #[error("store URL {0:?}: not an absolute path")]
    NotAbsolute(String),
    #[error("store URL {0:?}: unsupported scheme")]
    Scheme(String),
    #[error("store directory: {0}")]
    Dir(#[from] std::io::Error),
    #[error(transparent)]
    Store(#[from] object_store::Error),
}

/// A short retry budget inside the client: every caller retries on its own (the recorder's
/// uploader until the store takes the recording, controllers by requeue), so an outage shows in
/// their logs and metrics within a second instead of after object_store's ten retries.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 3,
        retry_timeout: Duration::from_secs(15),
    }
}

/// Opens `file:///dir`, `s3://bucket`, `gs://bucket` or `az://container`; cloud settings and
/// credentials come from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
pub fn open(url: &str) -> Result<Arc<dyn ObjectStore>, StoreError> {
    let parsed = url::Url::parse(url).map_err(|source| StoreError::Url {
        url: url.to_string(),
        source,
    })?;
    Ok(match parsed.scheme() {
        "file" => {
            let dir = parsed
                .to_file_path()
                .map_err(|_| StoreError::NotAbsolute(url.to_string()))?;
            std::fs::create_dir_all(&dir)?;
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir)?)
        }
        "s3" | "s3a" => Arc::new(
            object_store::aws::AmazonS3Builder::from_env()
                .with_url(url)
                .with_retry(retry())
                .build()?,
        ),
        "gs" => Arc::new(
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .with_retry(retry())
                .build()?,
        ),
        "az" | "azure" | "abfs" => Arc::new(
            object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_url(url)
                .with_retry(retry())
                .build()?,
        ),
        _ => return Err(StoreError::Scheme(url.to_string())),
    })
}

/// Deletes an object; one already gone counts as deleted.
pub async fn delete(store: &dyn ObjectStore, key: &Path) -> Result<(), object_store::Error> {
    match store.delete(key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_it_cannot_open() {
        assert!(matches!(open("ftp://x"), Err(StoreError::Scheme(_))));
        assert!(matches!(open("not a url"), Err(StoreError::Url { .. })));
        let dir = std::env::temp_dir().join(format!("opname-model-store-{}", std::process::id()));
        assert!(open(&format!("file://{}", dir.display())).is_ok());
    }
}
