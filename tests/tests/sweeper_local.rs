//! The retention sweeper against the local directory store, with an injected clock: a 1-day
//! class goes after two days (audio before record, an audit object records it), a 30-day class
//! stays until its time, export archives go after their own 14 days, nothing outside the retention
//! classes and archives is touched, and a second pass deletes nothing more.

use object_store::ObjectStoreExt;
use object_store::path::Path;
use opname_operator::retention::sweeper::sweep;
use opname_operator::settings::StoreSettings;
use opname_operator::store::open as open_store;

#[tokio::test]
async fn sweeps_expired_classes_only() {
    let work = tempfile::tempdir().unwrap();
    let settings = StoreSettings {
        url: format!("file://{}", work.path().join("store").display()),
        prefix: "recordings".into(),
        credentials_secret: None,
        env: Default::default(),
    };
    let store = open_store(&settings).unwrap();
    for k in [
        "recordings/r1/acme/2026/11/28/a.opus",
        "recordings/r1/acme/2026/11/28/a.json",
        "recordings/r1/acme/2026/11/28/orphan.opus",
        "recordings/r30/acme/2026/11/28/b.opus",
        "recordings/r30/acme/2026/11/28/b.json",
        "other-team/keep.txt",
        "recordings/exports/acme/nov/nov-2026-11-part-001-of-001.zip",
    ] {
        store
            .put(&Path::from(k), b"x".to_vec().into())
            .await
            .unwrap();
    }
    let now = jiff::Timestamp::now();
    let later = |days: i64| {
        now.checked_add(jiff::SignedDuration::from_hours(24 * days))
            .unwrap()
    };

    let nothing = sweep(store.as_ref(), "recordings", now, 1000, 14)
        .await
        .unwrap();
    assert!(
        nothing.deleted.is_empty(),
        "nothing is deleted before its time"
    );

    let first = sweep(store.as_ref(), "recordings", later(2), 1000, 14)
        .await
        .unwrap();
    let mut deleted = first.deleted.clone();
    deleted.sort();
    assert_eq!(
        deleted,
        [
            "recordings/r1/acme/2026/11/28/a.json",
            "recordings/r1/acme/2026/11/28/a.opus",
            "recordings/r1/acme/2026/11/28/orphan.opus"
        ]
    );
    let a_audio = first
        .deleted
        .iter()
        .position(|k| k.ends_with("a.opus"))
        .unwrap();
    let a_record = first
        .deleted
        .iter()
        .position(|k| k.ends_with("a.json"))
        .unwrap();
    assert!(
        a_audio < a_record,
        "audio before its record: {:?}",
        first.deleted
    );
    let left = opname_tests::store_keys(store.as_ref(), None).await;
    let audits: Vec<&String> = left
        .iter()
        .filter(|k| k.starts_with("recordings/audit/"))
        .collect();
    assert_eq!(audits.len(), 1, "{left:?}");
    let audit: serde_json::Value = serde_json::from_slice(
        &store
            .get(&Path::from(audits[0].as_str()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(audit["deleted"].as_array().unwrap().len(), 3);
    assert!(audit["who"].as_str().unwrap().contains("sweeper"));
    assert!(
        left.contains(&"recordings/r30/acme/2026/11/28/b.opus".to_string())
            && left.contains(&"other-team/keep.txt".to_string())
    );

    let again = sweep(store.as_ref(), "recordings", later(2), 1000, 14)
        .await
        .unwrap();
    assert!(
        again.deleted.is_empty(),
        "a second pass deletes nothing more"
    );

    let month = sweep(store.as_ref(), "recordings", later(31), 1000, 14)
        .await
        .unwrap();
    assert_eq!(
        month.deleted.len(),
        3,
        "the 30-day class after its time, and the 14-day export archive"
    );
    assert!(month.deleted.iter().any(|k| k.contains("/exports/")));
    let left = opname_tests::store_keys(store.as_ref(), None).await;
    assert!(
        left.contains(&"other-team/keep.txt".to_string()),
        "outside the retention classes nothing is touched"
    );
    assert!(
        !left
            .iter()
            .any(|k| k.contains("/r30/") || k.contains("/r1/"))
    );
}
