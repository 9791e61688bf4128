//! SIP sockets: UDP datagrams and framed TCP streams, fed to the core task as messages.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;

use super::CoreInput;
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

pub(super) async fn tcp_acceptor(listener: TcpListener, tx: mpsc::Sender<CoreInput>) {
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
        let n = tokio::select! {
            read = rd.read(&mut chunk) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
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
