//! Segments: a call in progress uploads its record at the start and, every `segmentSeconds`, the
//! Ogg pages written since as one small object (`model::layout::Layout::segment`), so that a pod
//! or node lost with its spool loses at most that much of its calls. The final upload replaces
//! them and deletes them. Every recorder of the namespace looks for segments nobody has added to
//! for `stale_seconds` and no live call here owns, and assembles them into an incomplete recording
//! (`endReason: node-lost`) at the recording's own keys, where retention, holds, erasure, listing
//! and export find it like any other.
//!
//! A segment that cannot be uploaded waits (the queue is bounded; a media task that finds it full
//! hands over a longer range next time): the final upload from the spool never depends on it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use opname_model::layout::{Layout, split_object};
use opname_model::record::Record;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;

use super::Shared;
use crate::metrics::{Metrics, OutcomeLabel};

/// Segment jobs waiting for the store, over all calls: 200 calls × 20 segments of 10 s.
pub(super) const QUEUE: usize = 4096;

/// What a media task hands to the segment uploader.
pub(super) enum SegmentJob {
    /// The call's record as it stands (keys, participants, mode), at the start and on changes.
    Record { id: String, json: Vec<u8> },
    /// Bytes `start..end` of the call's spool file, segment `seq`.
    Audio {
        id: String,
        seq: u32,
        path: PathBuf,
        start: u64,
        end: u64,
    },
    /// The recording is stored (or discarded): its segments go. Queued behind its other jobs,
    /// so no segment of it is uploaded after they are deleted.
    Done { id: String },
}

impl SegmentJob {
    fn id(&self) -> &str {
        match self {
            SegmentJob::Record { id, .. }
            | SegmentJob::Audio { id, .. }
            | SegmentJob::Done { id } => id,
        }
    }
}

/// Ids of the recordings this process owns: recording, or finished and not yet stored. The
/// assembler leaves them alone, and the uploader drops jobs of recordings no longer in it.
#[derive(Default)]
pub(super) struct Owned(Mutex<HashSet<String>>);

impl Owned {
    pub(super) fn insert(&self, id: &str) {
        if let Ok(mut s) = self.0.lock() {
            s.insert(id.to_string());
        }
    }

    pub(super) fn remove(&self, id: &str) {
        if let Ok(mut s) = self.0.lock() {
            s.remove(id);
        }
    }

    fn contains(&self, id: &str) -> bool {
        self.0.lock().is_ok_and(|s| s.contains(id))
    }
}

/// What the segment tasks need: not [`Shared`], whose senders must close for the final uploads
/// to end at shutdown.
#[derive(Clone)]
pub(super) struct Segments {
    pub store: Arc<dyn ObjectStore>,
    pub layout: Layout,
    pub namespace: String,
    pub spool: opname_model::config::SpoolConfig,
    pub owned: Arc<Owned>,
    pub metrics: Arc<Metrics>,
}

/// A media task's progress through its spool file.
pub(super) struct Progress {
    seq: u32,
    offset: u64,
    due: std::time::Instant,
}

impl Progress {
    pub(super) fn new(now: std::time::Instant, every: Duration) -> Self {
        Self {
            seq: 0,
            offset: 0,
            due: now + every,
        }
    }

    /// Hands the bytes written since the last segment to the uploader when one is due. `written`
    /// is the spool file's length, at a page boundary (pages are written whole).
    pub(super) fn tick(
        &mut self,
        shared: &Shared,
        id: &str,
        path: &std::path::Path,
        written: u64,
        now: std::time::Instant,
    ) {
        let every = Duration::from_secs(shared.config.spool.segment_seconds);
        if every.is_zero() || now < self.due || written <= self.offset {
            return;
        }
        let job = SegmentJob::Audio {
            id: id.to_string(),
            seq: self.seq,
            path: path.to_path_buf(),
            start: self.offset,
            end: written,
        };
        self.due = now + every;
        // Full: the same bytes and more go next time.
        if shared.segments_tx.try_send(job).is_ok() {
            self.seq += 1;
            self.offset = written;
        }
    }
}

/// Queues the record of a call in progress (dropped when the queue is full: the next change or
/// the next recorder's view of the segments does without it only until then).
pub(super) fn record(shared: &Shared, record: &Record) {
    if shared.config.spool.segment_seconds == 0 {
        return;
    }
    let _ = shared.segments_tx.try_send(SegmentJob::Record {
        id: record.id.clone(),
        json: record.to_json(),
    });
}

#[derive(Debug, thiserror::Error)]
enum SegmentError {
    #[error(transparent)]
    Store(#[from] object_store::Error),
    #[error("spool file: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Record(#[from] opname_model::record::RecordError),
    #[error("segment record names no recording key: {0}")]
    Key(String),
}

/// Uploads segment jobs in order, retrying each until the store takes it or its recording is no
/// longer this process's (stored, or given up).
pub(super) async fn uploader(ctx: Segments, mut rx: mpsc::Receiver<SegmentJob>) {
    while let Some(job) = rx.recv().await {
        if let SegmentJob::Done { id } = &job {
            ctx.owned.remove(id);
            delete(ctx.store.as_ref(), &ctx.layout, &ctx.namespace, id).await;
            continue;
        }
        let mut backoff = Duration::from_millis(250);
        while ctx.owned.contains(job.id()) {
            match put(&ctx, &job).await {
                Ok(()) => break,
                Err(SegmentError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) => {
                    tracing::debug!(id = job.id(), error = %e, retry_in = ?backoff, "segment upload failed; will retry");
                    ctx.metrics.error("segment");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

async fn put(ctx: &Segments, job: &SegmentJob) -> Result<(), SegmentError> {
    let ns = &ctx.namespace;
    let (key, bytes) = match job {
        SegmentJob::Record { id, json } => (ctx.layout.segment_record(ns, id), json.clone()),
        SegmentJob::Done { .. } => return Ok(()),
        SegmentJob::Audio {
            id,
            seq,
            path,
            start,
            end,
        } => {
            let mut f = tokio::fs::File::open(path).await?;
            f.seek(std::io::SeekFrom::Start(*start)).await?;
            let mut buf = vec![0u8; usize::try_from(end - start).unwrap_or(0)];
            f.read_exact(&mut buf).await?;
            (ctx.layout.segment(ns, id, *seq), buf)
        }
    };
    ctx.store.put(&key, PutPayload::from(bytes)).await?;
    Ok(())
}

/// Deletes a stored recording's segments (what fails is left to the segments' lifecycle rule).
pub(super) async fn delete(store: &dyn ObjectStore, layout: &Layout, ns: &str, id: &str) {
    let keys: Vec<Key> = store
        .list(Some(&layout.segment_dir(ns, id)))
        .filter_map(|o| async move { o.ok().map(|o| o.location) })
        .collect()
        .await;
    for key in keys {
        if let Err(e) = store.delete(&key).await {
            tracing::debug!(key = %key, error = %e, "cannot delete a segment");
        }
    }
}

/// Every few seconds, assembles the recordings of recorders that stopped adding to them.
pub(super) async fn assembler(ctx: Segments) {
    let every = ctx.spool.segment_seconds;
    if every == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(every.clamp(5, 15)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep(&ctx).await {
            tracing::warn!(error = %e, "looking for a lost recorder's segments failed");
        }
    }
}

async fn sweep(ctx: &Segments) -> Result<(), SegmentError> {
    let ns = &ctx.namespace;
    let listing = ctx
        .store
        .list_with_delimiter(Some(&ctx.layout.segments(ns)))
        .await?;
    for dir in listing.common_prefixes {
        let Some(id) = dir.filename().map(str::to_string) else {
            continue;
        };
        if ctx.owned.contains(&id) {
            continue;
        }
        if let Err(e) = take_over(ctx, ns, &id, &dir).await {
            tracing::warn!(id, error = %e, "cannot assemble a lost recording; will try again");
        }
    }
    Ok(())
}

/// Assembles one recording in progress whose segments went stale; leaves fresh ones alone.
async fn take_over(ctx: &Segments, ns: &str, id: &str, dir: &Key) -> Result<(), SegmentError> {
    let objects: Vec<_> = ctx
        .store
        .list(Some(dir))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let newest = objects.iter().map(|o| o.last_modified.timestamp()).max();
    let age = newest.map_or(0, |t| jiff::Timestamp::now().as_second() - t);
    let stale = age >= i64::try_from(ctx.spool.stale_seconds()).unwrap_or(i64::MAX);
    if !stale {
        return Ok(());
    }
    let record_key = ctx.layout.segment_record(ns, id);
    if !objects.iter().any(|o| o.location == record_key) {
        // Leftovers of a stored recording (a segment uploaded after its deletion): the
        // lifecycle rule takes them.
        return Ok(());
    }
    let record = Record::parse(
        record_key.as_ref(),
        &ctx.store.get(&record_key).await?.bytes().await?,
    )?;
    let (stem, _) = split_object(&record.audio.key)
        .ok_or_else(|| SegmentError::Key(record.audio.key.clone()))?;
    let final_record = opname_model::layout::record_of(stem);
    if ctx.store.head(&final_record).await.is_ok() {
        // Stored already (by its own recorder, or another that got here first).
        delete(ctx.store.as_ref(), &ctx.layout, ns, id).await;
        return Ok(());
    }
    let mut segments = Vec::new();
    for o in &objects {
        if let Some(seq) = Layout::segment_seq(&o.location) {
            segments.push((
                seq,
                ctx.store.get(&o.location).await?.bytes().await?.to_vec(),
            ));
        }
    }
    match crate::record::assemble(record, &segments) {
        Some((audio, record)) => {
            ctx.store
                .put(
                    &Key::from(record.audio.key.as_str()),
                    PutPayload::from(audio),
                )
                .await?;
            ctx.store
                .put(&final_record, PutPayload::from(record.to_json()))
                .await?;
            ctx.metrics
                .recordings
                .get_or_create(&OutcomeLabel {
                    outcome: record.end_reason.as_str().into(),
                })
                .inc();
            tracing::warn!(
                id,
                recorder = record.recorder,
                seconds = record.duration_seconds,
                "assembled a recording whose recorder was lost; stored marked incomplete"
            );
        }
        None => tracing::info!(
            id,
            "a lost recorder's segments hold nothing to keep; removed"
        ),
    }
    delete(ctx.store.as_ref(), &ctx.layout, ns, id).await;
    Ok(())
}
