//! The recordings service on a real kube-apiserver, with the chart's RBAC and a token of the
//! chart's ServiceAccount: a user token bound to the chart's `opname-recordings-viewer` role in the
//! organisation's namespace lists its recordings; a valid token without the role is refused by
//! the real SubjectAccessReview (403), a made-up token by the real TokenReview (401), and the
//! viewer is refused in a namespace where it has no binding.

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
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
    let (_, store_root) = opname_tests::local_store(dir.path());
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
    let service_kubeconfig = cp
        .service_account_kubeconfig(&admin, "opname-system", "opname-operator")
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
    let viewer = token_of(
        &cp.service_account_kubeconfig(&admin, "acme", "viewer")
            .await,
    );
    let stranger = token_of(
        &cp.service_account_kubeconfig(&admin, "acme", "stranger")
            .await,
    );

    let (_service, addr) =
        opname_tests::recordings_service(&service_kubeconfig, dir.path(), &store_root);
    let list = "/api/v1/namespaces/acme/recordings";
    assert_eq!(status(addr, list, &viewer).await, 200);
    assert_eq!(status(addr, list, &stranger).await, 403);
    assert_eq!(status(addr, list, "not-a-token").await, 401);
    assert_eq!(
        status(addr, "/api/v1/namespaces/other/recordings", &viewer).await,
        403,
        "the binding is for acme only"
    );
}
