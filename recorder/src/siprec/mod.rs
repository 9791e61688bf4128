//! The Session Recording Server core (RFC 7866): SIP transactions, dialogs and the recording
//! decision, as a sans-IO state machine.
//!
//! Fed received messages, media events and the time, it returns [`Action`]s: bytes to send and
//! recordings to start, update or stop. Sockets, timers and media live in `server`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::body::{self, BodyError};
pub use opname_model::record::{Channel, EndReason};
use policy::{ActivePolicy, PolicyTable};
use ports::PortPool;
pub use ports::{AnyPort, PortHolder};

mod admission;
mod dialog;
pub mod policy;
mod ports;
mod streams;
mod transaction;
use crate::protocol::metadata::{self, Metadata};
use crate::protocol::sdp::{self, Codec, Offer};
use crate::protocol::sip::{self, Message, ReplyHeaders, Start};

/// RFC 3261 timer values.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
const TIMEOUT_64T1: Duration = Duration::from_secs(32);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
}

/// Where a message came from and where its answer goes; `conn` names a TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
    pub conn: u64,
}

/// The core's handle for one recording session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallRef(pub u64);

/// One negotiated m-line as the media side needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct MediaStream {
    pub index: usize,
    /// Local RTP port; 0 when the m-line was rejected.
    pub port: u16,
    pub codec: Option<(u8, Codec)>,
    pub telephone_event: Option<u8>,
    pub paused: bool,
    pub label: Option<String>,
    pub channel: Channel,
    /// RTP is taken only from this address, the one the offer's `c=` names; `None`: from the
    /// first source that sends (latching, for SBCs behind NAT), kept for the call.
    pub source: Option<IpAddr>,
    /// SRTP (SDES): the offer's suite and key the stream's packets are decrypted with.
    pub srtp: Option<crate::protocol::crypto::Crypto>,
}

#[derive(Clone, Debug)]
pub struct StartRecording {
    pub call: CallRef,
    pub policy: Arc<ActivePolicy>,
    pub matched_identity: String,
    pub namespace: String,
    pub sip_call_id: String,
    pub metadata: Metadata,
    pub streams: Vec<MediaStream>,
    /// Correlation ids from SIP headers (Cisco-Guid, Session-ID, X-UCID …).
    pub correlation: BTreeMap<String, String>,
}

/// What happened to a new recording session, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Recorded,
    NotRecorded,
    Busy,
    Unusable,
    BadRequest,
    /// From a source outside the allow-list.
    Refused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Recorded => "recorded",
            Outcome::NotRecorded => "not-recorded",
            Outcome::Busy => "busy",
            Outcome::Unusable => "unusable",
            Outcome::BadRequest => "bad-request",
            Outcome::Refused => "refused",
        }
    }
}

#[derive(Debug)]
pub enum Action {
    Send {
        peer: Peer,
        data: Vec<u8>,
    },
    Start(Box<StartRecording>),
    Update {
        call: CallRef,
        streams: Vec<MediaStream>,
        metadata: Box<Metadata>,
    },
    Stop {
        call: CallRef,
        reason: EndReason,
    },
    Outcome(Outcome),
}

#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// `host:port` for Contact and Via.
    pub sip_host: String,
    pub rtp_advertise: IpAddr,
    pub port_min: u16,
    pub port_max: u16,
    pub max_calls: usize,
    pub retry_after: u32,
    /// RTP from the first source instead of the offer's address (`rtp.latching`).
    pub latching: bool,
    /// `host:port;transport=tls` for the Contact of dialogs that came over TLS, if it listens.
    pub tls_host: Option<String>,
    /// Plain RTP accepted on calls signalled over TLS (`rtp.plainWithTls`).
    pub plain_with_tls: bool,
    /// Who may send SIP (`allow`, `refuse` of the configuration; the rest is the edge's).
    pub sources: opname_model::config::SipConfig,
}

#[derive(Debug)]
struct Retransmit {
    data: Vec<u8>,
    next: Instant,
    interval: Duration,
    deadline: Instant,
}

impl Retransmit {
    fn new(data: Vec<u8>, now: Instant) -> Self {
        Self {
            data,
            next: now + T1,
            interval: T1,
            deadline: now + TIMEOUT_64T1,
        }
    }

    fn backoff(&mut self, now: Instant) {
        self.interval = (self.interval * 2).min(T2);
        self.next = now + self.interval;
    }
}

#[derive(Debug)]
struct ServerTxn {
    response: Vec<u8>,
    peer: Peer,
    expires: Instant,
    /// A non-2xx final response to INVITE over UDP, resent until ACK (timer G).
    retransmit: Option<Retransmit>,
}

#[derive(Debug)]
struct ClientTxn {
    branch: String,
    peer: Peer,
    retransmit: Retransmit,
}

#[derive(Debug)]
struct Dialog {
    call: CallRef,
    local_tag: String,
    /// Our side as From of requests we send (the INVITE's To plus our tag).
    local: String,
    /// The SRC as To of requests we send (the INVITE's From).
    remote: String,
    /// The SRC's tag: with Call-ID and `local_tag` it names the dialog (RFC 3261 §12).
    remote_tag: Option<String>,
    target: String,
    route_set: Vec<String>,
    peer: Peer,
    remote_cseq: u32,
    local_cseq: u32,
    offer: Offer,
    streams: Vec<MediaStream>,
    metadata: Metadata,
    session_version: u64,
    answer: String,
    /// Our 2xx to INVITE, resent until ACK (RFC 3261 §13.3.1.4).
    pending_2xx: Option<(u32, Retransmit)>,
    /// Branch of the INVITE that created or last modified the session, for CANCEL.
    invite_branch: Option<String>,
}

/// A response to send: status line, To tag, extra headers and body.
struct Reply<'a> {
    status: u16,
    reason: &'a str,
    to_tag: Option<&'a str>,
    extra: &'a [(&'a str, &'a str)],
    body: Option<(&'a str, &'a [u8])>,
}

impl Reply<'static> {
    /// A bare 200 OK.
    const OK: Self = Reply {
        status: 200,
        reason: "OK",
        to_tag: None,
        extra: &[],
        body: None,
    };
    /// No such dialog or transaction (RFC 3261 §12.2.2).
    const NO_DIALOG: Self = Reply {
        status: 481,
        reason: "Call/Transaction Does Not Exist",
        to_tag: Some("opname"),
        extra: &[],
        body: None,
    };
}

/// The recording server core. See the module docs.
pub struct Srs {
    cfg: CoreConfig,
    policies: Arc<PolicyTable>,
    dialogs: HashMap<String, Dialog>,
    txns: transaction::Transactions,
    clients: Vec<ClientTxn>,
    ports: PortPool,
    draining: bool,
    /// Set by the edge while the process uses more CPU than it may: new sessions get 503.
    overloaded: bool,
    /// Keys the tags and branches: a keyed hash of a counter, so that no tag tells the next one.
    tags: std::hash::RandomState,
    counter: u64,
    out: Vec<Action>,
}

/// Vendor correlation headers worth keeping in the record.
const CORRELATION_HEADERS: &[&str] = &[
    "Cisco-Guid",
    "Session-ID",
    "X-UCID",
    "X-Call-Sid",
    "X-CID",
    "P-Charging-Vector",
];

impl Srs {
    /// `tags` keys the tags and branches (random keys from the edge: dialog tags must not be
    /// guessable, since a tag and a Call-ID are all an in-dialog request needs).
    pub fn new(cfg: CoreConfig, policies: Arc<PolicyTable>, tags: std::hash::RandomState) -> Self {
        Self {
            ports: PortPool::new(cfg.port_min, cfg.port_max),
            cfg,
            policies,
            dialogs: HashMap::new(),
            txns: transaction::Transactions::default(),
            clients: Vec::new(),
            draining: false,
            overloaded: false,
            tags,
            counter: 0,
            out: Vec::new(),
        }
    }

    /// Ports come from `holder` (the edge binds them) instead of being taken on trust.
    pub fn with_ports(mut self, holder: Box<dyn PortHolder>) -> Self {
        self.ports.set_holder(holder);
        self
    }

    pub fn set_policies(&mut self, policies: Arc<PolicyTable>) {
        self.policies = policies;
    }

    pub fn active_calls(&self) -> usize {
        self.dialogs.len()
    }

    /// Server transactions kept for retransmissions (at most `Transactions::MAX`).
    pub fn transactions(&self) -> usize {
        self.txns.len()
    }

    /// Stops accepting new sessions (503); active ones continue.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// CPU overload as measured by the edge: while set, new sessions get 503 so that the calls
    /// being recorded keep their CPU.
    pub fn set_overloaded(&mut self, overloaded: bool) {
        self.overloaded = overloaded;
    }

    /// Keying for the answer's `a=crypto` lines. It protects nothing (the recorder sends no
    /// media), so a keyed hash of the counter serves; it is never reused.
    fn answer_key(&mut self) -> [u8; 30] {
        use std::hash::BuildHasher;
        let mut key = [0u8; 30];
        for chunk in key.chunks_mut(8) {
            self.counter += 1;
            let word = self.tags.hash_one(self.counter).to_be_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        key
    }

    fn unique(&mut self) -> String {
        use std::hash::BuildHasher;
        self.counter += 1;
        format!("{:016x}", self.tags.hash_one(self.counter))
    }

    fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    /// One received datagram or framed stream message.
    pub fn handle_message(&mut self, peer: Peer, raw: &[u8], now: Instant) -> Vec<Action> {
        // Before anything of the message is read: a stranger learns nothing, not even whether
        // a user is recorded.
        if !self.cfg.sources.admits(peer.addr.ip()) {
            self.refuse(peer, raw);
            return self.take();
        }
        match sip::parse(raw, peer.transport == Transport::Udp) {
            Ok(mut msg) => match msg.start {
                Start::Request { .. } => {
                    msg.received_from(peer.addr);
                    self.on_request(peer, &msg, now)
                }
                Start::Response { .. } => self.on_response(&msg),
            },
            Err(e) => {
                static MALFORMED: crate::log_limit::LogLimit = crate::log_limit::LogLimit::new();
                if let Some(suppressed) = MALFORMED.check(now) {
                    tracing::warn!(peer = %peer.addr, error = %e, suppressed, "malformed SIP message");
                }
                if let Some(mut h) = ReplyHeaders::salvage(raw) {
                    if let Some(top) = h.via.first_mut() {
                        *top = crate::protocol::via::stamp_via(top, peer.addr);
                    }
                    let reason = match e {
                        sip::ParseError::Truncated => "Bad Request (Content-Length exceeds body)",
                        sip::ParseError::Malformed(_) => "Bad Request",
                    };
                    let data = sip::response(&h, 400, reason, Some("opname"), &[], None);
                    self.out.push(Action::Send { peer, data });
                }
                self.out.push(Action::Outcome(Outcome::BadRequest));
            }
        }
        self.take()
    }

    /// A message from outside the allow-list: 403 (to requests other than ACK, so that nothing
    /// answers an answer) or nothing.
    fn refuse(&mut self, peer: Peer, raw: &[u8]) {
        self.out.push(Action::Outcome(Outcome::Refused));
        let answerless = raw.starts_with(b"SIP/") || raw.starts_with(b"ACK ");
        if self.cfg.sources.refuse == opname_model::config::Refuse::Drop || answerless {
            return;
        }
        if let Some(mut h) = ReplyHeaders::salvage(raw) {
            if let Some(top) = h.via.first_mut() {
                *top = crate::protocol::via::stamp_via(top, peer.addr);
            }
            let data = sip::response(&h, 403, "Forbidden", Some("opname"), &[], None);
            self.out.push(Action::Send { peer, data });
        }
    }

    /// The media side ended a recording (RTP timeout, socket failure): hang up.
    pub fn media_ended(&mut self, call: CallRef, reason: EndReason, now: Instant) -> Vec<Action> {
        if let Some(id) = self.call_id_of(call) {
            self.hang_up(&id, reason, now);
        }
        self.take()
    }

    /// Ends every active session (shutdown after the drain grace).
    pub fn hang_up_all(&mut self, now: Instant) -> Vec<Action> {
        let ids: Vec<String> = self.dialogs.keys().cloned().collect();
        for id in ids {
            self.hang_up(&id, EndReason::Shutdown, now);
        }
        self.take()
    }

    /// The next instant [`Srs::handle_timeout`] has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let txns = self.txns.next_due();
        let dialogs = self
            .dialogs
            .values()
            .filter_map(|d| d.pending_2xx.as_ref().map(|(_, r)| r.next.min(r.deadline)));
        let clients = self
            .clients
            .iter()
            .map(|c| c.retransmit.next.min(c.retransmit.deadline));
        txns.into_iter().chain(dialogs).chain(clients).min()
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        self.txns.run(now, &mut self.out);
        let mut unacked = Vec::new();
        for (id, d) in &mut self.dialogs {
            if let Some((_, r)) = &mut d.pending_2xx {
                if r.deadline <= now {
                    unacked.push(id.clone());
                } else if r.next <= now {
                    self.out.push(Action::Send {
                        peer: d.peer,
                        data: r.data.clone(),
                    });
                    r.backoff(now);
                }
            }
        }
        for id in unacked {
            tracing::warn!(call_id = %id, "no ACK for 2xx within 64*T1; hanging up");
            self.hang_up(&id, EndReason::NoAck, now);
        }
        self.clients.retain(|c| c.retransmit.deadline > now);
        for c in &mut self.clients {
            if c.retransmit.next <= now {
                self.out.push(Action::Send {
                    peer: c.peer,
                    data: c.retransmit.data.clone(),
                });
                c.retransmit.backoff(now);
            }
        }
        self.take()
    }
}
