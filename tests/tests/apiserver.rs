//! The API-server emulator behaves like the API server where controllers depend on it. Most of
//! these go through kube-rs itself, so a mismatch with what kube expects fails here first.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Client, Config};
use opname_operator::crd::{RecordingPolicy, RecordingPolicySpec};
use opname_tests::apiserver::{ApiServer, selector_matches};
use opname_tests::workspace;
use serde_json::json;

async fn client(server: &ApiServer) -> Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config::new(format!("http://{}", server.addr).parse().unwrap());
    Client::try_from(config).unwrap()
}

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})).unwrap()
}

fn policy(name: &str) -> RecordingPolicy {
    RecordingPolicy::new(
        name,
        RecordingPolicySpec {
            user: "u".into(),
            identities: vec!["1001".into()],
            mode: Default::default(),
            on_demand: None,
            retention_days: 30,
            suspended: false,
        },
    )
}

#[tokio::test]
async fn crud_conflicts_and_selectors() {
    let server = ApiServer::start(&workspace().join("crds")).await;
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "acme");
    let a = api
        .create(
            &PostParams::default(),
            &cm("a", json!({"app": "x", "tier": "db"})),
        )
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("b", json!({"app": "y"})))
        .await
        .unwrap();
    let dup = api
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(dup, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{dup:?}"
    );
    // Stale resourceVersion on replace: 409 Conflict.
    let mut stale = a.clone();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await
    .unwrap();
    stale.data = Some([("k".to_string(), "z".to_string())].into());
    let err = api
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );
    // Label selectors.
    let names = |l: Vec<ConfigMap>| {
        l.into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app=x"))
                .await
                .unwrap()
                .items
        ),
        ["a"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app in (x,y),!tier"))
                .await
                .unwrap()
                .items
        ),
        ["b"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().labels("app!=x"))
                .await
                .unwrap()
                .items
        ),
        ["b"]
    );
    assert_eq!(
        names(
            api.list(&ListParams::default().fields("metadata.name=b"))
                .await
                .unwrap()
                .items
        ),
        ["b"]
    );
    let labels = json!({"a": "1", "b": "2"});
    let m = labels.as_object().unwrap();
    assert!(
        selector_matches("a=1,b", m)
            && selector_matches("c notin (1)", m)
            && !selector_matches("a==2", m)
    );
    // JSON patch.
    let p = api
        .patch(
            "b",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([{"op": "add", "path": "/data/n", "value": "1"}]))
                    .unwrap(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(p.data.unwrap()["n"], "1");
    api.delete("b", &DeleteParams::default()).await.unwrap();
    let gone = api.get("b").await.unwrap_err();
    assert!(matches!(gone, kube::Error::Api(ref s) if s.code == 404));
}

#[tokio::test]
async fn status_subresource_generation_and_server_side_apply() {
    let server = ApiServer::start(&workspace().join("crds")).await;
    let api: Api<RecordingPolicy> = Api::namespaced(client(&server).await, "acme");
    let p = api
        .create(&PostParams::default(), &policy("p"))
        .await
        .unwrap();
    assert_eq!(p.metadata.generation, Some(1));
    // Status through the main resource is ignored; through /status it lands without a generation bump.
    let s = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 7}})),
        )
        .await
        .unwrap();
    assert!(s.status.is_none());
    let s = api.patch_status("p", &PatchParams::apply("op").force(), &Patch::Apply(json!({"apiVersion": "opname.dev/v1alpha1", "kind": "RecordingPolicy", "status": {"observedGeneration": 1}}))).await.unwrap();
    assert_eq!(s.status.unwrap().observed_generation, Some(1));
    assert_eq!(s.metadata.generation, Some(1));
    let s = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        s.metadata.generation,
        Some(1),
        "metadata changes do not bump generation"
    );
    let s = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"retentionDays": 31}})),
        )
        .await
        .unwrap();
    assert_eq!(s.metadata.generation, Some(2), "spec changes do");
    // Apply: a field the manager stops applying is removed; another manager's conflicting apply
    // is refused unless forced.
    let cms: Api<ConfigMap> = Api::namespaced(client(&server).await, "acme");
    let applied = |data: serde_json::Value| {
        Patch::Apply(
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data}),
        )
    };
    cms.patch(
        "c",
        &PatchParams::apply("one"),
        &applied(json!({"a": "1", "b": "2"})),
    )
    .await
    .unwrap();
    let c = cms
        .patch("c", &PatchParams::apply("one"), &applied(json!({"a": "1"})))
        .await
        .unwrap();
    assert_eq!(
        c.data.unwrap().len(),
        1,
        "b is no longer applied, so it is gone"
    );
    let err = cms
        .patch("c", &PatchParams::apply("two"), &applied(json!({"a": "9"})))
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err:?}"
    );
    let c = cms
        .patch(
            "c",
            &PatchParams::apply("two").force(),
            &applied(json!({"a": "9"})),
        )
        .await
        .unwrap();
    assert_eq!(c.data.unwrap()["a"], "9");
}

#[tokio::test]
async fn finalizers_and_owner_reference_garbage_collection() {
    let server = ApiServer::start(&workspace().join("crds")).await;
    let c = client(&server).await;
    let policies: Api<RecordingPolicy> = Api::namespaced(c.clone(), "acme");
    let cms: Api<ConfigMap> = Api::namespaced(c, "acme");
    let owner = policies
        .create(&PostParams::default(), &policy("owner"))
        .await
        .unwrap();
    let mut child = cm("child", json!({}));
    child.metadata.owner_references = Some(vec![
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "opname.dev/v1alpha1".into(),
            kind: "RecordingPolicy".into(),
            name: "owner".into(),
            uid: owner.metadata.uid.clone().unwrap(),
            ..Default::default()
        },
    ]);
    cms.create(&PostParams::default(), &child).await.unwrap();
    policies
        .patch(
            "owner",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["opname.dev/cleanup"]}})),
        )
        .await
        .unwrap();
    policies
        .delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    let held = policies.get("owner").await.unwrap();
    assert!(
        held.metadata.deletion_timestamp.is_some(),
        "a finalizer holds the object"
    );
    assert!(cms.get("child").await.is_ok(), "and its children");
    policies
        .patch(
            "owner",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert!(
        policies.get("owner").await.is_err(),
        "gone once the finalizer is removed"
    );
    assert!(cms.get("child").await.is_err(), "children collected");
}

#[tokio::test]
async fn watch_resumes_from_a_version_bookmarks_and_expires() {
    let server = ApiServer::start(&workspace().join("crds")).await;
    let api: Api<ConfigMap> = Api::namespaced(client(&server).await, "acme");
    api.create(&PostParams::default(), &cm("one", json!({})))
        .await
        .unwrap();
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.create(&PostParams::default(), &cm("two", json!({})))
        .await
        .unwrap();
    api.delete("one", &DeleteParams::default()).await.unwrap();
    let mut events = api
        .watch(&WatchParams::default().timeout(5), &rv)
        .await
        .unwrap()
        .boxed();
    let mut seen = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(3), events.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        match e {
            WatchEvent::Added(o) => seen.push(format!("added {}", o.metadata.name.unwrap())),
            WatchEvent::Deleted(o) => seen.push(format!("deleted {}", o.metadata.name.unwrap())),
            WatchEvent::Bookmark(b) => {
                seen.push("bookmark".into());
                assert!(
                    b.metadata.resource_version.parse::<u64>().unwrap()
                        >= rv.parse::<u64>().unwrap()
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        ["added two", "deleted one", "bookmark"],
        "only what happened after the version, then a bookmark"
    );
    // After compaction the old version is gone: 410 in the stream, as the API server does.
    server.compact();
    api.create(&PostParams::default(), &cm("three", json!({})))
        .await
        .unwrap();
    let mut events = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match events.next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!(e.code, 410),
        other => panic!("expected 410, got {other:?}"),
    }
}
