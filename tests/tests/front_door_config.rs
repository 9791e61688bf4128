//! The front door's rendered Kamailio configuration is one Kamailio accepts (`kamailio -c`), with
//! and without an allow-list, for both distributions.

use opname_model::config::Refuse;
use opname_operator::fleet::front_door::kamailio_cfg;
use opname_operator::settings::Distribution;

#[test]
fn kamailio_accepts_every_rendered_configuration() {
    opname_tests::require("kamailio", "apt-get install kamailio");
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("dispatcher.list");
    std::fs::write(&list, "1 sip:127.0.0.1:5060 0 0\n").unwrap();
    let allow = [
        "10.20.0.0/16".parse().unwrap(),
        "192.0.2.7".parse().unwrap(),
    ];
    for (distribution, allow, refuse) in [
        (Distribution::RoundRobin, &allow[..0], Refuse::Reject),
        (Distribution::CallIdHash, &allow[..], Refuse::Reject),
        (Distribution::RoundRobin, &allow[..], Refuse::Drop),
    ] {
        let cfg = dir.path().join("kamailio.cfg");
        std::fs::write(&cfg, kamailio_cfg(distribution, allow, refuse)).unwrap();
        let out = std::process::Command::new("/usr/sbin/kamailio")
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .env("POD_IP", "127.0.0.1")
            .env("OPNAME_DISPATCHER_LIST", &list)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{distribution:?} {allow:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
