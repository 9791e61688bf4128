//! On-demand recording end to end: the user (the callee, who sends stream 2) keys `*44` during
//! a SIPp call, as RFC 4733 telephone-events or as in-band tones; the whole call is kept from its
//! first second. Without the code nothing reaches the store and the spool is emptied.

use std::time::Duration;

use opname_tests::audio::{decode_ogg_opus, envelope, speech};
use opname_tests::{
    Recorder, RecorderSpec, files_with, sipp_call_with, stored_records, wait_until,
};

const CALLER: &str = "sip:+4930123456@carrier.example";
const USER: &str = "sip:+31612345678@sbc.example";
const POLICY: &str = "  - name: bob\n    user: bob@acme.example\n    identities: [\"tel:+31612345678\"]\n    mode: OnDemand\n    onDemand: {keepCode: \"*44\"}\n    retentionDays: 30\n";

#[test]
fn keep_code_keeps_the_whole_call_and_without_it_nothing_is_kept() {
    let work = tempfile::tempdir().unwrap();
    // The caller talks from the first second; the user answers later and keys the code at 2.5 s.
    speech(
        work.path(),
        "caller",
        "Hello, this is the caller speaking right from the start.",
        "en-us",
        0.1,
        5.0,
    );
    speech(
        work.path(),
        "callee",
        "Yes. I will keep this call.",
        "en-gb",
        1.0,
        5.0,
    );
    let store = work.path().join("store");
    let rec = Recorder::start(RecorderSpec {
        dir: &work.path().join("rec"),
        store_url: format!("file://{}", store.display()),
        policies: POLICY,
        env: vec![],
        extra: "",
    });
    let spool = rec.dir.join("spool");

    // 1. Without the code: nothing in the store, nothing left in the spool.
    sipp_call_with(rec.sip, "u1", work.path(), CALLER, USER, 4000, " 101", "");
    assert!(
        wait_until(Duration::from_secs(5), || rec
            .log()
            .contains("without the keep code")),
        "{}",
        rec.log()
    );
    assert!(
        stored_records(&store).is_empty(),
        "an unkept on-demand call leaves no recording"
    );
    assert!(files_with(&store, ".opus").is_empty());
    assert!(files_with(&spool, "").is_empty(), "and no spooled audio");

    // 2. RFC 4733 telephone-events on the user's stream.
    sipp_call_with(
        rec.sip,
        "u1",
        work.path(),
        CALLER,
        USER,
        4500,
        " 101",
        "rfc4733:*44@2.5",
    );
    assert!(
        wait_until(Duration::from_secs(5), || stored_records(&store).len() == 1),
        "{}",
        rec.log()
    );
    let r = &stored_records(&store)[0];
    assert_eq!(r["mode"], "OnDemand");
    assert_eq!(r["user"], "bob@acme.example");
    let start: jiff::Timestamp = r["start"].as_str().unwrap().parse().unwrap();
    let kept: jiff::Timestamp = r["keptAt"].as_str().expect("keptAt").parse().unwrap();
    let after = kept.duration_since(start).as_secs_f64();
    assert!(
        (2.5..4.0).contains(&after),
        "the code was keyed ~2.5–3 s into the call: {after}"
    );
    let duration = r["durationSeconds"].as_f64().unwrap();
    assert!(
        duration > 4.0,
        "the whole call is kept, not only what followed the code: {duration}"
    );
    // The audio starts at the call's start: the caller's speech is there in the first second.
    let audio = std::fs::read(files_with(&store, ".opus")[0].clone()).unwrap();
    let left = envelope(&decode_ogg_opus(&audio).channel(0));
    let first_second = left[..50].iter().cloned().fold(0.0, f64::max);
    assert!(
        first_second > 500.0,
        "speech in the first second of the kept recording: {first_second}"
    );
    assert!(files_with(&spool, "").is_empty());

    // 3. In-band tones on a G.711 stream that offers no telephone-event.
    sipp_call_with(
        rec.sip,
        "u1",
        work.path(),
        CALLER,
        USER,
        4500,
        "",
        "inband:*44@2.5",
    );
    assert!(
        wait_until(Duration::from_secs(5), || stored_records(&store).len() == 2),
        "{}",
        rec.log()
    );
    assert_eq!(
        stored_records(&store)
            .iter()
            .filter(|r| r.get("keptAt").is_some())
            .count(),
        2
    );
}
