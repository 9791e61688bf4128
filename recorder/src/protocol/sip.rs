//! SIP messages on the wire: stream framing, the checks rsip leaves to its caller, and responses.
//!
//! rsip parses the start line and headers; around it this module expands compact header names
//! (`i:`, `v:`, `l:` …, which rsip would keep as unknown headers), unfolds continuation lines,
//! enforces Content-Length (RFC 3261 §18.3), and can still find enough headers in a message rsip
//! refuses to answer it with 400 instead of dropping it.

use std::fmt::Write as _;

use crate::protocol::body::find;

/// Largest message accepted on a stream before the connection is dropped.
pub const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, PartialEq)]
pub enum Framing {
    /// More bytes are needed.
    Incomplete,
    /// CRLF keep-alive of this many bytes (RFC 5626 §3.5.1); answer a double CRLF with one.
    KeepAlive { len: usize, pong: bool },
    /// A whole message of this many bytes.
    Message(usize),
    /// The stream cannot be resynchronised.
    Invalid(&'static str),
}

/// Finds the next message on a stream transport by its Content-Length.
pub fn frame_stream(buf: &[u8]) -> Framing {
    let crlfs = buf
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count();
    if crlfs > 0 {
        return Framing::KeepAlive {
            len: crlfs,
            pong: crlfs >= 4,
        };
    }
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > MAX_MESSAGE {
            Framing::Invalid("header section too large")
        } else {
            Framing::Incomplete
        };
    };
    let head = &buf[..head_end];
    let Some(len) = header_lines(head).find_map(|(n, v)| {
        matches!(canonical_name(n).as_str(), "Content-Length").then(|| v.trim().parse::<usize>())
    }) else {
        return Framing::Invalid("no Content-Length on a stream transport");
    };
    let Ok(len) = len else {
        return Framing::Invalid("Content-Length is not a number");
    };
    // Checked: a Content-Length near 2^64 must not wrap into a small frame.
    let total = head_end.checked_add(4).and_then(|h| h.checked_add(len));
    let Some(total) = total.filter(|t| *t <= MAX_MESSAGE) else {
        return Framing::Invalid("message too large");
    };
    if buf.len() < total {
        Framing::Incomplete
    } else {
        Framing::Message(total)
    }
}

/// `(name, value)` of each header line, continuation lines not unfolded.
fn header_lines(head: &[u8]) -> impl Iterator<Item = (&str, &str)> {
    head.split(|b| *b == b'\n').skip(1).filter_map(|line| {
        let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
        line.split_once(':').map(|(n, v)| (n.trim(), v.trim()))
    })
}

fn canonical_name(name: &str) -> String {
    let full = match name.to_ascii_lowercase().as_str() {
        "i" | "call-id" => "Call-ID",
        "m" | "contact" => "Contact",
        "e" | "content-encoding" => "Content-Encoding",
        "l" | "content-length" => "Content-Length",
        "c" | "content-type" => "Content-Type",
        "f" | "from" => "From",
        "s" | "subject" => "Subject",
        "k" | "supported" => "Supported",
        "t" | "to" => "To",
        "v" | "via" => "Via",
        "o" | "event" => "Event",
        "x" | "session-expires" => "Session-Expires",
        "cseq" => "CSeq",
        _ => return name.to_string(),
    };
    full.to_string()
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("not a SIP message: {0}")]
    Malformed(String),
    #[error("body shorter than Content-Length")]
    Truncated,
}

/// A parsed message, headers in canonical names and wire order.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub start: Start,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    Request { method: rsip::Method, uri: String },
    Response { status: u16 },
}

/// Parses one message. `datagram`: a body longer than Content-Length is cut to it; over streams
/// the framer already did.
pub fn parse(raw: &[u8], datagram: bool) -> Result<Message, ParseError> {
    let (head, body) =
        split_head(raw).ok_or_else(|| ParseError::Malformed("no header end".into()))?;
    let head = std::str::from_utf8(head)
        .map_err(|_| ParseError::Malformed("header section is not UTF-8".into()))?;
    let mut lines = head.lines().map(|l| l.trim_end_matches('\r'));
    let start_line = lines.next().unwrap_or_default();
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            match headers.last_mut() {
                Some((_, v)) => {
                    v.push(' ');
                    v.push_str(line.trim());
                }
                None => return Err(ParseError::Malformed("continuation without header".into())),
            }
            continue;
        }
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| ParseError::Malformed(format!("header line {line:?}")))?;
        headers.push((canonical_name(n.trim()), v.trim().to_string()));
    }
    let mut body = body.to_vec();
    let content_length = headers.iter().find(|(n, _)| n == "Content-Length");
    if content_length.is_none() && !datagram {
        return Err(ParseError::Malformed(
            "Content-Length is required on stream transports".into(),
        ));
    }
    if let Some((_, cl)) = content_length {
        let cl: usize = cl
            .parse()
            .map_err(|_| ParseError::Malformed("Content-Length is not a number".into()))?;
        if cl > body.len() {
            return Err(ParseError::Truncated);
        }
        if datagram || cl < body.len() {
            body.truncate(cl);
        }
    }
    // rsip validates the start line and every header in its own grammar.
    let mut normalised = String::with_capacity(head.len() + 64);
    normalised.push_str(start_line);
    normalised.push_str("\r\n");
    for (n, v) in &headers {
        let _ = write!(normalised, "{n}: {v}\r\n");
    }
    normalised.push_str("\r\n");
    let parsed = rsip::SipMessage::try_from(normalised.as_bytes())
        .map_err(|e| ParseError::Malformed(e.to_string()))?;
    let start = match parsed {
        rsip::SipMessage::Request(r) => Start::Request {
            method: r.method,
            uri: r.uri.to_string(),
        },
        rsip::SipMessage::Response(r) => Start::Response {
            status: r.status_code.code(),
        },
    };
    let msg = Message {
        start,
        headers,
        body,
    };
    for required in ["Via", "From", "To", "Call-ID", "CSeq"] {
        if msg.header(required).is_none() {
            return Err(ParseError::Malformed(format!("no {required} header")));
        }
    }
    if msg.cseq().is_none() {
        return Err(ParseError::Malformed("CSeq is not `number METHOD`".into()));
    }
    Ok(msg)
}

fn split_head(raw: &[u8]) -> Option<(&[u8], &[u8])> {
    let raw = &raw[raw
        .iter()
        .take_while(|b| matches!(b, b'\r' | b'\n'))
        .count()..];
    match (find(raw, b"\r\n\r\n"), find(raw, b"\n\n")) {
        (Some(a), Some(b)) if b + 1 < a => Some((&raw[..b], &raw[b + 2..])),
        (Some(a), _) => Some((&raw[..a], &raw[a + 4..])),
        (None, Some(b)) => Some((&raw[..b], &raw[b + 2..])),
        (None, None) => None,
    }
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn method(&self) -> Option<&rsip::Method> {
        match &self.start {
            Start::Request { method, .. } => Some(method),
            Start::Response { .. } => None,
        }
    }

    pub fn call_id(&self) -> &str {
        self.header("Call-ID").unwrap_or_default()
    }

    /// `(number, method)` of CSeq.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let mut it = self.header("CSeq")?.split_whitespace();
        Some((it.next()?.parse().ok()?, it.next()?))
    }

    pub fn from_tag(&self) -> Option<&str> {
        self.header("From").and_then(tag_of)
    }

    pub fn to_tag(&self) -> Option<&str> {
        self.header("To").and_then(tag_of)
    }

    /// Branch of the topmost Via; the transaction key (RFC 3261 §17.2.3).
    pub fn branch(&self) -> Option<&str> {
        let top = self.header("Via")?.split(',').next()?;
        param(top, "branch")
    }

    /// The URI inside the first Contact, without display name or header params.
    pub fn contact_uri(&self) -> Option<String> {
        let c = self.header("Contact")?;
        Some(match (c.find('<'), c.find('>')) {
            (Some(a), Some(b)) if a < b => c[a + 1..b].to_string(),
            _ => c.split(';').next().unwrap_or(c).trim().to_string(),
        })
    }
}

fn tag_of(header: &str) -> Option<&str> {
    // Parameters after the closing `>` (or after the URI when there are no brackets).
    let params = match header.rfind('>') {
        Some(i) => &header[i + 1..],
        None => header,
    };
    param(params, "tag")
}

fn param<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    s.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Headers a response is built from, also recoverable from messages rsip refuses.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplyHeaders {
    pub via: Vec<String>,
    pub record_route: Vec<String>,
    pub from: String,
    pub to: String,
    pub call_id: String,
    pub cseq: String,
}

impl ReplyHeaders {
    pub fn of(msg: &Message) -> Self {
        let all = |n: &str| msg.headers_named(n).map(str::to_string).collect::<Vec<_>>();
        Self {
            via: all("Via"),
            record_route: all("Record-Route"),
            from: msg.header("From").unwrap_or_default().to_string(),
            to: msg.header("To").unwrap_or_default().to_string(),
            call_id: msg.call_id().to_string(),
            cseq: msg.header("CSeq").unwrap_or_default().to_string(),
        }
    }

    /// Scans a request that failed to parse for what a 400 needs; `None` for responses, garbage
    /// or when a needed header is missing (then the message is dropped, RFC 3261 §16.3).
    pub fn salvage(raw: &[u8]) -> Option<Self> {
        let text = String::from_utf8_lossy(raw);
        let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
        let first = lines.next()?;
        let mut parts = first.split(' ');
        let method = parts.next()?;
        if first.starts_with("SIP/")
            || method.is_empty()
            || !method.bytes().all(|b| b.is_ascii_uppercase())
        {
            return None;
        }
        let mut r = Self {
            via: Vec::new(),
            record_route: Vec::new(),
            from: String::new(),
            to: String::new(),
            call_id: String::new(),
            cseq: String::new(),
        };
        for line in lines.take_while(|l| !l.is_empty()) {
            let Some((n, v)) = line.split_once(':') else {
                continue;
            };
            let v = v.trim().to_string();
            match canonical_name(n.trim()).as_str() {
                "Via" => r.via.push(v),
                "From" => r.from = v,
                "To" => r.to = v,
                "Call-ID" => r.call_id = v,
                "CSeq" => r.cseq = v,
                _ => {}
            }
        }
        let complete = !r.via.is_empty()
            && [&r.from, &r.to, &r.call_id, &r.cseq]
                .iter()
                .all(|s| !s.is_empty());
        complete.then_some(r)
    }
}

pub const SERVER: &str = concat!("opname-recorder/", env!("CARGO_PKG_VERSION"));
pub const ALLOW: &str = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO";

/// Renders a response. `to_tag` is added when the request's To has none.
pub fn response(
    h: &ReplyHeaders,
    status: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Vec<u8> {
    let mut s = String::with_capacity(512);
    let _ = write!(s, "SIP/2.0 {status} {reason}\r\n");
    for v in &h.via {
        let _ = write!(s, "Via: {v}\r\n");
    }
    if (101..300).contains(&status) && h.cseq.ends_with("INVITE") {
        for rr in &h.record_route {
            let _ = write!(s, "Record-Route: {rr}\r\n");
        }
    }
    let _ = write!(s, "From: {}\r\n", h.from);
    match to_tag {
        Some(tag) if tag_of(&h.to).is_none() => {
            let _ = write!(s, "To: {};tag={tag}\r\n", h.to);
        }
        _ => {
            let _ = write!(s, "To: {}\r\n", h.to);
        }
    }
    let _ = write!(
        s,
        "Call-ID: {}\r\nCSeq: {}\r\nServer: {SERVER}\r\n",
        h.call_id, h.cseq
    );
    for (n, v) in extra {
        let _ = write!(s, "{n}: {v}\r\n");
    }
    let mut out = match body {
        Some((ct, b)) => {
            let _ = write!(
                s,
                "Content-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
                b.len()
            );
            let mut out = s.into_bytes();
            out.extend_from_slice(b);
            out
        }
        None => {
            s.push_str("Content-Length: 0\r\n\r\n");
            s.into_bytes()
        }
    };
    out.shrink_to_fit();
    out
}

/// The URI in a From/To/Contact header value (`"A" <sip:a@b>;tag=x` → `sip:a@b`).
pub fn uri_of(header: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:srs@10.0.0.2 SIP/2.0\r\nv: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;rport\r\nVia: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-0\r\nf: <sip:src@10.0.0.1>;tag=abc\r\nt: <sip:srs@10.0.0.2>\r\ni: call-1@10.0.0.1\r\nCSeq: 1 INVITE\r\nm: <sip:src@10.0.0.1:5060>;+sip.src\r\nSubject: folded\r\n  line\r\nc: application/sdp\r\nl: 4\r\n\r\nv=0\r\nEXTRA";

    #[test]
    fn compact_forms_folding_and_datagram_cut() {
        let m = parse(INVITE.as_bytes(), true).unwrap();
        assert_eq!(m.method(), Some(&rsip::Method::Invite));
        assert_eq!(m.call_id(), "call-1@10.0.0.1");
        assert_eq!(m.branch(), Some("z9hG4bK-1"));
        assert_eq!(m.from_tag(), Some("abc"));
        assert_eq!(m.to_tag(), None);
        assert_eq!(m.cseq(), Some((1, "INVITE")));
        assert_eq!(m.header("Subject"), Some("folded line"));
        assert_eq!(m.contact_uri().as_deref(), Some("sip:src@10.0.0.1:5060"));
        assert_eq!(m.body, b"v=0\r");
        assert_eq!(m.headers_named("Via").count(), 2);
    }

    #[test]
    fn truncated_and_malformed() {
        let short = INVITE.replace("l: 4", "l: 400");
        assert_eq!(parse(short.as_bytes(), true), Err(ParseError::Truncated));
        assert!(matches!(
            parse(b"hello\r\n\r\n", true),
            Err(ParseError::Malformed(_))
        ));
        let no_cseq = INVITE.replace("CSeq: 1 INVITE\r\n", "");
        assert!(matches!(
            parse(no_cseq.as_bytes(), true),
            Err(ParseError::Malformed(_))
        ));
        let salvaged = ReplyHeaders::salvage(short.as_bytes()).unwrap();
        assert_eq!(salvaged.call_id, "call-1@10.0.0.1");
        assert_eq!(salvaged.via.len(), 2);
        assert!(ReplyHeaders::salvage(b"SIP/2.0 200 OK\r\n\r\n").is_none());
        assert!(ReplyHeaders::salvage(b"\x00\x01garbage").is_none());
    }

    /// A Content-Length near 2^64 (236 bytes that once wrapped the frame length in release
    /// builds and spun the connection task) is refused, as is anything above the limit.
    #[test]
    fn a_content_length_that_would_wrap_is_refused() {
        for len in [u64::MAX, u64::MAX - 3, (MAX_MESSAGE as u64) + 1] {
            let msg = format!(
                "OPTIONS sip:srs@x SIP/2.0\r\nVia: SIP/2.0/TCP a;branch=z9hG4bK1\r\nContent-Length: {len}\r\n\r\n"
            );
            assert_eq!(
                frame_stream(msg.as_bytes()),
                Framing::Invalid("message too large"),
                "{len}"
            );
        }
    }

    #[test]
    fn framing() {
        let msg = INVITE.replace("l: 4", "l: 10");
        let mut buf = b"\r\n\r\n".to_vec();
        assert_eq!(
            frame_stream(&buf),
            Framing::KeepAlive { len: 4, pong: true }
        );
        buf.clear();
        buf.extend_from_slice(&msg.as_bytes()[..40]);
        assert_eq!(frame_stream(&buf), Framing::Incomplete);
        buf.clear();
        buf.extend_from_slice(msg.as_bytes());
        buf.extend_from_slice(b"OPTIONS");
        let head_end = find(msg.as_bytes(), b"\r\n\r\n").unwrap();
        assert_eq!(frame_stream(&buf), Framing::Message(head_end + 4 + 10));
        assert_eq!(
            frame_stream(b"INVITE x SIP/2.0\r\nVia: a\r\n\r\n"),
            Framing::Invalid("no Content-Length on a stream transport")
        );
    }

    #[test]
    fn response_adds_tag_and_copies_record_route() {
        let mut m = parse(INVITE.as_bytes(), true).unwrap();
        m.headers
            .push(("Record-Route".into(), "<sip:sbc;lr>".into()));
        let h = ReplyHeaders::of(&m);
        let r = String::from_utf8(response(
            &h,
            200,
            "OK",
            Some("t1"),
            &[],
            Some(("application/sdp", b"v=0\r\n")),
        ))
        .unwrap();
        assert!(r.starts_with("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK-1;rport\r\nVia: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-0\r\nRecord-Route: <sip:sbc;lr>\r\n"));
        assert!(r.contains("To: <sip:srs@10.0.0.2>;tag=t1\r\n"));
        assert!(r.ends_with("Content-Length: 5\r\n\r\nv=0\r\n"));
        let back = parse(&response(&h, 486, "Busy", Some("t1"), &[], None), true).unwrap();
        assert_eq!(back.start, Start::Response { status: 486 });
        assert!(
            !String::from_utf8_lossy(&response(&h, 486, "Busy", None, &[], None))
                .contains("Record-Route")
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = parse(&raw, true);
            let _ = frame_stream(&raw);
            let _ = ReplyHeaders::salvage(&raw);
        }

        #[test]
        fn mutated_invite_never_panics(pos in 0usize..400, byte in proptest::prelude::any::<u8>(), cut in 0usize..420) {
            let mut raw = INVITE.as_bytes().to_vec();
            let p = pos % raw.len();
            raw[p] = byte;
            raw.truncate(cut.max(1));
            let _ = parse(&raw, true);
            let _ = frame_stream(&raw);
        }
    }
}
