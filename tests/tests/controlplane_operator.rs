//! The real `opname-operator` on a real kube-apiserver, holding only a token of the chart's
//! ServiceAccount with the chart's RBAC (rendered by Helm's own code): it wins its leader Lease,
//! reconciles a RecordingPolicy into the namespace's recorder ConfigMap and Deployment by
//! server-side apply, and reports the policy's Ready condition — no cluster-admin anywhere in its
//! path. No kubelet runs here, so no recorder is ready: the policy is compiled but not Ready.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use opname_tests::controlplane::ControlPlane;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_with_the_charts_rbac_reconciles_a_policy() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let cp = ControlPlane::start().await;
    let admin = cp.client().await;
    cp.install_crds(&admin).await;
    cp.namespaces(&admin, &["opname-system", "acme"]).await;
    let docs = cp
        .install_chart_rbac(
            &admin,
            json!({"store": {"url": format!("file://{}", store.display())}}),
        )
        .await;
    let sa = docs
        .iter()
        .find(|d| d["kind"] == "ServiceAccount" && d["metadata"]["name"] == "opname-operator")
        .expect("the operator's ServiceAccount");
    let kubeconfig = cp
        .service_account_kubeconfig(
            &admin,
            "opname-system",
            sa["metadata"]["name"].as_str().unwrap(),
        )
        .await;
    let settings = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["data"]["operator.yaml"].is_string())
        .expect("the operator's ConfigMap");
    let settings_path = dir.path().join("operator.yaml");
    std::fs::write(
        &settings_path,
        settings["data"]["operator.yaml"].as_str().unwrap(),
    )
    .unwrap();
    // The recorder Service as an earlier operator made it (a ClusterIP): the fleet is headless
    // now and a Service's clusterIP cannot change in place.
    let old_service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": opname_operator::fleet::NAME, "namespace": "acme"},
        "spec": {"selector": {"app": "x"}, "ports": [{"name": "sip-udp", "port": 5060, "protocol": "UDP"}]}});
    cp.apply(&admin, &[&old_service]).await;
    let _operator = opname_tests::operator(&kubeconfig, dir.path(), &settings_path);

    let gvk = GroupVersionKind::gvk("opname.dev", "v1alpha1", "RecordingPolicy");
    let policies: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        "acme",
        &ApiResource::from_gvk_with_plural(&gvk, "recordingpolicies"),
    );
    let policy: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "opname.dev/v1alpha1", "kind": "RecordingPolicy",
        "metadata": {"name": "alice", "namespace": "acme"},
        "spec": {"user": "alice@acme.example", "identities": ["tel:+31201234567"], "retentionDays": 90},
    }))
    .unwrap();
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();

    let log = || std::fs::read_to_string(dir.path().join("operator.log")).unwrap_or_default();
    let mut ready = serde_json::Value::Null;
    for _ in 0..300 {
        let p = policies.get("alice").await.unwrap();
        if let Some(c) = p.data["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
        {
            ready = c.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        (&ready["status"], &ready["reason"]),
        (&json!("False"), &json!("NoReadyRecorder")),
        "compiled, yet no recorder runs: not Ready ({ready}); operator log:\n{}",
        log()
    );
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("kubectl -n acme get pods"),
        "{ready}"
    );
    let config = opname_tests::fleet_config(&cp.list("", "v1", "configmaps", Some("acme")))
        .expect("the recorder configuration and its policy shard");
    assert_eq!(config.policies[0].user, "alice@acme.example");
    let deployment = Api::<Deployment>::namespaced(admin.clone(), "acme")
        .get("opname-recorder")
        .await
        .unwrap();
    assert_eq!(
        deployment.metadata.managed_fields.unwrap()[0]
            .manager
            .as_deref(),
        Some("opname-operator"),
        "applied by the operator's own field manager"
    );
    let lease = Api::<Lease>::namespaced(admin.clone(), "opname-system")
        .list(&Default::default())
        .await
        .unwrap();
    assert!(
        lease.items.iter().any(|l| l
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_ref())
            .is_some()),
        "the operator holds its leader Lease"
    );
    assert!(!log().contains("forbidden"), "{}", log());
    let service = Api::<k8s_openapi::api::core::v1::Service>::namespaced(admin.clone(), "acme")
        .get(opname_operator::fleet::NAME)
        .await
        .unwrap();
    let spec = service.spec.unwrap();
    assert_eq!(
        spec.cluster_ip.as_deref(),
        Some("None"),
        "recreated headless"
    );
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    cp.assert_chart_rbac_sufficed();
}
