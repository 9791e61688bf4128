//! A real Kubernetes control plane on loopback for the tests: etcd and kube-apiserver as built
//! by `tests/controlplane/build.sh` (k8s v1.37.2, etcd v3.6.16), with `--authorization-mode=Node,RBAC`,
//! the default admission plugins (PodSecurity included) and ServiceAccount token issuance.
//!
//! The test authenticates with a static token in `system:masters`; the serving certificate is the
//! API server's own self-signed one (the kubeconfig skips its verification, on loopback only).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{Proc, free_port, wait_until};

/// Where `tests/controlplane/build.sh` puts the binaries (override: `OPNAME_CONTROLPLANE`).
pub fn binaries() -> PathBuf {
    std::env::var("OPNAME_CONTROLPLANE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/opt/opname-controlplane/k8s-v1.37.2-etcd-v3.6.16"))
}

fn binary(name: &str) -> PathBuf {
    let path = binaries().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `bash tests/controlplane/build.sh` (or `bash .ci/run`)",
        path.display()
    );
    path
}

pub struct ControlPlane {
    pub url: String,
    pub token: String,
    pub kubeconfig: PathBuf,
    // Dropped in reverse: the API server before etcd, then the directory.
    _apiserver: Proc,
    _etcd: Proc,
    _dir: tempfile::TempDir,
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stderr(Stdio::null())
        .status()
        .expect("openssl (Debian package openssl)");
    assert!(status.success(), "openssl {args:?}");
}

impl ControlPlane {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        openssl(d, &["genrsa", "-out", "sa.key", "2048"]);
        openssl(d, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
        let token = format!("opname-test-{}", std::process::id());
        std::fs::write(
            d.join("tokens.csv"),
            format!("{token},opname-test-admin,opname-test-admin,system:masters\n"),
        )
        .expect("token file");
        let (client, peer, secure) = (free_port(), free_port(), free_port());
        let etcd_log = std::fs::File::create(d.join("etcd.log")).expect("etcd log");
        let etcd = Proc::spawn(
            "etcd",
            Command::new(binary("etcd"))
                .args(["--name", "test", "--data-dir"])
                .arg(d.join("etcd"))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
                ))
                .arg(format!("--initial-cluster=test=http://127.0.0.1:{peer}"))
                .stdout(Stdio::null())
                .stderr(etcd_log),
        );
        let api_log = std::fs::File::create(d.join("apiserver.log")).expect("apiserver log");
        let mut apiserver = Proc::spawn(
            "kube-apiserver",
            Command::new(binary("kube-apiserver"))
                .arg(format!("--etcd-servers=http://127.0.0.1:{client}"))
                .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
                // The `kubernetes` Service's endpoints may not name a loopback address.
                .arg("--endpoint-reconciler-type=none")
                .arg(format!("--secure-port={secure}"))
                .arg(format!("--cert-dir={}", d.join("certs").display()))
                .arg(format!(
                    "--token-auth-file={}",
                    d.join("tokens.csv").display()
                ))
                .arg("--authorization-mode=Node,RBAC")
                .arg(format!(
                    "--service-account-key-file={}",
                    d.join("sa.pub").display()
                ))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    d.join("sa.key").display()
                ))
                .arg("--service-account-issuer=https://kubernetes.default.svc")
                // Configuration only: nothing routes to Service addresses here.
                .arg("--service-cluster-ip-range=10.96.0.0/24")
                .stdout(Stdio::null())
                .stderr(api_log),
        );
        let url = format!("https://127.0.0.1:{secure}");
        let kubeconfig = d.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    insecure-skip-tls-verify: true\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context: {{cluster: test, user: admin}}\ncurrent-context: test\n"
            ),
        )
        .expect("kubeconfig");
        let ready = wait_until(Duration::from_secs(90), || {
            if let Ok(Some(_)) = apiserver.child.try_wait() {
                return true;
            }
            Command::new("curl")
                .args(["-skf", "-o", "/dev/null", "-H"])
                .arg(format!("Authorization: Bearer {token}"))
                .arg(format!("{url}/readyz"))
                .status()
                .is_ok_and(|s| s.success())
        });
        let exited = apiserver.child.try_wait().ok().flatten();
        assert!(
            ready && exited.is_none(),
            "kube-apiserver did not become ready ({exited:?}): {}",
            std::fs::read_to_string(d.join("apiserver.log"))
                .unwrap_or_default()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        );
        Self {
            url,
            token,
            kubeconfig,
            _apiserver: apiserver,
            _etcd: etcd,
            _dir: dir,
        }
    }

    /// A client with the admin token.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("client config");
        kube::Client::try_from(config).expect("client")
    }
}

impl ControlPlane {
    /// Installs the chart's CRDs and waits until the server has established each.
    pub async fn install_crds(&self, client: &kube::Client) -> Vec<String> {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
        let mut names = Vec::new();
        for file in std::fs::read_dir(crate::workspace().join("charts/opname/crds")).expect("crds")
        {
            let text = std::fs::read_to_string(file.expect("crd file").path()).expect("crd");
            let crd: CustomResourceDefinition = serde_saphyr::from_str(&text).expect("crd yaml");
            names.push(crd.metadata.name.clone().unwrap_or_default());
            crds.create(&kube::api::PostParams::default(), &crd)
                .await
                .unwrap_or_else(|e| panic!("the API server refused {:?}: {e}", crd.metadata.name));
        }
        for name in &names {
            let mut established = false;
            for _ in 0..100 {
                let crd = crds.get(name).await.expect("crd");
                established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if established {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert!(established, "{name} not established");
        }
        // Discovery of the new group can lag establishment by a moment.
        tokio::time::sleep(Duration::from_secs(1)).await;
        names
    }

    /// Applies rendered documents (server-side apply as the test's admin).
    pub async fn apply(&self, client: &kube::Client, docs: &[&serde_json::Value]) {
        use kube::api::{DynamicObject, Patch, PatchParams};
        use kube::core::{ApiResource, GroupVersionKind};
        for doc in docs {
            let (group, version) = match doc["apiVersion"]
                .as_str()
                .unwrap_or_default()
                .split_once('/')
            {
                Some((g, v)) => (g.to_string(), v.to_string()),
                None => (
                    String::new(),
                    doc["apiVersion"].as_str().unwrap_or_default().to_string(),
                ),
            };
            let gvk =
                GroupVersionKind::gvk(&group, &version, doc["kind"].as_str().unwrap_or_default());
            let ar = ApiResource::from_gvk(&gvk);
            let name = doc["metadata"]["name"].as_str().unwrap_or_default();
            let api: kube::Api<DynamicObject> = match doc["metadata"]["namespace"].as_str() {
                Some(ns) => kube::Api::namespaced_with(client.clone(), ns, &ar),
                None => kube::Api::all_with(client.clone(), &ar),
            };
            api.patch(
                name,
                &PatchParams::apply("opname-tests"),
                &Patch::Apply(doc),
            )
            .await
            .unwrap_or_else(|e| panic!("apply {} {name}: {e}", doc["kind"]));
        }
    }

    /// A kubeconfig holding a token of ServiceAccount `ns/name` (TokenRequest), and nothing else.
    pub async fn service_account_kubeconfig(
        &self,
        client: &kube::Client,
        ns: &str,
        name: &str,
    ) -> String {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        let sas: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), ns);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec!["https://kubernetes.default.svc".into()]),
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let answer = sas
            .create_token_request(name, &kube::api::PostParams::default(), &request)
            .await
            .expect("token request");
        let token = answer.status.and_then(|s| s.token).expect("token");
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    insecure-skip-tls-verify: true\nusers:\n- name: sa\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context: {{cluster: test, user: sa, namespace: {ns}}}\ncurrent-context: test\n",
            self.url
        )
    }

    /// Creates plain namespaces.
    pub async fn namespaces(&self, client: &kube::Client, names: &[&str]) {
        let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
        for name in names {
            let ns = serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
                .expect("namespace");
            api.create(&kube::api::PostParams::default(), &ns)
                .await
                .unwrap_or_else(|e| panic!("namespace {name}: {e}"));
        }
    }

    /// Renders the chart with `values`, applies its ServiceAccounts and RBAC, and returns every
    /// rendered document.
    pub async fn install_chart_rbac(
        &self,
        client: &kube::Client,
        values: serde_json::Value,
    ) -> Vec<serde_json::Value> {
        let (_, docs) = crate::helm::render(values);
        let rbac: Vec<&serde_json::Value> = docs
            .iter()
            .filter(|d| {
                matches!(
                    d["kind"].as_str(),
                    Some(
                        "ServiceAccount"
                            | "ClusterRole"
                            | "ClusterRoleBinding"
                            | "Role"
                            | "RoleBinding"
                    )
                )
            })
            .collect();
        assert!(rbac.len() >= 4, "the chart renders its RBAC: {rbac:?}");
        self.apply(client, &rbac).await;
        docs
    }
}
