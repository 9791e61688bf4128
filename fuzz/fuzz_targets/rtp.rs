//! RTP and SRTP datagrams into a recording: plain and SDES-keyed streams, any bytes from the
//! offered source and from elsewhere. No panic; whatever arrives, the recording finishes.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use opname_recorder::media::mixer::{AudioSettings, Recording};
use opname_recorder::protocol::crypto;
use opname_recorder::protocol::sdp::Codec;
use opname_recorder::siprec::{Channel, MediaStream};

fuzz_target!(|data: &[u8]| {
    let key =
        crypto::parse("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR");
    let stream = |index: usize, port: u16, channel, srtp: Option<crypto::Crypto>| MediaStream {
        index,
        port,
        codec: Some((0, Codec::Pcmu)),
        telephone_event: Some(101),
        paused: false,
        label: None,
        channel,
        source: Some("10.0.0.1".parse().expect("ip")),
        srtp,
    };
    let streams = [
        stream(0, 1000, Channel::Left, None),
        stream(1, 1002, Channel::Right, key),
    ];
    let audio = AudioSettings {
        bitrate: 24_000,
        complexity: 0,
        jitter: Duration::from_millis(60),
    };
    let t0 = Instant::now();
    let Ok(mut rec) = Recording::new(Vec::new(), &streams, &audio, 1, None, t0) else {
        return;
    };
    let from: [SocketAddr; 2] = [
        "10.0.0.1:4000".parse().expect("addr"),
        "10.9.9.9:4000".parse().expect("addr"),
    ];
    for (n, packet) in data.split(|b| *b == 0xfe).take(64).enumerate() {
        let now = t0 + Duration::from_millis(20 * n as u64);
        let port = if n % 2 == 0 { 1000 } else { 1002 };
        rec.on_packet(port, packet, from[n % 3 / 2], now);
        let _ = rec.tick(now);
    }
    let _ = rec.finish(t0 + Duration::from_secs(2));
});
