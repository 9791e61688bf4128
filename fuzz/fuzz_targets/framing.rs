//! SIP over TCP framing and message parsing: no panic, no frame beyond the buffer, and a
//! keep-alive or message always consumes something (a zero-length frame once looped forever).
#![no_main]

use libfuzzer_sys::fuzz_target;
use opname_recorder::protocol::sip::{self, Framing};

fuzz_target!(|data: &[u8]| {
    match sip::frame_stream(data) {
        Framing::Message(len) => {
            assert!(len > 0 && len <= data.len());
            let _ = sip::parse(&data[..len], false);
        }
        Framing::KeepAlive { len, .. } => assert!(len > 0 && len <= data.len()),
        Framing::Incomplete | Framing::Invalid(_) => {}
    }
    let _ = sip::parse(data, true);
});
