//! Per-day listing indexes: `{prefix}/index/{ns}/{yyyy}/{mm}/{dd}.json` holds what the call list
//! shows of every recording of that day, so the first page of a day with thousands of
//! recordings costs one GET instead of one GET per recording.
//!
//! An index is rebuilt from the store (one listing of the day in every class and hold, then only
//! the records it does not know yet), never trusted for existence: entries past their retention
//! are hidden unless held, and erasures and hold changes drop the namespace's indexes
//! ([`invalidate`]). The recordings service serves an index while it refreshes it in the
//! background and keeps recent days warm, so new recordings appear within a refresh interval.

use std::collections::HashMap;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;
use opname_model::layout::day_path;
use serde::{Deserialize, Serialize};

use crate::archive::catalog::{Catalog, CatalogError};

/// What the call list needs of one recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    pub id: String,
    pub user: String,
    pub start: Option<jiff::Timestamp>,
    pub duration_seconds: f64,
    /// Participants' AoRs, the caller first.
    pub parties: Vec<String>,
    /// The participant that is not the user's own device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other: Option<String>,
    /// Whether the user placed the call (`None`: the user's device is not listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<bool>,
    /// How callers were told the call is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<opname_model::policy::Notice>,
    pub complete: bool,
    pub size: u64,
    pub retention_days: u32,
    pub retain_until: Option<jiff::Timestamp>,
    pub record: String,
    pub audio: String,
    /// A held copy of the audio, which outlives the original's retention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_audio: Option<String>,
}

impl IndexEntry {
    /// Listed while within retention, or while a hold keeps it.
    pub fn visible(&self, now: jiff::Timestamp) -> bool {
        self.held_audio.is_some() || self.retain_until.is_none_or(|t| t > now)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DayIndex {
    /// [`SCHEMA`] when built; an index of an older schema is rebuilt from the records.
    #[serde(default)]
    pub schema: u32,
    pub built: Option<jiff::Timestamp>,
    /// In id (= start time) order.
    pub entries: Vec<IndexEntry>,
}

/// The entries' current form (1: `other` and `outbound`; 2: `notice`).
pub const SCHEMA: u32 = 2;

fn key(catalog: &Catalog, ns: &str, day: jiff::civil::Date) -> Path {
    catalog.layout().index(ns, day)
}

/// The stored index of a day, if one was built.
pub async fn load(
    catalog: &Catalog,
    ns: &str,
    day: jiff::civil::Date,
) -> Result<Option<DayIndex>, CatalogError> {
    let key = key(catalog, ns, day);
    match catalog.store().get(&key).await {
        Ok(got) => {
            let bytes = got.bytes().await?;
            // A damaged index is rebuilt, not an error.
            Ok(serde_json::from_slice(&bytes).ok())
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Rebuilds a day's index from the store, reading only the records `previous` lacks, and
/// stores it unless the day is empty.
pub async fn build(
    catalog: &Catalog,
    ns: &str,
    day: jiff::civil::Date,
    previous: Option<&DayIndex>,
) -> Result<DayIndex, CatalogError> {
    let known: HashMap<&str, &IndexEntry> = previous
        .filter(|p| p.schema == SCHEMA)
        .map(|p| p.entries.iter().map(|e| (e.id.as_str(), e)).collect())
        .unwrap_or_default();
    let found = catalog.list(ns, &day_path(day)).await?;
    let entries: Vec<IndexEntry> = futures::stream::iter(found)
        .map(|e| {
            let old = known.get(e.id.as_str()).map(|k| (*k).clone());
            async move {
                let held_audio = e.held_by.first().map(|hold| {
                    catalog
                        .layout()
                        .held_copy(ns, hold, &e.audio)
                        .map_or_else(String::new, |k| k.to_string())
                });
                if let Some(old) = old {
                    return Ok(IndexEntry { held_audio, ..old });
                }
                let s = catalog.record(&e).await?;
                Ok::<_, CatalogError>(IndexEntry {
                    id: e.id.clone(),
                    parties: s.parties(),
                    other: s.other_party(),
                    outbound: s.outbound(),
                    notice: s.notice.clone(),
                    user: s.user,
                    start: Some(s.start),
                    duration_seconds: s.duration_seconds,
                    complete: s.complete,
                    size: e.audio_size,
                    retention_days: s.retention_days,
                    retain_until: Some(s.retain_until),
                    record: e.record.to_string(),
                    audio: e.audio.to_string(),
                    held_audio,
                })
            }
        })
        .buffered(32)
        .try_collect()
        .await?;
    let index = DayIndex {
        schema: SCHEMA,
        built: Some(jiff::Timestamp::now()),
        entries,
    };
    let key = key(catalog, ns, day);
    if index.entries.is_empty() {
        // An empty day costs a listing, never an object: a viewer walking empty or crafted days
        // writes nothing, and a day emptied by erasure or expiry loses its stale index.
        if previous.is_some_and(|p| !p.entries.is_empty()) {
            match catalog.store().delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(index);
    }
    let body = serde_json::to_vec(&index)?;
    catalog.store().put(&key, body.into()).await?;
    Ok(index)
}

/// Namespaces with recordings in any class (the service keeps their recent days warm).
pub async fn namespaces(catalog: &Catalog) -> Result<Vec<String>, CatalogError> {
    let mut out = Vec::new();
    for class in catalog.classes().await? {
        out.extend(catalog.namespaces_in(class).await?);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Drops a namespace's indexes after recordings were erased, held or released; the next listing
/// rebuilds them from the store.
pub async fn invalidate(catalog: &Catalog, ns: &str) {
    let under = catalog.layout().index_namespace(ns);
    let store = catalog.store();
    let result: Result<(), object_store::Error> = async {
        let keys: Vec<Path> = store
            .list(Some(&under))
            .map_ok(|m| m.location)
            .try_collect()
            .await?;
        for k in &keys {
            opname_model::store::delete(store.as_ref(), k).await?;
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(namespace = ns, error = %e, "cannot drop listing indexes; they show stale entries until rebuilt");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use std::sync::Arc;

    async fn put_recording(store: &InMemory, class: u32, id: &str, user: &str) {
        let keys = opname_model::layout::Layout::new("rec").recording(
            class,
            "acme",
            jiff::civil::date(2026, 11, 2),
            id,
        );
        store
            .put(&keys.audio, b"ogg".to_vec().into())
            .await
            .unwrap();
        let mut record = crate::archive::catalog::fixtures::record(
            user,
            "2026-11-02T10:00:00Z",
            &["sip:a@x", "sip:b@x"],
        );
        record.id = id.into();
        record.duration_seconds = 3.0;
        record.retention_days = class;
        record.retain_until = "2030-01-01T00:00:00Z".parse().unwrap();
        store
            .put(&keys.record, record.to_json().into())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn builds_stores_reuses_and_is_dropped_by_invalidate() {
        let mem = Arc::new(InMemory::new());
        put_recording(&mem, 30, "a", "alice").await;
        put_recording(&mem, 365, "b", "bob").await;
        let catalog = Catalog::new(mem.clone(), "rec");
        let day = jiff::civil::date(2026, 11, 2);
        assert_eq!(load(&catalog, "acme", day).await.unwrap(), None);
        let first = build(&catalog, "acme", day, None).await.unwrap();
        assert_eq!(first.entries.len(), 2);
        assert_eq!(first.entries[1].user, "bob");
        assert_eq!(first.entries[0].parties, ["sip:a@x", "sip:b@x"]);
        assert_eq!(
            load(&catalog, "acme", day).await.unwrap(),
            Some(first.clone())
        );
        // A record the index already knows is not read again: its (changed) content is ignored.
        put_recording(&mem, 30, "a", "someone-else").await;
        put_recording(&mem, 30, "c", "carol").await;
        let second = build(&catalog, "acme", day, Some(&first)).await.unwrap();
        let users: Vec<&str> = second.entries.iter().map(|e| e.user.as_str()).collect();
        assert_eq!(users, ["alice", "bob", "carol"]);
        assert_eq!(namespaces(&catalog).await.unwrap(), ["acme"]);
        invalidate(&catalog, "acme").await;
        assert_eq!(load(&catalog, "acme", day).await.unwrap(), None);
    }

    #[tokio::test]
    async fn empty_days_write_nothing_and_old_schemas_are_rebuilt() {
        let mem = Arc::new(InMemory::new());
        let catalog = Catalog::new(mem.clone(), "rec");
        let day = jiff::civil::date(2026, 11, 2);
        let empty = build(&catalog, "acme", day, None).await.unwrap();
        assert!(empty.entries.is_empty());
        assert_eq!(
            load(&catalog, "acme", day).await.unwrap(),
            None,
            "nothing written"
        );
        put_recording(&mem, 30, "a", "alice").await;
        let one = build(&catalog, "acme", day, None).await.unwrap();
        assert!(load(&catalog, "acme", day).await.unwrap().is_some());
        // An index of an older schema is not trusted for what it knows.
        let mut old = one.clone();
        old.schema = 0;
        old.entries[0].user = "stale".into();
        let rebuilt = build(&catalog, "acme", day, Some(&old)).await.unwrap();
        assert_eq!(rebuilt.entries[0].user, "alice");
        // The day emptied (erasure, expiry): its stored index goes.
        let keys = opname_model::layout::Layout::new("rec").recording(30, "acme", day, "a");
        mem.delete(&keys.audio).await.unwrap();
        mem.delete(&keys.record).await.unwrap();
        build(&catalog, "acme", day, Some(&rebuilt)).await.unwrap();
        assert_eq!(load(&catalog, "acme", day).await.unwrap(), None);
    }

    #[test]
    fn expired_entries_are_hidden_unless_held() {
        let now: jiff::Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let mut e = IndexEntry {
            id: "a".into(),
            user: "u".into(),
            start: None,
            duration_seconds: 1.0,
            parties: vec![],
            complete: true,
            other: None,
            outbound: None,
            notice: None,
            size: 1,
            retention_days: 1,
            retain_until: Some("2026-11-03T00:00:00Z".parse().unwrap()),
            record: String::new(),
            audio: String::new(),
            held_audio: None,
        };
        assert!(!e.visible(now));
        e.held_audio = Some("rec/held/acme/case/2026/11/02/a.opus".into());
        assert!(e.visible(now));
    }
}
