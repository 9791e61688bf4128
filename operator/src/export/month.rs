//! An organisation's month: the export's time range in the organisation's own time zone, and the
//! store periods (UTC months and days, as recordings are filed) that hold it.
//!
//! A Dutch organisation's November starts at 2026-10-31T23:00Z; a call at 00:30 local on the
//! 1st is filed under UTC day 31 October and still belongs to November's export.

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use opname_model::layout::{day_path, month_path};

use crate::export::parts::ExportError;

/// `[from, to)` of a month in a time zone, and where its recordings are filed.
#[derive(Debug, Clone, PartialEq)]
pub struct Month {
    pub from: Timestamp,
    pub to: Timestamp,
    /// Store periods to list: the UTC month of the same name (where it overlaps) and the UTC
    /// days at its edges outside it.
    pub periods: Vec<String>,
}

impl Month {
    pub fn contains(&self, t: Timestamp) -> bool {
        self.from <= t && t < self.to
    }
}

/// `2026-11` → its first day.
fn first_day(month: &str) -> Result<Date, ExportError> {
    let bad = || ExportError::Month(month.to_string());
    let (y, m) = month.split_once('-').ok_or_else(bad)?;
    let (y, m): (i16, i8) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if !(1..=9999).contains(&y) || !(1..=12).contains(&m) || month.len() != 7 {
        return Err(bad());
    }
    Date::new(y, m, 1).map_err(|_| bad())
}

/// `YYYY-MM` of the month `day` is in.
pub fn name(day: Date) -> String {
    format!("{:04}-{:02}", day.year(), day.month())
}

/// Local midnight at the start of `day` in `tz` (the instant a month begins there).
pub fn local_midnight(day: Date, tz: &TimeZone) -> Option<Timestamp> {
    day.to_zoned(tz.clone()).ok().map(|z| z.timestamp())
}

/// The month `YYYY-MM` in `tz` (DST-correct: local midnight to local midnight).
pub fn month(month: &str, tz: &TimeZone) -> Result<Month, ExportError> {
    let bad = || ExportError::Month(month.to_string());
    let first = first_day(month)?;
    let next = first.checked_add(1.month()).map_err(|_| bad())?;
    let from = local_midnight(first, tz).ok_or_else(bad)?;
    let to = local_midnight(next, tz).ok_or_else(bad)?;
    let mut periods = Vec::new();
    let last = to
        .checked_sub(jiff::SignedDuration::from_nanos(1))
        .map_err(|_| bad())?;
    let mut day = from.to_zoned(TimeZone::UTC).date();
    let end = last.to_zoned(TimeZone::UTC).date();
    while day <= end {
        if (day.year(), day.month()) == (first.year(), first.month()) {
            let whole = month_path(first.year(), first.month());
            if !periods.contains(&whole) {
                periods.push(whole);
            }
        } else {
            periods.push(day_path(day));
        }
        day = day.tomorrow().map_err(|_| bad())?;
    }
    Ok(Month { from, to, periods })
}

/// Whether `month` has begun in `tz` at `now` (a month not yet begun has nothing to export).
pub fn begun(month: &str, tz: &TimeZone, now: Timestamp) -> Result<bool, ExportError> {
    Ok(self::month(month, tz)?.from <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn amsterdam_months_start_at_local_midnight_across_dst() {
        let ams = TimeZone::get("Europe/Amsterdam").unwrap();
        // October starts in summer time (UTC+2) and ends in winter time (UTC+1, from 25 Oct).
        let oct = month("2026-10", &ams).unwrap();
        assert_eq!(oct.from, ts("2026-09-30T22:00:00Z"));
        assert_eq!(oct.to, ts("2026-10-31T23:00:00Z"));
        assert_eq!(oct.periods, ["2026/09/30", "2026/10"]);
        // 00:30 local on 1 November belongs to November, not October.
        let half_past = ts("2026-10-31T23:30:00Z");
        assert!(!oct.contains(half_past));
        let nov = month("2026-11", &ams).unwrap();
        assert!(nov.contains(half_past));
        assert_eq!(nov.periods, ["2026/10/31", "2026/11"]);
        assert!(
            oct.contains(ts("2026-09-30T22:30:00Z")),
            "00:30 local on 1 October"
        );
    }

    #[test]
    fn utc_and_western_zones() {
        let utc = month("2026-11", &TimeZone::UTC).unwrap();
        assert_eq!(utc.periods, ["2026/11"]);
        let ny = month("2026-11", &TimeZone::get("America/New_York").unwrap()).unwrap();
        assert_eq!(ny.from, ts("2026-11-01T04:00:00Z"));
        assert_eq!(ny.periods, ["2026/11", "2026/12/01"]);
        assert!(month("2026-13", &TimeZone::UTC).is_err());
        assert!(month("26-1x", &TimeZone::UTC).is_err());
        assert!(begun("2026-12", &TimeZone::UTC, ts("2026-12-01T00:00:00Z")).unwrap());
        assert!(
            !begun(
                "2026-12",
                &TimeZone::get("Asia/Tokyo").unwrap(),
                ts("2026-11-30T14:00:00Z")
            )
            .unwrap()
        );
    }
}
