//! The audit object opname writes for every deletion or release it makes itself (sweeper,
//! erasure, hold release), stored under the layout's `audit/` prefix.

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use crate::layout::Layout;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Audit {
    /// The opname component that acted.
    pub who: String,
    /// The resource that asked for it (`RecordingErasure ns/name (uid …)`), when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
    pub what: String,
    /// The reason the requesting resource gave.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The hold released (`ns/name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold: Option<String>,
    pub when: jiff::Timestamp,
    /// Recording ids affected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recordings: Vec<String>,
    /// Object keys deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<String>,
    /// Recordings left alone because a hold keeps them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped_held: Vec<String>,
}

impl Audit {
    pub fn new(who: &str, what: &str, when: jiff::Timestamp) -> Self {
        Self {
            who: who.to_string(),
            requested_by: None,
            what: what.to_string(),
            reason: None,
            hold: None,
            when,
            recordings: Vec::new(),
            deleted: Vec::new(),
            skipped_held: Vec::new(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Strings and lists of strings only: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Stores it where the layout puts audit objects, stamped with its own time.
    pub async fn write(
        &self,
        store: &dyn ObjectStore,
        layout: &Layout,
        name: &str,
    ) -> Result<Path, object_store::Error> {
        let key = layout.audit(self.when, name);
        store.put(&key, self.to_json().into()).await?;
        Ok(key)
    }
}

/// Who heard or read which recording, stored beside its record (`Layout::access`) so it expires
/// with the recording's retention class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Access {
    pub who: String,
    pub groups: Vec<String>,
    /// `play`, `download` or `record` (the JSON record read).
    pub action: String,
    pub namespace: String,
    pub recording: String,
    pub when: jiff::Timestamp,
    /// The client: the connection's peer, or what a trusted proxy said it forwarded for.
    pub from: String,
    /// The connection's peer itself.
    pub peer: String,
    /// `X-Forwarded-For` as sent, believed only when `peer` is a trusted proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forwarded_for: Option<String>,
}

impl Access {
    pub fn to_json(&self) -> Vec<u8> {
        // Strings only: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}
