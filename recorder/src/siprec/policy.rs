//! The policy table: which identity is recorded under which policy, as the core matches calls.

use std::collections::HashMap;
use std::sync::Arc;

use opname_model::config::Config;
use opname_model::identity::{IdentityKey, normalize};
use opname_model::policy::{Mode, resolve_claims};

/// A policy as the recorder applies it.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivePolicy {
    pub name: String,
    pub user: String,
    pub mode: Mode,
    pub keep_code: Option<String>,
    pub retention_days: u32,
    pub notice: Option<opname_model::policy::Notice>,
}

/// Identity → policy lookup built from the file's policies; suspended policies are left out.
#[derive(Debug, Default, Clone)]
pub struct PolicyTable {
    namespace: String,
    by_identity: HashMap<IdentityKey, Arc<ActivePolicy>>,
}

impl PolicyTable {
    /// Builds the table; the earlier policy keeps an identity two policies claim (the operator
    /// orders policies oldest first and reports the conflict on the newer one).
    pub fn build(config: &Config) -> (Self, Vec<String>) {
        let live: Vec<_> = config.policies.iter().filter(|p| !p.suspended).collect();
        let claims = resolve_claims(
            live.iter()
                .map(|p| (p.name.as_str(), p.identities.as_slice())),
        );
        let mut by_identity = HashMap::new();
        let mut warnings = Vec::new();
        for (p, claimed) in live.iter().zip(claims) {
            let active = Arc::new(ActivePolicy {
                name: p.name.clone(),
                user: p.user.clone(),
                mode: p.mode,
                keep_code: p.keep_code(),
                retention_days: p.retention_days,
                notice: p.notice.clone(),
            });
            for (raw, owner) in claimed.conflicts {
                warnings.push(format!(
                    "identity {raw} of policy {} is already claimed by {owner}",
                    p.name
                ));
            }
            for (_, key) in claimed.own {
                by_identity.insert(key, active.clone());
            }
        }
        (
            Self {
                namespace: config.namespace.clone(),
                by_identity,
            },
            warnings,
        )
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn lookup(&self, identity: &str) -> Option<(IdentityKey, Arc<ActivePolicy>)> {
        let key = normalize(identity)?;
        let policy = self.by_identity.get(&key)?.clone();
        Some((key, policy))
    }

    pub fn len(&self) -> usize {
        self.by_identity.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_identity.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
namespace: acme
policies:
  - name: alice
    user: alice@acme.example
    identities: ["sip:alice@pbx.acme.example", "tel:+31201234567", "1001"]
    retentionDays: 90
  - name: bob
    user: bob@acme.example
    identities: ["1002", "1001"]
    mode: OnDemand
    retentionDays: 30
  - name: carol
    user: carol@acme.example
    identities: ["1003"]
    retentionDays: 30
    suspended: true
"#;

    #[test]
    fn builds_table() {
        let c = Config::parse(SAMPLE).unwrap();
        let (t, warnings) = PolicyTable::build(&c);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(t.lookup("sip:+31201234567@gw").unwrap().1.name, "alice");
        assert_eq!(t.lookup("<sip:1001@pbx>").unwrap().1.name, "alice");
        let (_, bob) = t.lookup("1002").unwrap();
        assert_eq!(bob.keep_code.as_deref(), Some("*44"));
        assert!(
            t.lookup("1003").is_none(),
            "suspended policies record nothing"
        );
        assert!(t.lookup("sip:mallory@evil").is_none());
    }
}
