//! The `BulkExport` controller and the export Job it runs.
//!
//! The operator validates a request (month, the retention gate), then runs the export as a Job
//! (this binary's `export` subcommand) so it has its own resources and outlives operator
//! restarts; the Job writes progress and the parts into the status, the operator follows the Job,
//! marks failures, sends the notification once (`status.notified`), renews links on request and,
//! through a finalizer, cancels the Job and removes the archives when the BulkExport is deleted.
//! Jobs run in the operator's namespace (where the store credentials are), so they are tied to
//! their BulkExport by labels, not owner references (which cannot cross namespaces).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, EnvFromSource, EnvVar, EnvVarSource, ObjectFieldSelector,
    PodSpec, PodTemplateSpec, ResourceRequirements, SecretEnvSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use sha2::Digest;

use crate::archive::catalog::Catalog;
use crate::archive::catalog::CatalogError;
use crate::archive::{Context, MetricLabel, error_policy};
use crate::crd::{BulkExport, ExportPart, ExportPhase, ExportProgress, RecordingPolicy};
use crate::export::links::LinkError;
use crate::export::links::{LinkSigner, parse_ttl};
use crate::export::notify::NotifyError;
use crate::export::parts;
use crate::export::parts::ExportError;
use crate::organisation::Organisation;
use crate::settings::Settings;
use opname_model::layout::Layout;

mod job;
mod renewal;
mod schedule;

pub use job::*;
pub use renewal::{archives_expire, sign_parts, unlinked};
pub use schedule::run_schedules;

pub const FINALIZER: &str = "opname.dev/remove-archives";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Links(#[from] LinkError),
    #[error("notification e-mail: {0}")]
    Notify(#[from] NotifyError),
    #[error("part {0:?} is not under the export's own prefix")]
    ForeignKey(String),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl MetricLabel for Error {
    fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Catalog(_) => "catalog",
            Error::Export(_) => "export",
            Error::Links(_) => "links",
            Error::Notify(_) => "notify",
            Error::ForeignKey(_) => "foreign_key",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

/// Runs the BulkExport controller until `stop` resolves.
pub async fn run(ctx: Arc<Context>, stop: tokio::sync::watch::Receiver<bool>) {
    use futures::StreamExt;
    use kube::runtime::{Controller, watcher};
    let client = ctx.client.clone();
    let jobs = Api::<Job>::namespaced(client.clone(), &job_namespace(&ctx.settings));
    Controller::new(
        Api::<BulkExport>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        jobs,
        watcher::Config::default().labels("app.kubernetes.io/name=opname-export"),
        export_of,
    )
    .graceful_shutdown_on(crate::archive::stopped(stop))
    .run(reconcile, error_policy, ctx.clone())
    .for_each(|_| async {})
    .await;
}

/// Annotate a BulkExport with a new value to have its links signed again.
pub const RENEW: &str = "opname.dev/renew-links";
const LABEL_NS: &str = "opname.dev/export-namespace";
const LABEL_NAME: &str = "opname.dev/export-name";

/// Why a request cannot run, for its condition and Event.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub reason: &'static str,
    pub message: String,
}

/// Checks a request against the month and the retention gate: exports cover recordings kept at
/// least `min_days`, so a request whose users all keep recordings for less is refused. The month
/// is the organisation's (`tz`): a Dutch November has begun at 23:00 UTC on 31 October.
pub fn validate(
    spec: &crate::crd::BulkExportSpec,
    policies: &[RecordingPolicy],
    min_days: u32,
    now: jiff::Timestamp,
    tz: &jiff::tz::TimeZone,
) -> Result<Option<String>, Refusal> {
    match crate::export::month::begun(&spec.month, tz, now) {
        Ok(true) => {}
        Ok(false) => {
            return Err(Refusal {
                reason: "MonthNotStarted",
                message: format!("{} has not started yet", spec.month),
            });
        }
        Err(e) => {
            return Err(Refusal {
                reason: "InvalidMonth",
                message: e.to_string(),
            });
        }
    }
    if min_days == 0 {
        return Ok(None);
    }
    let considered: Vec<&RecordingPolicy> = policies
        .iter()
        .filter(|p| {
            spec.request
                .users
                .as_ref()
                .is_none_or(|u| u.contains(&p.spec.user))
        })
        .collect();
    let any = !considered.is_empty();
    let (eligible, below): (Vec<&RecordingPolicy>, Vec<&RecordingPolicy>) = considered
        .into_iter()
        .partition(|p| p.spec.retention_days >= min_days);
    if eligible.is_empty() {
        return Err(Refusal {
            reason: "RetentionBelowExportMinimum",
            message: format!(
                "bulk export covers recordings kept at least {min_days} days; {}",
                if !any {
                    "no recording policy matches the request".to_string()
                } else {
                    "no requested user's retention is that long".to_string()
                }
            ),
        });
    }
    let mut users: Vec<&str> = below.iter().map(|p| p.spec.user.as_str()).collect();
    users.sort();
    users.dedup();
    Ok((!users.is_empty()).then(|| {
        format!(
            "recordings kept less than {min_days} days are not exported (users: {})",
            users.join(", ")
        )
    }))
}

/// The request's `Accepted` condition.
fn accepted(bex: &BulkExport, ok: bool, reason: &str, message: &str) -> Condition {
    let existing = bex.status.as_ref().map_or(&[][..], |s| &s.conditions[..]);
    crate::fleet::condition(
        existing,
        "Accepted",
        ok,
        reason,
        message.to_string(),
        bex.metadata.generation,
        &Time(jiff::Timestamp::now()),
    )
}

/// Writes status fields only if the export is still as `observed` (its resourceVersion is the
/// precondition): a reconcile working from a stale cache gets 409 and is retried, instead of
/// writing `Pending` over what the Job has written since.
async fn patch_status_observed(
    api: &Api<BulkExport>,
    observed: &BulkExport,
    status: serde_json::Value,
) -> Result<(), kube::Error> {
    merge_status(
        api,
        &observed.name_any(),
        serde_json::json!({
            "metadata": { "resourceVersion": observed.resource_version() },
            "status": status,
        }),
    )
    .await
}

/// Applies the export's Job (idempotent: the same Job for the same export).
async fn apply_job(jobs: &Api<Job>, ns: &str, name: &str, ctx: &Context) -> Result<(), Error> {
    jobs.patch(
        &job_name(ns, name),
        &PatchParams::apply(crate::kube::MANAGER).force(),
        &Patch::Apply(&job(ns, name, &ctx.settings)),
    )
    .await?;
    Ok(())
}

pub async fn patch_status(
    api: &Api<BulkExport>,
    name: &str,
    status: serde_json::Value,
) -> Result<(), kube::Error> {
    merge_status(api, name, serde_json::json!({ "status": status })).await
}

/// One JSON merge patch of the status subresource.
async fn merge_status(
    api: &Api<BulkExport>,
    name: &str,
    patch: serde_json::Value,
) -> Result<(), kube::Error> {
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

async fn apply(bex: &BulkExport, ctx: &Context) -> Result<Action, Error> {
    let ns = bex.namespace().unwrap_or_default();
    let name = bex.name_any();
    let api = Api::<BulkExport>::namespaced(ctx.client.clone(), &ns);
    let status = bex.status.clone().unwrap_or_default();
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), &job_namespace(&ctx.settings));
    let oref = bex.object_ref(&());
    match status.phase {
        None => {
            let policies = Api::<RecordingPolicy>::namespaced(ctx.client.clone(), &ns)
                .list(&ListParams::default())
                .await?
                .items;
            let checked = Organisation::of_namespace(&ctx.client, &ns)
                .await?
                .map_err(|e| Refusal {
                    reason: "InvalidTimeZone",
                    message: e.to_string(),
                })
                .and_then(|org| {
                    validate(
                        &bex.spec,
                        &policies,
                        ctx.settings.export.min_retention_days,
                        jiff::Timestamp::now(),
                        &org.time_zone,
                    )
                    .map(|note| (org, note))
                });
            match checked {
                Err(refusal) => {
                    patch_status_observed(
                        &api,
                        bex,
                        serde_json::json!({
                            "phase": ExportPhase::Failed,
                            "message": refusal.message,
                            "completionTime": Time(jiff::Timestamp::now()),
                            "conditions": [accepted(bex, false, refusal.reason, &refusal.message)],
                        }),
                    )
                    .await?;
                    ctx.metrics.exports_failed.inc();
                    ctx.event(&oref, EventType::Warning, "Refused", refusal.message)
                        .await;
                    Ok(Action::requeue(Duration::from_secs(1)))
                }
                Ok((organisation, note)) => {
                    // Pending first, then the Job: once the Job exists it owns the status.
                    let message = note.clone().unwrap_or_else(|| "export Job started".into());
                    patch_status_observed(
                        &api,
                        bex,
                        serde_json::json!({
                            "phase": ExportPhase::Pending,
                            "message": note,
                            // Kept with the export: a later change of the annotations does not
                            // move a month already being exported.
                            "timeZone": organisation.zone_name(),
                            "locale": organisation.locale.tag(),
                            "conditions": [accepted(bex, true, "JobCreated", &message)],
                        }),
                    )
                    .await?;
                    apply_job(&jobs, &ns, &name, ctx).await?;
                    ctx.event(&oref, EventType::Normal, "Started", message)
                        .await;
                    Ok(Action::requeue(Duration::from_secs(10)))
                }
            }
        }
        Some(phase @ (ExportPhase::Pending | ExportPhase::Running)) => {
            let job = jobs.get_opt(&job_name(&ns, &name)).await?;
            if job.is_none() && phase == ExportPhase::Pending {
                // Accepted but the Job not made yet (the operator stopped in between).
                apply_job(&jobs, &ns, &name, ctx).await?;
                return Ok(Action::requeue(Duration::from_secs(10)));
            }
            let failed = job
                .as_ref()
                .and_then(|j| j.status.as_ref())
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Failed" && c.status == "True"));
            if failed || job.is_none() {
                let message = if failed {
                    "the export Job failed after its retries; see its pods' logs".to_string()
                } else {
                    "the export Job disappeared before finishing".to_string()
                };
                ctx.metrics.exports_failed.inc();
                patch_status(
                    &api,
                    &name,
                    serde_json::json!({
                        "phase": ExportPhase::Failed,
                        "message": message,
                        "completionTime": Time(jiff::Timestamp::now()),
                    }),
                )
                .await?;
            }
            Ok(Action::requeue(Duration::from_secs(10)))
        }
        Some(ExportPhase::Succeeded | ExportPhase::Failed) => {
            if status.notified.is_none() {
                notify(bex, &ns, &name, ctx).await?;
                patch_status(
                    &api,
                    &name,
                    serde_json::json!({ "notified": Time(jiff::Timestamp::now()) }),
                )
                .await?;
            }
            let renew = bex.annotations().get(RENEW);
            if status.phase == Some(ExportPhase::Succeeded)
                && let Some(value) = renew
                && renew != status.links_renewed_for.as_ref()
            {
                renewal::renew(bex, &api, ctx, value).await?;
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            renewal::expire(bex, &api, ctx).await
        }
    }
}

async fn notify(bex: &BulkExport, ns: &str, name: &str, ctx: &Context) -> Result<(), Error> {
    let (subject, body) = crate::export::notify::compose(bex, ns, name);
    let ok = bex.status.as_ref().and_then(|s| s.phase) == Some(ExportPhase::Succeeded);
    let emails = bex
        .spec
        .request
        .notify
        .as_ref()
        .map(|n| n.emails.clone())
        .unwrap_or_default();
    let mailed = match (&ctx.settings.export.smtp, emails.is_empty()) {
        (Some(smtp), false) => {
            crate::export::notify::send(smtp, &emails, &subject, body).await?;
            format!(" (e-mailed to {})", emails.join(", "))
        }
        (None, false) => " (no SMTP relay configured: not e-mailed)".into(),
        _ => String::new(),
    };
    ctx.event(
        &bex.object_ref(&()),
        if ok {
            EventType::Normal
        } else {
            EventType::Warning
        },
        if ok { "Succeeded" } else { "Failed" },
        format!("{subject}{mailed}"),
    )
    .await;
    Ok(())
}

/// Cancels a running export and removes its archives.
async fn cleanup(bex: &BulkExport, ctx: &Context) -> Result<Action, Error> {
    let ns = bex.namespace().unwrap_or_default();
    let name = bex.name_any();
    let jobs = Api::<Job>::namespaced(ctx.client.clone(), &job_namespace(&ctx.settings));
    match jobs
        .delete(&job_name(&ns, &name), &DeleteParams::background())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    let removed = parts::remove(&ctx.catalog, &ns, &name).await?;
    tracing::info!(namespace = %ns, export = %name, archives = removed, "export deleted: Job cancelled, archives removed");
    Ok(Action::await_change())
}

pub async fn reconcile(bex: Arc<BulkExport>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = bex.namespace().unwrap_or_default();
    let api = Api::<BulkExport>::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, bex, |event| async {
        match event {
            Finalizer::Apply(b) => apply(&b, &ctx).await,
            Finalizer::Cleanup(b) => cleanup(&b, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BulkExportSpec, RecordingPolicySpec};

    fn policy(user: &str, days: u32) -> RecordingPolicy {
        RecordingPolicy::new(
            user,
            RecordingPolicySpec {
                user: user.into(),
                identities: vec!["1001".into()],
                mode: Default::default(),
                on_demand: None,
                retention_days: days,
                suspended: false,
                notice: None,
            },
        )
    }

    fn spec(month: &str, users: Option<Vec<&str>>) -> BulkExportSpec {
        BulkExportSpec {
            month: month.into(),
            request: crate::crd::ExportRequest {
                users: users.map(|u| u.into_iter().map(String::from).collect()),
                ..Default::default()
            },
        }
    }

    #[test]
    fn gate_refuses_requests_without_long_enough_retention() {
        let now = "2026-11-28T00:00:00Z".parse().unwrap();
        let policies = [policy("alice", 365), policy("carol", 30)];
        let utc = jiff::tz::TimeZone::UTC;
        assert_eq!(
            validate(&spec("2026-10", None), &policies, 180, now, &utc),
            Ok(Some(
                "recordings kept less than 180 days are not exported (users: carol)".into()
            ))
        );
        let refused = validate(
            &spec("2026-10", Some(vec!["carol"])),
            &policies,
            180,
            now,
            &utc,
        )
        .unwrap_err();
        assert_eq!(refused.reason, "RetentionBelowExportMinimum");
        assert_eq!(
            validate(
                &spec("2026-10", Some(vec!["carol"])),
                &policies,
                0,
                now,
                &utc
            ),
            Ok(None)
        );
        assert_eq!(
            validate(&spec("2026-12", None), &policies, 0, now, &utc)
                .unwrap_err()
                .reason,
            "MonthNotStarted"
        );
        assert!(
            validate(&spec("2026-11", None), &[], 180, now, &utc).is_err(),
            "no policy, nothing to export"
        );
        // December begins an hour earlier in Amsterdam than in UTC.
        let ams = jiff::tz::TimeZone::get("Europe/Amsterdam").unwrap();
        let eve = "2026-11-30T23:30:00Z".parse().unwrap();
        assert!(validate(&spec("2026-12", None), &policies, 0, eve, &ams).is_ok());
        assert_eq!(
            validate(&spec("2026-12", None), &policies, 0, eve, &utc)
                .unwrap_err()
                .reason,
            "MonthNotStarted"
        );
        assert_eq!(
            validate(&spec("2026-13", None), &policies, 0, eve, &utc)
                .unwrap_err()
                .reason,
            "InvalidMonth"
        );
    }

    #[test]
    fn job_names_are_stable_and_short() {
        let long = "x".repeat(60);
        let n = job_name("acme", &long);
        assert!(n.len() <= 63, "{n}");
        assert_eq!(n, job_name("acme", &long));
        assert_ne!(job_name("acme", "a"), job_name("acme2", "a"));
        let j = job("acme", "nov", &Settings::default());
        let args = j.spec.unwrap().template.spec.unwrap().containers[0]
            .args
            .clone()
            .unwrap();
        assert_eq!(args[0], "export");
        assert!(args.windows(2).any(|w| w == ["--namespace", "acme"]));
    }
}
