//! The bodies a SIPREC INVITE carries, each parser on its own: multipart (the first line is the
//! Content-Type), SDP with negotiation and the answer, RFC 7865 metadata, SDES crypto lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use opname_recorder::protocol::{body, crypto, metadata, sdp};

fuzz_target!(|data: &[u8]| {
    let (head, rest) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let content_type = String::from_utf8_lossy(head);
    if let Ok(parts) = body::split(Some(&content_type), rest) {
        if let Some(s) = parts.sdp {
            let _ = sdp::parse(s);
        }
        if let Some(m) = parts.metadata {
            let _ = metadata::parse(m);
        }
    }
    if let Ok(offer) = sdp::parse(data) {
        let negotiated = offer.negotiate();
        assert_eq!(negotiated.len(), offer.media.len());
        assert!(offer.media.len() <= sdp::MAX_STREAMS);
        let ports: Vec<u16> = (0..negotiated.len() as u16)
            .map(|i| 20000 + 2 * i)
            .collect();
        let _ = sdp::answer(
            &offer,
            &negotiated,
            &ports,
            "192.0.2.1".parse().expect("ip"),
            1,
            &[7; 30],
        );
    }
    let _ = metadata::parse(data);
    let _ = crypto::parse(&String::from_utf8_lossy(data));
});
