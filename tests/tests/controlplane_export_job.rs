//! The export Job for a BulkExport whose name is longer than a label value may be (63 characters)
//! is accepted by a real kube-apiserver and still leads back to its BulkExport; the Job as it was
//! rendered before (the whole name as a label value) is refused with 422, forever. And a reconcile
//! working from a stale copy of a BulkExport (the cache not yet showing what the Job wrote) never
//! writes `Pending` over a finished export, nor starts its Job again.

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
    let cp = ControlPlane::start().await;
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

#[tokio::test]
async fn a_stale_reconcile_never_writes_pending_over_a_finished_export() {
    use opname_operator::crd::BulkExport;
    use opname_operator::export::controller::{FINALIZER, reconcile};
    use std::sync::Arc;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (_, store_root) = opname_tests::local_store(dir.path());
    let cp = ControlPlane::start().await;
    let admin = cp.client().await;
    let url = format!("file://{}", store_root.display());
    // The operator's own token: the chart's RBAC is all it has.
    let kubeconfig = cp.install(&["acme"], json!({"store": {"url": url}})).await;
    let operator = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::from_yaml(&kubeconfig).unwrap(),
            &Default::default(),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    let created = cp
        .create_yaml(
            "apiVersion: opname.dev/v1alpha1\nkind: RecordingPolicy\nmetadata: {name: alice, namespace: acme}\nspec: {user: alice, identities: [\"1001\"], retentionDays: 3650, suspended: true}\n",
        )
        .await;
    assert_eq!(created[0].0, 201, "{:?}", created[0].1);
    let exports: Api<BulkExport> = Api::namespaced(admin.clone(), "acme");
    let new = |name: &str| -> BulkExport {
        serde_json::from_value(json!({
            "apiVersion": "opname.dev/v1alpha1", "kind": "BulkExport",
            "metadata": {"name": name, "namespace": "acme", "finalizers": [FINALIZER]},
            "spec": {"month": "2026-10"},
        }))
        .unwrap()
    };
    let settings = Settings {
        store: opname_operator::settings::StoreSettings {
            url: url.clone(),
            ..Default::default()
        },
        export: opname_operator::settings::ExportSettings {
            job_namespace: Some("opname-system".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let ctx = opname_operator::archive::context(
        &operator,
        settings,
        opname_operator::metrics::Metrics::new(),
    )
    .unwrap();
    let jobs: Api<Job> = Api::namespaced(admin.clone(), "opname-system");

    // The Job finished and wrote Succeeded; the reconcile still holds the object as created.
    let stale = exports
        .create(&PostParams::default(), &new("oct"))
        .await
        .unwrap();
    exports
        .patch_status(
            "oct",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"phase": "Succeeded", "message": "done"}})),
        )
        .await
        .unwrap();
    let result = reconcile(Arc::new(stale), ctx.clone()).await;
    assert!(result.is_err(), "the stale write is refused: {result:?}");
    let now = exports.get("oct").await.unwrap();
    let status = now.status.unwrap();
    assert_eq!(
        status.phase,
        Some(opname_operator::crd::ExportPhase::Succeeded)
    );
    assert_eq!(status.message.as_deref(), Some("done"));
    assert!(
        jobs.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "no Job again"
    );

    // From a current copy: Pending, then the Job.
    exports
        .create(&PostParams::default(), &new("nov"))
        .await
        .unwrap();
    let current = exports.get("nov").await.unwrap();
    reconcile(Arc::new(current), ctx).await.expect("reconcile");
    let status = exports.get("nov").await.unwrap().status.unwrap();
    assert_eq!(
        status.phase,
        Some(opname_operator::crd::ExportPhase::Pending)
    );
    assert_eq!(jobs.list(&Default::default()).await.unwrap().items.len(), 1);
}
