//! Recording metadata (RFC 7865) in the three generations SRCs send.
//!
//! Matching is by local element name, case-insensitively, ignoring namespaces and prefixes, so
//! the RFC namespace `urn:ietf:params:xml:ns:recording:1`, the draft namespace without `:1`
//! (`id`/`session` attributes, `<send>` inside `<participant>`) and BroadWorks-style
//! `recording_metadata` (`urn:ietf:params:xml:ns:siprec`, `<aor>` elements) are read alike.

use std::collections::BTreeMap;

use roxmltree::{Document, Node};
use serde::Serialize;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetadataError {
    #[error("recording metadata is not well-formed XML: {0}")]
    Xml(String),
    #[error("recording metadata root element is <{0}>, not <recording>")]
    Root(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataMode {
    #[default]
    Complete,
    Partial,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Participant {
    pub id: String,
    pub aor: Option<String>,
    pub name: Option<String>,
    /// Stream ids this participant sends.
    pub send: Vec<String>,
    pub associate_time: Option<String>,
    pub disassociate_time: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Stream {
    pub id: String,
    pub label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Metadata {
    pub datamode: DataMode,
    /// The SIPREC (communication) session id.
    pub session_id: Option<String>,
    pub participants: Vec<Participant>,
    pub streams: Vec<Stream>,
    /// Vendor correlation ids (UCID, Cisco GUID, Ribbon GCID, call-half ids, call SIDs…).
    pub correlation: BTreeMap<String, String>,
}

fn lname<'a>(n: &Node<'a, '_>) -> String {
    n.tag_name().name().to_ascii_lowercase()
}

fn attr<'a>(n: &Node<'a, '_>, names: &[&str]) -> Option<String> {
    n.attributes()
        .find(|a| names.iter().any(|w| a.name().eq_ignore_ascii_case(w)))
        .map(|a| a.value().trim().to_string())
        .filter(|v| !v.is_empty())
}

fn text(n: &Node) -> Option<String> {
    let t: String = n
        .descendants()
        .filter(|d| d.is_text())
        .filter_map(|d| d.text())
        .collect();
    let t = t.trim();
    (!t.is_empty()).then(|| t.to_string())
}

fn child<'a, 'i>(n: &Node<'a, 'i>, names: &[&str]) -> Option<Node<'a, 'i>> {
    n.children()
        .filter(Node::is_element)
        .find(|c| names.contains(&lname(c).as_str()))
}

/// Leaf element names worth keeping as correlation ids, lowercased.
const CORRELATION: &[&str] = &[
    "ucid",
    "guid",
    "gcid",
    "callid",
    "call-id",
    "callsid",
    "call_sid",
    "sessionid",
    "session-id",
    "callhalfid",
    "call-half-id",
    "callingparty",
    "xrefci",
    "ccid",
];

/// Participants and streams one session's metadata keeps, however many messages name: a
/// conference recording has a few dozen participants, and partial updates (RFC 7865) must not
/// grow a session without bound.
pub const MAX_PARTICIPANTS: usize = 64;
pub const MAX_STREAMS: usize = 16;

pub fn parse(body: &[u8]) -> Result<Metadata, MetadataError> {
    let text_body = std::str::from_utf8(body).map_err(|e| MetadataError::Xml(e.to_string()))?;
    let doc = Document::parse(text_body.trim_start_matches('\u{feff}'))
        .map_err(|e| MetadataError::Xml(e.to_string()))?;
    let root = doc.root_element();
    let root_name = lname(&root);
    if !matches!(root_name.as_str(), "recording" | "recording_metadata") {
        return Err(MetadataError::Root(root.tag_name().name().to_string()));
    }
    let mut md = Metadata::default();
    // Stream associations given separately (RFC 7865 participantstreamassoc).
    let mut sends: Vec<(String, String)> = Vec::new();
    let mut times: Vec<(String, Option<String>, Option<String>)> = Vec::new();
    for node in root.children().filter(Node::is_element) {
        match lname(&node).as_str() {
            "datamode" if text(&node).is_some_and(|t| t.eq_ignore_ascii_case("partial")) => {
                md.datamode = DataMode::Partial;
            }
            "session" => {
                md.session_id = md.session_id.or_else(|| {
                    attr(&node, &["session_id", "id"])
                        .or_else(|| child(&node, &["sipsessionid"]).and_then(|c| text(&c)))
                });
            }
            "participant" if md.participants.len() < MAX_PARTICIPANTS => {
                md.participants.push(participant(&node));
            }
            "stream" if md.streams.len() < MAX_STREAMS => md.streams.push(Stream {
                id: attr(&node, &["stream_id", "id"]).unwrap_or_default(),
                label: child(&node, &["label"]).and_then(|c| text(&c)),
            }),
            "participantstreamassoc" => {
                if let Some(pid) = attr(&node, &["participant_id", "participant"]) {
                    for s in node.children().filter(|c| lname(c) == "send") {
                        if let Some(sid) = text(&s) {
                            sends.push((pid.clone(), sid));
                        }
                    }
                }
            }
            "participantsessionassoc" => {
                if let Some(pid) = attr(&node, &["participant_id", "participant"]) {
                    times.push((
                        pid,
                        child(&node, &["associate-time"]).and_then(|c| text(&c)),
                        child(&node, &["disassociate-time"]).and_then(|c| text(&c)),
                    ));
                }
            }
            _ => {}
        }
    }
    for (pid, sid) in sends {
        let Some(p) = md.participant_mut(pid) else {
            continue;
        };
        if !p.send.contains(&sid) && p.send.len() < MAX_STREAMS {
            p.send.push(sid);
        }
    }
    for (pid, assoc, disassoc) in times {
        let Some(p) = md.participant_mut(pid) else {
            continue;
        };
        p.associate_time = p.associate_time.take().or(assoc);
        p.disassociate_time = p.disassociate_time.take().or(disassoc);
    }
    for n in root.descendants().filter(Node::is_element) {
        let name = lname(&n);
        if CORRELATION.contains(&name.as_str())
            && !n.children().any(|c| c.is_element())
            && let Some(v) = text(&n)
        {
            md.correlation.entry(name).or_insert(v);
        }
    }
    Ok(md)
}

fn participant(node: &Node) -> Participant {
    let name_id = child(node, &["nameid"]);
    let aor = name_id
        .as_ref()
        .and_then(|n| attr(n, &["aor"]).or_else(|| child(n, &["aor"]).and_then(|c| text(&c))))
        .or_else(|| child(node, &["aor"]).and_then(|c| text(&c)))
        .or_else(|| attr(node, &["aor"]));
    let name = name_id
        .as_ref()
        .and_then(|n| child(n, &["name"]))
        .or_else(|| child(node, &["name"]))
        .and_then(|c| text(&c));
    Participant {
        id: attr(node, &["participant_id", "id"]).unwrap_or_default(),
        aor,
        name,
        send: node
            .children()
            .filter(|c| lname(c) == "send")
            .filter_map(|c| text(&c))
            .collect(),
        associate_time: child(node, &["associate-time"]).and_then(|c| text(&c)),
        disassociate_time: child(node, &["disassociate-time"]).and_then(|c| text(&c)),
    }
}

impl Metadata {
    /// The participant with this id, added when an association names one not yet listed (while
    /// there is room).
    fn participant_mut(&mut self, id: String) -> Option<&mut Participant> {
        let i = match self.participants.iter().position(|p| p.id == id) {
            Some(i) => i,
            None if self.participants.len() >= MAX_PARTICIPANTS => return None,
            None => {
                self.participants.push(Participant {
                    id,
                    ..Default::default()
                });
                self.participants.len() - 1
            }
        };
        Some(&mut self.participants[i])
    }

    /// Applies an update: `complete` replaces the view, `partial` merges into it (participants
    /// and streams by id, correlation ids added).
    pub fn apply(&mut self, update: Metadata) {
        if update.datamode == DataMode::Complete {
            let correlation = std::mem::take(&mut self.correlation);
            *self = update;
            for (k, v) in correlation {
                self.correlation.entry(k).or_insert(v);
            }
            return;
        }
        for p in update.participants {
            let room = self.participants.len() < MAX_PARTICIPANTS;
            match self.participants.iter_mut().find(|q| q.id == p.id) {
                Some(q) => {
                    q.aor = p.aor.or(q.aor.take());
                    q.name = p.name.or(q.name.take());
                    for s in p.send {
                        if !q.send.contains(&s) && q.send.len() < MAX_STREAMS {
                            q.send.push(s);
                        }
                    }
                    q.associate_time = p.associate_time.or(q.associate_time.take());
                    q.disassociate_time = p.disassociate_time.or(q.disassociate_time.take());
                }
                None if room => self.participants.push(p),
                None => {}
            }
        }
        for s in update.streams {
            let room = self.streams.len() < MAX_STREAMS;
            match self.streams.iter_mut().find(|t| t.id == s.id) {
                Some(t) => t.label = s.label.or(t.label.take()),
                None if room => self.streams.push(s),
                None => {}
            }
        }
        self.session_id = self.session_id.take().or(update.session_id);
        self.correlation.extend(update.correlation);
    }

    /// The participant that sends the stream with this SDP label, if the metadata says so.
    pub fn sender_of_label(&self, label: &str) -> Option<usize> {
        let stream = self
            .streams
            .iter()
            .find(|s| s.label.as_deref() == Some(label))?;
        self.participants
            .iter()
            .position(|p| p.send.contains(&stream.id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const RFC7865: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<recording xmlns='urn:ietf:params:xml:ns:recording:1'>
  <datamode>complete</datamode>
  <session session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <sipSessionID>ab30317f1a784dc48ff824d0d3715d86;remote=47755a9de7794ba387653f2099600ef2</sipSessionID>
  </session>
  <participant participant_id="srfBElmCRp2QB23b7Mpk0w==">
    <nameID aor="sip:bob@biloxi.com"><name xml:lang="it">Bob</name></nameID>
  </participant>
  <participant participant_id="zSfPoSvdSDCmU3A3TRDxAw==">
    <nameID aor="sip:alice@atlanta.com"><name>Alice</name></nameID>
  </participant>
  <stream stream_id="UAAMm5GRQKSCMVvLyl4rFw==" session_id="hVpd7YQgRW2nD22h7q60JQ=="><label>96</label></stream>
  <stream stream_id="i1Pz3to5hGk8fuXl+PbwCw==" session_id="hVpd7YQgRW2nD22h7q60JQ=="><label>97</label></stream>
  <participantsessionassoc participant_id="srfBElmCRp2QB23b7Mpk0w==" session_id="hVpd7YQgRW2nD22h7q60JQ==">
    <associate-time>2010-12-16T23:41:07Z</associate-time>
  </participantsessionassoc>
  <participantstreamassoc participant_id="srfBElmCRp2QB23b7Mpk0w==">
    <send>i1Pz3to5hGk8fuXl+PbwCw==</send><recv>UAAMm5GRQKSCMVvLyl4rFw==</recv>
  </participantstreamassoc>
  <participantstreamassoc participant_id="zSfPoSvdSDCmU3A3TRDxAw==">
    <send>UAAMm5GRQKSCMVvLyl4rFw==</send><recv>i1Pz3to5hGk8fuXl+PbwCw==</recv>
  </participantstreamassoc>
</recording>"#;

    #[test]
    fn rfc7865() {
        let md = parse(RFC7865.as_bytes()).unwrap();
        assert_eq!(md.datamode, DataMode::Complete);
        assert_eq!(md.session_id.as_deref(), Some("hVpd7YQgRW2nD22h7q60JQ=="));
        assert_eq!(md.participants.len(), 2);
        assert_eq!(
            md.participants[0].aor.as_deref(),
            Some("sip:bob@biloxi.com")
        );
        assert_eq!(md.participants[0].name.as_deref(), Some("Bob"));
        assert_eq!(
            md.participants[0].associate_time.as_deref(),
            Some("2010-12-16T23:41:07Z")
        );
        assert_eq!(md.sender_of_label("96"), Some(1));
        assert_eq!(md.sender_of_label("97"), Some(0));
        assert_eq!(md.sender_of_label("98"), None);
    }

    #[test]
    fn draft_with_prefixes_and_vendor_extension() {
        let xml = r#"<tns:recording xmlns:tns="urn:ietf:params:xml:ns:recording" xmlns:apkt="http://acmepacket.com/siprec/extensiondata">
<tns:dataMode>partial</tns:dataMode>
<tns:session id="s1"><tns:extensiondata><apkt:ucid>00FA080018803B69810C5D;encoding=hex</apkt:ucid></tns:extensiondata></tns:session>
<tns:participant id="p1" session="s1"><tns:nameID aor="+31201234567@10.0.0.1"><tns:name>Caller</tns:name></tns:nameID><tns:send>st1</tns:send><tns:recv>st2</tns:recv></tns:participant>
<tns:participant id="p2" session="s1"><tns:nameID aor="sip:1001@pbx"/><tns:send>st2</tns:send></tns:participant>
<tns:stream id="st1" session="s1"><tns:label>1</tns:label><tns:mode>separate</tns:mode></tns:stream>
<tns:stream id="st2" session="s1"><tns:label>2</tns:label></tns:stream>
</tns:recording>"#;
        let md = parse(xml.as_bytes()).unwrap();
        assert_eq!(md.datamode, DataMode::Partial);
        assert_eq!(md.session_id.as_deref(), Some("s1"));
        assert_eq!(md.participants[1].aor.as_deref(), Some("sip:1001@pbx"));
        assert_eq!(md.sender_of_label("1"), Some(0));
        assert_eq!(md.sender_of_label("2"), Some(1));
        assert_eq!(
            md.correlation.get("ucid").map(String::as_str),
            Some("00FA080018803B69810C5D;encoding=hex")
        );
    }

    #[test]
    fn broadworks_legacy() {
        let xml = r#"<recording_metadata xmlns="urn:ietf:params:xml:ns:siprec">
<dataMode>complete</dataMode><session id="bw1"/>
<participant id="a"><aor>tel:+15551230000</aor><name>Ann</name><send>mix</send></participant>
<participant id="b"><aor>sip:+15559870000@bw.example</aor></participant>
<stream id="mix" session="bw1"><label>1</label><mode>mixed</mode></stream>
<callHalfId>1234:0</callHalfId>
</recording_metadata>"#;
        let md = parse(xml.as_bytes()).unwrap();
        assert_eq!(md.participants.len(), 2);
        assert_eq!(md.participants[0].aor.as_deref(), Some("tel:+15551230000"));
        assert_eq!(
            md.participants[1].aor.as_deref(),
            Some("sip:+15559870000@bw.example")
        );
        assert_eq!(
            md.correlation.get("callhalfid").map(String::as_str),
            Some("1234:0")
        );
    }

    /// Partial updates naming new participants forever keep a session at its bound.
    #[test]
    fn partial_updates_cannot_grow_a_session_without_bound() {
        let mut md = parse(
            br#"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><participant participant_id='a'><nameID aor='sip:a@x'/></participant></recording>"#,
        )
        .unwrap();
        for i in 0..500 {
            let body = format!(
                "<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>partial</datamode><participant participant_id='p{i}'><nameID aor='sip:{i}@x'/></participant><stream stream_id='s{i}'/><participantstreamassoc participant_id='q{i}'><send>s{i}</send></participantstreamassoc></recording>"
            );
            md.apply(parse(body.as_bytes()).unwrap());
        }
        assert_eq!(md.participants.len(), MAX_PARTICIPANTS);
        assert_eq!(md.streams.len(), MAX_STREAMS);
        assert_eq!(
            md.participants[0].aor.as_deref(),
            Some("sip:a@x"),
            "the first stay"
        );
        // One message naming thousands is cut at the bound too.
        let many: String = (0..2000)
            .map(|i| format!("<participant participant_id='m{i}'/><participantstreamassoc participant_id='n{i}'><send>s</send></participantstreamassoc>"))
            .collect();
        let big = parse(
            format!("<recording xmlns='urn:ietf:params:xml:ns:recording:1'>{many}</recording>")
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(big.participants.len(), MAX_PARTICIPANTS);
    }

    #[test]
    fn partial_update_merges_and_complete_replaces() {
        let mut md = parse(RFC7865.as_bytes()).unwrap();
        let leave = r#"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>partial</datamode>
<participantsessionassoc participant_id="srfBElmCRp2QB23b7Mpk0w==" session_id="x"><disassociate-time>2010-12-16T23:45:00Z</disassociate-time></participantsessionassoc>
<participant participant_id="new1"><nameID aor="sip:carol@c.example"/></participant>
</recording>"#;
        md.apply(parse(leave.as_bytes()).unwrap());
        assert_eq!(md.participants.len(), 3);
        assert_eq!(
            md.participants[0].disassociate_time.as_deref(),
            Some("2010-12-16T23:45:00Z")
        );
        assert_eq!(md.participants[0].send, ["i1Pz3to5hGk8fuXl+PbwCw=="]);
        let complete = r#"<recording xmlns='urn:ietf:params:xml:ns:recording:1'><datamode>complete</datamode>
<participant participant_id="z"><nameID aor="sip:dave@d"/></participant></recording>"#;
        md.apply(parse(complete.as_bytes()).unwrap());
        assert_eq!(md.participants.len(), 1);
        assert_eq!(md.session_id, None);
    }

    #[test]
    fn errors() {
        assert!(matches!(
            parse(b"<recording><participant>"),
            Err(MetadataError::Xml(_))
        ));
        assert!(matches!(parse(b"<foo/>"), Err(MetadataError::Root(_))));
        assert!(matches!(parse(&[0xff, 0xfe]), Err(MetadataError::Xml(_))));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,300}") {
            let _ = parse(s.as_bytes());
            let wrapped = format!("<recording>{s}</recording>");
            let _ = parse(wrapped.as_bytes());
        }
    }
}
