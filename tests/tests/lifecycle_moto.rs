//! Bucket lifecycle rules against an S3-protocol server (moto): other rules survive, an
//! unchanged reconcile writes nothing, rules follow the retention classes in use, and a retired
//! class keeps its rule while objects remain under it.

use std::collections::BTreeSet;

use object_store::ObjectStoreExt;
use opname_operator::retention::lifecycle::{Bucket, enforce};
use opname_operator::retention::rules::Rule;
use opname_operator::settings::StoreSettings;
use opname_tests::s3::Moto;

fn ids(rules: &[Rule]) -> Vec<&str> {
    let mut ids: Vec<&str> = rules.iter().map(Rule::id).collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn lifecycle_round_trip() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let moto = Moto::start();
    moto.create_bucket("opname-lc");
    let store = StoreSettings {
        url: "s3://opname-lc".into(),
        prefix: "recordings".into(),
        credentials_secret: None,
        env: moto.env().into_iter().collect(),
    };
    let bucket = Bucket::from_settings(&store).unwrap().expect("an S3 store");
    // Someone else's rule is already there.
    bucket
        .put(r#"<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Rule><ID>logs-cleanup</ID><Filter><Prefix>logs/</Prefix></Filter><Status>Enabled</Status><Expiration><Days>3</Days></Expiration></Rule></LifecycleConfiguration>"#.into())
        .await
        .unwrap();
    let classes = |d: &[u32]| d.iter().copied().collect::<BTreeSet<u32>>();

    let first = enforce(&bucket, "recordings", &classes(&[30, 90]), 14)
        .await
        .unwrap();
    assert!(first.written);
    assert_eq!(
        ids(&first.rules),
        [
            "opname-abort-incomplete-uploads",
            "opname-exports",
            "opname-r30",
            "opname-r90",
            "opname-segments"
        ]
    );
    let raw = bucket.get().await.unwrap();
    assert!(
        raw.contains("logs-cleanup") && raw.contains("logs/"),
        "the foreign rule survives: {raw}"
    );
    assert!(raw.contains("recordings/r90/"), "{raw}");
    assert!(
        raw.contains("recordings/exports/"),
        "archives expire by their own rule: {raw}"
    );

    let again = enforce(&bucket, "recordings", &classes(&[30, 90]), 14)
        .await
        .unwrap();
    assert!(!again.written, "nothing changed, nothing written");

    // A policy moved from 90 to 7 days; nothing is stored under r90 yet: its rule goes.
    let changed = enforce(&bucket, "recordings", &classes(&[7, 30]), 14)
        .await
        .unwrap();
    assert!(changed.written);
    assert_eq!(
        ids(&changed.rules),
        [
            "opname-abort-incomplete-uploads",
            "opname-exports",
            "opname-r30",
            "opname-r7",
            "opname-segments"
        ]
    );

    // r7 is retired while a recording is still stored under it: its rule stays.
    moto.client("opname-lc")
        .put(
            &"recordings/r7/acme/2026/11/28/x.opus".into(),
            b"x".to_vec().into(),
        )
        .await
        .unwrap();
    let retired = enforce(&bucket, "recordings", &classes(&[30]), 14)
        .await
        .unwrap();
    assert!(!retired.written);
    assert!(
        ids(&retired.rules).contains(&"opname-r7"),
        "kept while objects remain"
    );
    assert!(
        bucket.get().await.unwrap().contains("logs-cleanup"),
        "and still nobody else's rule lost"
    );
}
