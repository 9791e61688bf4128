//! Who may hear recordings, decided by Kubernetes itself: a bearer token is authenticated with a
//! TokenReview and every action is authorised with a SubjectAccessReview on a virtual resource in
//! group `opname.dev` (`recordings`: `list` to list, `get` to play or download; `bulkexports`:
//! `list`, `create`) in the recording's namespace. Answers are cached briefly (tokens 60 s,
//! decisions 10 s) so a page of range requests does not cost a review each.

use std::collections::HashMap;
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
    #[error("review failed: {0}")]
    Review(#[from] kube::Error),
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub user: String,
    pub uid: String,
    pub groups: Vec<String>,
}

type Decision = (String, String, String, String);

pub struct Access {
    client: Client,
    tokens: Mutex<HashMap<[u8; 32], (Instant, Identity)>>,
    decisions: Mutex<HashMap<Decision, (Instant, bool)>>,
}

impl Access {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            tokens: Mutex::default(),
            decisions: Mutex::default(),
        }
    }

    pub async fn authenticate(&self, token: &str) -> Result<Identity, AccessError> {
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
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?;
        let status = answer.status.unwrap_or_default();
        let user = status.user.unwrap_or_default();
        if status.authenticated != Some(true) || user.username.as_deref().unwrap_or("").is_empty() {
            return Err(AccessError::Unauthenticated);
        }
        let who = Identity {
            user: user.username.unwrap_or_default(),
            uid: user.uid.unwrap_or_default(),
            groups: user.groups.unwrap_or_default(),
        };
        if let Ok(mut t) = self.tokens.lock() {
            t.retain(|_, (at, _)| at.elapsed() < TOKEN_TTL);
            t.insert(digest, (Instant::now(), who.clone()));
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
            who.user.clone(),
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
                let review = SubjectAccessReview {
                    spec: SubjectAccessReviewSpec {
                        user: Some(who.user.clone()),
                        uid: Some(who.uid.clone()).filter(|u| !u.is_empty()),
                        groups: Some(who.groups.clone()),
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
                };
                let answer = Api::<SubjectAccessReview>::all(self.client.clone())
                    .create(&PostParams::default(), &review)
                    .await?;
                let allowed = answer.status.is_some_and(|s| s.allowed);
                if let Ok(mut d) = self.decisions.lock() {
                    d.retain(|_, (at, _)| at.elapsed() < DECISION_TTL);
                    d.insert(key, (Instant::now(), allowed));
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
