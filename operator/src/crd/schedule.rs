//! ScheduledBulkExport: the organisation's month exported every month, by itself.

use super::*;

/// Creates a BulkExport for each month once it has ended in the organisation's time zone,
/// keeps the last `keep` of them and deletes older ones (with their archives).
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, PartialEq, KubeSchema)]
#[kube(
    group = "opname.dev",
    version = "v1alpha1",
    kind = "ScheduledBulkExport",
    namespaced,
    status = "ScheduledBulkExportStatus",
    shortname = "sbex",
    category = "opname",
    doc = "Exports every month of the namespace's recordings once it has ended, keeping the last few exports.",
    printcolumn(name = "Last", type_ = "string", json_path = ".status.lastMonth"),
    printcolumn(name = "Next", type_ = "date", json_path = ".status.nextRun"),
    printcolumn(name = "Keep", type_ = "integer", json_path = ".spec.keep"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledBulkExportSpec {
    /// What each month's export asks for (users, notify, linkTTL), as in BulkExport.
    #[serde(flatten)]
    pub request: ExportRequest,
    /// How many of its exports are kept (the newest months); older ones are deleted with their
    /// archives. Default 3.
    #[serde(default = "default_keep")]
    #[schemars(range(min = 1, max = 24))]
    pub keep: u32,
    /// Minutes after the month's end (local midnight on the 1st) before its export starts, so
    /// that the last calls of the month are uploaded. Default 60.
    #[serde(default = "default_delay")]
    #[schemars(range(min = 0, max = 1440))]
    pub delay_minutes: u32,
    /// No new exports while true (the kept ones stay).
    #[serde(default)]
    pub suspend: bool,
}

fn default_keep() -> u32 {
    3
}

fn default_delay() -> u32 {
    60
}

/// What the schedule did last and will do next.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledBulkExportStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The newest month it has an export for, `YYYY-MM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_month: Option<String>,
    /// When the next month's export will be created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<Time>,
    /// The exports it keeps, newest first.
    #[serde(default)]
    pub exports: Vec<String>,
    /// `Ready`: the schedule is in force (False with the reason when it cannot be).
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
