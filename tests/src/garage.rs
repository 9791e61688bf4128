//! Garage on loopback: a real S3-compatible store that checks signatures and runs lifecycle
//! expiry (in a daily worker, which the tests make run by restarting it under `faketime`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{Proc, free_port, require, wait_until};

pub struct Garage {
    proc: Option<Proc>,
    dir: PathBuf,
    pub s3: std::net::SocketAddr,
    pub key_id: String,
    pub secret: String,
}

const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

impl Garage {
    fn cli(&self, args: &[&str]) -> String {
        cli(&self.dir, args)
    }

    fn spawn(dir: &Path, faketime: Option<&str>) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .unwrap();
        let mut cmd = Command::new("garage");
        cmd.arg("-c")
            .arg(dir.join("garage.toml"))
            .arg("server")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        if let Some(offset) = faketime {
            // Set directly: the `faketime` wrapper forks and would leave Garage behind.
            cmd.env("LD_PRELOAD", FAKETIME_LIB).env("FAKETIME", offset);
        }
        Proc::spawn("garage", &mut cmd)
    }

    pub fn start(root: &Path) -> Self {
        require(
            "garage",
            "cargo install garage@2.5.0 --locked --no-default-features --features bundled-libs,sqlite,lmdb",
        );
        let dir = root.join("garage");
        std::fs::create_dir_all(&dir).unwrap();
        let (s3, rpc) = (free_port(), free_port());
        let secret: String = (0..32)
            .map(|i| format!("{:02x}", (i * 37 + std::process::id() as usize) % 251))
            .collect();
        std::fs::write(
            dir.join("garage.toml"),
            format!(
                "metadata_dir = \"{0}/meta\"\ndata_dir = \"{0}/data\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n[s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\nroot_domain = \".s3.garage.localhost\"\n",
                dir.display()
            ),
        )
        .unwrap();
        let proc = Self::spawn(&dir, None);
        assert!(
            wait_until(Duration::from_secs(20), || cli(&dir, &["status"])
                .contains("HEALTHY NODES")),
            "garage did not start"
        );
        let node = cli(&dir, &["node", "id", "-q"])
            .split('@')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        cli(&dir, &["layout", "assign", "-z", "dc1", "-c", "1G", &node]);
        cli(&dir, &["layout", "apply", "--version", "1"]);
        cli(&dir, &["key", "create", "opname"]);
        let info = cli(&dir, &["key", "info", "opname", "--show-secret"]);
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        let (key_id, secret) = (field("Key ID:"), field("Secret key:"));
        assert!(
            !key_id.is_empty() && !secret.is_empty(),
            "garage key: {info}"
        );
        let g = Self {
            proc: Some(proc),
            dir,
            s3: ([127, 0, 0, 1], s3).into(),
            key_id,
            secret,
        };
        g.cli(&["bucket", "create", "opname"]);
        g.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", "opname", "--key", "opname",
        ]);
        g
    }

    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", self.key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.as_str()),
            ("AWS_REGION", "garage"),
            ("AWS_ENDPOINT", &format!("http://{}", self.s3)),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn wait_ready(&self) {
        assert!(
            wait_until(Duration::from_secs(20), || std::net::TcpStream::connect(
                self.s3
            )
            .is_ok()),
            "garage S3 API did not come back"
        );
    }

    /// Runs Garage `offset` in the future (e.g. `+3d`) long enough for its lifecycle worker to
    /// run at start-up, then brings it back on the real clock (clients get clock-skew errors
    /// while it is faked).
    pub fn run_lifecycle_at(&mut self, offset: &str, settle: Duration) {
        self.proc = None;
        std::thread::sleep(Duration::from_millis(500));
        let _ = std::fs::remove_file(self.dir.join("meta/lifecycle_worker_state"));
        let faked = Self::spawn(&self.dir, Some(offset));
        self.proc = Some(faked);
        self.wait_ready();
        std::thread::sleep(settle);
        self.proc = None;
        std::thread::sleep(Duration::from_millis(500));
        self.proc = Some(Self::spawn(&self.dir, None));
        self.wait_ready();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

fn cli(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("garage")
        .arg("-c")
        .arg(dir.join("garage.toml"))
        .args(args)
        .output()
        .expect("garage");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
