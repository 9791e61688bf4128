//! `kubectl opname`: a kubectl plugin (the binary `kubectl-opname` on the PATH) that shows an
//! organisation namespace's recording at a glance and fetches a bulk export's archives,
//! checking each against the export's status and the manifest inside it. It acts with the
//! caller's kubeconfig, so it sees and may do exactly what they may.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod download;
mod recordings;
mod status;

#[derive(Parser)]
#[command(name = "kubectl opname", version, about)]
struct Cli {
    /// The organisation's namespace (default: the kubeconfig context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Policies and their readiness, the recorder fleet, retention enforcement, holds and
    /// exports of one namespace.
    Status,
    /// Bulk exports.
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
    /// Recordings, through the recordings service (its access reviews and audit apply).
    Recordings {
        /// The service's address, e.g. https://recordings.example.com.
        #[arg(long, env = "OPNAME_RECORDINGS_URL")]
        service: String,
        /// A token for the service (`kubectl create token NAME --audience
        /// opname.dev/recordings`); default: the kubeconfig user's token.
        #[arg(long, env = "OPNAME_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(subcommand)]
        command: RecordingsCommand,
    },
}

#[derive(Subcommand)]
enum RecordingsCommand {
    /// The newest recordings (one page), in the organisation's time zone.
    List {
        #[arg(long)]
        user: Option<String>,
        /// Any participant's number or address.
        #[arg(long)]
        party: Option<String>,
        /// RFC 3339 instants, e.g. 2026-11-01T00:00:00+01:00.
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
    },
    /// One recording's JSON record.
    Get { id: String },
    /// One recording's audio (Ogg Opus).
    Download {
        id: String,
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ExportCommand {
    /// Downloads every part of a finished export through its links, checking each part's size
    /// and SHA-256 against the export's status.
    Download {
        name: String,
        /// Also open every ZIP and check each recording against its manifest (size and SHA-256).
        #[arg(long)]
        verify: bool,
        /// Directory the parts are written to.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

/// What can go wrong, each with what the user can do about it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("Kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("kubeconfig: {0}")]
    Config(#[from] kube::config::KubeconfigError),
    #[error("{0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("download: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0} is not a ZIP archive opname wrote: {1}")]
    Zip(PathBuf, zip::result::ZipError),
    #[error("bulk export {0} has not succeeded (phase {1})")]
    NotFinished(String, String),
    #[error(
        "part {0} has no download link (a store without presigned URLs, or links dropped at \
         expiry): download it through the recordings service, or renew the links by annotating \
         the export with opname.dev/renew-links"
    )]
    NoLink(String),
    #[error("part {part}: {what}")]
    Mismatch { part: String, what: String },
    #[error("the recordings service answered {0}: {1}")]
    Service(u16, String),
    #[error("the recordings service's address: {0}")]
    Url(String),
    #[error(
        "no token for the recordings service: pass --token (kubectl create token NAME --audience \
         opname.dev/recordings) or use a kubeconfig with a token"
    )]
    NoToken,
}

/// A client from the kubeconfig, and the namespace: the flag's, else the context's.
async fn connect(namespace: Option<String>) -> Result<(kube::Client, String), CliError> {
    let client = kube::Client::try_default().await?;
    let namespace = namespace.unwrap_or_else(|| client.default_namespace().to_string());
    Ok((client, namespace))
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let run = async {
        match cli.command {
            Command::Status => {
                let (client, namespace) = connect(cli.namespace).await?;
                status::print(&client, &namespace).await
            }
            Command::Export {
                command: ExportCommand::Download { name, verify, out },
            } => {
                let (client, namespace) = connect(cli.namespace).await?;
                download::run(&client, &namespace, &name, &out, verify).await
            }
            // The recordings service needs no API server.
            Command::Recordings {
                service,
                token,
                command,
            } => {
                // The kubeconfig (or the pod's account) only for defaults: kube resolves the
                // context, its namespace and its user's token.
                let inferred = kube::Config::infer().await.ok();
                let namespace = cli
                    .namespace
                    .or_else(|| inferred.as_ref().map(|c| c.default_namespace.clone()))
                    .unwrap_or_else(|| "default".into());
                let token = match token {
                    Some(t) => t,
                    None => {
                        use secrecy::ExposeSecret;
                        inferred
                            .and_then(|c| c.auth_info.token)
                            .map(|t| t.expose_secret().to_string())
                            .ok_or(CliError::NoToken)?
                    }
                };
                let svc = recordings::Service {
                    url: service,
                    token,
                    namespace,
                };
                match command {
                    RecordingsCommand::List {
                        user,
                        party,
                        from,
                        to,
                        limit,
                        cursor,
                    } => {
                        let q = [
                            ("user", user.unwrap_or_default()),
                            ("party", party.unwrap_or_default()),
                            ("from", from.unwrap_or_default()),
                            ("to", to.unwrap_or_default()),
                            ("limit", limit.map(|l| l.to_string()).unwrap_or_default()),
                            ("cursor", cursor.unwrap_or_default()),
                        ];
                        recordings::list(&svc, &q).await
                    }
                    RecordingsCommand::Get { id } => recordings::get(&svc, &id).await,
                    RecordingsCommand::Download { id, out } => {
                        recordings::download(&svc, &id, &out).await
                    }
                }
            }
        }
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Io("the runtime".into(), e))
        .and_then(|rt| rt.block_on(run));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
