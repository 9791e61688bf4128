//! Legal holds: a `RecordingHold` copies the recordings it matches to
//! `{prefix}/held/{ns}/{hold}/…`, outside every retention-class prefix, so neither a lifecycle
//! rule nor the sweeper reaches the copy; erasure skips held recordings. Deleting the hold deletes
//! its copies (a finalizer makes sure), and normal retention resumes: the originals were never
//! touched, and a recording whose original already expired during the hold is past its time.
//!
//! Copies rather than S3 Object Lock because Object Lock needs a bucket created for it and is
//! missing from most S3-compatible stores (Garage, MinIO without it, the local store); a copy
//! works on every store object_store speaks.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Resource, ResourceExt};
use object_store::ObjectStoreExt;

use opname_model::audit::Audit;
use opname_model::layout::{self, day_path, month_path};
use opname_model::record::Record;

use crate::archive::catalog::{Catalog, Entry};
use crate::archive::{Context, Error};
use crate::crd::{RecordingHold, RecordingHoldSpec, RecordingHoldStatus};

pub const FINALIZER: &str = "opname.dev/release-held-copies";

/// How often a hold looks for new recordings it matches (a user's next calls).
const RESCAN: Duration = Duration::from_secs(300);

/// Whether matching needs the recording's record (anything but a list of ids).
pub fn needs_record(spec: &RecordingHoldSpec) -> bool {
    spec.users.is_some() || spec.from.is_some() || spec.to.is_some()
}

/// Whether a hold covers a recording.
pub fn matches(spec: &RecordingHoldSpec, id: &str, summary: Option<&Record>) -> bool {
    if let Some(ids) = &spec.recording_ids
        && !ids.iter().any(|i| i == id)
    {
        return false;
    }
    if !needs_record(spec) {
        return true;
    }
    let Some(s) = summary else { return false };
    if let Some(users) = &spec.users
        && !users.contains(&s.user)
    {
        return false;
    }
    spec.from.as_ref().is_none_or(|f| s.start >= f.0)
        && spec.to.as_ref().is_none_or(|t| s.start < t.0)
}

/// What a scan lists: after a completed scan (`since`), only the days from the day before it to
/// `today` (a call is filed under its start day and stored when it ends), so rescans read what is
/// new rather than every record again; otherwise the `yyyy/mm` periods the hold's time range
/// touches (`""`: the whole namespace), so a hold on a week does not read every year.
pub fn periods(
    spec: &RecordingHoldSpec,
    since: Option<jiff::Timestamp>,
    today: jiff::civil::Date,
) -> Vec<String> {
    let utc = jiff::tz::TimeZone::UTC;
    let date =
        |t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time| t.0.to_zoned(utc.clone()).date();
    if let Some(since) = since {
        let since = since.to_zoned(utc.clone()).date();
        let mut d = since.yesterday().unwrap_or(since);
        if let Some(from) = spec.from.as_ref().map(date) {
            d = d.max(from);
        }
        let end = spec.to.as_ref().map(date).map_or(today, |t| t.min(today));
        let mut days = Vec::new();
        while d <= end && days.len() <= 62 {
            days.push(day_path(d));
            match d.tomorrow() {
                Ok(next) => d = next,
                Err(_) => break,
            }
        }
        if days.len() <= 62 {
            return days;
        }
    }
    let (Some(from), Some(to)) = (&spec.from, &spec.to) else {
        return vec![String::new()];
    };
    let utc = jiff::tz::TimeZone::UTC;
    let (mut d, end) = (
        from.0.to_zoned(utc.clone()).date().first_of_month(),
        to.0.to_zoned(utc).date(),
    );
    let mut out = Vec::new();
    while d <= end && out.len() < 1200 {
        out.push(month_path(d.year(), d.month()));
        match d.checked_add(jiff::Span::new().months(1)) {
            Ok(next) => d = next,
            Err(_) => break,
        }
    }
    out
}

/// Copies one recording into a hold's area (audio first, record last).
pub async fn copy_in(
    catalog: &Catalog,
    ns: &str,
    hold: &str,
    entry: &Entry,
) -> Result<(), object_store::Error> {
    let store = catalog.store();
    // Audio first, record last: a held record always has its audio, as in the recorder.
    for from in [&entry.audio, &entry.record] {
        if let Some(to) = catalog.layout().held_copy(ns, hold, from) {
            store.copy(from, &to).await?;
        }
    }
    Ok(())
}

/// Copies every matching recording not yet held by this hold; returns how many it holds.
async fn apply(hold: &RecordingHold, ctx: &Context) -> Result<Action, Error> {
    let ns = hold.namespace().unwrap_or_default();
    let name = hold.name_any();
    // A changed spec scans everything it selects again.
    let since = hold
        .status
        .as_ref()
        .filter(|s| s.observed_generation == hold.metadata.generation)
        .and_then(|s| s.last_scan.as_ref())
        .map(|t| t.0);
    let now = jiff::Timestamp::now();
    let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    let mut added = 0i64;
    for period in periods(&hold.spec, since, today) {
        for entry in ctx.catalog.list(&ns, &period).await? {
            if entry.held_by.contains(&name) {
                continue;
            }
            let summary = match needs_record(&hold.spec) {
                true => Some(ctx.catalog.record(&entry).await?),
                false => None,
            };
            if matches(&hold.spec, &entry.id, summary.as_ref()) {
                copy_in(&ctx.catalog, &ns, &name, &entry).await?;
                added += 1;
            }
        }
    }
    let held = ctx.catalog.held_count(&ns, &name).await? as i64;
    if added > 0 {
        ctx.event(
            &hold.object_ref(&()),
            EventType::Normal,
            "Held",
            format!(
                "{added} more recordings held ({held} in all): {}",
                hold.spec.reason
            ),
        )
        .await;
        crate::archive::index::invalidate(&ctx.catalog, &ns).await;
    }
    let Some(status) = status_after_scan(hold.status.as_ref(), hold.metadata.generation, held, now)
    else {
        return Ok(Action::requeue(RESCAN));
    };
    let patch = serde_json::json!({
        "apiVersion": RecordingHold::api_version(&()),
        "kind": RecordingHold::kind(&()),
        "status": status,
    });
    Api::<RecordingHold>::namespaced(ctx.client.clone(), &ns)
        .patch_status(
            &name,
            &PatchParams::apply(crate::kube::MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await?;
    Ok(Action::requeue(RESCAN))
}

/// The status to write after a scan, or `None` when the stored one already says it. A status
/// write wakes the controller again, so an unchanged hold must not write: `lastScan` alone
/// advances at most once per half rescan period.
pub fn status_after_scan(
    old: Option<&RecordingHoldStatus>,
    generation: Option<i64>,
    held: i64,
    now: jiff::Timestamp,
) -> Option<RecordingHoldStatus> {
    let fresh = old.is_some_and(|o| {
        o.observed_generation == generation
            && o.held == held
            && o.last_scan.as_ref().is_some_and(|t| {
                now.duration_since(t.0)
                    < jiff::SignedDuration::try_from(RESCAN / 2).unwrap_or_default()
            })
    });
    (!fresh).then(|| RecordingHoldStatus {
        observed_generation: generation,
        held,
        last_scan: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
        conditions: Vec::new(),
    })
}

/// Deletes the hold's copies; the originals are untouched and follow their retention again.
async fn release(hold: &RecordingHold, ctx: &Context) -> Result<Action, Error> {
    let ns = hold.namespace().unwrap_or_default();
    let name = hold.name_any();
    let store = ctx.catalog.store();
    let under = ctx.catalog.layout().held_period(&ns, &name, "");
    let mut listing = store.list(Some(&under));
    let mut deleted: BTreeSet<String> = BTreeSet::new();
    let mut keys = Vec::new();
    while let Some(meta) = futures::TryStreamExt::try_next(&mut listing).await? {
        keys.push(meta.location);
    }
    // Records first here: a copy without its record is invisible to the catalog.
    keys.sort_by_key(|k| {
        !matches!(
            layout::split_object(k.as_ref()),
            Some((_, layout::Object::Record))
        )
    });
    for key in &keys {
        opname_model::store::delete(store.as_ref(), key).await?;
        if let Some(id) = layout::id_of(key) {
            deleted.insert(id.to_string());
        }
    }
    let audit = Audit {
        hold: Some(format!("{ns}/{name}")),
        reason: Some(hold.spec.reason.clone()),
        recordings: deleted.iter().cloned().collect(),
        ..Audit::new(
            "opname-operator",
            "legal hold released: held copies deleted, normal retention resumes",
            jiff::Timestamp::now(),
        )
    };
    ctx.catalog
        .audit(&format!("hold-{name}-released"), &audit)
        .await?;
    crate::archive::index::invalidate(&ctx.catalog, &ns).await;
    ctx.event(
        &hold.object_ref(&()),
        EventType::Normal,
        "Released",
        format!(
            "hold released: {} recordings return to normal retention",
            deleted.len()
        ),
    )
    .await;
    Ok(Action::await_change())
}

pub async fn reconcile(hold: Arc<RecordingHold>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = hold.namespace().unwrap_or_default();
    let api = Api::<RecordingHold>::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, hold, |event| async {
        match event {
            Finalizer::Apply(h) => apply(&h, &ctx).await,
            Finalizer::Cleanup(h) => release(&h, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn spec() -> RecordingHoldSpec {
        RecordingHoldSpec {
            reason: "case 17".into(),
            recording_ids: None,
            users: None,
            from: None,
            to: None,
        }
    }

    fn summary(user: &str, start: &str) -> Record {
        crate::archive::catalog::fixtures::record(user, start, &[])
    }

    #[test]
    fn an_unchanged_scan_writes_no_status_so_the_hold_does_not_wake_itself() {
        let t = |s: &str| -> jiff::Timestamp { s.parse().unwrap() };
        let first = status_after_scan(None, Some(1), 3, t("2026-11-02T10:00:00Z")).unwrap();
        assert_eq!(first.held, 3);
        // The write wakes the controller at once: same generation, same count, just scanned.
        assert_eq!(
            status_after_scan(Some(&first), Some(1), 3, t("2026-11-02T10:00:01Z")),
            None
        );
        // New recordings held, a changed spec, or a rescan period later: written.
        assert!(status_after_scan(Some(&first), Some(1), 4, t("2026-11-02T10:00:01Z")).is_some());
        assert!(status_after_scan(Some(&first), Some(2), 3, t("2026-11-02T10:00:01Z")).is_some());
        assert!(status_after_scan(Some(&first), Some(1), 3, t("2026-11-02T10:05:00Z")).is_some());
    }

    #[test]
    fn by_id_user_and_time_range() {
        let by_id = RecordingHoldSpec {
            recording_ids: Some(vec!["a".into()]),
            ..spec()
        };
        assert!(matches(&by_id, "a", None));
        assert!(!matches(&by_id, "b", None));
        let by_user = RecordingHoldSpec {
            users: Some(vec!["alice".into()]),
            ..spec()
        };
        assert!(matches(
            &by_user,
            "x",
            Some(&summary("alice", "2026-11-01T10:00:00Z"))
        ));
        assert!(!matches(
            &by_user,
            "x",
            Some(&summary("bob", "2026-11-01T10:00:00Z"))
        ));
        assert!(!matches(&by_user, "x", None), "unknown user: not held");
        let range = RecordingHoldSpec {
            from: Some(Time("2026-11-01T00:00:00Z".parse().unwrap())),
            to: Some(Time("2026-11-02T00:00:00Z".parse().unwrap())),
            ..spec()
        };
        let at = |t| matches(&range, "x", Some(&summary("bob", t)));
        assert!(at("2026-11-01T00:00:00Z"), "from is inclusive");
        assert!(at("2026-11-01T23:59:59Z"));
        assert!(!at("2026-11-02T00:00:00Z"), "to is exclusive");
        assert!(!at("2026-10-31T23:59:59Z"));
    }

    #[test]
    fn periods_cover_the_range_by_month() {
        let range = RecordingHoldSpec {
            from: Some(Time("2026-11-20T00:00:00Z".parse().unwrap())),
            to: Some(Time("2027-01-02T00:00:00Z".parse().unwrap())),
            ..spec()
        };
        let today = jiff::civil::date(2027, 6, 1);
        assert_eq!(
            periods(&range, None, today),
            ["2026/11", "2026/12", "2027/01"]
        );
        assert_eq!(periods(&spec(), None, today), [""]);
        // Rescans read only from the day before the last scan.
        let since = "2027-05-31T10:00:00Z".parse().unwrap();
        assert_eq!(
            periods(&spec(), Some(since), today),
            ["2027/05/30", "2027/05/31", "2027/06/01"]
        );
        assert!(
            periods(&range, Some(since), today).is_empty(),
            "range long over"
        );
    }
}
