//! The manifests in every export part: `manifest.json` (machine-readable, UTC) and
//! `manifest.csv`, written for the spreadsheet the organisation's admins open it in.
//!
//! Excel reads a CSV with the list separator and decimal mark of the user's locale (`;` and `,`
//! in Dutch), takes UTF-8 only after a byte-order mark, and turns anything that looks like a
//! number into one (`+31201234567` loses its `+`, `0201234567` its leading zero). So the CSV
//! starts with a BOM, uses the locale's separator and decimal mark and column names, shows times
//! in the organisation's time zone (named in the header), and writes numbers and ids that must
//! stay text as `="…"`, which Excel keeps as text.

use serde::Serialize;

use crate::export::parts::Row;
use crate::organisation::{Locale, Organisation};

/// What a CSV written for `Locale` looks like in that locale's Excel.
trait Spreadsheet {
    fn separator(self) -> char;
    fn decimal(self, x: f64) -> String;
    fn yes_no(self, b: bool) -> &'static str;
    fn columns(self) -> [&'static str; 12];
}

impl Spreadsheet for Locale {
    /// Excel's list separator for the locale.
    fn separator(self) -> char {
        match self {
            Locale::En => ',',
            Locale::Nl => ';',
        }
    }

    fn decimal(self, x: f64) -> String {
        let s = format!("{x:.3}");
        match self {
            Locale::En => s,
            Locale::Nl => s.replace('.', ","),
        }
    }

    fn yes_no(self, b: bool) -> &'static str {
        match (self, b) {
            (Locale::En, true) => "yes",
            (Locale::En, false) => "no",
            (Locale::Nl, true) => "ja",
            (Locale::Nl, false) => "nee",
        }
    }

    fn columns(self) -> [&'static str; 12] {
        match self {
            Locale::En => [
                "id",
                "file",
                "user",
                "start",
                "end",
                "duration_seconds",
                "from",
                "to",
                "complete",
                "retention_days",
                "size",
                "sha256",
            ],
            Locale::Nl => [
                "id",
                "bestand",
                "gebruiker",
                "begin",
                "einde",
                "duur_seconden",
                "van",
                "naar",
                "volledig",
                "bewaartermijn_dagen",
                "grootte",
                "sha256",
            ],
        }
    }
}

/// Kept as text by Excel, whatever it looks like.
fn text(s: &str) -> String {
    format!("=\"{}\"", s.replace('"', "\"\""))
}

/// A free-text field, quoted when it holds the separator, a quote or a line break.
fn field(s: &str, sep: char) -> String {
    if s.contains([sep, '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A part's CSV, written in the organisation's language and time zone.
impl Organisation {
    fn time(&self, t: Option<jiff::Timestamp>) -> String {
        t.map(|t| {
            t.to_zoned(self.time_zone.clone())
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_default()
    }

    /// The header line, after the BOM; times are labelled with their zone.
    pub fn header(&self) -> String {
        let zone = self.zone_name();
        let sep = self.locale.separator().to_string();
        let cols: Vec<String> = self
            .locale
            .columns()
            .iter()
            .map(|c| match *c {
                "start" | "end" | "begin" | "einde" => format!("{c} ({zone})"),
                c => c.to_string(),
            })
            .map(|c| field(&c, self.locale.separator()))
            .collect();
        format!("\u{feff}{}\r\n", cols.join(&sep))
    }

    /// One recording's line.
    pub fn line(&self, r: &Row) -> String {
        let sep = self.locale.separator();
        let sha = if r.sha256.is_empty() {
            "0".repeat(64)
        } else {
            r.sha256.clone()
        };
        [
            text(&r.id),
            field(&r.file, sep),
            field(&r.user, sep),
            self.time(r.start),
            self.time(r.end),
            self.locale.decimal(r.duration_seconds),
            text(&r.from),
            text(&r.to),
            self.locale.yes_no(r.complete).to_string(),
            r.retention_days.to_string(),
            r.size.to_string(),
            sha,
        ]
        .join(&sep.to_string())
            + "\r\n"
    }

    /// The whole CSV of `rows`.
    pub fn csv<'a>(&self, rows: impl IntoIterator<Item = &'a Row>) -> String {
        std::iter::once(self.header())
            .chain(rows.into_iter().map(|r| self.line(r)))
            .collect()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest<'a> {
    pub namespace: &'a str,
    pub export: &'a str,
    pub month: &'a str,
    /// The organisation's time zone, in which `month` is counted.
    pub time_zone: &'a str,
    pub part: usize,
    pub parts: usize,
    pub recordings: &'a [Row],
    /// In the last part only: which files every part holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub all_parts: Option<Vec<PartListing<'a>>>,
}

#[derive(Serialize)]
pub struct PartListing<'a> {
    pub part: usize,
    pub files: Vec<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dutch_csv_is_what_dutch_excel_expects() {
        let f = Organisation::from_names(Some("Europe/Amsterdam"), Some("nl-NL")).unwrap();
        let row = Row::example();
        let csv = f.csv([&row]);
        assert!(csv.starts_with('\u{feff}'), "a BOM: Excel reads UTF-8");
        let mut lines = csv.trim_start_matches('\u{feff}').lines();
        assert_eq!(
            lines.next().unwrap(),
            "id;bestand;gebruiker;begin (Europe/Amsterdam);einde (Europe/Amsterdam);duur_seconden;van;naar;volledig;bewaartermijn_dagen;grootte;sha256"
        );
        let cells: Vec<&str> = lines.next().unwrap().split(';').collect();
        assert_eq!(
            cells[3], "2026-11-01 00:30:00",
            "local time, 23:30 UTC the day before"
        );
        assert_eq!(cells[5], "61,500", "decimal comma");
        assert_eq!(cells[6], "=\"+31201234567\"", "kept as text: the + stays");
        assert_eq!(
            cells[7], "=\"0201234567\"",
            "kept as text: the leading zero stays"
        );
        assert_eq!(cells[8], "ja");
        assert_eq!(Locale::from_tag("en-GB"), Locale::En);
        assert_eq!(
            Organisation::default().header().split(',').nth(3),
            Some("start (UTC)")
        );
    }
}
