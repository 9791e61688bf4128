//! BulkExport end to end on a real control plane: kube-apiserver and kube-controller-manager, the
//! real operator with the chart's RBAC, the real Job controller and the process kubelet running
//! the export Job's pod (the operator binary's `export` subcommand, with a token of the chart's
//! ServiceAccount, in a namespace enforcing PodSecurity `restricted`), Garage as
//! the store (it checks presigned URLs) and aiosmtpd as the SMTP relay. The Job's pod is killed
//! midway and the rerun completes with one set of archives; the links download the exact parts
//! and a tampered or expired link is refused; the e-mail arrives once with the links; links are
//! renewed on request; the retention gate refuses with a condition and an Event; an empty month
//! gives a clear result; deleting a running export cancels it and removes its archives.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use object_store::ObjectStoreExt;
use opname_operator::export::links::LinkSigner;
use opname_operator::settings::StoreSettings;
use opname_tests::controlplane::ControlPlane as ApiServer;
use opname_tests::garage::Garage;
use opname_tests::kubelet::Kubelet;
use opname_tests::smtp::SmtpSink;
use opname_tests::{Synthetic, bin, operator, store_keys, wait_for, workspace};
use serde_json::{Value, json};
use sha2::Digest;

fn export(server: &ApiServer, name: &str) -> Value {
    server
        .list("opname.dev", "v1alpha1", "bulkexports", Some("acme"))
        .into_iter()
        .find(|o| o["metadata"]["name"] == name)
        .unwrap_or(Value::Null)
}

/// Subject and decoded body of a raw message, through Python's `email` package.
fn decode(raw: &str) -> (String, String) {
    let out = Command::new("python3")
        .args([
            "-c",
            "import email,sys; m=email.message_from_string(sys.stdin.read()); print(m['Subject']); print(m.get_payload(decode=True).decode())",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(raw.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (subject, body) = text.split_once('\n').unwrap_or_default();
    (subject.to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_job_links_email_gate_and_cancel() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let garage = Garage::start(dir);
    let store_settings = StoreSettings {
        url: "s3://opname".into(),
        prefix: "recordings".into(),
        credentials_secret: None,
        env: garage.env().into_iter().collect(),
    };
    let store = opname_operator::store::open(&store_settings).unwrap();
    // October: 45 recordings of alice (kept a year) and 10 of carol (kept 30 days).
    let start: jiff::Timestamp = "2026-10-05T08:00:00Z".parse().unwrap();
    let mut alice = HashMap::new();
    for n in 0..55u32 {
        let (user, class) = if n < 45 {
            ("alice", 365)
        } else {
            ("carol", 30)
        };
        let at = start
            .checked_add(jiff::SignedDuration::from_hours(i64::from(n) * 7))
            .unwrap();
        let audio: Vec<u8> = (0..20_000u32).map(|i| (i * 13 + n) as u8).collect();
        let r = Synthetic {
            class,
            namespace: "acme",
            id: Synthetic::id_at(at, n),
            user,
            start: at,
            seconds: 60.0,
            parties: ["sip:+31201234567@pbx.example", "sip:bob@example.com"],
            audio: audio.clone(),
        };
        r.put(store.as_ref(), "recordings").await;
        if user == "alice" {
            alice.insert(r.id.clone(), hex::encode(sha2::Sha256::digest(&audio)));
        }
    }
    // acme is Dutch: its October runs from 00:00 on 1 October to 00:00 on 1 November in
    // Amsterdam (22:00 UTC on 30 September to 23:00 UTC on 31 October, DST ending between).
    let mut edges = Vec::new();
    for (n, at) in [
        (100u32, "2026-09-30T22:30:00Z"),
        (101, "2026-10-31T23:30:00Z"),
    ] {
        let at: jiff::Timestamp = at.parse().unwrap();
        let audio: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + n) as u8).collect();
        let r = Synthetic {
            class: 365,
            namespace: "acme",
            id: Synthetic::id_at(at, n),
            user: "alice",
            start: at,
            seconds: 60.0,
            parties: ["sip:+31201234567@pbx.example", "sip:0201234567@pbx.example"],
            audio: audio.clone(),
        };
        r.put(store.as_ref(), "recordings").await;
        if n == 100 {
            alice.insert(r.id.clone(), hex::encode(sha2::Sha256::digest(&audio)));
        }
        edges.push(r.id);
    }
    let smtp = SmtpSink::start(dir);
    let env: String = garage
        .env()
        .iter()
        .map(|(k, v)| format!("    {k}: \"{v}\"\n"))
        .collect();
    let settings_yaml = format!(
        "store:\n  url: s3://opname\n  prefix: recordings\n  env:\n{env}retention:\n  lifecycle: false\n  intervalSeconds: 3600\nexport:\n  minRetentionDays: 180\n  partSizeBytes: 409600\n  bytesPerSecond: 150000\n  image: opname-operator:dev\n  jobNamespace: opname-system\n  configMap: opname-operator\n  smtp: {{host: 127.0.0.1, port: {}, starttls: false, from: opname@platform.example}}\n",
        smtp.port
    );
    let settings = dir.join("operator.yaml");
    std::fs::write(&settings, &settings_yaml).unwrap();
    let mut server = ApiServer::start().await;
    server.start_controllers().await;
    let kubeconfig = server
        .install(&["acme"], json!({"store": {"url": "s3://opname"}}))
        .await;
    server.restrict("opname-system").await;
    server
        .annotate_namespace(
            "acme",
            json!({"opname.dev/time-zone": "Europe/Amsterdam", "opname.dev/locale": "nl-NL"}),
        )
        .await;
    // The Job mounts the operator's configuration, as the chart's ConfigMap.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "opname-operator", "namespace": "opname-system"},
        "data": {"operator.yaml": settings_yaml}});
    assert_eq!(
        server
            .request(
                "POST",
                "/api/v1/namespaces/opname-system/configmaps",
                "application/json",
                &cm.to_string()
            )
            .await
            .0,
        201
    );
    for (user, days) in [("alice", 365), ("carol", 30)] {
        let (code, body) = server
            .create_yaml(&format!(
                "apiVersion: opname.dev/v1alpha1\nkind: RecordingPolicy\nmetadata: {{name: {user}, namespace: acme}}\nspec:\n  user: {user}\n  identities: [\"sip:{user}@pbx.example\"]\n  retentionDays: {days}\n  suspended: true\n"
            ))
            .await[0]
            .clone();
        assert_eq!(code, 201, "{body}");
    }
    let kubelet = Kubelet::start(
        &server,
        HashMap::from([("opname-operator".to_string(), bin("opname-operator"))]),
        dir.join("pods"),
    )
    .await;
    let _op = operator(&kubeconfig, dir, &settings);
    let create = |name: &str, extra: &str| {
        format!(
            "apiVersion: opname.dev/v1alpha1\nkind: BulkExport\nmetadata: {{name: {name}, namespace: acme}}\nspec:\n{extra}"
        )
    };
    let (code, body) = server
        .create_yaml(&create(
            "oct",
            "  month: \"2026-10\"\n  linkTTL: 48h\n  notify: {emails: [admin@acme.example]}\n",
        ))
        .await[0]
        .clone();
    assert_eq!(code, 201, "{body}");

    // The Job's pod dies after its first part is complete; the Job runs it again.
    let mut first_part = Vec::new();
    for _ in 0..300 {
        first_part = store_keys(store.as_ref(), Some("recordings/exports/acme/oct")).await;
        if !first_part.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(first_part.len(), 1, "one part complete before the kill");
    assert!(kubelet.kill_job_pod("opname-export-acme-oct"));
    wait_for("the export to succeed after the rerun", 90, || {
        export(&server, "oct")["status"]["phase"] == "Succeeded"
    })
    .await;
    wait_for("the Job to complete", 30, || {
        server.list("batch", "v1", "jobs", Some("opname-system"))[0]["status"]["succeeded"] == 1
    })
    .await;
    let jobs = server.list("batch", "v1", "jobs", Some("opname-system"));
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        jobs[0]["status"]["failed"], 1,
        "the killed attempt: {}",
        jobs[0]
    );

    let status = export(&server, "oct")["status"].clone();
    let parts = status["parts"].as_array().unwrap().clone();
    assert_eq!(parts.len(), 3, "{status}");
    assert_eq!(
        parts
            .iter()
            .map(|p| p["recordings"].as_i64().unwrap())
            .sum::<i64>(),
        46,
        "alice's recordings only (45, and the one at 00:30 on 1 October in Amsterdam): carol's \
         30-day class is below the gate"
    );
    assert!(
        status["message"].as_str().unwrap().contains("carol"),
        "{status}"
    );
    let part_keys: Vec<String> = parts
        .iter()
        .map(|p| p["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        store_keys(store.as_ref(), Some("recordings/exports/acme/oct")).await,
        part_keys,
        "one set of archives, nothing half-written or duplicated"
    );

    // Every link downloads its part with plain HTTP; Garage checks the signature.
    let http = reqwest::Client::new();
    let in_48h = jiff::Timestamp::now()
        .checked_add(jiff::SignedDuration::from_hours(48))
        .unwrap();
    let mut files = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let url = p["url"].as_str().unwrap();
        let resp = http.get(url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{url}");
        let bytes = resp.bytes().await.unwrap();
        assert_eq!(bytes.len() as i64, p["size"].as_i64().unwrap());
        assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), p["sha256"]);
        let expires: jiff::Timestamp = p["expires"].as_str().unwrap().parse().unwrap();
        assert!(expires.duration_since(in_48h).abs() < jiff::SignedDuration::from_secs(120));
        let f = dir.join(format!("part{i}.zip"));
        std::fs::write(&f, &bytes).unwrap();
        files.push(f);
    }
    let out = Command::new("python3")
        .arg(workspace().join("tests/export/check_zip.py"))
        .arg("nl")
        .args(&files)
        .output()
        .unwrap();
    let report: Vec<Value> = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let mut exported = HashMap::new();
    for part in &report {
        assert_eq!(part["crc_ok"], true);
        assert_eq!(part["manifest_ok"], true, "{part}");
        // As Dutch Excel opens it: a BOM, `;`, Dutch columns, local times named by their zone,
        // numbers kept as text.
        assert_eq!(part["csv_bom"], true);
        assert_eq!(part["time_zone"], "Europe/Amsterdam");
        let header = part["csv_header"].as_array().unwrap();
        assert_eq!(header[1], "bestand");
        assert_eq!(header[3], "begin (Europe/Amsterdam)");
        if let Some(first) = part["csv_cells"].get(&edges[0]) {
            assert_eq!(first["start"], "2026-10-01 00:30:00", "{first}");
            assert_eq!(first["from"], "+31201234567");
            assert_eq!(first["to"], "0201234567");
            assert_eq!(first["duration_seconds"], "60,000");
        }
        for (name, f) in part["files"].as_object().unwrap() {
            if let Some(id) = name
                .strip_suffix(".opus")
                .and_then(|n| n.rsplit('_').next())
            {
                exported.insert(id.to_string(), f["sha256"].as_str().unwrap().to_string());
            }
        }
    }
    assert_eq!(
        exported, alice,
        "every recording once, byte for byte: the call at 00:30 on 1 October in Amsterdam is \
         October's, the one at 00:30 on 1 November is not"
    );
    assert!(
        report
            .iter()
            .any(|p| p["csv_cells"].get(&edges[0]).is_some()),
        "the first of October's call is in the manifest"
    );
    assert_eq!(
        export(&server, "oct")["status"]["timeZone"],
        "Europe/Amsterdam"
    );
    assert_eq!(export(&server, "oct")["status"]["locale"], "nl");

    // kubectl opname, with the admin's kubeconfig as a user runs it: the export fetched and
    // checked part by part and recording by recording; a part that differs from the status is
    // refused.
    let admin_kubeconfig = dir.join("admin.kubeconfig");
    std::fs::write(&admin_kubeconfig, server.admin_kubeconfig()).unwrap();
    let plugin = |args: &[&str]| {
        Command::new(bin("kubectl-opname"))
            .args(args)
            .env("KUBECONFIG", &admin_kubeconfig)
            .output()
            .unwrap()
    };
    let fetched = dir.join("fetched");
    let fetched_arg = fetched.display().to_string();
    let download = [
        "-n",
        "acme",
        "export",
        "download",
        "oct",
        "--verify",
        "--out",
        &fetched_arg,
    ];
    let out = plugin(&download);
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        said.matches("recordings match the manifest").count(),
        3,
        "{said}"
    );
    for (key, file) in part_keys.iter().zip(&files) {
        let name = key.rsplit('/').next().unwrap();
        assert_eq!(
            std::fs::read(fetched.join(name)).unwrap(),
            std::fs::read(file).unwrap(),
            "{name}"
        );
    }
    let status_out = plugin(&["-n", "acme", "status"]);
    let status_text = String::from_utf8_lossy(&status_out.stdout);
    assert!(
        status_out.status.success(),
        "{}",
        String::from_utf8_lossy(&status_out.stderr)
    );
    for shown in [
        "Policies: 2",
        "365d",
        "True (Sweeper)",
        "oct",
        "2026-10",
        "Succeeded",
    ] {
        assert!(status_text.contains(shown), "{shown}: {status_text}");
    }
    let key1 = object_store::path::Path::from(part_keys[1].as_str());
    let original = store.get(&key1).await.unwrap().bytes().await.unwrap();
    store
        .put(&key1, b"not the archive".to_vec().into())
        .await
        .unwrap();
    let refused = plugin(&download);
    let complaint = String::from_utf8_lossy(&refused.stderr).into_owned();
    assert!(!refused.status.success());
    assert!(complaint.contains("bytes, the export says"), "{complaint}");
    store.put(&key1, original.into()).await.unwrap();

    // A tampered link and an expired one are refused.
    let url = parts[0]["url"].as_str().unwrap();
    let sig = url.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    let flipped = if &url[sig..sig + 1] == "a" { "b" } else { "a" };
    let tampered = format!("{}{flipped}{}", &url[..sig], &url[sig + 1..]);
    assert_eq!(http.get(&tampered).send().await.unwrap().status(), 403);
    let signer = LinkSigner::from_settings(&store_settings, None)
        .unwrap()
        .unwrap();
    let (short, _) = signer
        .sign(
            &part_keys[0],
            Some(Duration::from_secs(1)),
            jiff::Timestamp::now(),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let expired = http.get(&short).send().await.unwrap().status();
    assert!(expired.is_client_error(), "expired link answered {expired}");

    // The notification: once, to the admin, with every link.
    wait_for("the e-mail", 30, || !smtp.messages().is_empty()).await;
    let (subject, body) = decode(&smtp.messages()[0]);
    assert_eq!(
        subject,
        "Call recordings export acme/oct for 2026-10: ready"
    );
    assert!(smtp.messages()[0].contains("admin@acme.example"));
    for p in &parts {
        assert!(body.contains(p["url"].as_str().unwrap()), "{body}");
    }
    let events: Vec<Value> = server.list("events.k8s.io", "v1", "events", Some("acme"));
    assert!(events.iter().any(|e| e["reason"] == "Succeeded"));

    // Links renewed on request, through an annotation.
    let (code, _) = server
        .request(
            "PATCH",
            "/apis/opname.dev/v1alpha1/namespaces/acme/bulkexports/oct",
            "application/merge-patch+json",
            &json!({"metadata": {"annotations": {"opname.dev/renew-links": "1"}}}).to_string(),
        )
        .await;
    assert_eq!(code, 200);
    wait_for("renewed links", 30, || {
        export(&server, "oct")["status"]["linksRenewedFor"] == "1"
    })
    .await;
    let renewed = export(&server, "oct")["status"]["parts"][0]["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(renewed, url);
    assert_eq!(http.get(&renewed).send().await.unwrap().status(), 200);

    // The status says when the archives go: whole days after the start.
    let done = export(&server, "oct")["status"].clone();
    let started: jiff::Timestamp = done["startTime"].as_str().unwrap().parse().unwrap();
    let expire: jiff::Timestamp = done["archivesExpire"].as_str().unwrap().parse().unwrap();
    let kept = expire.duration_since(started);
    assert!(
        kept.as_secs() > 0 && kept.as_secs() % 86_400 == 0,
        "archives kept {kept:?}"
    );

    // Renewal refuses to sign a key that is not this export's (a status anyone could patch),
    // and one whose archive the store no longer has; the links leave the status either way.
    let renew = |value: &'static str| {
        let server = &server;
        async move {
            let (code, _) = server
                .request(
                    "PATCH",
                    "/apis/opname.dev/v1alpha1/namespaces/acme/bulkexports/oct",
                    "application/merge-patch+json",
                    &json!({"metadata": {"annotations": {"opname.dev/renew-links": value}}})
                        .to_string(),
                )
                .await;
            assert_eq!(code, 200);
            wait_for("the renewal's answer", 30, || {
                export(server, "oct")["status"]["linksRenewedFor"] == value
            })
            .await;
            export(server, "oct")["status"].clone()
        }
    };
    let set_parts = |parts: Value| {
        let server = &server;
        async move {
            let (code, body) = server
                .request(
                    "PATCH",
                    "/apis/opname.dev/v1alpha1/namespaces/acme/bulkexports/oct/status",
                    "application/merge-patch+json",
                    &json!({"status": {"parts": parts}}).to_string(),
                )
                .await;
            assert_eq!(code, 200, "{body}");
        }
    };
    let recording = store_keys(store.as_ref(), Some("recordings"))
        .await
        .into_iter()
        .find(|k| k.ends_with(".opus") && !k.contains("/exports/"))
        .unwrap();
    let mut foreign = done["parts"].clone();
    foreign[0]["key"] = json!(recording);
    set_parts(foreign).await;
    let refused = renew("2").await;
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("not under this export's own prefix"),
        "{refused}"
    );
    assert!(
        refused["parts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p.get("url").is_none()),
        "no link at all: {refused}"
    );
    set_parts(done["parts"].clone()).await;
    object_store::ObjectStoreExt::delete(store.as_ref(), &part_keys[0].as_str().into())
        .await
        .unwrap();
    let gone = renew("3").await;
    assert!(
        gone["message"].as_str().unwrap().contains("is gone"),
        "{gone}"
    );
    assert!(gone["parts"][0].get("url").is_none());
    let events = server.list("events.k8s.io", "v1", "events", Some("acme"));
    for reason in ["LinksRefused", "ArchivesGone"] {
        assert!(
            events
                .iter()
                .any(|e| e["reason"] == reason && e["type"] == "Warning"),
            "{reason}: {events:?}"
        );
    }

    // The gate: carol keeps recordings 30 days.
    let (code, _) = server
        .create_yaml(&create(
            "carol",
            "  month: \"2026-10\"\n  users: [carol]\n  notify: {emails: [admin@acme.example]}\n",
        ))
        .await[0]
        .clone();
    assert_eq!(code, 201);
    wait_for("the refusal", 30, || {
        export(&server, "carol")["status"]["phase"] == "Failed"
    })
    .await;
    let refused = export(&server, "carol")["status"].clone();
    assert_eq!(
        refused["conditions"][0]["reason"],
        "RetentionBelowExportMinimum"
    );
    assert!(refused["parts"].as_array().is_none_or(|p| p.is_empty()));
    wait_for("the refusal's Event and e-mail", 30, || {
        server
            .list("events.k8s.io", "v1", "events", Some("acme"))
            .iter()
            .any(|e| e["reason"] == "Refused")
            && smtp.messages().len() == 2
    })
    .await;
    assert!(
        store_keys(store.as_ref(), Some("recordings/exports/acme/carol"))
            .await
            .is_empty()
    );

    // An empty month: a clear result and no archive.
    server
        .create_yaml(&create("jan", "  month: \"2025-01\"\n"))
        .await;
    wait_for("the empty export", 60, || {
        export(&server, "jan")["status"]["phase"] == "Succeeded"
    })
    .await;
    let empty = export(&server, "jan")["status"].clone();
    assert_eq!(empty["parts"], json!([]));
    assert_eq!(
        empty["message"],
        "no recordings in 2025-01: nothing to export"
    );

    // Deleting a running export cancels its Job and removes its archives.
    server
        .create_yaml(&create("cancel", "  month: \"2026-10\"\n"))
        .await;
    wait_for("the second export to write a part", 60, || {
        export(&server, "cancel")["status"]["phase"] == "Running" && kubelet.runs_job("cancel")
    })
    .await;
    for _ in 0..100 {
        if !store_keys(store.as_ref(), Some("recordings/exports/acme/cancel"))
            .await
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, body) = server
        .request(
            "DELETE",
            "/apis/opname.dev/v1alpha1/namespaces/acme/bulkexports/cancel",
            "application/json",
            "",
        )
        .await;
    assert!(code == 200 || code == 202, "{code} {body}");
    wait_for("the cancelled export to go", 30, || {
        export(&server, "cancel").is_null()
    })
    .await;
    wait_for("its Job's pod to stop", 30, || !kubelet.runs_job("cancel")).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        store_keys(store.as_ref(), Some("recordings/exports/acme/cancel"))
            .await
            .is_empty()
    );
    assert!(
        !server
            .list("batch", "v1", "jobs", Some("opname-system"))
            .iter()
            .any(|j| j["metadata"]["name"].as_str().unwrap().contains("cancel"))
    );
    assert_eq!(smtp.messages().len(), 2, "each notification once");

    // Every month by itself: a ScheduledBulkExport creates the last month that ended in
    // Amsterdam (an hour's delay for the last uploads) as a real export, mails it, says when the
    // next one comes, and deleting the schedule deletes its exports with their archives.
    let now = jiff::Timestamp::now();
    let amsterdam = jiff::tz::TimeZone::get("Europe/Amsterdam").unwrap();
    let this_month = now.to_zoned(amsterdam.clone()).date().first_of_month();
    let ended_an_hour_ago = this_month.to_zoned(amsterdam.clone()).unwrap().timestamp()
        + jiff::SignedDuration::from_hours(1)
        <= now;
    let due = this_month
        .checked_sub(jiff::Span::new().months(if ended_an_hour_ago { 1 } else { 2 }))
        .unwrap();
    let due = format!("{:04}-{:02}", due.year(), due.month());
    let scheduled = format!("monthly-{due}");
    let (code, body) = server
        .create_yaml(
            "apiVersion: opname.dev/v1alpha1\nkind: ScheduledBulkExport\nmetadata:\n  name: monthly\n  namespace: acme\nspec:\n  keep: 2\n  notify: {emails: [admin@acme.example]}\n",
        )
        .await
        .remove(0);
    assert_eq!(code, 201, "{body}");
    wait_for("the scheduled month's export", 60, || {
        export(&server, &scheduled)["status"]["phase"] == "Succeeded"
    })
    .await;
    let made = export(&server, &scheduled);
    assert_eq!(made["spec"]["month"], due.as_str());
    assert_eq!(made["metadata"]["labels"]["opname.dev/schedule"], "monthly");
    assert_eq!(
        made["metadata"]["ownerReferences"][0]["kind"],
        "ScheduledBulkExport"
    );
    assert_eq!(made["status"]["timeZone"], "Europe/Amsterdam");
    let schedule = || {
        server
            .list(
                "opname.dev",
                "v1alpha1",
                "scheduledbulkexports",
                Some("acme"),
            )
            .into_iter()
            .next()
            .unwrap_or(Value::Null)
    };
    wait_for("the schedule's status", 30, || {
        schedule()["status"]["lastMonth"] == due.as_str()
    })
    .await;
    let status = schedule()["status"].clone();
    let next = this_month
        .checked_add(jiff::Span::new().months(if ended_an_hour_ago { 1 } else { 0 }))
        .unwrap()
        .to_zoned(amsterdam)
        .unwrap()
        .timestamp()
        + jiff::SignedDuration::from_hours(1);
    let said: jiff::Timestamp = status["nextRun"].as_str().unwrap().parse().unwrap();
    assert_eq!(said, next, "{status}");
    assert_eq!(status["exports"], json!([scheduled]));
    assert_eq!(status["conditions"][0]["reason"], "Scheduled");
    // Its own e-mail, whichever other notification arrives beside it.
    let about = format!("acme/{scheduled}");
    wait_for("the scheduled export's e-mail", 30, || {
        smtp.messages().iter().any(|m| decode(m).0.contains(&about))
    })
    .await;
    let mailed = smtp
        .messages()
        .iter()
        .filter(|m| decode(m).0.contains(&about))
        .count();
    assert_eq!(mailed, 1, "once");
    let (code, body) = server
        .request(
            "DELETE",
            "/apis/opname.dev/v1alpha1/namespaces/acme/scheduledbulkexports/monthly",
            "application/json",
            "",
        )
        .await;
    assert!(code == 200 || code == 202, "{code} {body}");
    wait_for("the schedule's export to be collected", 60, || {
        export(&server, &scheduled).is_null()
    })
    .await;
    let prefix = format!("recordings/exports/acme/{scheduled}");
    assert!(store_keys(store.as_ref(), Some(&prefix)).await.is_empty());

    // A misspelled time zone refuses the export rather than counting the month in UTC.
    server
        .annotate_namespace("acme", json!({"opname.dev/time-zone": "Europe/Amsterdm"}))
        .await;
    server
        .create_yaml(&create("zone", "  month: \"2026-10\"\n"))
        .await;
    wait_for("the refusal for the zone", 30, || {
        export(&server, "zone")["status"]["phase"] == "Failed"
    })
    .await;
    let zone = export(&server, "zone")["status"].clone();
    assert_eq!(zone["conditions"][0]["reason"], "InvalidTimeZone", "{zone}");
    assert!(
        zone["message"]
            .as_str()
            .unwrap()
            .contains("\"Europe/Amsterdm\""),
        "{zone}"
    );
    assert!(zone.get("timeZone").is_none(), "{zone}");
    server.assert_chart_rbac_sufficed();
}
