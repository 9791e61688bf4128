//! Finding recordings in the store by reading the recorder's key layout back (docs/storage.md):
//! `{prefix}/r{days}/{ns}/{yyyy}/{mm}/{dd}/{id}.opus|.json` per retention class, and held copies
//! under `{prefix}/held/{ns}/{hold}/{yyyy}/{mm}/{dd}/{id}.…` (outside every class prefix, so no
//! lifecycle rule and no sweep reaches them).
//!
//! Holds, erasure, export and the recordings service all list through here, so a recording is
//! found the same way everywhere: by its pair of objects, deduplicated by id, in id (= start
//! time) order.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use opname_model::audit::Audit;
use opname_model::layout::{self, Layout, Object};
use opname_model::record::{Record, RecordError};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Store(#[from] object_store::Error),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("listing index: {0}")]
    Index(#[from] serde_json::Error),
}

/// One recording as found in the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub id: String,
    /// The retention class it was written to; `None` when only held copies remain.
    pub class: Option<u32>,
    pub record: Path,
    pub audio: Path,
    pub audio_size: u64,
    /// Holds that keep a copy of it.
    pub held_by: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Catalog {
    store: Arc<dyn ObjectStore>,
    layout: Layout,
}

impl Catalog {
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        Self {
            store,
            layout: Layout::new(prefix),
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    async fn dirs(&self, under: &Path) -> Result<Vec<String>, CatalogError> {
        let listed = self.store.list_with_delimiter(Some(under)).await?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }

    /// The retention classes present in the store.
    pub async fn classes(&self) -> Result<Vec<u32>, CatalogError> {
        Ok(self
            .dirs(&self.layout.root())
            .await?
            .iter()
            .filter_map(|d| Layout::class_of_dir(d))
            .collect())
    }

    /// The namespaces that have recordings in one class.
    pub async fn namespaces_in(&self, class: u32) -> Result<Vec<String>, CatalogError> {
        self.dirs(&self.layout.class_dir(class)).await
    }

    /// The holds that keep copies in a namespace.
    pub async fn holds(&self, ns: &str) -> Result<Vec<String>, CatalogError> {
        self.dirs(&self.layout.held_namespace(ns)).await
    }

    /// A namespace's recordings whose date starts with `period` (`""`, `yyyy`, `yyyy/mm` or
    /// `yyyy/mm/dd`) in every class and hold: complete pairs only, one entry per id, in id order.
    pub async fn list(&self, ns: &str, period: &str) -> Result<Vec<Entry>, CatalogError> {
        let mut out: BTreeMap<String, Entry> = BTreeMap::new();
        for class in self.classes().await? {
            let under = self.layout.class_period(class, ns, period);
            for e in self.pairs(&under).await? {
                out.insert(
                    e.id.clone(),
                    Entry {
                        class: Some(class),
                        ..e
                    },
                );
            }
        }
        for hold in self.holds(ns).await? {
            let under = self.layout.held_period(ns, &hold, period);
            for e in self.pairs(&under).await? {
                out.entry(e.id.clone())
                    .or_insert(Entry { class: None, ..e })
                    .held_by
                    .push(hold.clone());
            }
        }
        Ok(out.into_values().collect())
    }

    /// The `.opus`/`.json` pairs under a prefix; a lone audio object is an upload in progress
    /// (the record is written last) and a lone record one whose audio is being deleted.
    async fn pairs(&self, under: &Path) -> Result<Vec<Entry>, CatalogError> {
        let mut audio: BTreeMap<String, (Path, u64)> = BTreeMap::new();
        let mut records: BTreeMap<String, Path> = BTreeMap::new();
        let mut listing = self.store.list(Some(under));
        while let Some(meta) = listing.try_next().await? {
            let key = meta.location.to_string();
            match layout::split_object(&key) {
                Some((stem, Object::Audio)) => {
                    audio.insert(stem.to_string(), (meta.location, meta.size));
                }
                Some((stem, Object::Record)) => {
                    records.insert(stem.to_string(), meta.location);
                }
                None => {}
            }
        }
        Ok(records
            .into_iter()
            .filter_map(|(stem, record)| {
                let (audio, audio_size) = audio.remove(&stem)?;
                Some(Entry {
                    id: layout::id_of_stem(&stem).to_string(),
                    class: None,
                    record,
                    audio,
                    audio_size,
                    held_by: Vec::new(),
                })
            })
            .collect())
    }

    /// How many recordings a hold keeps (complete pairs in its area).
    pub async fn held_count(&self, ns: &str, hold: &str) -> Result<usize, CatalogError> {
        Ok(self
            .pairs(&self.layout.held_period(ns, hold, ""))
            .await?
            .len())
    }

    /// The stored record of a recording.
    pub async fn record(&self, entry: &Entry) -> Result<Record, CatalogError> {
        let bytes = self.store.get(&entry.record).await?.bytes().await?;
        Ok(Record::parse(entry.record.as_ref(), &bytes)?)
    }

    /// Writes an audit object for deletions opname makes itself.
    pub async fn audit(&self, name: &str, audit: &Audit) -> Result<Path, CatalogError> {
        Ok(audit.write(self.store.as_ref(), &self.layout, name).await?)
    }
}

/// Records for the operator's unit tests: only what matching and listing read is set.
#[cfg(test)]
pub mod fixtures {
    use opname_model::record::Record;

    pub fn record(user: &str, start: &str, aors: &[&str]) -> Record {
        let participants: Vec<serde_json::Value> = aors
            .iter()
            .map(|a| serde_json::json!({ "aor": a }))
            .collect();
        let json = serde_json::json!({
            "schema": 1, "id": "x", "namespace": "acme", "user": user, "policy": user,
            "mode": "Always", "matchedIdentity": "", "participants": participants,
            "start": start, "end": start, "durationSeconds": 0.0,
            "audio": {"key": "k", "contentType": "audio/ogg", "size": 0, "sha256": "",
                      "sampleRate": 8000, "channels": 2},
            "retentionDays": 1, "retainUntil": start, "complete": true, "endReason": "bye",
            "recorder": "test",
        });
        Record::parse("fixture", json.to_string().as_bytes()).expect("fixture record")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::PutPayload;
    use object_store::memory::InMemory;

    async fn put(store: &InMemory, key: &str) {
        store
            .put(&Path::from(key), PutPayload::from_static(b"x"))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn lists_pairs_across_classes_and_holds_once_in_id_order() {
        let store = Arc::new(InMemory::new());
        for k in [
            "rec/r30/acme/2026/11/02/b.opus",
            "rec/r30/acme/2026/11/02/b.json",
            "rec/r7/acme/2026/11/01/a.opus",
            "rec/r7/acme/2026/11/01/a.json",
            // Upload in progress: no record yet.
            "rec/r7/acme/2026/11/03/c.opus",
            // Another month, another organisation.
            "rec/r7/acme/2026/10/31/z.opus",
            "rec/r7/acme/2026/10/31/z.json",
            "rec/r7/other/2026/11/01/o.opus",
            "rec/r7/other/2026/11/01/o.json",
            // Held copy of a, and of a recording whose original has expired.
            "rec/held/acme/case-1/2026/11/01/a.opus",
            "rec/held/acme/case-1/2026/11/01/a.json",
            "rec/held/acme/case-1/2026/11/05/d.opus",
            "rec/held/acme/case-1/2026/11/05/d.json",
            "rec/audit/2026/11/01/x.json",
        ] {
            put(&store, k).await;
        }
        let catalog = Catalog::new(store, "/rec/");
        let month = catalog.list("acme", "2026/11").await.unwrap();
        let ids: Vec<&str> = month.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "d"]);
        assert_eq!(month[0].class, Some(7));
        assert_eq!(month[0].held_by, ["case-1"]);
        assert_eq!(month[0].record.as_ref(), "rec/r7/acme/2026/11/01/a.json");
        assert_eq!(
            layout::day_of(&month[0].record).as_deref(),
            Some("2026/11/01")
        );
        assert_eq!(month[2].class, None, "only the held copy is left");
        assert_eq!(catalog.list("acme", "").await.unwrap().len(), 4);
    }
}
