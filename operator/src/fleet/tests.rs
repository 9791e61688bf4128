use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use super::*;
use crate::crd::{OnDemand, RecordingPolicySpec};
use crate::settings::HpaSettings;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn at(secs: i64) -> Time {
    Time(jiff::Timestamp::from_second(1_800_000_000 + secs).unwrap())
}

fn policy(name: &str, created: i64, ids: &[&str]) -> RecordingPolicy {
    let mut p = RecordingPolicy::new(
        name,
        RecordingPolicySpec {
            user: format!("{name}@acme.example"),
            identities: ids.iter().map(|s| s.to_string()).collect(),
            mode: Mode::Always,
            on_demand: None,
            retention_days: 90,
            suspended: false,
            notice: None,
        },
    );
    p.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: Some("acme".into()),
        uid: Some(format!("uid-{name}")),
        generation: Some(3),
        creation_timestamp: Some(at(created)),
        ..Default::default()
    };
    p
}

fn settings() -> Settings {
    Settings::default()
}

/// The configuration a recorder loads: the base ConfigMap and every shard, as projected.
fn config_of(plan: &Plan) -> rc::Config {
    let c = plan.children.as_ref().unwrap();
    let dir = std::env::temp_dir().join(format!(
        "opname-fleet-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("policies")).unwrap();
    std::fs::write(
        dir.join(CONFIG_KEY),
        &c.config_map.data.as_ref().unwrap()[CONFIG_KEY],
    )
    .unwrap();
    for (k, shard) in c.shards.iter().enumerate() {
        std::fs::write(
            dir.join(format!("policies/{k:02}.yaml")),
            &shard.data.as_ref().unwrap()[shards::SHARD_KEY],
        )
        .unwrap();
    }
    let config = rc::Config::load(&dir.join(CONFIG_KEY))
        .expect("the ConfigMaps hold a valid recorder configuration");
    let _ = std::fs::remove_dir_all(&dir);
    config
}

#[test]
fn renders_the_recorders_own_format_with_every_policy() {
    let mut bob = policy("bob", 2, &["1002"]);
    bob.spec.mode = Mode::OnDemand;
    bob.spec.on_demand = Some(OnDemand {
        keep_code: "#9".into(),
    });
    bob.spec.retention_days = 30;
    bob.spec.notice = Some(crate::crd::Notice {
        announced_by: crate::crd::Announcer::Pbx,
        text: Some("Dit gesprek wordt opgenomen.".into()),
    });
    let plan = plan(
        "acme",
        &[
            bob,
            policy(
                "alice",
                1,
                &["sip:alice@pbx.acme.example", "tel:+31201234567", "1001"],
            ),
        ],
        &settings(),
        None,
        &at(100),
    )
    .unwrap();
    let config = config_of(&plan);
    assert_eq!(config.namespace, "acme");
    assert_eq!(config.policies.len(), 2);
    assert_eq!(config.policies[0].name, "alice", "oldest first");
    assert_eq!(config.policies[1].mode, rc::Mode::OnDemand);
    assert_eq!(
        config.policies[1].on_demand.as_ref().unwrap().keep_code,
        "#9"
    );
    assert_eq!(config.policies[1].retention_days, 30);
    assert_eq!(
        config.policies[1].notice,
        Some(opname_model::policy::Notice {
            announced_by: opname_model::policy::Announcer::Pbx,
            text: Some("Dit gesprek wordt opgenomen.".into()),
        }),
        "the notice reaches the recorder's configuration"
    );
    assert_eq!(config.policies[0].notice, None);
    assert_eq!(config.store.url, settings().store.url);
    assert_eq!(
        config.spool.high_water_bytes,
        3 << 30,
        "three quarters of the 4Gi spool"
    );
    assert_eq!(quantity_bytes("500M"), Some(500_000_000));
    assert_eq!(quantity_bytes("4x"), None);
    // The recorder resolves the rendered policies with the same rule: no conflict is left, and
    // a number in another spelling finds alice.
    let claims = opname_model::policy::resolve_claims(
        config
            .policies
            .iter()
            .map(|p| (p.name.as_str(), p.identities.as_slice())),
    );
    assert!(claims.iter().all(|c| c.conflicts.is_empty()));
    let key = opname_model::identity::normalize("sip:+31201234567@gw").unwrap();
    let (owner, _) = config
        .policies
        .iter()
        .zip(&claims)
        .find(|(_, c)| c.own.iter().any(|(_, k)| *k == key))
        .unwrap();
    assert_eq!(owner.user, "alice@acme.example");
    for s in plan.statuses.values() {
        assert_eq!(s.conditions[0].type_, "Ready");
        assert_eq!(s.conditions[0].status, "True");
        assert_eq!(s.conditions[0].observed_generation, Some(3));
    }
    let deployment = &plan.children.as_ref().unwrap().deployment;
    assert_eq!(deployment.spec.replicas, Some(2));
    assert!(plan.events.is_empty());
}

#[test]
fn deployment_service_and_pdb_are_production_shaped() {
    let plan = plan(
        "acme",
        &[policy("alice", 1, &["1001"]), policy("bob", 2, &["1002"])],
        &settings(),
        None,
        &at(0),
    )
    .unwrap();
    let c = plan.children.unwrap();
    for meta in [
        &c.config_map.metadata,
        &c.deployment.metadata,
        &c.service.metadata,
        &c.pdb.metadata,
    ] {
        assert_eq!(meta.name.as_deref(), Some(NAME));
        assert_eq!(meta.namespace.as_deref(), Some("acme"));
        // Owned by no policy: 20,000 policies' references would not fit in one object.
        assert!(meta.owner_references.is_none());
    }
    // The projected configuration: the base file and every possible shard, optional.
    let volume = c
        .deployment
        .spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .as_ref()
        .unwrap()[0]
        .projected
        .clone()
        .unwrap();
    let sources = volume.sources.unwrap();
    assert_eq!(sources.len(), 1 + shards::MAX_SHARDS);
    let first = sources[1].config_map.as_ref().unwrap();
    assert_eq!(first.name, "opname-recorder-policies-00");
    assert_eq!(first.optional, Some(true));
    assert_eq!(first.items.as_ref().unwrap()[0].path, "policies/00.yaml");
    assert_eq!(c.shards.len(), 1);
    assert_eq!(
        c.shards[0].metadata.labels.as_ref().unwrap()[SHARD_LABEL],
        "true"
    );
    let spec = c.deployment.spec;
    assert_eq!(spec.replicas, Some(2), "minReplicas");
    let rolling = spec.strategy.clone().unwrap().rolling_update.unwrap();
    assert_eq!(
        (rolling.max_surge, rolling.max_unavailable),
        (Some(IntOrString::Int(1)), Some(IntOrString::Int(0))),
        "pod network: a new recorder before an old one stops"
    );
    let pod = spec.template.spec.unwrap();
    assert_eq!(
        pod.termination_grace_period_seconds,
        Some(10 + 3600 + 6 + 120 + 10),
        "preStop + drain + finalise + last uploads + 10 s"
    );
    let ctr = &pod.containers[0];
    assert_eq!(
        ctr.args.as_deref().unwrap(),
        ["serve", "--config", "/etc/opname/recorder.yaml"]
    );
    let sc = ctr.security_context.as_ref().unwrap();
    assert_eq!(
        (
            sc.read_only_root_filesystem,
            sc.run_as_non_root,
            sc.allow_privilege_escalation
        ),
        (Some(true), Some(true), Some(false))
    );
    assert_eq!(
        ctr.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/readyz")
    );
    assert_eq!(
        ctr.lifecycle
            .as_ref()
            .unwrap()
            .pre_stop
            .as_ref()
            .unwrap()
            .sleep
            .as_ref()
            .unwrap()
            .seconds,
        10
    );
    let env = ctr.env.as_ref().unwrap();
    let advertise = env
        .iter()
        .find(|e| e.name == "OPNAME_RTP_ADVERTISE")
        .unwrap();
    assert_eq!(
        advertise
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "status.podIP"
    );
    assert!(ctr.env_from.is_none(), "no credentials secret configured");
    let mounts: Vec<_> = ctr
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(mounts, ["/etc/opname", "/var/spool/opname"]);
    assert_eq!(pod.host_network, None);
    assert!(pod.affinity.is_none());
    // One headless Service per transport, each port named `sip`: the standard SRV names
    // `_sip._udp.opname-recorder.acme.svc` and `_sip._tcp.opname-recorder-tcp.acme.svc`.
    for (service, name, protocol) in [
        (&c.service, NAME, "UDP"),
        (&c.tcp_service, TCP_SERVICE, "TCP"),
    ] {
        assert_eq!(service.metadata.name.as_deref(), Some(name));
        let spec = service.spec.clone().unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        let ports: Vec<_> = spec
            .ports
            .unwrap()
            .iter()
            .map(|p| (p.name.clone().unwrap(), p.port, p.protocol.clone().unwrap()))
            .collect();
        assert_eq!(ports, [("sip".to_string(), 5060, protocol.to_string())]);
    }
    assert_eq!(
        c.pdb.spec.unwrap().max_unavailable,
        Some(IntOrString::Int(1))
    );
    assert!(c.hpa.is_none());
}

#[test]
fn replicas_follow_users_within_bounds_and_hpa_takes_over() {
    let many: Vec<_> = (0..1234)
        .map(|i| policy(&format!("u{i}"), i, &[&format!("{}", 10_000 + i)]))
        .collect();
    let mut s = settings();
    s.capacity.users_per_replica = 100;
    s.capacity.max_replicas = 10;
    let p = plan("acme", &many, &s, None, &at(0)).unwrap();
    assert_eq!(
        p.children.unwrap().deployment.spec.replicas,
        Some(10),
        "13 wanted, clamped to max"
    );
    s.capacity.max_replicas = 50;
    assert_eq!(
        plan("acme", &many, &s, None, &at(0))
            .unwrap()
            .children
            .unwrap()
            .deployment
            .spec
            .replicas,
        Some(13)
    );
    s.capacity.hpa = Some(HpaSettings {
        target_cpu_utilization: 60,
    });
    let c = plan("acme", &many, &s, None, &at(0))
        .unwrap()
        .children
        .unwrap();
    assert_eq!(c.deployment.spec.replicas, None, "the HPA owns replicas");
    let hpa = c.hpa.unwrap().spec;
    assert_eq!((hpa.min_replicas, hpa.max_replicas), (Some(13), 50));
}

#[test]
fn host_network_and_credentials() {
    let mut s = settings();
    s.rtp.mode = RtpMode::HostNetwork;
    s.store.credentials_secret = Some("opname-store".into());
    s.store
        .env
        .insert("AWS_ENDPOINT".into(), "https://s3.example".into());
    s.recorder.scheduling.node_selector = BTreeMap::from([("sbc".into(), "reachable".into())]);
    s.image_pull_secrets = vec!["registry".into()];
    s.recorder.service_account = Some("opname-recorder".into());
    s.log_format = crate::settings::LogFormat::Json;
    let c = plan("acme", &[policy("alice", 1, &["1001"])], &s, None, &at(0))
        .unwrap()
        .children
        .unwrap();
    // Every node may already run one: no surge pod that could find no node.
    let rolling = c
        .deployment
        .spec
        .strategy
        .clone()
        .unwrap()
        .rolling_update
        .unwrap();
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(0)));
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(1)));
    let pod = c.deployment.spec.template.spec.unwrap();
    assert_eq!(pod.host_network, Some(true));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    let anti = pod
        .affinity
        .as_ref()
        .unwrap()
        .pod_anti_affinity
        .as_ref()
        .unwrap();
    let term = &anti
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        term.topology_key, "kubernetes.io/hostname",
        "one host-network recorder per node"
    );
    assert_eq!(
        pod.node_selector.as_ref().unwrap()["sbc"],
        "reachable",
        "the platform's nodes, beside the operator's own anti-affinity"
    );
    assert_eq!(pod.image_pull_secrets.as_ref().unwrap()[0].name, "registry");
    assert_eq!(pod.service_account_name.as_deref(), Some("opname-recorder"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let json = pod.containers[0]
        .env
        .as_ref()
        .unwrap()
        .iter()
        .any(|e| e.name == "LOG_FORMAT" && e.value.as_deref() == Some("json"));
    assert!(json, "JSON logs from the recorders too");
    let ctr = &pod.containers[0];
    let env = ctr.env.as_ref().unwrap();
    assert_eq!(
        env.iter()
            .find(|e| e.name == "OPNAME_RTP_ADVERTISE")
            .unwrap()
            .value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "status.hostIP"
    );
    assert_eq!(
        env.iter()
            .find(|e| e.name == "AWS_ENDPOINT")
            .unwrap()
            .value
            .as_deref(),
        Some("https://s3.example")
    );
    assert_eq!(
        ctr.env_from.as_ref().unwrap()[0]
            .secret_ref
            .as_ref()
            .unwrap()
            .name,
        "opname-store"
    );
    let yaml = &c.config_map.data.unwrap()[CONFIG_KEY];
    assert!(
        !yaml.contains("secret") && !yaml.contains("AWS_"),
        "credentials never in the ConfigMap"
    );
}

#[test]
fn identity_conflict_older_wins_event_once_and_clears() {
    let alice = policy("alice", 1, &["1001", "sip:alice@pbx"]);
    let mallory = policy("mallory", 5, &["sip:+1001@elsewhere", "1666"]);
    let now = at(10);
    let p = plan(
        "acme",
        &[mallory.clone(), alice.clone()],
        &settings(),
        None,
        &now,
    )
    .unwrap();
    let config = config_of(&p);
    assert_eq!(
        config.policies[1].identities,
        ["1666"],
        "the contested identity stays with the older policy"
    );
    let st = &p.statuses["mallory"];
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "IdentityConflict")
    );
    let conflict = st
        .conditions
        .iter()
        .find(|c| c.type_ == "IdentityConflict")
        .unwrap();
    assert_eq!(conflict.status, "True");
    assert!(
        conflict.message.contains("policy alice"),
        "{}",
        conflict.message
    );
    assert_eq!(p.statuses["alice"].conditions[1].status, "False");
    assert_eq!(p.events.len(), 1);
    assert_eq!(
        (
            p.events[0].policy.as_str(),
            p.events[0].reason,
            p.events[0].warning
        ),
        ("mallory", "IdentityConflict", true)
    );
    // Reconciled again with the status written: no second event, transition time kept.
    let mut m2 = mallory.clone();
    m2.status = Some(st.clone());
    let again = plan(
        "acme",
        &[m2.clone(), alice.clone()],
        &settings(),
        None,
        &at(500),
    )
    .unwrap();
    assert!(again.events.is_empty());
    assert_eq!(
        again.statuses["mallory"].conditions[1].last_transition_time,
        now
    );
    // The conflict resolved: Normal event, Ready again.
    m2.spec.identities = vec!["1666".into()];
    let fixed = plan("acme", &[m2, alice], &settings(), None, &at(900)).unwrap();
    assert_eq!(fixed.events[0].reason, "IdentityConflictResolved");
    assert!(!fixed.events[0].warning);
    assert_eq!(fixed.statuses["mallory"].conditions[0].status, "True");
    assert_eq!(
        fixed.statuses["mallory"].conditions[1].last_transition_time,
        at(900)
    );
}

#[test]
fn suspended_or_deleted_policies_leave_no_fleet() {
    let mut a = policy("alice", 1, &["1001"]);
    a.spec.suspended = true;
    let p = plan("acme", &[a.clone()], &settings(), None, &at(0)).unwrap();
    assert!(p.children.is_none());
    assert_eq!(p.statuses["alice"].conditions[0].reason, "Suspended");
    let mut b = policy("bob", 2, &["1001"]);
    b.metadata.deletion_timestamp = Some(at(3));
    assert!(
        plan("acme", &[b], &settings(), None, &at(4))
            .unwrap()
            .children
            .is_none()
    );
    // A suspended policy claims nothing: another may use its devices.
    let c = policy("carol", 9, &["1001"]);
    let p = plan("acme", &[a, c], &settings(), None, &at(0)).unwrap();
    assert_eq!(config_of(&p).policies[0].name, "carol");
    assert_eq!(p.statuses["carol"].conditions[1].status, "False");
}

#[test]
fn retention_enforced_only_after_verification_and_for_the_policys_class() {
    use crate::retention::rules::Enforcement;
    let alice = policy("alice", 1, &["1001"]);
    let cond = |e: Option<&Enforcement>| {
        let p = plan("acme", std::slice::from_ref(&alice), &settings(), e, &at(0)).unwrap();
        let c = p.statuses["alice"]
            .conditions
            .iter()
            .find(|c| c.type_ == "RetentionEnforced")
            .unwrap()
            .clone();
        (c.status, c.reason)
    };
    assert_eq!(cond(None), ("Unknown".into(), "NotVerified".into()));
    let rules = Enforcement::LifecycleRules([30, 90].into_iter().collect());
    assert_eq!(
        cond(Some(&rules)),
        ("True".into(), "LifecycleRule".into()),
        "alice keeps 90 days"
    );
    let other = Enforcement::LifecycleRules([30].into_iter().collect());
    assert_eq!(cond(Some(&other)), ("False".into(), "RuleMissing".into()));
    assert_eq!(
        cond(Some(&Enforcement::Sweeper)),
        ("True".into(), "Sweeper".into())
    );
}

#[test]
fn ready_means_a_recorder_is_ready_to_record() {
    let policies = [policy("alice", 1, &["1001"]), policy("bob", 2, &["1002"])];
    let mut planned = plan("acme", &policies, &settings(), None, &at(0)).unwrap();
    let ready = |statuses: &BTreeMap<String, RecordingPolicyStatus>, name: &str| {
        let c = statuses[name]
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap()
            .clone();
        (c.status, c.reason, c.last_transition_time)
    };
    // One ready recorder: what the plan said stands.
    let mut serving = planned.statuses.clone();
    serving::require_ready_recorders("acme", &mut serving, &policies, 1, &at(5));
    assert_eq!(serving, planned.statuses);
    // None: not Ready, with what to look at.
    serving::require_ready_recorders("acme", &mut planned.statuses, &policies, 0, &at(5));
    assert_eq!(
        ready(&planned.statuses, "alice"),
        ("False".into(), "NoReadyRecorder".into(), at(5))
    );
    let c = &planned.statuses["bob"].conditions[0];
    assert!(
        c.message.contains("kubectl -n acme get pods"),
        "{}",
        c.message
    );
    // Still none a minute later: the same condition, its transition time kept (no status write).
    let mut later: Vec<_> = policies.to_vec();
    for p in &mut later {
        p.status = planned.statuses.get(&p.name_any()).cloned();
    }
    let mut again = fleet_plan_at(&later, 65);
    serving::require_ready_recorders("acme", &mut again, &later, 0, &at(65));
    assert_eq!(ready(&again, "alice").2, at(5));
    // A suspended policy keeps its own reason.
    let mut suspended = policy("carol", 3, &["1003"]);
    suspended.spec.suspended = true;
    let mut s = plan("acme", &[suspended.clone()], &settings(), None, &at(0))
        .unwrap()
        .statuses;
    serving::require_ready_recorders("acme", &mut s, &[suspended], 0, &at(5));
    assert_eq!(ready(&s, "carol").1, "Suspended");
}

fn fleet_plan_at(policies: &[RecordingPolicy], t: i64) -> BTreeMap<String, RecordingPolicyStatus> {
    plan("acme", policies, &settings(), None, &at(t))
        .unwrap()
        .statuses
}

/// A new policy in a large namespace rewrites no other policy's status: a status carries nothing
/// of the namespace as a whole, so a change costs one status write, not one per policy.
#[test]
fn a_new_policy_leaves_the_others_statuses_as_they_are() {
    let mut existing: Vec<RecordingPolicy> = (0..50)
        .map(|i| policy(&format!("u{i}"), i, &[&format!("{}", 1000 + i)]))
        .collect();
    let first = plan("acme", &existing, &settings(), None, &at(100)).unwrap();
    for p in &mut existing {
        p.status = Some(first.statuses[&p.name_any()].clone());
    }
    existing.push(policy("newcomer", 200, &["2000"]));
    let second = plan("acme", &existing, &settings(), None, &at(300)).unwrap();
    let rewritten: Vec<&String> = second
        .statuses
        .iter()
        .filter(|(name, s)| {
            existing
                .iter()
                .find(|p| &p.name_any() == *name)
                .and_then(|p| p.status.as_ref())
                != Some(*s)
        })
        .map(|(name, _)| name)
        .collect();
    assert_eq!(rewritten, ["newcomer"]);
}

/// `sip.tls`: the Secret mounted, port 5061 on the pod, the TCP Service (`_sips._tcp`) and the
/// NetworkPolicy, and the recorder configuration naming the mounted files.
#[test]
fn sip_over_tls_is_wired_through() {
    let mut s = settings();
    s.sip.tls = Some(crate::settings::SipTlsSettings {
        secret_name: "recorder-tls".into(),
        verify_clients: true,
    });
    s.sip.allow = vec!["10.0.0.0/8".parse().unwrap()];
    let planned = plan("acme", &[policy("alice", 1, &["1001"])], &s, None, &at(0)).unwrap();
    let c = planned.children.as_ref().unwrap();
    let config = config_of(&planned);
    let tls = config.sip.tls.as_ref().unwrap();
    assert_eq!(tls.listen.port(), 5061);
    assert_eq!(
        tls.cert_file,
        std::path::Path::new("/etc/opname-tls/tls.crt")
    );
    assert_eq!(
        tls.client_ca_file.as_deref(),
        Some(std::path::Path::new("/etc/opname-tls/ca.crt"))
    );
    let d = serde_json::to_value(&c.deployment).unwrap();
    let pod = &d["spec"]["template"]["spec"];
    assert!(
        pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["secret"]["secretName"] == "recorder-tls")
    );
    let container = &pod["containers"][0];
    assert!(
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["containerPort"] == 5061)
    );
    assert!(
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/etc/opname-tls")
    );
    let tcp = serde_json::to_value(&c.tcp_service).unwrap();
    assert_eq!(tcp["spec"]["ports"][1]["name"], "sips");
    let udp = serde_json::to_value(&c.service).unwrap();
    assert_eq!(
        udp["spec"]["ports"].as_array().unwrap().len(),
        1,
        "no TLS over UDP"
    );
    let np = serde_json::to_value(c.network_policy.as_ref().unwrap()).unwrap();
    assert!(
        np["spec"]["ingress"][0]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["port"] == 5061)
    );
    // Without TLS, none of it.
    let plain = plan(
        "acme",
        &[policy("alice", 1, &["1001"])],
        &settings(),
        None,
        &at(0),
    )
    .unwrap();
    assert!(config_of(&plain).sip.tls.is_none());
}
