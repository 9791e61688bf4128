//! Uploads: finished recordings go to the store, audio first and record last, retried until the
//! store takes them; what cannot be stored stays in the spool.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use opname_model::layout::RecordingKeys;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::Shared;
use super::segments::SegmentJob;

/// A finished recording in the spool, waiting for the store.
#[derive(Debug, Clone)]
pub(super) struct UploadJob {
    audio: PathBuf,
    record: PathBuf,
    keys: RecordingKeys,
    bytes: u64,
    ended: Instant,
}

/// Hands a finished recording to the uploader.
pub(super) fn enqueue(
    shared: &Shared,
    audio: PathBuf,
    record: PathBuf,
    keys: RecordingKeys,
    bytes: u64,
    ended: Instant,
) {
    shared.metrics.uploads_pending.inc();
    shared.metrics.spool_pending_bytes.inc_by(bytes as i64);
    let _ = shared.upload_tx.send(UploadJob {
        audio,
        record,
        keys,
        bytes,
        ended,
    });
}

pub(super) async fn uploader(
    shared: Arc<Shared>,
    segments: mpsc::Sender<SegmentJob>,
    mut rx: mpsc::UnboundedReceiver<UploadJob>,
) {
    let metrics = shared.metrics.clone();
    let store = shared.store.clone();
    drop(shared);
    while let Some(job) = rx.recv().await {
        let mut backoff = Duration::from_millis(250);
        loop {
            match upload(store.as_ref(), &job).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(file = %job.audio.display(), error = %e, retry_in = ?backoff, "upload failed; will retry");
                    metrics.error("upload");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        metrics
            .upload_seconds
            .observe(job.ended.elapsed().as_secs_f64());
        metrics.uploads_pending.dec();
        metrics.spool_pending_bytes.dec_by(job.bytes as i64);
        for f in [&job.audio, &job.record] {
            if let Err(e) = std::fs::remove_file(f) {
                tracing::warn!(file = %f.display(), error = %e, "cannot remove uploaded spool file");
            }
        }
        // Stored: its segments have served their purpose.
        if let Some(id) = opname_model::layout::id_of(&job.keys.audio) {
            let _ = segments.send(SegmentJob::Done { id: id.into() }).await;
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum UploadError {
    #[error(transparent)]
    Store(#[from] object_store::Error),
    #[error("spool file: {0}")]
    Io(#[from] std::io::Error),
}

/// Files above this go up as a multipart upload in parts of this size.
const PART: usize = 8 * 1024 * 1024;

/// Audio first, record last: a record in the store always has its audio.
async fn upload(store: &dyn ObjectStore, job: &UploadJob) -> Result<(), UploadError> {
    put_file(store, &job.keys.audio, &job.audio).await?;
    let record = Bytes::from(std::fs::read(&job.record)?);
    store
        .put(&job.keys.record, PutPayload::from(record))
        .await?;
    Ok(())
}

/// Uploads a spool file, by multipart upload when it is large, never whole in memory.
async fn put_file(
    store: &dyn ObjectStore,
    key: &object_store::path::Path,
    file: &std::path::Path,
) -> Result<(), UploadError> {
    let mut f = tokio::fs::File::open(file).await?;
    let len = f.metadata().await?.len() as usize;
    if len <= PART {
        let mut buf = Vec::with_capacity(len);
        f.read_to_end(&mut buf).await?;
        store.put(key, PutPayload::from(buf)).await?;
        return Ok(());
    }
    let mut upload = WriteMultipart::new_with_chunk_size(store.put_multipart(key).await?, PART);
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

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn multipart_for_large_files() {
        let dir = std::env::temp_dir().join(format!("opname-upload-mp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = InMemory::new();
        let big = dir.join("big.bin");
        let data: Vec<u8> = (0..(PART + 12345)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&big, &data).unwrap();
        let key = object_store::path::Path::from("p/big.bin");
        put_file(&store, &key, &big).await.unwrap();
        let got = store.get(&key).await.unwrap().bytes().await.unwrap();
        assert_eq!(got.as_ref(), data.as_slice());
    }
}
