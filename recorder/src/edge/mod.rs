//! The I/O edge: SIP sockets, one media task per call, the uploader, config reload and drain.
//!
//! The SIPREC core runs in one task that owns it; sockets feed it through a channel and it
//! answers with actions. Each call's media task drains its RTP sockets once per 20 ms tick
//! (one wake-up per call per frame, however many packets), feeds the recording and writes the
//! spool file. Finished recordings go to the uploader, which retries until the store takes them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use object_store::ObjectStore;
use opname_model::config::{Config, LimitsConfig};
use opname_model::layout::Layout;
use opname_model::store::StoreError;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};

use crate::media::mixer::AudioSettings;
use crate::metrics::Metrics;
use crate::siprec::policy::PolicyTable;
use crate::siprec::{CallRef, CoreConfig, EndReason, Peer, Srs};

mod config_watch;
mod core;
pub mod cpu;
mod media;
mod ports;
pub mod process;
mod segments;
mod sip;
mod spool;
pub mod tls;
mod upload;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("bind {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("spool directory {0}: {1}")]
    Spool(PathBuf, std::io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// What the core task is told by the sockets, the media tasks and the supervisors.
enum CoreInput {
    Message {
        peer: Peer,
        data: Vec<u8>,
    },
    Overloaded(bool),
    MediaEnded {
        call: CallRef,
        reason: EndReason,
    },
    Policies(Arc<PolicyTable>),
    TcpOpen {
        conn: u64,
        tx: mpsc::Sender<Vec<u8>>,
        /// Closes the connection: its peer does not read what it is sent.
        close: Arc<tokio::sync::Notify>,
    },
    TcpClosed {
        conn: u64,
    },
    Drain,
    HangUpAll,
}

/// What every task of the edge reads.
struct Shared {
    config: Config,
    store: Arc<dyn ObjectStore>,
    layout: Layout,
    metrics: Arc<Metrics>,
    core_tx: mpsc::Sender<CoreInput>,
    upload_tx: mpsc::UnboundedSender<upload::UploadJob>,
    segments_tx: mpsc::Sender<segments::SegmentJob>,
    /// Recordings this process owns until they are stored (the assembler leaves them alone).
    owned: Arc<segments::Owned>,
    audio: AudioSettings,
    recorder_name: String,
    /// RTP sockets the core has taken ports for, bound before it answered.
    ports: ports::BoundPorts,
}

/// Runs the recorder until SIGTERM/SIGINT (or `shutdown` fires) and the drain completes.
pub async fn run(
    config_path: Option<PathBuf>,
    config: Config,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let metrics = Metrics::new();
    metrics
        .spool_high_water
        .set(i64::try_from(config.spool.high_water_bytes).unwrap_or(i64::MAX));
    metrics
        .max_calls
        .set(i64::try_from(config.limits.max_calls).unwrap_or(i64::MAX));
    let store = opname_model::store::open(&config.store.url)?;
    std::fs::create_dir_all(&config.spool.dir)
        .map_err(|e| ServerError::Spool(config.spool.dir.clone(), e))?;
    let udp = Arc::new(
        UdpSocket::bind(config.sip.listen)
            .await
            .map_err(|e| ServerError::Bind(config.sip.listen, e))?,
    );
    let tcp = TcpListener::bind(config.sip.listen)
        .await
        .map_err(|e| ServerError::Bind(config.sip.listen, e))?;
    let tls = match &config.sip.tls {
        Some(t) => {
            let listener = TcpListener::bind(t.listen)
                .await
                .map_err(|e| ServerError::Bind(t.listen, e))?;
            Some((listener, tls::Tls::load(t)?, t.listen))
        }
        None => None,
    };
    let http = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|e| ServerError::Bind(config.http.listen, e))?;
    tracing::info!(sip = %config.sip.listen, http = %config.http.listen, store = %config.store.url, "opname-recorder listening");
    if config.sip.allow.is_empty() {
        tracing::warn!(
            "sip.allow is empty: anyone who reaches the SIP port may start recordings; list the SBCs' addresses"
        );
    }

    let (table, warnings) = PolicyTable::build(&config);
    for w in warnings {
        tracing::warn!("{w}");
    }
    let advertise = config.rtp_advertise();
    let sip_host = config.sip.advertise.clone().unwrap_or_else(|| {
        let ip = if config.sip.listen.ip().is_unspecified() {
            advertise
        } else {
            config.sip.listen.ip()
        };
        SocketAddr::new(ip, config.sip.listen.port()).to_string()
    });
    // Contact of dialogs that came over TLS: the same host, the TLS port.
    let tls_host = tls.as_ref().map(|(_, _, listen)| {
        let host = sip_host
            .rsplit_once(':')
            .map_or(sip_host.as_str(), |(h, _)| h);
        format!("{host}:{};transport=tls", listen.port())
    });
    let rtp_ports = ports::BoundPorts::new(config.rtp.bind);
    let core = Srs::new(
        CoreConfig {
            sip_host,
            rtp_advertise: advertise,
            port_min: config.rtp.port_min,
            port_max: config.rtp.port_max,
            max_calls: config.limits.max_calls,
            retry_after: config.limits.retry_after_seconds,
            latching: config.rtp.latching,
            tls_host,
            plain_with_tls: config.rtp.plain_with_tls,
            sources: config.sip.clone(),
        },
        Arc::new(table),
        // Random keys per process (the OS's randomness).
        std::hash::RandomState::new(),
    )
    .with_ports(Box::new(rtp_ports.clone()));
    let (core_tx, core_rx) = mpsc::channel(4096);
    let (upload_tx, upload_rx) = mpsc::unbounded_channel();
    let (segments_tx, segments_rx) = mpsc::channel(segments::QUEUE);
    let owned = Arc::new(segments::Owned::default());
    let segments = segments::Segments {
        store: store.clone(),
        layout: Layout::new(&config.store.prefix),
        namespace: config.namespace.clone(),
        spool: config.spool.clone(),
        owned: owned.clone(),
        metrics: metrics.clone(),
    };
    let shared = Arc::new(Shared {
        audio: AudioSettings {
            bitrate: config.audio.bitrate,
            complexity: config.audio.complexity,
            jitter: Duration::from_millis(config.rtp.jitter_ms as u64),
        },
        recorder_name: std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "opname-recorder".into()),
        layout: Layout::new(&config.store.prefix),
        config,
        store,
        metrics: metrics.clone(),
        core_tx: core_tx.clone(),
        upload_tx,
        segments_tx,
        owned,
        ports: rtp_ports,
    });

    let uploader = tokio::spawn(upload::uploader(
        shared.clone(),
        shared.segments_tx.clone(),
        upload_rx,
    ));
    let segment_uploader = tokio::spawn(segments::uploader(segments.clone(), segments_rx));
    let assembler = tokio::spawn(segments::assembler(segments));
    spool::requeue(&shared);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(http, crate::metrics::router(metrics)).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tokio::spawn(sip::udp_receiver(udp.clone(), core_tx.clone()));
    let table = sip::connection_table();
    tokio::spawn(sip::stream_acceptor(
        tcp,
        core_tx.clone(),
        shared.config.sip.clone(),
        None,
        table.clone(),
    ));
    if let Some((listener, tls, listen)) = tls {
        tracing::info!(sips = %listen, "SIP over TLS listening");
        tokio::spawn(tls.clone().watch());
        tokio::spawn(sip::stream_acceptor(
            listener,
            core_tx.clone(),
            shared.config.sip.clone(),
            Some(tls),
            table,
        ));
    }
    if let Some(path) = config_path {
        tokio::spawn(config_watch::config_watcher(
            path,
            shared.config.clone(),
            core_tx.clone(),
        ));
    }
    tokio::spawn(cpu::cpu_monitor(
        core_tx.clone(),
        shared.config.limits.max_cpu_percent,
    ));
    let core_task = tokio::spawn(core::core_loop(core, core_rx, udp, shared.clone()));

    // Drain: stop taking calls, let active ones finish within the grace, then cut the rest.
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = shutdown.wait_for(|s| *s) => {}
    }
    tracing::info!("shutdown requested: draining");
    shared.metrics.ready.store(false, Ordering::Relaxed);
    let _ = core_tx.send(CoreInput::Drain).await;
    let grace = Duration::from_secs(shared.config.limits.drain_seconds);
    let deadline = Instant::now() + grace;
    while shared.metrics.active_calls.get() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = core_tx.send(CoreInput::HangUpAll).await;
    // Let the media tasks finalise and hand their files to the uploader.
    let settle = Instant::now() + Duration::from_secs(LimitsConfig::FINALISE_SECONDS - 1);
    while shared.metrics.active_calls.get() > 0 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    core_task.abort();
    drop(core_tx);
    let shared_limits = shared.config.limits.clone();
    drop(shared);
    // The uploader ends once every job is stored; what cannot be stored stays in the spool.
    let last_uploads = Duration::from_secs(shared_limits.final_upload_seconds);
    let _ = tokio::time::timeout(last_uploads, uploader).await;
    assembler.abort();
    // Deletions of stored recordings' segments queued last; a store still down leaves them
    // to the other recorders (or the segments' lifecycle rule).
    let _ = tokio::time::timeout(Duration::from_secs(5), segment_uploader).await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Where a config file lives by default in the container image.
pub fn default_config_path() -> &'static Path {
    Path::new("/etc/opname/recorder.yaml")
}
