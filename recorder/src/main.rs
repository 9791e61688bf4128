use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use opname_model::config::Config;
use opname_recorder::edge;

#[derive(Parser)]
#[command(
    name = "opname-recorder",
    version,
    about = "SIPREC recording server: forked calls to stereo Ogg Opus in object storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the recording server.
    Serve {
        /// Configuration file (format: docs/recorder-config.md); policies in it are reloaded on change.
        #[arg(long, env = "OPNAME_CONFIG", default_value = edge::default_config_path().as_os_str())]
        config: PathBuf,
        /// Runtime worker threads (default: one per core).
        #[arg(long, env = "OPNAME_THREADS")]
        threads: Option<usize>,
    },
    /// Check a configuration file and exit.
    CheckConfig {
        #[arg(long)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    // One TLS crypto provider for the whole process (object_store's HTTP client needs it).
    let _ = rustls::crypto::ring::default_provider().install_default();
    opname_model::logging::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config, threads } => serve(config, threads),
        Command::CheckConfig { config } => Config::load(&config)
            .map(|c| {
                println!(
                    "ok: namespace {}, {} policies",
                    c.namespace,
                    c.policies.len()
                )
            })
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("opname-recorder: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(path: PathBuf, threads: Option<usize>) -> Result<(), String> {
    let mut config = Config::load(&path).map_err(|e| e.to_string())?;
    // The pod's (or, with host networking, the node's) address is only known to the pod.
    if let Ok(ip) = std::env::var("OPNAME_RTP_ADVERTISE")
        && !ip.is_empty()
    {
        config.rtp.advertise = Some(
            ip.parse()
                .map_err(|e| format!("OPNAME_RTP_ADVERTISE={ip}: {e}"))?,
        );
    }
    let rt = edge::process::runtime(threads).map_err(|e| e.to_string())?;
    let (_tx, rx) = tokio::sync::watch::channel(false);
    rt.block_on(edge::run(Some(path), config, rx))
        .map_err(|e| e.to_string())
}
