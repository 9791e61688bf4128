//! The ScheduledBulkExport controller: reads the schedule, its exports and the organisation's
//! time zone, runs the pure `export::schedule::plan`, and applies it (create, delete, status).

use super::*;
use crate::crd::ScheduledBulkExport;
use crate::export::schedule::{LABEL_SCHEDULE, plan};
use kube::api::PostParams;

#[derive(Debug, thiserror::Error)]
pub enum ScheduleControllerError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Plan(#[from] crate::export::schedule::ScheduleError),
}

impl MetricLabel for ScheduleControllerError {
    fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Plan(_) => "schedule",
        }
    }
}

/// Runs the schedule controller until `stop` resolves; a change to one of its exports wakes
/// its schedule.
pub async fn run_schedules(ctx: Arc<Context>, stop: tokio::sync::watch::Receiver<bool>) {
    use futures::StreamExt;
    use kube::runtime::{Controller, watcher};
    let client = ctx.client.clone();
    Controller::new(
        Api::<ScheduledBulkExport>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<BulkExport>::all(client),
        watcher::Config::default().labels(LABEL_SCHEDULE),
    )
    .graceful_shutdown_on(crate::archive::stopped(stop))
    .run(reconcile_schedule, crate::archive::error_policy, ctx)
    .for_each(|_| async {})
    .await;
}

fn ready(
    schedule: &ScheduledBulkExport,
    ok: bool,
    reason: &str,
    message: &str,
) -> serde_json::Value {
    serde_json::json!([{
        "type": "Ready",
        "status": if ok { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "observedGeneration": schedule.metadata.generation,
        "lastTransitionTime": Time(jiff::Timestamp::now()),
    }])
}

async fn reconcile_schedule(
    schedule: Arc<ScheduledBulkExport>,
    ctx: Arc<Context>,
) -> Result<Action, ScheduleControllerError> {
    let ns = schedule.namespace().unwrap_or_default();
    let name = schedule.name_any();
    let schedules = Api::<ScheduledBulkExport>::namespaced(ctx.client.clone(), &ns);
    let exports = Api::<BulkExport>::namespaced(ctx.client.clone(), &ns);
    let organisation = match Organisation::of_namespace(&ctx.client, &ns).await? {
        Ok(o) => o,
        Err(e) => {
            // Counted in UTC it would export the wrong hours: say so, and look again later.
            let message = e.to_string();
            schedules
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({
                        "status": {"conditions": ready(&schedule, false, "InvalidTimeZone", &message)}
                    })),
                )
                .await?;
            ctx.event(
                &schedule.object_ref(&()),
                EventType::Warning,
                "InvalidTimeZone",
                message,
            )
            .await;
            return Ok(Action::requeue(Duration::from_secs(300)));
        }
    };
    let owned = exports
        .list(&ListParams::default().labels(&format!("{LABEL_SCHEDULE}={name}")))
        .await?
        .items;
    let planned = plan(
        &schedule,
        &owned,
        &organisation.time_zone,
        jiff::Timestamp::now(),
    )?;
    for export in &planned.create {
        exports
            .create(&PostParams::default(), export)
            .await
            .or_else(|e| match e {
                // Made by an earlier pass whose status write was lost.
                kube::Error::Api(s) if s.code == 409 => Ok(export.clone()),
                e => Err(e),
            })?;
        ctx.event(
            &schedule.object_ref(&()),
            EventType::Normal,
            "Created",
            format!("BulkExport {} for {}", export.name_any(), export.spec.month),
        )
        .await;
    }
    for old in &planned.delete {
        exports.delete(old, &DeleteParams::default()).await?;
        ctx.event(
            &schedule.object_ref(&()),
            EventType::Normal,
            "Deleted",
            format!(
                "BulkExport {old}, older than the last {} kept",
                schedule.spec.keep
            ),
        )
        .await;
    }
    let message = match &planned.status.next_run {
        Some(next) => format!("next export at {}", next.0),
        None => "suspended".to_string(),
    };
    let mut status = serde_json::to_value(&planned.status).unwrap_or_default();
    status["conditions"] = ready(&schedule, true, "Scheduled", &message);
    schedules
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await?;
    Ok(Action::requeue(planned.requeue))
}
