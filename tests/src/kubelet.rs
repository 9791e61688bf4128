//! A process kubelet for the real control plane (`controlplane.rs`): one Node whose Pods run as
//! local processes.
//!
//! It registers Node [`NODE`], keeps its `Ready` condition and its Lease in `kube-node-lease`
//! fresh (a node that stops renewing is tainted and its pods evicted by the real node lifecycle
//! controller), and binds unscheduled Pods to itself through the `binding` subresource: with one
//! node there is nothing for kube-scheduler to choose. It runs each bound Pod's first container
//! from the Pod as the real controllers made it (Deployment → ReplicaSet → Pod, Job → Pod):
//! `image` names a binary of this workspace; `env` (values, `fieldRef`, `secretKeyRef`,
//! `configMapKeyRef`) and `envFrom` come from the real Secrets and ConfigMaps; ConfigMap volumes
//! are projected into a directory and re-projected when the ConfigMap changes; `emptyDir` gets a
//! directory; mount paths in args and environment values are rewritten to those directories; a Pod with an automounted
//! service-account token gets `KUBECONFIG` with a token of its own ServiceAccount, bound to the
//! Pod (TokenRequest), as a real pod's projected token.
//!
//! It reports phase, `podIP`, container state and restart count, and `Ready` from the container's
//! HTTP readiness probe. A container that exits is restarted by `restartPolicy`
//! (`Always`, `OnFailure`; with the kubelet's back-off, 10 s doubling) or ends the Pod
//! `Succeeded`/`Failed` (`Never`). A Pod being deleted gets its `preStop` sleep, then SIGTERM,
//! then SIGKILL once its grace period is over, and is removed (grace 0) when the process is gone.
//!
//! Each Pod gets an address of its own from [`POD_NETWORK`] (RFC 2544's benchmarking range, routed
//! to loopback as one local route, so any of its addresses can be bound without an interface per
//! pod): the real EndpointSlice controller refuses loopback addresses, and distinct addresses let
//! every recorder listen on the ports its configuration names, as in a real pod's network
//! namespace. A `hostNetwork` Pod shares the node's 127.0.0.1, so the kubelet gives it free ports
//! instead. The kubelet rewrites the listen addresses in a projected recorder configuration to the
//! pod's. Not done: liveness probes, resource limits, running as the Pod's user, init and sidecar
//! containers.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Node, Pod as KPod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::{Value, json};

use crate::{Proc, free_port, free_port_block};

/// The one Node.
pub const NODE: &str = "opname-test-node";

/// The pods' addresses (RFC 2544's benchmarking range).
pub const POD_NETWORK: &str = "198.18.0.0/15";

/// Routes [`POD_NETWORK`] to loopback once (`ip route replace local … dev lo`, as root) so that
/// any of its addresses can be bound; panics saying so where that cannot be done.
fn route_pod_network() {
    static ROUTED: std::sync::Once = std::sync::Once::new();
    ROUTED.call_once(|| {
        let probe = || std::net::UdpSocket::bind(("198.18.0.1", 0)).is_ok();
        if probe() {
            return;
        }
        let routed = Command::new("ip")
            .args(["route", "replace", "local", POD_NETWORK, "dev", "lo"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            routed && probe(),
            "the process kubelet gives pods addresses in {POD_NETWORK}: run as root \
             (`.ci/run`) or route it yourself: ip route add local {POD_NETWORK} dev lo"
        );
    });
}

/// A pod address no other pod of this machine's test processes holds: a block of 256 per
/// process (by pid), handed out in turn.
fn pod_ip() -> std::net::IpAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    route_pod_network();
    let block = std::process::id() % 512;
    let host = NEXT.fetch_add(1, Ordering::Relaxed) % 254 + 1;
    std::net::Ipv4Addr::from(
        u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + (block << 8) + host,
    )
    .into()
}

/// A pod this kubelet runs.
pub struct Pod {
    name: String,
    namespace: String,
    uid: String,
    /// Kind and name of the controller that owns the Pod (`ReplicaSet`, `Job`).
    owner: (String, String),
    /// The pod's address: its own, or the node's (127.0.0.1) with `hostNetwork`.
    ip: std::net::IpAddr,
    sip: std::net::SocketAddr,
    http: std::net::SocketAddr,
    dir: PathBuf,
    config_maps: BTreeMap<String, String>,
    process: Option<Proc>,
    restarts: i32,
    ready: bool,
    started_at: String,
    /// Exit code and time of the container's last run.
    exited: Option<(i32, String)>,
    /// When the container may start again (restart back-off).
    restart_at: Option<Instant>,
    terminating: Option<Terminating>,
    /// The status last written: only changes are written.
    reported: Option<Value>,
}

struct Terminating {
    since: Instant,
    grace: Duration,
    pre_stop: Duration,
    term_sent: bool,
}

impl Pod {
    fn running(&self) -> bool {
        self.process.is_some()
    }

    /// Notes an exited container; a restart is due after the back-off unless `policy` says not.
    fn reap(&mut self, policy: &str) {
        let Some(Ok(Some(status))) = self.process.as_mut().map(|p| p.child.try_wait()) else {
            return;
        };
        self.process = None;
        self.ready = false;
        let code = status.code().unwrap_or_else(|| {
            128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(9)
        });
        self.exited = Some((code, now()));
        let again = match policy {
            "Never" => false,
            "OnFailure" => code != 0,
            _ => true,
        };
        if again {
            let backoff = (10u64 << self.restarts.clamp(0, 5)).min(300);
            self.restart_at = Some(Instant::now() + Duration::from_secs(backoff));
        }
    }

    /// Drives a deleted pod's shutdown; true while its process still runs.
    fn terminate(&mut self, p: &KPod, container: &Container) -> bool {
        let Some(process) = self.process.as_mut() else {
            return false;
        };
        if !matches!(process.child.try_wait(), Ok(None)) {
            self.process = None;
            return false;
        }
        let t = self.terminating.get_or_insert_with(|| Terminating {
            since: Instant::now(),
            grace: Duration::from_secs(
                p.metadata
                    .deletion_grace_period_seconds
                    .or(p
                        .spec
                        .as_ref()
                        .and_then(|s| s.termination_grace_period_seconds))
                    .unwrap_or(30)
                    .max(0) as u64,
            ),
            pre_stop: Duration::from_secs(
                container
                    .lifecycle
                    .as_ref()
                    .and_then(|l| l.pre_stop.as_ref())
                    .and_then(|h| h.sleep.as_ref())
                    .map_or(0, |s| s.seconds.max(0) as u64),
            ),
            term_sent: false,
        });
        self.ready = false;
        if !t.term_sent && t.since.elapsed() >= t.pre_stop.min(t.grace) {
            process.signal("TERM");
            t.term_sent = true;
        }
        if t.since.elapsed() >= t.grace {
            process.signal("KILL");
            let _ = process.wait_exit(Duration::from_secs(5));
            self.process = None;
            return false;
        }
        true
    }

    /// The Pod's status as this kubelet sees it.
    fn status(&self, c: &Container) -> Value {
        let ready = if self.ready { "True" } else { "False" };
        let (phase, state) = match (&self.process, &self.exited) {
            (Some(_), _) => (
                "Running",
                json!({"running": {"startedAt": self.started_at}}),
            ),
            (None, Some((code, at))) => (
                match (self.restart_at.is_some(), *code == 0) {
                    (true, _) => "Running",
                    (false, true) => "Succeeded",
                    (false, false) => "Failed",
                },
                json!({"terminated": {"exitCode": code,
                    "reason": if *code == 0 { "Completed" } else { "Error" },
                    "startedAt": self.started_at, "finishedAt": at}}),
            ),
            (None, None) => (
                "Pending",
                json!({"waiting": {"reason": "ContainerCreating"}}),
            ),
        };
        json!({
            "phase": phase, "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
            "podIP": self.ip.to_string(), "podIPs": [{"ip": self.ip.to_string()}],
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": ready},
                {"type": "Ready", "status": ready},
                {"type": "PodScheduled", "status": "True"},
            ],
            "containerStatuses": [{"name": c.name, "image": c.image, "imageID": "",
                "ready": self.ready, "started": self.running(), "restartCount": self.restarts,
                "state": state}],
        })
    }
}

pub struct Kubelet {
    pods: Arc<Mutex<Vec<Pod>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.task.abort();
        if let Ok(mut pods) = self.pods.lock() {
            pods.clear();
        }
    }
}

impl Kubelet {
    /// Registers the Node and starts running its Pods. `images`: image name prefix → binary.
    pub async fn start(
        cp: &crate::controlplane::ControlPlane,
        images: HashMap<String, PathBuf>,
        root: PathBuf,
    ) -> Self {
        let client = cp.client().await;
        register(&client).await;
        let pods: Arc<Mutex<Vec<Pod>>> = Arc::default();
        let state = State {
            client,
            url: cp.url.clone(),
            images,
            root,
            pods: pods.clone(),
            config_maps: HashMap::new(),
            http: reqwest::Client::new(),
            errors: HashMap::new(),
        };
        let task = tokio::spawn(state.run());
        Self { pods, task }
    }

    /// Kills the running container of a Job's pod (as a crash would); whether there was one.
    pub fn kill_job_pod(&self, job_prefix: &str) -> bool {
        self.pods.lock().is_ok_and(|p| {
            p.iter()
                .find(|p| p.owner.0 == "Job" && p.owner.1.starts_with(job_prefix) && p.running())
                .and_then(|p| p.process.as_ref())
                .map(|p| p.signal("KILL"))
                .is_some()
        })
    }

    /// Whether a container runs for a Job whose name contains `part`.
    pub fn runs_job(&self, part: &str) -> bool {
        self.pods.lock().is_ok_and(|p| {
            p.iter()
                .any(|p| p.owner.0 == "Job" && p.owner.1.contains(part) && p.running())
        })
    }

    /// `what` of each pod of `namespace` whose name starts with `prefix` and whose container runs.
    fn of_running<T>(&self, namespace: &str, prefix: &str, what: impl Fn(&Pod) -> T) -> Vec<T> {
        self.pods
            .lock()
            .map(|p| {
                p.iter()
                    .filter(|p| {
                        p.namespace == namespace && p.name.starts_with(prefix) && p.running()
                    })
                    .map(what)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// (SIP address, HTTP address) of each pod of a namespace whose container runs.
    pub fn endpoints(&self, namespace: &str) -> Vec<(std::net::SocketAddr, std::net::SocketAddr)> {
        self.of_running(namespace, "", |p| (p.sip, p.http))
    }

    /// Loses a pod as a dead node would: its processes killed at once and its `emptyDir` spool
    /// gone. (The container restarts here with an empty spool, as a replacement pod would start.)
    pub fn lose(&self, namespace: &str, name: &str) -> bool {
        self.pods.lock().is_ok_and(|pods| {
            pods.iter()
                .find(|p| p.namespace == namespace && p.name == name)
                .and_then(|p| Some((p.process.as_ref()?, p.dir.join("volumes/spool"))))
                .map(|(process, spool)| {
                    process.signal_group("KILL");
                    let _ = std::fs::remove_dir_all(&spool);
                    let _ = std::fs::create_dir_all(&spool);
                })
                .is_some()
        })
    }

    /// Name and HTTP address of each running pod of a namespace whose name starts with `prefix`.
    pub fn http_addresses(
        &self,
        namespace: &str,
        prefix: &str,
    ) -> Vec<(String, std::net::SocketAddr)> {
        self.of_running(namespace, prefix, |p| (p.name.clone(), p.http))
    }

    /// SIP address of each running pod of a namespace whose name starts with `prefix`.
    pub fn sip_addresses(&self, namespace: &str, prefix: &str) -> Vec<std::net::SocketAddr> {
        self.of_running(namespace, prefix, |p| p.sip)
    }

    /// Names of the pods of a namespace whose container runs.
    pub fn running(&self, namespace: &str) -> Vec<String> {
        self.of_running(namespace, "", |p| p.name.clone())
    }
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

async fn register(client: &kube::Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux"}},
    });
    nodes
        .patch(
            NODE,
            &PatchParams::apply("opname-kubelet"),
            &Patch::Apply(&node),
        )
        .await
        .expect("register the Node");
    heartbeat(client).await;
}

/// The Node's Ready condition and its Lease, renewed as a kubelet does.
async fn heartbeat(client: &kube::Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    let t = now();
    let capacity =
        json!({"cpu": "64", "memory": "256Gi", "pods": "250", "ephemeral-storage": "100Gi"});
    let status = json!({"status": {
        "capacity": capacity, "allocatable": capacity,
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE}],
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "process kubelet", "lastHeartbeatTime": t, "lastTransitionTime": t}],
        "nodeInfo": {"kubeletVersion": "v1.37.2", "operatingSystem": "linux", "architecture": "amd64",
            "containerRuntimeVersion": "process://", "kernelVersion": "", "osImage": "", "kubeProxyVersion": "",
            "machineID": "", "systemUUID": "", "bootID": ""},
    }});
    if let Err(e) = nodes
        .patch_status(NODE, &PatchParams::default(), &Patch::Merge(&status))
        .await
    {
        eprintln!("kubelet: node status: {e}");
    }
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": NODE, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": NODE, "leaseDurationSeconds": 40,
                 "renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()},
    });
    if let Err(e) = leases
        .patch(
            NODE,
            &PatchParams::apply("opname-kubelet").force(),
            &Patch::Apply(&lease),
        )
        .await
    {
        eprintln!("kubelet: node lease: {e}");
    }
}

struct State {
    client: kube::Client,
    /// The API server's address, for the pods' kubeconfigs.
    url: String,
    images: HashMap<String, PathBuf>,
    root: PathBuf,
    pods: Arc<Mutex<Vec<Pod>>>,
    /// Every ConfigMap's data by (namespace, name), listed once per pass.
    config_maps: HashMap<(String, String), BTreeMap<String, String>>,
    /// For the readiness probes.
    http: reqwest::Client,
    /// Last start error per pod uid, printed once.
    errors: HashMap<String, String>,
}

fn owner_of(p: &KPod) -> (String, String) {
    p.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.kind.clone(), o.name.clone()))
        .unwrap_or_default()
}

impl State {
    async fn run(mut self) {
        let mut beat = Instant::now();
        loop {
            if beat.elapsed() > Duration::from_secs(10) {
                heartbeat(&self.client).await;
                beat = Instant::now();
            }
            self.sync().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn sync(&mut self) {
        let all: Api<KPod> = Api::all(self.client.clone());
        let Ok(list) = all.list(&ListParams::default()).await else {
            return;
        };
        let config_maps: Api<ConfigMap> = Api::all(self.client.clone());
        let Ok(maps) = config_maps.list(&ListParams::default()).await else {
            return;
        };
        self.config_maps = maps
            .items
            .into_iter()
            .map(|cm| {
                let key = (
                    cm.metadata.namespace.unwrap_or_default(),
                    cm.metadata.name.unwrap_or_default(),
                );
                (key, cm.data.unwrap_or_default())
            })
            .collect();
        let ours: Vec<&KPod> = list
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(NODE))
            .collect();
        for p in list.items.iter().filter(|p| {
            p.spec.as_ref().is_some_and(|s| s.node_name.is_none())
                && p.metadata.deletion_timestamp.is_none()
        }) {
            self.bind(p).await;
        }
        // Pods removed from the API (forced deletion) stop at once.
        let uids: Vec<String> = ours.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        if let Ok(mut pods) = self.pods.lock() {
            pods.retain(|p| uids.contains(&p.uid));
        }
        for p in ours {
            self.sync_pod(p).await;
        }
    }

    async fn bind(&self, p: &KPod) {
        let (Some(ns), Some(name)) = (&p.metadata.namespace, &p.metadata.name) else {
            return;
        };
        let api: Api<KPod> = Api::namespaced(self.client.clone(), ns);
        let binding = json!({"apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "uid": p.metadata.uid},
            "target": {"apiVersion": "v1", "kind": "Node", "name": NODE}});
        if let Err(e) = api
            .create_subresource::<Value, Value>("binding", name, &PostParams::default(), &binding)
            .await
        {
            eprintln!("kubelet: bind {ns}/{name}: {e}");
        }
    }

    /// Runs `f` on the local pod `uid`, if there is one.
    fn with_pod<R>(&self, uid: &str, f: impl FnOnce(&mut Pod) -> R) -> Option<R> {
        self.pods
            .lock()
            .ok()?
            .iter_mut()
            .find(|l| l.uid == uid)
            .map(f)
    }

    async fn sync_pod(&mut self, p: &KPod) {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        let uid = p.metadata.uid.clone().unwrap_or_default();
        let api: Api<KPod> = Api::namespaced(self.client.clone(), &ns);
        let spec = p.spec.clone().unwrap_or_default();
        let Some(container) = spec.containers.first().cloned() else {
            return;
        };
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let known = self.with_pod(&uid, |_| ()).is_some();

        if p.metadata.deletion_timestamp.is_some() {
            if self.with_pod(&uid, |l| l.terminate(p, &container)) == Some(true) {
                return;
            }
            if let Ok(mut pods) = self.pods.lock() {
                pods.retain(|l| l.uid != uid);
            }
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            if let Err(e) = api.delete(&name, &params).await
                && !matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409)
            {
                eprintln!("kubelet: remove {ns}/{name}: {e}");
            }
            return;
        }
        if !known {
            if phase == "Succeeded" || phase == "Failed" {
                return;
            }
            match self.start(p, &container).await {
                Ok(pod) => {
                    self.errors.remove(&uid);
                    if let Ok(mut pods) = self.pods.lock() {
                        pods.push(pod);
                    }
                }
                Err(e) => {
                    if self.errors.get(&uid) != Some(&e) {
                        eprintln!("kubelet: cannot start {ns}/{name}: {e}");
                        self.errors.insert(uid.clone(), e);
                    }
                    return;
                }
            }
        }
        let policy = spec.restart_policy.clone().unwrap_or_default();
        self.with_pod(&uid, |l| l.reap(&policy));
        self.restart_if_due(&uid, p, &container).await;
        self.probe(&uid, &container).await;
        if let Ok(maps) = self.config_maps(&ns, &spec) {
            self.with_pod(&uid, |l| {
                if l.config_maps != maps {
                    // A ConfigMap gone (or an item no longer in it): its file goes, as in a pod.
                    for gone in l.config_maps.keys().filter(|k| !maps.contains_key(*k)) {
                        let _ = std::fs::remove_file(l.dir.join("volumes").join(gone));
                    }
                    project(&l.dir, &maps, l.ip, l.sip.port(), l.http.port());
                    l.config_maps = maps;
                }
            });
        }
        self.report(&api, &name, &uid, &container).await;
    }

    /// Starts the container again once its back-off is over.
    async fn restart_if_due(&self, uid: &str, p: &KPod, c: &Container) {
        let due = self.with_pod(uid, |l| {
            l.process.is_none() && l.restart_at.is_some_and(|t| t <= Instant::now())
        });
        if due != Some(true) {
            return;
        }
        let Some(ip) = self.with_pod(uid, |l| l.ip) else {
            return;
        };
        let (mut cmd, dir) = match self.command(p, c, ip).await {
            Ok(c) => c,
            Err(e) => return eprintln!("kubelet: cannot restart {uid}: {e}"),
        };
        if let Ok(log) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(dir.join("log"))
            && let Ok(out) = log.try_clone()
        {
            cmd.stdout(Stdio::from(out)).stderr(Stdio::from(log));
        }
        self.with_pod(uid, |l| {
            l.process = Some(Proc::spawn(&l.name, &mut cmd));
            l.restarts += 1;
            l.restart_at = None;
            l.started_at = now();
        });
    }

    /// The readiness probe (HTTP GET on the pod's own port), when the container runs.
    async fn probe(&self, uid: &str, c: &Container) {
        let Some(Some(http)) = self.with_pod(uid, |l| {
            (l.running() && l.terminating.is_none()).then_some(l.http)
        }) else {
            return;
        };
        let ready = match c.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref()) {
            None => true,
            Some(get) => self
                .http
                .get(format!(
                    "http://{http}{}",
                    get.path.as_deref().unwrap_or("/")
                ))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success()),
        };
        self.with_pod(uid, |l| l.ready = ready);
    }

    /// Writes the pod's status when it changed.
    async fn report(&self, api: &Api<KPod>, name: &str, uid: &str, c: &Container) {
        let Some(Some(status)) = self.with_pod(uid, |l| {
            let status = l.status(c);
            (l.reported.as_ref() != Some(&status)).then_some(status)
        }) else {
            return;
        };
        let mut stamped = status.clone();
        let t = now();
        for c in stamped["conditions"].as_array_mut().into_iter().flatten() {
            c["lastTransitionTime"] = json!(t);
        }
        match api
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": stamped})),
            )
            .await
        {
            Ok(_) => {
                self.with_pod(uid, |l| l.reported = Some(status));
            }
            Err(e) => eprintln!("kubelet: status of {name}: {e}"),
        }
    }

    /// The files of the pod's ConfigMap volumes, as `volume/key` → content.
    fn config_maps(
        &self,
        ns: &str,
        spec: &k8s_openapi::api::core::v1::PodSpec,
    ) -> Result<BTreeMap<String, String>, String> {
        let mut out = BTreeMap::new();
        for v in spec.volumes.iter().flatten() {
            // A projected volume's ConfigMap sources: each item at its path.
            for source in v
                .projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten())
                .filter_map(|s| s.config_map.as_ref())
            {
                let Some(data) = self.config_maps.get(&(ns.to_string(), source.name.clone()))
                else {
                    if source.optional == Some(true) {
                        continue;
                    }
                    return Err(format!("configmap {} not found", source.name));
                };
                for item in source.items.iter().flatten() {
                    if let Some(val) = data.get(&item.key) {
                        out.insert(format!("{}/{}", v.name, item.path), val.clone());
                    }
                }
            }
            let Some(source) = &v.config_map else {
                continue;
            };
            let Some(data) = self.config_maps.get(&(ns.to_string(), source.name.clone())) else {
                if source.optional == Some(true) {
                    continue;
                }
                return Err(format!("configmap {} not found", source.name));
            };
            for (k, val) in data {
                out.insert(format!("{}/{k}", v.name), val.clone());
            }
        }
        Ok(out)
    }

    async fn secret(
        &self,
        ns: &str,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let secret = api.get_opt(name).await.map_err(|e| e.to_string())?;
        Ok(secret.map(|s| {
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                .collect()
        }))
    }

    /// A token of the pod's ServiceAccount bound to the pod, as a kubeconfig.
    async fn token_kubeconfig(&self, p: &KPod) -> Result<String, String> {
        use k8s_openapi::api::authentication::v1::{
            BoundObjectReference, TokenRequest, TokenRequestSpec,
        };
        use k8s_openapi::api::core::v1::ServiceAccount;
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let sa = p
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &ns);
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                audiences: Some(vec!["https://kubernetes.default.svc".into()]),
                expiration_seconds: Some(3600),
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: p.metadata.name.clone(),
                    uid: p.metadata.uid.clone(),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let answer = api
            .create_token_request(&sa, &PostParams::default(), &request)
            .await
            .map_err(|e| format!("token for {ns}/{sa}: {e}"))?;
        let token = answer.status.and_then(|s| s.token).unwrap_or_default();
        Ok(crate::controlplane::kubeconfig(&self.url, &token, &ns))
    }

    /// The container's command line and environment, and the pod's directory.
    async fn command(
        &self,
        p: &KPod,
        c: &Container,
        ip: std::net::IpAddr,
    ) -> Result<(Command, PathBuf), String> {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        let spec = p.spec.clone().unwrap_or_default();
        let image = c.image.clone().unwrap_or_default();
        let bin = self
            .images
            .iter()
            .find(|(prefix, _)| image.starts_with(prefix.as_str()))
            .map(|(_, b)| b.clone())
            .ok_or_else(|| format!("no binary for image {image}"))?;
        let dir = self.root.join(&ns).join(&name);
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            let target = dir.join("volumes").join(&m.name);
            std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
            mounts.push((m.mount_path.clone(), target));
        }
        let rewrite = |arg: &str| {
            mounts
                .iter()
                .find(|(mp, _)| arg.starts_with(mp.as_str()))
                .map_or(arg.to_string(), |(mp, t)| {
                    format!("{}{}", t.display(), &arg[mp.len()..])
                })
        };
        let mut cmd = Command::new(bin);
        cmd.args(c.args.iter().flatten().map(|a| rewrite(a)))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "info");
        let automount = spec.volumes.iter().flatten().any(|v| {
            v.projected.as_ref().is_some_and(|p| {
                p.sources
                    .iter()
                    .flatten()
                    .any(|s| s.service_account_token.is_some())
            })
        });
        if automount {
            let kubeconfig = self.token_kubeconfig(p).await?;
            std::fs::write(dir.join("kubeconfig"), kubeconfig).map_err(|e| e.to_string())?;
            cmd.env("KUBECONFIG", dir.join("kubeconfig"));
        }
        for from in c.env_from.iter().flatten() {
            if let Some(s) = &from.secret_ref {
                match self.secret(&ns, &s.name).await? {
                    Some(data) => {
                        cmd.envs(data);
                    }
                    None if s.optional == Some(true) => {}
                    None => return Err(format!("secret {} not found", s.name)),
                }
            }
        }
        for e in c.env.iter().flatten() {
            let value = if let Some(v) = &e.value {
                // A path under a mount, as in args.
                rewrite(v)
            } else if let Some(f) = e.value_from.as_ref().and_then(|v| v.field_ref.as_ref()) {
                match f.field_path.as_str() {
                    "metadata.name" => name.clone(),
                    "metadata.namespace" => ns.clone(),
                    "spec.nodeName" => NODE.to_string(),
                    "status.podIP" => ip.to_string(),
                    _ => "127.0.0.1".to_string(),
                }
            } else if let Some(k) = e
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
            {
                let data = self.secret(&ns, &k.name).await?.unwrap_or_default();
                match data.get(&k.key) {
                    Some(v) => v.clone(),
                    None if k.optional == Some(true) => continue,
                    None => return Err(format!("secret {}/{} not found", k.name, k.key)),
                }
            } else {
                String::new()
            };
            cmd.env(&e.name, value);
        }
        Ok((cmd, dir))
    }

    async fn start(&self, p: &KPod, c: &Container) -> Result<Pod, String> {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        let spec = p.spec.clone().unwrap_or_default();
        let maps = self.config_maps(&ns, &spec)?;
        let dir = self.root.join(&ns).join(&name);
        std::fs::create_dir_all(dir.join("volumes/spool")).map_err(|e| e.to_string())?;
        let (ip, sip, http) = if spec.host_network == Some(true) {
            ([127, 0, 0, 1].into(), free_port(), free_port())
        } else {
            let (sip, http) = own_ports(&maps, c);
            (pod_ip(), sip, http)
        };
        project(&dir, &maps, ip, sip, http);
        let (mut cmd, dir) = self.command(p, c, ip).await?;
        let log = std::fs::File::create(dir.join("log")).map_err(|e| e.to_string())?;
        cmd.stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
            .stderr(Stdio::from(log));
        let process = Proc::spawn(&name, &mut cmd);
        Ok(Pod {
            name,
            namespace: ns,
            uid: p.metadata.uid.clone().unwrap_or_default(),
            owner: owner_of(p),
            ip,
            sip: (ip, sip).into(),
            http: (ip, http).into(),
            dir,
            config_maps: maps,
            process: Some(process),
            restarts: 0,
            ready: false,
            started_at: now(),
            exited: None,
            restart_at: None,
            terminating: None,
            reported: None,
        })
    }
}

/// The SIP and HTTP ports a pod with an address of its own listens on: its recorder
/// configuration's, else the container's `http` port (the readiness probe's).
fn own_ports(maps: &BTreeMap<String, String>, c: &Container) -> (u16, u16) {
    let config = maps
        .values()
        .find_map(|m| opname_model::config::Config::parse(m).ok());
    let http = c
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("http"))
        .and_then(|p| u16::try_from(p.container_port).ok());
    match config {
        Some(c) => (c.sip.listen.port(), c.http.listen.port()),
        None => (5060, http.unwrap_or(8080)),
    }
}

/// Writes the projected ConfigMap files; recorder configurations get this pod's address and
/// ports, and (with the node's shared address) an RTP range of their own.
fn project(dir: &Path, maps: &BTreeMap<String, String>, ip: std::net::IpAddr, sip: u16, http: u16) {
    for (path, content) in maps {
        let file = dir.join("volumes").join(path);
        let _ = std::fs::create_dir_all(file.parent().unwrap_or(dir));
        let content = match opname_model::config::Config::parse(content) {
            Ok(mut c) => {
                c.sip.listen = (ip, sip).into();
                c.http.listen = (ip, http).into();
                c.rtp.bind = ip;
                if ip.is_loopback() {
                    let base = free_port_block(40);
                    (c.rtp.port_min, c.rtp.port_max) = (base, base + 39);
                }
                c.spool.dir = dir.join("volumes/spool");
                serde_saphyr::to_string(&c).unwrap_or_else(|_| content.clone())
            }
            Err(_) => content.clone(),
        };
        // Atomic replacement, as the kubelet's symlink swap.
        let tmp = file.with_extension("tmp");
        if std::fs::write(&tmp, content).is_ok() {
            let _ = std::fs::rename(&tmp, &file);
        }
    }
}
