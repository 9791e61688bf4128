//! SDES-SRTP keying in SDP (RFC 4568): the `a=crypto` lines of an offer, and the line of the
//! answer. Pure. Keys are kept in [`MasterKey`], whose `Debug` prints nothing of them: they
//! must never reach a log line or the record.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};

/// The crypto suites the recorder decrypts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suite {
    AesCm128HmacSha1_80,
    AesCm128HmacSha1_32,
    AeadAes128Gcm,
}

impl Suite {
    pub const ALL: &'static [Suite] = &[
        Suite::AesCm128HmacSha1_80,
        Suite::AesCm128HmacSha1_32,
        Suite::AeadAes128Gcm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128HmacSha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Suite::AeadAes128Gcm => "AEAD_AES_128_GCM",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|s| s.name() == name)
    }

    /// Master key and master salt lengths (RFC 3711, RFC 7714).
    pub fn lengths(self) -> (usize, usize) {
        match self {
            Suite::AesCm128HmacSha1_80 | Suite::AesCm128HmacSha1_32 => (16, 14),
            Suite::AeadAes128Gcm => (16, 12),
        }
    }
}

/// Master key followed by master salt.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey(Vec<u8>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// `(key, salt)` for `suite`.
    pub fn split(&self, suite: Suite) -> (&[u8], &[u8]) {
        self.0.split_at(suite.lengths().0.min(self.0.len()))
    }
}

/// One usable `a=crypto` line.
#[derive(Clone, Debug, PartialEq)]
pub struct Crypto {
    pub tag: u32,
    pub suite: Suite,
    pub key: MasterKey,
}

/// The value of an `a=crypto:` attribute, if the recorder can use it: a suite of [`Suite::ALL`],
/// one inline key of the suite's length (a lifetime is accepted; an MKI, further keys and session
/// parameters such as `UNENCRYPTED_SRTP` are not supported), base64 with or without padding.
pub fn parse(value: &str) -> Option<Crypto> {
    let mut parts = value.split_whitespace();
    let tag = parts.next()?.parse().ok()?;
    let suite = Suite::parse(parts.next()?)?;
    let key_params = parts.next()?;
    if parts.next().is_some() || key_params.contains(';') {
        return None;
    }
    let inline = key_params.strip_prefix("inline:")?;
    let mut fields = inline.split('|');
    let b64 = fields.next()?;
    // A lifetime (`2^31` or a number) may follow; an MKI (`1:4`) may not.
    if fields.any(|f| f.contains(':')) {
        return None;
    }
    let bytes = STANDARD
        .decode(b64)
        .or_else(|_| STANDARD_NO_PAD.decode(b64))
        .ok()?;
    let (k, s) = suite.lengths();
    (bytes.len() == k + s).then_some(Crypto {
        tag,
        suite,
        key: MasterKey(bytes),
    })
}

/// The answer's `a=crypto` value: the offer's tag and suite, and the recorder's own key (which
/// protects nothing: the recorder sends no media).
pub fn answer_line(tag: u32, suite: Suite, key: &[u8]) -> String {
    format!("{tag} {} inline:{}", suite.name(), STANDARD.encode(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdes_lines_parse_and_keys_stay_secret() {
        // RFC 4568 §9.1's example key.
        let c = parse(
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4",
        );
        assert_eq!(c, None, "an MKI is not supported");
        let c =
            parse("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20")
                .unwrap();
        assert_eq!((c.tag, c.suite), (1, Suite::AesCm128HmacSha1_80));
        let (key, salt) = c.key.split(c.suite);
        assert_eq!((key.len(), salt.len()), (16, 14));
        assert!(!format!("{c:?}").contains("PS1u") && format!("{c:?}").contains("redacted"));
        assert!(
            parse("2 AES_CM_128_HMAC_SHA1_32 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR")
                .is_some()
        );
        let gcm = STANDARD.encode([7u8; 28]);
        assert!(parse(&format!("3 AEAD_AES_128_GCM inline:{gcm}")).is_some());
        assert!(
            parse(&format!(
                "3 AEAD_AES_128_GCM inline:{}",
                STANDARD.encode([7u8; 30])
            ))
            .is_none(),
            "wrong length"
        );
        assert!(
            parse("1 F8_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR")
                .is_none()
        );
        assert!(parse("1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR UNENCRYPTED_SRTP").is_none());
        let line = answer_line(4, Suite::AesCm128HmacSha1_32, &[1u8; 30]);
        assert!(parse(&line).is_some_and(|c| c.tag == 4), "{line}");
    }
}
