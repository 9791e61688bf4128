//! The chain YAML → operator → recorder → recording on a real control plane: the examples are
//! applied to a real kube-apiserver (their namespace enforces PodSecurity `restricted`), the real
//! `opname-operator` reconciles them holding only the chart's RBAC, the real Deployment and
//! ReplicaSet controllers make the recorder's Pod, the process kubelet runs `opname-recorder`
//! from it, and a SIPp SIPREC call to that recorder is recorded under the applied policy.

use std::collections::HashMap;
use std::time::Duration;

use opname_tests::audio::speech;
use opname_tests::controlplane::ControlPlane as ApiServer;
use opname_tests::kubelet::Kubelet;
use opname_tests::{bin, files_with, http_get, operator, sipp_call, wait_for, workspace};
use serde_json::{Value, json};

/// The fleet's child of one kind (a real namespace has more, such as `kube-root-ca.crt`).
fn fleet(server: &ApiServer, group: &str, version: &str, plural: &str) -> Vec<Value> {
    server
        .list(group, version, plural, Some("acme"))
        .into_iter()
        .filter(|o| o["metadata"]["name"] == opname_operator::fleet::NAME)
        .collect()
}

fn one(server: &ApiServer, group: &str, version: &str, plural: &str) -> Option<Value> {
    let items = fleet(server, group, version, plural);
    assert!(items.len() <= 1, "at most one {plural}: {items:?}");
    items.into_iter().next()
}

fn recorder_config(server: &ApiServer) -> Option<opname_model::config::Config> {
    opname_tests::fleet_config(&server.list("", "v1", "configmaps", Some("acme")))
}

fn condition(p: &Value, type_: &str) -> Option<(String, String)> {
    p["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .map(|c| {
            (
                c["status"].as_str().unwrap_or_default().into(),
                c["reason"].as_str().unwrap_or_default().into(),
            )
        })
}

fn policy(server: &ApiServer, name: &str) -> Value {
    server
        .list("opname.dev", "v1alpha1", "recordingpolicies", Some("acme"))
        .into_iter()
        .find(|p| p["metadata"]["name"] == name)
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_yaml_to_recording_through_operator_and_recorder() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let mut server = ApiServer::start().await;
    server.start_controllers().await;
    let admin = server.client().await;
    server.install_crds(&admin).await;
    server.namespaces(&admin, &["opname-system"]).await;
    let store = dir.join("store");
    server
        .install_chart_rbac(
            &admin,
            json!({"store": {"url": format!("file://{}", store.display())}}),
        )
        .await;
    let kubeconfig = server
        .service_account_kubeconfig(&admin, "opname-system", "opname-operator")
        .await;
    let settings = dir.join("operator.yaml");
    std::fs::write(
        &settings,
        format!(
            "recorder:\n  image: opname-recorder:dev\n  drainSeconds: 5\n  preStopSeconds: 1\nstore:\n  url: file://{}\n  prefix: recordings\ncapacity:\n  minReplicas: 1\n  maxReplicas: 1\n",
            store.display()
        ),
    )
    .unwrap();
    let kubelet = Kubelet::start(
        &server,
        HashMap::from([("opname-recorder".to_string(), bin("opname-recorder"))]),
        dir.join("pods"),
    )
    .await;
    let mut op = operator(&kubeconfig, dir, &settings);

    // Everything in examples/ is accepted as written.
    for f in files_with(&workspace().join("examples"), ".yaml") {
        for (code, body) in server
            .create_yaml(&std::fs::read_to_string(&f).unwrap())
            .await
        {
            assert_eq!(code, 201, "{}: {body}", f.display());
        }
    }

    // The shipped export passes the gate as its comment says: alice's recordings (kept a year)
    // go, bob's (30 days) are named as left out, and the month is Amsterdam's.
    let example_export = || {
        server
            .list("opname.dev", "v1alpha1", "bulkexports", Some("acme"))
            .into_iter()
            .find(|e| e["metadata"]["name"] == "acme-2026-10")
            .map(|e| e["status"].clone())
            .unwrap_or_default()
    };
    wait_for("the example export accepted", 30, || {
        example_export()["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Accepted"))
    })
    .await;
    let accepted = example_export();
    let gate = &accepted["conditions"][0];
    assert_eq!(gate["status"], "True", "{accepted}");
    assert_eq!(
        gate["message"],
        "recordings kept less than 180 days are not exported (users: bob@acme.example)"
    );
    assert_eq!(accepted["timeZone"], "Europe/Amsterdam");
    assert_eq!(accepted["locale"], "nl");
    // The shipped schedule makes the last ended month's export at once, as its comment says.
    wait_for("the scheduled example's export", 30, || {
        server
            .list("opname.dev", "v1alpha1", "bulkexports", Some("acme"))
            .iter()
            .any(|e| {
                e["metadata"]["labels"]["opname.dev/schedule"] == "acme-monthly"
                    && e["metadata"]["name"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("acme-monthly-"))
            })
    })
    .await;

    // The fleet appears with both users compiled in.
    wait_for("the recorder ConfigMap", 30, || {
        recorder_config(&server).is_some_and(|c| c.policies.len() == 2)
    })
    .await;
    let config = recorder_config(&server).unwrap();
    assert_eq!(config.namespace, "acme");
    assert_eq!(config.policies[0].user, "alice@acme.example");
    assert_eq!(
        config.policies[1].mode,
        opname_model::config::Mode::OnDemand
    );
    // The reconcile applies the ConfigMap first; the Deployment follows in the same pass.
    wait_for("the Deployment", 10, || {
        one(&server, "apps", "v1", "deployments").is_some()
    })
    .await;
    let deployment = one(&server, "apps", "v1", "deployments").expect("Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["serve", "--config", "/etc/opname/recorder.yaml"])
    );
    let service = one(&server, "", "v1", "services").expect("Service");
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "sip", "port": 5060, "protocol": "UDP", "targetPort": 5060}])
    );
    assert_eq!(
        service["spec"]["clusterIP"], "None",
        "headless: DNS lists each recorder"
    );
    let tcp = server
        .list("", "v1", "services", Some("acme"))
        .into_iter()
        .find(|s| s["metadata"]["name"] == opname_operator::fleet::TCP_SERVICE)
        .expect("the TCP Service");
    assert_eq!(tcp["spec"]["ports"][0]["protocol"], "TCP");
    assert_eq!(tcp["spec"]["clusterIP"], "None");
    assert!(
        one(&server, "policy", "v1", "poddisruptionbudgets").is_some(),
        "PDB"
    );
    assert!(
        deployment["metadata"]["ownerReferences"].is_null(),
        "owned by no policy (20,000 owner references would not fit in one object)"
    );
    // Ready once a recorder is: the EndpointSlice lists it ready.
    wait_for("Ready on alice", 60, || {
        condition(&policy(&server, "alice"), "Ready") == Some(("True".into(), "Compiled".into()))
    })
    .await;
    assert_eq!(policy(&server, "alice")["status"]["observedGeneration"], 1);

    // The kubelet runs the recorder; a SIPp call from Alice's mobile is recorded under her policy.
    wait_for("a running recorder", 30, || {
        kubelet
            .endpoints("acme")
            .iter()
            .any(|(_, h)| http_get(*h, "/healthz").is_ok_and(|(c, _)| c == 200))
    })
    .await;
    let (sip, _) = kubelet.endpoints("acme")[0];
    speech(
        dir,
        "caller",
        "This call is recorded for Alice.",
        "en-us",
        0.2,
        3.0,
    );
    speech(dir, "callee", "Understood, thank you.", "en-gb", 1.5, 3.0);
    sipp_call(
        sip,
        "u1",
        dir,
        "sip:+31612345678@sbc.example",
        "sip:+4930123456@carrier.example",
        3000,
    );
    wait_for("the recording in the store", 10, || {
        files_with(&store, ".json").len() == 1
    })
    .await;
    let json_file = &files_with(&store, ".json")[0];
    let record: Value = serde_json::from_slice(&std::fs::read(json_file).unwrap()).unwrap();
    assert_eq!(record["user"], "alice@acme.example");
    assert_eq!(record["policy"], "alice");
    assert_eq!(record["retentionDays"], 365);
    assert_eq!(
        record["notice"]["announcedBy"], "PBX",
        "the example's notice, through the operator and the recorder into the record"
    );
    assert!(
        json_file
            .to_string_lossy()
            .contains("/recordings/r365/acme/"),
        "retention class and namespace in the key: {}",
        json_file.display()
    );
    assert!(json_file.with_extension("opus").exists());

    // A policy change reaches the running recorder through the ConfigMap, without a restart.
    let pod_before = kubelet.running("acme")[0].clone();
    let (code, body) = server
        .request(
            "PATCH",
            "/apis/opname.dev/v1alpha1/namespaces/acme/recordingpolicies/bob",
            "application/merge-patch+json",
            r#"{"spec":{"retentionDays":45}}"#,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["metadata"]["generation"], 2);
    wait_for("the ConfigMap to follow", 20, || {
        recorder_config(&server).is_some_and(|c| c.policies[1].retention_days == 45)
    })
    .await;
    wait_for("observedGeneration 2", 10, || {
        policy(&server, "bob")["status"]["observedGeneration"] == 2
    })
    .await;
    let pods = kubelet.running("acme");
    assert_eq!(
        pods,
        std::slice::from_ref(&pod_before),
        "no restart for a policy change"
    );
    let pod_log = dir.join("pods/acme").join(&pod_before).join("log");
    wait_for("the recorder to reload", 10, || {
        std::fs::read_to_string(&pod_log)
            .unwrap_or_default()
            .contains("policies reloaded")
    })
    .await;

    // Two policies claiming one identity: the newer one gets the condition and an Event.
    let mallory = r#"{"apiVersion":"opname.dev/v1alpha1","kind":"RecordingPolicy","metadata":{"name":"mallory","namespace":"acme"},"spec":{"user":"mallory@acme.example","identities":["tel:+31612345678","1666"],"retentionDays":7}}"#;
    let (code, body) = server
        .request(
            "POST",
            "/apis/opname.dev/v1alpha1/namespaces/acme/recordingpolicies",
            "application/json",
            mallory,
        )
        .await;
    assert_eq!(code, 201, "{body}");
    wait_for("IdentityConflict on mallory", 20, || {
        condition(&policy(&server, "mallory"), "IdentityConflict").is_some_and(|(s, _)| s == "True")
    })
    .await;
    assert_eq!(
        condition(&policy(&server, "mallory"), "Ready").unwrap().1,
        "IdentityConflict"
    );
    assert_eq!(
        condition(&policy(&server, "alice"), "IdentityConflict")
            .unwrap()
            .0,
        "False"
    );
    wait_for("the conflict Event", 10, || {
        server
            .list("events.k8s.io", "v1", "events", Some("acme"))
            .iter()
            .any(|e| {
                e["reason"] == "IdentityConflict"
                    && e["regarding"]["name"] == "mallory"
                    && e["type"] == "Warning"
            })
    })
    .await;
    let config = recorder_config(&server).unwrap();
    let mallory_ids = &config
        .policies
        .iter()
        .find(|p| p.name == "mallory")
        .unwrap()
        .identities;
    assert_eq!(
        mallory_ids,
        &["1666"],
        "the contested identity stays with alice"
    );
    // Resolved: the condition clears itself.
    let (code, _) = server
        .request(
            "PATCH",
            "/apis/opname.dev/v1alpha1/namespaces/acme/recordingpolicies/mallory",
            "application/merge-patch+json",
            r#"{"spec":{"identities":["1666"]}}"#,
        )
        .await;
    assert_eq!(code, 200);
    wait_for("the conflict to clear", 20, || {
        condition(&policy(&server, "mallory"), "IdentityConflict")
            .is_some_and(|(s, _)| s == "False")
    })
    .await;
    // A local directory store has no lifecycle rules: the sweeper enforces retention.
    wait_for("RetentionEnforced", 20, || {
        condition(&policy(&server, "alice"), "RetentionEnforced")
            == Some(("True".into(), "Sweeper".into()))
    })
    .await;

    // Kill the operator and start another: nothing duplicated, nothing lost, nothing recreated.
    let uid = one(&server, "apps", "v1", "deployments").unwrap()["metadata"]["uid"].clone();
    op.signal("KILL");
    op.wait_exit(Duration::from_secs(5));
    let _op2 = operator(&kubeconfig, dir, &settings);
    // The new replica waits for the dead one's lease (15 s) before reconciling.
    let log = || std::fs::read_to_string(dir.join("operator.log")).unwrap_or_default();
    for _ in 0..400 {
        if log().matches("starting the controller").count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        log().matches("starting the controller").count() >= 2,
        "the second operator did not take over:\n{}",
        log()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = one(&server, "apps", "v1", "deployments").unwrap();
    assert_eq!(d["metadata"]["uid"], uid, "same Deployment, not recreated");
    assert_eq!(fleet(&server, "", "v1", "configmaps").len(), 1);
    assert_eq!(recorder_config(&server).unwrap().policies.len(), 3);

    // Deleting every policy removes the fleet (owner-reference garbage collection).
    for name in ["alice", "bob", "mallory"] {
        let (code, body) = server
            .request(
                "DELETE",
                &format!("/apis/opname.dev/v1alpha1/namespaces/acme/recordingpolicies/{name}"),
                "application/json",
                "",
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }
    // The operator deletes the fleet of a namespace without policies (within its 30 s sweep);
    // the real garbage collector takes the ReplicaSet and Pods with the Deployment.
    let gone = || {
        ["configmaps", "services"]
            .iter()
            .all(|p| fleet(&server, "", "v1", p).is_empty())
            && !server
                .list("", "v1", "configmaps", Some("acme"))
                .iter()
                .any(|c| c["metadata"]["labels"][opname_operator::fleet::SHARD_LABEL] == "true")
            && server.list("", "v1", "services", Some("acme")).is_empty()
            && fleet(&server, "apps", "v1", "deployments").is_empty()
            && fleet(&server, "policy", "v1", "poddisruptionbudgets").is_empty()
    };
    for _ in 0..600 {
        if gone() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        gone(),
        "the fleet did not go: {:?}\n{}",
        server
            .list("", "v1", "services", Some("acme"))
            .iter()
            .map(|s| s["metadata"]["name"].clone())
            .collect::<Vec<_>>(),
        log()
            .lines()
            .filter(|l| !l.contains("cert bypassed"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // The ReplicaSet goes, its Pod is deleted: preStop, SIGTERM, the recorder drains and exits.
    wait_for("the recorder pod to stop", 30, || {
        kubelet.endpoints("acme").is_empty()
    })
    .await;
    server.assert_chart_rbac_sufficed();
}

#[tokio::test]
async fn invalid_resources_are_refused_with_clear_messages() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let server = ApiServer::start().await;
    let admin = server.client().await;
    server.install_crds(&admin).await;
    server.namespaces(&admin, &["acme"]).await;
    let path = "/apis/opname.dev/v1alpha1/namespaces/acme/recordingpolicies";
    let policy = |spec: &str| {
        format!(
            r#"{{"apiVersion":"opname.dev/v1alpha1","kind":"RecordingPolicy","metadata":{{"name":"p"}},"spec":{spec}}}"#
        )
    };
    let cases = [
        (
            r#"{"user":"u","identities":["1001"]}"#,
            "retentionDays: Required value",
        ),
        (
            r#"{"user":"u","identities":["1001"],"retentionDays":0}"#,
            "should be greater than or equal to 1",
        ),
        (
            r#"{"user":"u","identities":["1001"],"retentionDays":4000}"#,
            "should be less than or equal to 3650",
        ),
        (
            r#"{"user":"u","identities":[],"retentionDays":30}"#,
            "at least 1 items",
        ),
        (
            r#"{"user":"u","identities":["1001","1001"],"retentionDays":30}"#,
            "Duplicate value",
        ),
        (
            r#"{"user":"u","identities":["not a device!"],"retentionDays":30}"#,
            "should match",
        ),
        (
            r#"{"user":"u","identities":["1001"],"retentionDays":30,"mode":"Sometimes"}"#,
            "Unsupported value",
        ),
        (
            r#"{"user":"u","identities":["1001"],"retentionDays":30,"onDemand":{"keepCode":"*44"}}"#,
            "onDemand settings are only allowed with mode OnDemand",
        ),
        (
            r#"{"user":"u","identities":["1001"],"retentionDays":30,"mode":"OnDemand","onDemand":{"keepCode":"abc"}}"#,
            "should match",
        ),
    ];
    for (spec, message) in cases {
        let (code, body) = server
            .request("POST", path, "application/json", &policy(spec))
            .await;
        assert_eq!(code, 422, "{spec}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or_default()
                .contains(message),
            "{spec}: {body}"
        );
    }
    // Defaults are applied; unknown fields are pruned (or refused with fieldValidation=Strict).
    let (code, body) = server
        .request(
            "POST",
            path,
            "application/json",
            &policy(r#"{"user":"u","identities":["1001"],"retentionDays":30,"colour":"blue"}"#),
        )
        .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["spec"]["mode"], "Always");
    assert_eq!(body["spec"]["suspended"], false);
    assert!(body["spec"].get("colour").is_none());
    let strict = policy(r#"{"user":"u","identities":["1001"],"retentionDays":30,"colour":"blue"}"#)
        .replace("\"p\"", "\"q\"");
    let (code, body) = server
        .request(
            "POST",
            &format!("{path}?fieldValidation=Strict"),
            "application/json",
            &strict,
        )
        .await;
    // A real server refuses strict decoding with 400 Bad Request.
    assert_eq!(code, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"spec.colour\""),
        "{body}"
    );

    // A BulkExport's spec is immutable (CEL transition rule) and its link lifetime bounded.
    let bex = "/apis/opname.dev/v1alpha1/namespaces/acme/bulkexports";
    let export = |ttl: &str| {
        format!(
            r#"{{"apiVersion":"opname.dev/v1alpha1","kind":"BulkExport","metadata":{{"name":"e"}},"spec":{{"month":"2026-10","linkTTL":"{ttl}"}}}}"#
        )
    };
    let (code, body) = server
        .request("POST", bex, "application/json", &export("200h"))
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("at most 168h"),
        "{body}"
    );
    let (code, body) = server
        .request("POST", bex, "application/json", &export("72h"))
        .await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = server
        .request(
            "PATCH",
            &format!("{bex}/e"),
            "application/merge-patch+json",
            r#"{"spec":{"month":"2026-11"}}"#,
        )
        .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("cannot be changed"),
        "{body}"
    );
    let (code, _) = server
        .request(
            "POST",
            bex,
            "application/json",
            &export("72h")
                .replace("2026-10", "2026-13")
                .replace("\"e\"", "\"f\""),
        )
        .await;
    assert_eq!(code, 422, "month 13");
}
