//! End to end: the real `opname-recorder` binary records a SIPp SIPREC call carrying espeak-ng
//! speech, into the local directory store (UDP, with bad input sent alongside) and into an
//! S3-protocol store, moto_server (TCP). The recording is decoded independently and each
//! channel is matched against the audio sent on its stream.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use object_store::ObjectStoreExt;
use opname_tests::audio::{
    Decoded, best_correlation, decode_ogg_opus, envelope, speech, ulaw_to_pcm,
};
use opname_tests::s3::Moto;
use opname_tests::{Recorder, RecorderSpec, files_with, http_get, sipp_call, wait_until};
use sha2::Digest;

const CALLER: &str = "sip:+31201234567@pbx.example.com";
const CALLEE: &str = "sip:+441632960000@carrier.example";
const POLICY: &str = "  - name: alice\n    user: alice@acme.example\n    identities: [\"tel:+31201234567\", \"sip:alice@acme.example\"]\n    retentionDays: 30\n    notice: {announcedBy: PBX, text: \"Dit gesprek wordt opgenomen.\"}\n";
const HOLD_MS: u64 = 6500;

struct Sources {
    caller: Vec<i16>,
    callee: Vec<i16>,
}

/// The caller speaks first, the callee answers three seconds later: distinct envelopes.
fn make_audio(work: &Path) -> Sources {
    let caller = speech(
        work,
        "caller",
        "Hello, this is the caller. I am calling about invoice number four two seven.",
        "en-us",
        0.3,
        6.0,
    );
    let callee = speech(
        work,
        "callee",
        "Good morning. The callee speaks now, much later in the call.",
        "en-gb",
        3.2,
        6.0,
    );
    Sources {
        caller: ulaw_to_pcm(&caller),
        callee: ulaw_to_pcm(&callee),
    }
}

fn check_recording(
    record: &serde_json::Value,
    audio: &[u8],
    sources: &Sources,
    transport_note: &str,
) {
    // The JSON record.
    assert_eq!(record["namespace"], "acme");
    assert_eq!(record["user"], "alice@acme.example");
    assert_eq!(record["policy"], "alice");
    assert_eq!(record["matchedIdentity"], "tel:31201234567");
    assert_eq!(record["complete"], true, "{transport_note}: ended by BYE");
    assert_eq!(record["endReason"], "bye");
    assert_eq!(record["retentionDays"], 30);
    assert_eq!(
        record["notice"],
        serde_json::json!({"announcedBy": "PBX", "text": "Dit gesprek wordt opgenomen."}),
        "the policy's notice is evidence in every record"
    );
    assert_eq!(record["codecs"], serde_json::json!(["PCMU"]));
    assert_eq!(record["participants"][0]["aor"], CALLER);
    assert_eq!(record["participants"][0]["channel"], "left");
    assert_eq!(record["participants"][1]["aor"], CALLEE);
    assert_eq!(record["participants"][1]["channel"], "right");
    assert!(
        record["audio"]["key"]
            .as_str()
            .unwrap()
            .starts_with("recordings/r30/acme/")
    );
    assert_eq!(
        record["audio"]["size"].as_u64().unwrap(),
        audio.len() as u64
    );
    assert_eq!(
        record["audio"]["sha256"].as_str().unwrap(),
        hex::encode(sha2::Sha256::digest(audio))
    );
    let start: &str = record["start"].as_str().unwrap();
    let until: &str = record["retainUntil"].as_str().unwrap();
    assert!(until > start, "retain-until after start");
    for s in record["streams"].as_array().unwrap() {
        let received = s["received"].as_u64().unwrap();
        assert!(
            received >= 280,
            "{transport_note}: stream {} received only {received} packets",
            s["label"]
        );
        assert_eq!(s["lost"], 0, "{transport_note}: loss on {}", s["label"]);
    }
    let duration = record["durationSeconds"].as_f64().unwrap();
    assert!(
        (6.0..8.0).contains(&duration),
        "{transport_note}: duration {duration}"
    );

    // The audio, decoded independently.
    let d: Decoded = decode_ogg_opus(audio);
    assert_eq!(d.channels, 2);
    assert_eq!(d.input_rate, 8000);
    assert!(
        (d.seconds() - duration).abs() < 0.1,
        "granule {} vs record {duration}",
        d.seconds()
    );
    let (left, right) = (envelope(&d.channel(0)), envelope(&d.channel(1)));
    let (caller, callee) = (envelope(&sources.caller), envelope(&sources.callee));
    let (ll, lag_l) = best_correlation(&left, &caller, 40);
    let (rr, lag_r) = best_correlation(&right, &callee, 40);
    let (lx, _) = best_correlation(&left, &callee, 40);
    let (rx, _) = best_correlation(&right, &caller, 40);
    eprintln!(
        "{transport_note}: left~caller {ll:.2} (lag {lag_l}), right~callee {rr:.2} (lag {lag_r}), left~callee {lx:.2}, right~caller {rx:.2}"
    );
    assert!(
        ll > 0.8 && rr > 0.8,
        "{transport_note}: each channel carries its stream's speech"
    );
    assert!(
        lx < 0.3 && rx < 0.3,
        "{transport_note}: and not the other's"
    );
    // Each lag is the recorder's playout delay plus when that sender started (rtp_send.py starts
    // later than SIPp's own stream); exact channel alignment is asserted in the recording unit
    // tests, where send times are known.
    assert!(
        lag_l <= 25 && lag_r <= 25,
        "{transport_note}: recorded within 500 ms of sending ({lag_l}, {lag_r} frames)"
    );
}

/// Sends one request and returns the first final status line it gets (or None on silence).
fn udp_request(target: SocketAddr, msg: &[u8]) -> Option<u16> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    s.send_to(msg, target).unwrap();
    let mut buf = [0u8; 65536];
    loop {
        let n = s.recv(&mut buf).ok()?;
        let status: u16 = String::from_utf8_lossy(&buf[..n])
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        if status >= 200 {
            return Some(status);
        }
    }
}

fn tcp_request(target: SocketAddr, msg: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(target).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    s.write_all(msg).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        for head in text.split("SIP/2.0 ").skip(1) {
            let status: u16 = head.split_whitespace().next()?.parse().ok()?;
            if status >= 200 {
                return Some(status);
            }
        }
    }
}

fn request(
    method: &str,
    call_id: &str,
    to_tag: &str,
    transport: &str,
    ct: &str,
    body: &str,
) -> Vec<u8> {
    format!(
        "{method} sip:srs@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/{transport} 127.0.0.1:5999;branch=z9hG4bK{call_id}\r\nFrom: <sip:src@127.0.0.1>;tag=x1\r\nTo: <sip:srs@127.0.0.1>{to_tag}\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn siprec_body(codecs: &str, xml_tail: &str) -> String {
    format!(
        "--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 9000 RTP/AVP {codecs}\r\n--b\r\nContent-Type: application/rs-metadata+xml\r\n\r\n<recording xmlns=\"urn:ietf:params:xml:ns:recording:1\"><participant participant_id=\"a\"><nameID aor=\"{CALLER}\"/></participant>{xml_tail}\r\n--b--\r\n"
    )
}

/// Bad input of every kind, sent while a good call is being recorded.
fn send_bad_input(rec: &Recorder) {
    let t = rec.sip;
    let junk = UdpSocket::bind("127.0.0.1:0").unwrap();
    junk.send_to(b"\x00\x01\x02 not SIP at all", t).unwrap();
    junk.send_to(&[0xffu8; 3000], t).unwrap();
    let mp = "multipart/mixed;boundary=b";
    let good = request(
        "INVITE",
        "bad-cl",
        "",
        "UDP",
        mp,
        &siprec_body("0", "</recording>"),
    );
    let wrong_cl = String::from_utf8(good)
        .unwrap()
        .replace("Content-Length: ", "Content-Length: 9");
    assert_eq!(
        udp_request(t, wrong_cl.as_bytes()),
        Some(400),
        "Content-Length larger than the datagram"
    );
    let truncated = request(
        "INVITE",
        "bad-trunc",
        "",
        "UDP",
        mp,
        &siprec_body("0", "</recording>"),
    );
    assert_eq!(
        udp_request(t, &truncated[..truncated.len() - 60]),
        Some(400),
        "truncated datagram"
    );
    assert_eq!(
        udp_request(
            t,
            &request(
                "BYE",
                "no-such-call",
                ";tag=zz",
                "UDP",
                "application/sdp",
                ""
            )
        ),
        Some(481)
    );
    assert_eq!(
        tcp_request(
            t,
            &request(
                "INVITE",
                "bad-codec",
                "",
                "TCP",
                mp,
                &siprec_body("18", "</recording>")
            )
        ),
        Some(488),
        "only G.729"
    );
    assert_eq!(
        tcp_request(
            t,
            &request(
                "INVITE",
                "bad-xml",
                "",
                "TCP",
                mp,
                &siprec_body("0", "<participant>")
            )
        ),
        Some(400),
        "broken XML"
    );
    assert_eq!(
        tcp_request(
            t,
            &request("INVITE", "bad-type", "", "TCP", "text/plain", "hi")
        ),
        Some(415)
    );
    assert_eq!(
        tcp_request(
            t,
            &request("OPTIONS", "ping", "", "TCP", "application/sdp", "")
        ),
        Some(200)
    );
    // A TCP stream that cannot be framed is answered where possible and closed.
    let mut s = TcpStream::connect(t).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1;branch=z9hG4bKnocl\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: nocl\r\nCSeq: 1 INVITE\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(
        out.starts_with("SIP/2.0 400"),
        "no Content-Length over TCP: {out:?}"
    );
    // RTP from an unexpected source onto every recorder RTP port.
    for p in rec.rtp_base..rec.rtp_base + 40 {
        let mut pkt = vec![0x80u8, 0, 0, 1, 0, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef];
        pkt.extend_from_slice(&[0x00; 160]);
        let _ = junk.send_to(&pkt, ("127.0.0.1", p));
    }
}

#[test]
fn sipp_call_into_local_store_over_udp_with_bad_input_alongside() {
    let work = tempfile::tempdir().unwrap();
    let sources = make_audio(work.path());
    let store = work.path().join("store");
    let rec = Recorder::start(RecorderSpec {
        dir: &work.path().join("rec"),
        store_url: format!("file://{}", store.display()),
        policies: POLICY,
        env: vec![],
        extra: "",
    });
    let (target, dir) = (rec.sip, work.path().to_path_buf());
    let call = std::thread::spawn(move || sipp_call(target, "u1", &dir, CALLER, CALLEE, HOLD_MS));
    std::thread::sleep(Duration::from_millis(1500));
    send_bad_input(&rec);
    call.join().unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || files_with(&store, ".json").len()
            == 1),
        "recording stored; log:\n{}",
        rec.log()
    );
    let json = &files_with(&store, ".json")[0];
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    let audio = std::fs::read(json.with_extension("opus")).unwrap();
    check_recording(&record, &audio, &sources, "local/UDP");
    let foreign: u64 = record["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["foreign"].as_u64().unwrap())
        .sum();
    assert!(
        foreign >= 1,
        "RTP from the unexpected source was seen and dropped"
    );
    assert_eq!(
        files_with(&store, ".opus").len(),
        1,
        "nothing recorded for the rejected requests"
    );
    assert!(
        files_with(&rec.dir.join("spool"), "").is_empty(),
        "spool emptied after upload"
    );
    let (status, metrics) = http_get(rec.http, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("opname_calls_total{outcome=\"recorded\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("opname_calls_total{outcome=\"bad-request\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("opname_rtp_packets_received_total"),
        "{metrics}"
    );
    assert_eq!(http_get(rec.http, "/readyz").unwrap().0, 200);
}

#[test]
fn sipp_call_over_tcp_into_s3_protocol_store() {
    let work = tempfile::tempdir().unwrap();
    let sources = make_audio(work.path());
    let moto = Moto::start();
    moto.create_bucket("opname-e2e");
    let rec = Recorder::start(RecorderSpec {
        dir: &work.path().join("rec"),
        store_url: "s3://opname-e2e".into(),
        policies: POLICY,
        env: moto.env(),
        extra: "",
    });
    sipp_call(rec.sip, "t1", work.path(), CALLER, CALLEE, HOLD_MS);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = moto.client("opname-e2e");
    let keys = rt.block_on(async {
        let mut keys = Vec::new();
        for _ in 0..100 {
            keys = futures::StreamExt::collect::<Vec<_>>(client.list(None))
                .await
                .into_iter()
                .map(|m| m.unwrap().location.to_string())
                .collect();
            if keys.len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        keys
    });
    assert_eq!(
        keys.len(),
        2,
        "audio and record in the bucket: {keys:?}\n{}",
        rec.log()
    );
    let json_key = keys.iter().find(|k| k.ends_with(".json")).unwrap();
    let (record, audio) = rt.block_on(async {
        let j = client
            .get(&json_key.as_str().into())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let record: serde_json::Value = serde_json::from_slice(&j).unwrap();
        let a = client
            .get(&record["audio"]["key"].as_str().unwrap().into())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        (record, a.to_vec())
    });
    check_recording(&record, &audio, &sources, "s3/TCP");
}

/// Hostile TCP peers cannot stop SIP for everyone: one that pipelines requests and never reads
/// the answers loses its connection once its queue is full, and one 236-byte message whose
/// Content-Length is near 2^64 gets its connection closed; UDP and other TCP peers are served
/// throughout.
#[test]
fn tcp_peers_that_never_read_or_lie_about_length_stop_nobody() {
    let work = tempfile::tempdir().unwrap();
    let rec = Recorder::start(RecorderSpec {
        dir: &work.path().join("rec"),
        store_url: format!("file://{}", work.path().join("store").display()),
        policies: POLICY,
        env: vec![],
        extra: "",
    });
    let options = |n: usize, transport: &str| {
        request("OPTIONS", &format!("o{n}"), "", transport, "text/plain", "")
    };
    // A peer that writes 5,000 OPTIONS and never reads.
    let mut hog = TcpStream::connect(rec.sip).unwrap();
    hog.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let writer = std::thread::spawn(move || {
        let mut sent = 0;
        for n in 0..5_000 {
            if hog.write_all(&options(n, "TCP")).is_err() {
                break;
            }
            sent += 1;
        }
        (sent, hog)
    });
    // A length that would wrap.
    let mut liar = TcpStream::connect(rec.sip).unwrap();
    liar.write_all(
        b"OPTIONS sip:srs@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKwrap\r\nCall-ID: wrap\r\nCSeq: 1 OPTIONS\r\nContent-Length: 18446744073709551615\r\n\r\n",
    )
    .unwrap();
    liar.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut rest = Vec::new();
    let _ = liar.read_to_end(&mut rest);
    assert!(
        String::from_utf8_lossy(&rest).is_empty()
            || String::from_utf8_lossy(&rest).contains("SIP/2.0 4"),
        "refused, then closed: {}",
        String::from_utf8_lossy(&rest)
    );
    let (sent, hog) = writer.join().unwrap();
    assert!(sent > 64, "the hog wrote past its queue: {sent}");
    // Everyone else is still answered, at once.
    let t = std::time::Instant::now();
    assert_eq!(udp_request(rec.sip, &options(90_001, "UDP")), Some(200));
    assert_eq!(tcp_request(rec.sip, &options(90_002, "TCP")), Some(200));
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    drop(hog);
    assert!(
        wait_until(Duration::from_secs(5), || rec
            .log()
            .contains("does not read its responses")),
        "{}",
        rec.log()
    );
    assert!(
        rec.log().matches("cannot be framed").count() <= 2,
        "no loop over a bad frame"
    );
}

/// Who may talk to the recorder, on the real binary: an SBC outside `sip.allow` gets 403 over UDP
/// and TCP (the same for a recorded user as for anyone); more TCP connections from one source than
/// `maxConnectionsPerSource` are closed at once; an idle connection is closed after `idleSeconds`.
#[test]
fn strangers_are_refused_and_tcp_connections_are_bounded() {
    let work = tempfile::tempdir().unwrap();
    let rec = Recorder::start(RecorderSpec {
        dir: &work.path().join("rec"),
        store_url: format!("file://{}", work.path().join("store").display()),
        policies: POLICY,
        env: vec![],
        extra: "sip:\n  allow: ['127.0.0.1']\n  maxConnectionsPerSource: 3\n  idleSeconds: 2\n",
    });
    let invite = request(
        "INVITE",
        "stranger-1",
        "",
        "UDP",
        "multipart/mixed;boundary=b",
        &siprec_body("0", "</recording>"),
    );
    // From 127.0.0.2: another host as far as the recorder can tell.
    let s = UdpSocket::bind("127.0.0.2:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    s.send_to(&invite, rec.sip).unwrap();
    let mut buf = [0u8; 8192];
    let n = s.recv(&mut buf).expect("an answer");
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 403"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let stranger_tcp = {
        let sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        sock.bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into())
            .unwrap();
        sock.connect(&rec.sip.into()).unwrap();
        TcpStream::from(sock)
    };
    let mut stranger_tcp = stranger_tcp;
    stranger_tcp
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    stranger_tcp
        .write_all(&request(
            "OPTIONS",
            "stranger-2",
            "",
            "TCP",
            "text/plain",
            "",
        ))
        .unwrap();
    let n = stranger_tcp.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 403"));
    assert_eq!(
        udp_request(
            rec.sip,
            &request("OPTIONS", "ok-1", "", "UDP", "text/plain", "")
        ),
        Some(200)
    );
    assert_eq!(
        rec.log().matches("sip.allow is empty").count(),
        0,
        "no warning with an allow-list"
    );

    // Three connections from 127.0.0.1 are kept, the fourth is closed.
    let held: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(rec.sip).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut fourth = TcpStream::connect(rec.sip).unwrap();
    fourth
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let _ = fourth.write_all(&request("OPTIONS", "four", "", "TCP", "text/plain", ""));
    assert!(
        matches!(fourth.read(&mut buf), Ok(0) | Err(_)),
        "the fourth connection is closed unanswered"
    );
    // Idle: closed by the recorder after 2 s, which frees the places.
    let mut idle = held;
    for c in &mut idle {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(matches!(c.read(&mut buf), Ok(0)), "closed when idle");
    }
    assert_eq!(
        tcp_request(
            rec.sip,
            &request("OPTIONS", "after", "", "TCP", "text/plain", "")
        ),
        Some(200)
    );
}

/// The TLS client on another stack (Python's ssl, i.e. OpenSSL): its JSON report.
fn tls_sbc(port: u16, args: &[&str]) -> serde_json::Value {
    let script = opname_tests::workspace().join("tests/tls/sbc.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(["127.0.0.1", &port.to_string()])
        .args(args)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

/// A recorder with SIP over mutual TLS on a free port: a CA `ca`, its server certificate and an
/// SBC certificate it signed are made in `dir`; `rtp` is YAML under `rtp:` (may be empty).
fn tls_recorder(dir: &Path, rtp: &str) -> (Recorder, u16, std::path::PathBuf) {
    opname_tests::require("openssl", "apt-get install openssl");
    opname_tests::pki::certificate(dir, "ca", "server", "recorder.opname.test", "serverAuth");
    opname_tests::pki::certificate(dir, "ca", "sbc", "sbc.opname.test", "clientAuth");
    let tls_port = opname_tests::free_port();
    let p = |f: &str| dir.join(f).display().to_string();
    let store = dir.join("store");
    let rtp = if rtp.is_empty() {
        String::new()
    } else {
        format!("rtp:\n{rtp}")
    };
    let rec = Recorder::start(RecorderSpec {
        dir: &dir.join("rec"),
        store_url: format!("file://{}", store.display()),
        policies: POLICY,
        env: vec![],
        extra: &format!(
            "sip:\n  tls:\n    listen: 127.0.0.1:{tls_port}\n    certFile: {}\n    keyFile: {}\n    clientCaFile: {}\n{rtp}",
            p("server.pem"),
            p("server.key"),
            p("ca.pem")
        ),
    });
    (rec, tls_port, store)
}

/// SIP over TLS against a client on another stack: a call forked over mutual TLS is recorded
/// like the SIPp ones (each channel its stream's speech) and its Contact says `transport=tls`; a
/// client without a certificate the CA signed is refused in the handshake; a rotated server
/// certificate is served without a restart.
#[test]
fn sip_over_mutual_tls_from_another_stack_records_and_rotates() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let sources = make_audio(dir);
    let (rec, tls_port, store) = tls_recorder(dir, "");
    opname_tests::pki::certificate(dir, "rogue-ca", "rogue", "sbc.opname.test", "clientAuth");
    let p = |f: &str| dir.join(f).display().to_string();
    let (ca, cert, key) = (p("ca.pem"), p("sbc.pem"), p("sbc.key"));
    // Without a client certificate, or with one of another CA: refused.
    let bare = tls_sbc(tls_port, &["--ca", &ca, "--options"]);
    assert!(bare.get("refused").is_some(), "{bare}");
    let (rogue, rogue_key) = (p("rogue.pem"), p("rogue.key"));
    let other = tls_sbc(
        tls_port,
        &[
            "--ca",
            &ca,
            "--cert",
            &rogue,
            "--key",
            &rogue_key,
            "--options",
        ],
    );
    assert!(other.get("refused").is_some(), "{other}");
    let ok = tls_sbc(
        tls_port,
        &["--ca", &ca, "--cert", &cert, "--key", &key, "--options"],
    );
    assert_eq!(ok["options"], 200, "{ok}");

    // A call over mutual TLS, media as plain RTP.
    let (left, right) = (p("caller.ulaw"), p("callee.ulaw"));
    let call = tls_sbc(
        tls_port,
        &[
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
            "--left",
            &left,
            "--right",
            &right,
            "--seconds",
            "6.5",
            "--caller",
            CALLER,
            "--callee",
            CALLEE,
        ],
    );
    assert_eq!(call["invite"], 200, "{call}");
    assert_eq!(call["bye"], 200, "{call}");
    assert!(
        call["contact"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{tls_port};transport=tls")),
        "{call}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || files_with(&store, ".json").len()
            == 1),
        "recording stored; log:\n{}",
        rec.log()
    );
    let json = &files_with(&store, ".json")[0];
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    let audio = std::fs::read(json.with_extension("opus")).unwrap();
    check_recording(&record, &audio, &sources, "TLS");

    // The server certificate rotated in place (another CA): new connections get it.
    opname_tests::pki::certificate(dir, "ca2", "server2", "recorder.opname.test", "serverAuth");
    std::fs::copy(dir.join("server2.pem"), dir.join("server.pem")).unwrap();
    std::fs::copy(dir.join("server2.key"), dir.join("server.key")).unwrap();
    let ca2 = p("ca2.pem");
    assert!(
        wait_until(Duration::from_secs(20), || {
            tls_sbc(
                tls_port,
                &["--ca", &ca2, "--cert", &cert, "--key", &key, "--options"],
            )["options"]
                == 200
        }),
        "the rotated certificate is served; log:\n{}",
        rec.log()
    );
}

/// Resident memory of a process, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")?
                    .trim()
                    .strip_suffix("kB")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
        })
        .map_or(0, |kb| kb * 1024)
}

/// The attacks of issue #14 at once, against the release-shaped binary, while a legitimate call
/// is recorded: a TCP peer that pipelines and never reads, a Content-Length that wraps, INVITEs
/// with 2,500 m-lines, a stranger's INVITEs and junk datagrams, a flood of TCP connections, RTP
/// injected onto every RTP port from another host, and forged in-dialog requests. The call is
/// recorded complete and correct, OPTIONS are answered within 100 ms throughout, and the
/// process stays under a memory bound.
#[test]
fn attacks_during_a_call_stop_nothing() {
    let work = tempfile::tempdir().unwrap();
    let sources = make_audio(work.path());
    let store = work.path().join("store");
    let rec = Recorder::start(RecorderSpec {
        dir: &work.path().join("rec"),
        store_url: format!("file://{}", store.display()),
        policies: POLICY,
        env: vec![],
        extra: "sip:\n  allow: ['127.0.0.1']\n  maxConnectionsPerSource: 32\n",
    });
    let (target, dir) = (rec.sip, work.path().to_path_buf());
    let call = std::thread::spawn(move || sipp_call(target, "u1", &dir, CALLER, CALLEE, HOLD_MS));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The probe: one OPTIONS every 50 ms, its round trip measured.
    let probe = {
        let done = done.clone();
        std::thread::spawn(move || {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut times = Vec::new();
            let mut answered = 0;
            let mut n = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let t = std::time::Instant::now();
                s.send_to(
                    &request("OPTIONS", &format!("probe{n}"), "", "UDP", "text/plain", ""),
                    target,
                )
                .unwrap();
                let mut buf = [0u8; 4096];
                let want = format!("Call-ID: probe{n}\r\n");
                while let Ok(len) = s.recv(&mut buf) {
                    if String::from_utf8_lossy(&buf[..len]).contains(&want) {
                        answered += 1;
                        break;
                    }
                }
                times.push(t.elapsed());
                std::thread::sleep(Duration::from_millis(50));
            }
            times.sort();
            (n, answered, times)
        })
    };
    std::thread::sleep(Duration::from_millis(1500));
    let t = rec.sip;
    let mut attackers = Vec::new();
    // A TCP peer that pipelines 5,000 requests and never reads.
    attackers.push(std::thread::spawn(move || {
        let mut hog = TcpStream::connect(t).unwrap();
        hog.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
        for n in 0..5_000 {
            if hog
                .write_all(&request(
                    "OPTIONS",
                    &format!("hog{n}"),
                    "",
                    "TCP",
                    "text/plain",
                    "",
                ))
                .is_err()
            {
                break;
            }
        }
    }));
    // A Content-Length that would wrap; 2,500 m-lines, four times; a flood of connections.
    attackers.push(std::thread::spawn(move || {
        let mut liar = TcpStream::connect(t).unwrap();
        let _ = liar.write_all(b"OPTIONS sip:srs@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKwrap2\r\nCall-ID: wrap2\r\nCSeq: 1 OPTIONS\r\nContent-Length: 18446744073709551615\r\n\r\n");
        let mlines: String = (0..2_500).map(|i| format!("m=audio {} RTP/AVP 0\r\n", 10_000 + 2 * i)).collect();
        let body = format!(
            "--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\nc=IN IP4 127.0.0.1\r\n{mlines}--b\r\nContent-Type: application/rs-metadata+xml\r\n\r\n<recording xmlns=\"urn:ietf:params:xml:ns:recording:1\"><participant participant_id=\"a\"><nameID aor=\"{CALLER}\"/></participant></recording>\r\n--b--\r\n"
        );
        for n in 0..4 {
            let msg = request("INVITE", &format!("mlines{n}"), "", "TCP", "multipart/mixed;boundary=b", &body);
            assert_eq!(tcp_request(t, &msg), Some(488), "2,500 m-lines refused");
        }
        let flood: Vec<_> = (0..200).filter_map(|_| TcpStream::connect(t).ok()).collect();
        std::thread::sleep(Duration::from_secs(1));
        drop(flood);
    }));
    // A stranger's INVITEs and junk, and RTP from another host onto every RTP port.
    let rtp_base = rec.rtp_base;
    attackers.push(std::thread::spawn(move || {
        let stranger = UdpSocket::bind("127.0.0.2:0").unwrap();
        let invite = request(
            "INVITE",
            "planted",
            "",
            "UDP",
            "multipart/mixed;boundary=b",
            &siprec_body("0", "</recording>"),
        );
        for round in 0..200u32 {
            let _ = stranger.send_to(&invite, t);
            let _ = stranger.send_to(&[0xffu8; 1500], t);
            let mut pkt = vec![
                0x80u8,
                0,
                0,
                round as u8,
                0,
                0,
                0,
                1,
                0xba,
                0xad,
                0xf0,
                0x0d,
            ];
            pkt.extend_from_slice(&[0x00; 160]);
            for p in rtp_base..rtp_base + 40 {
                let _ = stranger.send_to(&pkt, ("127.0.0.1", p));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }));
    // Forged in-dialog requests: a BYE for every Call-ID SIPp might use, without the tags.
    attackers.push(std::thread::spawn(move || {
        for n in 0..50 {
            let bye = request(
                "BYE",
                &format!("{n}-1@127.0.0.1"),
                ";tag=guess",
                "UDP",
                "text/plain",
                "",
            );
            let _ = udp_request(t, &bye);
        }
    }));
    for a in attackers {
        a.join().unwrap();
    }
    call.join().unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, answered, times) = probe.join().unwrap();
    let rss = rss_bytes(rec.proc.child.id());
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    let (median, p99, worst) = (at(0.5), at(0.99), at(1.0));
    eprintln!(
        "attacks: {answered}/{sent} OPTIONS answered, median {median:?}, p99 {p99:?}, worst {worst:?}; recorder RSS {} MiB",
        rss >> 20
    );
    assert_eq!(answered, sent, "every OPTIONS answered");
    // The attacks once stalled SIP for everyone until the attacker left. Absolute latency
    // depends on the machine (a loaded 2-core CI box once showed a 166 ms worst case), so the
    // test bounds the median by the 100 ms goal and the worst case by a stall: docs/BENCHMARKS.md
    // has the figures of a quiet run.
    assert!(
        median < Duration::from_millis(100),
        "OPTIONS answered within 100 ms: median {median:?}"
    );
    assert!(worst < Duration::from_secs(1), "no stall: worst {worst:?}");
    assert!(rss > 0 && rss < 128 << 20, "memory bound: {rss} bytes");
    assert!(
        wait_until(Duration::from_secs(5), || files_with(&store, ".json").len()
            == 1),
        "the call, and nothing planted, stored; log:\n{}",
        rec.log()
    );
    let json = &files_with(&store, ".json")[0];
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
    let audio = std::fs::read(json.with_extension("opus")).unwrap();
    check_recording(&record, &audio, &sources, "under attack");
    let foreign: u64 = record["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["foreign"].as_u64().unwrap())
        .sum();
    assert!(
        foreign >= 200,
        "the injected RTP was seen and dropped: {foreign}"
    );
}

/// SRTP with SDES keys over mutual TLS, produced by libsrtp (PyPI pylibsrtp) on the other side,
/// in each suite the recorder takes: each recording matches the audio sent, channel by channel;
/// replayed and forged packets are counted as foreign, not recorded; the keys appear in no log
/// line and in no stored object.
#[test]
fn srtp_from_libsrtp_is_recorded_in_every_suite() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let sources = make_audio(dir);
    // Encrypted signalling, so encrypted media only.
    let (rec, tls_port, store) = tls_recorder(dir, "  plainWithTls: false\n");
    let p = |f: &str| dir.join(f).display().to_string();
    let (ca, cert, key, left, right) = (
        p("ca.pem"),
        p("sbc.pem"),
        p("sbc.key"),
        p("caller.ulaw"),
        p("callee.ulaw"),
    );
    let base = [
        "--ca",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "--left",
        &left,
        "--right",
        &right,
        "--seconds",
        "6.5",
        "--caller",
        CALLER,
        "--callee",
        CALLEE,
    ];
    // Plain RTP over TLS is refused with this setting.
    let plain = tls_sbc(tls_port, &base);
    assert_eq!(plain["invite"], 488, "{plain}");
    let mut keys = Vec::new();
    for (n, suite) in [
        "AES_CM_128_HMAC_SHA1_80",
        "AES_CM_128_HMAC_SHA1_32",
        "AEAD_AES_128_GCM",
    ]
    .into_iter()
    .enumerate()
    {
        let mut args = base.to_vec();
        args.extend(["--srtp", suite]);
        let call = tls_sbc(tls_port, &args);
        assert_eq!(call["invite"], 200, "{suite}: {call}");
        assert_eq!(call["bye"], 200, "{suite}: {call}");
        assert_eq!(
            call["answer_crypto"],
            serde_json::json!([format!("1 {suite}"), format!("1 {suite}")]),
            "{call}"
        );
        keys.extend(
            call["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_string()),
        );
        assert!(
            wait_until(Duration::from_secs(5), || files_with(&store, ".json").len()
                == n + 1),
            "{suite}: recording stored; log:\n{}",
            rec.log()
        );
        let mut records: Vec<_> = files_with(&store, ".json");
        records.sort_by_key(|f| std::fs::metadata(f).unwrap().modified().unwrap());
        let json = records.last().unwrap();
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap();
        let audio = std::fs::read(json.with_extension("opus")).unwrap();
        check_recording(&record, &audio, &sources, suite);
        let foreign: u64 = record["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["foreign"].as_u64().unwrap())
            .sum();
        let replayed = call["replayed"].as_u64().unwrap();
        assert_eq!(
            foreign,
            2 * replayed,
            "{suite}: each replay and forgery dropped, nothing else"
        );
    }
    // The keys were never written down.
    let log = rec.log();
    let mut stored = String::new();
    for f in files_with(&store, ".json") {
        stored.push_str(&std::fs::read_to_string(f).unwrap());
    }
    for k in &keys {
        assert!(
            !log.contains(k.as_str()) && !stored.contains(k.as_str()),
            "a key leaked"
        );
    }
}
