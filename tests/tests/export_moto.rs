//! Bulk export against an S3-protocol server on loopback (moto): a month of generated recordings
//! across users and retention classes, split at the configured part size, opened with Python's
//! standard `zipfile`: exactly the month's recordings, byte for byte, with matching manifests;
//! the gate and the user filter select, an empty month gives no archive, a rerun leaves one set.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use object_store::ObjectStoreExt;
use opname_operator::archive::catalog::Catalog;
use opname_operator::export::parts::{self as export, Request};
use opname_tests::s3::Moto;
use opname_tests::{Synthetic, workspace};
use serde_json::Value;
use sha2::Digest;

const PART: u64 = 256 * 1024;

fn request(name: &str, month: &str) -> Request {
    Request {
        namespace: "acme".into(),
        name: name.into(),
        month: month.into(),
        users: None,
        min_retention_days: 0,
        part_size: PART,
        bytes_per_second: 0,
        organisation: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn month_export_in_parts_opens_with_zipfile() {
    let moto = Moto::start();
    moto.create_bucket("rec");
    let store = moto.client("rec");
    // 300 recordings in November across three users and three classes, some either side of it.
    let users = [("alice", 365u32), ("bob", 200), ("carol", 30)];
    let mut audio_of: BTreeMap<String, (String, Vec<u8>)> = BTreeMap::new();
    let base: jiff::Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
    for n in 0..320u32 {
        let (user, class) = users[n as usize % 3];
        let offset = if n >= 300 {
            // October and December.
            if n % 2 == 0 {
                -3600 * 24
            } else {
                3600 * 24 * 31
            }
        } else {
            i64::from(n) * 8000
        };
        let start = base
            .checked_add(jiff::SignedDuration::from_secs(offset))
            .unwrap();
        let size = 1000 + (n as usize * 7919) % 7000;
        let audio: Vec<u8> = (0..size).map(|i| (i as u32 * 31 + n) as u8).collect();
        let r = Synthetic {
            class,
            namespace: "acme",
            id: Synthetic::id_at(start, n),
            user,
            start,
            seconds: 12.5,
            parties: ["sip:+31201234567@pbx.example", "sip:bob@example.com"],
            audio: audio.clone(),
        };
        r.put(store.as_ref(), "recordings").await;
        if n < 300 {
            audio_of.insert(r.id.clone(), (user.to_string(), audio));
        }
    }
    // An upload in progress (audio, no record yet) is not exported.
    store
        .put(
            &"recordings/r365/acme/2026/11/15/upload-in-progress.opus".into(),
            b"partial".to_vec().into(),
        )
        .await
        .unwrap();
    let catalog = Catalog::new(store.clone(), "recordings");

    let mut seen = Vec::new();
    let parts = export::run(&catalog, &request("nov", "2026-11"), |p| {
        seen.push(p.clone())
    })
    .await
    .unwrap();
    assert!(parts.len() >= 3, "split at {PART} bytes: {parts:?}");
    let last = seen.last().unwrap();
    assert_eq!((last.recordings_done, last.recordings_total), (300, 300));
    assert_eq!(
        last.bytes_done,
        audio_of.values().map(|(_, a)| a.len() as u64).sum::<u64>()
    );

    // Download and open every part with Python's zipfile.
    let work = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        assert!(p.size <= PART, "part {i} is {} bytes", p.size);
        let bytes = store
            .get(&p.key.as_str().into())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(bytes.len() as u64, p.size);
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), p.sha256);
        assert!(
            p.key
                .starts_with("recordings/exports/acme/nov/nov-2026-11-part-")
        );
        let path = work.path().join(format!("{i}.zip"));
        std::fs::write(&path, &bytes).unwrap();
        paths.push(path);
    }
    let out = Command::new("python3")
        .arg(workspace().join("tests/export/check_zip.py"))
        .arg("en")
        .args(&paths)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut ids = BTreeSet::new();
    let mut files = BTreeSet::new();
    for (i, part) in report.iter().enumerate() {
        assert_eq!(part["crc_ok"], true);
        assert_eq!(part["manifest_ok"], true, "{part}");
        assert_eq!(part["part"], i + 1);
        assert_eq!(part["parts"], parts.len());
        assert_eq!(part["csv_rows"], parts[i].recordings);
        for id in part["ids"].as_array().unwrap() {
            assert!(ids.insert(id.as_str().unwrap().to_string()), "{id} twice");
        }
        for (name, f) in part["files"].as_object().unwrap() {
            if name.starts_with("manifest.") {
                continue;
            }
            files.insert(name.clone());
            let id = name.rsplit('_').next().unwrap().trim_end_matches(".opus");
            let (user, audio) = &audio_of[id];
            assert!(name.starts_with(&format!("{user}/2026-11-")), "{name}");
            assert_eq!(f["size"], audio.len());
            assert_eq!(
                f["sha256"],
                hex::encode(sha2::Sha256::digest(audio)),
                "{name}: byte for byte"
            );
        }
    }
    assert_eq!(
        ids,
        audio_of.keys().cloned().collect::<BTreeSet<_>>(),
        "exactly the month's recordings"
    );
    let listing: BTreeSet<String> = report.last().unwrap()["all_parts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["files"].as_array().unwrap().clone())
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert_eq!(listing, files, "the last manifest lists every part's files");

    // A rerun (a restarted Job) writes the same keys and leaves one set.
    let again = export::run(&catalog, &request("nov", "2026-11"), |_| {})
        .await
        .unwrap();
    assert_eq!(
        again
            .iter()
            .map(|p| (&p.key, &p.sha256))
            .collect::<Vec<_>>(),
        parts
            .iter()
            .map(|p| (&p.key, &p.sha256))
            .collect::<Vec<_>>()
    );
    let mut listed = Vec::new();
    let mut l = store.list(Some(&"recordings/exports/acme/nov".into()));
    while let Some(m) = futures::StreamExt::next(&mut l).await {
        listed.push(m.unwrap().location.to_string());
    }
    assert_eq!(listed.len(), parts.len());

    // The gate (180 days) leaves carol's 30-day recordings out; a user filter selects.
    let gated = export::run(
        &catalog,
        &Request {
            min_retention_days: 180,
            ..request("gated", "2026-11")
        },
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(gated.iter().map(|p| p.recordings).sum::<usize>(), 200);
    let bob = export::run(
        &catalog,
        &Request {
            users: Some(vec!["bob".into()]),
            ..request("bob", "2026-11")
        },
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(bob.iter().map(|p| p.recordings).sum::<usize>(), 100);

    // An empty month: no archive at all, not a broken one.
    let empty = export::run(&catalog, &request("jan", "2025-01"), |_| {})
        .await
        .unwrap();
    assert!(empty.is_empty());

    // Removing an export deletes its archives.
    assert_eq!(
        export::remove(&catalog, "acme", "nov").await.unwrap(),
        parts.len()
    );
}
