//! The `opname.dev/v1alpha1` custom resources.
//!
//! Validation lives in the schema (patterns, bounds, list types, CEL rules) so the API server
//! refuses bad YAML with a clear message before the operator ever sees it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Recording mode of a user's calls.
#[derive(
    Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum Mode {
    /// Every call is recorded.
    #[default]
    Always,
    /// Every call is spooled; only calls where the user keys the keep code are kept.
    OnDemand,
}

/// On-demand settings.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnDemand {
    /// DTMF code the user keys during a call to keep it (digits, `*`, `#`).
    #[serde(default = "default_keep_code")]
    #[schemars(regex(pattern = r"^[0-9*#]{1,16}$"))]
    pub keep_code: String,
}

fn default_keep_code() -> String {
    "*44".into()
}

/// Turns recording on for one user, on every device the user has.
// Each `printcolumn(...)` repeats the same keys, which clippy mistakes for duplicate attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, PartialEq, KubeSchema)]
#[kube(
    group = "opname.dev",
    version = "v1alpha1",
    kind = "RecordingPolicy",
    namespaced,
    status = "RecordingPolicyStatus",
    shortname = "rpol",
    category = "opname",
    doc = "Records every call on all devices of one user. The namespace is the organisation.",
    printcolumn(name = "User", type_ = "string", json_path = ".spec.user"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(
        name = "Retention",
        type_ = "integer",
        json_path = ".spec.retentionDays",
        description = "days"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!has(self.onDemand) || self.mode == 'OnDemand'").message("onDemand settings are only allowed with mode OnDemand"))]
#[serde(rename_all = "camelCase")]
pub struct RecordingPolicySpec {
    /// The person whose calls are recorded (an e-mail address or directory id); recordings are
    /// filed under it.
    #[schemars(length(min = 1, max = 253))]
    pub user: String,
    /// Every device of the user: `sip:`/`sips:` URIs, `tel:` numbers, extensions or numbers
    /// (E.164 with or without `+`). At least one, no duplicates.
    #[schemars(
        length(min = 1, max = 64),
        inner(regex(
            pattern = r"^((sips?:[^\s@]+@[^\s]+)|(tel:\+?[0-9*#().-]{1,32}(;[^\s]*)?)|(\+?[0-9*#][0-9*#(). -]{0,31}))$"
        ))
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub identities: Vec<String>,
    /// `Always` (default) or `OnDemand`.
    #[serde(default)]
    pub mode: Mode,
    /// Only with `mode: OnDemand`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_demand: Option<OnDemand>,
    /// Days recordings are kept, 1..3650. Required: an absent retention never means "delete now".
    /// A change applies to new recordings; existing ones keep the retention they were written with.
    #[schemars(range(min = 1, max = 3650))]
    pub retention_days: u32,
    /// Stop recording this user without deleting the policy.
    #[serde(default)]
    pub suspended: bool,
}

/// What the operator observed for a policy.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `IdentityConflict`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The namespace's recorder fleet as the operator last set it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetStatus>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetStatus {
    /// Recorder replicas requested for the namespace.
    pub replicas: i32,
    /// Active policies compiled into the namespace's recorder configuration.
    pub policies: i32,
}

/// Asks for all recordings of the organisation for one month as ZIP files with download links.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, PartialEq, KubeSchema)]
#[kube(
    group = "opname.dev",
    version = "v1alpha1",
    kind = "BulkExport",
    namespaced,
    status = "BulkExportStatus",
    shortname = "bex",
    category = "opname",
    doc = "Exports one month of the namespace's recordings as ZIP files; the links arrive in the status and by e-mail.",
    printcolumn(name = "Month", type_ = "string", json_path = ".spec.month"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Done",
        type_ = "integer",
        json_path = ".status.progress.recordingsDone"
    ),
    printcolumn(
        name = "Total",
        type_ = "integer",
        json_path = ".status.progress.recordingsTotal"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("a BulkExport's spec cannot be changed; create a new one"))]
#[serde(rename_all = "camelCase")]
pub struct BulkExportSpec {
    /// The month to export, `YYYY-MM` (UTC).
    #[schemars(regex(pattern = r"^[0-9]{4}-(0[1-9]|1[0-2])$"))]
    pub month: String,
    /// Only these users (as in `RecordingPolicy.spec.user`); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1000))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub users: Option<Vec<String>>,
    /// Who is told when the export completes or fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<Notify>,
    /// Lifetime of the download links (a duration such as `72h`), at most 7 days; default 7 days
    /// or the signing credentials' own expiry if sooner.
    #[serde(default, rename = "linkTTL", skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) > duration('0s') && duration(self) <= duration('168h')").message("linkTTL must be a positive duration of at most 168h (7 days)"))]
    #[schemars(regex(pattern = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$"))]
    pub link_ttl: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notify {
    /// E-mail addresses.
    #[schemars(
        length(min = 1, max = 20),
        inner(regex(pattern = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"))
    )]
    pub emails: Vec<String>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub enum ExportPhase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkExportStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ExportPhase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ExportProgress>,
    /// The ZIP files, in order.
    #[serde(default)]
    pub parts: Vec<ExportPart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Why the export failed or was refused, or what it found (an empty month).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the notification e-mail went out (it goes once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notified: Option<Time>,
    /// The value of the `opname.dev/renew-links` annotation the links were last signed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub links_renewed_for: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportProgress {
    pub recordings_done: i64,
    pub recordings_total: i64,
    pub bytes_done: i64,
    pub bytes_total: i64,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportPart {
    /// Object key of the ZIP file.
    pub key: String,
    pub size: i64,
    pub sha256: String,
    /// Recordings in this part.
    pub recordings: i64,
    /// Presigned download link (S3 stores; other stores are fetched through the recordings
    /// service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// When the link stops working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<Time>,
}

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

/// The CRDs as YAML documents, in a stable order.
pub fn crd_yaml() -> Result<Vec<(String, String)>, serde_saphyr::SerializeError> {
    use kube::CustomResourceExt;
    let mut out = Vec::new();
    for crd in [
        RecordingPolicy::crd(),
        BulkExport::crd(),
        RecordingHold::crd(),
        RecordingErasure::crd(),
    ] {
        let name = crd.metadata.name.clone().unwrap_or_default();
        let yaml = serde_saphyr::to_string(&crd)?;
        out.push((
            format!("{name}.yaml"),
            format!("# Generated by `opname-operator crd`; do not edit.\n{yaml}"),
        ));
    }
    Ok(out)
}
