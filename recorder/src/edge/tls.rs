//! SIP over TLS: the server configuration from PEM files (TLS 1.2 and 1.3, rustls on ring),
//! optionally requiring a client certificate signed by a CA bundle (mutual TLS identifies the
//! SBC), and read again when the files change, so a rotated Secret applies without a restart.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use opname_model::config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS: cannot read {path}: {source}")]
    Pem {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("TLS: {path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS: client CA bundle: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The configuration new connections get; replaced when the files change.
pub struct Tls {
    files: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
}

fn pem_err(path: &std::path::Path) -> impl FnOnce(rustls::pki_types::pem::Error) -> TlsError {
    let path = path.to_path_buf();
    move |source| TlsError::Pem { path, source }
}

/// Builds the server configuration the files describe.
pub fn server_config(files: &TlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(pem_err(&files.cert_file))?
        .collect::<Result<_, _>>()
        .map_err(pem_err(&files.cert_file))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert_file.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file).map_err(pem_err(&files.key_file))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match &files.client_ca_file {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca).map_err(pem_err(ca))? {
                roots.add(cert.map_err(pem_err(ca))?)?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(builder.with_single_cert(certs, key)?))
}

fn stamp(files: &TlsConfig) -> Vec<Option<(SystemTime, u64)>> {
    [
        Some(&files.cert_file),
        Some(&files.key_file),
        files.client_ca_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    })
    .collect()
}

impl Tls {
    /// Fails when the files do not make a configuration: a recorder that was asked for TLS
    /// does not start without it.
    pub fn load(files: &TlsConfig) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            current: RwLock::new(server_config(files)?),
            files: files.clone(),
        }))
    }

    pub fn current(&self) -> Option<Arc<ServerConfig>> {
        self.current.read().ok().map(|c| c.clone())
    }

    /// Every 10 s: files changed → a new configuration for new connections; files that do not
    /// make one are logged and the previous configuration stays.
    pub async fn watch(self: Arc<Self>) {
        let mut seen = stamp(&self.files);
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            let now = stamp(&self.files);
            if now == seen {
                continue;
            }
            seen = now;
            match server_config(&self.files) {
                Ok(config) => {
                    if let Ok(mut c) = self.current.write() {
                        *c = config;
                    }
                    tracing::info!("TLS certificate reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "TLS files changed but do not load; keeping the previous certificate")
                }
            }
        }
    }
}
