//! The key layout of the archive (docs/storage.md): the one place a key is spelled or parsed.
//!
//! Under the configured prefix:
//! - `r{days}/{ns}/{yyyy}/{mm}/{dd}/{id}.opus` and `….json`: a recording in its retention class.
//!   The class comes first so one lifecycle rule per class expires it by prefix; the namespace next
//!   so an organisation's month is one listing per class; ids are UUIDv7, so a day lists in
//!   start-time order.
//! - `held/{ns}/{hold}/{yyyy}/{mm}/{dd}/{id}.…`: copies kept by a legal hold, outside every class.
//! - `{record stem}.access/{millis}-{action}-{user}.json`: who played or downloaded a recording,
//!   beside its record so it expires with it.
//! - `audit/{yyyy}/{mm}/{dd}/{millis}-{name}.json`: deletions and releases opname made itself.
//! - `exports/{ns}/{name}/…`: BulkExport archives, under their own lifecycle rule.
//! - `index/{ns}/{yyyy}/{mm}/{dd}.json`: the recordings service's per-day listing indexes.
//! - `segments/{ns}/{id}/record.partial` and `…/{seq:08}.ogg`: a recording in progress, uploaded as
//!   it is written so that a lost node loses seconds, not calls; removed once the recording is
//!   stored (a lifecycle rule expires what is left).

use jiff::civil::Date;
use object_store::path::Path;

const AUDIO: &str = ".opus";
const RECORD: &str = ".json";
const HELD: &str = "held";
const AUDIT: &str = "audit";
const EXPORTS: &str = "exports";
const INDEX: &str = "index";
const SEGMENTS: &str = "segments";
const SEGMENT: &str = ".ogg";
/// Not `.json`: nothing that looks for records takes a recording in progress for one.
const PARTIAL: &str = ".partial";
const ACCESS: &str = ".access";

/// The two objects of one recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordingKeys {
    pub audio: Path,
    pub record: Path,
}

/// Which of a recording's two objects a key names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Object {
    Audio,
    Record,
}

/// The layout under one prefix (`""` for the bucket's root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    root: String,
}

/// `yyyy/mm/dd`: the date part of a recording's key.
pub fn day_path(day: Date) -> String {
    format!("{:04}/{:02}/{:02}", day.year(), day.month(), day.day())
}

/// `yyyy/mm`: a month of recordings.
pub fn month_path(year: i16, month: i8) -> String {
    format!("{year:04}/{month:02}")
}

impl Layout {
    pub fn new(prefix: &str) -> Self {
        Self {
            root: prefix.trim_matches('/').to_string(),
        }
    }

    /// The prefix without slashes around it.
    pub fn prefix(&self) -> &str {
        &self.root
    }

    /// `{prefix}/{rest}`, or `rest` without a prefix.
    fn join(&self, rest: &str) -> String {
        if self.root.is_empty() {
            rest.to_string()
        } else {
            format!("{}/{rest}", self.root)
        }
    }

    /// `{prefix}/` (or `""`): what every opname key starts with, for a bucket-wide rule.
    pub fn everything(&self) -> String {
        self.join("")
    }

    /// The directory that holds the retention classes (listed with a delimiter).
    pub fn root(&self) -> Path {
        Path::from(self.root.as_str())
    }

    /// The objects of recording `id`, started on `day`, in class `days` of `namespace`.
    pub fn recording(&self, days: u32, namespace: &str, day: Date, id: &str) -> RecordingKeys {
        let stem = self.join(&format!("r{days}/{namespace}/{}/{id}", day_path(day)));
        RecordingKeys {
            audio: Path::from(format!("{stem}{AUDIO}")),
            record: Path::from(format!("{stem}{RECORD}")),
        }
    }

    /// `{prefix}/r{days}/`: what one lifecycle rule expires.
    pub fn class_prefix(&self, days: u32) -> String {
        self.join(&format!("r{days}/"))
    }

    /// A class's directory.
    pub fn class_dir(&self, days: u32) -> Path {
        Path::from(self.join(&format!("r{days}")))
    }

    /// A namespace's recordings in one class, narrowed to `period` (`""`, `yyyy`, `yyyy/mm` or
    /// `yyyy/mm/dd`).
    pub fn class_period(&self, days: u32, namespace: &str, period: &str) -> Path {
        Path::from(self.join(&with_period(&format!("r{days}/{namespace}"), period)))
    }

    /// The retention class named by a directory under the root (`r30` → 30).
    pub fn class_of_dir(name: &str) -> Option<u32> {
        name.strip_prefix('r')?.parse().ok()
    }

    /// The retention class of a key under this prefix (`{prefix}/r{days}/…`), if it has one.
    pub fn class_of(&self, key: &str) -> Option<u32> {
        let rest = if self.root.is_empty() {
            key
        } else {
            key.strip_prefix(self.root.as_str())?.strip_prefix('/')?
        };
        Self::class_of_dir(rest.split('/').next()?)
    }

    /// Where a namespace's holds keep their copies (one directory per hold).
    pub fn held_namespace(&self, namespace: &str) -> Path {
        Path::from(self.join(&format!("{HELD}/{namespace}")))
    }

    /// One hold's copies, narrowed to `period` as in [`Layout::class_period`].
    pub fn held_period(&self, namespace: &str, hold: &str, period: &str) -> Path {
        Path::from(self.join(&with_period(&format!("{HELD}/{namespace}/{hold}"), period)))
    }

    /// Where hold `hold` keeps its copy of the object at `original`.
    pub fn held_copy(&self, namespace: &str, hold: &str, original: &Path) -> Option<Path> {
        let (day, file) = (day_of(original)?, original.filename()?);
        Some(Path::from(
            self.join(&format!("{HELD}/{namespace}/{hold}/{day}/{file}")),
        ))
    }

    /// `{prefix}/audit/yyyy/mm/dd/{millis}-{name}.json`.
    pub fn audit(&self, now: jiff::Timestamp, name: &str) -> Path {
        let day = now.to_zoned(jiff::tz::TimeZone::UTC).date();
        Path::from(self.join(&format!(
            "{AUDIT}/{}/{}-{name}{RECORD}",
            day_path(day),
            now.as_millisecond()
        )))
    }

    /// Where every export archive lives.
    pub fn exports(&self) -> Path {
        Path::from(self.join(EXPORTS))
    }

    /// `{prefix}/exports/`: what the archives' lifecycle rule expires.
    pub fn exports_prefix(&self) -> String {
        self.join(&format!("{EXPORTS}/"))
    }

    /// Where one BulkExport's parts live: `{prefix}/exports/{ns}/{name}`.
    pub fn export_dir(&self, namespace: &str, name: &str) -> String {
        self.join(&format!("{EXPORTS}/{namespace}/{name}"))
    }

    /// A file of BulkExport `name` (a part's file name, safe as a key component).
    pub fn export_file(&self, namespace: &str, name: &str, file: &str) -> Path {
        Path::from(format!("{}/{file}", self.export_dir(namespace, name)))
    }

    /// Whether `key` lies under BulkExport `name`'s own directory (links are signed for nothing
    /// else).
    pub fn is_export_key(&self, namespace: &str, name: &str, key: &str) -> bool {
        key.strip_prefix(&self.export_dir(namespace, name))
            .and_then(|rest| rest.strip_prefix('/'))
            .is_some_and(|rest| !rest.is_empty() && !rest.split('/').any(|c| c == ".."))
    }

    /// A day's listing index.
    pub fn index(&self, namespace: &str, day: Date) -> Path {
        Path::from(self.join(&format!("{INDEX}/{namespace}/{}{RECORD}", day_path(day))))
    }

    /// A namespace's listing indexes.
    pub fn index_namespace(&self, namespace: &str) -> Path {
        Path::from(self.join(&format!("{INDEX}/{namespace}")))
    }

    /// Where the recordings in progress of a namespace upload their segments.
    pub fn segments(&self, namespace: &str) -> Path {
        Path::from(self.join(&format!("{SEGMENTS}/{namespace}")))
    }

    /// `{prefix}/segments/`: what the segments' lifecycle rule expires.
    pub fn segments_prefix(&self) -> String {
        self.join(&format!("{SEGMENTS}/"))
    }

    /// One recording's segments and its record while in progress.
    pub fn segment_dir(&self, namespace: &str, id: &str) -> Path {
        Path::from(self.join(&format!("{SEGMENTS}/{namespace}/{id}")))
    }

    /// Segment `seq` of a recording in progress: bytes of its Ogg file, in order from 0.
    pub fn segment(&self, namespace: &str, id: &str, seq: u32) -> Path {
        Path::from(format!(
            "{}/{seq:08}{SEGMENT}",
            self.segment_dir(namespace, id)
        ))
    }

    /// The record of a recording in progress (its partial record, with its final keys).
    pub fn segment_record(&self, namespace: &str, id: &str) -> Path {
        Path::from(format!(
            "{}/record{PARTIAL}",
            self.segment_dir(namespace, id)
        ))
    }

    /// The sequence number of a segment key; `None` for the record or anything else.
    pub fn segment_seq(key: &Path) -> Option<u32> {
        let name = key.filename()?.strip_suffix(SEGMENT)?;
        (name.len() == 8).then(|| name.parse().ok())?
    }

    /// Who accessed a recording: beside its record, so it expires with the recording's class.
    /// `user` must already be safe as a key component.
    pub fn access(record: &str, millis: i64, action: &str, user: &str) -> Path {
        let stem = record.strip_suffix(RECORD).unwrap_or(record);
        Path::from(format!("{stem}{ACCESS}/{millis}-{action}-{user}{RECORD}"))
    }
}

fn with_period(base: &str, period: &str) -> String {
    if period.is_empty() {
        base.to_string()
    } else {
        format!("{base}/{period}")
    }
}

/// A recording's key split into its stem (everything before the extension) and which object it
/// is; `None` for any other key.
pub fn split_object(key: &str) -> Option<(&str, Object)> {
    if let Some(stem) = key.strip_suffix(AUDIO) {
        Some((stem, Object::Audio))
    } else {
        key.strip_suffix(RECORD).map(|stem| (stem, Object::Record))
    }
}

/// The audio object of the recording a stem names.
pub fn audio_of(stem: &str) -> Path {
    Path::from(format!("{stem}{AUDIO}"))
}

/// The record object of the recording a stem names.
pub fn record_of(stem: &str) -> Path {
    Path::from(format!("{stem}{RECORD}"))
}

/// The recording id a stem ends in.
pub fn id_of_stem(stem: &str) -> &str {
    stem.rsplit('/').next().unwrap_or(stem)
}

/// The recording id of one of its objects (`…/{id}.json` → `id`).
pub fn id_of(key: &Path) -> Option<&str> {
    split_object(key.filename()?).map(|(stem, _)| stem)
}

/// `yyyy/mm/dd` of a recording's object: the three directories above it.
pub fn day_of(key: &Path) -> Option<String> {
    let parts: Vec<&str> = key.as_ref().split('/').collect();
    let n = parts.len();
    (n >= 4).then(|| parts[n - 4..n - 1].join("/"))
}

/// The spool's file names for a recording: `{id}.opus`, `{id}.json` when finished, and
/// `{id}.partial.json` while in progress.
pub mod spool {
    use std::path::{Path, PathBuf};

    const PARTIAL: &str = ".partial.json";

    pub fn audio(dir: &Path, id: &str) -> PathBuf {
        dir.join(format!("{id}.opus"))
    }

    pub fn record(dir: &Path, id: &str) -> PathBuf {
        dir.join(format!("{id}.json"))
    }

    pub fn partial(dir: &Path, id: &str) -> PathBuf {
        dir.join(format!("{id}{PARTIAL}"))
    }

    /// What a spool file is, by its name.
    pub enum File<'a> {
        Partial(&'a str),
        Record(&'a str),
        Other,
    }

    pub fn classify(name: &str) -> File<'_> {
        if let Some(id) = name.strip_suffix(PARTIAL) {
            File::Partial(id)
        } else if let Some(id) = name.strip_suffix(".json") {
            File::Record(id)
        } else {
            File::Other
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_sit_outside_every_class_and_parse_back() {
        let l = Layout::new("rec");
        assert_eq!(l.segments("acme").as_ref(), "rec/segments/acme");
        assert_eq!(l.segments_prefix(), "rec/segments/");
        let seg = l.segment("acme", "0199", 42);
        assert_eq!(seg.as_ref(), "rec/segments/acme/0199/00000042.ogg");
        assert_eq!(Layout::segment_seq(&seg), Some(42));
        let record = l.segment_record("acme", "0199");
        assert_eq!(record.as_ref(), "rec/segments/acme/0199/record.partial");
        assert_eq!(Layout::segment_seq(&record), None);
        assert_eq!(
            Layout::segment_seq(&Path::from("rec/segments/acme/0199/42.ogg")),
            None
        );
        assert!(
            l.class_of(seg.as_ref()).is_none(),
            "no retention class sees it"
        );
    }

    #[test]
    fn layout_puts_class_and_namespace_first() {
        let l = Layout::new("/recordings/");
        let k = l.recording(90, "acme", jiff::civil::date(2026, 3, 7), "0190-ab");
        assert_eq!(
            k.audio.as_ref(),
            "recordings/r90/acme/2026/03/07/0190-ab.opus"
        );
        assert_eq!(
            k.record.as_ref(),
            "recordings/r90/acme/2026/03/07/0190-ab.json"
        );
        let bare = Layout::new("");
        assert_eq!(
            bare.recording(1, "x", jiff::civil::date(2026, 12, 31), "i")
                .audio
                .as_ref(),
            "r1/x/2026/12/31/i.opus"
        );
    }

    #[test]
    fn class_of_keys() {
        let l = Layout::new("recordings");
        assert_eq!(
            l.class_of("recordings/r30/acme/2026/11/28/x.opus"),
            Some(30)
        );
        assert_eq!(Layout::new("").class_of("r7/acme/x.json"), Some(7));
        assert_eq!(l.class_of("recordings/audit/x.json"), None);
        assert_eq!(l.class_of("other/r30/x"), None);
        assert_eq!(l.class_prefix(30), "recordings/r30/");
        assert_eq!(Layout::new("").class_prefix(30), "r30/");
    }

    #[test]
    fn held_audit_export_index_and_access_keys() {
        let l = Layout::new("rec");
        let original = Path::from("rec/r7/acme/2026/11/01/a.opus");
        assert_eq!(
            l.held_copy("acme", "case-1", &original).unwrap().as_ref(),
            "rec/held/acme/case-1/2026/11/01/a.opus"
        );
        let now = jiff::Timestamp::from_millisecond(1_764_547_200_123).unwrap();
        assert_eq!(
            l.audit(now, "sweeper").as_ref(),
            "rec/audit/2025/12/01/1764547200123-sweeper.json"
        );
        assert_eq!(l.export_dir("acme", "nov"), "rec/exports/acme/nov");
        assert!(l.is_export_key("acme", "nov", "rec/exports/acme/nov/part-1.zip"));
        assert!(!l.is_export_key("acme", "nov", "rec/exports/acme/nov2/part-1.zip"));
        assert!(!l.is_export_key("acme", "nov", "rec/r7/acme/2026/11/01/a.opus"));
        assert!(!l.is_export_key("acme", "nov", "rec/exports/acme/nov/../x"));
        assert_eq!(
            l.index("acme", jiff::civil::date(2026, 11, 2)).as_ref(),
            "rec/index/acme/2026/11/02.json"
        );
        assert_eq!(
            Layout::access("rec/r7/acme/2026/11/01/a.json", 5, "play", "alice").as_ref(),
            "rec/r7/acme/2026/11/01/a.access/5-play-alice.json"
        );
    }

    #[test]
    fn objects_parse_back() {
        let key = Path::from("rec/r7/acme/2026/11/01/a.json");
        assert_eq!(id_of(&key), Some("a"));
        assert_eq!(day_of(&key).as_deref(), Some("2026/11/01"));
        assert_eq!(
            split_object("rec/x/a.opus"),
            Some(("rec/x/a", Object::Audio))
        );
        assert_eq!(split_object("rec/x/a.zip"), None);
        assert_eq!(id_of_stem("rec/x/a"), "a");
        assert_eq!(audio_of("rec/x/a").as_ref(), "rec/x/a.opus");
        assert_eq!(record_of("rec/x/a").as_ref(), "rec/x/a.json");
    }
}
