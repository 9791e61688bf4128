//! What the service believes about a request before it reviews it: the client's address (a
//! proxy's `X-Forwarded-For` only from a trusted proxy), whether a POST came from the service's
//! own page (login CSRF and cross-site exports refused), whether a namespace is a name at all, and
//! the play sessions that decide which audio responses are audited.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use opname_model::config::SourceRange;

/// Where a request came from, as recorded in the audit.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    /// The client: `peer`, or the first address a trusted proxy forwarded for.
    pub address: IpAddr,
    pub peer: IpAddr,
    /// The header as sent (recorded either way, believed only from a trusted proxy).
    pub forwarded_for: Option<String>,
}

/// The client behind `peer`: `X-Forwarded-For` is read right to left, skipping trusted proxies,
/// and only when the peer itself is one; anyone else's header names nobody.
pub fn client(trusted: &[SourceRange], peer: IpAddr, headers: &HeaderMap) -> Client {
    let forwarded_for = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(", ");
    let forwarded_for = Some(forwarded_for).filter(|f| !f.is_empty());
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|r| r.0.contains(ip));
    let mut address = peer;
    if is_trusted(&peer)
        && let Some(chain) = &forwarded_for
    {
        for hop in chain.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    address = ip;
                    if !is_trusted(&ip) {
                        break;
                    }
                }
                // A hop that is no address ends what can be believed.
                Err(_) => break,
            }
        }
    }
    Client {
        address,
        peer,
        forwarded_for,
    }
}

/// Whether a state-changing request came from this service's own page, or from no browser at
/// all (an API client sends neither header). Browsers send `Sec-Fetch-Site` or at least `Origin`
/// on every POST.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, rest)| rest.trim_end_matches('/'));
    matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
}

/// Refuses cross-site POSTs before any handler runs.
pub async fn refuse_cross_site(req: Request, next: Next) -> Response {
    if req.method() == Method::POST && !same_origin(req.headers()) {
        tracing::warn!(target: "opname::audit", origin = ?req.headers().get(header::ORIGIN), path = %req.uri().path(), "cross-site request refused");
        return (
            StatusCode::FORBIDDEN,
            axum::Json(serde_json::json!({ "error": "cross-site request refused" })),
        )
            .into_response();
    }
    next.run(req).await
}

/// A Kubernetes namespace name (an RFC 1123 DNS label), checked before anything is reviewed or
/// read with it.
pub fn valid_namespace(ns: &str) -> bool {
    let b = ns.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// A play lasts while its audio keeps being fetched: a response within this long of the last one
/// of the same person, recording and action belongs to the same play.
pub const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
const MAX_SESSIONS: usize = 16_384;

/// A person (identity digest), a recording, an action.
type SessionKey = ([u8; 32], String, &'static str);

/// Server-side play sessions: the first audio response of a session is audited, whatever range
/// it asks for; later ones (seeks, the player's own range requests) are covered by it.
#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<SessionKey, Instant>>,
}

impl Sessions {
    /// Whether this response starts a session (and must be audited); touches it either way.
    /// When the table is full it forgets everything, which only audits more.
    pub fn starts(&self, who: [u8; 32], recording: &str, action: &'static str) -> bool {
        let Ok(mut open) = self.open.lock() else {
            return true;
        };
        let key = (who, recording.to_string(), action);
        let now = Instant::now();
        let covered = open
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < SESSION_IDLE);
        if !covered && open.len() >= MAX_SESSIONS {
            open.retain(|_, at| now.duration_since(*at) < SESSION_IDLE);
            if open.len() >= MAX_SESSIONS {
                open.clear();
            }
        }
        open.insert(key, now);
        !covered
    }

    /// Ends a session whose audit could not be written, so the next response tries again.
    pub fn forget(&self, who: [u8; 32], recording: &str, action: &'static str) {
        if let Ok(mut open) = self.open.lock() {
            open.remove(&(who, recording.to_string(), action));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted: Vec<SourceRange> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 10.1.2.3")]);
        let stranger: IpAddr = "198.51.100.7".parse().unwrap();
        let c = client(&trusted, stranger, &h);
        assert_eq!(c.address, stranger, "a stranger's header names nobody");
        assert_eq!(c.forwarded_for.as_deref(), Some("203.0.113.9, 10.1.2.3"));
        let proxy: IpAddr = "10.9.9.9".parse().unwrap();
        let c = client(&trusted, proxy, &h);
        assert_eq!(c.address, "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(c.peer, proxy);
        // A client that writes its own header in front of the proxy's is not believed past the
        // first untrusted hop from the right.
        let spoofed = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9")]);
        assert_eq!(
            client(&trusted, proxy, &spoofed).address,
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client(&trusted, proxy, &HeaderMap::new()).address, proxy);
        let junk = headers(&[("x-forwarded-for", "not-an-address")]);
        assert_eq!(client(&trusted, proxy, &junk).address, proxy);
    }

    #[test]
    fn only_the_own_page_may_post() {
        assert!(same_origin(&HeaderMap::new()), "API clients send neither");
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(same_origin(&headers(&[
            ("origin", "https://rec.example.com"),
            ("host", "rec.example.com")
        ])));
        assert!(!same_origin(&headers(&[
            ("origin", "https://evil.example"),
            ("host", "rec.example.com")
        ])));
        assert!(!same_origin(&headers(&[
            ("origin", "null"),
            ("host", "rec.example.com")
        ])));
    }

    #[test]
    fn namespaces_are_dns_labels() {
        assert!(valid_namespace("acme"));
        assert!(valid_namespace("acme-2"));
        for bad in [
            "",
            "-acme",
            "acme-",
            "Acme",
            "a.b",
            "a/b",
            "..",
            &"a".repeat(64),
        ] {
            assert!(!valid_namespace(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_session_covers_its_later_responses_only() {
        let s = Sessions::default();
        let (alice, bob) = ([1u8; 32], [2u8; 32]);
        assert!(s.starts(alice, "r1", "play"));
        assert!(!s.starts(alice, "r1", "play"), "a seek of the same play");
        assert!(s.starts(alice, "r1", "download"));
        assert!(s.starts(alice, "r2", "play"));
        assert!(s.starts(bob, "r1", "play"), "another person's play");
        s.forget(alice, "r1", "play");
        assert!(s.starts(alice, "r1", "play"));
    }
}
