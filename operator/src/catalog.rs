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
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Store(#[from] object_store::Error),
    #[error("record {0}: {1}")]
    Record(String, serde_json::Error),
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

impl Entry {
    /// `yyyy/mm/dd` of the recording (the directory above its objects).
    pub fn day(&self) -> String {
        let parts: Vec<&str> = self.record.as_ref().split('/').collect();
        let n = parts.len();
        if n < 4 {
            return String::new();
        }
        parts[n - 4..n - 1].join("/")
    }
}

/// The fields of a recording's JSON record that listing, matching and export read.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Summary {
    pub id: String,
    pub namespace: String,
    pub user: String,
    pub matched_identity: String,
    pub participants: Vec<Participant>,
    pub start: Option<jiff::Timestamp>,
    pub end: Option<jiff::Timestamp>,
    pub duration_seconds: f64,
    pub complete: bool,
    pub retention_days: u32,
    pub retain_until: Option<jiff::Timestamp>,
    pub audio: AudioSummary,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Participant {
    pub aor: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AudioSummary {
    pub size: u64,
    pub sha256: String,
}

impl Summary {
    pub fn parse(key: &str, bytes: &[u8]) -> Result<Self, CatalogError> {
        serde_json::from_slice(bytes).map_err(|e| CatalogError::Record(key.to_string(), e))
    }
}

#[derive(Clone, Debug)]
pub struct Catalog {
    store: Arc<dyn ObjectStore>,
    root: String,
}

impl Catalog {
    pub fn new(store: Arc<dyn ObjectStore>, prefix: &str) -> Self {
        Self {
            store,
            root: prefix.trim_matches('/').to_string(),
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// `{prefix}/{rest}` (or `rest` without a prefix).
    pub fn key(&self, rest: &str) -> String {
        under(&self.root, rest)
    }

    async fn dirs(&self, under: &str) -> Result<Vec<String>, CatalogError> {
        let listed = self
            .store
            .list_with_delimiter(Some(&Path::from(under)))
            .await?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }

    /// The retention classes present in the store.
    pub async fn classes(&self) -> Result<Vec<u32>, CatalogError> {
        Ok(self
            .dirs(&self.root)
            .await?
            .iter()
            .filter_map(|d| d.strip_prefix('r')?.parse().ok())
            .collect())
    }

    /// The holds that keep copies in a namespace.
    pub async fn holds(&self, ns: &str) -> Result<Vec<String>, CatalogError> {
        self.dirs(&self.key(&format!("held/{ns}"))).await
    }

    /// Where hold `hold` keeps its copy of a recording stored at `key`.
    pub fn held_key(&self, ns: &str, hold: &str, day: &str, file: &str) -> Path {
        Path::from(self.key(&format!("held/{ns}/{hold}/{day}/{file}")))
    }

    /// A namespace's recordings whose date starts with `period` (`""`, `yyyy`, `yyyy/mm` or
    /// `yyyy/mm/dd`) in every class and hold: complete pairs only, one entry per id, in id order.
    pub async fn list(&self, ns: &str, period: &str) -> Result<Vec<Entry>, CatalogError> {
        let sub = |base: String| {
            if period.is_empty() {
                base
            } else {
                format!("{base}/{period}")
            }
        };
        let mut out: BTreeMap<String, Entry> = BTreeMap::new();
        for class in self.classes().await? {
            let under = sub(self.key(&format!("r{class}/{ns}")));
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
            let under = sub(self.key(&format!("held/{ns}/{hold}")));
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
    async fn pairs(&self, under: &str) -> Result<Vec<Entry>, CatalogError> {
        let mut audio: BTreeMap<String, (Path, u64)> = BTreeMap::new();
        let mut records: BTreeMap<String, Path> = BTreeMap::new();
        let mut listing = self.store.list(Some(&Path::from(under)));
        while let Some(meta) = listing.try_next().await? {
            let key = meta.location.to_string();
            if let Some(stem) = key.strip_suffix(".opus") {
                audio.insert(stem.to_string(), (meta.location, meta.size));
            } else if let Some(stem) = key.strip_suffix(".json") {
                records.insert(stem.to_string(), meta.location);
            }
        }
        Ok(records
            .into_iter()
            .filter_map(|(stem, record)| {
                let (audio, audio_size) = audio.remove(&stem)?;
                let id = stem.rsplit('/').next()?.to_string();
                Some(Entry {
                    id,
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
            .pairs(&self.key(&format!("held/{ns}/{hold}")))
            .await?
            .len())
    }

    pub async fn summary(&self, entry: &Entry) -> Result<Summary, CatalogError> {
        let bytes = self.store.get(&entry.record).await?.bytes().await?;
        Summary::parse(entry.record.as_ref(), &bytes)
    }

    /// Writes an audit object (who, what, when) for deletions opname makes itself.
    pub async fn audit(
        &self,
        now: jiff::Timestamp,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<Path, CatalogError> {
        Ok(write_audit(self.store.as_ref(), &self.root, now, name, body).await?)
    }
}

/// `{prefix}/{rest}` (or `rest` without a prefix).
pub fn under(prefix: &str, rest: &str) -> String {
    let root = prefix.trim_matches('/');
    if root.is_empty() {
        rest.to_string()
    } else {
        format!("{root}/{rest}")
    }
}

/// Writes `{prefix}/audit/yyyy/mm/dd/{millis}-{name}.json`.
pub async fn write_audit(
    store: &dyn ObjectStore,
    prefix: &str,
    now: jiff::Timestamp,
    name: &str,
    body: &serde_json::Value,
) -> Result<Path, object_store::Error> {
    let day = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    let key = Path::from(under(
        prefix,
        &format!(
            "audit/{:04}/{:02}/{:02}/{}-{name}.json",
            day.year(),
            day.month(),
            day.day(),
            now.as_millisecond()
        ),
    ));
    store
        .put(&key, body.to_string().into_bytes().into())
        .await?;
    Ok(key)
}

/// Deletes an object; one already gone counts as deleted.
pub async fn delete(store: &dyn ObjectStore, key: &Path) -> Result<(), object_store::Error> {
    match store.delete(key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
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
        assert_eq!(month[0].day(), "2026/11/01");
        assert_eq!(month[2].class, None, "only the held copy is left");
        assert_eq!(catalog.list("acme", "").await.unwrap().len(), 4);
    }
}
