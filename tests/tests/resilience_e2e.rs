//! A recorder loses nothing: drain on SIGTERM, overload bursts, `kill -9`, store outages.

use std::process::Command;
use std::time::{Duration, Instant};

use opname_tests::audio::speech;
use opname_tests::s3::Moto;
use opname_tests::{
    Recorder, RecorderSpec, bin, files_with, http_get, sipp_call, stored_records, wait_until,
};
use serde_json::Value;

const CALLER: &str = "sip:+31201234567@pbx.example.com";
const CALLEE: &str = "sip:+441632960000@carrier.example";
const POLICY: &str = "  - name: alice\n    user: alice@acme.example\n    identities: [\"tel:+31201234567\", \"sip:alice@demo.example\"]\n    retentionDays: 30\n";

/// The built-in load generator (two-stream G.711 calls) against `target`: its JSON report.
fn loadgen(target: std::net::SocketAddr, calls: usize, seconds: u64) -> Value {
    opname_tests::loadgen(&[
        "--target",
        &target.to_string(),
        "--calls",
        &calls.to_string(),
        "--seconds",
        &seconds.to_string(),
    ])
}

fn start(
    work: &std::path::Path,
    store_url: String,
    env: Vec<(String, String)>,
    extra: &str,
) -> Recorder {
    Recorder::start(RecorderSpec {
        dir: &work.join("rec"),
        store_url,
        policies: POLICY,
        env,
        extra,
    })
}

#[test]
fn sigterm_lets_active_calls_finish_and_refuses_new_ones() {
    let work = tempfile::tempdir().unwrap();
    speech(
        work.path(),
        "caller",
        "A call that must finish after the drain begins.",
        "en-us",
        0.1,
        4.0,
    );
    speech(work.path(), "callee", "Indeed it must.", "en-gb", 1.0, 4.0);
    let store = work.path().join("store");
    let mut rec = start(
        work.path(),
        format!("file://{}", store.display()),
        vec![],
        "limits:\n  drainSeconds: 30\n",
    );
    let (target, dir) = (rec.sip, work.path().to_path_buf());
    let call = std::thread::spawn(move || sipp_call(target, "u1", &dir, CALLER, CALLEE, 4000));
    assert!(wait_until(Duration::from_secs(5), || rec
        .log()
        .contains("recording started")));
    rec.proc.signal("TERM");
    assert!(
        wait_until(Duration::from_secs(2), || http_get(rec.http, "/readyz")
            .is_ok_and(|(c, _)| c == 503)),
        "not ready while draining"
    );
    let refused = loadgen(rec.sip, 1, 1);
    assert_eq!(
        refused["rejected"]["503"], 1,
        "new sessions get 503 while draining: {refused}"
    );
    call.join().unwrap();
    let status = rec
        .proc
        .wait_exit(Duration::from_secs(15))
        .expect("the recorder exits once drained");
    assert!(status.success());
    let r = stored_records(&store);
    assert_eq!(r.len(), 1, "{}", rec.log());
    assert_eq!(r[0]["complete"], true, "the active call ran to its BYE");
    assert_eq!(r[0]["endReason"], "bye");
}

#[test]
fn a_burst_beyond_capacity_gets_503_and_admitted_calls_lose_nothing() {
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let rec = start(
        work.path(),
        format!("file://{}", store.display()),
        vec![],
        "limits:\n  maxCalls: 5\n  retryAfterSeconds: 3\n",
    );
    let report = loadgen(rec.sip, 20, 3);
    assert_eq!(report["answered"], 5, "{report}");
    assert_eq!(report["rejected"]["503"], 15, "{report}");
    assert!(
        wait_until(Duration::from_secs(5), || stored_records(&store).len() == 5),
        "{}",
        rec.log()
    );
    for r in stored_records(&store) {
        assert_eq!(r["complete"], true);
        for s in r["streams"].as_array().unwrap() {
            assert_eq!(s["lost"], 0, "{s}");
            assert_eq!(s["late"], 0, "{s}");
        }
    }
    assert_eq!(http_get(rec.http, "/healthz").unwrap().0, 200);
    let again = loadgen(rec.sip, 1, 1);
    assert_eq!(
        again["answered"], 1,
        "healthy and taking calls again: {again}"
    );
}

#[test]
fn kill_9_mid_call_then_restart_uploads_what_was_spooled_marked_incomplete() {
    let work = tempfile::tempdir().unwrap();
    speech(
        work.path(),
        "caller",
        "This recorder will be killed in the middle of the call.",
        "en-us",
        0.1,
        8.0,
    );
    speech(
        work.path(),
        "callee",
        "Let us see what survives.",
        "en-gb",
        1.0,
        8.0,
    );
    let store = work.path().join("store");
    let mut rec = start(
        work.path(),
        format!("file://{}", store.display()),
        vec![],
        "",
    );
    let (target, dir) = (rec.sip, work.path().to_path_buf());
    // SIPp's call fails when the recorder dies (no 200 to its BYE); that is expected here.
    let call = std::thread::spawn(move || {
        let _ = std::panic::catch_unwind(|| sipp_call(target, "u1", &dir, CALLER, CALLEE, 8000));
    });
    assert!(wait_until(Duration::from_secs(5), || rec
        .log()
        .contains("recording started")));
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(4000));
    rec.proc.signal("KILL");
    let killed_after = started.elapsed().as_secs_f64();
    rec.proc.wait_exit(Duration::from_secs(5));
    assert!(
        stored_records(&store).is_empty(),
        "nothing uploaded before the restart"
    );
    let spool = rec.dir.join("spool");
    assert_eq!(
        files_with(&spool, ".opus").len(),
        1,
        "the spool holds the interrupted recording"
    );
    // Same spool, new process.
    let config = rec.dir.join("recorder.yaml");
    let log = std::fs::File::create(rec.dir.join("recorder2.log")).unwrap();
    let mut again = opname_tests::Proc::spawn(
        "opname-recorder",
        Command::new(bin("opname-recorder"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    assert!(
        wait_until(Duration::from_secs(10), || stored_records(&store).len()
            == 1),
        "{}",
        std::fs::read_to_string(rec.dir.join("recorder2.log")).unwrap_or_default()
    );
    call.join().unwrap();
    let r = &stored_records(&store)[0];
    assert_eq!(r["complete"], false);
    assert_eq!(r["endReason"], "crashed");
    assert_eq!(r["user"], "alice@acme.example");
    let duration = r["durationSeconds"].as_f64().unwrap();
    assert!(
        duration >= killed_after - 1.5 && duration <= killed_after + 0.5,
        "covers the call up to the kill within a second: {duration} s of {killed_after} s"
    );
    let audio = std::fs::read(files_with(&store, ".opus")[0].clone()).unwrap();
    assert_eq!(r["audio"]["size"].as_u64().unwrap(), audio.len() as u64);
    let decoded = opname_tests::audio::decode_ogg_opus(&audio);
    assert!(
        (decoded.seconds() - duration).abs() < 0.1,
        "the Ogg stream is whole and says {} s",
        decoded.seconds()
    );
    assert!(
        wait_until(Duration::from_secs(5), || files_with(&spool, "").is_empty()),
        "spool emptied"
    );
    // Restarting once more uploads nothing twice.
    again.signal("TERM");
    again.wait_exit(Duration::from_secs(10));
    let log = std::fs::File::create(rec.dir.join("recorder3.log")).unwrap();
    let _third = opname_tests::Proc::spawn(
        "opname-recorder",
        Command::new(bin("opname-recorder"))
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(stored_records(&store).len(), 1);
}

#[test]
fn store_outage_delays_uploads_and_loses_nothing() {
    let work = tempfile::tempdir().unwrap();
    let moto = Moto::start();
    moto.create_bucket("outage");
    // A low high-water mark, so that four waiting recordings turn readiness off.
    let rec = start(
        work.path(),
        "s3://outage".into(),
        moto.env(),
        "spool:\n  highWaterBytes: 10000\n",
    );
    let port = moto.addr.port();
    // Calls run while the store goes away for the end of the calls and beyond.
    let target = rec.sip;
    let calls = std::thread::spawn(move || loadgen(target, 4, 4));
    std::thread::sleep(Duration::from_secs(1));
    drop(moto);
    let outage = Instant::now();
    let report = calls.join().unwrap();
    assert_eq!(report["answered"], 4);
    assert!(
        wait_until(Duration::from_secs(10), || rec
            .log()
            .contains("upload failed; will retry")),
        "{}",
        rec.log()
    );
    let (_, metrics) = http_get(rec.http, "/metrics").unwrap();
    assert!(metrics.contains("opname_uploads_pending 4"), "{metrics}");
    assert_eq!(
        files_with(&rec.dir.join("spool"), ".opus").len(),
        4,
        "waiting in the spool"
    );
    assert_eq!(
        http_get(rec.http, "/readyz").unwrap().0,
        503,
        "not ready above the high-water mark"
    );
    // Down for 30 s in all.
    std::thread::sleep(Duration::from_secs(30).saturating_sub(outage.elapsed()));
    // The store returns (same port, fresh state): everything arrives.
    let back = Moto::start_on(port);
    back.create_bucket("outage");
    let client = back.client("outage");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let count = || {
        rt.block_on(async {
            futures::StreamExt::collect::<Vec<_>>(client.list(None))
                .await
                .len()
        })
    };
    assert!(
        wait_until(Duration::from_secs(40), || count() == 8),
        "4 recordings × (audio + record) after the outage; {}",
        rec.log()
    );
    assert!(files_with(&rec.dir.join("spool"), "").is_empty());
    assert_eq!(
        http_get(rec.http, "/readyz").unwrap().0,
        200,
        "ready again once the spool drained"
    );
}

#[test]
fn rtp_ports_held_by_another_process_are_skipped_and_none_free_gets_503() {
    use std::net::UdpSocket;
    let work = tempfile::tempdir().unwrap();
    let store = work.path().join("store");
    let base = opname_tests::free_port_block(40);
    let base = base + base % 2;
    // Another process (this test) holds every other even port of the recorder's range.
    let mut others: Vec<UdpSocket> = (0..10)
        .map(|i| UdpSocket::bind(("127.0.0.1", base + 4 * i)).unwrap())
        .collect();
    let rec = start(
        work.path(),
        format!("file://{}", store.display()),
        vec![],
        &format!("rtp:\n  portMin: {base}\n  portMax: {}\n", base + 39),
    );
    // Ten of the twenty ports free: five two-stream calls, each answered on ports it holds, none dropped.
    let report = loadgen(rec.sip, 5, 2);
    assert_eq!(report["answered"], 5, "{report}");
    assert!(
        wait_until(Duration::from_secs(10), || stored_records(&store).len()
            == 5),
        "{}",
        rec.log()
    );
    for r in stored_records(&store) {
        assert_eq!(r["complete"], true, "{r}");
        assert_eq!(
            r["endReason"], "bye",
            "ended by the SRC, not by the recorder: {r}"
        );
    }
    assert!(
        !rec.log().contains("cannot start recording media"),
        "{}",
        rec.log()
    );

    // Every port of the range taken: 503 with Retry-After, never an answer.
    assert!(
        wait_until(Duration::from_secs(10), || {
            (0..10).all(|i| {
                let port = base + 2 + 4 * i;
                others
                    .iter()
                    .any(|s| s.local_addr().unwrap().port() == port)
                    || UdpSocket::bind(("127.0.0.1", port))
                        .map(|s| others.push(s))
                        .is_ok()
            })
        }),
        "the recorder let go of its ports after the calls"
    );
    let refused = loadgen(rec.sip, 1, 1);
    assert_eq!(refused["answered"], 0, "{refused}");
    assert_eq!(refused["rejected"]["503"], 1, "{refused}");
    assert_eq!(stored_records(&store).len(), 5);
}
