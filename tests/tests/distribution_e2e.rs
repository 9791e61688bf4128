//! One SBC, many recorders, on a real control plane: the operator's fleet of 4 recorders, each
//! a process with an address of its own run by the process kubelet from the real Deployment's
//! Pods; the real EndpointSlice controller lists the ready ones. One simulated SBC (the load
//! generator, one socket) holds 3 × `maxCalls` calls at once, reaching the recorders both ways
//! the README offers: resolving `_sip._udp.opname-recorder.acme.svc.cluster.local` from CoreDNS
//! as RFC 3263 says, or sending everything to one address, the Kamailio front door.

use std::collections::HashMap;
use std::net::SocketAddr;

use opname_tests::controlplane::ControlPlane as ApiServer;
use opname_tests::kubelet::Kubelet;
use opname_tests::{bin, files_with, operator, wait_for};
use serde_json::{Value, json};

const MAX_CALLS: usize = 4;
const RECORDERS: usize = 4;

/// Ready endpoints of one of the fleet's Services, as the EndpointSlice controller lists them.
fn ready_endpoints(server: &ApiServer, service: &str) -> usize {
    server
        .list("discovery.k8s.io", "v1", "endpointslices", Some("acme"))
        .iter()
        .filter(|s| s["metadata"]["labels"]["kubernetes.io/service-name"] == service)
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["conditions"]["ready"] == true)
        .count()
}

/// SRV targets of `name` as the cluster DNS answers.
async fn srv(dns: SocketAddr, name: &str) -> Vec<(String, u16)> {
    use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
    use hickory_resolver::proto::rr::RData;
    let mut udp = ConnectionConfig::udp();
    udp.port = dns.port();
    let resolver = hickory_resolver::TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![NameServerConfig::new(dns.ip(), true, vec![udp])]),
        hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
    )
    .build()
    .unwrap();
    let Ok(lookup) = resolver.srv_lookup(name).await else {
        return Vec::new();
    };
    let mut out: Vec<_> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some((s.target.to_string(), s.port)),
            _ => None,
        })
        .collect();
    out.sort();
    out
}

struct Fleet {
    server: ApiServer,
    kubelet: Kubelet,
    store: std::path::PathBuf,
    dns: SocketAddr,
    _op: opname_tests::Proc,
    _work: tempfile::TempDir,
}

/// The control plane with DNS, the operator under the chart's RBAC, and alice's policy served
/// by 4 ready recorders. `front_door`: the operator's `frontDoor` settings (YAML), if any.
async fn fleet(front_door: &str) -> Fleet {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let mut server = ApiServer::start().await;
    server.start_controllers().await;
    let dns = server.start_dns().await;
    let store = dir.join("store");
    let kubeconfig = server
        .install(
            &["acme"],
            json!({"store": {"url": format!("file://{}", store.display())}}),
        )
        .await;
    server.restrict("acme").await;
    let settings = dir.join("operator.yaml");
    std::fs::write(
        &settings,
        format!(
            "recorder:\n  image: opname-recorder:dev\n  drainSeconds: 5\n  preStopSeconds: 1\nstore:\n  url: file://{}\n  prefix: recordings\ncapacity:\n  minReplicas: {RECORDERS}\n  maxReplicas: {RECORDERS}\n  maxCallsPerReplica: {MAX_CALLS}\n{front_door}",
            store.display()
        ),
    )
    .unwrap();
    let kubelet = Kubelet::start(
        &server,
        HashMap::from([
            ("opname-recorder".to_string(), bin("opname-recorder")),
            (KAMAILIO_IMAGE.to_string(), "/usr/sbin/kamailio".into()),
        ]),
        dir.join("pods"),
    )
    .await;
    let op = operator(&kubeconfig, dir, &settings);
    let policy = json!({"apiVersion": "opname.dev/v1alpha1", "kind": "RecordingPolicy",
        "metadata": {"name": "alice", "namespace": "acme"},
        "spec": {"user": "alice@acme.example", "identities": ["sip:alice@demo.example"], "retentionDays": 30}});
    for (code, body) in server
        .create_yaml(&serde_json::to_string(&policy).unwrap())
        .await
    {
        assert_eq!(code, 201, "{body}");
    }
    wait_for("4 ready recorders in the EndpointSlices", 90, || {
        ready_endpoints(&server, opname_operator::fleet::NAME) == RECORDERS
            && ready_endpoints(&server, opname_operator::fleet::TCP_SERVICE) == RECORDERS
    })
    .await;
    Fleet {
        server,
        kubelet,
        store,
        dns,
        _op: op,
        _work: work,
    }
}

const KAMAILIO_IMAGE: &str = "ghcr.io/kamailio/kamailio";

/// Runs the load generator against `target` (with `--dns` when given).
fn load(target: &str, dns: Option<SocketAddr>, calls: usize) -> Value {
    let (dns, calls) = (dns.map(|d| d.to_string()), calls.to_string());
    let mut args = vec![
        "--target",
        target,
        "--calls",
        &calls,
        "--seconds",
        "6",
        "--ramp",
        "2",
    ];
    if let Some(dns) = &dns {
        args.extend(["--dns", dns]);
    }
    opname_tests::loadgen(&args)
}

/// What both ways in must give: every call answered by a recorder with room, spread over all
/// four, each BYE confirmed by the recorder that owns the dialog, every recording complete.
async fn assert_spread(f: &Fleet, report: &Value, calls: usize) {
    // The figures docs/BENCHMARKS.md quotes (`-- --nocapture`).
    eprintln!("load report: {report}");
    assert_eq!(report["answered"], calls, "{report:#}");
    assert_eq!(report["rejected"], json!({}), "none refused: {report:#}");
    assert_eq!(report["no_answer"], 0, "{report:#}");
    let by: HashMap<String, usize> = serde_json::from_value(report["answered_by"].clone()).unwrap();
    let recorders: Vec<String> = f
        .kubelet
        .sip_addresses("acme", opname_operator::fleet::NAME)
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(by.len(), RECORDERS, "every recorder took calls: {report:#}");
    assert!(
        by.keys().all(|a| recorders.contains(a)),
        "answered by the recorders themselves ({recorders:?}): {report:#}"
    );
    assert!(
        by.values().all(|n| *n <= MAX_CALLS),
        "no recorder above maxCalls: {report:#}"
    );
    // A BYE sent anywhere but the dialog's own recorder would get 481.
    assert_eq!(report["ended"], calls, "{report:#}");
    assert_eq!(report["end_failed"], json!({}), "{report:#}");
    wait_for("every call in the store", 30, || {
        files_with(&f.store, ".json").len() == calls
    })
    .await;
    let mut writers = std::collections::BTreeSet::new();
    for file in files_with(&f.store, ".json") {
        let record: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(record["complete"], true, "{record:#}");
        assert_eq!(record["endReason"], "bye", "{record:#}");
        assert_eq!(record["user"], "alice@acme.example");
        assert!(
            record["durationSeconds"].as_f64().unwrap() >= 5.0,
            "{record:#}"
        );
        writers.insert(record["recorder"].as_str().unwrap().to_string());
    }
    assert_eq!(writers.len(), RECORDERS, "{writers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sbc_resolving_srv_spreads_its_calls_over_every_recorder() {
    let f = fleet("").await;
    // The standard RFC 3263 names, one per transport, each listing every ready recorder.
    let mut records = Vec::new();
    for _ in 0..50 {
        records = srv(f.dns, "_sip._udp.opname-recorder.acme.svc.cluster.local.").await;
        if records.len() == RECORDERS {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(records.len(), RECORDERS, "{records:?}");
    assert!(records.iter().all(|(_, port)| *port == 5060));
    let tcp = srv(
        f.dns,
        "_sip._tcp.opname-recorder-tcp.acme.svc.cluster.local.",
    )
    .await;
    assert_eq!(tcp.len(), RECORDERS, "{tcp:?}");

    let calls = 3 * MAX_CALLS;
    let report = load("opname-recorder.acme.svc.cluster.local", Some(f.dns), calls);
    assert_spread(&f, &report, calls).await;
    f.server.assert_chart_rbac_sufficed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sbc_through_the_front_door_spreads_its_calls_over_every_recorder() {
    opname_tests::require("kamailio", "apt-get install kamailio");
    let f = fleet(&format!(
        "frontDoor:\n  enabled: true\n  image: {KAMAILIO_IMAGE}:5.6.3-bookworm\n  replicas: 1\n  serviceType: ClusterIP\n"
    ))
    .await;
    // The dispatcher list follows the EndpointSlices: all four recorders.
    let list = || {
        f.server
            .list("", "v1", "configmaps", Some("acme"))
            .into_iter()
            .find(|c| c["metadata"]["name"] == opname_operator::fleet::front_door::FRONT_DOOR)
            .and_then(|c| c["data"]["dispatcher.list"].as_str().map(String::from))
            .unwrap_or_default()
    };
    wait_for("the dispatcher list with 4 recorders", 30, || {
        list().lines().filter(|l| l.starts_with("1 sip:")).count() == RECORDERS
    })
    .await;
    wait_for("the front door running", 30, || {
        !f.kubelet
            .sip_addresses("acme", opname_operator::fleet::front_door::FRONT_DOOR)
            .is_empty()
    })
    .await;
    let door = f
        .kubelet
        .sip_addresses("acme", opname_operator::fleet::front_door::FRONT_DOOR)[0];
    // Kamailio reads the list at start and again every 5 s.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;

    let calls = 3 * MAX_CALLS;
    let report = load(&door.to_string(), None, calls);
    assert_spread(&f, &report, calls).await;
    f.server.assert_chart_rbac_sufficed();
}

/// Active calls of a recorder, from its metrics.
fn active_calls(http: SocketAddr) -> usize {
    opname_tests::http_get(http, "/metrics")
        .ok()
        .and_then(|(_, m)| {
            m.lines()
                .find_map(|l| l.strip_prefix("opname_active_calls ")?.trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorder_lost_with_its_spool_loses_seconds_not_calls() {
    let f = fleet("").await;
    let calls = 8;
    let hold = 40;
    let dns = f.dns.to_string();
    let loadgen = std::thread::spawn(move || {
        opname_tests::loadgen(&[
            "--target",
            "opname-recorder.acme.svc.cluster.local",
            "--dns",
            &dns,
            "--calls",
            &calls.to_string(),
            "--seconds",
            &hold.to_string(),
        ])
    });
    // Mid-call: the recorder holding the most calls dies with its spool.
    tokio::time::sleep(std::time::Duration::from_secs(20)).await;
    let (victim, lost_calls) = f
        .kubelet
        .http_addresses("acme", opname_operator::fleet::NAME)
        .into_iter()
        .map(|(name, http)| (name, active_calls(http)))
        .max_by_key(|(_, n)| *n)
        .unwrap();
    assert!(lost_calls > 0, "some recorder holds calls");
    let lost_at = jiff::Timestamp::now();
    assert!(f.kubelet.lose("acme", &victim));

    // Within a minute another recorder has stored what the lost one had uploaded.
    let lost = || {
        files_with(&f.store, ".json")
            .iter()
            .filter_map(|p| serde_json::from_slice::<Value>(&std::fs::read(p).ok()?).ok())
            .filter(|r| r["endReason"] == "node-lost")
            .collect::<Vec<_>>()
    };
    wait_for("the lost calls in the store", 60, || {
        lost().len() == lost_calls
    })
    .await;
    let recovered_within = jiff::Timestamp::now().duration_since(lost_at);
    for r in lost() {
        assert_eq!(r["complete"], false, "{r:#}");
        assert_eq!(r["recorder"], victim.as_str(), "{r:#}");
        let start: jiff::Timestamp = r["start"].as_str().unwrap().parse().unwrap();
        let had = lost_at.duration_since(start).as_secs_f64();
        let kept = r["durationSeconds"].as_f64().unwrap();
        assert!(
            kept >= had - 11.0 && kept <= had + 1.0,
            "at most 10 s lost: {kept} s of {had} s ({r:#})"
        );
        // The audio is there, a valid Ogg stream of that length.
        let key = r["audio"]["key"].as_str().unwrap();
        let audio = std::fs::read(f.store.join(key)).unwrap();
        assert_eq!(audio.len() as u64, r["audio"]["size"].as_u64().unwrap());
        assert_eq!(&audio[..4], b"OggS");
    }
    eprintln!(
        "lost {lost_calls} calls with {victim}; stored within {:.1} s",
        recovered_within.as_secs_f64()
    );

    // The other recorders kept their calls; the lost recorder's BYEs find no dialog.
    let report = loadgen.join().unwrap();
    assert_eq!(report["answered"], calls, "{report:#}");
    assert_eq!(report["ended"], calls - lost_calls, "{report:#}");
    wait_for("every call in the store", 30, || {
        files_with(&f.store, ".json").len() == calls
    })
    .await;
    let complete = files_with(&f.store, ".json")
        .iter()
        .filter_map(|p| serde_json::from_slice::<Value>(&std::fs::read(p).ok()?).ok())
        .filter(|r| r["complete"] == true && r["endReason"] == "bye")
        .count();
    assert_eq!(complete, calls - lost_calls);
    // Nothing of the calls in progress is left behind.
    wait_for("no segments left", 30, || {
        !f.store.join("recordings/segments/acme").exists()
            || files_with(&f.store.join("recordings/segments/acme"), "").is_empty()
    })
    .await;
}
