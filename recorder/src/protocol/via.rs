//! The top Via of a received request, stamped with where it came from (RFC 3261 §18.2.1,
//! RFC 3581) before any response is built from it.

/// The top Via of a received request as its responses must carry it: `received=` the source
/// address when the sent-by host is another (RFC 3261 §18.2.1), and with a bare `rport` both
/// `received=` and `rport=` the source port (RFC 3581), so they reach an SRC behind NAT.
pub fn stamp_via(via: &str, source: std::net::SocketAddr) -> String {
    let mut parts = via.split(';');
    let sent_by = parts.next().unwrap_or_default();
    let mut params: Vec<String> = parts
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .filter(|p| !p.to_ascii_lowercase().starts_with("received="))
        .map(str::to_string)
        .collect();
    let host = sent_by.split_whitespace().nth(1).unwrap_or_default();
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.split(':').next().unwrap_or_default(),
    };
    let ip = source.ip().to_string();
    let mut rport = false;
    for p in params.iter_mut() {
        if p.eq_ignore_ascii_case("rport") {
            *p = format!("rport={}", source.port());
            rport = true;
        }
    }
    if rport || host.parse::<std::net::IpAddr>().ok() != Some(source.ip()) {
        params.push(format!("received={ip}"));
    }
    std::iter::once(sent_by.trim_end().to_string())
        .chain(params)
        .collect::<Vec<_>>()
        .join(";")
}

impl super::sip::Message {
    /// Stamps the top Via with the address the request came from ([`stamp_via`]).
    pub fn received_from(&mut self, source: std::net::SocketAddr) {
        if let Some((_, v)) = self.headers.iter_mut().find(|(n, _)| n == "Via") {
            let first_end = v.find(',').unwrap_or(v.len());
            let stamped = stamp_via(&v[..first_end], source);
            *v = format!("{stamped}{}", &v[first_end..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3261 §18.2.1 and RFC 3581: what an SRC behind NAT needs to get its answers.
    #[test]
    fn the_top_via_says_where_the_request_came_from() {
        let src: std::net::SocketAddr = "198.51.100.7:40123".parse().unwrap();
        assert_eq!(
            stamp_via("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa;rport", src),
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa;rport=40123;received=198.51.100.7"
        );
        assert_eq!(
            stamp_via("SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa", src),
            "SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKa;received=198.51.100.7"
        );
        // Sent from the address it names: nothing to add; a forged received= is replaced.
        assert_eq!(
            stamp_via("SIP/2.0/TCP 198.51.100.7:5060;branch=z9hG4bKb", src),
            "SIP/2.0/TCP 198.51.100.7:5060;branch=z9hG4bKb"
        );
        assert_eq!(
            stamp_via(
                "SIP/2.0/UDP sbc.example;received=1.2.3.4;branch=z9hG4bKc",
                src
            ),
            "SIP/2.0/UDP sbc.example;branch=z9hG4bKc;received=198.51.100.7"
        );
        let v6: std::net::SocketAddr = "[2001:db8::1]:5062".parse().unwrap();
        assert_eq!(
            stamp_via("SIP/2.0/UDP [2001:db8::1]:5062;branch=z9hG4bKd", v6),
            "SIP/2.0/UDP [2001:db8::1]:5062;branch=z9hG4bKd"
        );
        let mut msg = super::super::sip::parse(
            b"OPTIONS sip:srs@x SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKe;rport, SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKf\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:b@x>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            true,
        )
        .unwrap();
        msg.received_from(src);
        assert_eq!(
            msg.header("Via").unwrap(),
            "SIP/2.0/UDP 10.0.0.5;branch=z9hG4bKe;rport=40123;received=198.51.100.7, SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKf",
            "only the top Via"
        );
    }
}
