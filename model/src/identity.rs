//! Identity normalisation: the many spellings of one device or number reduced to one key.
//!
//! SRCs write participants as `sip:+31201234567@host;user=phone`, `tel:+31-20-123-4567`,
//! `31201234567`, `"Alice" <sip:Alice@PBX.example>` or a bare extension. Policies list the same
//! devices in whatever form the platform engineer had at hand. Both sides go through
//! [`normalize`] so that matching is a plain map lookup.

use std::fmt;

/// The canonical form of an identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdentityKey {
    /// A telephone number or numeric extension: digits only (`+`, separators and any
    /// host dropped), so E.164 with and without `+` and `sip:NUMBER@any-host` meet.
    Number(String),
    /// A named SIP address-of-record, `user@host`, both lowercased.
    Address(String),
    /// A bare non-numeric name without a host (e.g. a softphone login), lowercased.
    Name(String),
}

impl fmt::Display for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityKey::Number(n) => write!(f, "tel:{n}"),
            IdentityKey::Address(a) => write!(f, "sip:{a}"),
            IdentityKey::Name(n) => write!(f, "{n}"),
        }
    }
}

/// Normalises any identity spelling; `None` when nothing identifying is left (e.g. `sip:host`).
pub fn normalize(raw: &str) -> Option<IdentityKey> {
    let uri = strip_display_name(raw.trim());
    let lower = uri.to_ascii_lowercase();
    let (scheme, rest) = if lower.starts_with("sips:") {
        ("sip", &uri[5..])
    } else if lower.starts_with("sip:") {
        ("sip", &uri[4..])
    } else if lower.starts_with("tel:") {
        ("tel", &uri[4..])
    } else {
        ("", uri)
    };
    // URI parameters (`;user=phone`, `;phone-context=…`) and headers (`?…`) never identify.
    let rest = rest.split(['?', '>']).next().unwrap_or_default();
    let (userinfo, host) = match rest.split_once('@') {
        Some((u, h)) => (u, Some(h.split([';', ':']).next().unwrap_or_default())),
        None if scheme == "sip" => return None,
        None => (rest, None),
    };
    let user = percent_decode(userinfo.split([';', ':']).next().unwrap_or_default());
    if user.is_empty() {
        return None;
    }
    if let Some(number) = phone_digits(&user) {
        return Some(IdentityKey::Number(number));
    }
    match host {
        Some(h) if !h.is_empty() => Some(IdentityKey::Address(format!(
            "{}@{}",
            user.to_lowercase(),
            h.to_ascii_lowercase()
        ))),
        _ => Some(IdentityKey::Name(user.to_lowercase())),
    }
}

/// `"Alice" <sip:a@b>;tag=x` → `sip:a@b`; a plain URI is returned as it is.
fn strip_display_name(s: &str) -> &str {
    match (s.find('<'), s.rfind('>')) {
        (Some(open), Some(close)) if open < close => &s[open + 1..close],
        _ => s,
    }
}

/// Digits of a phone-like user part; visual separators (RFC 3966) and a leading `+` dropped.
fn phone_digits(user: &str) -> Option<String> {
    let body = user.strip_prefix('+').unwrap_or(user);
    let mut digits = String::with_capacity(body.len());
    for c in body.chars() {
        match c {
            '0'..='9' | '*' | '#' => digits.push(c),
            '-' | '.' | '(' | ')' | ' ' => {}
            _ => return None,
        }
    }
    digits.chars().any(|c| c.is_ascii_digit()).then_some(digits)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(v) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> Option<IdentityKey> {
        Some(IdentityKey::Number(s.into()))
    }

    #[test]
    fn numbers_meet_across_spellings() {
        for raw in [
            "sip:+31201234567@pbx.example;user=phone",
            "sips:31201234567@other.example",
            "tel:+31-20-123-4567",
            "tel:+31201234567;phone-context=example.com",
            "+31 (20) 123 4567",
            "31201234567",
            "\"Front desk\" <sip:+31201234567@10.0.0.1:5060;transport=udp>",
            "<tel:+31201234567>",
        ] {
            assert_eq!(normalize(raw), num("31201234567"), "{raw}");
        }
    }

    #[test]
    fn named_addresses_lowercase_and_drop_params() {
        assert_eq!(
            normalize("sip:Alice@PBX.Example.com:5061;transport=tls"),
            Some(IdentityKey::Address("alice@pbx.example.com".into()))
        );
        assert_eq!(
            normalize("Alice@pbx.example.com"),
            Some(IdentityKey::Address("alice@pbx.example.com".into()))
        );
        assert_eq!(
            normalize("sip:alice%40home@pbx"),
            Some(IdentityKey::Address("alice@home@pbx".into()))
        );
        assert_eq!(normalize("alice"), Some(IdentityKey::Name("alice".into())));
    }

    #[test]
    fn extensions_and_empty() {
        assert_eq!(normalize("sip:1001@pbx.example"), num("1001"));
        assert_eq!(normalize("1001"), num("1001"));
        assert_eq!(normalize("sip:pbx.example"), None);
        assert_eq!(normalize(""), None);
        assert_eq!(normalize("sip:@host"), None);
        assert_eq!(normalize("tel:"), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,64}") {
            let _ = normalize(&s);
        }

        #[test]
        fn idempotent_on_display(s in "(sip:|tel:|)[a-z0-9+.-]{1,12}(@[a-z.]{1,10})?") {
            if let Some(k) = normalize(&s) {
                proptest::prop_assert_eq!(normalize(&k.to_string()), Some(k));
            }
        }
    }
}
