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

use crate::archive::Context;
use crate::archive::catalog::Catalog;
use crate::archive::catalog::CatalogError;
use crate::crd::{BulkExport, ExportPart, ExportPhase, ExportProgress, RecordingPolicy};
use crate::export::links::LinkError;
use crate::export::links::{LinkSigner, parse_ttl};
use crate::export::notify::NotifyError;
use crate::export::parts;
use crate::export::parts::ExportError;
use crate::settings::Settings;

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
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// A short label for metrics and logs.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Catalog(_) => "catalog",
            Error::Export(_) => "export",
            Error::Links(_) => "links",
            Error::Notify(_) => "notify",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

fn error_policy(bex: Arc<BulkExport>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(name = %bex.name_any(), namespace = ?bex.namespace(), %error, label = error.metric_label(), "export failed; retrying");
    ctx.metrics.failures.inc();
    Action::requeue(Duration::from_secs(15))
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
/// least `min_days`, so a request whose users all keep recordings for less is refused.
pub fn validate(
    spec: &crate::crd::BulkExportSpec,
    policies: &[RecordingPolicy],
    min_days: u32,
    now: jiff::Timestamp,
) -> Result<Option<String>, Refusal> {
    let this_month = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    let current = format!("{:04}-{:02}", this_month.year(), this_month.month());
    if spec.month > current {
        return Err(Refusal {
            reason: "MonthNotStarted",
            message: format!("{} has not started yet", spec.month),
        });
    }
    if min_days == 0 {
        return Ok(None);
    }
    let considered: Vec<&RecordingPolicy> = policies
        .iter()
        .filter(|p| spec.users.as_ref().is_none_or(|u| u.contains(&p.spec.user)))
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

/// The Job's name: stable per BulkExport, within the 63 characters a pod label allows.
pub fn job_name(ns: &str, name: &str) -> String {
    let hash = hex::encode(&sha2::Sha256::digest(format!("{ns}/{name}"))[..4]);
    let mut base: String = format!("opname-export-{ns}-{name}")
        .chars()
        .take(54)
        .collect();
    while base.ends_with('-') || base.ends_with('.') {
        base.pop();
    }
    format!("{base}-{hash}")
}

pub fn job_namespace(settings: &Settings) -> String {
    settings
        .export
        .job_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "opname-system".into())
}

/// The export Job for a BulkExport.
pub fn job(ns: &str, name: &str, settings: &Settings) -> Job {
    let s = &settings.export;
    let labels = BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            "opname-operator".to_string(),
        ),
        (
            "app.kubernetes.io/name".to_string(),
            "opname-export".to_string(),
        ),
        (LABEL_NS.to_string(), ns.to_string()),
        (LABEL_NAME.to_string(), name.to_string()),
    ]);
    let q = |v: &str| Quantity(v.to_string());
    let container = Container {
        name: "export".into(),
        image: Some(s.image.clone()),
        args: Some(vec![
            "export".into(),
            "--config".into(),
            "/etc/opname/operator.yaml".into(),
            "--namespace".into(),
            ns.into(),
            "--name".into(),
            name.into(),
        ]),
        env: Some(vec![EnvVar {
            name: "POD_NAME".into(),
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.name".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        env_from: s.credentials_secret.as_ref().map(|secret| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: secret.clone(),
                    optional: Some(true),
                }),
                ..Default::default()
            }]
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: "config".into(),
            mount_path: "/etc/opname".into(),
            read_only: Some(true),
            ..Default::default()
        }]),
        // Bounded by design: a few upload chunks and one row per recording.
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".into(), q("200m")),
                ("memory".into(), q("64Mi")),
            ])),
            limits: Some(BTreeMap::from([("memory".into(), q("256Mi"))])),
            ..Default::default()
        }),
        ..Default::default()
    };
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(ns, name)),
            namespace: Some(job_namespace(settings)),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(3),
            ttl_seconds_after_finished: Some(7 * 24 * 3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: Some(s.service_account.clone()),
                    containers: vec![container],
                    volumes: Some(vec![Volume {
                        name: "config".into(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: s.config_map.clone(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A Job stands for the BulkExport named in its labels.
pub fn export_of(job: Job) -> Option<ObjectRef<BulkExport>> {
    let labels = job.metadata.labels?;
    Some(ObjectRef::new(labels.get(LABEL_NAME)?).within(labels.get(LABEL_NS)?))
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

pub async fn patch_status(
    api: &Api<BulkExport>,
    name: &str,
    status: serde_json::Value,
) -> Result<(), kube::Error> {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await?;
    Ok(())
}

/// Signs a link for every part.
pub async fn sign_parts(
    signer: Option<&LinkSigner>,
    parts: &mut [ExportPart],
    ttl: Option<&str>,
) -> Result<(), Error> {
    let Some(signer) = signer else { return Ok(()) };
    let ttl = ttl.map(parse_ttl).transpose()?;
    let now = jiff::Timestamp::now();
    for p in parts {
        let (url, expires) = signer.sign(&p.key, ttl, now).await?;
        p.url = Some(url);
        p.expires = Some(Time(expires));
    }
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
            match validate(
                &bex.spec,
                &policies,
                ctx.settings.export.min_retention_days,
                jiff::Timestamp::now(),
            ) {
                Err(refusal) => {
                    patch_status(
                        &api,
                        &name,
                        serde_json::json!({
                            "phase": ExportPhase::Failed,
                            "message": refusal.message,
                            "completionTime": Time(jiff::Timestamp::now()),
                            "conditions": [accepted(bex, false, refusal.reason, &refusal.message)],
                        }),
                    )
                    .await?;
                    ctx.event(&oref, EventType::Warning, "Refused", refusal.message)
                        .await;
                    Ok(Action::requeue(Duration::from_secs(1)))
                }
                Ok(note) => {
                    jobs.patch(
                        &job_name(&ns, &name),
                        &PatchParams::apply(crate::kube::MANAGER).force(),
                        &Patch::Apply(&job(&ns, &name, &ctx.settings)),
                    )
                    .await?;
                    let message = note.clone().unwrap_or_else(|| "export Job started".into());
                    patch_status(
                        &api,
                        &name,
                        serde_json::json!({
                            "phase": ExportPhase::Pending,
                            "message": note,
                            "conditions": [accepted(bex, true, "JobCreated", &message)],
                        }),
                    )
                    .await?;
                    ctx.event(&oref, EventType::Normal, "Started", message)
                        .await;
                    Ok(Action::requeue(Duration::from_secs(10)))
                }
            }
        }
        Some(ExportPhase::Pending | ExportPhase::Running) => {
            let job = jobs.get_opt(&job_name(&ns, &name)).await?;
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
                && renew.is_some()
                && renew != status.links_renewed_for.as_ref()
            {
                let signer = LinkSigner::from_settings(
                    &ctx.settings.store,
                    ctx.settings.export.public_endpoint.as_deref(),
                )?;
                let mut parts = status.parts.clone();
                sign_parts(signer.as_ref(), &mut parts, bex.spec.link_ttl.as_deref()).await?;
                patch_status(
                    &api,
                    &name,
                    serde_json::json!({ "parts": parts, "linksRenewedFor": renew }),
                )
                .await?;
                ctx.event(
                    &oref,
                    EventType::Normal,
                    "LinksRenewed",
                    format!("{} download links signed again", parts.len()),
                )
                .await;
            }
            Ok(Action::await_change())
        }
    }
}

async fn notify(bex: &BulkExport, ns: &str, name: &str, ctx: &Context) -> Result<(), Error> {
    let (subject, body) = crate::export::notify::compose(bex, ns, name);
    let ok = bex.status.as_ref().and_then(|s| s.phase) == Some(ExportPhase::Succeeded);
    let emails = bex
        .spec
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

fn progress_of(p: &parts::Progress) -> ExportProgress {
    ExportProgress {
        recordings_done: p.recordings_done as i64,
        recordings_total: p.recordings_total as i64,
        bytes_done: p.bytes_done as i64,
        bytes_total: p.bytes_total as i64,
    }
}

/// The `export` subcommand: what the Job's pod runs.
pub async fn run_job(settings: &Settings, ns: &str, name: &str) -> Result<(), String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("Kubernetes client: {e}"))?;
    let api = Api::<BulkExport>::namespaced(client, ns);
    let bex = api
        .get(name)
        .await
        .map_err(|e| format!("BulkExport {ns}/{name}: {e}"))?;
    let status = bex.status.clone().unwrap_or_default();
    if status.phase == Some(ExportPhase::Succeeded) {
        tracing::info!("already exported");
        return Ok(());
    }
    let store = crate::store::open(&settings.store).map_err(|e| e.to_string())?;
    let catalog = Catalog::new(store, &settings.store.prefix);
    let start = status.start_time.unwrap_or(Time(jiff::Timestamp::now()));
    patch_status(
        &api,
        name,
        serde_json::json!({ "phase": ExportPhase::Running, "startTime": start }),
    )
    .await
    .map_err(|e| e.to_string())?;
    let request = parts::Request {
        namespace: ns.to_string(),
        name: name.to_string(),
        month: bex.spec.month.clone(),
        users: bex.spec.users.clone(),
        min_retention_days: settings.export.min_retention_days,
        part_size: settings.export.part_size_bytes,
        bytes_per_second: settings.export.bytes_per_second,
    };
    // Progress goes to the status at most once a second.
    let (tx, mut rx) = tokio::sync::watch::channel(parts::Progress::default());
    let progress_api = api.clone();
    let progress_name = name.to_string();
    let reporter = tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            let progress = progress_of(&rx.borrow_and_update());
            if let Err(e) = patch_status(
                &progress_api,
                &progress_name,
                serde_json::json!({ "progress": progress }),
            )
            .await
            {
                tracing::warn!(error = %e, "cannot report progress");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let result = parts::run(&catalog, &request, |p| {
        let _ = tx.send(p.clone());
    })
    .await;
    let last = progress_of(&tx.borrow());
    drop(tx);
    let _ = reporter.await;
    let parts = match result {
        Ok(p) => p,
        Err(e) => {
            let message = format!("export attempt failed: {e}");
            let _ = patch_status(&api, name, serde_json::json!({ "message": message })).await;
            return Err(message);
        }
    };
    let signer =
        LinkSigner::from_settings(&settings.store, settings.export.public_endpoint.as_deref())
            .map_err(|e| e.to_string())?;
    let mut parts: Vec<ExportPart> = parts
        .into_iter()
        .map(|p| ExportPart {
            key: p.key,
            size: p.size as i64,
            sha256: p.sha256,
            recordings: p.recordings as i64,
            url: None,
            expires: None,
        })
        .collect();
    sign_parts(signer.as_ref(), &mut parts, bex.spec.link_ttl.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    let total: i64 = parts.iter().map(|p| p.recordings).sum();
    let message = if parts.is_empty() {
        Some(format!(
            "no recordings in {}: nothing to export",
            bex.spec.month
        ))
    } else {
        status.message.clone()
    };
    patch_status(
        &api,
        name,
        serde_json::json!({
            "phase": ExportPhase::Succeeded,
            "completionTime": Time(jiff::Timestamp::now()),
            "message": message,
            "parts": parts,
            "progress": last,
        }),
    )
    .await
    .map_err(|e| e.to_string())?;
    tracing::info!(
        namespace = ns,
        export = name,
        recordings = total,
        "export complete"
    );
    Ok(())
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
            },
        )
    }

    fn spec(month: &str, users: Option<Vec<&str>>) -> BulkExportSpec {
        BulkExportSpec {
            month: month.into(),
            users: users.map(|u| u.into_iter().map(String::from).collect()),
            notify: None,
            link_ttl: None,
        }
    }

    #[test]
    fn gate_refuses_requests_without_long_enough_retention() {
        let now = "2026-11-28T00:00:00Z".parse().unwrap();
        let policies = [policy("alice", 365), policy("carol", 30)];
        assert_eq!(
            validate(&spec("2026-10", None), &policies, 180, now),
            Ok(Some(
                "recordings kept less than 180 days are not exported (users: carol)".into()
            ))
        );
        let refused =
            validate(&spec("2026-10", Some(vec!["carol"])), &policies, 180, now).unwrap_err();
        assert_eq!(refused.reason, "RetentionBelowExportMinimum");
        assert_eq!(
            validate(&spec("2026-10", Some(vec!["carol"])), &policies, 0, now),
            Ok(None)
        );
        assert_eq!(
            validate(&spec("2026-12", None), &policies, 0, now)
                .unwrap_err()
                .reason,
            "MonthNotStarted"
        );
        assert!(
            validate(&spec("2026-11", None), &[], 180, now).is_err(),
            "no policy, nothing to export"
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
