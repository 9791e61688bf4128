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
