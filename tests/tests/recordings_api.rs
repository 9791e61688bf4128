//! The recordings API through the real `opname-operator recordings` service (with a token of the
//! chart's ServiceAccount), with access decided by a real kube-apiserver's TokenReview and
//! SubjectAccessReview from the chart's roles and RoleBindings: filters, cursor
//! pagination, one record, audio with Range requests and download names, the audit trail of plays,
//! downloads and record reads, exports listed and requested; 401 without a token, 403 without
//! permission and across namespaces. The service runs as an OIDC login proxy's backend would
//! (`audiences: []`, the proxy trusted): the control plane's users hold static tokens.
//!
//! The bypasses once possible, each refused: a first fetch from byte 1 escapes the audit, a
//! client's own `X-Forwarded-For` names the audited address, a record read is not audited, the
//! same user without the required group rides on a cached decision, a cross-site page signs a
//! browser in or requests an export, and listings write index objects for empty days.

use std::collections::BTreeSet;

use futures::StreamExt;
use object_store::ObjectStore;
use opname_tests::controlplane::{ControlPlane as ApiServer, User};
use opname_tests::{Synthetic, recordings_service};
use serde_json::{Value, json};

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn get(&self, token: Option<&str>, path: &str, range: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(r) = range {
            req = req.header("range", r);
        }
        req.send().await.unwrap()
    }

    async fn json(&self, token: &str, path: &str) -> Value {
        let resp = self.get(Some(token), path, None).await;
        assert_eq!(resp.status(), 200, "{path}");
        resp.json().await.unwrap()
    }
}

const LIST: &str =
    "/api/v1/namespaces/acme/recordings?from=2026-11-01T00:00:00Z&to=2026-11-04T00:00:00Z";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filter_page_play_download_and_access_control() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let (store, store_dir) = opname_tests::local_store(dir);
    // acme: 12 calls on 2 November and 3 on the 3rd; another organisation's 2.
    let mut audio_of = std::collections::HashMap::new();
    let mut inbound = String::new();
    let mut stems = std::collections::HashMap::new();
    for n in 0..17u32 {
        let (ns, day) = match n {
            0..12 => ("acme", "2026-11-02"),
            12..15 => ("acme", "2026-11-03"),
            _ => ("other", "2026-11-02"),
        };
        let start: jiff::Timestamp = format!("{day}T08:00:00Z").parse().unwrap();
        let start = start
            .checked_add(jiff::SignedDuration::from_secs(i64::from(n) * 600))
            .unwrap();
        let audio: Vec<u8> = (0..5000u32).map(|i| (i * 7 + n) as u8).collect();
        let r = Synthetic {
            // Kept ten years: the fixed dates of November 2026 must not expire under the test
            // (a 30-day class made them vanish from the list on 2 December).
            class: 3650,
            namespace: ns,
            id: Synthetic::id_at(start, n),
            user: if n % 2 == 0 { "alice" } else { "bob" },
            start,
            seconds: f64::from(10 + n * 5),
            parties: [
                if n == 3 {
                    "sip:+31 20 555 0003@pbx.example"
                } else {
                    "sip:+31201234567@pbx.example"
                },
                "sip:carol@example.com",
            ],
            audio: audio.clone(),
        };
        let stem = r.put(store.as_ref(), "recordings").await;
        if n == 5 {
            // Inbound: the caller listed first, the user's own device (carol's desk) second.
            // Its policy states that the SBC announces the recording.
            let patch = json!({"matchedIdentity": "sip:carol@example.com",
                "notice": {"announcedBy": "SBC", "text": "This call is recorded."}});
            Synthetic::patch_record(store.as_ref(), &stem, patch).await;
            inbound = r.id.clone();
        }
        audio_of.insert(r.id.clone(), audio);
        stems.insert(r.id.clone(), stem);
    }
    // People of acme with static tokens; what they may do comes only from RoleBindings, checked
    // by the real TokenReview and SubjectAccessReview.
    let server = ApiServer::start_with(&[
        User {
            token: "admin-token",
            name: "admin@acme.example",
            groups: &["acme-admins"],
        },
        User {
            token: "viewer-token",
            name: "viewer@acme.example",
            groups: &[],
        },
        User {
            token: "nobody-token",
            name: "nobody@acme.example",
            groups: &[],
        },
        // The admin again, without the admins' group (another login, a scoped token).
        User {
            token: "admin-ungrouped-token",
            name: "admin@acme.example",
            groups: &[],
        },
        User {
            token: "listener-token",
            name: "listener@acme.example",
            groups: &["acme-admins"],
        },
    ])
    .await;
    server
        .install(
            &["acme", "other"],
            json!({"store": {"url": format!("file://{}", store_dir.display())}}),
        )
        .await;
    for role in ["opname-recordings-viewer", "opname-recordings-exporter"] {
        server
            .bind("acme", "ClusterRole", role, ("Group", "acme-admins"))
            .await;
    }
    // A viewer who may see the list but not hear a call: a Role of the organisation's own.
    let list_only = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "recordings-list-only", "namespace": "acme"},
        "rules": [{"apiGroups": ["opname.dev"], "resources": ["recordings"], "verbs": ["list"]}],
    });
    server.apply(&server.client().await, &[&list_only]).await;
    server
        .bind(
            "acme",
            "Role",
            "recordings-list-only",
            ("User", "viewer@acme.example"),
        )
        .await;
    let kubeconfig = server
        .service_account_kubeconfig(&server.client().await, "opname-system", "opname-recordings")
        .await;
    let (_svc, addr) = recordings_service(
        &kubeconfig,
        dir,
        &store_dir,
        "{audiences: [], trustedProxies: [127.0.0.1/32]}",
    );
    // The same service where nobody is a trusted proxy.
    let (_untrusting, untrusting) =
        recordings_service(&kubeconfig, dir, &store_dir, "{audiences: []}");
    let c = Client {
        http: reqwest::Client::new(),
        base: format!("http://{addr}"),
    };

    // No token, a token without permission, another organisation.
    assert_eq!(c.get(None, LIST, None).await.status(), 401);
    assert_eq!(c.get(Some("forged"), LIST, None).await.status(), 401);
    assert_eq!(c.get(Some("nobody-token"), LIST, None).await.status(), 403);
    let other = LIST.replace("/acme/", "/other/");
    assert_eq!(c.get(Some("admin-token"), &other, None).await.status(), 403);

    // All of acme's calls in the range, newest first.
    let all = c.json("admin-token", LIST).await;
    // The admin's decision is cached; the same name without the group is asked again.
    assert_eq!(
        c.get(Some("admin-ungrouped-token"), LIST, None)
            .await
            .status(),
        403
    );
    let items = all["items"].as_array().unwrap();
    assert_eq!(items.len(), 15);
    let starts: Vec<&str> = items.iter().map(|i| i["start"].as_str().unwrap()).collect();
    let mut sorted = starts.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(starts, sorted, "newest first");
    assert!(all["next"].is_null());
    // The other party is whoever is not the user's own device, not the second participant.
    for i in items {
        let (other, direction) = if i["id"] == inbound.as_str() {
            ("sip:+31201234567@pbx.example", "inbound")
        } else {
            ("sip:carol@example.com", "outbound")
        };
        assert_eq!(
            (&i["otherParty"], &i["direction"]),
            (&json!(other), &json!(direction)),
            "{i}"
        );
        let notice = if i["id"] == inbound.as_str() {
            json!({"announcedBy": "SBC", "text": "This call is recorded."})
        } else {
            Value::Null
        };
        assert_eq!(i["notice"], notice, "{i}");
    }

    // Cursor pages of 4 give the same calls once each.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cur) => format!("{LIST}&limit=4&cursor={cur}"),
            None => format!("{LIST}&limit=4"),
        };
        let page = c.json("admin-token", &path).await;
        let got = page["items"].as_array().unwrap();
        assert!(got.len() <= 4);
        paged.extend(got.iter().map(|i| i["id"].as_str().unwrap().to_string()));
        match page["next"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => break,
        }
    }
    let ids: Vec<String> = items
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paged, ids);

    // Filters.
    let count = |q: &str| {
        let c = &c;
        let path = format!("{LIST}&{q}");
        async move {
            c.json("admin-token", &path).await["items"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert_eq!(count("user=alice").await, 8);
    assert_eq!(
        count("party=%2B31205550003").await,
        1,
        "any participant, normalised"
    );
    assert_eq!(count("party=carol%40example.com").await, 15);
    assert_eq!(count("minDuration=70").await, 3, "n = 12, 13, 14");
    assert_eq!(count("complete=false").await, 0);
    let third =
        "/api/v1/namespaces/acme/recordings?from=2026-11-03T00:00:00Z&to=2026-11-04T00:00:00Z";
    assert_eq!(
        c.json("admin-token", third).await["items"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // One record; the audio in full, by range, as a download.
    let id = ids[0].clone();
    let record = c
        .json(
            "admin-token",
            &format!("/api/v1/namespaces/acme/recordings/{id}"),
        )
        .await;
    assert_eq!(record["id"], id.as_str());
    let audio_path = format!("/api/v1/namespaces/acme/recordings/{id}/audio");
    let full = c.get(Some("admin-token"), &audio_path, None).await;
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["content-type"], "audio/ogg; codecs=opus");
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    assert_eq!(full.bytes().await.unwrap().to_vec(), audio_of[&id]);
    let part = c
        .get(Some("admin-token"), &audio_path, Some("bytes=100-199"))
        .await;
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["content-range"], "bytes 100-199/5000");
    assert_eq!(
        part.bytes().await.unwrap().to_vec(),
        audio_of[&id][100..200]
    );
    let tail = c
        .get(Some("admin-token"), &audio_path, Some("bytes=-10"))
        .await;
    assert_eq!(tail.bytes().await.unwrap().to_vec(), audio_of[&id][4990..]);
    let beyond = c
        .get(Some("admin-token"), &audio_path, Some("bytes=9000-"))
        .await;
    assert_eq!(beyond.status(), 416);
    assert_eq!(beyond.headers()["content-range"], "bytes */5000");
    let download = c
        .get(
            Some("admin-token"),
            &format!("{audio_path}?download=1"),
            None,
        )
        .await;
    let disposition = download.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    let start = items[0]["start"].as_str().unwrap();
    let stamp = format!("{}_{}", &start[..10], start[11..19].replace(':', ""));
    assert_eq!(
        disposition,
        format!("attachment; filename=\"{stamp}_+31201234567_carol_{id}.opus\"")
    );
    assert_eq!(
        c.get(Some("admin-ungrouped-token"), &audio_path, None)
            .await
            .status(),
        403
    );
    // Another person's first fetch starts at byte 1, through a trusted proxy: audited, with the
    // address the proxy forwarded for.
    let sly = c
        .http
        .get(format!("{}{audio_path}", c.base))
        .bearer_auth("listener-token")
        .header("range", "bytes=1-")
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(sly.status(), 206);
    assert_eq!(sly.bytes().await.unwrap().to_vec(), audio_of[&id][1..]);
    // Where the peer is no trusted proxy, its header names nobody (and is kept as sent).
    let spoofed = reqwest::Client::new()
        .get(format!("http://{untrusting}{audio_path}?download=1"))
        .bearer_auth("listener-token")
        .header("x-forwarded-for", "198.51.100.7")
        .send()
        .await
        .unwrap();
    assert_eq!(spoofed.status(), 200);
    // Viewing the list is not hearing: the viewer may list but not play.
    assert_eq!(c.get(Some("viewer-token"), LIST, None).await.status(), 200);
    assert_eq!(
        c.get(Some("viewer-token"), &audio_path, None)
            .await
            .status(),
        403
    );
    assert_eq!(c.get(None, &audio_path, None).await.status(), 401);
    let unknown = "/api/v1/namespaces/acme/recordings/019a4a6e-5a00-7000-8000-00000000ffff/audio";
    assert_eq!(
        c.get(Some("admin-token"), unknown, None).await.status(),
        404
    );

    // Audit: the record read, the play and the download, not the seeks of the same play; the
    // other person's play from byte 1 and download; nothing for denials.
    let mut audits: Vec<Value> = Vec::new();
    let mut listing = store.list(Some(&"recordings".into()));
    while let Some(m) = listing.next().await {
        let m = m.unwrap();
        if m.location.as_ref().contains(".access/") {
            let bytes = object_store::ObjectStoreExt::get(store.as_ref(), &m.location)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            audits.push(serde_json::from_slice(&bytes).unwrap());
        }
    }
    let actions: BTreeSet<(String, String, String)> = audits
        .iter()
        .map(|a| {
            (
                a["action"].as_str().unwrap().to_string(),
                a["who"].as_str().unwrap().to_string(),
                a["recording"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(audits.len(), 5, "{audits:?}");
    let expected: BTreeSet<(String, String, String)> = [
        ("record", "admin"),
        ("play", "admin"),
        ("download", "admin"),
        ("play", "listener"),
        ("download", "listener"),
    ]
    .into_iter()
    .map(|(a, who)| (a.to_string(), format!("{who}@acme.example"), id.clone()))
    .collect();
    assert_eq!(actions, expected);
    let of = |action: &str, who: &str| {
        audits
            .iter()
            .find(|a| a["action"] == action && a["who"] == format!("{who}@acme.example"))
            .unwrap()
            .clone()
    };
    for action in ["record", "play", "download"] {
        let a = of(action, "admin");
        assert_eq!(
            (&a["from"], &a["peer"]),
            (&json!("127.0.0.1"), &json!("127.0.0.1"))
        );
        assert!(a.get("forwardedFor").is_none());
    }
    let proxied = of("play", "listener");
    assert_eq!(proxied["from"], "203.0.113.9", "a trusted proxy's word");
    assert_eq!(proxied["peer"], "127.0.0.1");
    let spoofed = of("download", "listener");
    assert_eq!(
        spoofed["from"], "127.0.0.1",
        "an untrusted peer's header names nobody"
    );
    assert_eq!(spoofed["forwardedFor"], "198.51.100.7");

    // Listing walked 1–4 November and a lookup reached a crafted day: only days with recordings
    // have index objects.
    for crafted in [
        "00000000-0000-7000-8000-000000000000",
        "0fffffff-ffff-7000-8000-000000000000",
    ] {
        let path = format!("/api/v1/namespaces/acme/recordings/{crafted}");
        assert_eq!(c.get(Some("admin-token"), &path, None).await.status(), 404);
    }
    let indexes = opname_tests::store_keys(store.as_ref(), Some("recordings/index")).await;
    assert_eq!(
        indexes,
        [
            "recordings/index/acme/2026/11/02.json",
            "recordings/index/acme/2026/11/03.json"
        ],
        "no index for empty or crafted days"
    );

    // A page elsewhere can neither sign a browser in nor request an export.
    let cross_login = c
        .http
        .post(format!("{}/login", c.base))
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(cross_login.status(), 403);
    assert!(cross_login.headers().get("set-cookie").is_none());
    let fetched_login = c
        .http
        .post(format!("{}/login", c.base))
        .header("sec-fetch-site", "cross-site")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(fetched_login.status(), 403);
    let cross_export = c
        .http
        .post(format!("{}/api/v1/namespaces/acme/bulkexports", c.base))
        .header("origin", "https://evil.example")
        .bearer_auth("admin-token")
        .json(&serde_json::json!({"month": "2026-10"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cross_export.status(), 403);

    // Exports: requested and listed by an exporter, refused to a viewer.
    let exports = "/api/v1/namespaces/acme/bulkexports";
    let made = c
        .http
        .post(format!("{}{exports}", c.base))
        .header("origin", c.base.as_str())
        .bearer_auth("admin-token")
        .json(&serde_json::json!({"month": "2026-10", "emails": ["admin@acme.example"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(made.status(), 201);
    let name = made.json::<Value>().await.unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let listed = c.json("admin-token", exports).await;
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        1,
        "the cross-site one was never made"
    );
    assert_eq!(listed["items"][0]["name"], name.as_str());
    assert_eq!(listed["items"][0]["month"], "2026-10");
    let stored = server.list("opname.dev", "v1alpha1", "bulkexports", Some("acme"));
    assert_eq!(
        stored[0]["metadata"]["annotations"]["opname.dev/requested-by"],
        "admin@acme.example"
    );
    let bad = c
        .http
        .post(format!("{}{exports}", c.base))
        .bearer_auth("admin-token")
        .json(&serde_json::json!({"month": "2026-13"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400, "the schema's refusal comes back");
    let refused = c
        .http
        .post(format!("{}{exports}", c.base))
        .bearer_auth("viewer-token")
        .json(&serde_json::json!({"month": "2026-10"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    // A local store signs no links: the service streams the parts, audited, and only keys under
    // the export's own prefix, whatever its status names.
    let zip: Vec<u8> = (0..3000u32).map(|i| (i * 13) as u8).collect();
    let part_key = format!("recordings/exports/acme/{name}/part-1.zip");
    object_store::ObjectStoreExt::put(
        store.as_ref(),
        &part_key.as_str().into(),
        zip.clone().into(),
    )
    .await
    .unwrap();
    let foreign = format!("{}.opus", stems[&id]);
    let status = json!({"status": {"phase": "Succeeded", "parts": [
        {"key": part_key, "size": 3000, "sha256": "x", "recordings": 1},
        {"key": foreign, "size": 5000, "sha256": "y", "recordings": 1},
    ]}});
    let (code, body) = server
        .request(
            "PATCH",
            &format!("/apis/opname.dev/v1alpha1/namespaces/acme/bulkexports/{name}/status"),
            "application/merge-patch+json",
            &status.to_string(),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let parts = format!("/api/v1/namespaces/acme/bulkexports/{name}/parts");
    let got = c
        .get(Some("admin-token"), &format!("{parts}/1"), None)
        .await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "application/zip");
    assert!(
        got.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .ends_with("-part-1.zip\"")
    );
    assert_eq!(got.bytes().await.unwrap().to_vec(), zip);
    let resumed = c
        .get(
            Some("admin-token"),
            &format!("{parts}/1"),
            Some("bytes=1000-"),
        )
        .await;
    assert_eq!(resumed.status(), 206);
    assert_eq!(resumed.bytes().await.unwrap().to_vec(), zip[1000..]);
    assert_eq!(
        c.get(Some("admin-token"), &format!("{parts}/2"), None)
            .await
            .status(),
        403,
        "a recording's key in the status is not this export's"
    );
    assert_eq!(
        c.get(Some("admin-token"), &format!("{parts}/3"), None)
            .await
            .status(),
        404
    );
    assert_eq!(
        c.get(Some("viewer-token"), &format!("{parts}/1"), None)
            .await
            .status(),
        403
    );
    let trail = opname_tests::store_keys(
        store.as_ref(),
        Some(&format!("recordings/exports/acme/{name}/part-1.zip.access")),
    )
    .await;
    assert_eq!(trail.len(), 1, "one download session, one audit: {trail:?}");
    assert!(trail[0].contains("-export-download-admin"), "{trail:?}");
    server.assert_chart_rbac_sufficed();
}
