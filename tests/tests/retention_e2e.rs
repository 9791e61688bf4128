//! Legal hold and erasure through a real kube-apiserver and the real operator (with the chart's
//! RBAC only), on the local
//! directory store: a hold copies its recordings out of their retention class, an erasure by
//! identity deletes every unheld recording of that identity and reports the held ones, both leave
//! Events, audit objects record the deletions, the sweeper cannot reach held copies, and deleting
//! the hold releases them (the finalizer goes only after the copies are gone).

use std::sync::Arc;

use object_store::{ObjectStore, ObjectStoreExt};
use opname_tests::controlplane::ControlPlane as ApiServer;
use opname_tests::{Synthetic, operator, wait_for};
use serde_json::{Value, json};

fn keys(store: &Arc<dyn ObjectStore>) -> Vec<String> {
    let store = store.clone();
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move { opname_tests::store_keys(store.as_ref(), None).await })
    })
    .join()
    .unwrap()
}

fn get(server: &ApiServer, plural: &str, name: &str) -> Value {
    server
        .list("opname.dev", "v1alpha1", plural, Some("acme"))
        .into_iter()
        .find(|o| o["metadata"]["name"] == name)
        .unwrap_or(Value::Null)
}

fn events(server: &ApiServer, reason: &str) -> Vec<String> {
    server
        .list("events.k8s.io", "v1", "events", Some("acme"))
        .into_iter()
        .filter(|e| e["reason"] == reason)
        .map(|e| e["note"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_erasure_and_release() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = ApiServer::start().await;
    let (store, store_dir) = opname_tests::local_store(dir);
    let kubeconfig = server
        .install(
            &["acme"],
            json!({"store": {"url": format!("file://{}", store_dir.display())}}),
        )
        .await;
    let start: jiff::Timestamp = "2026-11-02T09:00:00Z".parse().unwrap();
    let call = |n: u32, class, user, other| Synthetic {
        class,
        namespace: "acme",
        id: Synthetic::id_at(start, n),
        user,
        start,
        seconds: 30.0,
        parties: ["sip:+31201234567@pbx.example", other],
        audio: vec![n as u8; 1000],
    };
    // a and b: alice (1-day class), c: carol (30 days) with the same caller.
    let (a, b, c) = (
        call(1, 1, "alice", "sip:bob@example.com"),
        call(2, 1, "alice", "sip:dave@example.com"),
        call(3, 30, "carol", "sip:erin@example.com"),
    );
    for r in [&a, &b, &c] {
        r.put(store.as_ref(), "recordings").await;
    }
    let settings = dir.join("operator.yaml");
    std::fs::write(
        &settings,
        format!(
            "store:\n  url: file://{}\n  prefix: recordings\nretention:\n  lifecycle: false\n  intervalSeconds: 3600\n",
            store_dir.display()
        ),
    )
    .unwrap();
    let _op = operator(&kubeconfig, dir, &settings);

    // A hold on recording a.
    let (code, body) = server
        .create_yaml(&format!(
            "apiVersion: opname.dev/v1alpha1\nkind: RecordingHold\nmetadata: {{name: case-1, namespace: acme}}\nspec:\n  reason: case 17\n  recordingIds: [{}]\n",
            a.id
        ))
        .await[0]
        .clone();
    assert_eq!(code, 201, "{body}");
    wait_for("the hold to copy recording a", 30, || {
        get(&server, "recordingholds", "case-1")["status"]["held"] == 1
    })
    .await;
    // Settled, the hold writes nothing more: its own status write does not wake it again.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let settled = get(&server, "recordingholds", "case-1")["metadata"]["resourceVersion"].clone();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        get(&server, "recordingholds", "case-1")["metadata"]["resourceVersion"],
        settled,
        "the hold keeps rewriting itself"
    );
    let held: Vec<String> = keys(&store)
        .into_iter()
        .filter(|k| k.starts_with("recordings/held/"))
        .collect();
    assert_eq!(
        held,
        [
            format!("recordings/held/acme/case-1/2026/11/02/{}.json", a.id),
            format!("recordings/held/acme/case-1/2026/11/02/{}.opus", a.id),
        ]
    );
    assert_eq!(
        get(&server, "recordingholds", "case-1")["metadata"]["finalizers"],
        json!([opname_operator::archive::hold::FINALIZER])
    );
    assert!(!events(&server, "Held").is_empty());

    // The schema refuses an erasure that names both an identity and ids.
    let (code, body) = server
        .create_yaml(&format!(
            "apiVersion: opname.dev/v1alpha1\nkind: RecordingErasure\nmetadata: {{name: bad, namespace: acme}}\nspec:\n  reason: x\n  identity: alice\n  recordingIds: [{}]\n",
            a.id
        ))
        .await[0]
        .clone();
    assert_eq!(code, 422, "{body}");

    // Erase everything of the caller's number, written differently than in the records.
    let (code, body) = server
        .create_yaml(
            "apiVersion: opname.dev/v1alpha1\nkind: RecordingErasure\nmetadata: {name: gdpr-42, namespace: acme}\nspec:\n  reason: GDPR request 42\n  identity: \"tel:+31 20 123 4567\"\n",
        )
        .await[0]
        .clone();
    assert_eq!(code, 201, "{body}");
    wait_for("the erasure to complete", 30, || {
        get(&server, "recordingerasures", "gdpr-42")["status"]["phase"] == "Completed"
    })
    .await;
    let status = get(&server, "recordingerasures", "gdpr-42")["status"].clone();
    assert_eq!(status["deletedCount"], 2, "{status}");
    let mut deleted: Vec<&str> = status["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    deleted.sort();
    assert_eq!(deleted, [b.id.as_str(), c.id.as_str()]);
    assert_eq!(status["skippedHeld"], json!([a.id]));
    assert_eq!(status["bytesFreed"], 2000);
    let left = keys(&store);
    assert!(
        !left.iter().any(|k| k.contains(&b.id) || k.contains(&c.id)),
        "{left:?}"
    );
    assert!(left.contains(&format!("recordings/r1/acme/2026/11/02/{}.opus", a.id)));
    let audit_key = status["auditKey"].as_str().unwrap();
    let audit: Value = serde_json::from_slice(
        &store
            .get(&audit_key.into())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(audit["reason"], "GDPR request 42");
    assert_eq!(audit["deleted"].as_array().unwrap().len(), 4);
    assert!(
        events(&server, "Erased").iter().any(
            |n| n.starts_with("2 recordings erased") && n.contains("1 kept under a legal hold")
        ),
        "{:?}",
        events(&server, "Erased")
    );

    // Three days on, the sweeper deletes a's original; the held copy is out of its reach.
    let later = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(72))
        .unwrap();
    opname_operator::retention::sweeper::sweep(store.as_ref(), "recordings", later, 1000, 14)
        .await
        .unwrap();
    let left = keys(&store);
    assert!(
        !left.iter().any(|k| k.starts_with("recordings/r1/")),
        "{left:?}"
    );
    assert!(left.iter().any(|k| k.starts_with("recordings/held/")));

    // Releasing the hold deletes the copies, then the finalizer, then the hold.
    let (code, body) = server
        .request(
            "DELETE",
            "/apis/opname.dev/v1alpha1/namespaces/acme/recordingholds/case-1",
            "application/json",
            "",
        )
        .await;
    assert!(code == 200 || code == 202, "{code} {body}");
    wait_for("the hold to be released", 30, || {
        get(&server, "recordingholds", "case-1").is_null()
    })
    .await;
    let left = keys(&store);
    assert!(
        !left.iter().any(|k| k.starts_with("recordings/held/")),
        "{left:?}"
    );
    assert!(
        left.iter()
            .any(|k| k.starts_with("recordings/audit/") && k.contains("hold-case-1-released")),
        "{left:?}"
    );
    assert!(!events(&server, "Released").is_empty());
    server.assert_chart_rbac_sufficed();
}
