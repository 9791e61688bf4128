//! `kubectl opname status`: one namespace's policies, fleet, retention, holds and exports.

use std::fmt::Write;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Resource;
use kube::ResourceExt;
use kube::api::{Api, ListParams, ObjectList};
use opname_operator::crd::{BulkExport, RecordingHold, RecordingPolicy, ScheduledBulkExport};
use serde::de::DeserializeOwned;

use crate::CliError;

/// The name of the recorders' Deployment the operator keeps in each organisation namespace.
const RECORDERS: &str = "opname-recorder";

fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

fn state(c: Option<&Condition>) -> String {
    c.map_or_else(|| "-".into(), |c| format!("{} ({})", c.status, c.reason))
}

/// Every object of kind `K` in `ns`.
async fn all<K>(client: &kube::Client, ns: &str) -> Result<ObjectList<K>, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
}

pub async fn print(client: &kube::Client, ns: &str) -> Result<(), CliError> {
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    // One round trip's wait for all five reads.
    let (policies, holds, exports, schedules, recorders) = tokio::try_join!(
        all::<RecordingPolicy>(client, ns),
        all::<RecordingHold>(client, ns),
        all::<BulkExport>(client, ns),
        all::<ScheduledBulkExport>(client, ns),
        deployments.get_opt(RECORDERS),
    )?;
    let mut out = String::new();
    let ready = policies
        .items
        .iter()
        .filter(|p| {
            p.status.as_ref().is_some_and(|s| {
                condition(&s.conditions, "Ready").is_some_and(|c| c.status == "True")
            })
        })
        .count();
    let _ = writeln!(out, "Namespace {ns}");
    let _ = writeln!(out, "\nPolicies: {} ({ready} ready)", policies.items.len());
    let _ = writeln!(
        out,
        "  {:<20} {:<28} {:<9} {:>9}  {:<24} RETENTION ENFORCED",
        "NAME", "USER", "MODE", "RETENTION", "READY"
    );
    for p in &policies.items {
        let conditions = p
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<20} {:<28} {:<9} {:>8}d  {:<24} {}",
            p.name_any(),
            p.spec.user,
            format!("{:?}", p.spec.mode),
            p.spec.retention_days,
            state(condition(conditions, "Ready")),
            state(condition(conditions, "RetentionEnforced")),
        );
    }
    match recorders.as_ref().and_then(|d| d.status.as_ref()) {
        Some(s) => {
            let _ = writeln!(
                out,
                "\nRecorders: {}/{} ready, {} updated (Deployment {RECORDERS})",
                s.ready_replicas.unwrap_or(0),
                s.replicas.unwrap_or(0),
                s.updated_replicas.unwrap_or(0)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "\nRecorders: none (no active policy, or not yet reconciled)"
            );
        }
    }
    let _ = writeln!(out, "\nHolds: {}", holds.items.len());
    for h in &holds.items {
        let held = h.status.as_ref().map_or(0, |s| s.held);
        let _ = writeln!(
            out,
            "  {:<20} {held:>6} held  {}",
            h.name_any(),
            h.spec.reason
        );
    }
    let _ = writeln!(out, "\nExports: {}", exports.items.len());
    let _ = writeln!(
        out,
        "  {:<20} {:<8} {:<10} {:>5}  ARCHIVES EXPIRE",
        "NAME", "MONTH", "PHASE", "PARTS"
    );
    for e in &exports.items {
        let s = e.status.clone().unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<20} {:<8} {:<10} {:>5}  {}",
            e.name_any(),
            e.spec.month,
            s.phase
                .map_or_else(|| "-".to_string(), |p| format!("{p:?}")),
            s.parts.len(),
            s.archives_expire
                .map_or_else(|| "-".to_string(), |t| t.0.to_string()),
        );
    }
    let _ = writeln!(out, "\nSchedules: {}", schedules.items.len());
    for sch in &schedules.items {
        let s = sch.status.clone().unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<20} keep {:<3} last {:<8} next {}",
            sch.name_any(),
            sch.spec.keep,
            s.last_month.unwrap_or_else(|| "-".into()),
            s.next_run
                .map_or_else(|| "suspended".to_string(), |t| t.0.to_string()),
        );
    }
    print!("{out}");
    Ok(())
}
