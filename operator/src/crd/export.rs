//! BulkExport: an organisation's month as ZIP files with download links.

use super::*;

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
    #[serde(flatten)]
    pub request: ExportRequest,
}

/// What an export asks for besides its month; a ScheduledBulkExport asks the same every month.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExportRequest {
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
    /// When the store deletes the archives (`export.archiveDays` after the start); their
    /// links leave the status then, and renewal is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archives_expire: Option<Time>,
    /// The organisation's time zone when the export was accepted (IANA; the month is counted
    /// in it), from the namespace's `opname.dev/time-zone` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// The organisation's language when the export was accepted (`en`, `nl`), from the
    /// namespace's `opname.dev/locale` annotation: the manifest's CSV is written for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
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
