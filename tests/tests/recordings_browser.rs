//! The recordings page in headless Chromium, driven over the DevTools protocol: sign in with a
//! token through the login form, filter to one user, press play and see the audio element play
//! with its time advancing, press download and get the stored bytes, request an export. A
//! screenshot of the page is kept in `target/test-artifacts/recordings-page.png`.

use std::process::Command;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use opname_tests::controlplane::{ControlPlane as ApiServer, User};
use opname_tests::{Proc, Synthetic, free_port, ogg_opus_tone, recordings_service, workspace};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A DevTools-protocol session with one page.
struct Page {
    ws: Ws,
    next: u64,
}

impl Page {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        self.ws
            .send(Message::text(
                json!({"id": id, "method": method, "params": params}).to_string(),
            ))
            .await
            .unwrap();
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(30), self.ws.next())
                .await
                .expect("DevTools answer")
                .unwrap()
                .unwrap();
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates JavaScript in the page (awaiting promises) and returns its value.
    async fn js(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {r}");
        r["result"]["value"].clone()
    }

    async fn wait(&mut self, what: &str, expr: &str) {
        for _ in 0..150 {
            if self.js(expr).await == true {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("timed out waiting for {what} ({expr})");
    }
}

fn chromium() -> &'static str {
    ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| {
            Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("Debian chromium is missing: apt-get install chromium (.ci/run does)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_filter_play_download_and_export() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let (store, store_dir) = opname_tests::local_store(dir);
    let tone = ogg_opus_tone(6);
    for n in 0..6u32 {
        let start: jiff::Timestamp = "2026-11-02T08:00:00Z".parse().unwrap();
        let start = start
            .checked_add(jiff::SignedDuration::from_secs(i64::from(n) * 900))
            .unwrap();
        let stem = Synthetic {
            // Kept ten years: the fixed dates of November 2026 must not expire under the test
            // (a 30-day class made them vanish from the list on 2 December).
            class: 3650,
            namespace: "acme",
            id: Synthetic::id_at(start, n),
            user: if n % 2 == 0 { "alice" } else { "bob" },
            start,
            seconds: 6.0,
            parties: ["sip:+31201234567@pbx.example", "sip:carol@example.com"],
            audio: tone.clone(),
        }
        .put(store.as_ref(), "recordings")
        .await;
        if n == 0 {
            let notice =
                json!({"notice": {"announcedBy": "PBX", "text": "Dit gesprek wordt opgenomen."}});
            Synthetic::patch_record(store.as_ref(), &stem, notice).await;
        }
    }
    // Late on 2 November in UTC, early on the 3rd in Amsterdam.
    Synthetic {
        class: 3650,
        namespace: "acme",
        id: Synthetic::id_at("2026-11-02T23:30:00Z".parse().unwrap(), 99),
        user: "bob",
        start: "2026-11-02T23:30:00Z".parse().unwrap(),
        seconds: 6.0,
        parties: ["sip:+31201234567@pbx.example", "sip:carol@example.com"],
        audio: tone.clone(),
    }
    .put(store.as_ref(), "recordings")
    .await;
    let server = ApiServer::start_with(&[User {
        token: "admin-token",
        name: "admin@acme.example",
        groups: &[],
    }])
    .await;
    server
        .install(
            &["acme"],
            json!({"store": {"url": format!("file://{}", store_dir.display())}}),
        )
        .await;
    let kubeconfig = server
        .service_account_kubeconfig(&server.client().await, "opname-system", "opname-recordings")
        .await;
    for role in ["opname-recordings-viewer", "opname-recordings-exporter"] {
        server
            .bind("acme", "ClusterRole", role, ("User", "admin@acme.example"))
            .await;
    }
    // Static tokens know no audiences: the service trusts them as an OIDC proxy's backend would.
    let (_svc, addr) = recordings_service(&kubeconfig, dir, &store_dir, "{audiences: []}");

    let port = free_port();
    let downloads = dir.join("downloads");
    std::fs::create_dir_all(&downloads).unwrap();
    let _chrome = Proc::spawn(
        "chromium",
        Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--autoplay-policy=no-user-gesture-required",
                &format!("--remote-debugging-port={port}"),
            ])
            .arg(format!(
                "--user-data-dir={}",
                dir.join("chromium").display()
            ))
            .arg("about:blank")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let http = reqwest::Client::new();
    let mut target = Value::Null;
    for _ in 0..100 {
        if let Ok(r) = http
            .get(format!("http://127.0.0.1:{port}/json/list"))
            .send()
            .await
            && let Ok(list) = r.json::<Vec<Value>>().await
            && let Some(p) = list.into_iter().find(|t| t["type"] == "page")
        {
            target = p;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ws, _) =
        tokio_tungstenite::connect_async(target["webSocketDebuggerUrl"].as_str().unwrap())
            .await
            .unwrap();
    let mut page = Page { ws, next: 0 };
    page.call("Page.enable", json!({})).await;
    page.call(
        "Browser.setDownloadBehavior",
        json!({"behavior": "allow", "downloadPath": downloads.display().to_string()}),
    )
    .await;
    page.call("Page.navigate", json!({"url": format!("http://{addr}/")}))
        .await;

    // Not signed in: the login form. Sign in with the token.
    page.wait(
        "the login form",
        "!document.getElementById('login')?.hidden",
    )
    .await;
    page.js("document.getElementById('login-token').value = 'admin-token'; document.getElementById('login-submit').click(); true")
        .await;
    page.wait(
        "the signed-in page",
        "document.readyState === 'complete' && !document.getElementById('app')?.hidden",
    )
    .await;
    assert_eq!(
        page.js("document.getElementById('who').textContent").await,
        "admin@acme.example"
    );
    // The token is in an HttpOnly cookie: the page's script cannot read it.
    assert_eq!(page.js("document.cookie").await, "");

    // Filter to alice on 2 November.
    page.js(
        "const v = (id, x) => document.getElementById(id).value = x; \
         v('ns', 'acme'); v('f-user', 'alice'); v('f-from', '2026-11-02'); v('f-to', '2026-11-02'); \
         document.getElementById('f-apply').click(); true",
    )
    .await;
    page.wait(
        "alice's three calls",
        "document.querySelectorAll('tr.rec').length === 3",
    )
    .await;
    assert_eq!(
        page.js("[...document.querySelectorAll('tr.rec')].every(r => r.dataset.user === 'alice')")
            .await,
        true
    );
    // How callers were told, in words (not colour), with the announcement as its title.
    assert_eq!(
        page.js("[...document.querySelectorAll('tr.rec td.notice')].map(c => c.textContent + '|' + c.title).sort().join(';')")
            .await,
        "PBX|Dit gesprek wordt opgenomen.;not stated|;not stated|"
    );

    // Play: the audio element plays and its time advances.
    page.js("document.querySelector('tr.rec .play').click(); true")
        .await;
    page.wait(
        "playback to advance",
        "(() => { const p = document.getElementById('player'); return !p.paused && p.currentTime > 1.0 && !p.error; })()",
    )
    .await;

    // Download: the same bytes as in the store.
    let file = page
        .js("document.querySelector('tr.rec a.download').getAttribute('download')")
        .await
        .as_str()
        .unwrap()
        .to_string();
    page.js("document.querySelector('tr.rec a.download').click(); true")
        .await;
    let path = downloads.join(&file);
    for _ in 0..100 {
        if std::fs::metadata(&path).is_ok_and(|m| m.len() == tone.len() as u64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(std::fs::read(&path).unwrap(), tone, "{file}");
    assert!(file.starts_with("2026-11-02_") && file.ends_with(".opus"));

    // Request an export for October.
    page.js(
        "document.getElementById('export-month').value = '2026-10'; \
         document.getElementById('export-submit').click(); true",
    )
    .await;
    page.wait(
        "the export in the panel",
        "[...document.querySelectorAll('#exports tbody tr')].some(r => r.textContent.includes('2026-10'))",
    )
    .await;
    let exports = server.list("opname.dev", "v1alpha1", "bulkexports", Some("acme"));
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0]["spec"]["month"], "2026-10");

    // A Dutch organisation: its words and its clock. Bob's call at 23:30 UTC on 2 November is
    // at 00:30 on 3 November in Amsterdam, and a filter on that local day finds it.
    server
        .annotate_namespace(
            "acme",
            json!({"opname.dev/time-zone": "Europe/Amsterdam", "opname.dev/locale": "nl-NL"}),
        )
        .await;
    page.js(
        "const w = (id, x) => document.getElementById(id).value = x; \
         w('f-user', 'bob'); w('f-from', '2026-11-03'); w('f-to', '2026-11-03'); \
         document.getElementById('f-apply').click(); true",
    )
    .await;
    page.wait(
        "the Dutch page",
        "document.getElementById('time-head').textContent === 'Tijd (Europe/Amsterdam)' && document.querySelectorAll('tr.rec').length === 1",
    )
    .await;
    assert_eq!(
        page.js("[...document.querySelector('tr.rec').children].slice(0, 6).map(c => c.textContent).join('|')")
            .await,
        "03-11-2026|00:30:00|bob|carol|0:06|niet vermeld"
    );
    assert_eq!(
        page.js("document.getElementById('f-apply').textContent + '|' + document.querySelector('tr.rec .play').textContent + '|' + document.documentElement.lang")
            .await,
        "Tonen|Afspelen|nl"
    );
    // The admin's own choice wins over the organisation's language; the zone stays.
    page.js("(() => { const s = document.getElementById('lang'); s.value = 'en'; s.dispatchEvent(new Event('change')); return true; })()")
        .await;
    page.wait(
        "the English page",
        "document.getElementById('time-head').textContent === 'Time (Europe/Amsterdam)' && document.querySelector('tr.rec .play')?.textContent === 'Play'",
    )
    .await;
    assert_eq!(
        page.js("document.querySelector('tr.rec td.day').textContent")
            .await,
        "03/11/2026"
    );
    // Kept ten years (class 3650) from its day: the date retention deletes it, in the zone.
    let kept = page
        .js("document.querySelector('tr.rec td.kept').textContent")
        .await;
    assert!(kept.as_str().unwrap().ends_with("/2036"), "{kept}");
    page.js("(() => { const s = document.getElementById('lang'); s.value = ''; s.dispatchEvent(new Event('change')); return true; })()")
        .await;
    page.wait(
        "the organisation's language again",
        "document.getElementById('f-apply').textContent === 'Tonen'",
    )
    .await;

    let shot = page
        .call("Page.captureScreenshot", json!({"format": "png"}))
        .await;
    let png = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        shot["data"].as_str().unwrap(),
    )
    .unwrap();
    let artifacts = workspace().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    std::fs::write(artifacts.join("recordings-page.png"), &png).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    server.assert_chart_rbac_sufficed();
}
