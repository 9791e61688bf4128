//! A real Kubernetes control plane on loopback for the tests: etcd and kube-apiserver as built
//! by `tests/controlplane/build.sh` (k8s v1.37.2, etcd v3.6.16), with `--authorization-mode=Node,RBAC`,
//! the default admission plugins (PodSecurity included) and ServiceAccount token issuance.
//!
//! The test authenticates with a static token in `system:masters`; people of an organisation
//! ([`User`]) get static tokens too, and their rights come only from RoleBindings. The serving
//! certificate is the API server's own self-signed one (kubeconfigs skip its verification, on
//! loopback only). [`ControlPlane::start_controllers`] adds kube-controller-manager (Deployments,
//! ReplicaSets, Jobs, garbage collection, namespaces, ServiceAccounts, EndpointSlices, node
//! lifecycle) with one service-account credential per controller; `kubelet.rs` is the node.
//! [`ControlPlane::start_dns`] adds the cluster DNS: CoreDNS with its `kubernetes` plugin, serving
//! Services' A and SRV records from the real EndpointSlices, as an SBC in the cluster sees them.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{Proc, free_port};

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

/// A person with a static token: `name` and `groups` are what TokenReview answers.
pub struct User<'a> {
    pub token: &'a str,
    pub name: &'a str,
    pub groups: &'a [&'a str],
}

/// A kubeconfig for `url` with a bearer token and a default namespace.
pub fn kubeconfig(url: &str, token: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {url}\n    insecure-skip-tls-verify: true\nusers:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context: {{cluster: test, user: user, namespace: {namespace}}}\ncurrent-context: test\n"
    )
}

/// A document's group, version and kind, from its `apiVersion` and `kind`.
fn gvk_of(doc: &serde_json::Value) -> kube::core::GroupVersionKind {
    let meta: kube::core::TypeMeta =
        serde_json::from_value(doc.clone()).expect("apiVersion and kind");
    kube::core::GroupVersionKind::try_from(&meta).expect("a valid apiVersion")
}

/// The last lines of a log file.
fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut last: Vec<&str> = text.lines().rev().take(lines).collect();
    last.reverse();
    last.join("\n")
}

pub struct ControlPlane {
    pub url: String,
    pub token: String,
    pub kubeconfig: PathBuf,
    client: kube::Client,
    // Dropped in order: DNS, the controllers, the API server, etcd, then the directory.
    dns: Option<Proc>,
    controllers: Option<Proc>,
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
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// The control plane with static tokens for `users` beside the admin's.
    pub async fn start_with(users: &[User<'_>]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        openssl(d, &["genrsa", "-out", "sa.key", "2048"]);
        openssl(d, &["rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
        let token = format!("opname-test-{}", std::process::id());
        let mut tokens = format!("{token},opname-test-admin,opname-test-admin,system:masters\n");
        for u in users {
            tokens += &format!(
                "{},{},{},\"{}\"\n",
                u.token,
                u.name,
                u.name,
                u.groups.join(",")
            );
        }
        std::fs::write(d.join("tokens.csv"), tokens).expect("token file");
        // Audit what everyone but the test itself and the control plane's own controllers asks,
        // so that a test can see every request a ServiceAccount of the chart was refused.
        std::fs::write(
            d.join("audit-policy.yaml"),
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: None\n  users: [opname-test-admin, system:kube-controller-manager, system:apiserver]\n- level: None\n  userGroups: [\"system:serviceaccounts:kube-system\", \"system:nodes\"]\n- level: Metadata\n",
        )
        .expect("audit policy");
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
                    "--audit-policy-file={}",
                    d.join("audit-policy.yaml").display()
                ))
                .arg(format!(
                    "--audit-log-path={}",
                    d.join("audit.log").display()
                ))
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
        std::fs::write(&kubeconfig, self::kubeconfig(&url, &token, "default")).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig).expect("kubeconfig"),
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("client config");
        let client = kube::Client::try_from(config).expect("client");
        let mut ready = false;
        for _ in 0..900 {
            if let Ok(Some(_)) = apiserver.child.try_wait() {
                break;
            }
            let probe = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("request")
                .map(kube::client::Body::from);
            if client
                .send(probe)
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let exited = apiserver.child.try_wait().ok().flatten();
        assert!(
            ready && exited.is_none(),
            "kube-apiserver did not become ready ({exited:?}): {}",
            tail(&d.join("apiserver.log"), 20)
        );
        Self {
            url,
            token,
            kubeconfig,
            client,
            dns: None,
            controllers: None,
            _apiserver: apiserver,
            _etcd: etcd,
            _dir: dir,
        }
    }

    /// A client with the admin token.
    pub async fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Starts kube-controller-manager and waits until it has made the `default` ServiceAccount
    /// of namespace `default` (its service-account controller runs).
    pub async fn start_controllers(&mut self) {
        let d = self._dir.path();
        let log = std::fs::File::create(d.join("controller-manager.log")).expect("kcm log");
        self.controllers = Some(Proc::spawn(
            "kube-controller-manager",
            Command::new(binary("kube-controller-manager"))
                .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
                .args(["--leader-elect=false", "--bind-address=127.0.0.1"])
                .arg(format!("--secure-port={}", free_port()))
                .arg("--use-service-account-credentials=true")
                .arg(format!(
                    "--service-account-private-key-file={}",
                    d.join("sa.key").display()
                ))
                .arg(format!(
                    "--root-ca-file={}",
                    d.join("certs/apiserver.crt").display()
                ))
                // Fast enough for tests: controllers resync and rate-limit in seconds anyway.
                .arg("--concurrent-deployment-syncs=2")
                .stdout(Stdio::null())
                .stderr(log),
        ));
        let sas: kube::Api<k8s_openapi::api::core::v1::ServiceAccount> =
            kube::Api::namespaced(self.client.clone(), "default");
        for _ in 0..600 {
            if let Ok(Some(_)) = sas.get_opt("default").await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "kube-controller-manager made no ServiceAccount in a minute: {}",
            self.log("controller-manager.log")
        );
    }

    /// Starts CoreDNS for zone `cluster.local` on a free loopback port and waits until it has
    /// synced with the API server; its address.
    pub async fn start_dns(&mut self) -> std::net::SocketAddr {
        let d = self._dir.path();
        let (port, ready) = (free_port(), free_port());
        std::fs::write(
            d.join("Corefile"),
            format!(
                ".:{port} {{\n  bind 127.0.0.1\n  errors\n  ready 127.0.0.1:{ready}\n  kubernetes cluster.local {{\n    kubeconfig {}\n    ttl 1\n  }}\n}}\n",
                self.kubeconfig.display()
            ),
        )
        .expect("Corefile");
        let log = std::fs::File::create(d.join("coredns.log")).expect("coredns log");
        self.dns = Some(Proc::spawn(
            "coredns",
            Command::new(binary("coredns"))
                .arg("-conf")
                .arg(d.join("Corefile"))
                .stdout(log.try_clone().expect("log"))
                .stderr(log),
        ));
        let http = reqwest::Client::new();
        for _ in 0..600 {
            if http
                .get(format!("http://127.0.0.1:{ready}/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return ([127, 0, 0, 1], port).into();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("CoreDNS not ready in a minute: {}", self.log("coredns.log"));
    }

    /// The last lines of one of the control plane's logs.
    pub fn log(&self, name: &str) -> String {
        tail(&self._dir.path().join(name), 30)
    }

    /// A kubeconfig holding the admin token.
    pub fn admin_kubeconfig(&self) -> String {
        kubeconfig(&self.url, &self.token, "default")
    }
}

impl ControlPlane {
    /// Sets annotations on a namespace, as an organisation's admin would (e.g. its time zone).
    pub async fn annotate_namespace(&self, namespace: &str, annotations: serde_json::Value) {
        let patch = serde_json::json!({"metadata": {"annotations": annotations}});
        let (code, body) = self
            .request(
                "PATCH",
                &format!("/api/v1/namespaces/{namespace}"),
                "application/merge-patch+json",
                &patch.to_string(),
            )
            .await;
        assert_eq!(code, 200, "{body}");
    }
}

/// Requests as raw HTTP, for tests that assert status codes and messages as a client sees them.
impl ControlPlane {
    /// `method path` with a body as the admin; the status code and the JSON answer.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let request = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(body.as_bytes().to_vec())
            .expect("request");
        let response = self
            .client
            .send(request.map(kube::client::Body::from))
            .await
            .expect("API server reachable");
        let code = response.status().as_u16();
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .expect("answer")
            .to_bytes();
        (code, serde_json::from_slice(&bytes).unwrap_or_default())
    }

    fn path(group: &str, version: &str, plural: &str, namespace: Option<&str>) -> String {
        let base = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        match namespace {
            Some(ns) => format!("{base}/namespaces/{ns}/{plural}"),
            None => format!("{base}/{plural}"),
        }
    }

    /// Every object of a kind (in a namespace), from a synchronous test closure: needs the
    /// multi-threaded runtime.
    pub fn list(
        &self,
        group: &str,
        version: &str,
        plural: &str,
        namespace: Option<&str>,
    ) -> Vec<serde_json::Value> {
        let path = Self::path(group, version, plural, namespace);
        let (code, body) = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(self.request("GET", &path, "", ""))
        });
        assert_eq!(code, 200, "GET {path}: {body}");
        body["items"].as_array().cloned().unwrap_or_default()
    }

    /// Creates each document of a YAML stream as the admin: (status code, answer) per document.
    pub async fn create_yaml(&self, yaml: &str) -> Vec<(u16, serde_json::Value)> {
        let mut out = Vec::new();
        for doc in serde_saphyr::from_multiple::<serde_json::Value>(yaml).expect("yaml") {
            if doc.is_null() {
                continue;
            }
            let gvk = gvk_of(&doc);
            let (resource, caps) = kube::discovery::pinned_kind(&self.client, &gvk)
                .await
                .unwrap_or_else(|e| panic!("discovery of {gvk:?}: {e}"));
            let namespace = (caps.scope == kube::discovery::Scope::Namespaced)
                .then(|| doc["metadata"]["namespace"].as_str().unwrap_or("default"));
            let path = Self::path(&gvk.group, &gvk.version, &resource.plural, namespace);
            out.push(
                self.request("POST", &path, "application/json", &doc.to_string())
                    .await,
            );
        }
        out
    }
}

impl ControlPlane {
    /// Installs the CRDs as the chart renders them (templates, kept on uninstall) and waits
    /// until the server has established each.
    pub async fn install_crds(&self, client: &kube::Client) -> Vec<String> {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
        let crds: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
        let mut names = Vec::new();
        let (_, docs) = crate::helm::render(serde_json::json!({"store": {"url": "s3://crds"}}));
        for doc in docs
            .into_iter()
            .filter(|d| d["kind"] == "CustomResourceDefinition")
        {
            let crd: CustomResourceDefinition = serde_json::from_value(doc).expect("crd");
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
        use kube::core::ApiResource;
        for doc in docs {
            let gvk = gvk_of(doc);
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
        let token = self
            .service_account_token(client, ns, name, "https://kubernetes.default.svc")
            .await;
        kubeconfig(&self.url, &token, ns)
    }

    /// A token of ServiceAccount `ns/name` for `audience` (`kubectl create token --audience`).
    pub async fn service_account_token(
        &self,
        client: &kube::Client,
        ns: &str,
        name: &str,
        audience: &str,
    ) -> String {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        let sas: kube::Api<ServiceAccount> = kube::Api::namespaced(client.clone(), ns);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec![audience.into()]),
                expiration_seconds: Some(3600),
                ..Default::default()
            }),
            ..Default::default()
        };
        let answer = sas
            .create_token_request(name, &kube::api::PostParams::default(), &request)
            .await
            .expect("token request");
        answer.status.and_then(|s| s.token).expect("token")
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

    /// Labels a namespace to enforce the `restricted` Pod Security Standard.
    pub async fn restrict(&self, namespace: &str) {
        let api: kube::Api<k8s_openapi::api::core::v1::Namespace> =
            kube::Api::all(self.client.clone());
        let patch = serde_json::json!({"metadata": {"labels": {
            "pod-security.kubernetes.io/enforce": "restricted"}}});
        api.patch(
            namespace,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap_or_else(|e| panic!("label {namespace}: {e}"));
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

impl ControlPlane {
    /// What a platform engineer's install leaves: the chart's CRDs, ServiceAccounts and RBAC
    /// (rendered with `values`), the `opname-system` namespace and the organisation namespaces
    /// `organisations`. Returns a kubeconfig with a token of the operator's ServiceAccount.
    pub async fn install(&self, organisations: &[&str], values: serde_json::Value) -> String {
        let admin = self.client.clone();
        self.install_crds(&admin).await;
        let mut names = vec!["opname-system"];
        names.extend_from_slice(organisations);
        self.namespaces(&admin, &names).await;
        self.install_chart_rbac(&admin, values).await;
        self.service_account_kubeconfig(&admin, "opname-system", "opname-operator")
            .await
    }
}

impl ControlPlane {
    /// Binds `role` (`ClusterRole` or `Role`) to a `User` or `Group` in `namespace`.
    pub async fn bind(&self, namespace: &str, role_kind: &str, role: &str, subject: (&str, &str)) {
        let binding = serde_json::json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": format!("{}-{}", role, subject.1.replace('@', "-at-")), "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": subject.0, "name": subject.1}],
        });
        self.apply(&self.client, &[&binding]).await;
    }
}

impl ControlPlane {
    /// Requests of users whose name starts with `user` that were refused (403), as
    /// `verb group/resource namespace/name`, from the API server's audit log.
    pub fn forbidden(&self, user: &str) -> Vec<String> {
        self.audited(user)
            .into_iter()
            .filter(|(_, code)| *code == 403)
            .map(|(request, _)| request)
            .collect()
    }

    /// Every audited request of users whose name starts with `user`, with its status code.
    pub fn audited(&self, user: &str) -> Vec<(String, u16)> {
        let log = std::fs::read_to_string(self._dir.path().join("audit.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|e| {
                e["user"]["username"]
                    .as_str()
                    .is_some_and(|u| u.starts_with(user))
            })
            .map(|e| {
                let o = &e["objectRef"];
                let resource = match o["subresource"].as_str() {
                    Some(sub) => format!("{}/{sub}", o["resource"].as_str().unwrap_or_default()),
                    None => o["resource"].as_str().unwrap_or_default().to_string(),
                };
                (
                    format!(
                        "{} {}/{resource} {}/{} ({})",
                        e["verb"].as_str().unwrap_or_default(),
                        o["apiGroup"].as_str().unwrap_or_default(),
                        o["namespace"].as_str().unwrap_or_default(),
                        o["name"].as_str().unwrap_or_default(),
                        e["user"]["username"].as_str().unwrap_or_default(),
                    ),
                    e["responseStatus"]["code"].as_u64().unwrap_or_default() as u16,
                )
            })
            .collect()
    }
}

impl ControlPlane {
    /// The chart's ServiceAccounts (namespace `opname-system`) made requests, and the API server
    /// refused none of them: the chart's RBAC grants every verb the code used.
    pub fn assert_chart_rbac_sufficed(&self) {
        let sa = "system:serviceaccount:opname-system:";
        assert!(
            !self.audited(sa).is_empty(),
            "no request of the chart's ServiceAccounts was audited"
        );
        let refused = self.forbidden(sa);
        assert!(refused.is_empty(), "the chart's RBAC refused: {refused:#?}");
    }
}
