//! The export Job for a BulkExport whose name is longer than a label value may be (63 characters)
//! is accepted by a real kube-apiserver and still leads back to its BulkExport; the Job as it was
//! rendered before (the whole name as a label value) is refused with 422, forever.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use opname_operator::export::controller::{export_of, job};
use opname_operator::settings::Settings;
use opname_tests::controlplane::ControlPlane;
use serde_json::json;

#[tokio::test]
async fn a_long_export_name_gives_a_valid_job_that_leads_back_to_it() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cp = ControlPlane::start();
    let client = cp.client().await;
    let settings = Settings {
        export: opname_operator::settings::ExportSettings {
            job_namespace: Some("opname-system".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "opname-system"}})).unwrap(),
        )
        .await
        .unwrap();
    let name = format!("november-2026-for-the-auditors-of-{}", "x".repeat(40));
    assert!(name.len() > 63);
    let rendered = job("acme", &name, &settings);
    let jobs: Api<Job> = Api::namespaced(client.clone(), "opname-system");
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let stored = jobs
        .create(&dry, &rendered)
        .await
        .expect("the API server accepts the export Job");
    let back = export_of(stored).expect("the Job names its BulkExport");
    assert_eq!(back.name, name);
    assert_eq!(back.namespace.as_deref(), Some("acme"));

    let mut raw = rendered;
    for labels in [
        raw.metadata.labels.as_mut(),
        raw.spec
            .as_mut()
            .and_then(|s| s.template.metadata.as_mut())
            .and_then(|m| m.labels.as_mut()),
    ]
    .into_iter()
    .flatten()
    {
        labels.insert("opname.dev/export-name".into(), name.clone());
    }
    match jobs.create(&dry, &raw).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 422, "{s:?}"),
        other => panic!("a 64+ character label value must be refused, got {other:?}"),
    }
}
