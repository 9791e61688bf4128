//! `kubectl opname`: a kubectl plugin (the binary `kubectl-opname` on the PATH) that shows an
//! organisation namespace's recording at a glance and fetches a bulk export's archives,
//! checking each against the export's status and the manifest inside it. It acts with the
//! caller's kubeconfig, so it sees and may do exactly what they may.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod download;
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
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let run = async {
        let client = kube::Client::try_default().await?;
        let namespace = cli
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        match cli.command {
            Command::Status => status::print(&client, &namespace).await,
            Command::Export {
                command: ExportCommand::Download { name, verify, out },
            } => download::run(&client, &namespace, &name, &out, verify).await,
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
