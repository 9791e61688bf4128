//! moto_server on loopback: an S3-protocol store for tests.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;

use crate::{Proc, free_port, http_get, require, wait_until};

pub struct Moto {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Moto {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// On a given port (to bring a store "back" where clients expect it).
    pub fn start_on(port: u16) -> Self {
        require("moto_server", "pip install 'moto[server]'");
        let proc = Proc::spawn(
            "moto_server",
            Command::new("moto_server")
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        assert!(
            wait_until(Duration::from_secs(20), || http_get(addr, "/").is_ok()),
            "moto_server did not start"
        );
        Self { proc, addr }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates a bucket (moto does not check signatures for this).
    pub fn create_bucket(&self, bucket: &str) {
        let mut s = std::net::TcpStream::connect(self.addr).unwrap();
        use std::io::{Read, Write};
        write!(
            s,
            "PUT /{bucket} HTTP/1.0\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
            self.addr
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(
            out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200"),
            "create bucket: {out}"
        );
    }

    /// The environment the recorder (and `client`) use to reach it.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT", &self.endpoint()),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    pub fn client(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Arc::new(
            object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_access_key_id("test")
                .with_secret_access_key("test")
                .with_region("us-east-1")
                .with_endpoint(self.endpoint())
                .with_allow_http(true)
                .build()
                .unwrap(),
        )
    }
}
