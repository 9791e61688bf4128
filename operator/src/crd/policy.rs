//! RecordingPolicy: recording switched on for one user, on every device.

use super::*;

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

/// Who tells callers that the call is recorded.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
pub enum Announcer {
    /// The PBX plays the announcement before it connects the call.
    #[serde(rename = "PBX")]
    Pbx,
    /// The SBC plays it on the legs it forks.
    #[serde(rename = "SBC")]
    Sbc,
    /// An IVR in front of the user.
    #[serde(rename = "IVR")]
    Ivr,
    /// The user says it.
    User,
}

/// How callers are told that calls are recorded (the duty to announce): opname cannot play
/// audio into a forked call, so this states who does and what callers hear.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    pub announced_by: Announcer,
    /// The announcement's words, as callers hear them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000))]
    pub text: Option<String>,
}

impl Notice {
    /// As the recorder configuration and the record carry it.
    pub fn model(&self) -> opname_model::policy::Notice {
        use opname_model::policy::Announcer as A;
        opname_model::policy::Notice {
            announced_by: match self.announced_by {
                Announcer::Pbx => A::Pbx,
                Announcer::Sbc => A::Sbc,
                Announcer::Ivr => A::Ivr,
                Announcer::User => A::User,
            },
            text: self.text.clone(),
        }
    }
}

pub(super) fn default_keep_code() -> String {
    opname_model::policy::DEFAULT_KEEP_CODE.into()
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
    /// How callers are told that the call is recorded; carried into every record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<Notice>,
}

/// What the operator observed for a policy.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `IdentityConflict`, `RetentionEnforced`. Nothing of the namespace as a whole
    /// (replica or policy counts): that would rewrite every policy's status when one changes.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    /// The schema needs literal bounds; they must be the model's, which the recorder enforces.
    #[test]
    fn retention_bounds_are_the_models() {
        let crd = serde_json::to_value(RecordingPolicy::crd()).unwrap();
        let days = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["retentionDays"];
        let bounds = opname_model::policy::RETENTION_DAYS;
        assert_eq!(days["minimum"].as_f64(), Some(f64::from(*bounds.start())));
        assert_eq!(days["maximum"].as_f64(), Some(f64::from(*bounds.end())));
    }
}
