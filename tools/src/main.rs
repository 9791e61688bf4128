use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use opname_model::config::Config;
use opname_recorder::edge;
use opname_tools::loadgen;

#[derive(Parser)]
#[command(
    name = "opname-tools",
    version,
    about = "Developer tools for opname: a local demo call and a SIPREC load generator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a recorder on a local directory store and record one demo call into it.
    Demo {
        /// Directory for the store, spool and config.
        #[arg(long, default_value = "opname-demo")]
        dir: PathBuf,
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Hold N concurrent two-stream G.711 SIPREC calls against a recorder.
    Loadgen {
        /// A recorder's (or a front door's) `ip:port`, or a SIP domain whose `_sip._udp` SRV
        /// records name the recorders (RFC 3263; needs `--dns`).
        #[arg(long)]
        target: String,
        /// The name server that resolves a domain `--target` (`ip:port`).
        #[arg(long)]
        dns: Option<SocketAddr>,
        #[arg(long, default_value_t = 1)]
        calls: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Spread call starts over this many seconds.
        #[arg(long, default_value_t = 0.0)]
        ramp: f64,
        #[arg(long, default_value = "sip:alice@demo.example")]
        caller: String,
        #[arg(long, default_value = "sip:+15550100@carrier.example")]
        callee: String,
        /// Raw 8 kHz μ-law audio for stream 1 (default: a synthetic speaker).
        #[arg(long)]
        caller_audio: Option<PathBuf>,
        /// Raw 8 kHz μ-law audio for stream 2.
        #[arg(long)]
        callee_audio: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // One TLS crypto provider for the whole process (object_store's HTTP client needs it).
    let _ = rustls::crypto::ring::default_provider().install_default();
    opname_model::logging::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo { dir, seconds } => demo(dir, seconds),
        Command::Loadgen {
            target,
            dns,
            calls,
            seconds,
            ramp,
            caller,
            callee,
            caller_audio,
            callee_audio,
        } => edge::process::runtime(None)
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                let target = match (target.parse::<SocketAddr>(), dns) {
                    (Ok(addr), _) => loadgen::Target::Addr(addr),
                    (Err(_), Some(dns)) => loadgen::Target::Domain {
                        domain: target,
                        dns,
                    },
                    (Err(_), None) => {
                        return Err(format!("--target {target}: a domain needs --dns"));
                    }
                };
                // The address the kernel would send from (Via, Contact and SDP name it).
                let towards = match &target {
                    loadgen::Target::Addr(a) => *a,
                    loadgen::Target::Domain { dns, .. } => *dns,
                };
                let bind = UdpSocket::bind(("0.0.0.0", 0))
                    .and_then(|s| s.connect(towards).and_then(|()| s.local_addr()))
                    .map(|a| a.ip())
                    .map_err(|e| format!("no route to {towards}: {e}"))?;
                let [default_a, default_b] = loadgen::synthetic_audio();
                let read = |p: Option<PathBuf>, default| match p {
                    Some(p) => std::fs::read(&p)
                        .map(Into::into)
                        .map_err(|e| format!("{}: {e}", p.display())),
                    None => Ok(default),
                };
                let audio = [
                    read(caller_audio, default_a)?,
                    read(callee_audio, default_b)?,
                ];
                let spec = loadgen::LoadSpec {
                    target,
                    bind,
                    calls,
                    duration: Duration::from_secs(seconds),
                    ramp: Duration::from_secs_f64(ramp),
                    caller,
                    callee,
                    audio,
                };
                let report = rt.block_on(loadgen::run(spec)).map_err(|e| e.to_string())?;
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?
                );
                Ok(())
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("opname-tools: {e}");
            ExitCode::FAILURE
        }
    }
}

fn free_port() -> Result<u16, String> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    s.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn demo(dir: PathBuf, seconds: u64) -> Result<(), String> {
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let dir = dir.canonicalize().map_err(|e| e.to_string())?;
    let sip_port = free_port()?;
    let yaml = format!(
        "namespace: demo\nsip:\n  listen: 127.0.0.1:{sip_port}\nrtp:\n  bind: 127.0.0.1\n  portMin: 41000\n  portMax: 41999\nstore:\n  url: file://{store}\n  prefix: recordings\nspool:\n  dir: {spool}\nhttp:\n  listen: 127.0.0.1:0\nlimits:\n  drainSeconds: 10\npolicies:\n  - name: alice\n    user: alice@demo.example\n    identities: [\"sip:alice@demo.example\", \"tel:+15550001\"]\n    retentionDays: 30\n",
        store = dir.join("store").display(),
        spool = dir.join("spool").display()
    );
    let config_path = dir.join("recorder.yaml");
    std::fs::write(&config_path, &yaml).map_err(|e| e.to_string())?;
    let config = Config::parse(&yaml).map_err(|e| e.to_string())?;
    let rt = edge::process::runtime(None).map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let server = tokio::spawn(edge::run(Some(config_path), config, rx));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let target: SocketAddr = ([127, 0, 0, 1], sip_port).into();
        println!("recording a {seconds} s demo call to {target} …");
        let report = loadgen::run(loadgen::LoadSpec {
            target: loadgen::Target::Addr(target),
            bind: [127, 0, 0, 1].into(),
            calls: 1,
            duration: Duration::from_secs(seconds),
            ramp: Duration::ZERO,
            caller: "sip:alice@demo.example".into(),
            callee: "sip:+15550100@carrier.example".into(),
            audio: loadgen::synthetic_audio(),
        })
        .await
        .map_err(|e| e.to_string())?;
        let _ = tx.send(true);
        server
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if report.answered != 1 {
            return Err(format!("the demo call was not answered: {report:?}"));
        }
        Ok::<(), String>(())
    })?;
    let mut found = Vec::new();
    let mut stack = vec![dir.join("store")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| e.to_string())?.flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                found.push(e.path());
            }
        }
    }
    found.sort();
    for f in &found {
        println!("{}", f.display());
    }
    if found.len() < 2 {
        return Err("the demo recording did not reach the store".into());
    }
    println!(
        "play it with: ffplay or any browser ({}).",
        found
            .iter()
            .find(|f| f.extension().is_some_and(|e| e == "opus"))
            .map_or(String::new(), |f| f.display().to_string())
    );
    Ok(())
}
