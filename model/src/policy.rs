//! The rules a policy follows, applied alike by the operator (which compiles `RecordingPolicy`
//! resources) and the recorder (which matches calls against them).

use std::collections::HashMap;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::identity::{IdentityKey, normalize};

/// Whether every call is kept, or only those where the user keys the keep code.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Always,
    OnDemand,
}

/// Who tells callers that the call is recorded. opname receives a fork of the call and cannot
/// play audio into it, so the announcement is the PBX's or the SBC's (or an IVR's, or the user's
/// own words); the policy states which, and every record carries it as evidence.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum Announcer {
    #[serde(rename = "PBX")]
    Pbx,
    #[serde(rename = "SBC")]
    Sbc,
    #[serde(rename = "IVR")]
    Ivr,
    /// The user tells the other party (on-demand users who key the code, for instance).
    User,
}

/// How callers are told: by whom, and what they hear.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    pub announced_by: Announcer,
    /// The announcement's words, as callers hear them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// The DTMF code that keeps an on-demand call when a policy names none.
pub const DEFAULT_KEEP_CODE: &str = "*44";

/// Allowed retention periods, in days. An absent retention must never mean "delete now".
pub const RETENTION_DAYS: RangeInclusive<u32> = 1..=3650;

/// One policy's share of the identities, after claims are resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed<'a> {
    /// The identities it keeps, as written and normalised.
    pub own: Vec<(&'a str, IdentityKey)>,
    /// The identities an earlier policy holds: (as written, that policy's name).
    pub conflicts: Vec<(&'a str, &'a str)>,
}

/// Resolves identities claimed by several policies: given policies oldest first as
/// (name, identities), the earlier policy keeps an identity. Identities that name nobody are
/// left out.
pub fn resolve_claims<'a>(
    policies: impl IntoIterator<Item = (&'a str, &'a [String])>,
) -> Vec<Claimed<'a>> {
    let mut owners: HashMap<IdentityKey, &'a str> = HashMap::new();
    policies
        .into_iter()
        .map(|(name, identities)| {
            let mut claimed = Claimed {
                own: Vec::new(),
                conflicts: Vec::new(),
            };
            for raw in identities {
                let Some(key) = normalize(raw) else { continue };
                match owners.get(&key) {
                    Some(owner) if *owner != name => claimed.conflicts.push((raw, owner)),
                    _ => {
                        owners.insert(key.clone(), name);
                        claimed.own.push((raw, key));
                    }
                }
            }
            claimed
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_older_policy_keeps_a_shared_identity() {
        let alice = vec!["tel:+31201234567".to_string(), "1001".to_string()];
        let bob = vec!["1002".to_string(), "sip:1001@pbx".to_string()];
        let c = resolve_claims([("alice", alice.as_slice()), ("bob", bob.as_slice())]);
        assert_eq!(c[0].own.len(), 2);
        assert!(c[0].conflicts.is_empty());
        assert_eq!(c[1].own.len(), 1);
        assert_eq!(c[1].conflicts, [("sip:1001@pbx", "alice")]);
    }
}
