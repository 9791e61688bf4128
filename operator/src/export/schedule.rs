//! A ScheduledBulkExport's plan, as a pure function of the schedule, the exports it made, the
//! organisation's time zone and the time: which month's BulkExport to create, which old ones to
//! delete (their finalizer removes the archives), the status and when to look again.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::{Resource, ResourceExt};

use crate::crd::{
    BulkExport, BulkExportSpec, ExportPhase, ScheduledBulkExport, ScheduledBulkExportStatus,
};
use crate::export::month::{local_midnight, name as month_name};

/// Label on each BulkExport a schedule made: the schedule's name.
pub const LABEL_SCHEDULE: &str = "opname.dev/schedule";

/// The longest a schedule sleeps: a changed time zone or a missed wake-up costs at most this.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("the time {0} has no month in the organisation's time zone")]
    Time(Timestamp),
}

#[derive(Debug, Clone)]
pub struct SchedulePlan {
    /// Exports to create, oldest month first.
    pub create: Vec<BulkExport>,
    /// Names of finished exports beyond the newest `keep`.
    pub delete: Vec<String>,
    pub status: ScheduledBulkExportStatus,
    pub requeue: Duration,
}

/// The local start of the month `first` begins, plus `delay`.
fn start(
    first: Date,
    tz: &TimeZone,
    delay: Duration,
    now: Timestamp,
) -> Result<Timestamp, ScheduleError> {
    local_midnight(first, tz)
        .and_then(|t| {
            t.checked_add(jiff::SignedDuration::try_from(delay).ok()?)
                .ok()
        })
        .ok_or(ScheduleError::Time(now))
}

/// The plan for `schedule` at `now`, given the exports labelled as its own.
pub fn plan(
    schedule: &ScheduledBulkExport,
    owned: &[BulkExport],
    tz: &TimeZone,
    now: Timestamp,
) -> Result<SchedulePlan, ScheduleError> {
    let spec = &schedule.spec;
    let keep = spec.keep.max(1);
    let delay = Duration::from_secs(u64::from(spec.delay_minutes) * 60);
    let bad = || ScheduleError::Time(now);
    let this_month = now.to_zoned(tz.clone()).date().first_of_month();
    // The newest month whose end (local midnight on the next 1st) is `delay` ago.
    let (due, next_run) = if now >= start(this_month, tz, delay, now)? {
        let next = this_month.checked_add(1.month()).map_err(|_| bad())?;
        (
            this_month.checked_sub(1.month()).map_err(|_| bad())?,
            start(next, tz, delay, now)?,
        )
    } else {
        (
            this_month.checked_sub(2.months()).map_err(|_| bad())?,
            start(this_month, tz, delay, now)?,
        )
    };
    let by_month: BTreeMap<String, &BulkExport> = owned
        .iter()
        .filter(|e| e.meta().deletion_timestamp.is_none())
        .map(|e| (e.spec.month.clone(), e))
        .collect();
    // Months it still owes: after the last it made (never before the first due month, and no
    // more than `keep` of them after an outage), up to the due one.
    let last_made = schedule.status.as_ref().and_then(|s| s.last_month.clone());
    let mut owed = Vec::new();
    if !spec.suspend {
        let mut m = due;
        for _ in 0..keep {
            let name = month_name(m);
            if last_made.as_ref().is_some_and(|last| name <= *last) {
                break;
            }
            if !by_month.contains_key(&name) {
                owed.push(name);
            }
            if last_made.is_none() {
                break;
            }
            m = m.checked_sub(1.month()).map_err(|_| bad())?;
        }
        owed.reverse();
    }
    let create: Vec<BulkExport> = owed
        .iter()
        .map(|month| export_for(schedule, month))
        .collect();
    let mut names: BTreeMap<String, String> = by_month
        .iter()
        .map(|(m, e)| (m.clone(), e.name_any()))
        .collect();
    for e in &create {
        names.insert(e.spec.month.clone(), e.name_any());
    }
    let newest_first: Vec<(String, String)> = names.into_iter().rev().collect();
    let keep = keep as usize;
    let delete = newest_first
        .iter()
        .skip(keep)
        .filter(|(month, _)| {
            by_month.get(month).is_some_and(|e| {
                e.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(|p| matches!(p, ExportPhase::Succeeded | ExportPhase::Failed))
            })
        })
        .map(|(_, name)| name.clone())
        .collect();
    let kept = newest_first
        .iter()
        .take(keep)
        .map(|(_, n)| n.clone())
        .collect();
    let last_month = newest_first
        .first()
        .map(|(m, _)| m.clone())
        .into_iter()
        .chain(last_made)
        .max();
    let requeue = if create.is_empty() {
        next_run
            .duration_since(now)
            .unsigned_abs()
            .min(MAX_SLEEP)
            .max(Duration::from_secs(1))
    } else {
        Duration::from_secs(1)
    };
    Ok(SchedulePlan {
        create,
        delete,
        status: ScheduledBulkExportStatus {
            observed_generation: schedule.meta().generation,
            last_month,
            next_run: (!spec.suspend).then_some(Time(next_run)),
            exports: kept,
            conditions: Vec::new(),
        },
        requeue,
    })
}

/// The BulkExport of `month`, labelled and owned by its schedule (deleting the schedule
/// deletes them, and with them their archives).
fn export_for(schedule: &ScheduledBulkExport, month: &str) -> BulkExport {
    let name = schedule.name_any();
    let mut export = BulkExport::new(
        &format!("{name}-{month}"),
        BulkExportSpec {
            month: month.to_string(),
            request: schedule.spec.request.clone(),
        },
    );
    export.metadata = ObjectMeta {
        name: export.metadata.name.take(),
        namespace: schedule.namespace(),
        labels: Some(BTreeMap::from([(LABEL_SCHEDULE.to_string(), name)])),
        owner_references: schedule.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    };
    export
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BulkExportStatus, ScheduledBulkExportSpec};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn amsterdam() -> TimeZone {
        TimeZone::get("Europe/Amsterdam").unwrap()
    }

    fn schedule(keep: u32, last: Option<&str>) -> ScheduledBulkExport {
        let mut s = ScheduledBulkExport::new(
            "monthly",
            ScheduledBulkExportSpec {
                request: Default::default(),
                keep,
                delay_minutes: 60,
                suspend: false,
            },
        );
        s.metadata.namespace = Some("acme".into());
        s.metadata.uid = Some("u-1".into());
        s.status = last.map(|m| ScheduledBulkExportStatus {
            last_month: Some(m.into()),
            ..Default::default()
        });
        s
    }

    fn made(month: &str, phase: Option<ExportPhase>) -> BulkExport {
        let mut e = export_for(&schedule(3, None), month);
        e.status = Some(BulkExportStatus {
            phase,
            ..Default::default()
        });
        e
    }

    #[test]
    fn a_new_schedule_exports_the_last_ended_month_after_the_delay() {
        // 1 December, 00:30 in Amsterdam (23:30 UTC on 30 November): November ended half an
        // hour ago, the delay is an hour: October is the newest due month.
        let p = plan(
            &schedule(3, None),
            &[],
            &amsterdam(),
            ts("2026-11-30T23:30:00Z"),
        )
        .unwrap();
        let months: Vec<&str> = p.create.iter().map(|e| e.spec.month.as_str()).collect();
        assert_eq!(months, ["2026-10"]);
        assert_eq!(
            p.status.next_run.as_ref().unwrap().0,
            ts("2026-12-01T00:00:00Z"),
            "01:00 local on 1 December"
        );
        // At 01:00 local November is due.
        let p = plan(
            &schedule(3, None),
            &[],
            &amsterdam(),
            ts("2026-12-01T00:00:00Z"),
        )
        .unwrap();
        assert_eq!(p.create[0].spec.month, "2026-11");
        assert_eq!(p.create[0].name_any(), "monthly-2026-11");
        let e = &p.create[0];
        assert_eq!(e.labels()[LABEL_SCHEDULE], "monthly");
        assert_eq!(e.owner_references()[0].kind, "ScheduledBulkExport");
        assert_eq!(
            p.status.next_run.as_ref().unwrap().0,
            ts("2027-01-01T00:00:00Z")
        );
    }

    #[test]
    fn a_month_already_exported_is_not_created_again_and_the_schedule_sleeps() {
        let now = ts("2026-12-03T12:00:00Z");
        let p = plan(
            &schedule(3, Some("2026-11")),
            &[made("2026-11", Some(ExportPhase::Running))],
            &amsterdam(),
            now,
        )
        .unwrap();
        assert!(p.create.is_empty());
        assert_eq!(p.requeue, MAX_SLEEP);
        assert_eq!(p.status.exports, ["monthly-2026-11"]);
        assert_eq!(p.status.last_month.as_deref(), Some("2026-11"));
    }

    #[test]
    fn months_missed_in_an_outage_are_caught_up_within_keep() {
        let p = plan(
            &schedule(2, Some("2026-08")),
            &[],
            &amsterdam(),
            ts("2026-12-03T12:00:00Z"),
        )
        .unwrap();
        let months: Vec<&str> = p.create.iter().map(|e| e.spec.month.as_str()).collect();
        assert_eq!(
            months,
            ["2026-10", "2026-11"],
            "the newest two, oldest first"
        );
    }

    #[test]
    fn older_finished_exports_beyond_keep_are_deleted_running_ones_wait() {
        let now = ts("2027-01-02T12:00:00Z");
        let owned = [
            made("2026-09", Some(ExportPhase::Succeeded)),
            made("2026-10", Some(ExportPhase::Running)),
            made("2026-11", Some(ExportPhase::Succeeded)),
        ];
        let p = plan(&schedule(2, Some("2026-11")), &owned, &amsterdam(), now).unwrap();
        assert_eq!(p.create[0].spec.month, "2026-12");
        assert_eq!(
            p.delete,
            ["monthly-2026-09"],
            "October still runs: it waits"
        );
        assert_eq!(p.status.exports, ["monthly-2026-12", "monthly-2026-11"]);
    }

    #[test]
    fn a_suspended_schedule_creates_nothing_and_keeps_what_it_has() {
        let mut s = schedule(3, Some("2026-10"));
        s.spec.suspend = true;
        let p = plan(
            &s,
            &[made("2026-10", Some(ExportPhase::Succeeded))],
            &amsterdam(),
            ts("2026-12-03T12:00:00Z"),
        )
        .unwrap();
        assert!(p.create.is_empty() && p.delete.is_empty());
        assert_eq!(p.status.next_run, None);
    }

    #[test]
    fn new_york_months_end_at_new_york_midnight() {
        let ny = TimeZone::get("America/New_York").unwrap();
        // 1 December 01:30 in New York is 06:30 UTC: November ended 90 minutes ago.
        let p = plan(&schedule(3, None), &[], &ny, ts("2026-12-01T06:30:00Z")).unwrap();
        assert_eq!(p.create[0].spec.month, "2026-11");
        let p = plan(&schedule(3, None), &[], &ny, ts("2026-12-01T05:30:00Z")).unwrap();
        assert_eq!(
            p.create[0].spec.month, "2026-10",
            "00:30 in New York: not yet"
        );
    }
}
