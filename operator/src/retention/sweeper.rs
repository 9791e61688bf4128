//! Retention for stores without lifecycle rules (the local directory store, or with
//! `retention.lifecycle: false`): list each retention class and delete what has outlived it.
//!
//! Listing streams (memory stays bounded whatever the archive's size), deletions are paced, and
//! a run is idempotent, so a restarted operator simply sweeps again. A recording's audio is
//! deleted before its record, so a record never outlives its audio; every run that deleted
//! something leaves an audit object (who, what, when) under `{prefix}/audit/`.

use std::time::Duration;

use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use opname_model::audit::Audit;
use opname_model::layout::{self, Layout, Object};

use crate::retention::rules;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Store(#[from] object_store::Error),
}

#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct SweepReport {
    pub deleted: Vec<String>,
    pub bytes: u64,
}

/// One pass over every retention class under `prefix`, and over the export archives kept
/// `archive_days` (0: kept until their BulkExport is deleted), deleting at most `per_second`
/// objects a second.
pub async fn sweep(
    store: &dyn ObjectStore,
    prefix: &str,
    now: jiff::Timestamp,
    per_second: u32,
    archive_days: u32,
) -> Result<SweepReport, SweepError> {
    let layout = Layout::new(prefix);
    let classes = store.list_with_delimiter(Some(&layout.root())).await?;
    let pause = Duration::from_secs(1) / per_second.max(1);
    let mut report = SweepReport::default();
    for class in classes
        .common_prefixes
        .iter()
        .filter(|p| p.filename().and_then(Layout::class_of_dir).is_some())
    {
        let mut listing = store.list(Some(class));
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            let key = meta.location.to_string();
            let created = jiff::Timestamp::from_millisecond(meta.last_modified.timestamp_millis())
                .unwrap_or(now);
            let Some((stem, object)) = layout::split_object(&key) else {
                continue;
            };
            let (audio, record) = (layout::audio_of(stem), layout::record_of(stem));
            let mut objects = vec![(key.clone(), created)];
            if object == Object::Record {
                if let Ok(a) = store.head(&audio).await {
                    objects.push((
                        audio.to_string(),
                        jiff::Timestamp::from_millisecond(a.last_modified.timestamp_millis())
                            .unwrap_or(now),
                    ));
                }
            } else if store.head(&record).await.is_ok() || store.head(&meta.location).await.is_err()
            {
                // The record's turn deletes both, audio first (or already did: the listing is
                // older than the deletion).
                continue;
            }
            let sizes: u64 = meta.size;
            let planned = rules::sweep_recording(&layout, &objects, now);
            for k in &planned {
                opname_model::store::delete(store, &Path::from(k.as_str())).await?;
                report.deleted.push(k.clone());
                tokio::time::sleep(pause).await;
            }
            if !planned.is_empty() {
                report.bytes += sizes;
            }
        }
    }
    if archive_days > 0 {
        let mut listing = store.list(Some(&layout.exports()));
        while let Some(meta) = listing.next().await {
            let meta = meta?;
            let created = jiff::Timestamp::from_millisecond(meta.last_modified.timestamp_millis())
                .unwrap_or(now);
            if rules::expired(created, archive_days, now) {
                opname_model::store::delete(store, &meta.location).await?;
                report.deleted.push(meta.location.to_string());
                report.bytes += meta.size;
                tokio::time::sleep(pause).await;
            }
        }
    }
    // Segments of recordings in progress outlive them only as leftovers.
    let mut listing = store.list(Some(&Path::from(
        layout.segments_prefix().trim_end_matches('/'),
    )));
    while let Some(meta) = listing.next().await {
        let meta = meta?;
        let created =
            jiff::Timestamp::from_millisecond(meta.last_modified.timestamp_millis()).unwrap_or(now);
        if rules::expired(created, rules::SEGMENT_DAYS, now) {
            opname_model::store::delete(store, &meta.location).await?;
            report.deleted.push(meta.location.to_string());
            report.bytes += meta.size;
            tokio::time::sleep(pause).await;
        }
    }
    if !report.deleted.is_empty() {
        let audit = Audit {
            deleted: report.deleted.clone(),
            ..Audit::new(
                "opname-operator retention sweeper",
                "deleted: retention period over",
                now,
            )
        };
        audit.write(store, &layout, "sweeper").await?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::catalog::Catalog;
    use object_store::PutPayload;
    use object_store::memory::InMemory;
    use std::collections::BTreeSet;
    use std::sync::Arc;

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
        /// With random recordings, classes, holds and clock: the sweeper never deletes what is
        /// unexpired or held, and deletes everything expired and unheld.
        #[test]
        fn never_unexpired_or_held_always_expired_and_unheld(
            recordings in proptest::collection::vec(
                (proptest::sample::select(vec![1u32, 7, 30, 365]), proptest::bool::ANY), 1..12),
            days_later in 0i64..400,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            rt.block_on(async {
                let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
                let catalog = Catalog::new(store.clone(), "rec");
                for (i, (class, _)) in recordings.iter().enumerate() {
                    let keys = Layout::new("rec").recording(*class, "acme", jiff::civil::date(2026, 1, 1), &format!("id{i}"));
                    for key in [keys.audio, keys.record] {
                        store.put(&key, PutPayload::from_static(b"x")).await.unwrap();
                    }
                }
                for entry in catalog.list("acme", "").await.unwrap() {
                    let i: usize = entry.id.trim_start_matches("id").parse().unwrap();
                    if recordings[i].1 {
                        crate::archive::hold::copy_in(&catalog, "acme", "case", &entry).await.unwrap();
                    }
                }
                // Objects were created a moment ago; the sweep runs `days_later` days on.
                let now = jiff::Timestamp::now()
                    .checked_add(jiff::SignedDuration::from_hours(24 * days_later))
                    .unwrap();
                sweep(store.as_ref(), "rec", now, 1_000_000, 0).await.unwrap();
                let left: BTreeSet<String> = catalog.list("acme", "").await.unwrap()
                    .into_iter().map(|e| e.id).collect();
                for (i, (class, held)) in recordings.iter().enumerate() {
                    let id = format!("id{i}");
                    let expired = days_later > i64::from(*class);
                    let unexpired = days_later < i64::from(*class);
                    if *held || unexpired {
                        assert!(left.contains(&id), "{id} (r{class}, held {held}) deleted at +{days_later}d");
                    }
                    if expired && !*held {
                        assert!(!left.contains(&id), "{id} (r{class}) kept at +{days_later}d");
                    }
                }
            });
        }
    }

    /// Without lifecycle rules, leftover segments of recordings in progress go after 2 days,
    /// and not before.
    #[tokio::test]
    async fn leftover_segments_expire_after_two_days() {
        let store = InMemory::new();
        let layout = Layout::new("rec");
        let segment = layout.segment("acme", "lost", 0);
        store
            .put(&segment, PutPayload::from_static(b"OggS"))
            .await
            .unwrap();
        let at = |days: i64| {
            jiff::Timestamp::now()
                .checked_add(jiff::SignedDuration::from_hours(24 * days))
                .unwrap()
        };
        let first = sweep(&store, "rec", at(1), 1_000_000, 0).await.unwrap();
        assert!(first.deleted.is_empty(), "{:?}", first.deleted);
        let later = sweep(&store, "rec", at(3), 1_000_000, 0).await.unwrap();
        assert_eq!(later.deleted, [segment.to_string()]);
        assert!(store.head(&segment).await.is_err());
    }
}
