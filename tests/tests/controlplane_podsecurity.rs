//! PodSecurity `restricted` on a real kube-apiserver: in an organisation namespace that enforces it,
//! the pods of the recorder Deployment and of the export Job — as the operator renders them — are
//! admitted, and the same export pod without opname's hardening is refused (the export Job used to
//! lack it).

use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use opname_operator::crd::RecordingPolicy;
use opname_operator::settings::Settings;
use opname_tests::controlplane::ControlPlane;
use serde_json::json;

fn pod(template: k8s_openapi::api::core::v1::PodTemplateSpec, name: &str) -> Pod {
    Pod {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some("acme".into()),
            ..Default::default()
        },
        spec: template.spec,
        ..Default::default()
    }
}

#[tokio::test]
async fn recorder_and_export_pods_pass_restricted_and_unhardened_ones_do_not() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cp = ControlPlane::start().await;
    let client = cp.client().await;
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "acme", "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }}}))
            .unwrap(),
        )
        .await
        .unwrap();
    // No controller-manager here to create ServiceAccounts; the pods name these two.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "acme");
    for name in ["default", "opname-operator"] {
        sas.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
    }
    let settings = Settings::default();
    let policy: RecordingPolicy = serde_json::from_value(json!({
        "apiVersion": "opname.dev/v1alpha1", "kind": "RecordingPolicy",
        "metadata": {"name": "alice", "namespace": "acme", "uid": "u1",
                     "creationTimestamp": "2026-11-01T00:00:00Z", "generation": 1},
        "spec": {"user": "alice@acme.example", "identities": ["tel:+31201234567"], "retentionDays": 90},
    }))
    .unwrap();
    let now = Time("2026-11-02T00:00:00Z".parse().unwrap());
    let plan = opname_operator::fleet::plan("acme", &[policy], &settings, None, &now).unwrap();
    let recorder = plan.children.unwrap().deployment.spec.template;
    let export = opname_operator::export::controller::job("acme", "nov", &settings)
        .spec
        .unwrap()
        .template;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "acme");
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    pods.create(&dry, &pod(recorder, "recorder"))
        .await
        .expect("the recorder pod is admitted under restricted");
    pods.create(&dry, &pod(export.clone(), "export"))
        .await
        .expect("the export pod is admitted under restricted");

    let mut bare = export;
    if let Some(spec) = bare.spec.as_mut() {
        spec.security_context = None;
        for c in &mut spec.containers {
            c.security_context = None;
        }
    }
    match pods.create(&dry, &pod(bare, "bare")).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 403, "{s:?}");
            assert!(s.message.contains("violates PodSecurity"), "{}", s.message);
        }
        other => panic!("an unhardened pod must be refused, got {other:?}"),
    }
}
