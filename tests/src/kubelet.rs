//! A process kubelet: runs the containers of the emulator's Deployments as local processes.
//!
//! For each Deployment it keeps `spec.replicas` processes of the pod template running, from the
//! container's args and env: `image` names a binary of this workspace, `fieldRef` env gets the
//! pod's name and `127.0.0.1` for its IPs, `secretRef`/`secretKeyRef` read Secrets from the
//! emulator, ConfigMap volumes are projected into a directory (and re-projected when the
//! ConfigMap changes, as a kubelet does), `emptyDir` gets a directory, and mount paths in args
//! are rewritten to those directories. All pods share loopback here, so the kubelet gives each
//! pod its own ports by rewriting the listen addresses in the projected recorder configuration
//! (a real pod has its own network namespace). A changed pod template restarts the pods.
//!
//! Jobs run one pod at a time until it exits 0 (status `succeeded`, condition `Complete`); a pod
//! that fails is counted in `failed` and started again until `backoffLimit` is exhausted
//! (condition `Failed`); a deleted Job's pod is killed. Every pod gets `KUBECONFIG` pointing at
//! the emulator, as a real pod gets its service-account token and the in-cluster address.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::apiserver::ApiServer;
use crate::{Proc, free_port, free_port_block};

/// A running pod.
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub deployment: String,
    pub sip: std::net::SocketAddr,
    pub http: std::net::SocketAddr,
    pub dir: PathBuf,
    template: Value,
    config_maps: BTreeMap<String, String>,
    /// Held so that the process ends with the pod.
    _process: Proc,
}

impl Pod {
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

/// A running pod of a Job.
pub struct JobPod {
    pub namespace: String,
    pub job: String,
    uid: String,
    pub pod: Pod,
}

pub struct Kubelet {
    pub pods: Arc<std::sync::Mutex<Vec<Pod>>>,
    pub job_pods: Arc<std::sync::Mutex<Vec<JobPod>>>,
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
    /// `images`: image name prefix → local binary.
    pub fn start(server: Arc<ApiServer>, images: HashMap<String, PathBuf>, root: PathBuf) -> Self {
        let pods: Arc<std::sync::Mutex<Vec<Pod>>> = Arc::default();
        let job_pods: Arc<std::sync::Mutex<Vec<JobPod>>> = Arc::default();
        let (p, j) = (pods.clone(), job_pods.clone());
        let task = tokio::spawn(async move {
            let mut n = 0u32;
            loop {
                sync(&server, &images, &root, &p, &mut n);
                sync_jobs(&server, &images, &root, &j, &mut n).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Self {
            pods,
            job_pods,
            task,
        }
    }

    /// Kills the running pod of a Job (as a node failure would); returns whether there was one.
    pub fn kill_job_pod(&self, job_prefix: &str) -> bool {
        self.job_pods.lock().is_ok_and(|p| {
            p.iter()
                .find(|p| p.job.starts_with(job_prefix))
                .map(|p| p.pod._process.signal("KILL"))
                .is_some()
        })
    }

    /// (SIP address, HTTP address) of each running pod of a namespace.
    pub fn endpoints(&self, namespace: &str) -> Vec<(std::net::SocketAddr, std::net::SocketAddr)> {
        self.pods
            .lock()
            .map(|p| {
                p.iter()
                    .filter(|p| p.namespace == namespace)
                    .map(|p| (p.sip, p.http))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Runs Jobs' pods and writes their outcome into the Jobs' status.
async fn sync_jobs(
    server: &ApiServer,
    images: &HashMap<String, PathBuf>,
    root: &Path,
    pods: &std::sync::Mutex<Vec<JobPod>>,
    n: &mut u32,
) {
    let jobs = server.list("batch", "v1", "jobs", None);
    let mut outcomes = Vec::new();
    {
        let Ok(mut pods) = pods.lock() else { return };
        // Pods of deleted Jobs are killed (dropping the process kills it).
        pods.retain(|p| jobs.iter().any(|j| j["metadata"]["uid"] == p.uid.as_str()));
        pods.retain_mut(|p| match p.pod._process.child.try_wait() {
            Ok(Some(status)) => {
                outcomes.push((p.namespace.clone(), p.job.clone(), status.success()));
                false
            }
            _ => true,
        });
        for j in &jobs {
            let (ns, name, uid) = (
                j["metadata"]["namespace"].as_str().unwrap_or_default(),
                j["metadata"]["name"].as_str().unwrap_or_default(),
                j["metadata"]["uid"].as_str().unwrap_or_default(),
            );
            let finished = j["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["status"] == "True"));
            let exited_now = outcomes.iter().any(|(o_ns, o, _)| o_ns == ns && o == name);
            if finished || exited_now || pods.iter().any(|p| p.uid == uid) {
                continue;
            }
            *n += 1;
            let volumes = j["spec"]["template"]["spec"]["volumes"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let maps = config_maps(server, ns, &volumes);
            let pod_name = format!("{name}-{n:04}");
            match start_pod(server, images, root, ns, name, &pod_name, j, &maps) {
                Ok(pod) => pods.push(JobPod {
                    namespace: ns.to_string(),
                    job: name.to_string(),
                    uid: uid.to_string(),
                    pod,
                }),
                Err(e) => eprintln!("kubelet: cannot start {ns}/{pod_name}: {e}"),
            }
        }
    }
    for (ns, name, ok) in outcomes {
        let Some(j) = jobs.iter().find(|j| {
            j["metadata"]["namespace"] == ns.as_str() && j["metadata"]["name"] == name.as_str()
        }) else {
            continue;
        };
        let now = jiff::Timestamp::now().to_string();
        let failed = j["status"]["failed"].as_u64().unwrap_or(0) + u64::from(!ok);
        let limit = j["spec"]["backoffLimit"].as_u64().unwrap_or(6);
        let status = if ok {
            serde_json::json!({"succeeded": 1, "failed": failed, "completionTime": now,
                "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": now}]})
        } else if failed > limit {
            serde_json::json!({"failed": failed,
                "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "lastTransitionTime": now}]})
        } else {
            serde_json::json!({"failed": failed})
        };
        let (code, body) = server
            .request(
                "PATCH",
                &format!("/apis/batch/v1/namespaces/{ns}/jobs/{name}/status"),
                "application/merge-patch+json",
                &serde_json::json!({ "status": status }).to_string(),
            )
            .await;
        if code != 200 {
            eprintln!("kubelet: cannot update Job {ns}/{name}: {code} {body}");
        }
    }
}

fn config_maps(server: &ApiServer, ns: &str, volumes: &[Value]) -> BTreeMap<String, String> {
    let cms = server.list("", "v1", "configmaps", Some(ns));
    let mut out = BTreeMap::new();
    for v in volumes {
        if let Some(name) = v["configMap"]["name"].as_str()
            && let Some(cm) = cms.iter().find(|c| c["metadata"]["name"] == name)
        {
            for (k, val) in cm["data"].as_object().into_iter().flatten() {
                out.insert(
                    format!("{}/{k}", v["name"].as_str().unwrap_or_default()),
                    val.as_str().unwrap_or_default().to_string(),
                );
            }
        }
    }
    out
}

fn sync(
    server: &ApiServer,
    images: &HashMap<String, PathBuf>,
    root: &Path,
    pods: &std::sync::Mutex<Vec<Pod>>,
    n: &mut u32,
) {
    let deployments = server.list("apps", "v1", "deployments", None);
    let Ok(mut pods) = pods.lock() else { return };
    // Pods whose Deployment is gone or whose template changed stop.
    pods.retain(|p| {
        deployments.iter().any(|d| {
            d["metadata"]["namespace"] == p.namespace.as_str()
                && d["metadata"]["name"] == p.deployment.as_str()
                && d["spec"]["template"] == p.template
        })
    });
    for d in &deployments {
        let ns = d["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let name = d["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let volumes = d["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let maps = config_maps(server, &ns, &volumes);
        // Re-project changed ConfigMaps into running pods.
        for p in pods
            .iter_mut()
            .filter(|p| p.namespace == ns && p.deployment == name && p.config_maps != maps)
        {
            project(&p.dir, &maps, p.sip.port(), p.http.port());
            p.config_maps = maps.clone();
        }
        let want = d["spec"]["replicas"].as_u64().unwrap_or(1) as usize;
        let have = pods
            .iter()
            .filter(|p| p.namespace == ns && p.deployment == name)
            .count();
        for _ in have..want {
            *n += 1;
            let pod_name = format!("{name}-{n:04}");
            match start_pod(server, images, root, &ns, &name, &pod_name, d, &maps) {
                Ok(pod) => pods.push(pod),
                Err(e) => eprintln!("kubelet: cannot start {ns}/{pod_name}: {e}"),
            }
        }
        while pods
            .iter()
            .filter(|p| p.namespace == ns && p.deployment == name)
            .count()
            > want
        {
            if let Some(i) = pods
                .iter()
                .rposition(|p| p.namespace == ns && p.deployment == name)
            {
                pods.remove(i);
            }
        }
    }
}

/// Writes the projected ConfigMap files; recorder configurations get this pod's own ports.
fn project(dir: &Path, maps: &BTreeMap<String, String>, sip: u16, http: u16) {
    for (path, content) in maps {
        let file = dir.join("volumes").join(path);
        let _ = std::fs::create_dir_all(file.parent().unwrap_or(dir));
        let content = match opname_model::config::Config::parse(content) {
            Ok(mut c) => {
                c.sip.listen = ([127, 0, 0, 1], sip).into();
                c.http.listen = ([127, 0, 0, 1], http).into();
                c.rtp.bind = [127, 0, 0, 1].into();
                let base = free_port_block(40);
                (c.rtp.port_min, c.rtp.port_max) = (base, base + 39);
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

#[allow(clippy::too_many_arguments)]
fn start_pod(
    server: &ApiServer,
    images: &HashMap<String, PathBuf>,
    root: &Path,
    ns: &str,
    deployment: &str,
    pod: &str,
    d: &Value,
    maps: &BTreeMap<String, String>,
) -> Result<Pod, String> {
    let spec = &d["spec"]["template"]["spec"];
    let c = &spec["containers"][0];
    let image = c["image"].as_str().unwrap_or_default();
    let bin = images
        .iter()
        .find(|(prefix, _)| image.starts_with(prefix.as_str()))
        .map(|(_, b)| b.clone())
        .ok_or_else(|| format!("no binary for image {image}"))?;
    let dir = root.join(ns).join(pod);
    std::fs::create_dir_all(dir.join("volumes/spool")).map_err(|e| e.to_string())?;
    let (sip, http) = (free_port(), free_port());
    project(&dir, maps, sip, http);
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for m in c["volumeMounts"].as_array().into_iter().flatten() {
        let vol = m["name"].as_str().unwrap_or_default();
        let target = dir.join("volumes").join(vol);
        std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
        mounts.push((
            m["mountPath"].as_str().unwrap_or_default().to_string(),
            target,
        ));
    }
    let rewrite = |arg: &str| {
        mounts
            .iter()
            .find(|(mp, _)| arg.starts_with(mp.as_str()))
            .map_or(arg.to_string(), |(mp, t)| {
                format!("{}{}", t.display(), &arg[mp.len()..])
            })
    };
    let args: Vec<String> = c["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(rewrite)
        .collect();
    let secrets = server.list("", "v1", "secrets", Some(ns));
    let secret = |name: &str| {
        secrets
            .iter()
            .find(|s| s["metadata"]["name"] == name)
            .cloned()
    };
    let decode = |v: &Value| {
        v.as_str()
            .and_then(|s| {
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, s).ok()
            })
            .and_then(|b| String::from_utf8(b).ok())
            .unwrap_or_default()
    };
    let mut cmd = Command::new(bin);
    cmd.args(&args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("KUBECONFIG", dir.join("kubeconfig"));
    std::fs::write(dir.join("kubeconfig"), server.kubeconfig()).map_err(|e| e.to_string())?;
    for from in c["envFrom"].as_array().into_iter().flatten() {
        if let Some(name) = from["secretRef"]["name"].as_str() {
            let Some(s) = secret(name) else {
                if from["secretRef"]["optional"] == true {
                    continue;
                }
                return Err(format!("secret {name} not found"));
            };
            for (k, v) in s["data"].as_object().into_iter().flatten() {
                cmd.env(k, decode(v));
            }
        }
    }
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_default();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else {
            match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => pod.to_string(),
                Some("metadata.namespace") => ns.to_string(),
                Some(_) => "127.0.0.1".to_string(),
                None => String::new(),
            }
        };
        cmd.env(name, value);
    }
    let log = std::fs::File::create(dir.join("log")).map_err(|e| e.to_string())?;
    cmd.stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
        .stderr(Stdio::from(log));
    let proc = Proc::spawn(pod, &mut cmd);
    Ok(Pod {
        name: pod.to_string(),
        namespace: ns.to_string(),
        deployment: deployment.to_string(),
        sip: ([127, 0, 0, 1], sip).into(),
        http: ([127, 0, 0, 1], http).into(),
        dir,
        template: d["spec"]["template"].clone(),
        config_maps: maps.clone(),
        _process: proc,
    })
}
