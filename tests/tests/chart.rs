//! The Helm chart renders and lints with Helm's own code (PyPI `helm-python-sdk`), for the
//! default values and for the other modes, and what it renders is what the operator reads.

use std::collections::BTreeSet;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use opname_operator::settings::{RtpMode, Settings};
use opname_tests::helm::render;
use serde_json::{Value, json};

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn settings_of(docs: &[Value]) -> Settings {
    let cm = find(docs, "ConfigMap")[0];
    Settings::parse(cm["data"]["operator.yaml"].as_str().unwrap())
        .expect("the rendered operator.yaml is valid")
}

#[test]
fn default_values_render_lint_and_configure_the_operator() {
    let (lint, docs) = render(json!({"store": {"url": "s3://acme-recordings"}}));
    assert!(lint["errors"].as_array().unwrap().is_empty(), "{lint}");
    let severe: Vec<&Value> = lint["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_i64() >= Some(2))
        .collect();
    assert!(severe.is_empty(), "lint warnings/errors: {severe:?}");
    for (kind, n) in [
        // The operator's and the recordings service's.
        ("ServiceAccount", 2),
        // Theirs, and the viewer and exporter roles admins bind.
        ("ClusterRole", 4),
        ("ClusterRoleBinding", 2),
        ("Role", 1),
        ("RoleBinding", 1),
        ("ConfigMap", 1),
        // The operator and the recordings service.
        ("Deployment", 2),
        ("Service", 2),
        ("Ingress", 0),
        // The operator's: one replica stays through a drain.
        ("PodDisruptionBudget", 1),
        ("CustomResourceDefinition", 5),
        // The monitoring kit is opt-in (its CRDs may not exist).
        ("PodMonitor", 0),
        ("ServiceMonitor", 0),
        ("PrometheusRule", 0),
    ] {
        assert_eq!(find(&docs, kind).len(), n, "{kind}");
    }
    let named = |kind: &str, name: &str| {
        find(&docs, kind)
            .into_iter()
            .find(|d| d["metadata"]["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{kind} {name}"))
    };
    let viewer = named("ClusterRole", "opname-recordings-viewer");
    assert_eq!(
        viewer["rules"],
        json!([{"apiGroups": ["opname.dev"], "resources": ["recordings"], "verbs": ["list", "get"]}])
    );
    assert!(
        viewer["metadata"]["labels"]
            .as_object()
            .unwrap()
            .keys()
            .all(|k| !k.contains("aggregate-to")),
        "not aggregated into view"
    );
    let recordings = named("Deployment", "opname-recordings");
    let args = &recordings["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(args[0], "recordings");
    assert_eq!(args[6], "true", "Secure cookie by default");
    // Least privilege: the service behind the Ingress is not the operator.
    let pod = &recordings["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "opname-recordings");
    assert_eq!(
        pod["containers"][0]["envFrom"][0]["secretRef"]["name"],
        "opname-recordings-store"
    );
    let service_role = named("ClusterRole", "opname-recordings");
    let granted: BTreeSet<String> = service_role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            let verbs = r["verbs"].as_array().unwrap().clone();
            r["resources"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(move |res| {
                    let verbs = verbs.clone();
                    verbs
                        .into_iter()
                        .map(move |v| format!("{} {}", v.as_str().unwrap(), res.as_str().unwrap()))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let expected: BTreeSet<String> = [
        "create tokenreviews",
        "create subjectaccessreviews",
        "get recordingpolicies",
        "list recordingpolicies",
        "watch recordingpolicies",
        "get recordingholds",
        "list recordingholds",
        "watch recordingholds",
        "get bulkexports",
        "list bulkexports",
        "create bulkexports",
        "get namespaces",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert_eq!(granted, expected);
    let operator_role = named("ClusterRole", "opname-operator");
    assert!(
        !operator_role.to_string().contains("tokenreviews"),
        "the operator reviews no tokens"
    );
    let s = settings_of(&docs);
    assert_eq!(s.store.url, "s3://acme-recordings");
    assert_eq!(
        s.recordings,
        opname_operator::settings::RecordingsSettings::default(),
        "tokens for the service's own audience, no proxy trusted"
    );
    assert_eq!(s.store.credentials_secret.as_deref(), Some("opname-store"));
    assert_eq!(s.capacity.max_calls_per_replica, 200);
    assert_eq!(s.rtp.mode, RtpMode::PodNetwork);
    assert!(s.retention.lifecycle);
    assert_eq!(s.retention.interval_seconds, 300);
    assert_eq!(s.export.min_retention_days, 180);
    assert_eq!(s.export.part_size_bytes, 2 << 30);
    assert_eq!(
        s.export.config_map, "opname-operator",
        "the Job mounts this very file"
    );
    assert_eq!(
        s.export.credentials_secret.as_deref(),
        Some("opname-operator-store")
    );
    assert_eq!(s.export.smtp, None);
    // Least privilege: no wildcards, no secrets, leases only in the release namespace.
    let rules = &named("ClusterRole", "opname-operator")["rules"];
    let text = rules.to_string();
    assert!(
        !text.contains('*') && !text.contains("secrets") && !text.contains("leases"),
        "{text}"
    );
    let deployment = &named("Deployment", "opname-operator");
    let ctr = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(ctr["args"][0], "run");
    assert_eq!(
        ctr["envFrom"][0]["secretRef"]["name"], "opname-operator-store",
        "the operator's own store credentials"
    );
    assert_eq!(ctr["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(deployment["spec"]["replicas"], 2);
}

#[test]
fn other_modes_render_too() {
    let (lint, docs) = render(json!({
        "crds": {"install": false},
        "logFormat": "json",
        "operator": {"replicas": 1},
        "store": {"url": "file:///var/lib/opname", "credentialsSecret": null, "env": {}},
        "capacity": {"hpa": {"targetCpuUtilization": 60}, "minReplicas": 1},
        "recorder": {"resources": {"cpuLimit": "2"}},
        "export": {"minRetentionDays": 0, "smtp": {"host": "smtp.example.com", "from": "rec@example.com"}},
        "recordings": {"ingress": {"enabled": true, "host": "rec.example.com", "tlsSecret": "rec-tls", "className": "nginx"}},
        "sip": {"allow": ["10.20.0.0/16", "192.0.2.7"], "refuse": "drop", "tls": {"secretName": "recorder-tls", "verifyClients": true}},
        "rtp": {"mode": "HostNetwork", "latching": true, "plainWithTls": false}
    }));
    assert!(lint["errors"].as_array().unwrap().is_empty(), "{lint}");
    let s = settings_of(&docs);
    assert_eq!(s.rtp.mode, RtpMode::HostNetwork);
    assert_eq!(s.capacity.hpa.unwrap().target_cpu_utilization, 60);
    assert_eq!(s.store.credentials_secret, None);
    assert_eq!(s.recorder.resources.cpu_limit.as_deref(), Some("2"));
    assert_eq!(s.capacity.min_replicas, 1);
    assert_eq!(s.export.min_retention_days, 0);
    assert_eq!(s.sip.allow.len(), 2);
    assert_eq!(s.sip.refuse, opname_model::config::Refuse::Drop);
    let tls = s.sip.tls.unwrap();
    assert_eq!(
        (tls.secret_name.as_str(), tls.verify_clients),
        ("recorder-tls", true)
    );
    assert!(s.rtp.latching);
    assert!(!s.rtp.plain_with_tls);
    assert!(find(&docs, "CustomResourceDefinition").is_empty());
    assert_eq!(s.log_format, opname_operator::settings::LogFormat::Json);
    for d in find(&docs, "Deployment") {
        let env = &d["spec"]["template"]["spec"]["containers"][0]["env"];
        assert!(
            env.as_array()
                .unwrap()
                .iter()
                .any(|e| e["name"] == "LOG_FORMAT" && e["value"] == "json"),
            "{}: {env}",
            d["metadata"]["name"]
        );
    }
    assert!(
        find(&docs, "PodDisruptionBudget").is_empty(),
        "one replica: a budget would block every drain"
    );
    let ingress = find(&docs, "Ingress")[0];
    assert_eq!(ingress["spec"]["rules"][0]["host"], "rec.example.com");
    assert_eq!(ingress["spec"]["tls"][0]["secretName"], "rec-tls");
    let smtp = s.export.smtp.unwrap();
    assert_eq!(
        (smtp.host.as_str(), smtp.port, smtp.starttls),
        ("smtp.example.com", 587, true)
    );
}

#[test]
fn values_the_schema_does_not_know_are_refused() {
    for (values, expected) in [
        // No default bucket: S3 bucket names are global.
        (json!({}), "store.url is required"),
        (
            json!({"store": {"url": "s3://b"}, "recorder": {"complexty": 3}}),
            "'complexty' not allowed",
        ),
        (
            json!({"store": {"url": "s3://b"}, "operator": {"image": "ghcr.io/x/y:1"}}),
            "/operator/image",
        ),
        (
            json!({"store": {"url": "s3://b"}, "rtp": {"mode": "Host"}}),
            "/rtp/mode",
        ),
        (json!({"store": {"url": "bucket"}}), "/store/url"),
        (
            json!({"store": {"url": "s3://b"}, "recorder": {"scheduling": {"nodeSelectr": {}}}}),
            "'nodeSelectr' not allowed",
        ),
    ] {
        let refused = opname_tests::helm::try_render(values.clone())
            .err()
            .unwrap_or_else(|| panic!("{values} was accepted"));
        assert!(refused.contains(expected), "{values}: {refused}");
    }
}

/// The scheduling knobs used by every workload below.
fn scheduling(zone: &str) -> Value {
    json!({
        "nodeSelector": {"opname.dev/zone": zone},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": zone, "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]}}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway"}]
    })
}

fn assert_scheduled(pod: &Value, zone: &str, own: &Value, what: &str) {
    assert_eq!(pod["nodeSelector"]["opname.dev/zone"], zone, "{what}");
    assert_eq!(pod["tolerations"][0]["value"], zone, "{what}");
    assert!(pod["affinity"]["nodeAffinity"].is_object(), "{what}: {pod}");
    let spread = &pod["topologySpreadConstraints"][0];
    assert_eq!(spread["maxSkew"], 1, "{what}");
    assert_eq!(
        &spread["labelSelector"]["matchLabels"], own,
        "{what}: a constraint without selector spreads the workload's own pods"
    );
    assert_eq!(pod["imagePullSecrets"][0]["name"], "registry", "{what}");
}

#[test]
fn every_workload_takes_the_scheduling_knobs_and_pinned_images() {
    let digest = format!("sha256:{}", "ab".repeat(32));
    let (lint, docs) = render(json!({
        "store": {"url": "s3://acme-recordings"},
        "imagePullSecrets": ["registry"],
        "operator": {"scheduling": scheduling("ops"), "image": {"repository": "registry.example/opname-operator", "digest": digest}},
        "recordings": {"scheduling": scheduling("web")},
        "recorder": {"scheduling": scheduling("sip"), "image": {"repository": "registry.example/opname-recorder", "tag": "0.2.0"}, "serviceAccountName": "opname-recorder"},
        "frontDoor": {"enabled": true, "scheduling": scheduling("edge")},
        "export": {"scheduling": scheduling("batch")},
        "rtp": {"mode": "HostNetwork"}
    }));
    assert!(lint["errors"].as_array().unwrap().is_empty(), "{lint}");
    let deployment = |name: &str| {
        find(&docs, "Deployment")
            .into_iter()
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
            .clone()
    };
    for (name, zone) in [("opname-operator", "ops"), ("opname-recordings", "web")] {
        let d = deployment(name);
        let pod = &d["spec"]["template"]["spec"];
        assert_scheduled(pod, zone, &d["spec"]["selector"]["matchLabels"], name);
        assert_eq!(
            pod["containers"][0]["image"],
            format!("registry.example/opname-operator@{digest}"),
            "the digest wins"
        );
    }
    // The operator makes the rest from the configuration the chart renders.
    let s = settings_of(&docs);
    assert_eq!(s.recorder.image, "registry.example/opname-recorder:0.2.0");
    assert_eq!(
        s.export.image,
        format!("registry.example/opname-operator@{digest}")
    );
    let policy: opname_operator::crd::RecordingPolicy = serde_saphyr::from_str(
        &std::fs::read_to_string(
            opname_tests::workspace().join("examples/10-policy-alice-always.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    let planned = opname_operator::fleet::plan("acme", &[policy], &s, None, &now)
        .unwrap()
        .children
        .unwrap();
    let recorders = serde_json::to_value(&planned.deployment).unwrap();
    let pod = &recorders["spec"]["template"]["spec"];
    assert_scheduled(
        pod,
        "sip",
        &recorders["spec"]["selector"]["matchLabels"],
        "recorders",
    );
    let anti =
        &pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"];
    assert_eq!(
        anti[0]["topologyKey"], "kubernetes.io/hostname",
        "host networking's one recorder per node stays beside the platform's affinity"
    );
    let door = serde_json::to_value(
        opname_operator::fleet::front_door::children("acme", &s, &[]).deployment,
    )
    .unwrap();
    assert_scheduled(
        &door["spec"]["template"]["spec"],
        "edge",
        &door["spec"]["selector"]["matchLabels"],
        "front door",
    );
    let job =
        serde_json::to_value(opname_operator::export::controller::job("acme", "oct", &s)).unwrap();
    assert_scheduled(
        &job["spec"]["template"]["spec"],
        "batch",
        &job["spec"]["template"]["metadata"]["labels"],
        "export Job",
    );
    // A tag defaults to the chart's appVersion.
    let (_, plain) = render(json!({"store": {"url": "s3://b"}}));
    assert_eq!(
        settings_of(&plain).recorder.image,
        "ghcr.io/opname/opname-recorder:0.1.0"
    );
}

#[test]
fn crds_are_templates_kept_on_uninstall_and_match_the_generated_ones() {
    let (_, docs) = render(json!({"store": {"url": "s3://b"}}));
    let crds = find(&docs, "CustomResourceDefinition");
    let generated = opname_operator::crd::crd_yaml().unwrap();
    assert_eq!(crds.len(), generated.len());
    for (_, yaml) in generated {
        // Typed, so that Helm's 3650 and the generator's 3650.0 compare equal.
        let want: CustomResourceDefinition = serde_saphyr::from_str(&yaml).unwrap();
        let name = want.metadata.name.clone();
        let got = crds
            .iter()
            .find(|c| c["metadata"]["name"].as_str() == name.as_deref())
            .expect("rendered");
        let got: CustomResourceDefinition = serde_json::from_value((*got).clone()).unwrap();
        assert_eq!(got.spec, want.spec, "{name:?}");
        assert_eq!(
            got.metadata.annotations.unwrap()["helm.sh/resource-policy"],
            "keep",
            "helm uninstall must not delete every policy"
        );
    }
}

#[test]
fn notes_name_the_next_steps() {
    let r = opname_tests::helm::try_render(json!({
        "store": {"url": "s3://acme-recordings"},
        "recordings": {"ingress": {"enabled": true, "host": "rec.example.com"}}
    }))
    .unwrap();
    for step in [
        "create secret generic opname-operator-store",
        "create secret generic opname-store",
        "eks.amazonaws.com/role-arn",
        "kubectl apply -f examples/10-policy-alice-always.yaml",
        "https://rec.example.com/",
        "--audience opname.dev/recordings",
        "sip.allow is empty",
    ] {
        assert!(
            r.notes.contains(step),
            "NOTES.txt lacks {step:?}:\n{}",
            r.notes
        );
    }
}

/// The chart's `ci/` values files (chart-testing's convention), which the README's install
/// section names: each renders and lints, and configures what its comment says.
#[test]
fn the_install_values_files_render() {
    let dir = opname_tests::workspace().join("charts/opname/ci");
    let mut seen = Vec::new();
    for file in opname_tests::files_with(&dir, "-values.yaml") {
        let values: Value =
            serde_saphyr::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let (lint, docs) = render(values);
        assert!(
            lint["errors"].as_array().unwrap().is_empty(),
            "{file:?}: {lint}"
        );
        let s = settings_of(&docs);
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let operator = find(&docs, "Deployment")
            .into_iter()
            .find(|d| d["metadata"]["name"] == "opname-operator")
            .unwrap()
            .clone();
        let env_from = &operator["spec"]["template"]["spec"]["containers"][0]["envFrom"];
        let accounts = find(&docs, "ServiceAccount");
        match name.as_str() {
            "irsa-values.yaml" => {
                assert!(env_from.is_null(), "no key Secret: {env_from}");
                assert_eq!(s.store.credentials_secret, None);
                assert_eq!(s.export.credentials_secret, None);
                assert_eq!(
                    s.recorder.service_account.as_deref(),
                    Some("opname-recorder")
                );
                for sa in ["opname-operator", "opname-recordings"] {
                    let sa = accounts
                        .iter()
                        .find(|d| d["metadata"]["name"] == sa)
                        .unwrap();
                    assert!(
                        sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
                            .as_str()
                            .unwrap()
                            .ends_with(sa["metadata"]["name"].as_str().unwrap()),
                        "{sa}"
                    );
                }
            }
            "static-keys-values.yaml" => {
                assert_eq!(env_from[0]["secretRef"]["name"], "opname-operator-store");
                assert_eq!(s.store.credentials_secret.as_deref(), Some("opname-store"));
            }
            other => panic!("{other}: say what it configures here"),
        }
        seen.push(name);
    }
    seen.sort();
    assert_eq!(seen, ["irsa-values.yaml", "static-keys-values.yaml"]);
}
