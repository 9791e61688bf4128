//! The operator's own configuration file (rendered by the Helm chart from its values).
//!
//! The object store is the platform's, configured once here; credentials stay in a Secret that
//! recorder pods read through `envFrom`, never in a custom resource.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::kube::Scheduling;

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {0}: {1}")]
    Read(String, std::io::Error),
    #[error("invalid operator configuration: {0}")]
    Yaml(String),
    #[error("invalid operator configuration: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Settings {
    pub recorder: RecorderSettings,
    pub store: StoreSettings,
    pub capacity: CapacitySettings,
    pub rtp: RtpSettings,
    pub retention: RetentionSettings,
    pub export: ExportSettings,
    pub front_door: FrontDoorSettings,
    pub sip: SipSettings,
    pub recordings: RecordingsSettings,
    /// `json`: JSON log lines from the recorders the operator makes (`LOG_FORMAT`), as from the
    /// operator itself when its own environment says so.
    pub log_format: LogFormat,
    /// Image pull Secrets named by every pod the operator makes (recorders, front door, export
    /// Jobs); each must exist in the pod's namespace.
    pub image_pull_secrets: Vec<String>,
}

/// How opname's processes write their logs (`opname_model::logging`).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    /// One JSON object per line, for a log pipeline or SIEM (the audit lines included).
    Json,
}

impl LogFormat {
    /// The variable that tells a pod's process to log this way (none for plain text).
    pub fn env(self) -> Option<k8s_openapi::api::core::v1::EnvVar> {
        (self == Self::Json).then(|| k8s_openapi::api::core::v1::EnvVar {
            name: opname_model::logging::FORMAT_ENV.into(),
            value: Some("json".into()),
            ..Default::default()
        })
    }
}

/// The recordings service's trust: which tokens it accepts and which peers may name the client.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordingsSettings {
    /// Audiences a token must be issued for (`kubectl create token SA --audience …`), so the
    /// service never collects tokens that the API server itself would accept. Empty: the API
    /// server's own audiences (an OIDC login proxy that forwards ID tokens).
    pub audiences: Vec<String>,
    /// Peers whose `X-Forwarded-For` names the client (the Ingress controller's pods); anyone
    /// else's header is recorded but not believed.
    pub trusted_proxies: Vec<opname_model::config::SourceRange>,
}

/// The audience of tokens minted for the recordings service.
pub const RECORDINGS_AUDIENCE: &str = "opname.dev/recordings";

impl Default for RecordingsSettings {
    fn default() -> Self {
        Self {
            audiences: vec![RECORDINGS_AUDIENCE.into()],
            trusted_proxies: Vec::new(),
        }
    }
}

/// Who may send the recorders SIP: the SBCs' addresses or CIDR ranges, written into every
/// recorder's `sip.allow` and, where non-empty, into a NetworkPolicy of each namespace's fleet
/// (SIP only from these ranges and the front door). Empty: anyone who reaches the port.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct SipSettings {
    pub allow: Vec<opname_model::config::SourceRange>,
    pub refuse: opname_model::config::Refuse,
    /// SIP over TLS on port 5061 besides plain SIP, with the certificate of a Secret of each
    /// organisation's namespace.
    pub tls: Option<SipTlsSettings>,
}

impl Default for SipSettings {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            refuse: opname_model::config::Refuse::Reject,
            tls: None,
        }
    }
}

/// The recorders' TLS: a `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`; cert-manager makes
/// one) in each organisation's namespace, mounted so that a renewal applies without a restart.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SipTlsSettings {
    pub secret_name: String,
    /// SBCs must present a certificate signed by the Secret's `ca.crt` (mutual TLS).
    #[serde(default)]
    pub verify_clients: bool,
}

/// The SIP front door for SBCs that take one address: Kamailio's dispatcher spreading initial
/// INVITEs over the ready recorders (OPTIONS health checks, the next recorder on 503 or
/// timeout), out of the media path and of the dialogs (no Record-Route: the recorder's Contact
/// takes every request after the INVITE). SBCs that resolve DNS SRV need none.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct FrontDoorSettings {
    pub enabled: bool,
    /// An image with Debian's (or upstream's) Kamailio 5.6+ at `/usr/sbin/kamailio`.
    pub image: String,
    pub image_pull_policy: String,
    pub replicas: i32,
    /// How SBCs outside the cluster reach it: `LoadBalancer` or `NodePort` (`ClusterIP` for
    /// SBCs in the cluster).
    pub service_type: ServiceType,
    pub distribution: Distribution,
    /// The pod network range the front door's pods take addresses from. With `sip.allow` set,
    /// the front door checks that list itself and the recorders admit this range beside it (the
    /// NetworkPolicy narrows it to the front door's pods where it is enforced).
    pub pod_range: Option<opname_model::config::SourceRange>,
    pub scheduling: Scheduling,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum ServiceType {
    LoadBalancer,
    NodePort,
    ClusterIP,
}

/// How the front door picks a recorder for an initial INVITE. Least-loaded is not offered: the
/// BYEs go to the recorders directly, so the front door cannot count calls; a full recorder
/// answers 503 and the next one is tried instead.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum Distribution {
    /// In turn (Kamailio dispatcher algorithm 4).
    RoundRobin,
    /// By a hash of the Call-ID (algorithm 0): a re-sent INVITE finds the same recorder.
    CallIdHash,
}

impl Default for FrontDoorSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            image: "ghcr.io/kamailio/kamailio:5.6.3-bookworm".into(),
            image_pull_policy: "IfNotPresent".into(),
            replicas: 2,
            service_type: ServiceType::LoadBalancer,
            distribution: Distribution::RoundRobin,
            pod_range: None,
            scheduling: Scheduling::default(),
        }
    }
}

/// Bulk exports: the gate, the archives, the Job that writes them and the e-mail that announces
/// them.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportSettings {
    /// Exports only cover users whose recordings are kept at least this many days (as in the
    /// product this replaces); 0 switches the gate off.
    pub min_retention_days: u32,
    /// Largest ZIP part; a single recording larger than this gets a part of its own.
    pub part_size_bytes: u64,
    /// Days an export's archives are kept before their own lifecycle rule (or the sweeper)
    /// deletes them.
    pub archive_days: u32,
    /// Endpoint used in download links, for users outside the cluster (default: the store's).
    pub public_endpoint: Option<String>,
    /// Pace of an export in bytes per second (0: as fast as the store allows).
    pub bytes_per_second: u64,
    /// The export Job: the operator's own image with the `export` subcommand.
    pub image: String,
    /// Namespace the Jobs run in (default: the operator's own, `POD_NAMESPACE`).
    pub job_namespace: Option<String>,
    pub service_account: String,
    /// ConfigMap holding this configuration as `operator.yaml`, mounted into the Job.
    pub config_map: String,
    /// Secret with the store credentials (and `SMTP_USERNAME`/`SMTP_PASSWORD`) for the Job.
    pub credentials_secret: Option<String>,
    pub smtp: Option<SmtpSettings>,
    /// Where export Jobs run.
    pub scheduling: Scheduling,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            min_retention_days: 180,
            part_size_bytes: 2 << 30,
            archive_days: 14,
            public_endpoint: None,
            bytes_per_second: 0,
            image: "ghcr.io/opname/opname-operator:0.1.0".into(),
            job_namespace: None,
            service_account: "opname-operator".into(),
            config_map: "opname-operator".into(),
            credentials_secret: None,
            smtp: None,
            scheduling: Scheduling::default(),
        }
    }
}

/// The relay that sends export notifications; credentials come from `SMTP_USERNAME` and
/// `SMTP_PASSWORD` in the environment (a Secret), never from this file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SmtpSettings {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// Upgrade with STARTTLS (required when true).
    #[serde(default = "default_true")]
    pub starttls: bool,
    pub from: String,
}

fn default_smtp_port() -> u16 {
    587
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RetentionSettings {
    /// Manage the bucket's lifecycle rules (S3 stores). Off: rely on the sweeper (#4, to come).
    pub lifecycle: bool,
    /// How often the rules are verified (or, without them, the sweeper runs).
    pub interval_seconds: u64,
    /// The sweeper's pace: deletions per second at most.
    pub sweep_deletes_per_second: u32,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            lifecycle: true,
            interval_seconds: 300,
            sweep_deletes_per_second: 50,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RecorderSettings {
    pub image: String,
    pub image_pull_policy: String,
    /// CPU and memory requests/limits of a recorder container.
    pub resources: Resources,
    /// How long calls may continue after SIGTERM. The pod's termination grace covers the preStop
    /// pause, this, finalising and `finalUploadSeconds`, plus 10 s.
    pub drain_seconds: u64,
    /// How long a stopping recorder's last uploads may take.
    pub final_upload_seconds: u64,
    /// Calls in progress upload what they wrote every this many seconds, so a lost pod or
    /// node loses at most this much of them (0: off; the spool's copy is then the only one).
    pub segment_seconds: u64,
    /// Time the endpoints get to drop a terminating pod before it stops taking calls.
    pub pre_stop_seconds: i64,
    /// Size limit of the spool `emptyDir`.
    pub spool_size: String,
    /// Opus settings for all recorders.
    pub bitrate: i32,
    pub complexity: i32,
    /// Where recorders run: nodes the SBCs reach.
    pub scheduling: Scheduling,
    /// A ServiceAccount of each organisation's namespace for the recorders, for a cloud
    /// identity instead of the store Secret (IRSA, workload identity); the platform creates it.
    /// `None`: the namespace's default. Recorders never call the API: no token is mounted
    /// unless an identity webhook projects its own.
    pub service_account: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Resources {
    pub cpu_request: String,
    pub cpu_limit: Option<String>,
    pub memory_request: String,
    pub memory_limit: String,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct StoreSettings {
    /// `s3://bucket`, `gs://bucket`, `az://container` or `file:///dir` (tests and single-node).
    pub url: String,
    pub prefix: String,
    /// Secret (in each recorded namespace) whose keys become recorder environment variables,
    /// e.g. `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    pub credentials_secret: Option<String>,
    /// Non-secret store settings as environment variables (`AWS_ENDPOINT`, `AWS_REGION`, …).
    pub env: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct CapacitySettings {
    pub min_replicas: i32,
    pub max_replicas: i32,
    /// Recorded users one replica serves; replicas = ceil(users / usersPerReplica), clamped.
    pub users_per_replica: i32,
    /// Concurrent calls one recorder takes before answering 503 (see docs/BENCHMARKS.md).
    pub max_calls_per_replica: usize,
    /// With an HPA the replica count above is its minimum and CPU decides the rest.
    pub hpa: Option<HpaSettings>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HpaSettings {
    pub target_cpu_utilization: i32,
}

/// How RTP reaches recorder pods.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum RtpMode {
    /// Pod addresses are routable from the SBC (flat pod network, e.g. Calico BGP, AWS VPC CNI):
    /// the pod IP goes into SDP answers.
    PodNetwork,
    /// `hostNetwork: true`: RTP ports open on the node and the node IP goes into SDP answers. One
    /// recorder per node per port range (a required anti-affinity is set).
    HostNetwork,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RtpSettings {
    pub mode: RtpMode,
    pub port_min: u16,
    pub port_max: u16,
    /// The recorders' `rtp.latching`: RTP from the first source instead of the offer's address
    /// (SBCs behind NAT).
    pub latching: bool,
    /// The recorders' `rtp.plainWithTls`: `false` refuses plain RTP on calls signalled over TLS.
    pub plain_with_tls: bool,
}

impl Default for RecorderSettings {
    fn default() -> Self {
        Self {
            image: "ghcr.io/opname/opname-recorder:0.1.0".into(),
            image_pull_policy: "IfNotPresent".into(),
            resources: Resources::default(),
            drain_seconds: 3600,
            final_upload_seconds: 120,
            segment_seconds: 10,
            pre_stop_seconds: 10,
            spool_size: "4Gi".into(),
            bitrate: 24_000,
            complexity: 5,
            scheduling: Scheduling::default(),
            service_account: None,
        }
    }
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            cpu_request: "1".into(),
            cpu_limit: None,
            memory_request: "256Mi".into(),
            memory_limit: "1Gi".into(),
        }
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            url: "file:///var/lib/opname/recordings".into(),
            prefix: "recordings".into(),
            credentials_secret: None,
            env: BTreeMap::new(),
        }
    }
}

impl Default for CapacitySettings {
    fn default() -> Self {
        Self {
            min_replicas: 2,
            max_replicas: 20,
            users_per_replica: 500,
            max_calls_per_replica: 200,
            hpa: None,
        }
    }
}

impl Default for RtpSettings {
    fn default() -> Self {
        Self {
            mode: RtpMode::PodNetwork,
            port_min: 16384,
            port_max: 32767,
            latching: false,
            plain_with_tls: true,
        }
    }
}

impl Settings {
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SettingsError::Read(path.display().to_string(), e))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, SettingsError> {
        let s: Settings =
            serde_saphyr::from_str(text).map_err(|e| SettingsError::Yaml(e.to_string()))?;
        let c = &s.capacity;
        if c.min_replicas < 1 || c.max_replicas < c.min_replicas || c.users_per_replica < 1 {
            return Err(SettingsError::Invalid(
                "capacity: need 1 <= minReplicas <= maxReplicas and usersPerReplica >= 1".into(),
            ));
        }
        if s.rtp.port_min >= s.rtp.port_max {
            return Err(SettingsError::Invalid(
                "rtp: portMin must be below portMax".into(),
            ));
        }
        if s.front_door.enabled && !s.sip.allow.is_empty() && s.front_door.pod_range.is_none() {
            return Err(SettingsError::Invalid(
                "frontDoor.podRange (the pod network range) is needed with sip.allow: the \
                 recorders must admit the front door's pods"
                    .into(),
            ));
        }
        Ok(s)
    }
}
