//! First page of a day with 10,000 recordings, through the recordings service's HTTP API.
//!
//! `cargo bench -p opname-tests --bench listing -- {local|s3}`
//!
//! 10,000 recordings of one day go into the store (the local directory store, or moto on loopback
//! for S3). The service runs in this process with its TokenReview/SubjectAccessReview answered by
//! a real kube-apiserver (`tests/controlplane/`); each request is a real HTTP request with a bearer token. Measured:
//! - cold: the day has no index yet (the first listing builds it: one listing of the day and one
//!   GET per record),
//! - first page: a freshly started service (nothing in memory, reviews not cached) with the
//!   index in the store, as the warm-up task or any earlier listing leaves it,
//! - cached: the next request to the same service.
//!
//! Each figure is the median of 5 runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use object_store::ObjectStore;
use opname_operator::archive::catalog::Catalog;
use opname_operator::recordings::{self, Service};
use opname_tests::controlplane::{ControlPlane, User};

const COUNT: u32 = 10_000;

async fn serve(catalog: Catalog, client: kube::Client) -> String {
    // The control plane's users hold static tokens, which know no audiences: the API server's own.
    let trust = opname_operator::settings::RecordingsSettings {
        audiences: Vec::new(),
        ..Default::default()
    };
    let svc = Service::new(catalog, client, false, &trust);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            recordings::router(svc).into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    format!(
        "http://{addr}/api/v1/namespaces/acme/recordings?from=2026-11-02T00:00:00Z&to=2026-11-03T00:00:00Z&limit=50"
    )
}

async fn first_page(http: &reqwest::Client, url: &str) -> Duration {
    let t = Instant::now();
    let resp = http.get(url).bearer_auth("bench").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), 50);
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let kind = std::env::args()
        .skip(1)
        .find(|a| a != "--bench")
        .unwrap_or_else(|| "local".into());
    let work = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let moto;
    let store: Arc<dyn ObjectStore> = if kind == "s3" {
        moto = opname_tests::s3::Moto::start();
        moto.create_bucket("rec");
        moto.client("rec")
    } else {
        Arc::new(object_store::local::LocalFileSystem::new_with_prefix(work.path()).unwrap())
    };
    rt.block_on(async {
        let day: jiff::Timestamp = "2026-11-02T00:00:00Z".parse().unwrap();
        let t = Instant::now();
        futures::stream::iter(0..COUNT)
            .map(|n| {
                let store = store.clone();
                async move {
                    let start = day
                        .checked_add(jiff::SignedDuration::from_millis(i64::from(n) * 8640))
                        .unwrap();
                    opname_tests::Synthetic {
                        class: [30, 365][n as usize % 2],
                        namespace: "acme",
                        id: opname_tests::Synthetic::id_at(start, n),
                        user: ["alice", "bob", "carol", "dave"][n as usize % 4],
                        start,
                        seconds: 120.0,
                        parties: ["sip:+31201234567@pbx.example", "sip:bob@example.com"],
                        audio: vec![0; 64],
                    }
                    .put(store.as_ref(), "recordings")
                    .await
                }
            })
            .buffer_unordered(16)
            .collect::<Vec<_>>()
            .await;
        eprintln!(
            "stored {COUNT} recordings in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        // A real kube-apiserver answers the service's TokenReview and SubjectAccessReview.
        let server = ControlPlane::start_with(&[User {
            token: "bench",
            name: "admin",
            groups: &[],
        }])
        .await;
        let client = server.client().await;
        server
            .install(
                &["acme"],
                serde_json::json!({"store": {"url": "file:///unused"}}),
            )
            .await;
        server
            .bind(
                "acme",
                "ClusterRole",
                "opname-recordings-viewer",
                ("User", "admin"),
            )
            .await;
        let catalog = Catalog::new(store.clone(), "recordings");
        let http = reqwest::Client::new();
        let (mut cold, mut first, mut cached) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..5 {
            opname_operator::archive::index::invalidate(&catalog, "acme").await;
            let url = serve(catalog.clone(), client.clone()).await;
            cold.push(first_page(&http, &url).await);
            let url = serve(catalog.clone(), client.clone()).await;
            first.push(first_page(&http, &url).await);
            cached.push(first_page(&http, &url).await);
        }
        println!(
            "| {kind} | {COUNT} | {:.0} ms | {:.0} ms | {:.0} ms |",
            median(cold),
            median(first),
            median(cached)
        );
    });
}
