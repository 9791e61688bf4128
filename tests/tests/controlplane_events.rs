//! Events on a real kube-apiserver: a note longer than the 1 KiB the server allows (hold, fleet
//! and export messages can be) is refused as it is, and published cut to fit by the operator's
//! one Event path (`opname_operator::kube::publish`).

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::Resource;
use kube::api::{Api, PostParams};
use kube::runtime::events::{EventType, Recorder, Reporter};
use opname_tests::controlplane::ControlPlane;
use serde_json::json;

#[tokio::test]
async fn a_long_note_is_cut_to_what_the_server_accepts() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cp = ControlPlane::start().await;
    let client = cp.client().await;
    cp.namespaces(&client, &["acme"]).await;
    let cm = Api::<ConfigMap>::namespaced(client.clone(), "acme")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "subject"}})).unwrap(),
        )
        .await
        .unwrap();
    let on = cm.object_ref(&());
    let long = format!(
        "2000 recordings held: {}",
        "0194a3b2-7c1d-7e2f ".repeat(100)
    );
    assert!(long.len() > 1024);

    // As it is, the server refuses it.
    let events: Api<Event> = Api::namespaced(client.clone(), "acme");
    let raw: Event = serde_json::from_value(json!({
        "metadata": {"name": "raw"},
        "eventTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        "reportingController": "opname-operator", "reportingInstance": "test",
        "action": "Hold", "reason": "Held", "type": "Normal", "note": long,
        "regarding": {"kind": "ConfigMap", "namespace": "acme", "name": "subject", "apiVersion": "v1"},
    }))
    .unwrap();
    match events.create(&PostParams::default(), &raw).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422, "{s:?}");
            assert!(
                s.message.contains("at most 1024 characters"),
                "{}",
                s.message
            );
        }
        other => panic!("a note over 1 KiB must be refused, got {other:?}"),
    }

    // Through the operator's Event path it is published, cut.
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "opname-operator".into(),
            instance: None,
        },
    );
    opname_operator::kube::publish(
        &recorder,
        &on,
        EventType::Normal,
        "Held",
        "Hold",
        long.clone(),
    )
    .await;
    let stored = events.list(&Default::default()).await.unwrap().items;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let note = stored[0].note.clone().unwrap_or_default();
    assert!(note.len() <= 1024 && note.ends_with('…'), "{note}");
    assert!(long.starts_with(note.trim_end_matches('…')));
}
