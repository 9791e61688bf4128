//! The chart's CRDs on a real kube-apiserver (`tests/controlplane/`): the server compiles their
//! structural schemas and CEL rules at creation, establishes them, and then enforces them — the
//! CEL rules refuse what they must (an erasure with both selectors, a hold with none or with
//! `from` after `to`, a changed erasure), the schema refuses a retention outside 1..=3650, and
//! valid resources are stored.

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use opname_tests::controlplane::ControlPlane;
use serde_json::json;

fn api(client: &kube::Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("opname.dev", "v1alpha1", kind);
    Api::namespaced_with(
        client.clone(),
        "acme",
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

fn object(kind: &str, name: &str, spec: serde_json::Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "opname.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name, "namespace": "acme"}, "spec": spec,
    }))
    .unwrap()
}

/// The API server's refusal: 422 and the message it gave.
fn refused(result: Result<DynamicObject, kube::Error>) -> String {
    match result {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "{s:?}");
            s.message
        }
        other => panic!("expected a 422 refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn chart_crds_compile_and_their_rules_hold_on_a_real_api_server() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cp = ControlPlane::start().await;
    let client = cp.client().await;
    let names = cp.install_crds(&client).await;
    assert_eq!(names.len(), 5, "{names:?}");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "acme"}})).unwrap(),
        )
        .await
        .unwrap();

    let pp = PostParams::default();
    let schedules = api(&client, "ScheduledBulkExport", "scheduledbulkexports");
    let none_kept = object("ScheduledBulkExport", "none", json!({"keep": 0}));
    let message = refused(schedules.create(&pp, &none_kept).await);
    assert!(message.contains("spec.keep"), "{message}");
    let long_links = object("ScheduledBulkExport", "long", json!({"linkTTL": "200h"}));
    let message = refused(schedules.create(&pp, &long_links).await);
    assert!(message.contains("at most 168h"), "{message}");
    let defaults = schedules
        .create(&pp, &object("ScheduledBulkExport", "monthly", json!({})))
        .await
        .unwrap();
    assert_eq!(defaults.data["spec"]["keep"], 3, "defaults in the schema");
    assert_eq!(defaults.data["spec"]["delayMinutes"], 60);
    let erasures = api(&client, "RecordingErasure", "recordingerasures");
    let both = object(
        "RecordingErasure",
        "both",
        json!({"identity": "tel:+31201234567", "recordingIds": ["a"], "reason": "GDPR 42"}),
    );
    let message = refused(erasures.create(&pp, &both).await);
    assert!(
        message.contains("give either identity or recordingIds"),
        "{message}"
    );
    let one = object(
        "RecordingErasure",
        "one",
        json!({"identity": "tel:+31201234567", "reason": "GDPR 42"}),
    );
    erasures.create(&pp, &one).await.unwrap();
    let changed = erasures
        .patch(
            "one",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"identity": "tel:+31209999999"}})),
        )
        .await;
    let message = refused(changed);
    assert!(
        message.contains("an erasure cannot be changed"),
        "{message}"
    );

    let holds = api(&client, "RecordingHold", "recordingholds");
    let message = refused(
        holds
            .create(
                &pp,
                &object("RecordingHold", "none", json!({"reason": "case 17"})),
            )
            .await,
    );
    assert!(message.contains("at least one of"), "{message}");
    let backwards = object(
        "RecordingHold",
        "backwards",
        json!({"reason": "case 17", "from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"}),
    );
    let message = refused(holds.create(&pp, &backwards).await);
    assert!(message.contains("from must be before to"), "{message}");
    holds
        .create(
            &pp,
            &object(
                "RecordingHold",
                "case-17",
                json!({"reason": "case 17", "users": ["alice"]}),
            ),
        )
        .await
        .unwrap();

    let policies = api(&client, "RecordingPolicy", "recordingpolicies");
    let policy = |name: &str, days: u32| {
        object(
            "RecordingPolicy",
            name,
            json!({"user": "alice@acme.example", "identities": ["tel:+31201234567"], "retentionDays": days}),
        )
    };
    refused(policies.create(&pp, &policy("zero", 0)).await);
    refused(policies.create(&pp, &policy("forever", 3651)).await);
    policies.create(&pp, &policy("alice", 90)).await.unwrap();
}
