//! Real expiry: Garage (which checks signatures and executes lifecycle rules) accepts opname's
//! signed lifecycle configuration, and when its clock is three days ahead it deletes the
//! recordings of a 1-day retention class and keeps those of a 30-day class, the held copy a legal
//! hold made of a 1-day recording, and the unrelated objects under someone else's prefix.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use opname_operator::archive::catalog::Catalog;
use opname_operator::archive::hold::copy_in;
use opname_operator::retention::lifecycle::{Bucket, enforce};
use opname_operator::settings::StoreSettings;
use opname_tests::garage::Garage;
use opname_tests::wait_until;

#[test]
fn garage_expires_the_one_day_class_only() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let work = tempfile::tempdir().unwrap();
    let mut garage = Garage::start(work.path());
    let settings = StoreSettings {
        url: "s3://opname".into(),
        prefix: "recordings".into(),
        credentials_secret: None,
        env: garage.env().into_iter().collect(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (endpoint, key_id, secret) = (
        format!("http://{}", garage.s3),
        garage.key_id.clone(),
        garage.secret.clone(),
    );
    let objects = || -> std::sync::Arc<dyn ObjectStore> {
        std::sync::Arc::new(
            object_store::aws::AmazonS3Builder::new()
                .with_bucket_name("opname")
                .with_region("garage")
                .with_endpoint(&endpoint)
                .with_allow_http(true)
                .with_access_key_id(&key_id)
                .with_secret_access_key(&secret)
                .build()
                .unwrap(),
        )
    };
    let store = objects();
    let keys = [
        "recordings/r1/acme/2026/11/28/a.opus",
        "recordings/r1/acme/2026/11/28/a.json",
        "recordings/r30/acme/2026/11/28/b.opus",
        "recordings/r30/acme/2026/11/28/b.json",
        // A lost recording's leftover segment: its own rule expires it after 2 days.
        "recordings/segments/acme/c/00000000.ogg",
        "other-team/keep.txt",
    ];
    rt.block_on(async {
        for k in keys {
            store
                .put(&k.into(), b"audio".to_vec().into())
                .await
                .unwrap();
        }
        // A legal hold on recording a, copied by the hold controller's own code.
        let catalog = Catalog::new(store.clone(), "recordings");
        let a = catalog
            .list("acme", "")
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.id == "a")
            .unwrap();
        copy_in(&catalog, "acme", "case-1", &a).await.unwrap();
        let bucket = Bucket::from_settings(&settings).unwrap().unwrap();
        let done = enforce(
            &bucket,
            "recordings",
            &[1, 30].into_iter().collect::<BTreeSet<u32>>(),
            0,
        )
        .await
        .expect("a signature-checking server accepts the lifecycle PUT");
        assert!(done.written);
        let mut ids: Vec<&str> = done.rules.iter().map(|r| r.id()).collect();
        ids.sort();
        assert_eq!(
            ids,
            [
                "opname-abort-incomplete-uploads",
                "opname-r1",
                "opname-r30",
                "opname-segments"
            ]
        );
    });
    garage.run_lifecycle_at("+3d", Duration::from_secs(8));
    let list = || -> Vec<String> {
        rt.block_on(async {
            objects()
                .list(None)
                .filter_map(|m| async move { m.ok().map(|m| m.location.to_string()) })
                .collect::<Vec<_>>()
                .await
        })
    };
    assert!(
        wait_until(Duration::from_secs(20), || !list().iter().any(|k| k
            .starts_with("recordings/r1/")
            || k.starts_with("recordings/segments/"))),
        "the 1-day class expired; left: {:?}\n{}",
        list(),
        garage
            .log()
            .lines()
            .filter(|l| l.contains("ifecycle"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut left = list();
    left.sort();
    assert_eq!(
        left,
        [
            "other-team/keep.txt",
            "recordings/held/acme/case-1/2026/11/28/a.json",
            "recordings/held/acme/case-1/2026/11/28/a.opus",
            "recordings/r30/acme/2026/11/28/b.json",
            "recordings/r30/acme/2026/11/28/b.opus"
        ]
    );
}
