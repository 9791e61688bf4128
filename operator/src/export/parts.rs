//! Bulk export: one month of a namespace's recordings as ZIP parts in the store.
//!
//! The export streams: each recording is read from the store in chunks and written through a
//! streaming ZIP writer (stored, not deflated: Opus does not compress; ZIP64 where needed) into a
//! multipart upload, so memory holds a few upload chunks and one row per recording, never an
//! archive. Parts are planned before anything is written, so their names and contents are
//! deterministic: a rerun after a crash overwrites the same keys, and a multipart upload becomes
//! visible only when complete, so no half-written or duplicate archive is ever listed.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use serde::Serialize;
use sha2::{Digest, Sha256};
use zip::write::SimpleFileOptions;

use opname_model::record::Record;

use crate::archive::catalog::{Catalog, CatalogError, Entry};
use crate::export::manifest::{Manifest, PartListing};
use crate::export::month;
use crate::export::names::{party, safe_component, stamp};
use crate::organisation::Organisation;

/// Upload chunk (S3's minimum part size, so memory stays small) and how many may be in flight.
const CHUNK: usize = 5 << 20;
const IN_FLIGHT: usize = 2;
/// ZIP bytes per recording beyond its audio: local header, data descriptor and central
/// directory entry with ZIP64 fields, plus the name twice.
const ENTRY_OVERHEAD: u64 = 30 + 24 + 46 + 64 + 32;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Store(#[from] object_store::Error),
    #[error("ZIP: {0}")]
    Zip(#[from] zip::result::ZipError),
    #[error("ZIP buffer: {0}")]
    Io(#[from] std::io::Error),
    #[error("month {0:?} is not YYYY-MM")]
    Month(String),
    #[error("manifest: {0}")]
    Manifest(#[from] serde_json::Error),
}

/// What to export.
#[derive(Debug, Clone)]
pub struct Request {
    pub namespace: String,
    pub name: String,
    /// `YYYY-MM`.
    pub month: String,
    pub users: Option<Vec<String>>,
    /// Only recordings kept at least this many days (the export gate; 0: all).
    pub min_retention_days: u32,
    pub part_size: u64,
    /// Pace in bytes per second (0: unpaced).
    pub bytes_per_second: u64,
    /// The organisation's time zone (the month is counted in it) and language.
    pub organisation: Organisation,
}

/// One recording in the export, as listed in the manifests.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub id: String,
    pub file: String,
    pub user: String,
    pub start: Option<jiff::Timestamp>,
    pub end: Option<jiff::Timestamp>,
    pub duration_seconds: f64,
    pub from: String,
    pub to: String,
    pub complete: bool,
    pub retention_days: u32,
    pub size: u64,
    /// Of the bytes in the archive, computed while they were written.
    pub sha256: String,
    #[serde(skip)]
    audio: Path,
}

#[cfg(test)]
impl Row {
    /// A Dutch call at 00:30 on 1 November in Amsterdam (23:30 UTC the day before).
    pub fn example() -> Self {
        Row {
            id: "0190-x".into(),
            file: "alice/2026-11-01/003000_+31201234567_0201234567_0190-x.opus".into(),
            user: "alice".into(),
            start: "2026-10-31T23:30:00Z".parse().ok(),
            end: "2026-10-31T23:31:01.5Z".parse().ok(),
            duration_seconds: 61.5,
            from: "+31201234567".into(),
            to: "0201234567".into(),
            complete: true,
            retention_days: 365,
            size: 1000,
            sha256: String::new(),
            audio: Path::from("x"),
        }
    }
}

/// A finished ZIP part.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    pub key: String,
    pub size: u64,
    pub sha256: String,
    pub recordings: usize,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub recordings_done: u64,
    pub recordings_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

fn row(entry: &Entry, s: &Record, tz: &jiff::tz::TimeZone) -> Row {
    let (day, time) = stamp(Some(s.start), tz);
    let from = party(s.participants.first().and_then(|p| p.aor.as_deref()));
    let to = party(s.participants.get(1).and_then(|p| p.aor.as_deref()));
    Row {
        file: format!(
            "{}/{day}/{time}_{from}_{to}_{}.opus",
            safe_component(&s.user),
            safe_component(&entry.id)
        ),
        id: entry.id.clone(),
        user: s.user.clone(),
        start: Some(s.start),
        end: Some(s.end),
        duration_seconds: s.duration_seconds,
        from,
        to,
        complete: s.complete,
        retention_days: s.retention_days,
        size: entry.audio_size,
        sha256: String::new(),
        audio: entry.audio.clone(),
    }
}

/// Manifest bytes a row adds (CSV and JSON), with a checksum of its final length.
fn manifest_cost(r: &Row, org: &Organisation) -> u64 {
    let json = serde_json::to_string(r).map_or(512, |j| j.len() + 64);
    (org.line(r).len() + json) as u64 + 2 * ENTRY_OVERHEAD
}

/// Splits rows (in export order) into parts of at most `limit` bytes, counting audio, ZIP
/// overhead and manifests; the last part also carries the listing of every part.
pub fn plan_parts(rows: &[Row], limit: u64, org: &Organisation) -> Vec<std::ops::Range<usize>> {
    let base = 4096;
    let cost = |r: &Row| r.size + ENTRY_OVERHEAD + r.file.len() as u64 * 2 + manifest_cost(r, org);
    let mut parts = Vec::new();
    let (mut start, mut used) = (0, base);
    for (i, r) in rows.iter().enumerate() {
        let c = cost(r);
        if i > start && used + c > limit {
            parts.push(start..i);
            (start, used) = (i, base);
        }
        used += c;
    }
    if start < rows.len() {
        parts.push(start..rows.len());
    }
    // The last part lists every part's files: move rows out of it until that fits too.
    let listing: u64 = rows.iter().map(|r| r.file.len() as u64 + 8).sum();
    while let Some(last) = parts.last().cloned() {
        let used: u64 = base + rows[last.clone()].iter().map(cost).sum::<u64>();
        if used + listing <= limit || last.len() <= 1 {
            break;
        }
        let cut = last.end - 1;
        let n = parts.len();
        parts[n - 1] = last.start..cut;
        parts.push(cut..last.end);
    }
    parts
}

/// `Write` end of the ZIP writer: collects the bytes for the upload and counts them.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<(Vec<u8>, u64)>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut g = self
            .0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        g.0.extend_from_slice(buf);
        g.1 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Sink {
    fn take(&self) -> bytes::Bytes {
        self.0
            .lock()
            .map(|mut g| bytes::Bytes::from(std::mem::take(&mut g.0)))
            .unwrap_or_default()
    }
    fn len(&self) -> u64 {
        self.0.lock().map(|g| g.1).unwrap_or_default()
    }
}

enum HashJob {
    File(bytes::Bytes),
    Part(bytes::Bytes),
    FileDone(tokio::sync::oneshot::Sender<String>),
    PartDone(tokio::sync::oneshot::Sender<String>),
}

/// SHA-256 of every recording and of every part, computed on a thread of its own so hashing
/// overlaps reading and uploading instead of adding to them.
struct Hashes(tokio::sync::mpsc::Sender<HashJob>);

impl Hashes {
    fn start() -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<HashJob>(16);
        std::thread::spawn(move || {
            let (mut file, mut part) = (Sha256::new(), Sha256::new());
            while let Some(job) = rx.blocking_recv() {
                match job {
                    HashJob::File(b) => file.update(&b),
                    HashJob::Part(b) => part.update(&b),
                    HashJob::FileDone(done) => {
                        let _ = done.send(hex::encode(std::mem::take(&mut file).finalize()));
                    }
                    HashJob::PartDone(done) => {
                        let _ = done.send(hex::encode(std::mem::take(&mut part).finalize()));
                    }
                }
            }
        });
        Self(tx)
    }

    async fn send(&self, job: HashJob) -> Result<(), ExportError> {
        self.0
            .send(job)
            .await
            .map_err(|_| ExportError::Io(std::io::Error::other("hashing thread stopped")))
    }

    async fn file_done(&self) -> Result<String, ExportError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(HashJob::FileDone(tx)).await?;
        rx.await
            .map_err(|_| ExportError::Io(std::io::Error::other("hashing thread stopped")))
    }

    async fn part_done(&self) -> Result<String, ExportError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(HashJob::PartDone(tx)).await?;
        rx.await
            .map_err(|_| ExportError::Io(std::io::Error::other("hashing thread stopped")))
    }
}

fn zip_time(t: Option<jiff::Timestamp>) -> zip::DateTime {
    t.map(|t| t.to_zoned(jiff::tz::TimeZone::UTC))
        .and_then(|z| {
            zip::DateTime::from_date_and_time(
                u16::try_from(z.year()).ok()?,
                z.month() as u8,
                z.day() as u8,
                z.hour() as u8,
                z.minute() as u8,
                z.second() as u8,
            )
            .ok()
        })
        .unwrap_or_default()
}

/// Paces writing to `bytes_per_second`.
struct Pace {
    rate: u64,
    started: Instant,
}

impl Pace {
    async fn after(&self, done: u64) {
        if self.rate == 0 {
            return;
        }
        let due = Duration::from_secs_f64(done as f64 / self.rate as f64);
        if let Some(wait) = due.checked_sub(self.started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Lists, plans and writes the export; `progress` is called as recordings are written.
pub async fn run(
    catalog: &Catalog,
    req: &Request,
    mut progress: impl FnMut(&Progress),
) -> Result<Vec<Part>, ExportError> {
    let month = month::month(&req.month, &req.organisation.time_zone)?;
    let mut entries = Vec::new();
    for period in &month.periods {
        entries.extend(catalog.list(&req.namespace, period).await?);
    }
    let (month, tz) = (&month, &req.organisation.time_zone);
    let mut rows: Vec<Row> = futures::stream::iter(entries.iter())
        .map(|e| async move { catalog.record(e).await.map(|s| (e, s)) })
        .buffered(16)
        .try_filter_map(|(e, s)| async move {
            let wanted = req.users.as_ref().is_none_or(|u| u.contains(&s.user))
                && s.retention_days >= req.min_retention_days
                && month.contains(s.start);
            Ok(wanted.then(|| row(e, &s, tz)))
        })
        .try_collect()
        .await?;
    // The rows carry what the export needs; the listing can go.
    drop(entries);
    rows.sort_by(|a, b| (&a.user, a.start, &a.id).cmp(&(&b.user, b.start, &b.id)));
    let plan = plan_parts(&rows, req.part_size, &req.organisation);
    let mut state = Progress {
        recordings_total: rows.len() as u64,
        bytes_total: rows.iter().map(|r| r.size).sum(),
        ..Default::default()
    };
    progress(&state);
    let pace = Pace {
        rate: req.bytes_per_second,
        started: Instant::now(),
    };
    let store = catalog.store();
    let hashes = Hashes::start();
    let mut parts = Vec::new();
    for (i, range) in plan.iter().enumerate() {
        let file = format!(
            "{}-{}-part-{:03}-of-{:03}.zip",
            safe_component(&req.name),
            req.month,
            i + 1,
            plan.len()
        );
        let key = catalog
            .layout()
            .export_file(&req.namespace, &req.name, &file);
        let sink = Sink::default();
        let mut zip = zip::ZipWriter::new_stream(sink.clone());
        let mut upload =
            WriteMultipart::new_with_chunk_size(store.put_multipart(&key).await?, CHUNK);
        for r in &mut rows[range.clone()] {
            let options = SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored)
                .last_modified_time(zip_time(r.start))
                .large_file(r.size >= u32::MAX as u64);
            zip.start_file(r.file.as_str(), options)?;
            let mut body = store.get(&r.audio).await?.into_stream();
            while let Some(chunk) = body.try_next().await? {
                zip.write_all(&chunk)?;
                state.bytes_done += chunk.len() as u64;
                hashes.send(HashJob::File(chunk)).await?;
                let out = sink.take();
                if !out.is_empty() {
                    hashes.send(HashJob::Part(out.clone())).await?;
                    upload.wait_for_capacity(IN_FLIGHT).await?;
                    upload.put(out);
                }
                pace.after(state.bytes_done).await;
            }
            r.sha256 = hashes.file_done().await?;
            state.recordings_done += 1;
            progress(&state);
        }
        let manifest = Manifest {
            namespace: &req.namespace,
            export: &req.name,
            month: &req.month,
            time_zone: req.organisation.zone_name(),
            part: i + 1,
            parts: plan.len(),
            recordings: &rows[range.clone()],
            all_parts: (i + 1 == plan.len()).then(|| {
                plan.iter()
                    .enumerate()
                    .map(|(j, r)| PartListing {
                        part: j + 1,
                        files: rows[r.clone()].iter().map(|r| r.file.as_str()).collect(),
                    })
                    .collect()
            }),
        };
        let csv = req.organisation.csv(&rows[range.clone()]);
        let options =
            SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        zip.start_file("manifest.csv", options)?;
        zip.write_all(csv.as_bytes())?;
        zip.start_file("manifest.json", options)?;
        zip.write_all(&serde_json::to_vec_pretty(&manifest)?)?;
        zip.finish()?;
        let tail = sink.take();
        hashes.send(HashJob::Part(tail.clone())).await?;
        upload.put(tail);
        upload.finish().await?;
        let (sha256, size) = (hashes.part_done().await?, sink.len());
        parts.push(Part {
            key: key.to_string(),
            size,
            sha256,
            recordings: range.len(),
        });
    }
    // Parts of an earlier attempt that planned differently go; these are the export.
    let keep: std::collections::BTreeSet<&str> = parts.iter().map(|p| p.key.as_str()).collect();
    let listed: Vec<Path> = store
        .list(Some(&Path::from(
            catalog.layout().export_dir(&req.namespace, &req.name),
        )))
        .map_ok(|m| m.location)
        .try_collect()
        .await?;
    for old in listed.iter().filter(|k| !keep.contains(k.as_ref())) {
        opname_model::store::delete(store.as_ref(), old).await?;
    }
    Ok(parts)
}

/// Deletes an export's archives (the BulkExport was deleted).
pub async fn remove(catalog: &Catalog, ns: &str, name: &str) -> Result<usize, ExportError> {
    let store = catalog.store();
    let listed: Vec<Path> = store
        .list(Some(&Path::from(catalog.layout().export_dir(ns, name))))
        .map_ok(|m| m.location)
        .try_collect()
        .await?;
    for key in &listed {
        opname_model::store::delete(store.as_ref(), key).await?;
    }
    Ok(listed.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(size: u64) -> Row {
        Row {
            id: "0190-x".into(),
            file: "alice/2026-11-01/090000_+31201234567_bob_0190-x.opus".into(),
            user: "alice".into(),
            start: None,
            end: None,
            duration_seconds: 1.0,
            from: "a".into(),
            to: "b".into(),
            complete: true,
            retention_days: 365,
            size,
            sha256: String::new(),
            audio: Path::from("x"),
        }
    }

    #[test]
    fn names_are_safe_everywhere() {
        assert_eq!(safe_component("alice@example.com"), "alice@example.com");
        assert_eq!(
            safe_component("a/b\\c:d*e?f\"g<h>i|j"),
            "a_b_c_d_e_f_g_h_i_j"
        );
        assert_eq!(safe_component("CON"), "_CON");
        assert_eq!(safe_component("lpt1.txt"), "_lpt1.txt");
        assert_eq!(safe_component("name.."), "name");
        assert_eq!(safe_component("a b"), "a_b");
        assert_eq!(safe_component(""), "_");
        assert_eq!(
            party(Some("sip:+31201234567@pbx;user=phone")),
            "+31201234567"
        );
        assert_eq!(party(None), "unknown");
    }

    #[test]
    fn parts_respect_the_limit_and_keep_order() {
        let rows: Vec<Row> = (0..100).map(|i| r(10_000 + i)).collect();
        let plan = plan_parts(&rows, 200_000, &Organisation::default());
        assert!(plan.len() > 4);
        let flat: Vec<usize> = plan.iter().flat_map(|p| p.clone()).collect();
        assert_eq!(
            flat,
            (0..100).collect::<Vec<_>>(),
            "every row once, in order"
        );
        // A recording larger than a part gets its own.
        let f = Organisation::default();
        let big = plan_parts(&[r(10), r(1_000_000), r(10)], 100_000, &f);
        assert_eq!(big, [0..1, 1..2, 2..3]);
        assert!(plan_parts(&[], 1000, &f).is_empty());
    }
}
