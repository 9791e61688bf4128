//! The Session Recording Server core (RFC 7866): SIP transactions, dialogs and the recording
//! decision, as a sans-IO state machine.
//!
//! Fed received messages, media events and the time, it returns [`Action`]s: bytes to send and
//! recordings to start, update or stop. Sockets, timers and media live in `server`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::body::{self, BodyError};
pub use opname_model::record::{Channel, EndReason};
use policy::{ActivePolicy, PolicyTable};

pub mod policy;
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
}

impl Transport {
    fn via_name(self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
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
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Recorded => "recorded",
            Outcome::NotRecorded => "not-recorded",
            Outcome::Busy => "busy",
            Outcome::Unusable => "unusable",
            Outcome::BadRequest => "bad-request",
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
}

/// Even RTP ports handed out round-robin, so a port is reused as late as possible and stray
/// packets of an ended call do not land in a new one.
#[derive(Debug)]
struct PortPool {
    min: u16,
    count: u16,
    next: u16,
    used: BTreeSet<u16>,
}

impl PortPool {
    fn new(min: u16, max: u16) -> Self {
        let min = min + (min % 2);
        Self {
            min,
            count: (max.saturating_sub(min) / 2).max(1),
            next: 0,
            used: BTreeSet::new(),
        }
    }

    fn alloc(&mut self) -> Option<u16> {
        for _ in 0..self.count {
            let port = self.min + 2 * self.next;
            self.next = (self.next + 1) % self.count;
            if self.used.insert(port) {
                return Some(port);
            }
        }
        None
    }

    fn free(&mut self, port: u16) {
        self.used.remove(&port);
    }
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

/// The recording server core. See the module docs.
pub struct Srs {
    cfg: CoreConfig,
    policies: Arc<PolicyTable>,
    dialogs: HashMap<String, Dialog>,
    txns: HashMap<String, ServerTxn>,
    clients: Vec<ClientTxn>,
    ports: PortPool,
    draining: bool,
    /// Set by the edge while the process uses more CPU than it may: new sessions get 503.
    overloaded: bool,
    seed: u64,
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
    /// `seed` makes tags and branches unique across restarts.
    pub fn new(cfg: CoreConfig, policies: Arc<PolicyTable>, seed: u64) -> Self {
        Self {
            ports: PortPool::new(cfg.port_min, cfg.port_max),
            cfg,
            policies,
            dialogs: HashMap::new(),
            txns: HashMap::new(),
            clients: Vec::new(),
            draining: false,
            overloaded: false,
            seed,
            counter: 0,
            out: Vec::new(),
        }
    }

    pub fn set_policies(&mut self, policies: Arc<PolicyTable>) {
        self.policies = policies;
    }

    pub fn active_calls(&self) -> usize {
        self.dialogs.len()
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

    fn unique(&mut self) -> String {
        self.counter += 1;
        format!("{:x}{:x}", self.seed, self.counter)
    }

    fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.out)
    }

    /// One received datagram or framed stream message.
    pub fn handle_message(&mut self, peer: Peer, raw: &[u8], now: Instant) -> Vec<Action> {
        match sip::parse(raw, peer.transport == Transport::Udp) {
            Ok(msg) => match msg.start {
                Start::Request { .. } => self.on_request(peer, &msg, now),
                Start::Response { .. } => self.on_response(&msg),
            },
            Err(e) => {
                tracing::warn!(peer = %peer.addr, error = %e, "malformed SIP message");
                if let Some(h) = ReplyHeaders::salvage(raw) {
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

    fn txn_key(msg: &Message, method: &str) -> String {
        match msg.branch() {
            Some(b) if b.starts_with("z9hG4bK") => format!("{b}|{method}"),
            // RFC 2543 peers: no magic cookie, match on what identifies the request.
            _ => format!(
                "{}|{}|{}|{method}",
                msg.call_id(),
                msg.cseq().map_or(0, |c| c.0),
                msg.from_tag().unwrap_or_default()
            ),
        }
    }

    fn reply(&mut self, peer: Peer, msg: &Message, r: Reply<'_>, now: Instant) {
        let Reply {
            status,
            reason,
            to_tag,
            extra,
            body,
        } = r;
        let data = sip::response(&ReplyHeaders::of(msg), status, reason, to_tag, extra, body);
        let method = msg.cseq().map_or("", |c| c.1).to_string();
        if status >= 200 {
            let retransmit =
                (status >= 300 && method == "INVITE" && peer.transport == Transport::Udp)
                    .then(|| Retransmit::new(data.clone(), now));
            self.txns.insert(
                Self::txn_key(msg, &method),
                ServerTxn {
                    response: data.clone(),
                    peer,
                    expires: now + TIMEOUT_64T1,
                    retransmit,
                },
            );
        }
        self.out.push(Action::Send { peer, data });
    }

    fn on_request(&mut self, peer: Peer, msg: &Message, now: Instant) {
        let Some(method) = msg.method().cloned() else {
            return;
        };
        let cseq_method = msg.cseq().map_or("", |c| c.1).to_ascii_uppercase();
        if method == rsip::Method::Ack {
            self.on_ack(msg);
            return;
        }
        // A retransmitted request gets the response it got before.
        if let Some(t) = self.txns.get(&Self::txn_key(msg, &cseq_method)) {
            let data = t.response.clone();
            self.out.push(Action::Send { peer, data });
            return;
        }
        if method == rsip::Method::Invite
            && let Some(d) = self.dialogs.get(msg.call_id())
            && d.invite_branch.is_some()
            && d.invite_branch.as_deref() == msg.branch()
        {
            // The 2xx of an INVITE lives in the dialog, not the transaction table.
            if let Some((_, r)) = &d.pending_2xx {
                let data = r.data.clone();
                self.out.push(Action::Send { peer, data });
            }
            return;
        }
        let tag = msg.to_tag().map(str::to_string);
        match method {
            rsip::Method::Options => {
                let tag = self.unique();
                self.reply(
                    peer,
                    msg,
                    Reply {
                        status: 200,
                        reason: "OK",
                        to_tag: Some(&tag),
                        extra: &[
                            ("Allow", sip::ALLOW),
                            ("Accept", "application/sdp, multipart/mixed"),
                            ("Supported", "siprec, timer"),
                        ],
                        body: None,
                    },
                    now,
                );
            }
            rsip::Method::Invite if tag.is_none() => self.on_invite(peer, msg, now),
            rsip::Method::Invite | rsip::Method::Update => self.on_reoffer(peer, msg, now),
            rsip::Method::Bye => self.on_bye(peer, msg, now),
            rsip::Method::Cancel => {
                let invite = self.txns.contains_key(&Self::txn_key(msg, "INVITE"))
                    || self.dialogs.get(msg.call_id()).is_some_and(|d| {
                        d.invite_branch.is_some() && d.invite_branch.as_deref() == msg.branch()
                    });
                if invite {
                    // The INVITE was already answered; the CANCEL has no effect (RFC 3261 §9.2).
                    self.reply(
                        peer,
                        msg,
                        Reply {
                            status: 200,
                            reason: "OK",
                            to_tag: None,
                            extra: &[],
                            body: None,
                        },
                        now,
                    );
                } else {
                    self.reply(
                        peer,
                        msg,
                        Reply {
                            status: 481,
                            reason: "Call/Transaction Does Not Exist",
                            to_tag: Some("opname"),
                            extra: &[],
                            body: None,
                        },
                        now,
                    );
                }
            }
            rsip::Method::Info | rsip::Method::Notify => {
                if self.in_dialog(msg).is_some() {
                    self.reply(
                        peer,
                        msg,
                        Reply {
                            status: 200,
                            reason: "OK",
                            to_tag: None,
                            extra: &[],
                            body: None,
                        },
                        now,
                    );
                } else {
                    self.reply(
                        peer,
                        msg,
                        Reply {
                            status: 481,
                            reason: "Call/Transaction Does Not Exist",
                            to_tag: Some("opname"),
                            extra: &[],
                            body: None,
                        },
                        now,
                    );
                }
            }
            _ => {
                let tag = self.unique();
                self.reply(
                    peer,
                    msg,
                    Reply {
                        status: 405,
                        reason: "Method Not Allowed",
                        to_tag: Some(&tag),
                        extra: &[("Allow", sip::ALLOW)],
                        body: None,
                    },
                    now,
                );
            }
        }
    }

    fn in_dialog(&self, msg: &Message) -> Option<&Dialog> {
        self.dialogs
            .get(msg.call_id())
            .filter(|d| msg.to_tag() == Some(d.local_tag.as_str()))
    }

    fn on_ack(&mut self, msg: &Message) {
        let cseq = msg.cseq().map_or(0, |c| c.0);
        if let Some(d) = self.dialogs.get_mut(msg.call_id())
            && d.pending_2xx.as_ref().is_some_and(|(n, _)| *n == cseq)
        {
            d.pending_2xx = None;
            return;
        }
        if let Some(t) = self.txns.get_mut(&Self::txn_key(msg, "INVITE")) {
            t.retransmit = None;
        }
    }

    fn on_response(&mut self, msg: &Message) {
        if let Some(branch) = msg.branch() {
            self.clients.retain(|c| c.branch != branch);
        }
    }

    fn decline(
        &mut self,
        peer: Peer,
        msg: &Message,
        (status, reason): (u16, &str),
        warning: Option<&str>,
        outcome: Outcome,
        now: Instant,
    ) {
        let tag = self.unique();
        let retry = self.cfg.retry_after.to_string();
        let mut extra: Vec<(&str, &str)> = Vec::new();
        if status == 503 {
            extra.push(("Retry-After", &retry));
        }
        if status == 415 {
            extra.push((
                "Accept",
                "application/sdp, multipart/mixed, application/rs-metadata+xml",
            ));
        }
        let warning = warning.map(|w| format!("399 opname \"{}\"", w.replace('"', "'")));
        if let Some(w) = &warning {
            extra.push(("Warning", w));
        }
        self.reply(
            peer,
            msg,
            Reply {
                status,
                reason,
                to_tag: Some(&tag),
                extra: &extra,
                body: None,
            },
            now,
        );
        self.out.push(Action::Outcome(outcome));
    }

    fn on_invite(&mut self, peer: Peer, msg: &Message, now: Instant) {
        if self.draining {
            return self.decline(
                peer,
                msg,
                (503, "Service Unavailable"),
                Some("draining"),
                Outcome::Busy,
                now,
            );
        }
        if self.dialogs.len() >= self.cfg.max_calls || self.overloaded {
            let why = if self.overloaded {
                "CPU overloaded"
            } else {
                "at capacity"
            };
            return self.decline(
                peer,
                msg,
                (503, "Service Unavailable"),
                Some(why),
                Outcome::Busy,
                now,
            );
        }
        if self.dialogs.contains_key(msg.call_id()) {
            return self.decline(
                peer,
                msg,
                (482, "Loop Detected"),
                None,
                Outcome::BadRequest,
                now,
            );
        }
        let trying = sip::response(&ReplyHeaders::of(msg), 100, "Trying", None, &[], None);
        self.out.push(Action::Send { peer, data: trying });
        let parts = match body::split(msg.header("Content-Type"), &msg.body) {
            Ok(p) => p,
            Err(BodyError::Unsupported(t)) => {
                return self.decline(
                    peer,
                    msg,
                    (415, "Unsupported Media Type"),
                    Some(&t),
                    Outcome::Unusable,
                    now,
                );
            }
            Err(e) => {
                return self.decline(
                    peer,
                    msg,
                    (400, "Bad Request"),
                    Some(&e.to_string()),
                    Outcome::BadRequest,
                    now,
                );
            }
        };
        let Some(sdp_bytes) = parts.sdp else {
            return self.decline(
                peer,
                msg,
                (488, "Not Acceptable Here"),
                Some("an SDP offer is required"),
                Outcome::Unusable,
                now,
            );
        };
        let offer = match sdp::parse(sdp_bytes) {
            Ok(o) => o,
            Err(e) => {
                return self.decline(
                    peer,
                    msg,
                    (488, "Not Acceptable Here"),
                    Some(&e.to_string()),
                    Outcome::Unusable,
                    now,
                );
            }
        };
        let metadata = match parts.metadata.map(metadata::parse).transpose() {
            Ok(m) => m.unwrap_or_default(),
            Err(e) => {
                return self.decline(
                    peer,
                    msg,
                    (400, "Bad Request"),
                    Some(&e.to_string()),
                    Outcome::BadRequest,
                    now,
                );
            }
        };
        let negotiated = offer.negotiate();
        if !negotiated.iter().any(|s| s.accepted()) {
            return self.decline(
                peer,
                msg,
                (488, "Not Acceptable Here"),
                Some("no stream in a codec the recorder decodes (PCMU, PCMA, G722, opus)"),
                Outcome::Unusable,
                now,
            );
        }
        let Some((identity, policy)) = self.match_policy(msg, &metadata) else {
            tracing::info!(
                call_id = msg.call_id(),
                "no recording policy matches a participant; declined"
            );
            return self.decline(
                peer,
                msg,
                (603, "Decline"),
                Some("no recording policy for these participants"),
                Outcome::NotRecorded,
                now,
            );
        };
        let mut ports = vec![0u16; negotiated.len()];
        for (port, s) in ports.iter_mut().zip(&negotiated) {
            if s.accepted() {
                match self.ports.alloc() {
                    Some(p) => *port = p,
                    None => {
                        ports
                            .iter()
                            .filter(|p| **p != 0)
                            .for_each(|p| self.ports.free(*p));
                        return self.decline(
                            peer,
                            msg,
                            (503, "Service Unavailable"),
                            Some("no free RTP port"),
                            Outcome::Busy,
                            now,
                        );
                    }
                }
            }
        }
        let streams = build_streams(&negotiated, &ports, &metadata);
        let answer = sdp::answer(&offer, &negotiated, &ports, self.cfg.rtp_advertise, 1);
        let local_tag = self.unique();
        self.counter += 1;
        let call = CallRef(self.counter);
        let to = msg.header("To").unwrap_or_default();
        let correlation = CORRELATION_HEADERS
            .iter()
            .filter_map(|h| {
                msg.header(h)
                    .map(|v| (h.to_ascii_lowercase(), v.to_string()))
            })
            .collect();
        self.out.push(Action::Start(Box::new(StartRecording {
            call,
            policy,
            matched_identity: identity,
            namespace: self.policies.namespace().to_string(),
            sip_call_id: msg.call_id().to_string(),
            metadata: metadata.clone(),
            streams: streams.clone(),
            correlation,
        })));
        self.out.push(Action::Outcome(Outcome::Recorded));
        let data = self.answer_2xx(peer, msg, &local_tag, &answer, now);
        let cseq = msg.cseq().map_or(0, |c| c.0);
        self.dialogs.insert(
            msg.call_id().to_string(),
            Dialog {
                call,
                local: format!("{to};tag={local_tag}"),
                local_tag,
                remote: msg.header("From").unwrap_or_default().to_string(),
                target: msg
                    .contact_uri()
                    .unwrap_or_else(|| uri_of(msg.header("From").unwrap_or_default())),
                route_set: msg
                    .headers_named("Record-Route")
                    .map(str::to_string)
                    .collect(),
                peer,
                remote_cseq: cseq,
                local_cseq: 0,
                offer,
                streams,
                metadata,
                session_version: 1,
                answer,
                pending_2xx: (peer.transport == Transport::Udp)
                    .then(|| (cseq, Retransmit::new(data, now))),
                invite_branch: msg.branch().map(str::to_string),
            },
        );
    }

    /// Sends a 2xx with an SDP body, returning its bytes for retransmission.
    fn answer_2xx(
        &mut self,
        peer: Peer,
        msg: &Message,
        local_tag: &str,
        sdp: &str,
        now: Instant,
    ) -> Vec<u8> {
        let contact = format!("<sip:opname@{}>;+sip.srs", self.cfg.sip_host);
        let session_expires = msg
            .header("Session-Expires")
            .map(|v| format!("{};refresher=uac", v.split(';').next().unwrap_or(v).trim()));
        let mut extra = vec![
            ("Contact", contact.as_str()),
            ("Allow", sip::ALLOW),
            ("Supported", "siprec, timer"),
        ];
        if let Some(se) = &session_expires {
            extra.push(("Session-Expires", se));
            extra.push(("Require", "timer"));
        }
        let data = sip::response(
            &ReplyHeaders::of(msg),
            200,
            "OK",
            Some(local_tag),
            &extra,
            Some(("application/sdp", sdp.as_bytes())),
        );
        // 2xx to INVITE is not kept in the transaction table: the dialog resends it until ACK.
        if msg.cseq().is_some_and(|c| c.1 != "INVITE") {
            self.txns.insert(
                Self::txn_key(msg, msg.cseq().map_or("", |c| c.1)),
                ServerTxn {
                    response: data.clone(),
                    peer,
                    expires: now + TIMEOUT_64T1,
                    retransmit: None,
                },
            );
        }
        self.out.push(Action::Send {
            peer,
            data: data.clone(),
        });
        data
    }

    fn match_policy(&self, msg: &Message, md: &Metadata) -> Option<(String, Arc<ActivePolicy>)> {
        let from_metadata = md.participants.iter().filter_map(|p| p.aor.as_deref());
        // Without participants, the outer From/To are the best remaining evidence.
        let outer: Vec<String> = if md.participants.iter().any(|p| p.aor.is_some()) {
            Vec::new()
        } else {
            ["From", "To", "P-Asserted-Identity"]
                .iter()
                .filter_map(|h| msg.header(h).map(uri_of))
                .collect()
        };
        from_metadata
            .chain(outer.iter().map(String::as_str))
            .find_map(|aor| self.policies.lookup(aor))
            .map(|(key, policy)| (key.to_string(), policy))
    }

    /// re-INVITE or UPDATE inside a dialog: new offer, metadata update, or both.
    fn on_reoffer(&mut self, peer: Peer, msg: &Message, now: Instant) {
        let is_invite = msg.method() == Some(&rsip::Method::Invite);
        if self.in_dialog(msg).is_none() {
            let tag = self.unique();
            return self.reply(
                peer,
                msg,
                Reply {
                    status: 481,
                    reason: "Call/Transaction Does Not Exist",
                    to_tag: Some(&tag),
                    extra: &[],
                    body: None,
                },
                now,
            );
        }
        let cseq = msg.cseq().map_or(0, |c| c.0);
        if is_invite {
            let trying = sip::response(&ReplyHeaders::of(msg), 100, "Trying", None, &[], None);
            self.out.push(Action::Send { peer, data: trying });
        }
        let parts = match body::split(msg.header("Content-Type"), &msg.body) {
            Ok(p) => p,
            Err(BodyError::Unsupported(t)) => {
                return self.reply(
                    peer,
                    msg,
                    Reply {
                        status: 415,
                        reason: "Unsupported Media Type",
                        to_tag: None,
                        extra: &[
                            (
                                "Accept",
                                "application/sdp, multipart/mixed, application/rs-metadata+xml",
                            ),
                            ("Warning", &format!("399 opname \"{t}\"")),
                        ],
                        body: None,
                    },
                    now,
                );
            }
            Err(_) => {
                return self.reply(
                    peer,
                    msg,
                    Reply {
                        status: 400,
                        reason: "Bad Request",
                        to_tag: None,
                        extra: &[],
                        body: None,
                    },
                    now,
                );
            }
        };
        let offer = match parts.sdp.map(sdp::parse).transpose() {
            Ok(o) => o,
            Err(e) => {
                return self.reply(
                    peer,
                    msg,
                    Reply {
                        status: 488,
                        reason: "Not Acceptable Here",
                        to_tag: None,
                        extra: &[("Warning", &format!("399 opname \"{e}\""))],
                        body: None,
                    },
                    now,
                );
            }
        };
        let update = match parts.metadata.map(metadata::parse).transpose() {
            Ok(m) => m,
            Err(e) => {
                return self.reply(
                    peer,
                    msg,
                    Reply {
                        status: 400,
                        reason: "Bad Request",
                        to_tag: None,
                        extra: &[("Warning", &format!("399 opname \"{e}\""))],
                        body: None,
                    },
                    now,
                );
            }
        };
        let Some(mut d) = self.dialogs.remove(msg.call_id()) else {
            return;
        };
        d.remote_cseq = d.remote_cseq.max(cseq);
        d.peer = peer;
        if let Some(u) = update {
            d.metadata.apply(u);
        }
        let mut sdp_out = None;
        if let Some(offer) = offer {
            let negotiated = offer.negotiate();
            let mut ports = vec![0u16; negotiated.len()];
            for (i, s) in negotiated.iter().enumerate() {
                let old = d.streams.get(i).map_or(0, |o| o.port);
                ports[i] = match (s.accepted(), old) {
                    (true, 0) => self.ports.alloc().unwrap_or(0),
                    (true, p) => p,
                    (false, _) => 0,
                };
            }
            for (i, old) in d.streams.iter().enumerate() {
                if old.port != 0 && ports.get(i).copied() != Some(old.port) {
                    self.ports.free(old.port);
                }
            }
            let negotiated: Vec<_> = negotiated
                .into_iter()
                .zip(&ports)
                .map(|(mut s, p)| {
                    if *p == 0 {
                        s.codec = None;
                    }
                    s
                })
                .collect();
            d.session_version += 1;
            d.answer = sdp::answer(
                &offer,
                &negotiated,
                &ports,
                self.cfg.rtp_advertise,
                d.session_version,
            );
            d.streams = build_streams(&negotiated, &ports, &d.metadata);
            d.offer = offer;
            sdp_out = Some(d.answer.clone());
        } else {
            d.streams = rebuild_channels(&d.streams, &d.metadata);
            if is_invite {
                // An offerless re-INVITE: our current session description is the offer.
                sdp_out = Some(d.answer.clone());
            }
        }
        self.out.push(Action::Update {
            call: d.call,
            streams: d.streams.clone(),
            metadata: Box::new(d.metadata.clone()),
        });
        let tag = d.local_tag.clone();
        match sdp_out {
            Some(sdp) => {
                let data = self.answer_2xx(peer, msg, &tag, &sdp, now);
                if is_invite {
                    if peer.transport == Transport::Udp {
                        d.pending_2xx = Some((cseq, Retransmit::new(data, now)));
                    }
                    d.invite_branch = msg.branch().map(str::to_string);
                }
            }
            None => self.reply(
                peer,
                msg,
                Reply {
                    status: 200,
                    reason: "OK",
                    to_tag: None,
                    extra: &[],
                    body: None,
                },
                now,
            ),
        }
        self.dialogs.insert(msg.call_id().to_string(), d);
    }

    fn on_bye(&mut self, peer: Peer, msg: &Message, now: Instant) {
        if self.in_dialog(msg).is_none() {
            return self.reply(
                peer,
                msg,
                Reply {
                    status: 481,
                    reason: "Call/Transaction Does Not Exist",
                    to_tag: Some("opname"),
                    extra: &[],
                    body: None,
                },
                now,
            );
        }
        if let Some(d) = self.dialogs.remove(msg.call_id()) {
            self.release(&d);
            self.out.push(Action::Stop {
                call: d.call,
                reason: EndReason::Bye,
            });
        }
        self.reply(
            peer,
            msg,
            Reply {
                status: 200,
                reason: "OK",
                to_tag: None,
                extra: &[],
                body: None,
            },
            now,
        );
    }

    fn release(&mut self, d: &Dialog) {
        for s in &d.streams {
            if s.port != 0 {
                self.ports.free(s.port);
            }
        }
    }

    /// Ends a dialog from our side: BYE to the SRC, media stopped.
    fn hang_up(&mut self, call_id: &str, reason: EndReason, now: Instant) {
        let Some(mut d) = self.dialogs.remove(call_id) else {
            return;
        };
        self.release(&d);
        d.local_cseq = d.local_cseq.max(d.remote_cseq) + 1;
        let branch = format!("z9hG4bK{}", self.unique());
        let mut req = format!(
            "BYE {} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={branch};rport\r\nMax-Forwards: 70\r\n",
            d.target,
            d.peer.transport.via_name(),
            self.cfg.sip_host
        );
        for r in &d.route_set {
            req.push_str(&format!("Route: {r}\r\n"));
        }
        req.push_str(&format!(
            "From: {}\r\nTo: {}\r\nCall-ID: {call_id}\r\nCSeq: {} BYE\r\nReason: SIP;cause=200;text=\"{reason:?}\"\r\nUser-Agent: {}\r\nContent-Length: 0\r\n\r\n",
            d.local,
            d.remote,
            d.local_cseq,
            sip::SERVER
        ));
        let data = req.into_bytes();
        if d.peer.transport == Transport::Udp {
            self.clients.push(ClientTxn {
                branch,
                peer: d.peer,
                retransmit: Retransmit::new(data.clone(), now),
            });
        }
        self.out.push(Action::Send { peer: d.peer, data });
        self.out.push(Action::Stop {
            call: d.call,
            reason,
        });
    }

    fn call_id_of(&self, call: CallRef) -> Option<String> {
        self.dialogs
            .iter()
            .find(|(_, d)| d.call == call)
            .map(|(k, _)| k.clone())
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
        let txns = self.txns.values().map(|t| {
            t.retransmit
                .as_ref()
                .map_or(t.expires, |r| r.next.min(t.expires))
        });
        let dialogs = self
            .dialogs
            .values()
            .filter_map(|d| d.pending_2xx.as_ref().map(|(_, r)| r.next.min(r.deadline)));
        let clients = self
            .clients
            .iter()
            .map(|c| c.retransmit.next.min(c.retransmit.deadline));
        txns.chain(dialogs).chain(clients).min()
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Vec<Action> {
        self.txns.retain(|_, t| t.expires > now);
        for t in self.txns.values_mut() {
            if let Some(r) = &mut t.retransmit
                && r.next <= now
            {
                self.out.push(Action::Send {
                    peer: t.peer,
                    data: r.data.clone(),
                });
                r.backoff(now);
            }
        }
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

fn uri_of(header: &str) -> String {
    match (header.find('<'), header.find('>')) {
        (Some(a), Some(b)) if a < b => header[a + 1..b].to_string(),
        _ => header
            .split(';')
            .next()
            .unwrap_or(header)
            .trim()
            .to_string(),
    }
}

/// Streams with channels: the first participant (by convention the caller) on the left, everyone
/// else on the right; by position when the metadata does not associate streams; a lone stream
/// (a mixed one) on both.
fn build_streams(
    negotiated: &[sdp::StreamAnswer],
    ports: &[u16],
    md: &Metadata,
) -> Vec<MediaStream> {
    let streams: Vec<MediaStream> = negotiated
        .iter()
        .map(|s| MediaStream {
            index: s.index,
            port: if s.accepted() {
                ports.get(s.index).copied().unwrap_or(0)
            } else {
                0
            },
            codec: s.codec,
            telephone_event: s.telephone_event,
            paused: s.paused,
            label: s.label.clone(),
            channel: Channel::Both,
        })
        .collect();
    rebuild_channels(&streams, md)
}

fn rebuild_channels(streams: &[MediaStream], md: &Metadata) -> Vec<MediaStream> {
    let accepted = streams.iter().filter(|s| s.port != 0).count();
    let mut position = 0;
    streams
        .iter()
        .map(|s| {
            let mut s = s.clone();
            if s.port == 0 {
                return s;
            }
            let by_metadata = s.label.as_deref().and_then(|l| md.sender_of_label(l));
            s.channel = match (accepted, by_metadata) {
                (1, _) => Channel::Both,
                (_, Some(0)) => Channel::Left,
                (_, Some(_)) => Channel::Right,
                (_, None) if position == 0 => Channel::Left,
                (_, None) => Channel::Right,
            };
            position += 1;
            s
        })
        .collect()
}
