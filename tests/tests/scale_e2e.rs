//! 20,000 policies in one namespace, on a real control plane: the recorder configuration reaches
//! the recorders within the API's object limits, and a change to one policy costs the operator a
//! few writes, counted from the API server's audit log.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use opname_operator::crd::RecordingPolicy;
use opname_tests::controlplane::ControlPlane as ApiServer;
use opname_tests::kubelet::Kubelet;
use opname_tests::{bin, files_with, fleet_config, operator, wait_for};
use serde_json::{Value, json};

const USERS: usize = 20_000;
const OPERATOR: &str = "system:serviceaccount:opname-system:opname-operator";

fn policy(i: usize) -> RecordingPolicy {
    serde_json::from_value(json!({
        "apiVersion": "opname.dev/v1alpha1", "kind": "RecordingPolicy",
        "metadata": {"name": format!("u{i:05}"), "namespace": "acme"},
        "spec": {"user": format!("u{i:05}@acme.example"),
                 "identities": [format!("sip:u{i:05}@acme.example"), format!("tel:+3120{i:07}")],
                 "retentionDays": 30},
    }))
    .unwrap()
}

/// Policies of the namespace whose `Ready` is `True`.
async fn ready(api: &Api<RecordingPolicy>) -> usize {
    let Ok(list) = api.list(&ListParams::default()).await else {
        return 0;
    };
    list.items
        .iter()
        .filter(|p| {
            p.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .count()
}

/// The operator's writes (not its lease renewals or Events) since audit entry `from`.
fn operator_writes(server: &ApiServer, from: usize) -> Vec<String> {
    server
        .audited(OPERATOR)
        .into_iter()
        .skip(from)
        .map(|(request, _)| request)
        .filter(|r| {
            ["create ", "update ", "patch ", "delete "]
                .iter()
                .any(|v| r.starts_with(v))
                && !r.contains("/leases ")
                && !r.contains("/events ")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_policies_reach_the_recorders_and_one_change_costs_a_few_writes() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let mut server = ApiServer::start().await;
    server.start_controllers().await;
    let store = dir.join("store");
    let kubeconfig = server
        .install(
            &["acme"],
            json!({"store": {"url": format!("file://{}", store.display())}}),
        )
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
    let _op = operator(&kubeconfig, dir, &settings);

    // The organisation's users arrive while the operator runs, as an import would create them.
    let api = Api::<RecordingPolicy>::namespaced(server.client().await, "acme");
    let started = Instant::now();
    let mut created = futures::stream::iter(0..USERS)
        .map(|i| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &policy(i)).await }
        })
        .buffer_unordered(32);
    while let Some(result) = created.next().await {
        result.expect("policy created");
    }
    let creation = started.elapsed();
    eprintln!(
        "{USERS} policies created in {:.1} s",
        creation.as_secs_f64()
    );

    // Every policy compiled, in ConfigMaps the API accepted, each well within its limit.
    let configmaps = || server.list("", "v1", "configmaps", Some("acme"));
    wait_for("20,000 policies in the recorder configuration", 600, || {
        fleet_config(&configmaps()).is_some_and(|c| c.policies.len() == USERS)
    })
    .await;
    let compiled = started.elapsed();
    eprintln!("compiled after {:.1} s", compiled.as_secs_f64());
    let fleet: Vec<Value> = configmaps()
        .into_iter()
        .filter(|c| {
            c["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(opname_operator::fleet::NAME))
        })
        .collect();
    let sizes: Vec<usize> = fleet.iter().map(|c| c.to_string().len()).collect();
    assert!(fleet.len() > 2, "sharded: {sizes:?}");
    assert!(
        sizes.iter().all(|s| *s < 600 * 1024),
        "every ConfigMap far below the 1 MiB limit: {sizes:?}"
    );

    // Ready once the recorder serving them is ready: every status written.
    let mut all_ready = false;
    for _ in 0..120 {
        if ready(&api).await == USERS {
            all_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    assert!(all_ready, "every policy Ready");
    let ready_after = started.elapsed();
    eprintln!("all Ready after {:.1} s", ready_after.as_secs_f64());

    // The last user's calls are recorded: the recorder loaded every shard.
    let recorder = kubelet.sip_addresses("acme", opname_operator::fleet::NAME)[0];
    let report = opname_tests::loadgen(&[
        "--target",
        &recorder.to_string(),
        "--calls",
        "1",
        "--seconds",
        "2",
        "--caller",
        "sip:u19999@acme.example",
    ]);
    assert_eq!(report["answered"], 1, "{report:#}");
    wait_for("the call in the store", 30, || {
        !files_with(&store, ".json").is_empty()
    })
    .await;
    let record: Value =
        serde_json::from_slice(&std::fs::read(&files_with(&store, ".json")[0]).unwrap()).unwrap();
    assert_eq!(record["user"], "u19999@acme.example", "{record:#}");

    // One policy changes: its shard and its status are written, nothing else.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = server.audited(OPERATOR).len();
    let changed = api
        .patch(
            "u12345",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"identities": ["sip:u12345@acme.example", "tel:+31209999999"]}}),
            ),
        )
        .await
        .unwrap();
    let generation = changed.metadata.generation;
    let mut observed = false;
    for _ in 0..300 {
        let p = api.get("u12345").await.unwrap();
        if p.status.and_then(|s| s.observed_generation) == generation {
            observed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(observed, "the change observed");
    wait_for("the change in the recorder configuration", 30, || {
        fleet_config(&configmaps()).is_some_and(|c| {
            c.policies
                .iter()
                .any(|p| p.name == "u12345" && p.identities.contains(&"tel:+31209999999".into()))
        })
    })
    .await;
    // Whatever the change sets off (the shard's watch event, requeues) has time to happen.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let writes = operator_writes(&server, before);
    // The figure docs/BENCHMARKS.md quotes (`-- --nocapture`).
    eprintln!(
        "{USERS} policies: created in {:.1} s, compiled after {:.1} s, all Ready after {:.1} s; \
         {} ConfigMaps of {sizes:?} bytes; one change: {} writes {writes:#?}",
        creation.as_secs_f64(),
        compiled.as_secs_f64(),
        ready_after.as_secs_f64(),
        fleet.len(),
        writes.len()
    );
    assert!(
        writes.len() <= 3,
        "a change to one policy costs a few writes: {writes:#?}"
    );
    assert!(
        writes
            .iter()
            .any(|w| w.contains("recordingpolicies/status acme/u12345")),
        "{writes:#?}"
    );
    server.assert_chart_rbac_sufficed();
}
