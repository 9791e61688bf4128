//! A recorder pod deleted mid-call on a real control plane, with the store down: the process
//! kubelet gives it the grace the operator computed (preStop, then SIGTERM, then SIGKILL at the
//! end of `terminationGracePeriodSeconds`), the recorder drains for its full `drainSeconds`, ends
//! the call, and keeps retrying the upload until the store is back — inside the grace, so the
//! spool is not deleted with the pod and nothing is lost.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use object_store::ObjectStoreExt;
use opname_tests::controlplane::ControlPlane as ApiServer;
use opname_tests::kubelet::Kubelet;
use opname_tests::s3::Moto;
use opname_tests::{bin, operator, wait_for};
use serde_json::{Value, json};

const DRAIN: u64 = 3;
const FINAL_UPLOAD: u64 = 30;
const PRE_STOP: u64 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_with_uploads_pending_loses_nothing() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let moto = Moto::start();
    moto.create_bucket("drain");
    let port = moto.addr.port();
    let mut server = ApiServer::start().await;
    server.start_controllers().await;
    let kubeconfig = server
        .install(&["acme"], json!({"store": {"url": "s3://drain"}}))
        .await;
    server.restrict("acme").await;
    let env: String = moto
        .env()
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    let settings = dir.join("operator.yaml");
    std::fs::write(
        &settings,
        format!(
            "recorder:\n  image: opname-recorder:dev\n  drainSeconds: {DRAIN}\n  preStopSeconds: {PRE_STOP}\n  finalUploadSeconds: {FINAL_UPLOAD}\nstore:\n  url: s3://drain\n  prefix: recordings\n  env:\n{env}capacity:\n  minReplicas: 1\n  maxReplicas: 1\n"
        ),
    )
    .unwrap();
    let kubelet = Kubelet::start(
        &server,
        HashMap::from([("opname-recorder".to_string(), bin("opname-recorder"))]),
        dir.join("pods"),
    )
    .await;
    let _op = operator(&kubeconfig, dir, &settings);
    let policy = json!({"apiVersion": "opname.dev/v1alpha1", "kind": "RecordingPolicy",
        "metadata": {"name": "alice", "namespace": "acme"},
        "spec": {"user": "alice@acme.example", "identities": ["sip:alice@demo.example"], "retentionDays": 30}});
    for (code, body) in server
        .create_yaml(&serde_json::to_string(&policy).unwrap())
        .await
    {
        assert_eq!(code, 201, "{body}");
    }
    wait_for("a ready recorder", 60, || {
        kubelet
            .http_addresses("acme", opname_operator::fleet::NAME)
            .iter()
            .any(|(_, h)| opname_tests::http_get(*h, "/readyz").is_ok_and(|(c, _)| c == 200))
    })
    .await;
    // The operator keeps retention by the bucket's lifecycle rules on S3, verified by read-back.
    wait_for("RetentionEnforced by a lifecycle rule", 30, || {
        server
            .list("opname.dev", "v1alpha1", "recordingpolicies", Some("acme"))
            .iter()
            .flat_map(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .any(|c| {
                c["type"] == "RetentionEnforced"
                    && c["status"] == "True"
                    && c["reason"] == "LifecycleRule"
            })
    })
    .await;
    let (pod, _) = kubelet.http_addresses("acme", opname_operator::fleet::NAME)[0].clone();
    let sip = kubelet.sip_addresses("acme", &pod)[0];
    let (_, spec) = server
        .request(
            "GET",
            &format!("/api/v1/namespaces/acme/pods/{pod}"),
            "application/json",
            "",
        )
        .await;
    let grace = spec["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        grace >= PRE_STOP + DRAIN + FINAL_UPLOAD + 6,
        "the grace covers preStop, drain, finalising and the last uploads: {grace}"
    );

    // A call longer than the drain; the store goes away; the pod is deleted.
    let loadgen = std::thread::spawn(move || {
        opname_tests::loadgen(&[
            "--target",
            &sip.to_string(),
            "--calls",
            "1",
            "--seconds",
            "60",
        ])
    });
    let log = dir.join("pods/acme").join(&pod).join("log");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for("the call recording", 10, || {
        read_log().contains("recording started")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(moto);
    let (code, body) = server
        .request(
            "DELETE",
            &format!("/api/v1/namespaces/acme/pods/{pod}"),
            "application/json",
            "",
        )
        .await;
    assert_eq!(code, 200, "{body}");
    // preStop, SIGTERM, the full drain, the call ended: its upload fails while the store is down.
    wait_for("the drain to end the call", 20, || {
        read_log().contains("recording finished")
    })
    .await;
    wait_for("the upload to fail and wait", 10, || {
        read_log().contains("upload failed; will retry")
    })
    .await;
    assert!(read_log().contains("shutdown requested: draining"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        kubelet.running("acme").contains(&pod),
        "still waiting for the store, inside its grace: {}",
        read_log()
    );

    // The store returns within finalUploadSeconds: the recording arrives, then the recorder exits.
    let back = Moto::start_on(port);
    back.create_bucket("drain");
    let client = back.client("drain");
    let mut record: Option<Value> = None;
    for _ in 0..400 {
        let keys: Vec<_> = client
            .list(None)
            .filter_map(|o| async move { o.ok().map(|o| o.location) })
            .collect()
            .await;
        if let Some(k) = keys
            .iter()
            .find(|k| k.as_ref().starts_with("recordings/r30/") && k.as_ref().ends_with(".json"))
        {
            let bytes = client.get(k).await.unwrap().bytes().await.unwrap();
            record = serde_json::from_slice(&bytes).ok();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let record = record.unwrap_or_else(|| panic!("nothing stored: {}", read_log()));
    assert_eq!(record["endReason"], "shutdown", "{record:#}");
    assert_eq!(record["complete"], false, "{record:#}");
    assert_eq!(record["recorder"], pod.as_str());
    let seconds = record["durationSeconds"].as_f64().unwrap();
    assert!(
        seconds >= (PRE_STOP + DRAIN) as f64 + 2.0,
        "recorded through the whole drain: {seconds} s"
    );
    wait_for("the recorder to exit on its own", 20, || {
        !kubelet.running("acme").contains(&pod)
    })
    .await;
    assert!(
        read_log().trim_end().ends_with("stopped"),
        "a clean exit, not SIGKILL: {}",
        read_log()
    );
    let report = loadgen.join().unwrap();
    assert_eq!(report["answered"], 1, "{report:#}");
    server.assert_chart_rbac_sufficed();
}
