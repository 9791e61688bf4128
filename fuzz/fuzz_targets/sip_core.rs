//! Whole SIP messages through the sans-IO core, as from an allowed SBC: parsing, multipart,
//! SDP, metadata, SDES, admission, dialogs and timers. Nothing may panic, and the core's tables
//! stay within their bounds.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use opname_model::config::Config;
use opname_recorder::siprec::policy::PolicyTable;
use opname_recorder::siprec::{CoreConfig, Peer, Srs, Transport};

fn table() -> Arc<PolicyTable> {
    static TABLE: OnceLock<Arc<PolicyTable>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            let config = Config::parse(
                "namespace: acme\npolicies:\n  - name: alice\n    user: alice@acme.example\n    identities: [\"sip:alice@example.com\", \"tel:+31201234567\", \"1001\"]\n    retentionDays: 90\n",
            )
            .expect("policies");
            Arc::new(PolicyTable::build(&config).0)
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let mut srs = Srs::new(
        CoreConfig {
            sip_host: "192.0.2.10:5060".into(),
            rtp_advertise: "192.0.2.10".parse().expect("address"),
            port_min: 20000,
            port_max: 20999,
            max_calls: 10,
            retry_after: 5,
            latching: false,
            tls_host: Some("192.0.2.10:5061;transport=tls".into()),
            plain_with_tls: true,
            sources: Default::default(),
        },
        table(),
        std::hash::RandomState::new(),
    );
    let t0 = Instant::now();
    // One input may hold several messages (a dialog), split on a line of its own.
    for (n, msg) in data.split(|b| *b == 0xff).take(8).enumerate() {
        let transport = match n % 3 {
            0 => Transport::Udp,
            1 => Transport::Tcp,
            _ => Transport::Tls,
        };
        let peer = Peer {
            transport,
            addr: SocketAddr::from(([10, 0, 0, 1], 5060)),
            conn: 1,
        };
        let _ = srs.handle_message(peer, msg, t0 + Duration::from_millis(n as u64));
    }
    let _ = srs.handle_timeout(t0 + Duration::from_secs(40));
    assert!(srs.active_calls() <= 10);
});
