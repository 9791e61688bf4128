//! The I/O edge: SIP sockets, one media task per call, the uploader, config reload and drain.
//!
//! The SIPREC core runs in one task that owns it; sockets feed it through a channel and it
//! answers with actions. Each call's media task drains its RTP sockets once per 20 ms tick
//! (one wake-up per call per frame, however many packets), feeds the recording and writes the
//! spool file. Finished recordings go to the uploader, which retries until the store takes them.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};

use crate::config::{Config, PolicyTable};
use crate::metadata::Metadata;
use crate::metrics::{Metrics, OutcomeLabel};
use crate::record::{self, AudioObject, RecordingRecord};
use crate::recording::{AudioSettings, KeepSpec, Recording, RecordingError};
use crate::sip::{Framing, MAX_MESSAGE, frame_stream};
use crate::siprec::{
    Action, CallRef, CoreConfig, EndReason, MediaStream, Peer, Srs, StartRecording, Transport,
};
use crate::store::{Keys, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("bind {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("spool directory {0}: {1}")]
    Spool(PathBuf, std::io::Error),
}

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
    },
    TcpClosed {
        conn: u64,
    },
    Drain,
    HangUpAll,
}

enum CallCmd {
    Update {
        streams: Vec<MediaStream>,
        metadata: Box<Metadata>,
    },
    Stop(EndReason),
}

/// A spool file that hashes and counts what is written, so the record needs no second read.
pub struct SpoolWriter {
    file: BufWriter<std::fs::File>,
    hasher: Sha256,
    bytes: u64,
}

impl Write for SpoolWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// A finished recording in the spool, waiting for the store.
#[derive(Debug, Clone)]
struct UploadJob {
    audio: PathBuf,
    record: PathBuf,
    keys: Keys,
    bytes: u64,
    ended: Instant,
}

struct Shared {
    config: Config,
    store: Store,
    metrics: Arc<Metrics>,
    core_tx: mpsc::Sender<CoreInput>,
    upload_tx: mpsc::UnboundedSender<UploadJob>,
    audio: AudioSettings,
    recorder_name: String,
}

/// Runs the recorder until SIGTERM/SIGINT (or `shutdown` fires) and the drain completes.
pub async fn run(
    config_path: Option<PathBuf>,
    config: Config,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ServerError> {
    let metrics = Metrics::new();
    metrics.spool_high_water.store(
        i64::try_from(config.spool.high_water_bytes).unwrap_or(i64::MAX),
        Ordering::Relaxed,
    );
    let store = Store::open(&config.store.url, &config.store.prefix)?;
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
    let http = tokio::net::TcpListener::bind(config.http.listen)
        .await
        .map_err(|e| ServerError::Bind(config.http.listen, e))?;
    tracing::info!(sip = %config.sip.listen, http = %config.http.listen, store = %config.store.url, "opname-recorder listening");

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
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64 & 0xffff_ffff);
    let core = Srs::new(
        CoreConfig {
            sip_host,
            rtp_advertise: advertise,
            port_min: config.rtp.port_min,
            port_max: config.rtp.port_max,
            max_calls: config.limits.max_calls,
            retry_after: config.limits.retry_after_seconds,
        },
        Arc::new(table),
        seed,
    );
    let (core_tx, core_rx) = mpsc::channel(4096);
    let (upload_tx, upload_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        audio: AudioSettings {
            bitrate: config.audio.bitrate,
            complexity: config.audio.complexity,
            jitter: Duration::from_millis(config.rtp.jitter_ms as u64),
        },
        recorder_name: std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "opname-recorder".into()),
        config,
        store,
        metrics: metrics.clone(),
        core_tx: core_tx.clone(),
        upload_tx,
    });

    let uploader = tokio::spawn(uploader(shared.clone(), upload_rx));
    requeue_spool(&shared);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(http, crate::metrics::router(metrics)).await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    tokio::spawn(udp_receiver(udp.clone(), core_tx.clone()));
    tokio::spawn(tcp_acceptor(tcp, core_tx.clone()));
    if let Some(path) = config_path {
        tokio::spawn(config_watcher(path, shared.config.clone(), core_tx.clone()));
    }
    tokio::spawn(cpu_monitor(
        core_tx.clone(),
        shared.config.limits.max_cpu_percent,
    ));
    let core_task = tokio::spawn(core_loop(core, core_rx, udp, shared.clone()));

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
    let settle = Instant::now() + Duration::from_secs(5);
    while shared.metrics.active_calls.get() > 0 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    core_task.abort();
    drop(core_tx);
    drop(shared);
    // The uploader ends once every job is stored; what cannot be stored stays in the spool.
    let _ = tokio::time::timeout(Duration::from_secs(30), uploader).await;
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

/// Samples the process's CPU time every second and tells the core when it crosses the limit.
async fn cpu_monitor(tx: mpsc::Sender<CoreInput>, max_percent: u32) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut guard = crate::capacity::CpuGuard::new(max_percent, cpus);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(cpu) = crate::capacity::process_cpu_seconds() else {
            return;
        };
        if let Some(overloaded) = guard.sample(cpu, Instant::now()) {
            if overloaded {
                tracing::warn!(max_percent, "CPU above its limit: refusing new sessions");
            } else {
                tracing::info!("CPU back below its limit: taking new sessions");
            }
            if tx.send(CoreInput::Overloaded(overloaded)).await.is_err() {
                return;
            }
        }
    }
}

async fn udp_receiver(sock: Arc<UdpSocket>, tx: mpsc::Sender<CoreInput>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, addr)) => {
                let peer = Peer {
                    transport: Transport::Udp,
                    addr,
                    conn: 0,
                };
                if tx
                    .send(CoreInput::Message {
                        peer,
                        data: buf[..n].to_vec(),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => tracing::debug!(error = %e, "SIP UDP receive"),
        }
    }
}

async fn tcp_acceptor(listener: TcpListener, tx: mpsc::Sender<CoreInput>) {
    let mut next_conn = 1u64;
    loop {
        let Ok((stream, addr)) = listener.accept().await else {
            continue;
        };
        let conn = next_conn;
        next_conn += 1;
        tokio::spawn(tcp_connection(stream, addr, conn, tx.clone()));
    }
}

async fn tcp_connection(
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    conn: u64,
    tx: mpsc::Sender<CoreInput>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    if tx
        .send(CoreInput::TcpOpen {
            conn,
            tx: out_tx.clone(),
        })
        .await
        .is_err()
    {
        return;
    }
    let writer = tokio::spawn(async move {
        while let Some(data) = out_rx.recv().await {
            if wr.write_all(&data).await.is_err() {
                break;
            }
        }
    });
    let peer = Peer {
        transport: Transport::Tcp,
        addr,
        conn,
    };
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16 * 1024];
    'read: loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match frame_stream(&buf) {
                Framing::Incomplete => break,
                Framing::KeepAlive { len, pong } => {
                    buf.drain(..len);
                    if pong {
                        let _ = out_tx.send(b"\r\n".to_vec()).await;
                    }
                }
                Framing::Message(len) => {
                    let data: Vec<u8> = buf.drain(..len).collect();
                    if tx.send(CoreInput::Message { peer, data }).await.is_err() {
                        break 'read;
                    }
                }
                Framing::Invalid(why) => {
                    tracing::warn!(peer = %addr, why, "SIP over TCP cannot be framed; closing");
                    // Answer what can be answered (400), then drop the connection.
                    let end = buf.len().min(MAX_MESSAGE);
                    let _ = tx
                        .send(CoreInput::Message {
                            peer,
                            data: buf[..end].to_vec(),
                        })
                        .await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break 'read;
                }
            }
        }
    }
    let _ = tx.send(CoreInput::TcpClosed { conn }).await;
    drop(out_tx);
    let _ = writer.await;
}

async fn config_watcher(path: PathBuf, mut current: Config, tx: mpsc::Sender<CoreInput>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        match Config::load(&path) {
            Ok(next) if next != current => {
                if next.policies != current.policies || next.namespace != current.namespace {
                    let (table, warnings) = PolicyTable::build(&next);
                    for w in warnings {
                        tracing::warn!("{w}");
                    }
                    tracing::info!(identities = table.len(), "policies reloaded");
                    if tx.send(CoreInput::Policies(Arc::new(table))).await.is_err() {
                        return;
                    }
                }
                let mut settings = next.clone();
                settings.policies = current.policies.clone();
                settings.namespace = current.namespace.clone();
                if settings != current {
                    tracing::warn!(
                        "server settings changed in the config file; they apply after a restart"
                    );
                }
                current = next;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "config reload failed; keeping the previous policies")
            }
        }
    }
}

async fn core_loop(
    mut core: Srs,
    mut rx: mpsc::Receiver<CoreInput>,
    udp: Arc<UdpSocket>,
    shared: Arc<Shared>,
) {
    let mut calls: HashMap<CallRef, mpsc::UnboundedSender<CallCmd>> = HashMap::new();
    let mut tcp: HashMap<u64, mpsc::Sender<Vec<u8>>> = HashMap::new();
    loop {
        let timeout = core.poll_timeout().map(tokio::time::Instant::from_std);
        let actions = tokio::select! {
            input = rx.recv() => {
                let Some(input) = input else { return };
                let now = Instant::now();
                match input {
                    CoreInput::Message { peer, data } => core.handle_message(peer, &data, now),
                    CoreInput::MediaEnded { call, reason } => {
                        calls.remove(&call);
                        core.media_ended(call, reason, now)
                    }
                    CoreInput::Policies(p) => { core.set_policies(p); Vec::new() }
                    CoreInput::TcpOpen { conn, tx } => { tcp.insert(conn, tx); Vec::new() }
                    CoreInput::TcpClosed { conn } => { tcp.remove(&conn); Vec::new() }
                    CoreInput::Drain => { core.drain(); Vec::new() }
                    CoreInput::Overloaded(o) => { core.set_overloaded(o); Vec::new() }
                    CoreInput::HangUpAll => core.hang_up_all(now),
                }
            }
            _ = async { match timeout { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                core.handle_timeout(Instant::now())
            }
        };
        for action in actions {
            match action {
                Action::Send { peer, data } => match peer.transport {
                    Transport::Udp => {
                        if let Err(e) = udp.send_to(&data, peer.addr).await {
                            tracing::warn!(to = %peer.addr, error = %e, "SIP UDP send failed");
                        }
                    }
                    Transport::Tcp => match tcp.get(&peer.conn) {
                        Some(tx) => {
                            let _ = tx.send(data).await;
                        }
                        None => {
                            tracing::warn!(to = %peer.addr, "TCP connection gone; response dropped")
                        }
                    },
                },
                Action::Start(start) => {
                    let call = start.call;
                    match start_call(*start, shared.clone()) {
                        Ok(tx) => {
                            calls.insert(call, tx);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start recording media");
                            shared.metrics.error("media-start");
                            let _ = shared.core_tx.try_send(CoreInput::MediaEnded {
                                call,
                                reason: EndReason::MediaFailed,
                            });
                        }
                    }
                }
                Action::Update {
                    call,
                    streams,
                    metadata,
                } => {
                    if let Some(tx) = calls.get(&call) {
                        let _ = tx.send(CallCmd::Update { streams, metadata });
                    }
                }
                Action::Stop { call, reason } => {
                    if let Some(tx) = calls.remove(&call) {
                        let _ = tx.send(CallCmd::Stop(reason));
                    }
                }
                Action::Outcome(o) => {
                    shared
                        .metrics
                        .calls
                        .get_or_create(&OutcomeLabel {
                            outcome: o.as_str().into(),
                        })
                        .inc();
                }
            }
        }
        shared.metrics.active_calls.set(calls.len() as i64);
    }
}

#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("bind RTP port {0}: {1}")]
    Bind(u16, std::io::Error),
    #[error("spool file {0}: {1}")]
    Spool(PathBuf, std::io::Error),
    #[error(transparent)]
    Recording(#[from] RecordingError),
}

fn bind_rtp(shared: &Shared, port: u16) -> Result<StdUdpSocket, StartError> {
    let sock = StdUdpSocket::bind((shared.config.rtp.bind, port))
        .map_err(|e| StartError::Bind(port, e))?;
    sock.set_nonblocking(true)
        .map_err(|e| StartError::Bind(port, e))?;
    Ok(sock)
}

/// Binds the call's RTP sockets, opens its spool file and spawns its media task.
fn start_call(
    start: StartRecording,
    shared: Arc<Shared>,
) -> Result<mpsc::UnboundedSender<CallCmd>, StartError> {
    let mut sockets = Vec::new();
    for s in start.streams.iter().filter(|s| s.port != 0) {
        sockets.push((s.port, bind_rtp(&shared, s.port)?));
    }
    let id = uuid::Uuid::now_v7().to_string();
    let audio_path = shared.config.spool.dir.join(format!("{id}.opus"));
    let file =
        std::fs::File::create(&audio_path).map_err(|e| StartError::Spool(audio_path.clone(), e))?;
    let writer = SpoolWriter {
        file: BufWriter::with_capacity(16 * 1024, file),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let now = Instant::now();
    let serial = uuid::Uuid::parse_str(&id).map_or(0, |u| u.as_u128() as u32);
    let keep = start.policy.keep_code.as_ref().map(|code| KeepSpec {
        code: code.clone(),
        user_labels: user_labels(&start),
    });
    let recording = Recording::new(writer, &start.streams, &shared.audio, serial, keep, now)?;
    tracing::info!(
        id,
        user = start.policy.user,
        call_id = start.sip_call_id,
        "recording started"
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let task = MediaTask {
        id,
        audio_path,
        start,
        recording,
        sockets,
        started: jiff::Timestamp::now(),
        kept_noted: false,
    };
    write_partial(&task, &shared);
    tokio::spawn(media_task(task, rx, shared));
    Ok(tx)
}

/// Labels of the streams the recorded user sends, from the metadata's stream associations;
/// `None` when the metadata does not associate them (then any stream may carry the keep code).
fn user_labels(start: &StartRecording) -> Option<Vec<String>> {
    let md = &start.metadata;
    let user = md.participants.iter().find(|p| {
        p.aor
            .as_deref()
            .and_then(crate::identity::normalize)
            .is_some_and(|k| k.to_string() == start.matched_identity)
    })?;
    let labels: Vec<String> = user
        .send
        .iter()
        .filter_map(|sid| md.streams.iter().find(|s| s.id == *sid)?.label.clone())
        .collect();
    (!labels.is_empty()).then_some(labels)
}

struct MediaTask {
    id: String,
    audio_path: PathBuf,
    start: StartRecording,
    recording: Recording<SpoolWriter>,
    sockets: Vec<(u16, StdUdpSocket)>,
    started: jiff::Timestamp,
    /// Whether the partial record already says the keep code was keyed.
    kept_noted: bool,
}

async fn media_task(
    mut t: MediaTask,
    mut rx: mpsc::UnboundedReceiver<CallCmd>,
    shared: Arc<Shared>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let timeout = Duration::from_secs(shared.config.rtp.timeout_seconds);
    let mut buf = vec![0u8; 2048];
    let reason = loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(CallCmd::Update { streams, metadata }) => {
                    t.start.metadata = *metadata;
                    let now = Instant::now();
                    if let Err(e) = t.recording.update(&streams, now) {
                        tracing::error!(id = t.id, error = %e, "re-negotiation failed");
                    }
                    t.sockets.retain(|(p, _)| streams.iter().any(|s| s.port == *p));
                    for s in streams.iter().filter(|s| s.port != 0) {
                        if !t.sockets.iter().any(|(p, _)| *p == s.port) {
                            match bind_rtp(&shared, s.port) {
                                Ok(sock) => t.sockets.push((s.port, sock)),
                                Err(e) => tracing::error!(id = t.id, error = %e, "cannot bind new stream"),
                            }
                        }
                    }
                    t.start.streams = streams;
                    write_partial(&t, &shared);
                }
                Some(CallCmd::Stop(reason)) => break reason,
                None => break EndReason::Shutdown,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                for (port, sock) in &t.sockets {
                    loop {
                        match sock.recv_from(&mut buf) {
                            Ok((n, from)) => t.recording.on_packet(*port, &buf[..n], from, now),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                tracing::debug!(error = %e, "RTP receive");
                                break;
                            }
                        }
                    }
                }
                if !t.kept_noted && t.recording.kept_at().is_some() {
                    t.kept_noted = true;
                    write_partial(&t, &shared);
                }
                if let Err(e) = t.recording.tick(now) {
                    tracing::error!(id = t.id, error = %e, "encoding failed; ending the recording");
                    shared.metrics.error("encode");
                    let _ = shared.core_tx.send(CoreInput::MediaEnded { call: t.start.call, reason: EndReason::MediaFailed }).await;
                    break EndReason::MediaFailed;
                }
                if t.recording.silent_for(now).is_some_and(|d| d >= timeout) {
                    tracing::warn!(id = t.id, "RTP timeout; finalising");
                    let _ = shared.core_tx.send(CoreInput::MediaEnded { call: t.start.call, reason: EndReason::MediaTimeout }).await;
                    break EndReason::MediaTimeout;
                }
            }
        }
    };
    drop(std::mem::take(&mut t.sockets));
    if let Err(e) = finalise(t, reason, &shared) {
        tracing::error!(error = %e, "finalising a recording failed; its spool file is kept");
        shared.metrics.error("finalise");
    }
}

/// Closes the Ogg stream, writes the JSON record into the spool, and queues both for upload.
/// The record of a recording as far as it is known when the call starts; finalising (or crash
/// recovery) fills in the end, the audio and the statistics.
fn initial_record(
    start: &StartRecording,
    id: &str,
    started: jiff::Timestamp,
    shared: &Shared,
) -> RecordingRecord {
    let policy = &start.policy;
    let day = started.to_zoned(jiff::tz::TimeZone::UTC).date();
    let keys = shared
        .store
        .keys(policy.retention_days, &start.namespace, day, id);
    let mut codecs: Vec<&'static str> = start
        .streams
        .iter()
        .filter_map(|s| s.codec.map(|(_, c)| c.name()))
        .collect();
    codecs.dedup();
    RecordingRecord {
        schema: 1,
        id: id.to_string(),
        namespace: start.namespace.clone(),
        user: policy.user.clone(),
        policy: policy.name.clone(),
        mode: policy.mode,
        matched_identity: start.matched_identity.clone(),
        participants: record::participants(&start.metadata, &[]),
        siprec_session_id: start.metadata.session_id.clone(),
        sip_call_ids: vec![start.sip_call_id.clone()],
        correlation: start
            .metadata
            .correlation
            .clone()
            .into_iter()
            .chain(start.correlation.clone())
            .collect(),
        start: started,
        end: started,
        duration_seconds: 0.0,
        codecs,
        pauses: Vec::new(),
        streams: Vec::new(),
        audio: AudioObject {
            key: keys.audio.to_string(),
            content_type: "audio/ogg; codecs=opus",
            size: 0,
            sha256: String::new(),
            sample_rate: crate::recording::mixing_rate(&start.streams),
            channels: 2,
        },
        retention_days: policy.retention_days,
        retain_until: started,
        kept_at: None,
        complete: false,
        end_reason: EndReason::Crashed,
        recorder: shared.recorder_name.clone(),
    }
}

fn retain_until(end: jiff::Timestamp, days: u32) -> jiff::Timestamp {
    end.checked_add(jiff::SignedDuration::from_hours(24 * days as i64))
        .unwrap_or(end)
}

fn partial_path(audio: &Path) -> PathBuf {
    audio.with_extension("partial.json")
}

/// Writes a record atomically: a `.json` in the spool means "ready to upload".
fn write_record(path: &Path, record: &impl serde::Serialize) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

/// The partial record beside a recording in progress, for recovery after a crash.
fn write_partial(t: &MediaTask, shared: &Shared) {
    let mut record = initial_record(&t.start, &t.id, t.started, shared);
    record.kept_at = t.recording.kept_at().map(|s| offset(t.started, s));
    if let Err(e) = write_record(&partial_path(&t.audio_path), &record) {
        tracing::warn!(id = t.id, error = %e, "cannot write the partial record");
    }
}

fn offset(start: jiff::Timestamp, seconds: f64) -> jiff::Timestamp {
    start
        .checked_add(jiff::SignedDuration::from_secs_f64(seconds))
        .unwrap_or(start)
}

/// Closes the Ogg stream, writes the JSON record into the spool, and queues both for upload.
fn finalise(t: MediaTask, reason: EndReason, shared: &Shared) -> Result<(), RecordingError> {
    let ended = Instant::now();
    let mut record = initial_record(&t.start, &t.id, t.started, shared);
    let (mut writer, summary) = t.recording.finish(ended)?;
    writer.flush()?;
    let partial = partial_path(&t.audio_path);
    if t.start.policy.mode == crate::config::Mode::OnDemand && summary.kept_at.is_none() {
        // The user did not ask to keep this call: its audio is destroyed, nothing is uploaded.
        drop(writer);
        std::fs::remove_file(&t.audio_path)?;
        let _ = std::fs::remove_file(&partial);
        shared
            .metrics
            .recordings
            .get_or_create(&OutcomeLabel {
                outcome: "not-kept".into(),
            })
            .inc();
        tracing::info!(
            id = t.id,
            user = t.start.policy.user,
            "on-demand call ended without the keep code; discarded"
        );
        return Ok(());
    }
    let end = jiff::Timestamp::now();
    shared
        .metrics
        .packets_received
        .inc_by(summary.streams.iter().map(|s| s.stats.received).sum());
    shared
        .metrics
        .packets_lost
        .inc_by(summary.streams.iter().map(|s| s.stats.lost).sum());
    record.participants = record::participants(&t.start.metadata, &summary.streams);
    record.codecs = summary.streams.iter().filter_map(|s| s.codec).collect();
    record.codecs.dedup();
    record.end = end;
    record.duration_seconds = summary.duration.as_secs_f64();
    record.pauses = summary.pauses;
    record.streams = summary.streams;
    record.audio.size = writer.bytes;
    record.audio.sha256 = hex::encode(writer.hasher.finalize_reset());
    record.audio.sample_rate = summary.sample_rate;
    record.retain_until = retain_until(end, record.retention_days);
    record.kept_at = summary.kept_at.map(|s| offset(t.started, s));
    record.complete = reason == EndReason::Bye;
    record.end_reason = reason;
    let record_path = t.audio_path.with_extension("json");
    write_record(&record_path, &record)?;
    let _ = std::fs::remove_file(&partial);
    shared
        .metrics
        .recordings
        .get_or_create(&OutcomeLabel {
            outcome: format!("{reason:?}").to_lowercase(),
        })
        .inc();
    tracing::info!(id = t.id, key = %record.audio.key, seconds = record.duration_seconds, "recording finished");
    enqueue(
        shared,
        t.audio_path,
        record_path,
        &record.audio.key,
        writer.bytes,
        ended,
    );
    Ok(())
}

fn enqueue(
    shared: &Shared,
    audio: PathBuf,
    record: PathBuf,
    audio_key: &str,
    bytes: u64,
    ended: Instant,
) {
    let keys = Keys {
        audio: object_store::path::Path::from(audio_key),
        record: object_store::path::Path::from(
            audio_key.trim_end_matches(".opus").to_string() + ".json",
        ),
    };
    shared.metrics.uploads_pending.inc();
    shared.metrics.spool_pending_bytes.inc_by(bytes as i64);
    let _ = shared.upload_tx.send(UploadJob {
        audio,
        record,
        keys,
        bytes,
        ended,
    });
}

/// A recording the previous process was taking when it died: its whole Ogg pages are kept and
/// uploaded as an incomplete recording with the metadata it had (unless it was an on-demand call
/// nobody asked to keep).
fn recover(partial: &Path, shared: &Shared) -> Result<(), RecoverError> {
    let audio = partial.with_extension("").with_extension("opus");
    let mut record: serde_json::Value = serde_json::from_slice(&std::fs::read(partial)?)?;
    let on_demand = record["mode"] == "OnDemand";
    let mut bytes = std::fs::read(&audio).unwrap_or_default();
    let granule = crate::ogg::repair(&mut bytes);
    let (Some(granule), false) = (granule, on_demand && record["keptAt"].is_null()) else {
        tracing::info!(file = %audio.display(), "nothing to recover from a crashed recording; removed");
        let _ = std::fs::remove_file(&audio);
        std::fs::remove_file(partial)?;
        return Ok(());
    };
    std::fs::write(&audio, &bytes)?;
    let seconds = granule as f64 / 48_000.0;
    let start: jiff::Timestamp = record["start"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .map_err(|_| RecoverError::Record)?;
    let end = offset(start, seconds);
    let days = record["retentionDays"].as_u64().unwrap_or(1) as u32;
    record["end"] = serde_json::json!(end);
    record["durationSeconds"] = serde_json::json!(seconds);
    record["retainUntil"] = serde_json::json!(retain_until(end, days));
    record["audio"]["size"] = serde_json::json!(bytes.len());
    record["audio"]["sha256"] = serde_json::json!(hex::encode(Sha256::digest(&bytes)));
    record["complete"] = serde_json::json!(false);
    record["endReason"] = serde_json::json!("crashed");
    let key = record["audio"]["key"]
        .as_str()
        .ok_or(RecoverError::Record)?
        .to_string();
    let record_path = audio.with_extension("json");
    write_record(&record_path, &record)?;
    std::fs::remove_file(partial)?;
    tracing::warn!(file = %audio.display(), seconds, "recovered a recording interrupted by a crash; uploading it marked incomplete");
    shared
        .metrics
        .recordings
        .get_or_create(&OutcomeLabel {
            outcome: "crashed".into(),
        })
        .inc();
    enqueue(
        shared,
        audio,
        record_path,
        &key,
        bytes.len() as u64,
        Instant::now(),
    );
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum RecoverError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("partial record: {0}")]
    Json(#[from] serde_json::Error),
    #[error("partial record lacks its start or key")]
    Record,
}

/// Finished recordings left in the spool by an earlier run (store outage, restart) are queued;
/// recordings interrupted by a crash are recovered first.
fn requeue_spool(shared: &Shared) {
    let Ok(dir) = std::fs::read_dir(&shared.config.spool.dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries
        .iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial.json"))
    {
        if path.with_extension("").with_extension("json").exists() {
            // Finished before the crash: the final record wins.
            let _ = std::fs::remove_file(path);
        } else if let Err(e) = recover(path, shared) {
            tracing::error!(file = %path.display(), error = %e, "cannot recover a crashed recording; left in place");
        }
    }
    for path in entries.iter().filter(|p| {
        p.extension().is_some_and(|e| e == "json")
            && !p.to_string_lossy().ends_with(".partial.json")
    }) {
        let audio = path.with_extension("opus");
        let key = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["audio"]["key"].as_str().map(str::to_string));
        match (key, std::fs::metadata(&audio)) {
            (Some(k), Ok(meta)) => {
                tracing::info!(file = %audio.display(), "re-queueing a finished recording from the spool");
                enqueue(shared, audio, path.clone(), &k, meta.len(), Instant::now());
            }
            _ => {
                tracing::warn!(file = %path.display(), "spool record without audio or key; left in place")
            }
        }
    }
}

async fn uploader(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<UploadJob>) {
    let metrics = shared.metrics.clone();
    let store = shared.store.clone();
    drop(shared);
    while let Some(job) = rx.recv().await {
        let mut backoff = Duration::from_millis(250);
        loop {
            match upload(&store, &job).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(file = %job.audio.display(), error = %e, retry_in = ?backoff, "upload failed; will retry");
                    metrics.error("upload");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
        metrics
            .upload_seconds
            .observe(job.ended.elapsed().as_secs_f64());
        metrics.uploads_pending.dec();
        metrics.spool_pending_bytes.dec_by(job.bytes as i64);
        for f in [&job.audio, &job.record] {
            if let Err(e) = std::fs::remove_file(f) {
                tracing::warn!(file = %f.display(), error = %e, "cannot remove uploaded spool file");
            }
        }
    }
}

/// Audio first, record last: a record in the store always has its audio.
async fn upload(store: &Store, job: &UploadJob) -> Result<(), StoreError> {
    store.put_file(&job.keys.audio, &job.audio).await?;
    store
        .put_bytes(&job.keys.record, std::fs::read(&job.record)?)
        .await?;
    Ok(())
}

/// Where a config file lives by default in the container image.
pub fn default_config_path() -> &'static Path {
    Path::new("/etc/opname/recorder.yaml")
}
