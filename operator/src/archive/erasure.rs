//! Erasure on request: a `RecordingErasure` deletes every recording of one identity, or the
//! listed recordings, now, unless a hold covers them; its status reports what was deleted and an
//! audit object in the store lists every key. It runs once: a completed erasure is a record.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use opname_model::identity::normalize;

use opname_model::audit::Audit;
use opname_model::record::Record;

use crate::archive::{Context, Error};
use crate::crd::{ErasurePhase, RecordingErasure, RecordingErasureSpec, RecordingErasureStatus};

/// Recordings listed in the status; the audit object has them all.
const STATUS_LIST_MAX: usize = 1000;

/// Whether an erasure covers a recording (`summary` is needed for identity erasures only).
pub fn matches(spec: &RecordingErasureSpec, id: &str, summary: Option<&Record>) -> bool {
    if let Some(ids) = &spec.recording_ids {
        return ids.iter().any(|i| i == id);
    }
    let (Some(identity), Some(s)) = (&spec.identity, summary) else {
        return false;
    };
    if s.user == *identity {
        return true;
    }
    let Some(wanted) = normalize(identity) else {
        return false;
    };
    std::iter::once(Some(s.matched_identity.as_str()))
        .chain(s.participants.iter().map(|p| p.aor.as_deref()))
        .flatten()
        .any(|aor| normalize(aor).as_ref() == Some(&wanted))
}

async fn patch(
    api: &Api<RecordingErasure>,
    name: &str,
    status: &RecordingErasureStatus,
) -> Result<(), Error> {
    let patch = serde_json::json!({
        "apiVersion": RecordingErasure::api_version(&()),
        "kind": RecordingErasure::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(crate::kube::MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

pub async fn reconcile(erasure: Arc<RecordingErasure>, ctx: Arc<Context>) -> Result<Action, Error> {
    let done = erasure
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .is_some_and(|p| p == ErasurePhase::Completed);
    if done {
        return Ok(Action::await_change());
    }
    let ns = erasure.namespace().unwrap_or_default();
    let name = erasure.name_any();
    let api = Api::<RecordingErasure>::namespaced(ctx.client.clone(), &ns);
    let spec = &erasure.spec;
    let mut status = RecordingErasureStatus {
        phase: Some(ErasurePhase::Running),
        ..Default::default()
    };
    patch(&api, &name, &status).await?;
    let store = ctx.catalog.store().clone();
    let mut deleted_keys = Vec::new();
    let mut deleted_ids = Vec::new();
    for entry in ctx.catalog.list(&ns, "").await? {
        let summary = match spec.identity {
            Some(_) => Some(ctx.catalog.record(&entry).await?),
            None => None,
        };
        if !matches(spec, &entry.id, summary.as_ref()) {
            continue;
        }
        if !entry.held_by.is_empty() {
            status.skipped_held_count += 1;
            if status.skipped_held.len() < STATUS_LIST_MAX {
                status.skipped_held.push(entry.id.clone());
            }
            continue;
        }
        // Audio first: a record never outlives its audio.
        for key in [&entry.audio, &entry.record] {
            opname_model::store::delete(store.as_ref(), key).await?;
            deleted_keys.push(key.to_string());
        }
        ctx.metrics.erased_objects.inc_by(2);
        ctx.metrics.erased_bytes.inc_by(entry.audio_size);
        status.deleted_count += 1;
        status.bytes_freed += entry.audio_size as i64;
        if status.deleted.len() < STATUS_LIST_MAX {
            status.deleted.push(entry.id.clone());
        }
        deleted_ids.push(entry.id);
    }
    let now = jiff::Timestamp::now();
    let audit = Audit {
        requested_by: Some(format!(
            "RecordingErasure {ns}/{name} (uid {})",
            erasure.uid().unwrap_or_default()
        )),
        reason: Some(spec.reason.clone()),
        recordings: deleted_ids,
        deleted: deleted_keys,
        skipped_held: status.skipped_held.clone(),
        ..Audit::new(
            "opname-operator",
            "erased on request before the end of retention",
            now,
        )
    };
    let audit = ctx
        .catalog
        .audit(&format!("erasure-{ns}-{name}"), &audit)
        .await?;
    if status.deleted_count > 0 {
        crate::archive::index::invalidate(&ctx.catalog, &ns).await;
    }
    status.audit_key = Some(audit.to_string());
    status.phase = Some(ErasurePhase::Completed);
    status.completion_time = Some(Time(now));
    patch(&api, &name, &status).await?;
    ctx.event(
        &erasure.object_ref(&()),
        EventType::Normal,
        "Erased",
        format!(
            "{} recordings erased ({} bytes); {} kept under a legal hold",
            status.deleted_count, status.bytes_freed, status.skipped_held_count
        ),
    )
    .await;
    tracing::info!(namespace = %ns, erasure = %name, deleted = status.deleted_count, held = status.skipped_held_count, "erasure completed");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn by_identity(identity: &str) -> RecordingErasureSpec {
        RecordingErasureSpec {
            identity: Some(identity.into()),
            recording_ids: None,
            reason: "GDPR request 42".into(),
        }
    }

    fn call(user: &str, aors: &[&str]) -> Record {
        crate::archive::catalog::fixtures::record(user, "2026-11-01T10:00:00Z", aors)
    }

    #[test]
    fn identity_matches_any_participant_in_normal_form_or_the_user() {
        let c = call(
            "alice@example.com",
            &["sip:+31201234567@pbx.example", "sip:bob@example.com"],
        );
        assert!(matches(&by_identity("tel:+31 20 123 4567"), "x", Some(&c)));
        assert!(matches(&by_identity("sip:Bob@Example.com"), "x", Some(&c)));
        assert!(matches(&by_identity("alice@example.com"), "x", Some(&c)));
        assert!(!matches(&by_identity("+31201234568"), "x", Some(&c)));
        assert!(!matches(
            &by_identity("sip:carol@example.com"),
            "x",
            Some(&c)
        ));
    }

    #[test]
    fn ids_match_exactly() {
        let spec = RecordingErasureSpec {
            identity: None,
            recording_ids: Some(vec!["a".into()]),
            reason: "r".into(),
        };
        assert!(matches(&spec, "a", None));
        assert!(!matches(&spec, "ab", None));
    }
}
