//! The children of a namespace's fleet: the recorder configuration, ConfigMap, Deployment, Service, PodDisruptionBudget and autoscaler, all derived from the plan.

use super::*;

/// One ConfigMap key as a file of the projected configuration volume.
fn projection(name: &str, key: &str, path: String, optional: bool) -> VolumeProjection {
    VolumeProjection {
        config_map: Some(ConfigMapProjection {
            name: name.into(),
            items: Some(vec![KeyToPath {
                key: key.into(),
                path,
                ..Default::default()
            }]),
            optional: optional.then_some(true),
        }),
        ..Default::default()
    }
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
            allow: settings
                .sip
                .allow
                .iter()
                .copied()
                .chain(
                    settings
                        .front_door
                        .pod_range
                        .filter(|_| settings.front_door.enabled && !settings.sip.allow.is_empty()),
                )
                .collect(),
            refuse: settings.sip.refuse,
            tls: settings.sip.tls.as_ref().map(|t| rc::TlsConfig {
                listen: ([0, 0, 0, 0], SIPS_PORT as u16).into(),
                cert_file: format!("{TLS_DIR}/tls.crt").into(),
                key_file: format!("{TLS_DIR}/tls.key").into(),
                client_ca_file: t.verify_clients.then(|| format!("{TLS_DIR}/ca.crt").into()),
            }),
            ..Default::default()
        },
        rtp: rc::RtpConfig {
            port_min: settings.rtp.port_min,
            port_max: settings.rtp.port_max,
            latching: settings.rtp.latching,
            plain_with_tls: settings.rtp.plain_with_tls,
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
            segment_seconds: settings.recorder.segment_seconds,
        },
        limits: rc::LimitsConfig {
            max_calls: settings.capacity.max_calls_per_replica,
            drain_seconds: settings.recorder.drain_seconds,
            final_upload_seconds: settings.recorder.final_upload_seconds,
            ..Default::default()
        },
        http: rc::HttpConfig {
            listen: ([0, 0, 0, 0], HTTP_PORT as u16).into(),
        },
        policies,
        // The shards, projected beside the file.
        policies_dir: Some(POLICIES_DIR.into()),
    }
}

/// Bytes of a Kubernetes quantity such as `4Gi`, `500M` or `1073741824`.
pub(super) fn quantity_bytes(q: &str) -> Option<u64> {
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

/// preStop, then the recorder's whole shutdown (drain, finalise, last uploads), then a margin:
/// a pod killed before its last upload loses the spool with its `emptyDir`.
fn termination_grace(pre_stop_seconds: i64, limits: &rc::LimitsConfig) -> i64 {
    let seconds = limits.shutdown_seconds().saturating_add(10);
    pre_stop_seconds
        .max(0)
        .saturating_add(i64::try_from(seconds).unwrap_or(i64::MAX))
}

/// No owner references: with every policy of a namespace owning its fleet, 10,000 policies'
/// references alone would pass the API's object size limit. The controller deletes the fleet of
/// a namespace whose last policy is gone.
pub(super) fn meta(namespace: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(NAME.into()),
        namespace: Some(namespace.into()),
        labels: Some(labels(namespace)),
        ..Default::default()
    }
}

pub(super) fn field_env(name: &str, path: &str) -> EnvVar {
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

pub(super) fn children(
    namespace: &str,
    policies: Vec<rc::Policy>,
    replicas: i32,
    settings: &Settings,
) -> Result<Children, FleetError> {
    let shards = shards::shards(&policies)?
        .into_iter()
        .enumerate()
        .map(|(k, yaml)| ConfigMap {
            metadata: ObjectMeta {
                name: Some(shards::shard_name(k)),
                labels: Some({
                    let mut l = labels(namespace);
                    l.insert(SHARD_LABEL.into(), "true".into());
                    l
                }),
                ..meta(namespace)
            },
            data: Some(BTreeMap::from([(shards::SHARD_KEY.to_string(), yaml)])),
            ..Default::default()
        })
        .collect();
    let config = recorder_config(namespace, Vec::new(), settings);
    let yaml = serde_saphyr::to_string(&config).map_err(|e| FleetError::Render(e.to_string()))?;
    let config_map = ConfigMap {
        metadata: meta(namespace),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), yaml)])),
        ..Default::default()
    };
    let host_network = settings.rtp.mode == RtpMode::HostNetwork;
    let tls = settings.sip.tls.is_some();
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
    env.extend(settings.log_format.env());
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
        ports: Some(
            [
                port("sip-udp", SIP_PORT, "UDP"),
                port("sip-tcp", SIP_PORT, "TCP"),
                port("http", HTTP_PORT, "TCP"),
            ]
            .into_iter()
            .chain(tls.then(|| port("sips", SIPS_PORT, "TCP")))
            .collect(),
        ),
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
        security_context: Some(crate::kube::hardened_container()),
        volume_mounts: Some(
            [
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
            ]
            .into_iter()
            .chain(tls.then(|| VolumeMount {
                name: "tls".into(),
                mount_path: TLS_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            }))
            .collect(),
        ),
        ..Default::default()
    };
    let mut pod = PodSpec {
        containers: vec![container],
        host_network: host_network.then_some(true),
        dns_policy: host_network.then(|| "ClusterFirstWithHostNet".into()),
        termination_grace_period_seconds: Some(termination_grace(
            settings.recorder.pre_stop_seconds,
            &config.limits,
        )),
        security_context: Some(crate::kube::hardened_pod()),
        volumes: Some(
            [
                Volume {
                    name: "config".into(),
                    // The base configuration and every shard that exists, one file each.
                    projected: Some(ProjectedVolumeSource {
                        sources: Some(
                            std::iter::once(projection(NAME, CONFIG_KEY, CONFIG_KEY.into(), false))
                                .chain((0..shards::MAX_SHARDS).map(|k| {
                                    projection(
                                        &shards::shard_name(k),
                                        shards::SHARD_KEY,
                                        format!("{POLICIES_DIR}/{k:02}.yaml"),
                                        true,
                                    )
                                }))
                                .collect(),
                        ),
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
            ]
            .into_iter()
            .chain(settings.sip.tls.as_ref().map(|t| Volume {
                name: "tls".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(t.secret_name.clone()),
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .collect(),
        ),
        image_pull_secrets: crate::kube::pull_secrets(&settings.image_pull_secrets),
        service_account_name: settings.recorder.service_account.clone(),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    // Host networking binds SIP and RTP ports on the node: one recorder per node.
    let one_per_node = host_network.then(|| PodAffinityTerm {
        label_selector: Some(LabelSelector {
            match_labels: Some(selector(namespace)),
            ..Default::default()
        }),
        topology_key: "kubernetes.io/hostname".into(),
        ..Default::default()
    });
    settings
        .recorder
        .scheduling
        .apply(&mut pod, &selector(namespace), one_per_node);
    let hpa_enabled = settings.capacity.hpa.is_some();
    let deployment = Deployment {
        metadata: meta(namespace),
        spec: DeploymentSpec {
            replicas: (!hpa_enabled).then_some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector(namespace)),
                ..Default::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                // With one recorder per node a surge pod may find no free node and the rollout
                // would wait forever: replace in place, one at a time.
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(i32::from(host_network))),
                    max_surge: Some(IntOrString::Int(i32::from(!host_network))),
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
    // Headless: DNS lists each ready recorder (A and SRV records) so that an SBC spreads its
    // initial INVITEs itself; in-dialog requests follow the answering recorder's Contact. A
    // ClusterIP would pin one SBC's flow to one pod. A Service's port names are unique, so the
    // standard `_sip._udp` and `_sip._tcp` SRV names need one Service per transport.
    let service = |name: &str, protocol: &str| Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..meta(namespace)
        },
        spec: Some(ServiceSpec {
            selector: Some(selector(namespace)),
            ports: Some(
                std::iter::once(("sip", SIP_PORT))
                    // `_sips._tcp.opname-recorder-tcp.<ns>.svc`.
                    .chain((tls && protocol == "TCP").then_some(("sips", SIPS_PORT)))
                    .map(|(name, port)| ServicePort {
                        name: Some(name.into()),
                        port,
                        protocol: Some(protocol.into()),
                        target_port: Some(IntOrString::Int(port)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            cluster_ip: Some("None".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (service, tcp_service) = (service(NAME, "UDP"), service(TCP_SERVICE, "TCP"));
    let pdb = PodDisruptionBudget {
        metadata: meta(namespace),
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
            metadata: meta(namespace),
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
        shards,
        deployment,
        service,
        tcp_service,
        pdb,
        hpa,
        network_policy: super::network::network_policy(namespace, settings),
    })
}
