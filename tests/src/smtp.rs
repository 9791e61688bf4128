//! A real SMTP sink on loopback: aiosmtpd (PyPI) writing every message it receives to a Maildir.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Proc, free_port, wait_until};

pub struct SmtpSink {
    pub port: u16,
    maildir: PathBuf,
    _proc: Proc,
}

impl SmtpSink {
    pub fn start(dir: &Path) -> Self {
        let ok = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "aiosmtpd is missing: pip install aiosmtpd (.ci/run does)"
        );
        let port = free_port();
        let maildir = dir.join("maildir");
        let proc = Proc::spawn(
            "aiosmtpd",
            Command::new("python3")
                .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
                .args(["-c", "aiosmtpd.handlers.Mailbox"])
                .arg(&maildir),
        );
        assert!(
            wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "aiosmtpd did not start"
        );
        Self {
            port,
            maildir,
            _proc: proc,
        }
    }

    /// Every message received so far, raw (headers and body).
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(self.maildir.join(sub)) {
                for e in entries.flatten() {
                    if let Ok(text) = std::fs::read_to_string(e.path()) {
                        out.push(text);
                    }
                }
            }
        }
        out
    }
}
