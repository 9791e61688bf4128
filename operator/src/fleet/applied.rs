//! What the operator last applied to each child of the fleet, so that a plan writes only the
//! objects it changes: in a namespace of 20,000 policies, a change to one policy rewrites its
//! shard and its status, not the other shards, the Deployment, the Services and the rest.
//!
//! An entry is the hash of the applied object and the resourceVersion the API server answered.
//! A watch event carrying that version is the echo of the operator's own write; any other
//! (someone edited or deleted the child, or the object's status moved) forgets the entry, so the
//! next plan applies the child again.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

/// Kind, namespace, name.
type Key = (String, String, String);

#[derive(Default)]
pub struct Applied {
    entries: Mutex<HashMap<Key, (u64, String)>>,
}

/// A hash of the object as it would be applied (stable within the process).
pub fn fingerprint<T: serde::Serialize>(obj: &T) -> u64 {
    let mut h = DefaultHasher::new();
    serde_json::to_vec(obj).unwrap_or_default().hash(&mut h);
    h.finish()
}

/// The fingerprint that stands for "not there".
const ABSENT: u64 = 0;

fn key(kind: &str, namespace: &str, name: &str) -> Key {
    (kind.to_string(), namespace.to_string(), name.to_string())
}

impl Applied {
    /// Whether `fingerprint` is what was last applied to the child and nobody changed it since.
    pub fn unchanged(&self, kind: &str, namespace: &str, name: &str, fingerprint: u64) -> bool {
        self.entries.lock().is_ok_and(|m| {
            m.get(&key(kind, namespace, name))
                .is_some_and(|(f, _)| *f == fingerprint)
        })
    }

    /// The child was applied as `fingerprint` and now has `version`.
    pub fn record(&self, kind: &str, namespace: &str, name: &str, fingerprint: u64, version: &str) {
        if let Ok(mut m) = self.entries.lock() {
            m.insert(
                key(kind, namespace, name),
                (fingerprint, version.to_string()),
            );
        }
    }

    /// A watch event of the child at `version`: `true` if it is the echo of the operator's own
    /// last write; otherwise the entry is forgotten and `false` says the namespace needs a plan.
    pub fn observed(&self, kind: &str, namespace: &str, name: &str, version: Option<&str>) -> bool {
        let Ok(mut m) = self.entries.lock() else {
            return false;
        };
        let k = key(kind, namespace, name);
        if m.get(&k).is_some_and(|(_, v)| Some(v.as_str()) == version) {
            return true;
        }
        m.remove(&k);
        false
    }

    /// The child is known to be absent (deleted, or was never there): deleting it again is a
    /// write for nothing. A watch event of it (someone created it) forgets this.
    pub fn record_absent(&self, kind: &str, namespace: &str, name: &str) {
        self.record(kind, namespace, name, ABSENT, "");
    }

    pub fn absent(&self, kind: &str, namespace: &str, name: &str) -> bool {
        self.unchanged(kind, namespace, name, ABSENT)
    }

    /// The object is gone or its entry no longer holds.
    pub fn forget(&self, kind: &str, namespace: &str, name: &str) {
        if let Ok(mut m) = self.entries.lock() {
            m.remove(&key(kind, namespace, name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_changed_or_foreign_touched_child_is_applied_again() {
        let applied = Applied::default();
        let (a, b) = (fingerprint(&"data: 1"), fingerprint(&"data: 2"));
        assert_ne!(a, b);
        assert!(
            !applied.unchanged("ConfigMap", "acme", "s0", a),
            "never applied"
        );
        applied.record("ConfigMap", "acme", "s0", a, "17");
        assert!(applied.unchanged("ConfigMap", "acme", "s0", a));
        assert!(
            !applied.unchanged("ConfigMap", "acme", "s0", b),
            "new content"
        );
        assert!(
            !applied.unchanged("ConfigMap", "other", "s0", a),
            "other namespace"
        );
        assert!(
            applied.observed("ConfigMap", "acme", "s0", Some("17")),
            "the echo of the operator's own write"
        );
        assert!(applied.unchanged("ConfigMap", "acme", "s0", a));
        assert!(
            !applied.observed("ConfigMap", "acme", "s0", Some("18")),
            "someone else wrote it"
        );
        assert!(
            !applied.unchanged("ConfigMap", "acme", "s0", a),
            "so it is applied again"
        );
        applied.record("ConfigMap", "acme", "s0", a, "19");
        applied.forget("ConfigMap", "acme", "s0");
        assert!(!applied.unchanged("ConfigMap", "acme", "s0", a));
        // Deleted once, not again, until someone makes it.
        assert!(!applied.absent("HorizontalPodAutoscaler", "acme", "r"));
        applied.record_absent("HorizontalPodAutoscaler", "acme", "r");
        assert!(applied.absent("HorizontalPodAutoscaler", "acme", "r"));
        assert!(!applied.observed("HorizontalPodAutoscaler", "acme", "r", Some("30")));
        assert!(!applied.absent("HorizontalPodAutoscaler", "acme", "r"));
    }
}
