use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use opname_operator::fleet::controller;
use opname_operator::settings::Settings;
use opname_operator::{archive, crd, export, fleet, metrics};

#[derive(Parser)]
#[command(
    name = "opname-operator",
    version,
    about = "Turns RecordingPolicy resources into opname-recorder fleets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (leader-elected on a Lease).
    Run {
        /// Operator configuration (store, capacity, RTP mode, recorder image).
        #[arg(
            long,
            env = "OPNAME_OPERATOR_CONFIG",
            default_value = "/etc/opname/operator.yaml"
        )]
        config: PathBuf,
        #[arg(long, env = "OPNAME_OPERATOR_HTTP", default_value = "0.0.0.0:8080")]
        http: std::net::SocketAddr,
        /// Namespace of the leader-election Lease.
        #[arg(long, env = "POD_NAMESPACE", default_value = "opname-system")]
        lease_namespace: String,
    },
    /// Run one BulkExport (what the export Job's pod runs).
    Export {
        #[arg(
            long,
            env = "OPNAME_OPERATOR_CONFIG",
            default_value = "/etc/opname/operator.yaml"
        )]
        config: PathBuf,
        #[arg(long)]
        namespace: String,
        #[arg(long)]
        name: String,
    },
    /// Serve the recordings API and web page (access reviewed by the Kubernetes API).
    Recordings {
        #[arg(
            long,
            env = "OPNAME_OPERATOR_CONFIG",
            default_value = "/etc/opname/operator.yaml"
        )]
        config: PathBuf,
        #[arg(long, env = "OPNAME_RECORDINGS_LISTEN", default_value = "0.0.0.0:8080")]
        listen: std::net::SocketAddr,
        /// Mark the login cookie `Secure` (off only for plain-HTTP test setups).
        #[arg(long, env = "OPNAME_SECURE_COOKIE", default_value_t = true, action = clap::ArgAction::Set)]
        secure_cookie: bool,
    },
    /// Print the CRDs, or write them to a directory (`crds/` is generated this way).
    Crd {
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the children the operator would create for a namespace's policies (YAML files).
    Render {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        namespace: String,
        policies: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    opname_model::logging::init();
    let result = match Cli::parse().command {
        Command::Crd { out } => write_crds(out),
        Command::Render {
            config,
            namespace,
            policies,
        } => render(config, &namespace, &policies),
        Command::Export {
            config,
            namespace,
            name,
        } => Settings::load(&config)
            .map_err(|e| e.to_string())
            .and_then(|settings| {
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())
                    .and_then(|rt| {
                        rt.block_on(opname_operator::export::controller::run_job(
                            &settings, &namespace, &name,
                        ))
                    })
            }),
        Command::Recordings {
            config,
            listen,
            secure_cookie,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(recordings(config, listen, secure_cookie))),
        Command::Run {
            config,
            http,
            lease_namespace,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(run(config, http, lease_namespace))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("opname-operator: {e}");
            ExitCode::FAILURE
        }
    }
}

fn write_crds(out: Option<PathBuf>) -> Result<(), String> {
    let crds = crd::crd_yaml().map_err(|e| e.to_string())?;
    match out {
        Some(dir) => {
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            for (name, yaml) in crds {
                std::fs::write(dir.join(&name), yaml).map_err(|e| format!("{name}: {e}"))?;
            }
        }
        None => {
            for (_, yaml) in crds {
                println!("---\n{yaml}");
            }
        }
    }
    Ok(())
}

fn render(config: Option<PathBuf>, namespace: &str, files: &[PathBuf]) -> Result<(), String> {
    let settings = match config {
        Some(c) => Settings::load(&c).map_err(|e| e.to_string())?,
        None => Settings::default(),
    };
    let mut policies = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let docs: Vec<serde_json::Value> =
            serde_saphyr::from_multiple(&text).map_err(|e| format!("{}: {e}", f.display()))?;
        for doc in docs.into_iter().filter(|d| d["kind"] == "RecordingPolicy") {
            policies.push(
                serde_json::from_value::<crd::RecordingPolicy>(doc)
                    .map_err(|e| format!("{}: {e}", f.display()))?,
            );
        }
    }
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    let plan =
        fleet::plan(namespace, &policies, &settings, None, &now).map_err(|e| e.to_string())?;
    let Some(c) = plan.children else {
        return Err("no active policy: nothing would be created".into());
    };
    let docs = [
        serde_json::to_value(&c.config_map),
        serde_json::to_value(&c.deployment),
        serde_json::to_value(&c.service),
        serde_json::to_value(&c.pdb),
    ];
    for d in docs
        .into_iter()
        .chain(c.hpa.iter().map(serde_json::to_value))
    {
        let d = d.map_err(|e| e.to_string())?;
        println!(
            "---\n{}",
            serde_saphyr::to_string(&d).map_err(|e| e.to_string())?
        );
    }
    Ok(())
}

async fn run(
    config: PathBuf,
    http: std::net::SocketAddr,
    lease_namespace: String,
) -> Result<(), String> {
    let settings = Settings::load(&config).map_err(|e| e.to_string())?;
    let client = Client::try_default()
        .await
        .map_err(|e| format!("Kubernetes client: {e}"))?;
    let metrics = metrics::Metrics::new();
    let listener = tokio::net::TcpListener::bind(http)
        .await
        .map_err(|e| format!("bind {http}: {e}"))?;
    let router = metrics::router(metrics.clone());
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    let identity = std::env::var("POD_NAME")
        .unwrap_or_else(|_| format!("opname-operator-{}", std::process::id()));
    let leases = LeaseManagerBuilder::new(client.clone(), "opname-operator")
        .with_namespace(&lease_namespace)
        .with_identity(&identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .map_err(|e| format!("leader election: {e}"))?;
    let (mut leading, lease_task) = leases.watch().await;
    tracing::info!(%identity, "waiting for leadership");
    tokio::select! {
        r = leading.wait_for(|l| *l) => { r.map_err(|e| format!("leader election: {e}"))?; }
        _ = tokio::signal::ctrl_c() => return Ok(()),
        _ = sigterm() => return Ok(()),
    }
    tracing::info!("leading: starting the controller");
    metrics.leader.set(1);
    let mut lost = leading.clone();
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            _ = lost.wait_for(|l| !*l) => tracing::warn!("leadership lost: stopping"),
            _ = tokio::signal::ctrl_c() => {}
            _ = sigterm() => {}
        }
        let _ = stop_tx.send(true);
    });
    tokio::join!(
        controller::run(
            client.clone(),
            settings.clone(),
            metrics.clone(),
            stop.clone()
        ),
        async {
            if let Some(ctx) = archive::context(&client, settings, metrics.clone()) {
                tokio::join!(
                    archive::controllers::run(ctx.clone(), stop.clone()),
                    export::controller::run(ctx.clone(), stop.clone()),
                    export::controller::run_schedules(ctx, stop),
                );
            }
        },
    );
    metrics.leader.set(0);
    drop(leading);
    // Closing the channel makes the lease task release the lease for the next replica.
    let _ = lease_task.await;
    Ok(())
}

async fn recordings(
    config: PathBuf,
    listen: std::net::SocketAddr,
    secure_cookie: bool,
) -> Result<(), String> {
    let settings = Settings::load(&config).map_err(|e| e.to_string())?;
    let client = Client::try_default()
        .await
        .map_err(|e| format!("Kubernetes client: {e}"))?;
    let store = opname_operator::store::open(&settings.store).map_err(|e| e.to_string())?;
    let catalog = opname_operator::archive::catalog::Catalog::new(store, &settings.store.prefix);
    let svc = opname_operator::recordings::Service::new(
        catalog,
        client,
        secure_cookie,
        &settings.recordings,
    );
    tokio::select! {
        r = opname_operator::recordings::serve(svc, listen) => r.map_err(|e| format!("recordings service on {listen}: {e}")),
        _ = sigterm() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

async fn sigterm() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending::<()>().await,
    }
}
