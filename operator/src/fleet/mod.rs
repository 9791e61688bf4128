//! The desired state of a namespace's recorder fleet, as a pure function of its policies.
//!
//! [`plan`] turns every `RecordingPolicy` of one namespace into the recorder ConfigMap,
//! Deployment, Service, PodDisruptionBudget (and optional HPA), plus each policy's status and the
//! Events worth publishing. The controller only applies what it returns.

pub mod controller;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort,
    EmptyDirVolumeSource, EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, Lifecycle,
    LifecycleHandler, ObjectFieldSelector, PodAffinityTerm, PodAntiAffinity, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretEnvSource,
    SecurityContext, Service, ServicePort, ServiceSpec, SleepAction, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    Condition, LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use opname_model::config as rc;
use opname_model::policy::resolve_claims;

use crate::crd::{FleetStatus, Mode, RecordingPolicy, RecordingPolicyStatus};
use crate::settings::{RtpMode, Settings};

/// Name of every child object in a namespace.
pub const NAME: &str = "opname-recorder";
/// Key of the recorder configuration in the ConfigMap.
pub const CONFIG_KEY: &str = "recorder.yaml";
const CONFIG_DIR: &str = "/etc/opname";
const SPOOL_DIR: &str = "/var/spool/opname";
const HTTP_PORT: i32 = 8080;
const SIP_PORT: i32 = 5060;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot render the recorder configuration: {0}")]
    Render(String),
}

/// The namespace's children; `None` in [`Plan`] means "no active policy: delete them".
#[derive(Debug, Clone, PartialEq)]
pub struct Children {
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
    pub pdb: PodDisruptionBudget,
    pub hpa: Option<HorizontalPodAutoscaler>,
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
                fleet: Some(FleetStatus {
                    replicas: if active > 0 { replicas } else { 0 },
                    policies: active,
                }),
            },
        );
    }
    let children = if rendered.is_empty() {
        None
    } else {
        let owners: Vec<OwnerReference> = ordered.iter().filter_map(|p| owner_ref(p)).collect();
        Some(children(namespace, rendered, owners, replicas, settings)?)
    };
    Ok(Plan {
        children,
        statuses,
        events,
    })
}

fn owner_ref(p: &RecordingPolicy) -> Option<OwnerReference> {
    // Not `controller`: every policy of the namespace owns the fleet, and garbage collection
    // removes it when the last one is deleted.
    Some(OwnerReference {
        api_version: RecordingPolicy::api_version(&()).to_string(),
        kind: RecordingPolicy::kind(&()).to_string(),
        name: p.name_any(),
        uid: p.uid()?,
        ..Default::default()
    })
}

/// The recorder configuration the ConfigMap carries (the recorder's own file format).
pub fn recorder_config(
    namespace: &str,
    policies: Vec<rc::Policy>,
    settings: &Settings,
) -> rc::Config {
    rc::Config {
        namespace: namespace.to_string(),
        sip: rc::SipConfig {
            listen: ([0, 0, 0, 0], SIP_PORT as u16).into(),
            advertise: None,
        },
        rtp: rc::RtpConfig {
            port_min: settings.rtp.port_min,
            port_max: settings.rtp.port_max,
            ..Default::default()
        },
        audio: rc::AudioConfig {
            bitrate: settings.recorder.bitrate,
            complexity: settings.recorder.complexity,
        },
        store: rc::StoreConfig {
            url: settings.store.url.clone(),
            prefix: settings.store.prefix.clone(),
        },
        spool: rc::SpoolConfig {
            dir: SPOOL_DIR.into(),
            // Stop taking new calls while three quarters of the emptyDir wait for the store.
            high_water_bytes: quantity_bytes(&settings.recorder.spool_size)
                .map_or(rc::SpoolConfig::default().high_water_bytes, |b| b / 4 * 3),
        },
        limits: rc::LimitsConfig {
            max_calls: settings.capacity.max_calls_per_replica,
            drain_seconds: settings.recorder.drain_seconds,
            ..Default::default()
        },
        http: rc::HttpConfig {
            listen: ([0, 0, 0, 0], HTTP_PORT as u16).into(),
        },
        policies,
    }
}

/// Bytes of a Kubernetes quantity such as `4Gi`, `500M` or `1073741824`.
fn quantity_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (n, unit) = q.split_at(split);
    let n: u64 = n.parse().ok()?;
    let factor: u64 = match unit {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(factor)
}

fn meta(namespace: &str, owners: &[OwnerReference]) -> ObjectMeta {
    ObjectMeta {
        name: Some(NAME.into()),
        namespace: Some(namespace.into()),
        labels: Some(labels(namespace)),
        owner_references: Some(owners.to_vec()),
        ..Default::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn children(
    namespace: &str,
    policies: Vec<rc::Policy>,
    owners: Vec<OwnerReference>,
    replicas: i32,
    settings: &Settings,
) -> Result<Children, FleetError> {
    let config = recorder_config(namespace, policies, settings);
    let yaml = serde_saphyr::to_string(&config).map_err(|e| FleetError::Render(e.to_string()))?;
    let config_map = ConfigMap {
        metadata: meta(namespace, &owners),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), yaml)])),
        ..Default::default()
    };
    let host_network = settings.rtp.mode == RtpMode::HostNetwork;
    let mut env = vec![
        field_env("POD_NAME", "metadata.name"),
        field_env(
            "OPNAME_RTP_ADVERTISE",
            if host_network {
                "status.hostIP"
            } else {
                "status.podIP"
            },
        ),
    ];
    env.extend(settings.store.env.iter().map(|(k, v)| EnvVar {
        name: k.clone(),
        value: Some(v.clone()),
        ..Default::default()
    }));
    let r = &settings.recorder.resources;
    let mut limits = BTreeMap::from([("memory".to_string(), Quantity(r.memory_limit.clone()))]);
    if let Some(cpu) = &r.cpu_limit {
        limits.insert("cpu".into(), Quantity(cpu.clone()));
    }
    let probe = |path: &str, period| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(HTTP_PORT),
            ..Default::default()
        }),
        period_seconds: Some(period),
        ..Default::default()
    };
    let port = |name: &str, port: i32, protocol: &str| ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some(protocol.into()),
        ..Default::default()
    };
    let container = Container {
        name: "recorder".into(),
        image: Some(settings.recorder.image.clone()),
        image_pull_policy: Some(settings.recorder.image_pull_policy.clone()),
        args: Some(vec![
            "serve".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
        ]),
        env: Some(env),
        env_from: settings.store.credentials_secret.as_ref().map(|s| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: s.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }]
        }),
        ports: Some(vec![
            port("sip-udp", SIP_PORT, "UDP"),
            port("sip-tcp", SIP_PORT, "TCP"),
            port("http", HTTP_PORT, "TCP"),
        ]),
        readiness_probe: Some(probe("/readyz", 5)),
        liveness_probe: Some(probe("/healthz", 10)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity(r.cpu_request.clone())),
                ("memory".to_string(), Quantity(r.memory_request.clone())),
            ])),
            limits: Some(limits),
            ..Default::default()
        }),
        // The endpoints drop the pod before it stops taking calls.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                sleep: Some(SleepAction {
                    seconds: settings.recorder.pre_stop_seconds,
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "spool".into(),
                mount_path: SPOOL_DIR.into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        host_network: host_network.then_some(true),
        // Host networking binds SIP and RTP ports on the node: one recorder per node.
        affinity: host_network.then(|| Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                    label_selector: Some(LabelSelector {
                        match_labels: Some(selector(namespace)),
                        ..Default::default()
                    }),
                    topology_key: "kubernetes.io/hostname".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        dns_policy: host_network.then(|| "ClusterFirstWithHostNet".into()),
        termination_grace_period_seconds: Some(settings.recorder.drain_seconds as i64 + 30),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            fs_group: Some(65532),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volumes: Some(vec![
            Volume {
                name: "config".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: NAME.into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "spool".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    size_limit: Some(Quantity(settings.recorder.spool_size.clone())),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let hpa_enabled = settings.capacity.hpa.is_some();
    let deployment = Deployment {
        metadata: meta(namespace, &owners),
        spec: DeploymentSpec {
            replicas: (!hpa_enabled).then_some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector(namespace)),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(namespace)),
                    ..Default::default()
                }),
                spec: Some(pod),
            },
            ..Default::default()
        },
        ..Default::default()
    };
    let service = Service {
        metadata: meta(namespace, &owners),
        spec: Some(ServiceSpec {
            selector: Some(selector(namespace)),
            ports: Some(vec![
                ServicePort {
                    name: Some("sip-udp".into()),
                    port: SIP_PORT,
                    protocol: Some("UDP".into()),
                    target_port: Some(IntOrString::Int(SIP_PORT)),
                    ..Default::default()
                },
                ServicePort {
                    name: Some("sip-tcp".into()),
                    port: SIP_PORT,
                    protocol: Some("TCP".into()),
                    target_port: Some(IntOrString::Int(SIP_PORT)),
                    ..Default::default()
                },
            ]),
            // A SIP dialog's requests must reach the recorder that answered its INVITE.
            session_affinity: Some("ClientIP".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pdb = PodDisruptionBudget {
        metadata: meta(namespace, &owners),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(namespace)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let hpa = settings
        .capacity
        .hpa
        .as_ref()
        .map(|h| HorizontalPodAutoscaler {
            metadata: meta(namespace, &owners),
            spec: HorizontalPodAutoscalerSpec {
                scale_target_ref: CrossVersionObjectReference {
                    api_version: Some("apps/v1".into()),
                    kind: "Deployment".into(),
                    name: NAME.into(),
                },
                min_replicas: Some(replicas),
                max_replicas: settings.capacity.max_replicas,
                metrics: Some(vec![MetricSpec {
                    type_: "Resource".into(),
                    resource: Some(ResourceMetricSource {
                        name: "cpu".into(),
                        target: MetricTarget {
                            type_: "Utilization".into(),
                            average_utilization: Some(h.target_cpu_utilization),
                            ..Default::default()
                        },
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            ..Default::default()
        });
    Ok(Children {
        config_map,
        deployment,
        service,
        pdb,
        hpa,
    })
}

#[cfg(test)]
mod tests;
