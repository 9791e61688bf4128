//! Download links for export archives: SigV4-presigned GET URLs (object_store's `Signer`),
//! signed for the public endpoint users reach from outside the cluster.
//!
//! A presigned URL dies at the earliest of its own expiry, 7 days (SigV4's limit) and the expiry
//! of the credentials that signed it (temporary STS/IRSA credentials often last hours), so the
//! expiry recorded in the status is that minimum, never a promise the store will not keep.

use std::time::Duration;

use object_store::aws::AmazonS3;
use object_store::path::Path;
use object_store::signer::Signer;

use crate::settings::StoreSettings;
use crate::store::{s3_builder, setting};

/// SigV4's limit for presigned URLs.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Store(#[from] object_store::Error),
    #[error("linkTTL {0:?} is not a duration such as 72h or 90m")]
    Ttl(String),
}

/// Parses `72h`, `1h30m`, `45s` (the CRD's pattern).
pub fn parse_ttl(s: &str) -> Result<Duration, LinkError> {
    let bad = || LinkError::Ttl(s.to_string());
    let (mut total, mut num) = (0u64, String::new());
    for c in s.chars() {
        match c {
            '0'..='9' => num.push(c),
            'h' | 'm' | 's' => {
                let n: u64 = num.parse().map_err(|_| bad())?;
                total += n * match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
                num.clear();
            }
            _ => return Err(bad()),
        }
    }
    if !num.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// The lifetime to sign for: the request's TTL (default 7 days), at most 7 days, and never past
/// the signing credentials' own expiry.
pub fn effective_ttl(
    requested: Option<Duration>,
    credentials_expire: Option<jiff::Timestamp>,
    now: jiff::Timestamp,
) -> Duration {
    let mut ttl = requested.unwrap_or(MAX_TTL).min(MAX_TTL);
    if let Some(exp) = credentials_expire {
        let left = exp.duration_since(now).unsigned_abs();
        ttl = if exp <= now {
            Duration::ZERO
        } else {
            ttl.min(left)
        };
    }
    ttl
}

/// object_store renews temporary credentials this long before they end, so one it hands out
/// is good for at least this much longer (its token cache's minimum).
pub const TEMPORARY_FLOOR: Duration = Duration::from_secs(300);

pub struct LinkSigner {
    s3: AmazonS3,
    credentials_expire: Option<jiff::Timestamp>,
}

impl LinkSigner {
    /// `None` for stores without presigned URLs (the local directory store: its archives are
    /// downloaded through the recordings service). Credentials come from the store's chain
    /// (`crate::store`), the host of the links from `public_endpoint` when set.
    pub fn from_settings(
        store: &StoreSettings,
        public_endpoint: Option<&str>,
    ) -> Result<Option<Self>, LinkError> {
        let Some(mut b) = s3_builder(store) else {
            return Ok(None);
        };
        // Links may name an http:// endpoint users reach (an in-cluster store in tests).
        b = b.with_allow_http(true);
        if let Some(endpoint) = public_endpoint {
            b = b.with_endpoint(endpoint);
        }
        // `aws configure export-credentials --format env` and most credential helpers set this
        // beside temporary credentials.
        let credentials_expire =
            setting(store, "AWS_CREDENTIAL_EXPIRATION").and_then(|t| t.parse().ok());
        Ok(Some(Self {
            s3: b.build()?,
            credentials_expire,
        }))
    }

    /// A GET link for `key` and when it stops working. Temporary credentials whose end is not
    /// known (a web identity's, which object_store renews hourly) are promised only for
    /// [`TEMPORARY_FLOOR`]: a link cannot outlive the session that signed it.
    pub async fn sign(
        &self,
        key: &str,
        requested: Option<Duration>,
        now: jiff::Timestamp,
    ) -> Result<(String, jiff::Timestamp), LinkError> {
        let credential = self.s3.credentials().get_credential().await?;
        let floor = jiff::SignedDuration::try_from(TEMPORARY_FLOOR).unwrap_or_default();
        let credentials_expire = self.credentials_expire.or_else(|| {
            credential
                .token
                .is_some()
                .then(|| now.checked_add(floor).unwrap_or(now))
        });
        let ttl = effective_ttl(requested, credentials_expire, now);
        let url = self
            .s3
            .signed_url(http::Method::GET, &Path::from(key), ttl)
            .await?;
        let expires = now
            .checked_add(jiff::SignedDuration::try_from(ttl).unwrap_or_default())
            .unwrap_or(now);
        Ok((url.to_string(), expires))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_capped_by_seven_days_and_the_credentials() {
        let now: jiff::Timestamp = "2026-11-28T12:00:00Z".parse().unwrap();
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(parse_ttl("72h").unwrap(), h(72));
        assert_eq!(parse_ttl("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_ttl("0s").is_err() && parse_ttl("3d").is_err() && parse_ttl("5").is_err());
        assert_eq!(effective_ttl(None, None, now), MAX_TTL);
        assert_eq!(effective_ttl(Some(h(500)), None, now), MAX_TTL);
        assert_eq!(effective_ttl(Some(h(72)), None, now), h(72));
        let creds = "2026-11-28T18:00:00Z".parse().unwrap();
        assert_eq!(effective_ttl(Some(h(72)), Some(creds), now), h(6));
        let gone = "2026-11-28T11:00:00Z".parse().unwrap();
        assert_eq!(effective_ttl(None, Some(gone), now), Duration::ZERO);
    }
}
