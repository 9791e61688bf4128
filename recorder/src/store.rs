//! Object storage and the key layout every other part of opname reads.
//!
//! Layout (documented in docs/storage.md):
//! `{prefix}/r{days}/{namespace}/{yyyy}/{mm}/{dd}/{id}.opus` and `… /{id}.json`.
//! The retention class `r{days}` comes first so one lifecycle rule per class can expire it by
//! prefix; the namespace next so an organisation's month or day is one listing per class; ids are
//! UUIDv7, so a day's keys list in start-time order.

use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;

/// Files above this go up as a multipart upload in parts of this size.
const PART: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store URL {0:?}: {1}")]
    Url(String, String),
    #[error(transparent)]
    Store(#[from] object_store::Error),
    #[error("spool file: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
}

/// The two objects of one recording.
#[derive(Clone, Debug, PartialEq)]
pub struct Keys {
    pub audio: Path,
    pub record: Path,
}

impl Store {
    /// Opens `file:///dir`, `s3://bucket`, `gs://bucket` or `az://container`; cloud settings
    /// and credentials come from the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`).
    pub fn open(url: &str, prefix: &str) -> Result<Self, StoreError> {
        let bad = |e: &dyn std::fmt::Display| StoreError::Url(url.to_string(), e.to_string());
        let parsed = url::Url::parse(url).map_err(|e| bad(&e))?;
        let inner: Arc<dyn ObjectStore> = match parsed.scheme() {
            "file" => {
                let dir = parsed
                    .to_file_path()
                    .map_err(|_| bad(&"not an absolute path"))?;
                std::fs::create_dir_all(&dir)?;
                Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir)?)
            }
            "s3" | "s3a" => Arc::new(
                object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .build()?,
            ),
            "gs" => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .build()?,
            ),
            "az" | "azure" | "abfs" => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .build()?,
            ),
            other => return Err(bad(&format!("unsupported scheme {other}"))),
        };
        Ok(Self {
            inner,
            prefix: prefix.trim_matches('/').to_string(),
        })
    }

    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    pub fn keys(
        &self,
        retention_days: u32,
        namespace: &str,
        day: jiff::civil::Date,
        id: &str,
    ) -> Keys {
        let dir = format!(
            "{}r{retention_days}/{namespace}/{:04}/{:02}/{:02}/{id}",
            if self.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", self.prefix)
            },
            day.year(),
            day.month(),
            day.day()
        );
        Keys {
            audio: Path::from(format!("{dir}.opus")),
            record: Path::from(format!("{dir}.json")),
        }
    }

    /// Uploads a spool file, by multipart upload when it is large, never whole in memory.
    pub async fn put_file(&self, key: &Path, file: &FsPath) -> Result<(), StoreError> {
        let mut f = tokio::fs::File::open(file).await?;
        let len = f.metadata().await?.len() as usize;
        if len <= PART {
            let mut buf = Vec::with_capacity(len);
            f.read_to_end(&mut buf).await?;
            self.inner.put(key, PutPayload::from(buf)).await?;
            return Ok(());
        }
        let mut upload =
            WriteMultipart::new_with_chunk_size(self.inner.put_multipart(key).await?, PART);
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = f.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            upload.wait_for_capacity(2).await?;
            upload.write(&buf[..n]);
        }
        upload.finish().await?;
        Ok(())
    }

    pub async fn put_bytes(&self, key: &Path, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.inner
            .put(key, PutPayload::from(Bytes::from(bytes)))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_puts_class_and_namespace_first() {
        let dir = std::env::temp_dir().join(format!("opname-store-{}", std::process::id()));
        let s = Store::open(&format!("file://{}", dir.display()), "/recordings/").unwrap();
        let k = s.keys(90, "acme", jiff::civil::date(2026, 3, 7), "0190-ab");
        assert_eq!(
            k.audio.as_ref(),
            "recordings/r90/acme/2026/03/07/0190-ab.opus"
        );
        assert_eq!(
            k.record.as_ref(),
            "recordings/r90/acme/2026/03/07/0190-ab.json"
        );
        let bare = Store::open(&format!("file://{}", dir.display()), "").unwrap();
        assert_eq!(
            bare.keys(1, "x", jiff::civil::date(2026, 12, 31), "i")
                .audio
                .as_ref(),
            "r1/x/2026/12/31/i.opus"
        );
        assert!(matches!(
            Store::open("ftp://x", ""),
            Err(StoreError::Url(..))
        ));
        assert!(matches!(
            Store::open("not a url", ""),
            Err(StoreError::Url(..))
        ));
    }

    #[tokio::test]
    async fn multipart_for_large_files() {
        let dir = std::env::temp_dir().join(format!("opname-store-mp-{}", std::process::id()));
        let s = Store::open(&format!("file://{}", dir.join("store").display()), "p").unwrap();
        let big = dir.join("big.bin");
        let data: Vec<u8> = (0..(PART + 12345)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&big, &data).unwrap();
        let key = Path::from("p/big.bin");
        s.put_file(&key, &big).await.unwrap();
        let got = s
            .object_store()
            .get(&key)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(got.as_ref(), data.as_slice());
    }
}
