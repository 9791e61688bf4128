//! The recorder's configuration file (YAML), documented in `docs/recorder-config.md`.
//!
//! One file carries the server settings and the organisation's policies, so the operator renders a
//! single ConfigMap key. Policies are re-read while running; server settings need a restart.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::identity::normalize;
pub use crate::policy::Mode;
use crate::policy::{DEFAULT_KEEP_CODE, RETENTION_DAYS};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid YAML: {0}")]
    Yaml(String),
    #[error("{0}")]
    Invalid(String),
}

/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// The organisation (Kubernetes namespace) the recordings belong to; part of every key.
    pub namespace: String,
    #[serde(default)]
    pub sip: SipConfig,
    #[serde(default)]
    pub rtp: RtpConfig,
    #[serde(default)]
    pub audio: AudioConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub spool: SpoolConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub policies: Vec<Policy>,
    /// A directory of further policies (relative: to this file's directory): every `*.yaml` in
    /// it is a list of policies, read in file-name order after `policies`. The operator shards a
    /// namespace's policies over several ConfigMaps this way (one object holds at most 1 MiB,
    /// about 4,000 users), each projected as one file; a missing directory holds none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct SipConfig {
    /// Address for SIP over UDP and TCP.
    pub listen: SocketAddr,
    /// Host written in Contact headers; defaults to the RTP advertised address.
    #[serde(default)]
    pub advertise: Option<String>,
    /// The SRCs (SBCs) that may send SIP: addresses or CIDR ranges. Empty: anyone who reaches
    /// the port may plant a recording under a known user (a warning at start).
    pub allow: Vec<SourceRange>,
    /// What a sender outside `allow` gets.
    pub refuse: Refuse,
    /// SIP over TCP connections at once, in all and per source address; more are closed at once.
    pub max_connections: usize,
    pub max_connections_per_source: usize,
    /// A TCP connection that carries nothing (not even a CRLF keep-alive) this long is closed.
    pub idle_seconds: u64,
    /// SIP over TLS (`sips:`, RFC 3261 §26); off when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

/// SIP over TLS 1.2 or 1.3. The files are read again when they change (a Secret rotated by
/// cert-manager), without a restart; connections already open keep their session.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default = "TlsConfig::default_listen")]
    pub listen: SocketAddr,
    /// PEM: the recorder's certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM: its private key.
    pub key_file: PathBuf,
    /// PEM CA bundle: with it, an SBC must present a certificate it signed (mutual TLS), and
    /// one without is refused during the handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
}

impl TlsConfig {
    fn default_listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 5061))
    }
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 5060)),
            advertise: None,
            allow: Vec::new(),
            refuse: Refuse::Reject,
            max_connections: 1024,
            max_connections_per_source: 64,
            idle_seconds: 300,
            tls: None,
        }
    }
}

impl SipConfig {
    /// Whether `ip` may send SIP.
    pub fn admits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow.is_empty() || self.allow.iter().any(|r| r.0.contains(&ip))
    }
}

/// The answer to SIP from a source outside the allow-list. Both are the same whatever the request
/// says, so nobody learns which identities are recorded.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Refuse {
    /// 403 Forbidden (TCP: the connection is accepted, every request refused).
    Reject,
    /// Nothing at all (TCP: the connection is closed at once).
    Drop,
}

/// An address (`192.0.2.7`, a range of one) or a CIDR range (`10.0.0.0/8`, `2001:db8::/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRange(pub ipnet::IpNet);

impl std::str::FromStr for SourceRange {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(ipnet::IpNet::from))
            .map(|n| SourceRange(n.trunc()))
            .map_err(|_| {
                ConfigError::Invalid(format!("{s:?} is neither an address nor a CIDR range"))
            })
    }
}

impl<'de> Deserialize<'de> for SourceRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Serialize for SourceRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct RtpConfig {
    /// Local address RTP sockets bind to.
    pub bind: IpAddr,
    /// Address written into SDP answers (the node's address with host networking, the pod's
    /// otherwise). Defaults to `bind` when that is not a wildcard.
    #[serde(default)]
    pub advertise: Option<IpAddr>,
    pub port_min: u16,
    pub port_max: u16,
    /// Playout delay of the jitter buffer.
    pub jitter_ms: u32,
    /// A recording whose RTP stops this long (without BYE, not paused) is finalised.
    pub timeout_seconds: u64,
    /// Accept a stream's RTP from the first source that sends it (kept for the call) instead of
    /// only from the address its SDP offer names: for SBCs behind NAT.
    pub latching: bool,
    /// Whether a call signalled over TLS may still send plain RTP; `false` refuses it (488) so
    /// that media is encrypted whenever signalling is.
    pub plain_with_tls: bool,
}

impl Default for RtpConfig {
    fn default() -> Self {
        Self {
            bind: IpAddr::from([0, 0, 0, 0]),
            advertise: None,
            port_min: 16384,
            port_max: 32767,
            jitter_ms: 60,
            timeout_seconds: 30,
            latching: false,
            plain_with_tls: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct AudioConfig {
    /// Opus bitrate of the stereo recording, bits per second.
    pub bitrate: i32,
    /// Opus encoder complexity 0..=10; 5 is the measured sweet spot (docs/BENCHMARKS.md).
    pub complexity: i32,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            bitrate: 24_000,
            complexity: 5,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct StoreConfig {
    /// `file:///dir`, `s3://bucket`, `gs://bucket` or `az://container`. S3 endpoint, region and
    /// credentials come from the usual `AWS_*` variables (`AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, …).
    pub url: String,
    /// Key prefix inside the bucket before `r{days}/…`.
    pub prefix: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "file:///var/lib/opname/recordings".into(),
            prefix: "recordings".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct SpoolConfig {
    /// Local directory (an `emptyDir`) where recordings are written while calls run.
    pub dir: PathBuf,
    /// Readiness turns false while more than this many bytes of finished recordings wait for
    /// the store, so new calls go to other recorders; calls in progress continue.
    pub high_water_bytes: u64,
    /// Every this many seconds a call in progress uploads what it has written since as a
    /// segment, so a lost pod or node loses at most this much of its calls; 0: off.
    pub segment_seconds: u64,
}

impl SpoolConfig {
    /// Segments this much older than their call's newest are taken for a lost recorder's.
    pub fn stale_seconds(&self) -> u64 {
        3 * self.segment_seconds
    }
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/spool/opname"),
            high_water_bytes: 2 * 1024 * 1024 * 1024,
            segment_seconds: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsConfig {
    /// New sessions beyond this many active recordings get 503.
    pub max_calls: usize,
    /// Retry-After sent with 503.
    pub retry_after_seconds: u32,
    /// On SIGTERM, how long active recordings may continue before they are cut.
    pub drain_seconds: u64,
    /// After the drain, how long the last uploads may take before the process exits; what is
    /// not stored by then stays in the spool for the next start.
    pub final_upload_seconds: u64,
    /// New sessions get 503 while the process used more than this share of its CPUs (all
    /// runtime threads) over the last second; recordings in progress are not touched.
    pub max_cpu_percent: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_calls: 200,
            retry_after_seconds: 5,
            drain_seconds: 3600,
            final_upload_seconds: 120,
            max_cpu_percent: 90,
        }
    }
}

impl LimitsConfig {
    /// Time the media tasks get to finalise their files once the drain has hung up the rest.
    pub const FINALISE_SECONDS: u64 = 6;

    /// The longest a recorder takes from SIGTERM to exit: drain, finalise, last uploads. A pod's
    /// termination grace must cover this plus its preStop pause, or the spool goes with the pod.
    pub fn shutdown_seconds(&self) -> u64 {
        self.drain_seconds
            .saturating_add(Self::FINALISE_SECONDS)
            .saturating_add(self.final_upload_seconds)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpConfig {
    /// `/healthz`, `/readyz`, `/metrics`.
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OnDemand {
    #[serde(default = "default_keep_code")]
    pub keep_code: String,
}

impl Policy {
    /// The keep code an on-demand policy listens for; `None` when every call is kept.
    pub fn keep_code(&self) -> Option<String> {
        match self.mode {
            Mode::OnDemand => Some(
                self.on_demand
                    .as_ref()
                    .map_or_else(default_keep_code, |o| o.keep_code.clone()),
            ),
            Mode::Always => None,
        }
    }
}

fn default_keep_code() -> String {
    DEFAULT_KEEP_CODE.into()
}

/// One user's recording policy, as compiled from a `RecordingPolicy`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// Name of the RecordingPolicy it came from.
    pub name: String,
    /// The person whose devices these are.
    pub user: String,
    pub identities: Vec<String>,
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub on_demand: Option<OnDemand>,
    /// Required: an absent retention must never mean "delete now".
    pub retention_days: u32,
    #[serde(default)]
    pub suspended: bool,
    /// How callers are told, carried into every record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<crate::policy::Notice>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })
        };
        let mut config = Self::unvalidated(&read(path)?)?;
        if let Some(dir) = &config.policies_dir {
            let dir = path.parent().unwrap_or(Path::new(".")).join(dir);
            let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
                Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(source) => return Err(ConfigError::Read { path: dir, source }),
            };
            files.retain(|p| p.extension().is_some_and(|e| e == "yaml"));
            files.sort();
            for file in files {
                let shard: Vec<Policy> = serde_saphyr::from_str(&read(&file)?)
                    .map_err(|e| ConfigError::Yaml(format!("{}: {e}", file.display())))?;
                config.policies.extend(shard);
            }
        }
        config.validate()?;
        Ok(config)
    }

    /// A configuration from its text alone ([`Config::load`] also reads `policiesDir`).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config = Self::unvalidated(text)?;
        config.validate()?;
        Ok(config)
    }

    fn unvalidated(text: &str) -> Result<Self, ConfigError> {
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Yaml(e.to_string()))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.namespace.is_empty() || self.namespace.contains('/') {
            return invalid(format!(
                "namespace {:?} is not a namespace name",
                self.namespace
            ));
        }
        if self.rtp.port_min > self.rtp.port_max || self.rtp.port_max - self.rtp.port_min < 2 {
            return invalid(format!(
                "rtp port range {}..{} holds no port pair",
                self.rtp.port_min, self.rtp.port_max
            ));
        }
        if !(0..=10).contains(&self.audio.complexity) {
            return invalid("audio.complexity must be 0..=10".into());
        }
        if !(6_000..=510_000).contains(&self.audio.bitrate) {
            return invalid("audio.bitrate must be 6000..=510000".into());
        }
        if self.limits.max_calls == 0 {
            return invalid("limits.maxCalls must be at least 1".into());
        }
        for p in &self.policies {
            if !RETENTION_DAYS.contains(&p.retention_days) {
                return invalid(format!(
                    "policy {}: retentionDays {} is outside {}..={}",
                    p.name,
                    p.retention_days,
                    RETENTION_DAYS.start(),
                    RETENTION_DAYS.end()
                ));
            }
            if p.identities.is_empty() {
                return invalid(format!("policy {}: no identities", p.name));
            }
            if let Some(bad) = p.identities.iter().find(|i| normalize(i).is_none()) {
                return invalid(format!("policy {}: identity {bad:?} names nobody", p.name));
            }
        }
        Ok(())
    }

    /// The address the SDP answer advertises.
    pub fn rtp_advertise(&self) -> IpAddr {
        self.rtp.advertise.unwrap_or(self.rtp.bind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Policies sharded into files of a directory beside the file are read with it, in file-name
    /// order, and validated as if written in it.
    #[test]
    fn policies_come_from_the_shard_directory_too() {
        let dir = std::env::temp_dir().join(format!("opname-shards-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("policies")).unwrap();
        let base = "namespace: acme\npoliciesDir: policies\npolicies:\n  - {name: a, user: a@x, identities: [\"1001\"], retentionDays: 7}\n";
        std::fs::write(dir.join("recorder.yaml"), base).unwrap();
        let missing = Config::load(&dir.join("recorder.yaml")).unwrap();
        assert_eq!(missing.policies.len(), 1, "no shard yet: none");
        let shard = |name: &str, days: u32| {
            format!(
                "- {{name: {name}, user: {name}@x, identities: [\"sip:{name}@x\"], retentionDays: {days}}}\n"
            )
        };
        std::fs::write(dir.join("policies/01.yaml"), shard("c", 30)).unwrap();
        std::fs::write(dir.join("policies/00.yaml"), shard("b", 30)).unwrap();
        std::fs::write(dir.join("policies/notes.txt"), "not a shard").unwrap();
        let c = Config::load(&dir.join("recorder.yaml")).unwrap();
        let names: Vec<_> = c.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        std::fs::write(dir.join("policies/02.yaml"), shard("d", 0)).unwrap();
        assert!(matches!(
            Config::load(&dir.join("recorder.yaml")),
            Err(ConfigError::Invalid(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The documented configuration (docs/recorder-config.md) is a valid one, with every key
    /// it names meaning what it says.
    #[test]
    fn the_documented_configuration_parses() {
        let doc = include_str!("../../docs/recorder-config.md");
        let yaml = doc
            .split("```yaml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a yaml block");
        let c = Config::parse(yaml).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.namespace, "acme");
        assert_eq!(c.spool.segment_seconds, 10);
        assert_eq!(c.spool.stale_seconds(), 30);
        assert_eq!(c.sip.allow.len(), 2);
        assert_eq!(c.sip.tls.as_ref().map(|t| t.listen.port()), Some(5061));
        assert!(!c.rtp.latching);
        assert_eq!(c.policies[0].retention_days, 90);
    }

    const SAMPLE: &str = r#"
namespace: acme
rtp:
  bind: 127.0.0.1
  portMin: 30000
  portMax: 30100
store:
  url: file:///tmp/rec
  prefix: rec
policies:
  - name: alice
    user: alice@acme.example
    identities: ["sip:alice@pbx.acme.example", "tel:+31201234567", "1001"]
    retentionDays: 90
  - name: bob
    user: bob@acme.example
    identities: ["1002", "1001"]
    mode: OnDemand
    retentionDays: 30
  - name: carol
    user: carol@acme.example
    identities: ["1003"]
    retentionDays: 30
    suspended: true
"#;

    #[test]
    fn parses_defaults() {
        let c = Config::parse(SAMPLE).unwrap();
        assert_eq!(c.sip.listen.port(), 5060);
        assert_eq!(c.audio.complexity, 5);
        assert_eq!(c.policies[1].keep_code().as_deref(), Some("*44"));
        assert_eq!(c.policies[0].keep_code(), None);
    }

    #[test]
    fn rejects_missing_or_bad_retention_and_unknown_fields() {
        let no_retention = "namespace: a\npolicies:\n  - {name: x, user: u, identities: ['1']}\n";
        assert!(matches!(
            Config::parse(no_retention),
            Err(ConfigError::Yaml(_))
        ));
        let zero = "namespace: a\npolicies:\n  - {name: x, user: u, identities: ['1'], retentionDays: 0}\n";
        assert!(matches!(Config::parse(zero), Err(ConfigError::Invalid(_))));
        let typo = "namespace: a\nsip: {listne: '0.0.0.0:5060'}\n";
        assert!(Config::parse(typo).is_err());
        let nobody = "namespace: a\npolicies:\n  - {name: x, user: u, identities: ['sip:host'], retentionDays: 1}\n";
        assert!(matches!(
            Config::parse(nobody),
            Err(ConfigError::Invalid(_))
        ));
    }

    #[test]
    fn the_allow_list_takes_addresses_and_ranges() {
        let c = Config::parse(
            "namespace: a\nsip:\n  allow: ['10.1.0.0/16', '192.0.2.7', '2001:db8::/32']\n  refuse: drop\n",
        )
        .unwrap();
        assert_eq!(c.sip.refuse, Refuse::Drop);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(c.sip.admits(ip("10.1.200.3")));
        assert!(c.sip.admits(ip("192.0.2.7")));
        assert!(c.sip.admits(ip("::ffff:192.0.2.7")), "IPv4-mapped");
        assert!(c.sip.admits(ip("2001:db8::1")));
        assert!(!c.sip.admits(ip("10.2.0.1")));
        assert!(!c.sip.admits(ip("192.0.2.8")));
        assert!(
            SipConfig::default().admits(ip("203.0.113.1")),
            "empty: anyone"
        );
        let bad = "namespace: a\nsip:\n  allow: ['10.0.0.0/33']\n";
        assert!(Config::parse(bad).is_err());
        // Written back as the operator renders it.
        let yaml = serde_saphyr::to_string(&c.sip).unwrap();
        assert!(yaml.contains("192.0.2.7/32"), "{yaml}");
    }
}
