//! The recordings service on a real kube-apiserver, with the chart's RBAC and a token of the
//! service's own ServiceAccount: a user token bound to the chart's `opname-recordings-viewer`
//! role in the organisation's namespace lists its recordings; a valid token without the role is refused by
//! the real SubjectAccessReview (403), a made-up token by the real TokenReview (401), and the
//! viewer is refused in a namespace where it has no binding. Tokens must be minted for the
//! service's audience (the same person's API-server token is refused), namespaces that are no
//! DNS label get 400, and junk tokens are throttled after a few TokenReviews.

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use opname_operator::recordings::access::MAX_FAILURES;
use opname_operator::settings::RECORDINGS_AUDIENCE;
use opname_tests::controlplane::ControlPlane;
use serde_json::json;

/// The bearer token inside a kubeconfig the harness wrote.
fn token_of(kubeconfig: &str) -> String {
    kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("token")
        .to_string()
}

async fn status(addr: std::net::SocketAddr, path: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
        .status()
        .as_u16()
}

#[tokio::test]
async fn real_token_and_access_reviews_decide_who_lists_recordings() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (store, store_root) = opname_tests::local_store(dir.path());
    // One of acme's calls, an hour ago.
    let audio = opname_tests::ogg_opus_tone(2);
    let start = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
    let id = opname_tests::Synthetic::id_at(start, 1);
    opname_tests::Synthetic {
        class: 30,
        namespace: "acme",
        id: id.clone(),
        user: "alice@acme.example",
        start,
        seconds: 2.0,
        parties: ["sip:alice@acme.example", "tel:+31201234567"],
        audio: audio.clone(),
    }
    .put(store.as_ref(), "recordings")
    .await;
    let cp = ControlPlane::start().await;
    let admin = cp.client().await;
    cp.install_crds(&admin).await;
    cp.namespaces(&admin, &["opname-system", "acme", "other"])
        .await;
    cp.install_chart_rbac(
        &admin,
        json!({"store": {"url": format!("file://{}", store_root.display())}}),
    )
    .await;
    // The service runs as its own ServiceAccount, not the operator's.
    let service_kubeconfig = cp
        .service_account_kubeconfig(&admin, "opname-system", "opname-recordings")
        .await;
    // Two users of the organisation: one the admin bound to the viewer role, one not.
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "acme");
    for name in ["viewer", "stranger"] {
        sas.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
    }
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "viewer-recordings", "namespace": "acme"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "opname-recordings-viewer"},
        "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": "acme"}],
    });
    cp.apply(&admin, &[&binding]).await;
    // As the README says: `kubectl create token viewer --audience opname.dev/recordings`.
    let viewer = cp
        .service_account_token(&admin, "acme", "viewer", RECORDINGS_AUDIENCE)
        .await;
    let stranger = cp
        .service_account_token(&admin, "acme", "stranger", RECORDINGS_AUDIENCE)
        .await;
    // The same person's token for the API server itself: worth everything there, nothing here.
    let api_token = token_of(
        &cp.service_account_kubeconfig(&admin, "acme", "viewer")
            .await,
    );

    let (_service, addr) =
        opname_tests::recordings_service(&service_kubeconfig, dir.path(), &store_root, "{}");
    let list = "/api/v1/namespaces/acme/recordings";
    assert_eq!(status(addr, list, &viewer).await, 200);

    // kubectl opname recordings, with the viewer's token for the service: list, the record,
    // the audio; the stranger is refused with the service's answer.
    let plugin = |token: &str, args: &[&str]| {
        std::process::Command::new(opname_tests::bin("kubectl-opname"))
            .args([
                "-n",
                "acme",
                "recordings",
                "--service",
                &format!("http://{addr}"),
            ])
            .args(["--token", token])
            .args(args)
            .env("KUBECONFIG", dir.path().join("no-kubeconfig"))
            .output()
            .unwrap()
    };
    let listed = plugin(&viewer, &["list"]);
    let text = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(
        listed.status.success(),
        "{}",
        String::from_utf8_lossy(&listed.stderr)
    );
    assert!(
        text.contains(&id) && text.contains("alice@acme.example"),
        "{text}"
    );
    assert!(
        text.contains("START (UTC)"),
        "times labelled with their zone: {text}"
    );
    let got = plugin(&viewer, &["get", &id]);
    let record: serde_json::Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(record["user"], "alice@acme.example");
    let out = dir.path().join("fetched");
    std::fs::create_dir_all(&out).unwrap();
    let fetched = plugin(&viewer, &["download", &id, "--out", out.to_str().unwrap()]);
    assert!(
        fetched.status.success(),
        "{}",
        String::from_utf8_lossy(&fetched.stderr)
    );
    let files = opname_tests::files_with(&out, ".opus");
    assert_eq!(files.len(), 1);
    assert_eq!(std::fs::read(&files[0]).unwrap(), audio);
    let refused = plugin(&stranger, &["list"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("answered 403"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(status(addr, list, &stranger).await, 403);
    assert_eq!(
        status(addr, list, &api_token).await,
        401,
        "a token for the API server's audience is refused, so the service never collects one"
    );
    assert_eq!(status(addr, list, "not-a-token").await, 401);
    assert_eq!(
        status(addr, "/api/v1/namespaces/other/recordings", &viewer).await,
        403,
        "the binding is for acme only"
    );
    for bad in ["ACME", "acme_1", "-acme", &"a".repeat(64)] {
        assert_eq!(
            status(
                addr,
                &format!("/api/v1/namespaces/{bad}/recordings"),
                &viewer
            )
            .await,
            400,
            "{bad} is no namespace name"
        );
    }

    // Junk tokens: refused, then throttled without a review each.
    let reviews = || {
        cp.audited("system:serviceaccount:opname-system:opname-recordings")
            .iter()
            .filter(|(r, _)| r.starts_with("create authentication.k8s.io/tokenreviews"))
            .count()
    };
    let before = reviews();
    // A refused token, repeated, is refused from memory (it still counts against the client).
    assert_eq!(status(addr, list, &api_token).await, 401);
    let mut refused = 0;
    let throttled = loop {
        let resp = reqwest::Client::new()
            .get(format!("http://{addr}{list}"))
            .bearer_auth(format!("junk-{refused}"))
            .send()
            .await
            .unwrap();
        if resp.status() == 429 {
            break resp;
        }
        assert_eq!(resp.status(), 401);
        refused += 1;
        assert!(
            refused <= MAX_FAILURES,
            "no throttling after {refused} refusals"
        );
    };
    let wait: u64 = throttled.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    for n in 0..20 {
        assert_eq!(status(addr, list, &format!("more-junk-{n}")).await, 429);
    }
    // The API server writes an audit line as its response completes: wait for the last one.
    opname_tests::wait_until(std::time::Duration::from_secs(5), || {
        reviews() - before >= refused as usize
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        reviews() - before,
        refused as usize,
        "one TokenReview per refused junk token before the throttle, none after"
    );
    cp.assert_chart_rbac_sufficed();
}
