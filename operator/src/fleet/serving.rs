//! Whether a namespace's fleet is recording: a policy is `Ready` only while at least one recorder
//! of its namespace is ready (configuration loaded, store reachable: the recorder's `/readyz`), as
//! the recorder Service's EndpointSlices list them. "Compiled into the ConfigMap" alone is not
//! Ready: a missing store Secret would leave every pod failing behind a green `kubectl get rpol`.
//! Pure: the controller lists the slices.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::{NAME, condition};
use crate::crd::{RecordingPolicy, RecordingPolicyStatus};

/// The ready addresses of the recorder Service's EndpointSlices, sorted, each once. A recorder
/// that is terminating is not ready, so it gets no new call while it drains.
pub fn ready_recorders(slices: &[EndpointSlice]) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = slices
        .iter()
        .flat_map(|s| s.endpoints.iter().flatten())
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|e| &e.addresses)
        .filter_map(|a| a.parse().ok())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// With no ready recorder, every policy the plan made Ready is not: `NoReadyRecorder`, with what
/// to look at. The transition time is kept while the condition stays so (no status write per
/// reconcile).
pub fn require_ready_recorders(
    namespace: &str,
    statuses: &mut BTreeMap<String, RecordingPolicyStatus>,
    policies: &[RecordingPolicy],
    ready: usize,
    now: &Time,
) {
    if ready > 0 {
        return;
    }
    for p in policies {
        let Some(status) = statuses.get_mut(&p.name_any()) else {
            continue;
        };
        let existing = p
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        for c in &mut status.conditions {
            if c.type_ == "Ready" && c.status == "True" {
                *c = condition(
                    existing,
                    "Ready",
                    false,
                    "NoReadyRecorder",
                    format!(
                        "compiled, but no recorder of this namespace is ready to record: see \
                         `kubectl -n {namespace} get pods -l app.kubernetes.io/name={NAME}` and their \
                         events (a missing store Secret or an unreachable store keeps them unready)"
                    ),
                    c.observed_generation,
                    now,
                );
            }
        }
    }
}
