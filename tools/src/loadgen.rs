//! A SIPREC client that holds N concurrent two-stream G.711 calls at real-time pacing: the demo's
//! call source and the capacity benchmark's load.
//!
//! All RTP leaves from one socket, paced by one task from a fixed schedule (frames due since the
//! start), so the generator itself stays cheap and does not drift.
//!
//! It finds recorders as an SBC does: one fixed address (a single recorder, or a front door), or
//! a domain resolved by RFC 3263 (SRV records `_sip._udp.<domain>`, ordered by priority and
//! weight per RFC 2782), trying the next target on 503 or no answer. Requests within a dialog go
//! to the answering recorder's Contact, and RTP to its SDP address, never back to the target.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use opname_recorder::media::codec::ulaw_encode;
use opname_recorder::protocol::sip::{self, Message, Start};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("DNS resolver: {0}")]
    Dns(#[from] hickory_resolver::net::NetError),
}

/// Where the INVITEs go.
#[derive(Debug, Clone)]
pub enum Target {
    /// One address.
    Addr(SocketAddr),
    /// A SIP domain whose `_sip._udp` SRV records name the recorders, asked of name server `dns`.
    Domain { domain: String, dns: SocketAddr },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(a) => write!(f, "{a}"),
            Target::Domain { domain, .. } => f.write_str(domain),
        }
    }
}

/// How long one target may stay silent before the next is tried (an SBC's short INVITE timer
/// for a recorder); the last target gets the full transaction time.
const FAILOVER_AFTER: Duration = Duration::from_secs(4);

#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub target: Target,
    pub bind: IpAddr,
    pub calls: usize,
    pub duration: Duration,
    /// Calls are started evenly over this time.
    pub ramp: Duration,
    /// AoR of the first participant (the caller); a policy should match it.
    pub caller: String,
    pub callee: String,
    /// Raw μ-law audio sent on stream 1 and 2, looped.
    pub audio: [Arc<[u8]>; 2],
}

#[derive(Debug, Default, serde::Serialize)]
pub struct LoadReport {
    pub answered: usize,
    /// Final non-2xx answers by status code.
    pub rejected: BTreeMap<u16, usize>,
    pub no_answer: usize,
    /// Answers after which the next target was tried, by status code (408: no answer).
    pub retried: BTreeMap<u16, usize>,
    /// Answered calls per answering recorder (its Contact address).
    pub answered_by: BTreeMap<String, usize>,
    /// Calls whose BYE the recorder that answered them confirmed with 200.
    pub ended: usize,
    /// BYEs answered otherwise, by status code (0: no answer).
    pub end_failed: BTreeMap<u16, usize>,
    pub packets_sent: u64,
    /// Frames the pacer sent late by more than one frame (the generator was overloaded).
    pub late_frames: u64,
    pub call_ids: Vec<String>,
}

struct RtpStream {
    dest: SocketAddr,
    ssrc: u32,
    seq: u16,
    ts: u32,
    audio: Arc<[u8]>,
    offset: usize,
}

type Waiters = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>>;

/// Two distinct, speech-like signals (tone pairs under a syllable-rate envelope), one second
/// each, so a test can tell the channels apart.
pub fn synthetic_audio() -> [Arc<[u8]>; 2] {
    let make = |f1: f32, f2: f32, phase: f32| -> Arc<[u8]> {
        (0..8000)
            .map(|i| {
                let t = i as f32 / 8000.0;
                let env =
                    (0.5 + 0.5 * (2.0 * std::f32::consts::PI * 2.5 * t + phase).sin()).powi(2);
                let s = (2.0 * std::f32::consts::PI * f1 * t).sin()
                    + 0.5 * (2.0 * std::f32::consts::PI * f2 * t).sin();
                ulaw_encode((s * env * 9000.0) as i16)
            })
            .collect()
    };
    [
        make(310.0, 720.0, 0.0),
        make(470.0, 1130.0, std::f32::consts::PI),
    ]
}

/// The INVITE of one attempt: the same From tag on every attempt of a call, a new branch each.
fn invite(
    spec: &LoadSpec,
    dest: SocketAddr,
    local: SocketAddr,
    call_id: &str,
    (from_tag, branch): (&str, &str),
    rtp_ports: [u16; 2],
) -> Vec<u8> {
    let ip = local.ip();
    let sdp = format!(
        "v=0\r\no=loadgen 1 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n\
m=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=label:1\r\na=sendonly\r\n\
m=audio {} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=label:2\r\na=sendonly\r\n",
        rtp_ports[0], rtp_ports[1]
    );
    let md = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\r\n<recording xmlns=\"urn:ietf:params:xml:ns:recording:1\">\r\n<datamode>complete</datamode>\r\n\
<session session_id=\"{call_id}\"><sipSessionID>{call_id}</sipSessionID></session>\r\n\
<participant participant_id=\"p1\"><nameID aor=\"{}\"><name>Caller</name></nameID></participant>\r\n\
<participant participant_id=\"p2\"><nameID aor=\"{}\"><name>Callee</name></nameID></participant>\r\n\
<stream stream_id=\"s1\" session_id=\"{call_id}\"><label>1</label></stream>\r\n<stream stream_id=\"s2\" session_id=\"{call_id}\"><label>2</label></stream>\r\n\
<participantstreamassoc participant_id=\"p1\"><send>s1</send><recv>s2</recv></participantstreamassoc>\r\n\
<participantstreamassoc participant_id=\"p2\"><send>s2</send><recv>s1</recv></participantstreamassoc>\r\n</recording>\r\n",
        spec.caller, spec.callee
    );
    let body = format!(
        "--opnameboundary\r\nContent-Type: application/sdp\r\n\r\n{sdp}\r\n--opnameboundary\r\nContent-Type: application/rs-metadata+xml\r\nContent-Disposition: recording-session\r\n\r\n{md}\r\n--opnameboundary--\r\n"
    );
    format!(
        "INVITE sip:srs@{target} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\n\
From: <sip:src@{ip}>;tag=lg{from_tag}\r\nTo: <sip:srs@{target}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
Contact: <sip:src@{local}>;+sip.src\r\nRequire: siprec\r\nAccept: application/sdp, application/rs-metadata\r\n\
Content-Type: multipart/mixed;boundary=opnameboundary\r\nContent-Length: {}\r\n\r\n{body}",
        body.len(),
        target = match &spec.target {
            Target::Addr(_) => dest.to_string(),
            Target::Domain { domain, .. } => domain.clone(),
        },
    )
    .into_bytes()
}

/// A request within the dialog (or the ACK of a refused INVITE) to `uri`.
#[allow(clippy::too_many_arguments)]
fn in_dialog(
    method: &str,
    cseq: u32,
    uri: &str,
    local: SocketAddr,
    call_id: &str,
    from_tag: &str,
    branch: &str,
    to: &str,
) -> Vec<u8> {
    format!(
        "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\n\
From: <sip:src@{ip}>;tag=lg{from_tag}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n",
        ip = local.ip(),
    )
    .into_bytes()
}

/// The address of a SIP URI's host and port (5060 when it has none).
fn uri_addr(uri: &str) -> Option<SocketAddr> {
    let host = uri.split_once('@').map_or(uri, |(_, h)| h);
    let host = host.split(';').next()?.trim_start_matches("sip:");
    host.parse()
        .ok()
        .or_else(|| Some(SocketAddr::new(host.parse().ok()?, 5060)))
}

/// The connection address of an SDP answer.
fn answered_ip(msg: &Message) -> Option<IpAddr> {
    String::from_utf8_lossy(&msg.body)
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 ")?.trim().parse().ok())
}

/// RFC 3263/2782: the SRV targets of `_sip._udp.<domain>` by priority, each priority's records
/// in a weighted random order (`salt` varies it per call), resolved to addresses.
async fn resolve(
    resolver: &hickory_resolver::TokioResolver,
    domain: &str,
    salt: u64,
) -> Vec<SocketAddr> {
    use hickory_resolver::proto::rr::RData;
    let Ok(lookup) = resolver.srv_lookup(format!("_sip._udp.{domain}.")).await else {
        return Vec::new();
    };
    let mut records: Vec<_> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(srv.clone()),
            _ => None,
        })
        .collect();
    let mut random = salt;
    let mut next = move || {
        // splitmix64: enough to spread the choice, no dependency for it.
        random = random.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = random;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    records.sort_by_key(|r| r.priority);
    let mut ordered = Vec::new();
    while !records.is_empty() {
        let priority = records[0].priority;
        let group = records
            .iter()
            .take_while(|r| r.priority == priority)
            .count();
        let total: u64 = records[..group]
            .iter()
            .map(|r| u64::from(r.weight) + 1)
            .sum();
        let mut pick = next() % total;
        let i = records[..group]
            .iter()
            .position(|r| {
                let w = u64::from(r.weight) + 1;
                let hit = pick < w;
                pick = pick.saturating_sub(w);
                hit
            })
            .unwrap_or(0);
        ordered.push(records.remove(i));
    }
    let mut out = Vec::new();
    for srv in ordered {
        let glued = lookup.additionals().iter().find_map(|r| match &r.data {
            RData::A(a) if r.name == srv.target => Some(IpAddr::V4(a.0)),
            _ => None,
        });
        let ip = match glued {
            Some(ip) => Some(ip),
            None => resolver
                .ipv4_lookup(srv.target.clone())
                .await
                .ok()
                .and_then(|l| {
                    l.answers().iter().find_map(|r| match &r.data {
                        RData::A(a) => Some(IpAddr::V4(a.0)),
                        _ => None,
                    })
                }),
        };
        if let Some(ip) = ip {
            out.push(SocketAddr::new(ip, srv.port));
        }
    }
    out
}

fn answered_ports(msg: &Message) -> Vec<u16> {
    String::from_utf8_lossy(&msg.body)
        .lines()
        .filter_map(|l| l.strip_prefix("m=audio "))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

/// Runs the load and returns what happened; calls end with BYE after `duration`.
pub async fn run(spec: LoadSpec) -> Result<LoadReport, LoadError> {
    let sip_sock = Arc::new(UdpSocket::bind((spec.bind, 0)).await?);
    let local = sip_sock.local_addr()?;
    let rtp = std::net::UdpSocket::bind((spec.bind, 0))?;
    let rtp_port = rtp.local_addr()?.port();
    let resolver = match &spec.target {
        Target::Addr(_) => None,
        Target::Domain { dns, .. } => {
            use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
            let mut udp = ConnectionConfig::udp();
            udp.port = dns.port();
            let server = NameServerConfig::new(dns.ip(), true, vec![udp]);
            Some(Arc::new(
                hickory_resolver::TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![server]),
                    hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
                )
                .build()?,
            ))
        }
    };
    let waiters: Waiters = Arc::new(Mutex::new(HashMap::new()));
    let receiver = tokio::spawn(sip_receiver(sip_sock.clone(), waiters.clone()));
    let streams: Arc<Mutex<Vec<RtpStream>>> = Arc::new(Mutex::new(Vec::new()));
    let report = Arc::new(Mutex::new(LoadReport::default()));
    let pacing = tokio::spawn(pacer(rtp, streams.clone(), report.clone()));
    let audio = spec.audio.clone();
    let mut calls = Vec::new();
    let run_id = std::process::id();
    for i in 0..spec.calls {
        if spec.calls > 1 && !spec.ramp.is_zero() {
            tokio::time::sleep(spec.ramp / spec.calls as u32).await;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let call_id = format!("lg-{run_id}-{i}@{}", local.ip());
        waiters
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .insert(call_id.clone(), tx);
        calls.push(tokio::spawn(one_call(
            spec.clone(),
            resolver.clone(),
            sip_sock.clone(),
            local,
            call_id,
            format!("z9hG4bK{run_id}x{i}"),
            rtp_port,
            rx,
            streams.clone(),
            audio.clone(),
            report.clone(),
            i as u32,
        )));
    }
    for c in calls {
        let _ = c.await;
    }
    pacing.abort();
    receiver.abort();
    let mut out = std::mem::take(
        &mut *report
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?,
    );
    out.call_ids.sort();
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn one_call(
    spec: LoadSpec,
    resolver: Option<Arc<hickory_resolver::TokioResolver>>,
    sock: Arc<UdpSocket>,
    local: SocketAddr,
    call_id: String,
    branch: String,
    rtp_port: u16,
    mut rx: mpsc::UnboundedReceiver<Message>,
    streams: Arc<Mutex<Vec<RtpStream>>>,
    audio: [Arc<[u8]>; 2],
    report: Arc<Mutex<LoadReport>>,
    n: u32,
) {
    let count = |f: &dyn Fn(&mut LoadReport)| {
        if let Ok(mut r) = report.lock() {
            f(&mut r);
        }
    };
    let targets = match (&spec.target, &resolver) {
        (Target::Addr(a), _) => vec![*a],
        (Target::Domain { domain, .. }, Some(r)) => resolve(r, domain, u64::from(n)).await,
        (Target::Domain { .. }, None) => Vec::new(),
    };
    let mut answer = None;
    for (k, dest) in targets.iter().enumerate() {
        let last = k + 1 == targets.len();
        let try_branch = format!("{branch}.{k}");
        let invite = invite(
            &spec,
            *dest,
            local,
            &call_id,
            (&branch, &try_branch),
            [rtp_port, rtp_port],
        );
        let deadline = Instant::now()
            + if last {
                Duration::from_secs(16)
            } else {
                FAILOVER_AFTER
            };
        let mut resend = Duration::from_millis(500);
        let _ = sock.send_to(&invite, dest).await;
        let got = loop {
            match tokio::time::timeout(resend, rx.recv()).await {
                // Only answers to this attempt: a late one from a target given up on is not it.
                Ok(Some(m)) if m.branch() != Some(try_branch.as_str()) => {}
                Ok(Some(m)) => match m.start {
                    Start::Response { status } if status >= 200 => break Some((status, m)),
                    _ => {}
                },
                Ok(None) => break None,
                Err(_) if Instant::now() > deadline => break None,
                Err(_) => {
                    let _ = sock.send_to(&invite, dest).await;
                    resend = (resend * 2).min(Duration::from_secs(4));
                }
            }
        };
        match got {
            None if !last => count(&|r| *r.retried.entry(408).or_default() += 1),
            None => break,
            Some((status, msg)) if status >= 300 => {
                let to = msg.header("To").unwrap_or_default();
                let uri = format!("sip:srs@{dest}");
                let ack = in_dialog("ACK", 1, &uri, local, &call_id, &branch, &try_branch, to);
                let _ = sock.send_to(&ack, dest).await;
                if status == 503 && !last {
                    count(&|r| *r.retried.entry(503).or_default() += 1);
                } else {
                    count(&|r| *r.rejected.entry(status).or_default() += 1);
                    return;
                }
            }
            Some((_, msg)) => {
                answer = Some((*dest, msg));
                break;
            }
        }
    }
    let Some((dest, msg)) = answer else {
        count(&|r| r.no_answer += 1);
        return;
    };
    // The dialog's remote target: the recorder that answered, whichever address took the INVITE.
    let contact = msg
        .contact_uri()
        .unwrap_or_else(|| format!("sip:srs@{dest}"));
    let peer = uri_addr(&contact).unwrap_or(dest);
    let to = msg.header("To").unwrap_or_default().to_string();
    let ack = in_dialog(
        "ACK",
        1,
        &contact,
        local,
        &call_id,
        &branch,
        &format!("{branch}-ack"),
        &to,
    );
    let _ = sock.send_to(&ack, peer).await;
    let ports = answered_ports(&msg);
    let media_ip = answered_ip(&msg).unwrap_or(peer.ip());
    count(&|r| {
        r.answered += 1;
        r.call_ids.push(call_id.clone());
        *r.answered_by.entry(peer.to_string()).or_default() += 1;
    });
    let dests: Vec<SocketAddr> = ports
        .iter()
        .filter(|p| **p != 0)
        .map(|p| SocketAddr::new(media_ip, *p))
        .collect();
    if let Ok(mut s) = streams.lock() {
        for (k, dest) in dests.iter().enumerate() {
            s.push(RtpStream {
                dest: *dest,
                ssrc: 0x1000_0000 + n * 2 + k as u32,
                seq: (n * 7) as u16,
                ts: n * 160,
                audio: audio[k % 2].clone(),
                offset: 0,
            });
        }
    }
    tokio::time::sleep(spec.duration).await;
    if let Ok(mut s) = streams.lock() {
        s.retain(|st| !dests.contains(&st.dest));
    }
    let bye_branch = format!("{branch}-bye");
    let bye = in_dialog(
        "BYE",
        2,
        &contact,
        local,
        &call_id,
        &branch,
        &bye_branch,
        &to,
    );
    let _ = sock.send_to(&bye, peer).await;
    let deadline = Instant::now() + Duration::from_secs(4);
    let status = loop {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(m)) if m.branch() == Some(bye_branch.as_str()) => match m.start {
                Start::Response { status } if status >= 200 => break status,
                _ => {}
            },
            Ok(Some(_)) => {}
            _ => break 0,
        }
    };
    count(&|r| match status {
        200 => r.ended += 1,
        s => *r.end_failed.entry(s).or_default() += 1,
    });
}

async fn sip_receiver(sock: Arc<UdpSocket>, waiters: Waiters) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let Ok(msg) = sip::parse(&buf[..n], true) else {
            continue;
        };
        if let Start::Request { .. } = msg.start {
            // The recorder hanging up (RTP timeout, shutdown): acknowledge it.
            let h = sip::ReplyHeaders::of(&msg);
            let _ = sock
                .send_to(&sip::response(&h, 200, "OK", None, &[], None), from)
                .await;
            continue;
        }
        let tx = waiters
            .lock()
            .ok()
            .and_then(|w| w.get(msg.call_id()).cloned());
        if let Some(tx) = tx {
            let _ = tx.send(msg);
        }
    }
}

async fn pacer(
    sock: std::net::UdpSocket,
    streams: Arc<Mutex<Vec<RtpStream>>>,
    report: Arc<Mutex<LoadReport>>,
) {
    let start = Instant::now();
    let mut frames_sent: u64 = 0;
    let mut packet = [0u8; 12 + 160];
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    loop {
        tick.tick().await;
        let due = start.elapsed().as_millis() as u64 / 20 + 1;
        if due > frames_sent + 1
            && let Ok(mut r) = report.lock()
        {
            r.late_frames += due - frames_sent - 1;
        }
        let mut sent = 0u64;
        if let Ok(mut streams) = streams.lock() {
            while frames_sent < due {
                for s in streams.iter_mut() {
                    packet[0] = 0x80;
                    packet[1] = 0;
                    packet[2..4].copy_from_slice(&s.seq.to_be_bytes());
                    packet[4..8].copy_from_slice(&s.ts.to_be_bytes());
                    packet[8..12].copy_from_slice(&s.ssrc.to_be_bytes());
                    for (i, b) in packet[12..].iter_mut().enumerate() {
                        *b = s.audio[(s.offset + i) % s.audio.len()];
                    }
                    if sock.send_to(&packet, s.dest).is_ok() {
                        sent += 1;
                    }
                    s.seq = s.seq.wrapping_add(1);
                    s.ts = s.ts.wrapping_add(160);
                    s.offset = (s.offset + 160) % s.audio.len();
                }
                frames_sent += 1;
            }
        }
        if let Ok(mut r) = report.lock() {
            r.packets_sent += sent;
        }
    }
}
