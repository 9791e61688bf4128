//! Harness for end-to-end tests: builds and starts the real binaries, the test servers (SIPp,
//! moto_server) and makes speech with espeak-ng and sox. Nothing here is skipped when a tool is
//! missing: a missing tool fails the test with the install command (`.ci/run` installs them).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

pub mod audio;
pub mod controlplane;
pub mod garage;
pub mod helm;
pub mod kubelet;
pub mod pki;
pub mod s3;
pub mod smtp;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

static BUILD: Once = Once::new();

/// Path of a workspace binary, built once per test process with the profile of the tests.
///
/// The build runs without the `CARGO_*` variables cargo sets for a test process: build scripts
/// (ring's) track `CARGO_MANIFEST_DIR`, so inheriting it would rebuild the TLS stack and every
/// binary on each test binary's first call (half a minute each).
pub fn bin(name: &str) -> PathBuf {
    BUILD.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(|k| {
                k.starts_with("CARGO_") && !k.starts_with("CARGO_HOME") && k != "CARGO_TARGET_DIR"
            }) {
                build.env_remove(key);
            }
        }
        let status = build
            .args([
                "build",
                "--bins",
                "-p",
                "opname-recorder",
                "-p",
                "opname-operator",
                "-p",
                "opname-tools",
                "-p",
                "opname-cli",
            ])
            .current_dir(workspace())
            .status()
            .expect("cargo build");
        assert!(status.success(), "building the binaries failed");
    });
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target"));
    target.join("debug").join(name)
}

/// Requires an external tool; fails with how to install it.
pub fn require(tool: &str, install: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} is not installed: {install} (bash .ci/run installs everything)"
    );
}

/// A port free for both UDP and TCP on loopback.
pub fn free_port() -> u16 {
    loop {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A block of `n` consecutive free UDP ports (for an RTP range). Blocks handed out by one test
/// process never overlap, so tests running in parallel do not race for the same ports.
pub fn free_port_block(n: u16) -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base_of_process = 20000 + (std::process::id() % 40) as u16 * 500;
    for _ in 0..200 {
        let offset = NEXT.fetch_add(n.div_ceil(2) * 2, Ordering::Relaxed) % 20000;
        let base = 20000 + (base_of_process - 20000 + offset) % 40000;
        if base.checked_add(n).is_some()
            && (base..base + n).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok())
        {
            return base;
        }
    }
    panic!("no free UDP port block");
}

/// A child process killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    /// Starts `cmd` in a process group of its own, so that dropping it also ends the processes
    /// it forked (Kamailio's workers, a shell's children).
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        use std::os::unix::process::CommandExt;
        let child = cmd
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            child,
            name: name.into(),
        }
    }

    /// Sends a signal to the process and every process it forked (its process group).
    pub fn signal_group(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([&format!("-{sig}"), "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }

    /// Sends a signal (e.g. "TERM", "KILL").
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([format!("-{sig}"), self.child.id().to_string()])
            .status();
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Before the leader is reaped, its pid still names the group.
        self.signal_group("KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET over plain HTTP/1.0; returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A running `opname-recorder serve` with its own directory.
pub struct Recorder {
    pub proc: Proc,
    pub sip: SocketAddr,
    pub http: SocketAddr,
    pub dir: PathBuf,
    pub rtp_base: u16,
}

pub struct RecorderSpec<'a> {
    pub dir: &'a Path,
    pub store_url: String,
    pub policies: &'a str,
    pub env: Vec<(String, String)>,
    pub extra: &'a str,
}

impl Recorder {
    pub fn start(spec: RecorderSpec) -> Self {
        let sip_port = free_port();
        let http_port = free_port();
        let rtp_base = free_port_block(40);
        std::fs::create_dir_all(spec.dir).unwrap();
        let base = format!(
            "namespace: acme\nsip:\n  listen: 127.0.0.1:{sip_port}\nrtp:\n  bind: 127.0.0.1\n  portMin: {rtp_base}\n  portMax: {}\nstore:\n  url: {}\n  prefix: recordings\nspool:\n  dir: {}\nhttp:\n  listen: 127.0.0.1:{http_port}\npolicies:\n{}",
            rtp_base + 39,
            spec.store_url,
            spec.dir.join("spool").display(),
            spec.policies
        );
        // `extra` is YAML merged over the base (so it can add to any section).
        let mut config: serde_json::Value = serde_saphyr::from_str(&base).expect("base config");
        if !spec.extra.trim().is_empty() {
            let extra: serde_json::Value =
                serde_saphyr::from_str(spec.extra).expect("extra config");
            merge(&mut config, &extra);
        }
        let yaml = serde_saphyr::to_string(&config).expect("config YAML");
        let config = spec.dir.join("recorder.yaml");
        std::fs::write(&config, yaml).unwrap();
        let log = std::fs::File::create(spec.dir.join("recorder.log")).unwrap();
        let mut cmd = Command::new(bin("opname-recorder"));
        cmd.args(["serve", "--config"])
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .env("RUST_LOG", "info,opname_recorder=debug");
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let proc = Proc::spawn("opname-recorder", &mut cmd);
        let http: SocketAddr = ([127, 0, 0, 1], http_port).into();
        let up = wait_until(Duration::from_secs(20), || {
            http_get(http, "/healthz").is_ok_and(|(s, _)| s == 200)
        });
        assert!(
            up,
            "recorder did not come up; log:\n{}",
            std::fs::read_to_string(spec.dir.join("recorder.log")).unwrap_or_default()
        );
        Self {
            proc,
            sip: ([127, 0, 0, 1], sip_port).into(),
            http,
            dir: spec.dir.to_path_buf(),
            rtp_base,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("recorder.log")).unwrap_or_default()
    }
}

/// Runs one SIPp SIPREC call (tests/sipp/siprec_call.xml) with the given audio files.
pub fn sipp_call(
    target: SocketAddr,
    transport: &str,
    work: &Path,
    caller: &str,
    callee: &str,
    hold_ms: u64,
) -> std::process::Output {
    sipp_call_with(target, transport, work, caller, callee, hold_ms, " 101", "")
}

/// As [`sipp_call`], choosing whether stream 2 offers telephone-event (`te2` is `" 101"` or `""`)
/// and which digits the callee keys (`dtmf`: `""`, `"rfc4733:*44@2.0"`, `"inband:*44@2.0"`).
#[allow(clippy::too_many_arguments)]
pub fn sipp_call_with(
    target: SocketAddr,
    transport: &str,
    work: &Path,
    caller: &str,
    callee: &str,
    hold_ms: u64,
    te2: &str,
    dtmf: &str,
) -> std::process::Output {
    require("sipp", "apt-get install sip-tester");
    let sipp_dir = workspace().join("tests/sipp");
    std::fs::copy(sipp_dir.join("rtp_send.py"), work.join("rtp_send.py")).unwrap();
    let media = free_port_block(4);
    let out = Command::new("sipp")
        .current_dir(work)
        .args(["-sf"])
        .arg(sipp_dir.join("siprec_call.xml"))
        .args([
            "-m",
            "1",
            "-l",
            "1",
            "-t",
            transport,
            "-i",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
        ])
        .args([
            "-mi",
            "127.0.0.1",
            "-mp",
            &media.to_string(),
            "-timeout",
            "60s",
            "-timeout_error",
            "-nostdin",
            "-trace_err",
        ])
        .args([
            "-key",
            "caller",
            caller,
            "-key",
            "callee",
            callee,
            "-d",
            &hold_ms.to_string(),
        ])
        .args(["-key", "te2", te2, "-key", "dtmf", dtmf])
        .arg(target.to_string())
        .output()
        .expect("run sipp");
    assert!(
        out.status.success(),
        "SIPp call failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Every file below `dir` whose name ends with `suffix`.
pub fn files_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The JSON records of every recording stored below a local store directory.
pub fn stored_records(store: &Path) -> Vec<serde_json::Value> {
    files_with(store, ".json")
        .iter()
        .filter_map(|f| serde_json::from_slice(&std::fs::read(f).ok()?).ok())
        .collect()
}

/// Polls `f` every 100 ms until it holds; panics naming `what` after `secs`.
pub async fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    for _ in 0..secs * 10 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// `opname-operator run` against a kubeconfig, logging to `dir/operator.log`.
pub fn operator(kubeconfig: &str, dir: &Path, settings: &Path) -> Proc {
    let path = dir.join("kubeconfig");
    std::fs::write(&path, kubeconfig).expect("kubeconfig");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("operator.log"))
        .expect("operator log");
    Proc::spawn(
        "opname-operator",
        Command::new(bin("opname-operator"))
            .args(["run", "--config"])
            .arg(settings)
            .args([
                "--http",
                &format!("127.0.0.1:{}", free_port()),
                "--lease-namespace",
                "opname-system",
            ])
            .env("KUBECONFIG", &path)
            .env("RUST_LOG", "info,opname_operator=debug")
            .stdout(log.try_clone().expect("log"))
            .stderr(log),
    )
}

/// A recording as the recorder files it, for tests of what reads the archive (holds, erasure,
/// export, the recordings service) without recording calls first.
pub struct Synthetic<'a> {
    pub class: u32,
    pub namespace: &'a str,
    pub id: String,
    pub user: &'a str,
    pub start: jiff::Timestamp,
    pub seconds: f64,
    pub parties: [&'a str; 2],
    pub audio: Vec<u8>,
}

impl Synthetic<'_> {
    /// A time-ordered id for a start time, as the recorder's UUIDv7.
    pub fn id_at(start: jiff::Timestamp, n: u32) -> String {
        let ms = start.as_millisecond() as u64;
        format!(
            "{:08x}-{:04x}-7{:03x}-8000-{:012x}",
            ms >> 16,
            ms & 0xffff,
            n >> 12 & 0xfff,
            n as u64
        )
    }

    /// Writes audio then record under `{prefix}/r{class}/{ns}/{yyyy}/{mm}/{dd}/{id}`.
    pub async fn put(&self, store: &dyn object_store::ObjectStore, prefix: &str) -> String {
        use object_store::ObjectStoreExt;
        use sha2::Digest;
        let d = self.start.to_zoned(jiff::tz::TimeZone::UTC).date();
        let stem = format!(
            "{prefix}/r{}/{}/{:04}/{:02}/{:02}/{}",
            self.class,
            self.namespace,
            d.year(),
            d.month(),
            d.day(),
            self.id
        );
        let end = self
            .start
            .checked_add(jiff::SignedDuration::from_secs_f64(self.seconds))
            .expect("end");
        let record = serde_json::json!({
            "schema": 1, "id": self.id, "namespace": self.namespace, "user": self.user,
            "policy": self.user, "mode": "Always",
            "matchedIdentity": self.parties[0],
            "participants": [
                {"aor": self.parties[0], "channel": "left"},
                {"aor": self.parties[1], "channel": "right"},
            ],
            "start": self.start, "end": end, "durationSeconds": self.seconds,
            "codecs": ["PCMU"], "pauses": [], "streams": [],
            "audio": {"key": format!("{stem}.opus"), "contentType": "audio/ogg; codecs=opus",
                      "size": self.audio.len(), "sha256": hex::encode(sha2::Sha256::digest(&self.audio)),
                      "sampleRate": 8000, "channels": 2},
            "retentionDays": self.class,
            "retainUntil": end.checked_add(jiff::SignedDuration::from_hours(24 * self.class as i64)).expect("retain"),
            "complete": true, "endReason": "bye", "recorder": "test",
        });
        store
            .put(&format!("{stem}.opus").into(), self.audio.clone().into())
            .await
            .expect("audio");
        store
            .put(
                &format!("{stem}.json").into(),
                record.to_string().into_bytes().into(),
            )
            .await
            .expect("record");
        stem
    }

    /// Merges `patch` into the record stored at `{stem}.json` (fields a test needs that the
    /// synthetic record leaves out or fills differently).
    pub async fn patch_record(
        store: &dyn object_store::ObjectStore,
        stem: &str,
        patch: serde_json::Value,
    ) {
        use object_store::ObjectStoreExt;
        let key = object_store::path::Path::from(format!("{stem}.json"));
        let bytes = store
            .get(&key)
            .await
            .expect("record")
            .bytes()
            .await
            .expect("record");
        let mut record: serde_json::Value = serde_json::from_slice(&bytes).expect("record");
        merge(&mut record, &patch);
        store
            .put(&key, record.to_string().into_bytes().into())
            .await
            .expect("record");
    }
}

/// `seconds` of a stereo tone as Ogg Opus (the recorder's own writer), for tests that play audio.
pub fn ogg_opus_tone(seconds: u32) -> Vec<u8> {
    let mut enc = opus::Encoder::new(8000, opus::Channels::Stereo, opus::Application::Voip)
        .expect("opus encoder");
    let mut w = opname_recorder::media::ogg::OggOpusWriter::new(
        Vec::new(),
        7,
        2,
        8000,
        312,
        "opname-tests",
    )
    .expect("ogg");
    let mut pcm = [0i16; 320];
    let mut out = [0u8; 1500];
    for frame in 0..seconds * 50 {
        for i in 0..160 {
            let t = (frame * 160 + i) as f32 / 8000.0;
            let s = (t * 440.0 * std::f32::consts::TAU).sin() * 8000.0;
            pcm[2 * i as usize] = s as i16;
            pcm[2 * i as usize + 1] = (s * 0.5) as i16;
        }
        let n = enc.encode(&pcm, &mut out).expect("encode");
        w.write_audio(&out[..n]).expect("ogg page");
    }
    w.finish().expect("ogg end")
}

/// `opname-operator recordings` against a kubeconfig and the local store at `store_root`, on a
/// free port, logging to `dir`.
/// `trust` is the settings' `recordings:` block (`{}`: the defaults, tokens for audience
/// `opname.dev/recordings` only; `{audiences: []}` for the control plane's static tokens).
pub fn recordings_service(
    kubeconfig: &str,
    dir: &Path,
    store_root: &Path,
    trust: &str,
) -> (Proc, SocketAddr) {
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let port = addr.port();
    let settings = dir.join(format!("recordings-{port}.yaml"));
    std::fs::write(
        &settings,
        format!(
            "store:\n  url: file://{}\n  prefix: recordings\nrecordings: {trust}\n",
            store_root.display()
        ),
    )
    .expect("settings");
    let path = dir.join(format!("kubeconfig-recordings-{port}"));
    std::fs::write(&path, kubeconfig).expect("kubeconfig");
    let log = std::fs::File::create(dir.join(format!("recordings-{port}.log"))).expect("log");
    let proc = Proc::spawn(
        "opname-operator recordings",
        Command::new(bin("opname-operator"))
            .args(["recordings", "--config"])
            .arg(settings)
            .args(["--listen", &addr.to_string(), "--secure-cookie", "false"])
            .env("KUBECONFIG", &path)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().expect("log"))
            .stderr(log),
    );
    assert!(
        wait_until(Duration::from_secs(30), || http_get(addr, "/healthz")
            .is_ok_and(|(c, _)| c == 200)),
        "recordings service did not start"
    );
    (proc, addr)
}

/// Every key under `under` (all when `None`), sorted.
pub async fn store_keys(store: &dyn object_store::ObjectStore, under: Option<&str>) -> Vec<String> {
    use futures::StreamExt;
    let prefix = under.map(object_store::path::Path::from);
    let mut k: Vec<String> = store
        .list(prefix.as_ref())
        .filter_map(|m| async move { m.ok().map(|m| m.location.to_string()) })
        .collect()
        .await;
    k.sort();
    k
}

/// The local directory store at `dir/store` with prefix `recordings`, as the operator opens it.
pub fn local_store(dir: &Path) -> (std::sync::Arc<dyn object_store::ObjectStore>, PathBuf) {
    let root = dir.join("store");
    let store = opname_operator::store::open(&opname_operator::settings::StoreSettings {
        url: format!("file://{}", root.display()),
        prefix: "recordings".into(),
        credentials_secret: None,
        env: Default::default(),
    })
    .expect("local store");
    (store, root)
}

/// JSON merge patch (RFC 7386): objects merge, `null` removes, everything else replaces.
pub fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// The recorder configuration a namespace's fleet ConfigMaps (as the API lists them) give a
/// recorder: the base file and its policy shards, projected as the Deployment projects them and
/// loaded as the recorder loads them. `None` before the base ConfigMap exists.
pub fn fleet_config(configmaps: &[serde_json::Value]) -> Option<opname_model::config::Config> {
    use opname_operator::fleet::{CONFIG_KEY, NAME, shards};
    let named = |name: &str| configmaps.iter().find(|c| c["metadata"]["name"] == name);
    let base = named(NAME)?["data"][CONFIG_KEY].as_str()?.to_string();
    let dir = tempfile::tempdir().ok()?;
    std::fs::create_dir_all(dir.path().join("policies")).ok()?;
    std::fs::write(dir.path().join(CONFIG_KEY), base).ok()?;
    for k in 0..shards::MAX_SHARDS {
        if let Some(shard) = named(&shards::shard_name(k)) {
            let yaml = shard["data"][shards::SHARD_KEY].as_str()?;
            std::fs::write(dir.path().join(format!("policies/{k:02}.yaml")), yaml).ok()?;
        }
    }
    opname_model::config::Config::load(&dir.path().join(CONFIG_KEY)).ok()
}

/// Runs `opname-tools loadgen` with `args` (after `loadgen`) and returns its JSON report;
/// fails the test when the generator itself fails.
pub fn loadgen(args: &[&str]) -> serde_json::Value {
    let out = Command::new(bin("opname-tools"))
        .arg("loadgen")
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("opname-tools");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}
