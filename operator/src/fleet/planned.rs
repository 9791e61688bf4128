//! Which namespaces' plans are current. A namespace is planned as a whole, so the reconciles of
//! its policies (20,000 at start-up or resync in a large organisation) need it planned once: a
//! reconcile whose policy version, retention state and namespace are as last planned does
//! nothing. Watches of the fleet's children, the recorders' EndpointSlices and deleted policies
//! mark a namespace stale.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::ResourceExt;

use crate::crd::RecordingPolicy;
use crate::retention::rules::Enforcement;

#[derive(Default)]
pub struct Planned {
    entries: Mutex<HashMap<String, Entry>>,
    /// One plan of a namespace at a time: the reconciles of its policies run concurrently.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Default)]
struct Entry {
    /// Bumped by every event that may change the plan.
    generation: u64,
    /// What the last plan was made from: `generation` then, each policy's resourceVersion, the
    /// retention state.
    planned: Option<(u64, HashMap<String, String>, Option<Enforcement>)>,
}

impl Planned {
    /// Held while a namespace is planned and applied.
    pub fn lock(&self, namespace: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.locks.lock().map_or_else(
            |_| Arc::default(),
            |mut m| m.entry(namespace.to_string()).or_default().clone(),
        )
    }

    /// Something the namespace's plan depends on changed.
    pub fn stale(&self, namespace: &str) {
        if let Ok(mut m) = self.entries.lock() {
            m.entry(namespace.to_string()).or_default().generation += 1;
        }
    }

    /// The generation a plan starting now is made at.
    pub fn generation(&self, namespace: &str) -> u64 {
        self.entries
            .lock()
            .map_or(0, |m| m.get(namespace).map_or(0, |e| e.generation))
    }

    /// Whether the last plan of `namespace` already covered this version of `policy`.
    pub fn current(
        &self,
        namespace: &str,
        policy: &RecordingPolicy,
        retention: Option<&Enforcement>,
    ) -> bool {
        self.entries.lock().is_ok_and(|m| {
            m.get(namespace).is_some_and(|e| match &e.planned {
                Some((generation, versions, planned_retention)) => {
                    *generation == e.generation
                        && planned_retention.as_ref() == retention
                        && versions.get(&policy.name_any()) == policy.resource_version().as_ref()
                }
                None => false,
            })
        })
    }

    /// A plan made at `generation` from `policies` has been applied.
    pub fn record(
        &self,
        namespace: &str,
        generation: u64,
        policies: &[RecordingPolicy],
        retention: Option<Enforcement>,
    ) {
        let versions = policies
            .iter()
            .filter_map(|p| Some((p.name_any(), p.resource_version()?)))
            .collect();
        if let Ok(mut m) = self.entries.lock() {
            m.entry(namespace.to_string()).or_default().planned =
                Some((generation, versions, retention));
        }
    }

    /// The namespace has no fleet any more.
    pub fn forget(&self, namespace: &str) {
        if let Ok(mut m) = self.entries.lock() {
            m.remove(namespace);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(name: &str, rv: &str) -> RecordingPolicy {
        let mut p = RecordingPolicy::new(
            name,
            serde_json::from_value(serde_json::json!({
                "user": format!("{name}@x"), "identities": ["1001"], "retentionDays": 30
            }))
            .unwrap(),
        );
        p.metadata.namespace = Some("acme".into());
        p.metadata.resource_version = Some(rv.into());
        p
    }

    #[test]
    fn a_namespace_is_planned_once_until_something_changes() {
        let planned = Planned::default();
        let (a, b) = (policy("a", "1"), policy("b", "1"));
        assert!(!planned.current("acme", &a, None), "never planned");
        let g = planned.generation("acme");
        planned.record("acme", g, &[a.clone(), b.clone()], None);
        assert!(planned.current("acme", &a, None) && planned.current("acme", &b, None));
        assert!(
            !planned.current("acme", &policy("a", "2"), None),
            "a new version"
        );
        assert!(
            !planned.current("acme", &policy("c", "1"), None),
            "a new policy"
        );
        assert!(
            !planned.current("acme", &a, Some(&Enforcement::Sweeper)),
            "retention changed"
        );
        // An event while a plan is being made is not lost when that plan is recorded.
        let g = planned.generation("acme");
        planned.stale("acme");
        planned.record("acme", g, &[a.clone(), b.clone()], None);
        assert!(!planned.current("acme", &a, None));
        planned.forget("acme");
        assert!(!planned.current("acme", &a, None));
    }
}
