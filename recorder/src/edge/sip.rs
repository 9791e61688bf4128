//! SIP sockets: UDP datagrams and framed TCP streams, fed to the core task as messages.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opname_model::config::{Refuse, SipConfig};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

use super::CoreInput;
use super::tls::Tls;
use crate::log_limit::LogLimit;
use crate::protocol::sip::{Framing, MAX_MESSAGE, frame_stream};
use crate::siprec::{Peer, Transport};

pub(super) async fn udp_receiver(sock: Arc<UdpSocket>, tx: mpsc::Sender<CoreInput>) {
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

/// Open TCP connections, in all and per source address.
#[derive(Default)]
pub(super) struct Connections {
    total: usize,
    by_source: HashMap<IpAddr, usize>,
}

/// Holds one connection's place in [`Connections`] until dropped.
struct Slot {
    table: Arc<Mutex<Connections>>,
    source: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut t) = self.table.lock() {
            t.total = t.total.saturating_sub(1);
            if let Some(n) = t.by_source.get_mut(&self.source) {
                *n -= 1;
                if *n == 0 {
                    t.by_source.remove(&self.source);
                }
            }
        }
    }
}

/// A place for a new connection from `source`, if neither limit is reached.
fn admit(table: &Arc<Mutex<Connections>>, source: IpAddr, cfg: &SipConfig) -> Option<Slot> {
    let mut t = table.lock().ok()?;
    let from_source = t.by_source.get(&source).copied().unwrap_or(0);
    if t.total >= cfg.max_connections || from_source >= cfg.max_connections_per_source {
        return None;
    }
    t.total += 1;
    *t.by_source.entry(source).or_default() += 1;
    Some(Slot {
        table: table.clone(),
        source,
    })
}

/// How long one write to a TCP peer may take before the connection is given up.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a TLS handshake may take: a peer that opens connections and never finishes one
/// must not hold its places.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection ids, shared by the TCP and TLS listeners (the core tells connections apart by them).
static NEXT_CONN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// The places of the TCP and TLS listeners together (`sip.maxConnections` counts both).
pub(super) fn connection_table() -> Arc<Mutex<Connections>> {
    Arc::default()
}

/// Accepts SIP over TCP, or over TLS when `tls` is given, within the connection limits.
pub(super) async fn stream_acceptor(
    listener: TcpListener,
    tx: mpsc::Sender<CoreInput>,
    cfg: SipConfig,
    tls: Option<Arc<Tls>>,
    table: Arc<Mutex<Connections>>,
) {
    static TOO_MANY: LogLimit = LogLimit::new();
    static HANDSHAKE: LogLimit = LogLimit::new();
    loop {
        let Ok((stream, addr)) = listener.accept().await else {
            continue;
        };
        // A stranger's connection is not kept when it would get nothing anyway.
        if cfg.refuse == Refuse::Drop && !cfg.admits(addr.ip()) {
            continue;
        }
        let Some(slot) = admit(&table, addr.ip().to_canonical(), &cfg) else {
            if let Some(suppressed) = TOO_MANY.check(std::time::Instant::now()) {
                tracing::warn!(peer = %addr, suppressed, "SIP over TCP: too many connections; closed");
            }
            continue;
        };
        let conn = NEXT_CONN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let idle = Duration::from_secs(cfg.idle_seconds.max(1));
        let tx = tx.clone();
        match &tls {
            None => {
                tokio::spawn(connection(
                    stream,
                    addr,
                    conn,
                    Transport::Tcp,
                    tx,
                    idle,
                    slot,
                ));
            }
            Some(tls) => {
                let Some(config) = tls.current() else {
                    continue;
                };
                tokio::spawn(async move {
                    let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, accept).await {
                        Ok(Ok(stream)) => {
                            connection(stream, addr, conn, Transport::Tls, tx, idle, slot).await;
                        }
                        Ok(Err(e)) => {
                            if let Some(suppressed) = HANDSHAKE.check(std::time::Instant::now()) {
                                tracing::warn!(peer = %addr, error = %e, suppressed, "SIP over TLS: handshake refused");
                            }
                        }
                        Err(_) => {
                            tracing::debug!(peer = %addr, "SIP over TLS: handshake timed out")
                        }
                    }
                });
            }
        }
    }
}

/// One SIP connection (TCP, or TLS after the handshake): framed messages to the core, its
/// answers back, closed when idle, when the peer stops reading, or when the core says so.
async fn connection<S>(
    stream: S,
    addr: SocketAddr,
    conn: u64,
    transport: Transport,
    tx: mpsc::Sender<CoreInput>,
    idle: Duration,
    _slot: Slot,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(64);
    let close = Arc::new(tokio::sync::Notify::new());
    if tx
        .send(CoreInput::TcpOpen {
            conn,
            tx: out_tx.clone(),
            close: close.clone(),
        })
        .await
        .is_err()
    {
        return;
    }
    let closer = close.clone();
    let writer = tokio::spawn(async move {
        while let Some(data) = out_rx.recv().await {
            // A peer that stops reading must not hold the writer (and its queue) forever.
            if !matches!(
                tokio::time::timeout(WRITE_TIMEOUT, async {
                    wr.write_all(&data).await?;
                    wr.flush().await
                })
                .await,
                Ok(Ok(()))
            ) {
                closer.notify_one();
                break;
            }
        }
    });
    let peer = Peer {
        transport,
        addr,
        conn,
    };
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16 * 1024];
    'read: loop {
        let n = tokio::select! {
            read = tokio::time::timeout(idle, rd.read(&mut chunk)) => match read {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(n)) => n,
                Err(_) => {
                    tracing::debug!(peer = %addr, "SIP over TCP: idle; closing");
                    break;
                }
            },
            () = close.notified() => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match frame_stream(&buf) {
                Framing::Incomplete => break,
                Framing::KeepAlive { len, pong } => {
                    buf.drain(..len);
                    if pong {
                        let _ = out_tx.try_send(b"\r\n".to_vec());
                    }
                }
                Framing::Message(len) => {
                    let data: Vec<u8> = buf.drain(..len).collect();
                    if tx.send(CoreInput::Message { peer, data }).await.is_err() {
                        break 'read;
                    }
                }
                Framing::Invalid(why) => {
                    static UNFRAMED: LogLimit = LogLimit::new();
                    if let Some(suppressed) = UNFRAMED.check(std::time::Instant::now()) {
                        tracing::warn!(peer = %addr, why, suppressed, "SIP over TCP cannot be framed; closing");
                    }
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
