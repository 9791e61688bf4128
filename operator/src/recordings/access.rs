//! Who may hear recordings, decided by Kubernetes itself: a bearer token is authenticated with a
//! TokenReview and every action is authorised with a SubjectAccessReview on a virtual resource in
//! group `opname.dev` (`recordings`: `list` to list, `get` to play or download; `bulkexports`:
//! `list`, `create`) in the recording's namespace. Answers are cached briefly (tokens 60 s,
//! decisions 10 s) so a page of range requests does not cost a review each; decisions are keyed on
//! the whole identity (user, uid, groups, extra), never on the name alone.
//!
//! Tokens are reviewed for the service's own audiences, so a token the API server would accept
//! is useless here and the service never collects one. Failed logins cost the client: a refused
//! token is remembered for [`REFUSED_TTL`], and a client with [`MAX_FAILURES`] refusals in a
//! [`FAILURE_WINDOW`] is answered 429 without a review until the window ends.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};
use sha2::Digest;

const TOKEN_TTL: Duration = Duration::from_secs(60);
const DECISION_TTL: Duration = Duration::from_secs(10);
/// How long a refused token is refused without asking again.
const REFUSED_TTL: Duration = Duration::from_secs(10);
/// Refusals a client may collect per window before it waits.
pub const MAX_FAILURES: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Entries of each cache; an outsider's junk tokens and addresses cannot grow them further.
const MAX_ENTRIES: usize = 16_384;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("authentication required")]
    Unauthenticated,
    #[error("{user} may not {verb} {resource} in namespace {namespace}")]
    Forbidden {
        user: String,
        verb: String,
        resource: String,
        namespace: String,
    },
    #[error("too many failed logins; try again in {0} s")]
    Throttled(u64),
    #[error("review failed: {0}")]
    Review(#[from] kube::Error),
}

/// An authenticated caller, as the TokenReview described them.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub user: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// Scopes and other attributes an authenticator attached (a scoped token's limits live here).
    pub extra: BTreeMap<String, Vec<String>>,
}

impl Identity {
    /// A digest of everything an authorizer may decide on.
    pub(crate) fn digest(&self) -> [u8; 32] {
        let mut h = sha2::Sha256::new();
        for part in [&self.user, &self.uid] {
            h.update(part.len().to_le_bytes());
            h.update(part.as_bytes());
        }
        let mut groups = self.groups.clone();
        groups.sort();
        for g in &groups {
            h.update(b"g");
            h.update(g.len().to_le_bytes());
            h.update(g.as_bytes());
        }
        for (k, values) in &self.extra {
            h.update(b"x");
            h.update(k.len().to_le_bytes());
            h.update(k.as_bytes());
            for v in values {
                h.update(v.len().to_le_bytes());
                h.update(v.as_bytes());
            }
        }
        h.finalize().into()
    }
}

/// A decision's key: the identity's digest, verb, resource, namespace.
type Decision = ([u8; 32], String, String, String);

/// Refusals of one client in the current window.
#[derive(Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

pub struct Access {
    client: Client,
    audiences: Vec<String>,
    tokens: Mutex<HashMap<[u8; 32], (Instant, Identity)>>,
    refused: Mutex<HashMap<[u8; 32], Instant>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    decisions: Mutex<HashMap<Decision, (Instant, bool)>>,
}

/// Inserts into a bounded cache: expired entries go first, and if the table is still full, all
/// of it (a cache, so losing it costs only reviews).
fn bounded_insert<K: std::hash::Hash + Eq, V>(
    map: &mut HashMap<K, V>,
    key: K,
    value: V,
    fresh: impl Fn(&V) -> bool,
) {
    if map.len() >= MAX_ENTRIES {
        map.retain(|_, v| fresh(v));
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
    }
    map.insert(key, value);
}

/// The SubjectAccessReview asking whether `who` may `verb` `opname.dev/{resource}` in `namespace`.
pub fn review_of(
    who: &Identity,
    verb: &str,
    resource: &str,
    namespace: &str,
) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(who.user.clone()),
            uid: Some(who.uid.clone()).filter(|u| !u.is_empty()),
            groups: Some(who.groups.clone()),
            extra: Some(who.extra.clone()).filter(|e| !e.is_empty()),
            resource_attributes: Some(ResourceAttributes {
                group: Some("opname.dev".into()),
                resource: Some(resource.into()),
                verb: Some(verb.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

impl Access {
    /// Reviews tokens for `audiences` (empty: the API server's own).
    pub fn new(client: Client, audiences: Vec<String>) -> Self {
        Self {
            client,
            audiences,
            tokens: Mutex::default(),
            refused: Mutex::default(),
            failures: Mutex::default(),
            decisions: Mutex::default(),
        }
    }

    /// Seconds until `client` may try again, if it collected too many refusals.
    fn throttled(&self, client: IpAddr) -> Option<u64> {
        let f = self.failures.lock().ok()?.get(&client).copied()?;
        let left = FAILURE_WINDOW.checked_sub(f.since.elapsed())?;
        (f.count >= MAX_FAILURES).then(|| left.as_secs().max(1))
    }

    fn failed(&self, client: IpAddr) {
        if let Ok(mut all) = self.failures.lock() {
            let now = Instant::now();
            match all.get_mut(&client) {
                Some(f) if f.since.elapsed() < FAILURE_WINDOW => f.count += 1,
                _ => bounded_insert(
                    &mut all,
                    client,
                    Failures {
                        since: now,
                        count: 1,
                    },
                    |f| f.since.elapsed() < FAILURE_WINDOW,
                ),
            }
        }
    }

    /// The caller a bearer token names, reviewed for the service's audiences. `client` is the
    /// address failed attempts count against.
    pub async fn authenticate(&self, token: &str, client: IpAddr) -> Result<Identity, AccessError> {
        if let Some(wait) = self.throttled(client) {
            return Err(AccessError::Throttled(wait));
        }
        if token.is_empty() {
            return Err(AccessError::Unauthenticated);
        }
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some((at, who)) = self
            .tokens
            .lock()
            .ok()
            .and_then(|t| t.get(&digest).cloned())
            && at.elapsed() < TOKEN_TTL
        {
            return Ok(who);
        }
        if self
            .refused
            .lock()
            .ok()
            .and_then(|r| r.get(&digest).copied())
            .is_some_and(|at| at.elapsed() < REFUSED_TTL)
        {
            self.failed(client);
            return Err(AccessError::Unauthenticated);
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                audiences: Some(self.audiences.clone()).filter(|a| !a.is_empty()),
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let status = answer.status.unwrap_or_default();
        let user = status.user.unwrap_or_default();
        if status.authenticated != Some(true) || user.username.as_deref().unwrap_or("").is_empty() {
            if let Ok(mut r) = self.refused.lock() {
                bounded_insert(&mut r, digest, Instant::now(), |at| {
                    at.elapsed() < REFUSED_TTL
                });
            }
            self.failed(client);
            return Err(AccessError::Unauthenticated);
        }
        let who = Identity {
            user: user.username.unwrap_or_default(),
            uid: user.uid.unwrap_or_default(),
            groups: user.groups.unwrap_or_default(),
            extra: user.extra.unwrap_or_default(),
        };
        if let Ok(mut t) = self.tokens.lock() {
            bounded_insert(&mut t, digest, (Instant::now(), who.clone()), |(at, _)| {
                at.elapsed() < TOKEN_TTL
            });
        }
        Ok(who)
    }

    /// Allows `verb` on `opname.dev/{resource}` in `namespace`, or says why not.
    pub async fn authorize(
        &self,
        who: &Identity,
        verb: &str,
        resource: &str,
        namespace: &str,
    ) -> Result<(), AccessError> {
        let key = (
            who.digest(),
            verb.to_string(),
            resource.to_string(),
            namespace.to_string(),
        );
        let cached = self
            .decisions
            .lock()
            .ok()
            .and_then(|d| d.get(&key).copied())
            .filter(|(at, _)| at.elapsed() < DECISION_TTL);
        let allowed = match cached {
            Some((_, allowed)) => allowed,
            None => {
                let review = review_of(who, verb, resource, namespace);
                let answer = Api::<SubjectAccessReview>::all(self.client.clone())
                    .create(&PostParams::default(), &review)
                    .await?;
                let allowed = answer.status.is_some_and(|s| s.allowed);
                if let Ok(mut d) = self.decisions.lock() {
                    bounded_insert(&mut d, key, (Instant::now(), allowed), |(at, _)| {
                        at.elapsed() < DECISION_TTL
                    });
                }
                allowed
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(AccessError::Forbidden {
                user: who.user.clone(),
                verb: verb.into(),
                resource: resource.into(),
                namespace: namespace.into(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(groups: &[&str]) -> Identity {
        Identity {
            user: "alice".into(),
            uid: "u1".into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            extra: BTreeMap::new(),
        }
    }

    #[test]
    fn decisions_are_keyed_on_the_whole_identity() {
        let admin = who(&["acme-admins", "system:authenticated"]);
        assert_ne!(admin.digest(), who(&["system:authenticated"]).digest());
        assert_eq!(
            admin.digest(),
            who(&["system:authenticated", "acme-admins"]).digest(),
            "group order does not matter"
        );
        let mut scoped = admin.clone();
        scoped
            .extra
            .insert("scopes.example.com".into(), vec!["read-only".into()]);
        assert_ne!(admin.digest(), scoped.digest());
        let mut renamed = admin.clone();
        renamed.uid = "u2".into();
        assert_ne!(admin.digest(), renamed.digest());
    }

    #[test]
    fn reviews_carry_extra() {
        let mut scoped = who(&["g"]);
        scoped
            .extra
            .insert("scopes.example.com".into(), vec!["read-only".into()]);
        let r = review_of(&scoped, "get", "recordings", "acme");
        assert_eq!(r.spec.extra, Some(scoped.extra.clone()));
        assert_eq!(r.spec.uid.as_deref(), Some("u1"));
        assert_eq!(
            r.spec
                .resource_attributes
                .and_then(|a| a.namespace)
                .as_deref(),
            Some("acme")
        );
        assert_eq!(
            review_of(&who(&[]), "get", "recordings", "acme").spec.extra,
            None
        );
    }

    #[test]
    fn bounded_caches_stay_bounded() {
        let mut m = HashMap::new();
        for i in 0..(MAX_ENTRIES as u32 * 2) {
            bounded_insert(&mut m, i, i, |_| true);
        }
        assert!(m.len() <= MAX_ENTRIES);
    }
}
