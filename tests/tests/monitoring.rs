//! The monitoring kit for real: promtool checks and unit-tests the shipped alerts, the chart
//! renders them, the dashboard and the monitors, every metric they name is one the recorder or
//! the operator exposes, and a real Prometheus scraping a running recorder and the operator's
//! metrics endpoint fires an alert from the recorder's own counters.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use opname_tests::{
    Proc, Recorder, RecorderSpec, free_port, http_get, require, wait_until, workspace,
};
use serde_json::{Value, json};

const ALERTS: &str = "charts/opname/files/monitoring/alerts.yaml";
const DASHBOARD: &str = "charts/opname/files/monitoring/dashboard.json";

fn promtool(args: &[&str]) -> String {
    require("promtool", "apt-get install prometheus");
    let out = Command::new("promtool")
        .args(args)
        .current_dir(workspace())
        .output()
        .expect("promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// The `opname_…` metric families an expression names.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("opname_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        out.insert(expr[start..end].to_string());
        i = end;
    }
    out
}

/// Family names in an OpenMetrics exposition, with the sample suffixes PromQL sees.
fn exposed(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[test]
fn promtool_checks_and_unit_tests_the_alerts() {
    let checked = promtool(&["check", "rules", ALERTS]);
    assert!(checked.contains("SUCCESS: 9 rules found"), "{checked}");
    let tested = promtool(&["test", "rules", "tests/prometheus/alerts.test.yaml"]);
    assert!(tested.contains("SUCCESS"), "{tested}");
    // Every alert has a unit test and a runbook section.
    let rules: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(workspace().join(ALERTS)).unwrap())
            .unwrap();
    let tests =
        std::fs::read_to_string(workspace().join("tests/prometheus/alerts.test.yaml")).unwrap();
    let runbook = std::fs::read_to_string(workspace().join("docs/monitoring.md")).unwrap();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            assert!(
                tests.contains(&format!("alertname: {name}")),
                "{name} has no unit test"
            );
            assert!(
                runbook.contains(&format!("### {name}")),
                "{name} has no runbook section"
            );
        }
    }
}

#[test]
fn the_chart_renders_the_kit_and_a_real_prometheus_fires_an_alert() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (lint, docs) = opname_tests::helm::render(json!({
        "store": {"url": "s3://b"},
        "monitoring": {
            "podMonitor": {"enabled": true},
            "serviceMonitor": {"enabled": true, "labels": {"release": "kube-prometheus-stack"}},
            "prometheusRule": {"enabled": true},
            "dashboard": {"enabled": true}
        }
    }));
    assert!(lint["errors"].as_array().unwrap().is_empty(), "{lint}");
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .cloned()
            .unwrap_or_else(|| panic!("{k}"))
    };
    let pods = kind("PodMonitor");
    assert_eq!(
        pods["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"],
        "opname-recorder"
    );
    assert_eq!(pods["spec"]["namespaceSelector"]["any"], true);
    assert_eq!(
        kind("ServiceMonitor")["metadata"]["labels"]["release"],
        "kube-prometheus-stack"
    );
    let alerts: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(workspace().join(ALERTS)).unwrap())
            .unwrap();
    assert_eq!(
        kind("PrometheusRule")["spec"],
        alerts,
        "the very rules promtool tested"
    );
    let dashboard = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "opname-dashboard")
        .expect("the dashboard ConfigMap");
    let dashboard: Value =
        serde_json::from_str(dashboard["data"]["opname.json"].as_str().unwrap()).unwrap();
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(workspace().join(DASHBOARD)).unwrap())
            .unwrap();
    assert_eq!(dashboard, file);

    // A recorder that admits SIP only from 127.0.0.1, and the operator's metrics endpoint.
    let work = tempfile::tempdir().unwrap();
    let rec = Recorder::start(RecorderSpec {
        dir: &work.path().join("rec"),
        store_url: format!("file://{}", work.path().join("store").display()),
        policies: "  - name: alice\n    user: alice@acme.example\n    identities: [\"sip:alice@acme.example\"]\n    retentionDays: 30\n",
        env: vec![],
        extra: "sip:\n  allow: ['127.0.0.1']\n",
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let operator: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let metrics = opname_operator::metrics::Metrics::new();
    metrics.leader.set(1);
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::bind(operator).await.unwrap();
        axum::serve(listener, opname_operator::metrics::router(metrics))
            .await
            .unwrap();
    });
    assert!(wait_until(Duration::from_secs(5), || http_get(
        operator, "/metrics"
    )
    .is_ok()));
    let recorder_text = http_get(rec.http, "/metrics").unwrap().1;
    let operator_text = http_get(operator, "/metrics").unwrap().1;
    assert!(
        recorder_text.contains("opname_build_info{version=\"0.1.0\"} 1"),
        "{recorder_text}"
    );
    assert!(operator_text.contains("opname_operator_build_info{version=\"0.1.0\"} 1"));
    assert!(operator_text.contains("opname_operator_leader 1"));
    // Every metric the alerts and the dashboard name exists (label-less families appear once
    // they have samples; those are listed from the code's registrations below).
    let mut known = exposed(&recorder_text);
    known.extend(exposed(&operator_text));
    known.extend(
        [
            "opname_calls_total",
            "opname_rtp_packets_lost_total",
            "opname_rtp_packets_received_total",
            "opname_rtp_packets_foreign_total",
        ]
        .map(String::from),
    );
    let mut named = BTreeSet::new();
    for group in alerts["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            named.extend(metrics_in(rule["expr"].as_str().unwrap()));
        }
    }
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            named.extend(metrics_in(target["expr"].as_str().unwrap()));
        }
    }
    let unknown: Vec<&String> = named.iter().filter(|m| !known.contains(*m)).collect();
    assert!(
        unknown.is_empty(),
        "named but not exposed: {unknown:?}\n{recorder_text}"
    );

    // A real Prometheus with the shipped rules, scraping both every second.
    require("prometheus", "apt-get install prometheus");
    let prom_dir = work.path().join("prometheus");
    std::fs::create_dir_all(&prom_dir).unwrap();
    std::fs::write(
        prom_dir.join("prometheus.yml"),
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [{}]\n\
             scrape_configs:\n\
             \x20 - job_name: recorders\n\
             \x20   static_configs: [{{targets: ['{}'], labels: {{namespace: acme, pod: opname-recorder-0}}}}]\n\
             \x20 - job_name: operator\n\
             \x20   static_configs: [{{targets: ['{}'], labels: {{pod: opname-operator-0}}}}]\n",
            workspace().join(ALERTS).display(),
            rec.http,
            operator
        ),
    )
    .unwrap();
    let web: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let log = std::fs::File::create(prom_dir.join("prometheus.log")).unwrap();
    let _prometheus = Proc::spawn(
        "prometheus",
        Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                prom_dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                prom_dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    let api = |path: &str| -> Value {
        http_get(web, path)
            .ok()
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
            .unwrap_or(Value::Null)
    };
    let prom_log = || std::fs::read_to_string(prom_dir.join("prometheus.log")).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(30), || {
            let up = api("/api/v1/query?query=up");
            up["data"]["result"]
                .as_array()
                .is_some_and(|r| r.len() == 2 && r.iter().all(|s| s["value"][1] == "1"))
        }),
        "Prometheus scrapes both: {}",
        prom_log()
    );
    // SIP from a stranger (127.0.0.2), refused; once more after Prometheus saw the first, so
    // the counter's increase is real.
    let stranger = UdpSocket::bind("127.0.0.2:0").unwrap();
    let options = |n: u32| {
        format!(
            "OPTIONS sip:rec@{0} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bK-{n}\r\n\
             From: <sip:scan@127.0.0.2>;tag={n}\r\nTo: <sip:rec@{0}>\r\nCall-ID: scan-{n}\r\n\
             CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
            rec.sip
        )
    };
    stranger.send_to(options(1).as_bytes(), rec.sip).unwrap();
    let refused = "/api/v1/query?query=opname_calls_total%7Boutcome%3D%22refused%22%7D";
    assert!(
        wait_until(Duration::from_secs(20), || api(refused)["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())),
        "the refused counter is scraped"
    );
    std::thread::sleep(Duration::from_secs(2));
    stranger.send_to(options(2).as_bytes(), rec.sip).unwrap();
    let firing = || {
        api("/api/v1/alerts")["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .find(|a| {
                a["labels"]["alertname"] == "OpnameSipFromUnknownPeers" && a["state"] == "firing"
            })
    };
    assert!(
        wait_until(Duration::from_secs(30), || firing().is_some()),
        "OpnameSipFromUnknownPeers fires: {}\n{}",
        api("/api/v1/alerts"),
        prom_log()
    );
    let alert = firing().unwrap();
    assert_eq!(alert["labels"]["namespace"], "acme");
    assert_eq!(alert["labels"]["severity"], "warning");
    // Nothing else fires on a healthy recorder and a leading operator.
    let others: Vec<Value> = api("/api/v1/alerts")["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| {
            a["labels"]["alertname"] != "OpnameSipFromUnknownPeers" && a["state"] == "firing"
        })
        .cloned()
        .collect();
    assert!(others.is_empty(), "{others:?}");
}
