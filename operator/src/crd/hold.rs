//! RecordingHold: recordings kept from deletion until the hold is deleted.

use super::*;

/// Keeps recordings from deletion (retention and erasure) until the hold is deleted.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, PartialEq, KubeSchema)]
#[kube(
    group = "opname.dev",
    version = "v1alpha1",
    kind = "RecordingHold",
    namespaced,
    status = "RecordingHoldStatus",
    shortname = "rhold",
    category = "opname",
    doc = "A legal hold: matching recordings are copied out of their retention class and survive until the hold is deleted.",
    printcolumn(name = "Held", type_ = "integer", json_path = ".status.held"),
    printcolumn(name = "Reason", type_ = "string", json_path = ".spec.reason"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.recordingIds) || has(self.users) || has(self.from) || has(self.to)").message("a hold needs at least one of recordingIds, users, from, to"))]
#[x_kube(validation = Rule::new("!has(self.from) || !has(self.to) || timestamp(self.from) < timestamp(self.to)").message("from must be before to"))]
#[serde(rename_all = "camelCase")]
pub struct RecordingHoldSpec {
    /// Why the recordings are held (case number, request); shown in Events and audit records.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// Only these recordings (ids as in the records and the recordings list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 10000))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub recording_ids: Option<Vec<String>>,
    /// Only recordings of these users (as in `RecordingPolicy.spec.user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1000))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub users: Option<Vec<String>>,
    /// Only recordings that started at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Time>,
    /// Only recordings that started before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Time>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingHoldStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Recordings this hold keeps.
    #[serde(default)]
    pub held: i64,
    /// When the store was last scanned for matching recordings (new ones are held as they come).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scan: Option<Time>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
