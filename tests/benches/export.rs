//! Export throughput and peak memory for a month of a given size, against the store's raw
//! sequential copy measured in the same run.
//!
//! `cargo bench -p opname-tests --bench export -- {local|s3} GIB`
//!
//! A month of `GIB` GiB of 1 MiB recordings is written to the store (the local directory store,
//! or Garage on loopback for S3). Then, in this order: the raw copy (every recording read in
//! sequence and written into 2 GiB objects by multipart upload, the same 8 MiB chunks and
//! in-flight limit the export uses), and the export (`opname_operator::export::run`, 2 GiB parts). Throughput is audio bytes
//! per second of wall time. Peak memory is the process's high-water RSS (`VmHWM`) during each
//! phase, reset through `/proc/self/clear_refs` before it. So that a 10 GiB month fits the disk,
//! objects written by the copy and the export are deleted as soon as each upload completes (both
//! phases the same way, after the bytes were written in full), and the page cache is dropped
//! before each phase so that both read the month from disk (Garage's too).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
    WriteMultipart,
};
use opname_operator::archive::catalog::Catalog;
use opname_operator::export::parts::{self as export, Request};

const MIB: u64 = 1 << 20;

/// Deletes what a multipart upload wrote once it is complete (disk space), otherwise the store.
#[derive(Debug)]
struct DropAfterUpload(Arc<dyn ObjectStore>);

impl std::fmt::Display for DropAfterUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DropAfterUpload({})", self.0)
    }
}

#[derive(Debug)]
struct Upload {
    inner: Box<dyn MultipartUpload>,
    store: Arc<dyn ObjectStore>,
    at: Path,
}

#[async_trait]
impl MultipartUpload for Upload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }
    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let r = self.inner.complete().await?;
        self.store.delete(&self.at).await?;
        Ok(r)
    }
    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for DropAfterUpload {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.0.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Ok(Box::new(Upload {
            inner: self.0.put_multipart_opts(location, opts).await?,
            store: self.0.clone(),
            at: location.clone(),
        }))
    }
    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.0.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.0.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.0.list(prefix)
    }
    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.0.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.0.copy_opts(from, to, options).await
    }
}

fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Both phases read the month cold: without this the copy, run first, would read what `fill`
/// just left in the page cache and the export what the copy pushed out of it.
fn drop_caches() {
    // Flush dirty pages, then drop clean ones (needs root).
    let _ = std::process::Command::new("sync").status();
    if std::fs::write("/proc/sys/vm/drop_caches", "3").is_err() {
        eprintln!("cannot drop the page cache (not root): phases may read warm data");
    }
}

fn peak_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

async fn fill(store: &Arc<dyn ObjectStore>, count: u64) {
    let start: jiff::Timestamp = "2026-10-01T00:00:00Z".parse().unwrap();
    let audio: Vec<u8> = (0..MIB).map(|i| ((i * 2654435761) >> 13) as u8).collect();
    futures::stream::iter(0..count)
        .map(|n| {
            let store = store.clone();
            let mut audio = audio.clone();
            audio[..8].copy_from_slice(&n.to_le_bytes());
            async move {
                let at = start
                    .checked_add(jiff::SignedDuration::from_secs(n as i64 * 240))
                    .unwrap();
                opname_tests::Synthetic {
                    class: 365,
                    namespace: "acme",
                    id: opname_tests::Synthetic::id_at(at, n as u32),
                    user: ["alice", "bob", "carol", "dave"][n as usize % 4],
                    start: at,
                    seconds: 349.5,
                    parties: ["sip:+31201234567@pbx.example", "sip:bob@example.com"],
                    audio,
                }
                .put(store.as_ref(), "recordings")
                .await;
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
}

/// Every recording read in sequence into 2 GiB objects by multipart upload, as the export's
/// parts: the store's raw copy speed.
async fn raw_copy(catalog: &Catalog) -> u64 {
    let store = catalog.store();
    let entries = catalog.list("acme", "2026/10").await.unwrap();
    let (mut bytes, mut in_object, mut n) = (0, 0, 0);
    let mut upload = None;
    for e in &entries {
        if upload.is_none() || in_object + e.audio_size > 2 << 30 {
            if let Some(u) = upload.take() {
                WriteMultipart::finish(u).await.unwrap();
            }
            n += 1;
            in_object = 0;
            upload = Some(WriteMultipart::new_with_chunk_size(
                store
                    .put_multipart(&format!("bench/raw-copy-{n}").into())
                    .await
                    .unwrap(),
                8 << 20,
            ));
        }
        let u = upload.as_mut().unwrap();
        let mut body = store.get(&e.audio).await.unwrap().into_stream();
        while let Some(chunk) = body.try_next().await.unwrap() {
            bytes += chunk.len() as u64;
            in_object += chunk.len() as u64;
            u.wait_for_capacity(2).await.unwrap();
            u.put(chunk);
        }
    }
    if let Some(u) = upload {
        u.finish().await.unwrap();
    }
    bytes
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let kind = args.first().map_or("local", String::as_str).to_string();
    let gib: u64 = args.get(1).and_then(|g| g.parse().ok()).unwrap_or(1);
    let work = tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or("/tmp".into())).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let garage;
    let base: Arc<dyn ObjectStore> = if kind == "s3" {
        garage = opname_tests::garage::Garage::start(work.path());
        Arc::new(
            object_store::aws::AmazonS3Builder::new()
                .with_bucket_name("opname")
                .with_region("garage")
                .with_endpoint(format!("http://{}", garage.s3))
                .with_allow_http(true)
                .with_access_key_id(&garage.key_id)
                .with_secret_access_key(&garage.secret)
                .build()
                .unwrap(),
        )
    } else {
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(work.path()).unwrap())
    };
    let store: Arc<dyn ObjectStore> = Arc::new(DropAfterUpload(base));
    let catalog = Catalog::new(store.clone(), "recordings");
    rt.block_on(async {
        let count = gib * 1024;
        let t = Instant::now();
        fill(&store, count).await;
        eprintln!("filled {count} recordings in {:.1}s", t.elapsed().as_secs_f64());

        drop_caches();
        reset_peak();
        let t = Instant::now();
        let bytes = raw_copy(&catalog).await;
        let copy_s = t.elapsed().as_secs_f64();
        let copy_peak = peak_mib();

        drop_caches();
        reset_peak();
        let t = Instant::now();
        let parts = export::run(
            &catalog,
            &Request {
                namespace: "acme".into(),
                name: "bench".into(),
                month: "2026-10".into(),
                users: None,
                min_retention_days: 0,
                part_size: 2 << 30,
                bytes_per_second: 0,
                organisation: Default::default(),
            },
            |_| {},
        )
        .await
        .unwrap();
        let export_s = t.elapsed().as_secs_f64();
        let export_peak = peak_mib();
        let recordings: usize = parts.iter().map(|p| p.recordings).sum();
        assert_eq!(recordings as u64, count);
        let mbps = |s: f64| bytes as f64 / MIB as f64 / s;
        println!(
            "| {kind} | {gib} GiB | {count} | {} | {:.0} MiB/s | {:.0} MiB/s | {:.0}% | {copy_peak:.0} MiB | {export_peak:.0} MiB |",
            parts.len(),
            mbps(copy_s),
            mbps(export_s),
            100.0 * copy_s / export_s,
        );
    });
}
