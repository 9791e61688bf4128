//! RecordingErasure: recordings deleted on request before their retention ends.

use super::*;

/// Deletes recordings now, before their retention ends (a data subject's erasure request).
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, PartialEq, KubeSchema)]
#[kube(
    group = "opname.dev",
    version = "v1alpha1",
    kind = "RecordingErasure",
    namespaced,
    status = "RecordingErasureStatus",
    shortname = "rerase",
    category = "opname",
    doc = "Erases all recordings of one identity, or the listed recordings, unless held; the status reports what was deleted.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Deleted",
        type_ = "integer",
        json_path = ".status.deletedCount"
    ),
    printcolumn(
        name = "Held",
        type_ = "integer",
        json_path = ".status.skippedHeldCount"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.identity) != has(self.recordingIds)").message("give either identity or recordingIds"))]
#[x_kube(validation = Rule::new("self == oldSelf").message("an erasure cannot be changed; create a new one"))]
#[serde(rename_all = "camelCase")]
pub struct RecordingErasureSpec {
    /// Erase every recording in which this identity took part: a user (as in
    /// `RecordingPolicy.spec.user`), a SIP URI or a number, compared in normalised form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub identity: Option<String>,
    /// Erase these recordings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 10000))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub recording_ids: Option<Vec<String>>,
    /// Why (request reference); recorded in the audit object and the Event.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub enum ErasurePhase {
    Running,
    Completed,
    Failed,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingErasureStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ErasurePhase>,
    #[serde(default)]
    pub deleted_count: i64,
    #[serde(default)]
    pub bytes_freed: i64,
    /// Erased recordings (the first 1000; the audit object lists all).
    #[serde(default)]
    pub deleted: Vec<String>,
    #[serde(default)]
    pub skipped_held_count: i64,
    /// Matching recordings kept because a hold covers them.
    #[serde(default)]
    pub skipped_held: Vec<String>,
    /// The audit object in the store that lists everything deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
