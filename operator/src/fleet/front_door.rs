//! The SIP front door of a namespace, for SBCs that take one address: Kamailio with its
//! dispatcher, as a Deployment and a Service of its own, configured from the ready recorders.
//!
//! Kamailio only spreads initial INVITEs (round robin or Call-ID hash), probes the recorders with
//! OPTIONS and tries the next one on 503 or silence. It adds no Record-Route, so ACK, re-INVITE,
//! UPDATE and BYE go to the answering recorder's Contact and RTP to its SDP address: a front door
//! that dies loses no call in progress. Pure: the controller lists the EndpointSlices and applies
//! what [`children`] returns.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar,
    PodSpec, PodTemplateSpec, Probe, Service, ServicePort, ServiceSpec, TCPSocketAction, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{SIP_PORT, field_env};
use crate::settings::{Distribution, ServiceType, Settings};
use opname_model::config::{Refuse, SourceRange};

/// Name of the front door's ConfigMap, Deployment and Service.
pub const FRONT_DOOR: &str = "opname-sip";
const CONFIG_DIR: &str = "/etc/opname-sip";
const RUNTIME_DIR: &str = "/var/run/kamailio";
const TEMPLATE: &str = include_str!("kamailio.cfg");

/// The front door's objects.
#[derive(Debug, Clone, PartialEq)]
pub struct FrontDoor {
    pub config_map: ConfigMap,
    pub deployment: Deployment,
    pub service: Service,
}

fn labels(namespace: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), FRONT_DOOR.into()),
        ("app.kubernetes.io/instance".into(), namespace.into()),
        ("app.kubernetes.io/part-of".into(), "opname".into()),
        (
            "app.kubernetes.io/managed-by".into(),
            "opname-operator".into(),
        ),
    ])
}

pub(super) fn selector(namespace: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), FRONT_DOOR.into()),
        ("app.kubernetes.io/instance".into(), namespace.into()),
    ])
}

/// The dispatcher's destination list: set 1, one line per ready recorder.
pub fn dispatcher_list(recorders: &[IpAddr]) -> String {
    let mut out = String::from("# set destination flags priority (rendered by opname-operator)\n");
    for ip in recorders {
        let host = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        out += &format!("1 sip:{host}:{SIP_PORT} 0 0\n");
    }
    out
}

/// Kamailio's configuration with the chosen distribution; SIP from outside `allow` (when it lists
/// anything) gets what `refuse` says, as from the recorders themselves.
pub fn kamailio_cfg(distribution: Distribution, allow: &[SourceRange], refuse: Refuse) -> String {
    let algorithm = match distribution {
        Distribution::RoundRobin => "4",
        Distribution::CallIdHash => "0",
    };
    let check = if allow.is_empty() {
        String::new()
    } else {
        let tests: Vec<String> = allow
            .iter()
            .map(|r| format!("is_in_subnet(\"$si\", \"{}\")", r.0))
            .collect();
        let answer = match refuse {
            Refuse::Reject => {
                "\t\tif (!is_method(\"ACK\")) {\n\t\t\tsl_send_reply(\"403\", \"Forbidden\");\n\t\t}\n"
            }
            Refuse::Drop => "",
        };
        format!(
            "\tif (!({})) {{\n{answer}\t\texit;\n\t}}",
            tests.join(" || ")
        )
    };
    TEMPLATE
        .replace("{{ALGORITHM}}", algorithm)
        .replace("{{SOURCE_CHECK}}", &check)
}

pub fn children(namespace: &str, all: &Settings, recorders: &[IpAddr]) -> FrontDoor {
    let (settings, sip) = (&all.front_door, &all.sip);
    let meta = || ObjectMeta {
        name: Some(FRONT_DOOR.into()),
        namespace: Some(namespace.into()),
        labels: Some(labels(namespace)),
        ..Default::default()
    };
    let config_map = ConfigMap {
        metadata: meta(),
        data: Some(BTreeMap::from([
            (
                "kamailio.cfg".into(),
                kamailio_cfg(settings.distribution, &sip.allow, sip.refuse),
            ),
            ("dispatcher.list".into(), dispatcher_list(recorders)),
        ])),
        ..Default::default()
    };
    let port = |name: &str, protocol: &str| ContainerPort {
        name: Some(name.into()),
        container_port: SIP_PORT,
        protocol: Some(protocol.into()),
        ..Default::default()
    };
    let container = Container {
        name: "kamailio".into(),
        image: Some(settings.image.clone()),
        image_pull_policy: Some(settings.image_pull_policy.clone()),
        command: Some(vec!["/usr/sbin/kamailio".into()]),
        args: Some(vec![
            "-DD".into(),
            "-E".into(),
            "-Y".into(),
            RUNTIME_DIR.into(),
            "-f".into(),
            format!("{CONFIG_DIR}/kamailio.cfg"),
        ]),
        env: Some(vec![
            field_env("POD_IP", "status.podIP"),
            EnvVar {
                name: "OPNAME_DISPATCHER_LIST".into(),
                value: Some(format!("{CONFIG_DIR}/dispatcher.list")),
                ..Default::default()
            },
        ]),
        ports: Some(vec![port("sip-udp", "UDP"), port("sip-tcp", "TCP")]),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(SIP_PORT),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        }),
        security_context: Some(crate::kube::hardened_container()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "run".into(),
                mount_path: RUNTIME_DIR.into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let mut deployment = Deployment {
        metadata: meta(),
        spec: DeploymentSpec {
            replicas: Some(settings.replicas),
            selector: LabelSelector {
                match_labels: Some(selector(namespace)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(namespace)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(crate::kube::hardened_pod()),
                    volumes: Some(vec![
                        Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: FRONT_DOOR.into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "run".into(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Default::default()
                        },
                    ]),
                    image_pull_secrets: crate::kube::pull_secrets(&all.image_pull_secrets),
                    ..Default::default()
                }),
            },
            ..Default::default()
        },
        ..Default::default()
    };
    if let Some(pod) = deployment.spec.template.spec.as_mut() {
        settings.scheduling.apply(pod, &selector(namespace), None);
    }
    let service_port = |name: &str, protocol: &str| ServicePort {
        name: Some(name.into()),
        port: SIP_PORT,
        protocol: Some(protocol.into()),
        target_port: Some(IntOrString::Int(SIP_PORT)),
        ..Default::default()
    };
    let service = Service {
        metadata: meta(),
        spec: Some(ServiceSpec {
            type_: Some(
                match settings.service_type {
                    ServiceType::LoadBalancer => "LoadBalancer",
                    ServiceType::NodePort => "NodePort",
                    ServiceType::ClusterIP => "ClusterIP",
                }
                .into(),
            ),
            selector: Some(selector(namespace)),
            ports: Some(vec![
                service_port("sip-udp", "UDP"),
                service_port("sip-tcp", "TCP"),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    };
    FrontDoor {
        config_map,
        deployment,
        service,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::serving::ready_recorders;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointSlice};

    fn slice(endpoints: &[(&str, bool)]) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: Some(
                endpoints
                    .iter()
                    .map(|(ip, ready)| Endpoint {
                        addresses: vec![ip.to_string()],
                        conditions: Some(EndpointConditions {
                            ready: Some(*ready),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn only_ready_recorders_are_dispatched_to() {
        let slices = [
            slice(&[("10.0.0.9", true), ("10.0.0.2", false)]),
            slice(&[("10.0.0.3", true), ("10.0.0.9", true)]),
        ];
        let ready = ready_recorders(&slices);
        assert_eq!(
            ready,
            [
                "10.0.0.3".parse::<IpAddr>().unwrap(),
                "10.0.0.9".parse().unwrap()
            ]
        );
        let list = dispatcher_list(&ready);
        let lines: Vec<_> = list.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            ["1 sip:10.0.0.3:5060 0 0", "1 sip:10.0.0.9:5060 0 0"]
        );
        assert!(dispatcher_list(&["fd00::1".parse().unwrap()]).contains("sip:[fd00::1]:5060"));
    }

    #[test]
    fn distribution_picks_the_dispatcher_algorithm() {
        let open = |d| kamailio_cfg(d, &[], Refuse::Reject);
        assert!(open(Distribution::RoundRobin).contains("#!define ALGORITHM \"4\""));
        assert!(open(Distribution::CallIdHash).contains("#!define ALGORITHM \"0\""));
        assert!(!open(Distribution::RoundRobin).contains("{{"));
        assert!(!open(Distribution::RoundRobin).contains("is_in_subnet("));
        let allow = [
            "10.20.0.0/16".parse().unwrap(),
            "192.0.2.7".parse().unwrap(),
        ];
        let guarded = kamailio_cfg(Distribution::RoundRobin, &allow, Refuse::Reject);
        assert!(
            guarded.contains(
                "if (!(is_in_subnet(\"$si\", \"10.20.0.0/16\") || is_in_subnet(\"$si\", \"192.0.2.7/32\"))) {"
            ),
            "{guarded}"
        );
        assert!(guarded.contains("sl_send_reply(\"403\", \"Forbidden\")"));
        let silent = kamailio_cfg(Distribution::RoundRobin, &allow, Refuse::Drop);
        assert!(silent.contains("is_in_subnet(") && !silent.contains("\"Forbidden\""));
    }

    #[test]
    fn front_door_is_its_own_workload_out_of_the_recorders_selector() {
        let mut s = Settings::default();
        s.front_door.enabled = true;
        s.front_door.service_type = ServiceType::NodePort;
        s.front_door.scheduling.node_selector = BTreeMap::from([("edge".into(), "sip".into())]);
        s.image_pull_secrets = vec!["registry".into()];
        let fd = children("acme", &s, &[]);
        let pod = fd.deployment.spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.node_selector.as_ref().unwrap()["edge"], "sip");
        assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "registry");
        let pod_labels = fd
            .deployment
            .spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        // The recorders' Services select app.kubernetes.io/name=opname-recorder: not these pods.
        assert_eq!(pod_labels["app.kubernetes.io/name"], FRONT_DOOR);
        let spec = fd.service.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("NodePort"));
        assert_eq!(spec.ports.unwrap().len(), 2);
        assert_eq!(fd.deployment.spec.replicas, Some(2));
        let data = fd.config_map.data.unwrap();
        assert!(data["kamailio.cfg"].contains("ds_select_dst"));
        assert!(
            !data["kamailio.cfg"].contains("record_route"),
            "out of the dialogs"
        );
    }
}
