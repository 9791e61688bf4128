//! SDP offer/answer for a recording server (RFC 3264, RFC 7866 §8).
//!
//! The parser is line based and tolerant: SRCs send LF-only lines, missing rtpmaps for static
//! payload types, unknown attributes and m-lines we cannot record. The answer always carries one
//! m-line per offered m-line, in order; what we cannot record gets port 0.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::crypto;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SdpError {
    #[error("SDP has no m-line")]
    NoMedia,
    #[error("SDP line {0} is malformed")]
    Malformed(usize),
    #[error(
        "SDP offers more than {MAX_STREAMS} media streams; a recording session takes at most {MAX_STREAMS}"
    )]
    TooManyStreams,
}

/// Media streams one recording session may offer: SIPREC forks two (one per direction), some
/// SRCs four (audio and video, or a conference's legs). Each takes an RTP port, so an offer with
/// thousands of m-lines must not take thousands.
pub const MAX_STREAMS: usize = 4;

/// Audio codecs the recorder decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Codec {
    Pcmu,
    Pcma,
    G722,
    Opus,
}

impl Codec {
    pub fn name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
            Codec::G722 => "G722",
            Codec::Opus => "opus",
        }
    }

    /// RTP clock rate (G.722's is 8000 for historical reasons, RFC 3551 §4.5.2).
    pub fn clock_rate(self) -> u32 {
        match self {
            Codec::Opus => 48_000,
            _ => 8_000,
        }
    }

    /// Whether decoding needs more than narrowband to keep its quality.
    pub fn wideband(self) -> bool {
        matches!(self, Codec::G722 | Codec::Opus)
    }

    fn rtpmap(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU/8000",
            Codec::Pcma => "PCMA/8000",
            Codec::G722 => "G722/8000",
            Codec::Opus => "opus/48000/2",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

/// One offered m-line.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaOffer {
    pub media: String,
    pub port: u16,
    pub proto: String,
    pub formats: Vec<String>,
    /// `(payload type, encoding name, clock rate, channels)` from `a=rtpmap`.
    pub rtpmaps: Vec<(u8, String, u32, Option<u8>)>,
    pub fmtps: Vec<(u8, String)>,
    pub label: Option<String>,
    pub direction: Option<Direction>,
    pub connection: Option<String>,
    /// The `a=crypto` lines the recorder can use, in the offer's order of preference.
    pub crypto: Vec<crypto::Crypto>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    pub connection: Option<String>,
    pub direction: Option<Direction>,
    pub media: Vec<MediaOffer>,
}

impl Offer {
    /// Whether an audio stream is offered encrypted in a way the recorder cannot decrypt
    /// (DTLS-SRTP, or SDES without a suite of [`crypto::Suite::ALL`]): refusing the offer beats
    /// recording half of the call.
    pub fn undecryptable_audio(&self) -> bool {
        self.media.iter().any(|m| {
            m.media == "audio"
                && m.port != 0
                && m.proto.to_ascii_uppercase().contains("SAVP")
                && (!is_sdes(&m.proto) || m.crypto.is_empty())
        })
    }

    /// The address m-line `index` sends from as the offer says (`c=` of the media, else of the
    /// session); `None` when it names none usable (absent, unparsable, or `0.0.0.0` on hold).
    pub fn source_of(&self, index: usize) -> Option<IpAddr> {
        let m = self.media.get(index)?;
        m.connection
            .as_deref()
            .or(self.connection.as_deref())?
            .parse::<IpAddr>()
            .ok()
            .filter(|ip| !ip.is_unspecified())
            .map(|ip| ip.to_canonical())
    }
}

/// SRTP keyed in the SDP (SDES), not by DTLS.
fn is_sdes(proto: &str) -> bool {
    matches!(
        proto.to_ascii_uppercase().as_str(),
        "RTP/SAVP" | "RTP/SAVPF"
    )
}

/// What we negotiated for one m-line.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamAnswer {
    pub index: usize,
    pub label: Option<String>,
    /// `None` when the m-line is rejected (port 0).
    pub codec: Option<(u8, Codec)>,
    pub telephone_event: Option<u8>,
    /// Paused by the SRC (`inactive`, `recvonly` or `c=0.0.0.0`).
    pub paused: bool,
    /// SRTP: the offer's crypto line the recorder decrypts with.
    pub srtp: Option<crypto::Crypto>,
}

impl StreamAnswer {
    pub fn accepted(&self) -> bool {
        self.codec.is_some()
    }
}

fn parse_direction(attr: &str) -> Option<Direction> {
    match attr {
        "sendrecv" => Some(Direction::SendRecv),
        "sendonly" => Some(Direction::SendOnly),
        "recvonly" => Some(Direction::RecvOnly),
        "inactive" => Some(Direction::Inactive),
        _ => None,
    }
}

/// Parses an offer. Only structure that the answer depends on is checked.
pub fn parse(body: &[u8]) -> Result<Offer, SdpError> {
    let text = String::from_utf8_lossy(body);
    let mut offer = Offer {
        connection: None,
        direction: None,
        media: Vec::new(),
    };
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r').trim();
        if line.is_empty() {
            continue;
        }
        let Some((kind, value)) = line.split_once('=') else {
            return Err(SdpError::Malformed(n + 1));
        };
        let value = value.trim();
        match kind.trim() {
            "m" => {
                if offer.media.len() == MAX_STREAMS {
                    return Err(SdpError::TooManyStreams);
                }
                let mut parts = value.split_whitespace();
                let media = parts.next().ok_or(SdpError::Malformed(n + 1))?;
                let port = parts
                    .next()
                    .and_then(|p| p.split('/').next())
                    .and_then(|p| p.parse().ok())
                    .ok_or(SdpError::Malformed(n + 1))?;
                let proto = parts.next().ok_or(SdpError::Malformed(n + 1))?;
                offer.media.push(MediaOffer {
                    media: media.to_ascii_lowercase(),
                    port,
                    proto: proto.to_string(),
                    formats: parts.map(str::to_string).collect(),
                    rtpmaps: Vec::new(),
                    fmtps: Vec::new(),
                    label: None,
                    direction: None,
                    connection: None,
                    crypto: Vec::new(),
                });
            }
            "c" => {
                let addr = value.split_whitespace().nth(2).map(|a| {
                    // Multicast TTL suffix, never meaningful here.
                    a.split('/').next().unwrap_or(a).to_string()
                });
                match offer.media.last_mut() {
                    Some(m) => m.connection = addr,
                    None => offer.connection = addr,
                }
            }
            "a" => {
                let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                let name = name.to_ascii_lowercase();
                if let Some(d) = parse_direction(&name) {
                    match offer.media.last_mut() {
                        Some(m) => m.direction = Some(d),
                        None => offer.direction = Some(d),
                    }
                    continue;
                }
                let Some(m) = offer.media.last_mut() else {
                    continue;
                };
                match name.as_str() {
                    "label" => m.label = Some(arg.trim().to_string()),
                    "crypto" => m.crypto.extend(crypto::parse(arg)),
                    "rtpmap" => {
                        if let Some(map) = parse_rtpmap(arg) {
                            m.rtpmaps.push(map);
                        }
                    }
                    "fmtp" => {
                        if let Some((pt, params)) = arg.split_once(char::is_whitespace)
                            && let Ok(pt) = pt.parse()
                        {
                            m.fmtps.push((pt, params.trim().to_string()));
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    if offer.media.is_empty() {
        return Err(SdpError::NoMedia);
    }
    Ok(offer)
}

fn parse_rtpmap(arg: &str) -> Option<(u8, String, u32, Option<u8>)> {
    let (pt, enc) = arg.trim().split_once(char::is_whitespace)?;
    let mut parts = enc.trim().split('/');
    let name = parts.next()?.to_string();
    let rate = parts.next()?.trim().parse().ok()?;
    let channels = parts.next().and_then(|c| c.trim().parse().ok());
    Some((pt.parse().ok()?, name, rate, channels))
}

impl MediaOffer {
    fn encoding(&self, pt: u8) -> Option<(&str, u32)> {
        if let Some((_, name, rate, _)) = self.rtpmaps.iter().find(|(p, ..)| *p == pt) {
            return Some((name.as_str(), *rate));
        }
        // Static payload types may come without rtpmap (RFC 3551).
        match pt {
            0 => Some(("PCMU", 8000)),
            8 => Some(("PCMA", 8000)),
            9 => Some(("G722", 8000)),
            _ => None,
        }
    }

    fn codec_of(&self, pt: u8) -> Option<Codec> {
        let (name, rate) = self.encoding(pt)?;
        match (name.to_ascii_uppercase().as_str(), rate) {
            ("PCMU", 8000) => Some(Codec::Pcmu),
            ("PCMA", 8000) => Some(Codec::Pcma),
            ("G722", 8000) => Some(Codec::G722),
            ("OPUS", 48000) => Some(Codec::Opus),
            _ => None,
        }
    }

    fn payload_types(&self) -> impl Iterator<Item = u8> + '_ {
        self.formats.iter().filter_map(|f| f.parse().ok())
    }
}

impl Offer {
    /// Chooses per m-line; the offerer's order of preference is kept.
    pub fn negotiate(&self) -> Vec<StreamAnswer> {
        self.media
            .iter()
            .enumerate()
            .map(|(index, m)| {
                let srtp = is_sdes(&m.proto)
                    .then(|| m.crypto.first().cloned())
                    .flatten();
                let recordable = m.media == "audio"
                    && m.port != 0
                    && (matches!(
                        m.proto.to_ascii_uppercase().as_str(),
                        "RTP/AVP" | "RTP/AVPF"
                    ) || srtp.is_some());
                let codec = recordable
                    .then(|| {
                        m.payload_types()
                            .find_map(|pt| m.codec_of(pt).map(|c| (pt, c)))
                    })
                    .flatten();
                // RFC 4733 §2.1: telephone-event runs at its audio codec's clock rate.
                let telephone_event = codec.and_then(|(_, c)| {
                    m.payload_types().find(|pt| {
                        m.encoding(*pt).is_some_and(|(n, rate)| {
                            n.eq_ignore_ascii_case("telephone-event") && rate == c.clock_rate()
                        })
                    })
                });
                let direction = m
                    .direction
                    .or(self.direction)
                    .unwrap_or(Direction::SendRecv);
                let held = m
                    .connection
                    .as_deref()
                    .or(self.connection.as_deref())
                    .is_some_and(|c| c.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified()));
                StreamAnswer {
                    index,
                    label: m.label.clone(),
                    codec,
                    telephone_event,
                    paused: held || matches!(direction, Direction::Inactive | Direction::RecvOnly),
                    srtp: srtp.filter(|_| codec.is_some()),
                }
            })
            .collect()
    }
}

/// Renders the answer. `ports[i]` is the local RTP port for m-line `i` (ignored when rejected);
/// `key` keys the answer's crypto lines (a suite takes the prefix it needs).
pub fn answer(
    offer: &Offer,
    streams: &[StreamAnswer],
    ports: &[u16],
    address: IpAddr,
    session_version: u64,
    key: &[u8; 30],
) -> String {
    let family = if address.is_ipv6() { "IP6" } else { "IP4" };
    let mut s = String::with_capacity(256 + 160 * streams.len());
    let _ = write!(
        s,
        "v=0\r\no=opname 1 {session_version} IN {family} {address}\r\ns=opname\r\nc=IN {family} {address}\r\nt=0 0\r\n"
    );
    for (m, a) in offer.media.iter().zip(streams) {
        match a.codec {
            Some((pt, codec)) => {
                let port = ports.get(a.index).copied().unwrap_or(0);
                let _ = write!(s, "m={} {port} {} {pt}", m.media, m.proto);
                if let Some(te) = a.telephone_event {
                    let _ = write!(s, " {te}");
                }
                let _ = write!(s, "\r\na=rtpmap:{pt} {}\r\n", codec.rtpmap());
                if let Some(te) = a.telephone_event {
                    let rate = m.encoding(te).map_or(8000, |(_, r)| r);
                    let _ = write!(
                        s,
                        "a=rtpmap:{te} telephone-event/{rate}\r\na=fmtp:{te} 0-15\r\n"
                    );
                }
                if let Some(c) = &a.srtp {
                    let (k, salt) = c.suite.lengths();
                    let line = crypto::answer_line(c.tag, c.suite, &key[..k + salt]);
                    let _ = write!(s, "a=crypto:{line}\r\n");
                }
            }
            None => {
                let fmt = m.formats.first().map_or("0", String::as_str);
                let _ = write!(s, "m={} 0 {} {fmt}\r\n", m.media, m.proto);
            }
        }
        if let Some(label) = &m.label {
            let _ = write!(s, "a=label:{label}\r\n");
        }
        if a.accepted() {
            s.push_str(if a.paused {
                "a=inactive\r\n"
            } else {
                "a=recvonly\r\n"
            });
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2,500 m-lines in 63 KB once took 2,500 RTP ports; four such offers emptied the pool.
    #[test]
    fn at_most_four_streams_are_offered() {
        let offer = |n: usize| {
            let mut sdp = String::from("v=0\r\nc=IN IP4 10.0.0.1\r\n");
            for i in 0..n {
                sdp += &format!("m=audio {} RTP/AVP 0\r\n", 20000 + 2 * i);
            }
            sdp
        };
        assert_eq!(
            parse(offer(MAX_STREAMS).as_bytes()).unwrap().media.len(),
            MAX_STREAMS
        );
        assert_eq!(
            parse(offer(MAX_STREAMS + 1).as_bytes()).unwrap_err(),
            SdpError::TooManyStreams
        );
        assert_eq!(
            parse(offer(2500).as_bytes()).unwrap_err(),
            SdpError::TooManyStreams
        );
    }

    const TWO_STREAMS: &str = "v=0\r\no=SRC 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 40000 RTP/AVP 18 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=label:1\r\na=sendonly\r\n\
m=audio 40002 RTP/AVP 9 0\r\na=label:2\r\na=sendonly\r\n";

    fn lines(s: &str) -> Vec<&str> {
        s.split("\r\n").filter(|l| !l.is_empty()).collect()
    }

    #[test]
    fn answers_each_mline_in_order_with_labels() {
        let offer = parse(TWO_STREAMS.as_bytes()).unwrap();
        let neg = offer.negotiate();
        assert_eq!(
            neg[0].codec,
            Some((0, Codec::Pcmu)),
            "G.729 skipped, PCMU taken"
        );
        assert_eq!(neg[0].telephone_event, Some(101));
        assert_eq!(
            neg[1].codec,
            Some((9, Codec::G722)),
            "static PT without rtpmap"
        );
        let sdp = answer(
            &offer,
            &neg,
            &[20000, 20002],
            "192.0.2.5".parse().unwrap(),
            1,
            &[0; 30],
        );
        let l = lines(&sdp);
        let m: Vec<&str> = l.iter().copied().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            m,
            ["m=audio 20000 RTP/AVP 0 101", "m=audio 20002 RTP/AVP 9"]
        );
        assert!(l.contains(&"a=label:1") && l.contains(&"a=label:2"));
        assert_eq!(l.iter().filter(|l| **l == "a=recvonly").count(), 2);
        assert!(l.contains(&"c=IN IP4 192.0.2.5"));
    }

    #[test]
    fn pause_rejection_and_no_label_added() {
        let sdp = "v=0\nc=IN IP4 0.0.0.0\nm=audio 4000 RTP/AVP 0\nm=video 0 RTP/AVP 96\nm=audio 4002 RTP/AVP 18\nm=audio 4004 RTP/SAVP 0\n";
        let offer = parse(sdp.as_bytes()).unwrap();
        let neg = offer.negotiate();
        assert!(neg[0].paused && neg[0].accepted());
        assert!(!neg[1].accepted() && !neg[2].accepted() && !neg[3].accepted());
        let ans = answer(
            &offer,
            &neg,
            &[5000, 0, 0, 0],
            "::1".parse().unwrap(),
            2,
            &[0; 30],
        );
        let l = lines(&ans);
        assert!(l.contains(&"m=video 0 RTP/AVP 96"));
        assert!(l.contains(&"m=audio 0 RTP/AVP 18"));
        assert!(l.contains(&"m=audio 0 RTP/SAVP 0"));
        assert!(l.contains(&"a=inactive"));
        assert!(l.contains(&"c=IN IP6 ::1"));
        assert!(!ans.contains("a=label"));
    }

    #[test]
    fn inactive_and_opus() {
        let sdp = "v=0\r\nm=audio 4000 RTP/AVP 111\r\na=rtpmap:111 opus/48000/2\r\na=inactive\r\n";
        let neg = parse(sdp.as_bytes()).unwrap().negotiate();
        assert_eq!(neg[0].codec, Some((111, Codec::Opus)));
        assert!(neg[0].paused);
    }

    #[test]
    fn errors() {
        assert_eq!(parse(b"v=0\r\ns=x\r\n"), Err(SdpError::NoMedia));
        assert_eq!(parse(b"v=0\r\ngarbage\r\n"), Err(SdpError::Malformed(2)));
        assert_eq!(parse(b"m=audio x RTP/AVP 0"), Err(SdpError::Malformed(1)));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            if let Ok(o) = parse(&s) {
                let n = o.negotiate();
                let _ = answer(&o, &n, &[], "127.0.0.1".parse().unwrap(), 1, &[0; 30]);
            }
        }
    }
}
