//! The core task: owns the SIPREC core, feeds it inputs and the time, and carries out its actions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::media::{CallCmd, start_call};
use super::{CoreInput, Shared};
use crate::log_limit::LogLimit;
use crate::metrics::OutcomeLabel;
use crate::siprec::{Action, CallRef, EndReason, Srs, Transport};

// Outsiders can make these happen at will (spoofed sources, peers that never read).
static SEND_FAILED: LogLimit = LogLimit::new();
static NOT_READING: LogLimit = LogLimit::new();
static GONE: LogLimit = LogLimit::new();

pub(super) async fn core_loop(
    mut core: Srs,
    mut rx: mpsc::Receiver<CoreInput>,
    udp: Arc<UdpSocket>,
    shared: Arc<Shared>,
) {
    let mut calls: HashMap<CallRef, mpsc::UnboundedSender<CallCmd>> = HashMap::new();
    let mut tcp: HashMap<u64, (mpsc::Sender<Vec<u8>>, Arc<tokio::sync::Notify>)> = HashMap::new();
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
                    CoreInput::TcpOpen { conn, tx, close } => { tcp.insert(conn, (tx, close)); Vec::new() }
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
                        if let Err(e) = udp.send_to(&data, peer.addr).await
                            && let Some(suppressed) = SEND_FAILED.check(Instant::now())
                        {
                            tracing::warn!(to = %peer.addr, error = %e, suppressed, "SIP UDP send failed");
                        }
                    }
                    // Over the connection the SBC opened (RFC 5923's reuse, TLS included).
                    Transport::Tcp | Transport::Tls => match tcp.get(&peer.conn) {
                        // Never wait on one peer: the core serves every call. A peer whose
                        // queue is full does not read its answers; it loses the connection.
                        Some((tx, close)) => {
                            if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(data) {
                                if let Some(suppressed) = NOT_READING.check(Instant::now()) {
                                    tracing::warn!(peer = %peer.addr, suppressed, "SIP over TCP: the peer does not read its responses; closing");
                                }
                                close.notify_one();
                                tcp.remove(&peer.conn);
                            }
                        }
                        None => {
                            if let Some(suppressed) = GONE.check(Instant::now()) {
                                tracing::warn!(to = %peer.addr, suppressed, "TCP connection gone; response dropped");
                            }
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
