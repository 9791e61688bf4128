//! Vendor-style SIPREC requests (tests/corpus/*.sip), each with the answer it must get, driven
//! through the sans-IO core without a network.
//!
//! A corpus file holds one or more messages separated by `---` lines. `# key: value` lines
//! before a message state what its final response must show (see `check`). Header lines get
//! CRLF endings; the body too unless `body-crlf: false`; `Content-Length: *` is filled in;
//! `{{to_tag}}` becomes the tag of the recorder's first final response.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opname_model::config::Config;
use opname_recorder::protocol::sip::{self, Message, Start};
use opname_recorder::siprec::policy::PolicyTable;
use opname_recorder::siprec::{
    Action, Channel, CoreConfig, EndReason, MediaStream, Peer, Srs, StartRecording, Transport,
};

const POLICIES: &str = r#"
namespace: acme
policies:
  - name: alice
    user: alice@example.com
    identities: ["sip:alice@example.com", "tel:+31201234567", "1001", "+1 312 555 0100"]
    retentionDays: 90
  - name: dormant
    user: dora@example.com
    identities: ["sip:dora1@example.com"]
    retentionDays: 30
    suspended: true
"#;

fn core(max_calls: usize) -> Srs {
    core_with(max_calls, Default::default())
}

fn core_with(max_calls: usize, sources: opname_model::config::SipConfig) -> Srs {
    let config = Config::parse(POLICIES).unwrap();
    let (table, _) = PolicyTable::build(&config);
    Srs::new(
        CoreConfig {
            sip_host: "192.0.2.10:5060".into(),
            rtp_advertise: "192.0.2.10".parse().unwrap(),
            port_min: 20000,
            port_max: 20999,
            max_calls,
            retry_after: 7,
            latching: false,
            tls_host: None,
            plain_with_tls: true,
            sources,
        },
        Arc::new(table),
        std::hash::RandomState::new(),
    )
}

/// Expectation keys; other `#` lines are prose.
const KEYS: &[&str] = &[
    "expect",
    "answer-mlines",
    "answer-has",
    "answer-lacks",
    "policy",
    "channels",
    "correlation",
    "paused",
    "same-ports",
    "participants",
    "stopped",
    "not-stopped",
    "participant-channels",
    "no-start",
    "no-body",
    "header",
    "body-crlf",
];

struct Step {
    expect: Vec<(String, String)>,
    text: String,
}

fn load(path: &Path) -> Vec<Step> {
    let content = std::fs::read_to_string(path).unwrap();
    content
        .split("\n---\n")
        .map(|chunk| {
            let mut expect = Vec::new();
            let mut lines = chunk.lines().peekable();
            while let Some(l) = lines.peek() {
                let Some(c) = l.strip_prefix('#') else { break };
                if let Some((k, v)) = c.trim().split_once(": ")
                    && KEYS.contains(&k.trim())
                {
                    expect.push((k.trim().to_string(), v.trim().to_string()));
                }
                lines.next();
            }
            Step {
                expect,
                text: lines.collect::<Vec<_>>().join("\n") + "\n",
            }
        })
        .collect()
}

fn render(step: &Step, to_tag: &str) -> Vec<u8> {
    let text = step.text.replace("{{to_tag}}", to_tag);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let body_crlf = !step
        .expect
        .iter()
        .any(|(k, v)| k == "body-crlf" && v == "false");
    let body = if body_crlf {
        body.replace('\n', "\r\n")
    } else {
        body.to_string()
    };
    let head: Vec<String> = head
        .lines()
        .map(|l| match l.split_once(':') {
            Some((n, v)) if v.trim() == "*" => format!("{n}: {}", body.len()),
            _ => l.to_string(),
        })
        .collect();
    format!("{}\r\n\r\n{body}", head.join("\r\n")).into_bytes()
}

fn wildmatch(pattern: &str, line: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let mut rest = line;
    for (i, p) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(p) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(p);
        } else {
            let Some(at) = rest.find(p) else { return false };
            rest = &rest[at + p.len()..];
        }
    }
    rest.is_empty()
}

fn sdp_lines(body: &[u8], prefix: &str) -> Vec<String> {
    String::from_utf8_lossy(body)
        .lines()
        .map(|l| l.trim_end().to_string())
        .filter(|l| l.starts_with(prefix))
        .collect()
}

fn channels(streams: &[MediaStream]) -> String {
    streams
        .iter()
        .filter(|s| s.port != 0)
        .map(|s| match s.channel {
            Channel::Left => "left",
            Channel::Right => "right",
            Channel::Both => "both",
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn run_file(path: &Path) {
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let mut srs = core(10);
    let mut to_tag = String::new();
    let mut started: Option<StartRecording> = None;
    let now = Instant::now();
    for (n, step) in load(path).iter().enumerate() {
        let ctx = format!("{name} message {}", n + 1);
        let raw = render(step, &to_tag);
        let request = sip::parse(&raw, true)
            .unwrap_or_else(|e| panic!("{ctx}: corpus message does not parse: {e}"));
        let transport = if request.header("Via").unwrap().contains("/TCP") {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        let peer = Peer {
            transport,
            addr: SocketAddr::from(([10, 0, 0, 1], 5060)),
            conn: 1,
        };
        let actions = srs.handle_message(peer, &raw, now);
        let responses: Vec<Message> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { data, .. } => Some(
                    sip::parse(data, true)
                        .unwrap_or_else(|e| panic!("{ctx}: our response does not parse: {e}")),
                ),
                _ => None,
            })
            .collect();
        let status = |m: &Message| match m.start {
            Start::Response { status } => status,
            Start::Request { .. } => 0,
        };
        let last = responses
            .iter()
            .rfind(|m| status(m) >= 200)
            .unwrap_or_else(|| panic!("{ctx}: no final response"));
        let is_invite = request.method() == Some(&rsip::Method::Invite);
        if is_invite && status(last) == 200 {
            assert_eq!(
                status(&responses[0]),
                100,
                "{ctx}: INVITE gets 100 Trying first"
            );
        }
        for m in &responses {
            assert_eq!(m.call_id(), request.call_id(), "{ctx}: Call-ID copied");
            assert_eq!(
                m.header("CSeq"),
                request.header("CSeq"),
                "{ctx}: CSeq copied"
            );
            assert_eq!(
                m.headers_named("Via").count(),
                request.headers_named("Via").count(),
                "{ctx}: every Via copied"
            );
        }
        let start = actions.iter().find_map(|a| match a {
            Action::Start(s) => Some((**s).clone()),
            _ => None,
        });
        let update = actions.iter().find_map(|a| match a {
            Action::Update {
                streams, metadata, ..
            } => Some((streams.clone(), metadata.clone())),
            _ => None,
        });
        // RFC 3264: one m-line per offered m-line, labels echoed exactly.
        let offer =
            opname_recorder::protocol::body::split(request.header("Content-Type"), &request.body)
                .ok()
                .and_then(|b| b.sdp.map(|s| s.to_vec()));
        if let (Some(offer), 200) = (&offer, status(last))
            && !last.body.is_empty()
        {
            assert_eq!(
                sdp_lines(&last.body, "m=").len(),
                sdp_lines(offer, "m=").len(),
                "{ctx}: m-line count"
            );
            assert_eq!(
                sdp_lines(&last.body, "a=label:"),
                sdp_lines(offer, "a=label:"),
                "{ctx}: labels echoed, none added"
            );
        }
        if to_tag.is_empty() {
            to_tag = last.to_tag().unwrap_or_default().to_string();
        }
        if let Some(s) = &start {
            started = Some(s.clone());
        }
        let answer = String::from_utf8_lossy(&last.body).to_string();
        for (k, v) in &step.expect {
            match k.as_str() {
                "expect" => assert_eq!(status(last).to_string(), *v, "{ctx}: final status"),
                "answer-mlines" => assert_eq!(
                    sdp_lines(&last.body, "m=").len().to_string(),
                    *v,
                    "{ctx}: m-lines"
                ),
                "answer-has" => assert!(
                    answer.lines().any(|l| wildmatch(v, l.trim_end())),
                    "{ctx}: answer lacks {v}:\n{answer}"
                ),
                "answer-lacks" => assert!(
                    !answer.contains(v.as_str()),
                    "{ctx}: answer has {v}:\n{answer}"
                ),
                "policy" => assert_eq!(
                    start.as_ref().map(|s| s.policy.name.as_str()),
                    Some(v.as_str()),
                    "{ctx}: policy"
                ),
                "channels" => {
                    let got = start
                        .as_ref()
                        .map(|s| channels(&s.streams))
                        .or_else(|| update.as_ref().map(|u| channels(&u.0)));
                    assert_eq!(got.as_deref(), Some(v.as_str()), "{ctx}: channels");
                }
                "correlation" => {
                    let (ck, cv) = v.split_once('=').unwrap();
                    let s = start.as_ref().unwrap();
                    let got = s
                        .correlation
                        .get(ck)
                        .or_else(|| s.metadata.correlation.get(ck));
                    assert_eq!(got.map(String::as_str), Some(cv), "{ctx}: correlation {ck}");
                }
                "paused" => {
                    let (streams, _) = update
                        .as_ref()
                        .unwrap_or_else(|| panic!("{ctx}: no update"));
                    let all = streams.iter().filter(|s| s.port != 0).all(|s| s.paused);
                    assert_eq!(all.to_string(), *v, "{ctx}: paused");
                }
                "same-ports" => {
                    let (streams, _) = update.as_ref().unwrap();
                    let before: Vec<u16> = started
                        .as_ref()
                        .unwrap()
                        .streams
                        .iter()
                        .map(|s| s.port)
                        .collect();
                    let after: Vec<u16> = streams.iter().map(|s| s.port).collect();
                    assert_eq!(before, after, "{ctx}: ports kept across re-INVITE");
                }
                "participants" => {
                    let (_, md) = update.as_ref().unwrap();
                    assert_eq!(md.participants.len().to_string(), *v, "{ctx}: participants");
                }
                "stopped" => assert!(
                    actions.iter().any(|a| matches!(
                        a,
                        Action::Stop {
                            reason: EndReason::Bye,
                            ..
                        }
                    )),
                    "{ctx}: recording stopped by BYE"
                ),
                "participant-channels" => {
                    let s = start.as_ref().unwrap_or_else(|| panic!("{ctx}: no start"));
                    let reports: Vec<_> = s
                        .streams
                        .iter()
                        .filter(|m| m.port != 0)
                        .map(|m| opname_recorder::media::mixer::StreamReport {
                            label: m.label.clone(),
                            codec: None,
                            channel: m.channel,
                            stats: Default::default(),
                            foreign: 0,
                            unknown_payload: 0,
                        })
                        .collect();
                    let got: Vec<&str> =
                        opname_recorder::record::participants(&s.metadata, &reports)
                            .iter()
                            .map(|p| match p.channel {
                                Some(Channel::Left) => "left",
                                Some(Channel::Right) => "right",
                                Some(Channel::Both) => "both",
                                None => "none",
                            })
                            .collect();
                    assert_eq!(got.join(","), *v, "{ctx}: participants' channels");
                }
                "not-stopped" => assert!(
                    !actions.iter().any(|a| matches!(a, Action::Stop { .. })),
                    "{ctx}: the recording must go on"
                ),
                "no-start" => assert!(start.is_none(), "{ctx}: nothing may be recorded"),
                "no-body" => assert!(last.body.is_empty(), "{ctx}: 200 without body"),
                "header" => {
                    let (hn, hv) = v.split_once(": ").unwrap();
                    assert!(
                        last.headers_named(hn).any(|h| h.starts_with(hv)),
                        "{ctx}: header {v}"
                    );
                }
                "body-crlf" => {}
                other => panic!("{ctx}: unknown expectation {other}"),
            }
        }
    }
}

#[test]
fn corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 15, "the corpus is all there");
    for f in files {
        run_file(&f);
    }
}

fn first_message(file: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(file);
    render(&load(&path)[0], "")
}

fn sends(actions: &[Action]) -> Vec<Message> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { data, .. } => sip::parse(data, true).ok(),
            _ => None,
        })
        .collect()
}

fn udp() -> Peer {
    Peer {
        transport: Transport::Udp,
        addr: SocketAddr::from(([10, 0, 0, 1], 5060)),
        conn: 0,
    }
}

#[test]
fn ok_is_retransmitted_until_ack_and_retransmitted_invite_gets_it_again() {
    let mut srs = core(10);
    let t0 = Instant::now();
    let invite = first_message("cisco-cube.sip");
    let first = sends(&srs.handle_message(udp(), &invite, t0));
    let ok = first.last().unwrap().clone();
    assert_eq!(ok.start, Start::Response { status: 200 });
    // The INVITE retransmitted: same 200, no second recording.
    let again = srs.handle_message(udp(), &invite, t0 + Duration::from_millis(100));
    assert!(!again.iter().any(|a| matches!(a, Action::Start(_))));
    assert_eq!(sends(&again)[0].to_tag(), ok.to_tag());
    // Timer: T1, then 2*T1 …
    assert!(srs.poll_timeout().unwrap() <= t0 + Duration::from_millis(500));
    let r1 = sends(&srs.handle_timeout(t0 + Duration::from_millis(500)));
    assert_eq!(r1.len(), 1);
    assert_eq!(r1[0].start, Start::Response { status: 200 });
    assert!(
        sends(&srs.handle_timeout(t0 + Duration::from_millis(900))).is_empty(),
        "interval doubled"
    );
    assert_eq!(
        sends(&srs.handle_timeout(t0 + Duration::from_millis(1500))).len(),
        1
    );
    let ack = format!(
        "ACK sip:opname@192.0.2.10:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 10.1.1.10:5060;branch=z9hG4bKack\r\nFrom: <sip:10.1.1.10>;tag=ABCDEF-1\r\nTo: <sip:srs@10.1.1.50>;tag={}\r\nCall-ID: 7A8B9C-1@10.1.1.10\r\nCSeq: 101 ACK\r\nContent-Length: 0\r\n\r\n",
        ok.to_tag().unwrap()
    );
    assert!(
        sends(&srs.handle_message(udp(), ack.as_bytes(), t0 + Duration::from_secs(2))).is_empty()
    );
    assert!(
        sends(&srs.handle_timeout(t0 + Duration::from_secs(10))).is_empty(),
        "no resend after ACK"
    );
    assert_eq!(srs.active_calls(), 1);
}

#[test]
fn missing_ack_hangs_up_with_bye() {
    let mut srs = core(10);
    let t0 = Instant::now();
    srs.handle_message(udp(), &first_message("jambonz.sip"), t0);
    let actions = srs.handle_timeout(t0 + Duration::from_secs(33));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Stop {
            reason: EndReason::NoAck,
            ..
        }
    )));
    let bye = sends(&actions)
        .into_iter()
        .find(|m| m.method() == Some(&rsip::Method::Bye))
        .expect("BYE sent");
    assert_eq!(bye.call_id(), "jz-4f0e2d1c");
    assert_eq!(bye.to_tag(), Some("jz-a"));
    assert_eq!(srs.active_calls(), 0);
    // The BYE is retransmitted until answered.
    let again = sends(&srs.handle_timeout(t0 + Duration::from_secs(34)));
    assert_eq!(
        again
            .iter()
            .filter(|m| m.method() == Some(&rsip::Method::Bye))
            .count(),
        1
    );
}

#[test]
fn capacity_drain_and_retry_after() {
    let mut srs = core(1);
    let t0 = Instant::now();
    srs.handle_message(udp(), &first_message("jambonz.sip"), t0);
    let busy = sends(&srs.handle_message(udp(), &first_message("cisco-cube.sip"), t0));
    let last = busy.last().unwrap();
    assert_eq!(last.start, Start::Response { status: 503 });
    assert_eq!(last.header("Retry-After"), Some("7"));
    let mut draining = core(10);
    draining.drain();
    let r = sends(&draining.handle_message(udp(), &first_message("cisco-cube.sip"), t0));
    assert_eq!(r.last().unwrap().start, Start::Response { status: 503 });
}

#[test]
fn garbage_and_truncated_requests_get_400_or_nothing() {
    let mut srs = core(10);
    let t0 = Instant::now();
    assert!(sends(&srs.handle_message(udp(), b"\x16\x03\x01garbage", t0)).is_empty());
    let invite = first_message("jambonz.sip");
    let text =
        String::from_utf8(invite)
            .unwrap()
            .replacen("Content-Length: ", "Content-Length: 9", 1);
    let r = sends(&srs.handle_message(udp(), text.as_bytes(), t0));
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].start, Start::Response { status: 400 });
    assert_eq!(r[0].call_id(), "jz-4f0e2d1c");
    let cut = &first_message("cisco-cube.sip")[..700];
    let r = sends(&srs.handle_message(udp(), cut, t0));
    assert_eq!(r[0].start, Start::Response { status: 400 });
    assert_eq!(srs.active_calls(), 0);
    // After the garbage, a good call still records.
    let ok = srs.handle_message(udp(), &first_message("jambonz.sip"), t0);
    assert!(ok.iter().any(|a| matches!(a, Action::Start(_))));
}

#[test]
fn cancel_after_answer_and_suspended_policy() {
    let mut srs = core(10);
    let t0 = Instant::now();
    srs.handle_message(udp(), &first_message("jambonz.sip"), t0);
    let cancel = "CANCEL sip:srs@10.6.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.6.0.1:5060;branch=z9hG4bKjz1\r\nFrom: <sip:jambonz@10.6.0.1>;tag=jz-a\r\nTo: <sip:srs@10.6.0.2>\r\nCall-ID: jz-4f0e2d1c\r\nCSeq: 10 CANCEL\r\nContent-Length: 0\r\n\r\n";
    let r = sends(&srs.handle_message(udp(), cancel.as_bytes(), t0));
    assert_eq!(r[0].start, Start::Response { status: 200 });
    let stray = cancel
        .replace("z9hG4bKjz1", "z9hG4bKzz")
        .replace("jz-4f0e2d1c", "other");
    let r = sends(&srs.handle_message(udp(), stray.as_bytes(), t0));
    assert_eq!(r[0].start, Start::Response { status: 481 });
    let dora = String::from_utf8(first_message("jambonz.sip"))
        .unwrap()
        .replace("sip:alice@example.com", "sip:dora1@example.com")
        .replace("jz-4f0e2d1c", "dora-1");
    let r = sends(&srs.handle_message(udp(), dora.as_bytes(), t0));
    assert_eq!(
        r.last().unwrap().start,
        Start::Response { status: 603 },
        "suspended policies record nothing"
    );
}

#[test]
fn cpu_overload_refuses_new_sessions_only() {
    let mut srs = core(10);
    let t0 = Instant::now();
    srs.handle_message(udp(), &first_message("jambonz.sip"), t0);
    srs.set_overloaded(true);
    let r = sends(&srs.handle_message(udp(), &first_message("cisco-cube.sip"), t0));
    let last = r.last().unwrap();
    assert_eq!(last.start, Start::Response { status: 503 });
    assert!(last.header("Warning").unwrap().contains("CPU overloaded"));
    assert_eq!(srs.active_calls(), 1, "the call in progress continues");
    srs.set_overloaded(false);
    // A new INVITE (a resent one would get the stored 503 again, as it should).
    let fresh = String::from_utf8(first_message("cisco-cube.sip"))
        .unwrap()
        .replace("z9hG4bK1A2B3C", "z9hG4bK9Z9Z9Z")
        .replace("7A8B9C-1@", "7A8B9C-2@");
    let r = srs.handle_message(udp(), fresh.as_bytes(), t0);
    assert!(r.iter().any(|a| matches!(a, Action::Start(_))));
}

/// Dialog tags are 64 random-keyed bits, not a start time and a counter: knowing one call's tag
/// (and any Call-ID) tells nothing of the next call's, which an in-dialog request would need.
#[test]
fn dialog_tags_do_not_follow_from_each_other() {
    let mut srs = core(10);
    let t0 = Instant::now();
    let invite = String::from_utf8(first_message("cisco-cube.sip")).unwrap();
    let mut tags = Vec::new();
    for n in 0..3 {
        let msg = invite.replace("7A8B9C-1@10.1.1.10", &format!("tag-probe-{n}@10.1.1.10"));
        let ok = sends(&srs.handle_message(udp(), msg.as_bytes(), t0))
            .pop()
            .unwrap();
        assert_eq!(ok.start, Start::Response { status: 200 });
        tags.push(ok.to_tag().unwrap().to_string());
    }
    for t in &tags {
        assert_eq!(t.len(), 16, "{t}");
        assert!(t.chars().all(|c| c.is_ascii_hexdigit()), "{t}");
    }
    // Consecutive tags share no leading half (a seed-and-counter tag shares all but its end).
    assert!(tags.windows(2).all(|w| w[0][..8] != w[1][..8]), "{tags:?}");
    // Another process (other keys) answers the same call with another tag.
    let mut other = core(10);
    let again = sends(&other.handle_message(udp(), invite.as_bytes(), t0))
        .pop()
        .unwrap();
    assert_ne!(
        again.to_tag(),
        sends(&core(10).handle_message(udp(), invite.as_bytes(), t0))
            .pop()
            .unwrap()
            .to_tag()
    );
}

#[test]
fn only_allowed_sources_may_record_and_strangers_learn_nothing() {
    let sources = |refuse: &str| {
        Config::parse(&format!(
            "namespace: a\nsip:\n  allow: ['10.0.0.0/24']\n  refuse: {refuse}\n"
        ))
        .unwrap()
        .sip
    };
    let t0 = Instant::now();
    let stranger = Peer {
        addr: SocketAddr::from(([203, 0, 113, 9], 5060)),
        ..udp()
    };
    let mut srs = core_with(10, sources("reject"));
    // A recorded user and an unknown one get the same answer: 403, nothing recorded.
    for file in ["cisco-cube.sip", "not-recorded.sip"] {
        let actions = srs.handle_message(stranger, &first_message(file), t0);
        assert!(
            !actions.iter().any(|a| matches!(a, Action::Start(_))),
            "{file}"
        );
        let r = sends(&actions);
        assert_eq!(r.len(), 1, "{file}");
        assert_eq!(r[0].start, Start::Response { status: 403 }, "{file}");
        assert!(r[0].header("Via").unwrap().contains("received=203.0.113.9"));
    }
    // Not even a 400 for junk, nor an answer to an answer.
    let junk = b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKj\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x>\r\nCall-ID: j1\r\nCSeq: 1 INVITE\r\nContent-Length: 99999\r\n\r\n";
    assert_eq!(
        sends(&srs.handle_message(stranger, junk, t0))[0].start,
        Start::Response { status: 403 }
    );
    assert!(sends(&srs.handle_message(stranger, b"SIP/2.0 200 OK\r\n\r\n", t0)).is_empty());
    // The SBC inside the range records as before.
    let ok = srs.handle_message(udp(), &first_message("cisco-cube.sip"), t0);
    assert!(ok.iter().any(|a| matches!(a, Action::Start(_))));
    // Drop: silence.
    let mut quiet = core_with(10, sources("drop"));
    let actions = quiet.handle_message(stranger, &first_message("cisco-cube.sip"), t0);
    assert!(sends(&actions).is_empty());
    assert!(!actions.iter().any(|a| matches!(a, Action::Start(_))));
}

/// A flood of distinct requests fills the transaction table to its bound and no further; the
/// timers expire them all, and a retransmitted request within the bound still gets its answer.
#[test]
fn the_transaction_table_is_bounded_and_expires() {
    let mut srs = core(10);
    let t0 = Instant::now();
    let options = |n: usize| {
        format!(
            "OPTIONS sip:srs@10.0.0.2 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKflood{n}\r\nFrom: <sip:src@10.0.0.1>;tag=f\r\nTo: <sip:srs@10.0.0.2>\r\nCall-ID: flood-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
        .into_bytes()
    };
    let first = sends(&srs.handle_message(udp(), &options(0), t0));
    for n in 1..20_000 {
        let r = sends(&srs.handle_message(udp(), &options(n), t0));
        assert_eq!(
            r[0].start,
            Start::Response { status: 200 },
            "every one answered"
        );
    }
    assert_eq!(srs.transactions(), 16_384);
    let again = sends(&srs.handle_message(udp(), &options(0), t0 + Duration::from_secs(1)));
    assert_eq!(
        again[0].to_tag(),
        first[0].to_tag(),
        "the retransmission gets the same answer"
    );
    assert!(srs.poll_timeout().unwrap() <= t0 + Duration::from_secs(32));
    srs.handle_timeout(t0 + Duration::from_secs(33));
    assert_eq!(srs.transactions(), 0);
}
