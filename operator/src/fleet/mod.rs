//! The desired state of a namespace's recorder fleet, as a pure function of its policies.
//!
//! [`plan`] turns every `RecordingPolicy` of one namespace into the recorder ConfigMap,
//! Deployment, Service, PodDisruptionBudget (and optional HPA), plus each policy's status and the
//! Events worth publishing. The controller only applies what it returns.

pub mod applied;
pub mod controller;
pub mod front_door;
pub mod network;
pub mod planned;
pub mod serving;
pub mod shards;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapProjection, Container, ContainerPort, EmptyDirVolumeSource, EnvFromSource,
    EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler,
    ObjectFieldSelector, PodAffinityTerm, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource,
    ResourceRequirements, SecretEnvSource, SecretVolumeSource, Service, ServicePort, ServiceSpec,
    SleepAction, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use opname_model::config as rc;
use opname_model::policy::resolve_claims;

use crate::crd::{Mode, RecordingPolicy, RecordingPolicyStatus};
use crate::settings::{RtpMode, Settings};

mod children;

pub use children::recorder_config;
use children::*;

/// Name of every child object in a namespace.
pub const NAME: &str = "opname-recorder";
/// The recorders' SIP-over-TCP Service (`_sip._tcp.opname-recorder-tcp.<ns>.svc`); `NAME` is
/// the UDP one (`_sip._udp.opname-recorder.<ns>.svc`).
pub const TCP_SERVICE: &str = "opname-recorder-tcp";
/// Key of the recorder configuration in the ConfigMap.
pub const CONFIG_KEY: &str = "recorder.yaml";
const CONFIG_DIR: &str = "/etc/opname";
/// The shards' directory, beside the configuration file.
const POLICIES_DIR: &str = "policies";
/// Marks the policy shards among the fleet's ConfigMaps.
pub const SHARD_LABEL: &str = "opname.dev/policy-shard";
const SPOOL_DIR: &str = "/var/spool/opname";
const HTTP_PORT: i32 = 8080;
const SIP_PORT: i32 = 5060;
/// SIP over TLS, with `sip.tls`.
const SIPS_PORT: i32 = 5061;
/// Where the TLS Secret is mounted (not inside the read-only configuration volume).
const TLS_DIR: &str = "/etc/opname-tls";

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot render the recorder configuration: {0}")]
    Render(String),
    #[error("{0} policies do not fit in {max} ConfigMaps", max = shards::MAX_SHARDS)]
    TooManyPolicies(usize),
}

/// The namespace's children; `None` in [`Plan`] means "no active policy: delete them".
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    /// The recorder configuration without its policies.
    pub config_map: ConfigMap,
    /// The policies, over ConfigMaps [`shards::shard_name`]`(k)`, labelled [`SHARD_LABEL`].
    pub shards: Vec<ConfigMap>,
    pub deployment: Deployment,
    /// The UDP Service, named [`NAME`].
    pub service: Service,
    /// The TCP Service, named [`TCP_SERVICE`].
    pub tcp_service: Service,
    pub pdb: PodDisruptionBudget,
    pub hpa: Option<HorizontalPodAutoscaler>,
    /// SIP only from `sip.allow`, when it lists anything.
    pub network_policy: Option<k8s_openapi::api::networking::v1::NetworkPolicy>,
}

/// An Event to publish on a policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyEvent {
    pub policy: String,
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub children: Option<Children>,
    /// Status per policy name.
    pub statuses: BTreeMap<String, RecordingPolicyStatus>,
    pub events: Vec<PolicyEvent>,
}

pub fn labels(namespace: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), NAME.to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            namespace.to_string(),
        ),
        (
            "app.kubernetes.io/part-of".to_string(),
            "opname".to_string(),
        ),
        (
            "app.kubernetes.io/managed-by".to_string(),
            "opname-operator".to_string(),
        ),
    ])
}

fn selector(namespace: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), NAME.to_string()),
        (
            "app.kubernetes.io/instance".to_string(),
            namespace.to_string(),
        ),
    ])
}

/// A condition that keeps its transition time while its status does not change.
pub(crate) fn condition(
    existing: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if status { "True" } else { "False" };
    condition_with(existing, type_, status, reason, message, generation, now)
}

fn condition_with(
    existing: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = status.to_string();
    let last_transition_time = existing
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

fn was_true(p: &RecordingPolicy, type_: &str) -> bool {
    p.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == "True")
    })
}

/// Plans one namespace. `policies` are all policies of `namespace`, in any order.
pub fn plan(
    namespace: &str,
    policies: &[RecordingPolicy],
    settings: &Settings,
    retention: Option<&crate::retention::rules::Enforcement>,
    now: &Time,
) -> Result<Plan, FleetError> {
    // Oldest first: the older policy keeps an identity two policies claim.
    let mut ordered: Vec<&RecordingPolicy> = policies
        .iter()
        .filter(|p| p.meta().deletion_timestamp.is_none())
        .collect();
    ordered.sort_by(|a, b| {
        (a.creation_timestamp().map(|t| t.0), a.name_any())
            .cmp(&(b.creation_timestamp().map(|t| t.0), b.name_any()))
    });
    let names: Vec<String> = ordered.iter().map(|p| p.name_any()).collect();
    let claims = resolve_claims(ordered.iter().zip(&names).map(|(p, name)| {
        let identities: &[String] = if p.spec.suspended {
            &[]
        } else {
            &p.spec.identities
        };
        (name.as_str(), identities)
    }));
    let mut rendered = Vec::new();
    let mut statuses = BTreeMap::new();
    let mut events = Vec::new();
    let mut pending = Vec::new();
    for ((p, name), claimed) in ordered.iter().zip(&names).zip(claims) {
        let name = name.clone();
        let conflicts: Vec<String> = claimed
            .conflicts
            .iter()
            .map(|(raw, owner)| format!("{raw} (policy {owner})"))
            .collect();
        let own: Vec<String> = claimed.own.iter().map(|(raw, _)| raw.to_string()).collect();
        if !p.spec.suspended && !own.is_empty() {
            rendered.push(rc::Policy {
                name: name.clone(),
                user: p.spec.user.clone(),
                identities: own,
                mode: match p.spec.mode {
                    Mode::Always => rc::Mode::Always,
                    Mode::OnDemand => rc::Mode::OnDemand,
                },
                on_demand: p.spec.on_demand.as_ref().map(|o| rc::OnDemand {
                    keep_code: o.keep_code.clone(),
                }),
                retention_days: p.spec.retention_days,
                suspended: false,
                notice: p.spec.notice.as_ref().map(|n| n.model()),
            });
        }
        pending.push((p, name, conflicts));
    }
    let active = rendered.len() as i32;
    let replicas =
        (active + settings.capacity.users_per_replica - 1) / settings.capacity.users_per_replica;
    let replicas = replicas.clamp(
        settings.capacity.min_replicas,
        settings.capacity.max_replicas,
    );
    for (p, name, conflicts) in pending {
        let generation = p.meta().generation;
        let existing = p
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        let conflict = !conflicts.is_empty();
        let (ready, reason, message) = if p.spec.suspended {
            (
                false,
                "Suspended",
                "recording is suspended for this user".to_string(),
            )
        } else if conflict {
            (
                false,
                "IdentityConflict",
                format!(
                    "identities claimed by older policies are not recorded under this one: {}",
                    conflicts.join(", ")
                ),
            )
        } else {
            (
                true,
                "Compiled",
                format!(
                    "{} identities in the recorder configuration of {replicas} replica(s)",
                    p.spec.identities.len()
                ),
            )
        };
        let conflict_message = if conflict {
            conflicts.join(", ")
        } else {
            "no identity is claimed by another policy".into()
        };
        if conflict && !was_true(p, "IdentityConflict") {
            events.push(PolicyEvent {
                policy: name.clone(),
                warning: true,
                reason: "IdentityConflict",
                note: format!(
                    "identities already claimed by an older policy: {}",
                    conflicts.join(", ")
                ),
            });
        }
        if !conflict && was_true(p, "IdentityConflict") {
            events.push(PolicyEvent {
                policy: name.clone(),
                warning: false,
                reason: "IdentityConflictResolved",
                note: "all identities of this policy are recorded again".into(),
            });
        }
        statuses.insert(
            name,
            RecordingPolicyStatus {
                observed_generation: generation,
                conditions: vec![
                    condition(existing, "Ready", ready, reason, message, generation, now),
                    condition(
                        existing,
                        "IdentityConflict",
                        conflict,
                        if conflict {
                            "IdentityClaimed"
                        } else {
                            "NoConflict"
                        },
                        conflict_message,
                        generation,
                        now,
                    ),
                    {
                        let (status, reason, message) =
                            crate::retention::rules::Enforcement::condition(
                                retention,
                                p.spec.retention_days,
                            );
                        condition_with(
                            existing,
                            "RetentionEnforced",
                            status,
                            reason,
                            message,
                            generation,
                            now,
                        )
                    },
                ],
            },
        );
    }
    let children = if rendered.is_empty() {
        None
    } else {
        Some(children(namespace, rendered, replicas, settings)?)
    };
    Ok(Plan {
        children,
        statuses,
        events,
    })
}

#[cfg(test)]
mod tests;
