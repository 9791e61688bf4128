//! Retention by bucket lifecycle rules: one Expiration rule per retention class on the class's
//! key prefix, plus an abort of incomplete multipart uploads, merged into the bucket's existing
//! configuration.
//!
//! A lifecycle PUT replaces every rule of the bucket, so the plan keeps every rule outside
//! opname's ID namespace verbatim (as the XML it was read as), uses prefix filters only (some
//! S3-compatible servers ignore tag filters and would apply such a rule bucket-wide), and writes
//! nothing when opname's rules are already what they should be.

use std::collections::BTreeSet;

use opname_model::layout::{Layout, Object, split_object};

/// Rule IDs opname owns; everything else in the bucket is someone else's.
pub const RULE_PREFIX: &str = "opname-";
const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RetentionError {
    #[error("bucket lifecycle configuration is not valid XML: {0}")]
    Xml(String),
}

/// A rule opname manages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    /// Objects under `prefix` expire `days` after creation.
    Expire {
        id: String,
        prefix: String,
        days: u32,
    },
    /// Incomplete multipart uploads under `prefix` are aborted after `days`.
    AbortMultipart {
        id: String,
        prefix: String,
        days: u32,
    },
}

impl Rule {
    pub fn id(&self) -> &str {
        match self {
            Rule::Expire { id, .. } | Rule::AbortMultipart { id, .. } => id,
        }
    }

    /// The retention class a rule expires (`opname-r{days}`), not the archives' rule.
    pub fn class(&self) -> Option<u32> {
        match self {
            Rule::Expire { id, days, .. } if id == &format!("{RULE_PREFIX}r{days}") => Some(*days),
            _ => None,
        }
    }

    fn xml(&self) -> String {
        let (id, prefix, action) = match self {
            Rule::Expire { id, prefix, days } => (
                id,
                prefix,
                format!("<Expiration><Days>{days}</Days></Expiration>"),
            ),
            Rule::AbortMultipart { id, prefix, days } => (
                id,
                prefix,
                format!(
                    "<AbortIncompleteMultipartUpload><DaysAfterInitiation>{days}</DaysAfterInitiation></AbortIncompleteMultipartUpload>"
                ),
            ),
        };
        format!(
            "<Rule><ID>{}</ID><Filter><Prefix>{}</Prefix></Filter><Status>Enabled</Status>{action}</Rule>",
            escape(id),
            escape(prefix)
        )
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// How retention was last verified to be enforced, for the policies' `RetentionEnforced`.
#[derive(Debug, Clone, PartialEq)]
pub enum Enforcement {
    /// These classes have a lifecycle rule in force, read back from the bucket.
    LifecycleRules(BTreeSet<u32>),
    /// The sweeper completed a pass over every class.
    Sweeper,
}

impl Enforcement {
    /// `(status, reason, message)` of the condition for a policy keeping recordings `days`.
    pub fn condition(this: Option<&Self>, days: u32) -> (&'static str, &'static str, String) {
        match this {
            None => (
                "Unknown",
                "NotVerified",
                "retention has not been verified yet".into(),
            ),
            Some(Enforcement::LifecycleRules(classes)) if classes.contains(&days) => (
                "True",
                "LifecycleRule",
                format!(
                    "bucket lifecycle rule {RULE_PREFIX}r{days} is in force (verified by read-back)"
                ),
            ),
            Some(Enforcement::LifecycleRules(_)) => (
                "False",
                "RuleMissing",
                format!("no lifecycle rule for {days}-day retention is in force yet"),
            ),
            Some(Enforcement::Sweeper) => (
                "True",
                "Sweeper",
                format!("recordings older than {days} days are deleted by the retention sweeper"),
            ),
        }
    }
}

/// Days a recording's segments may outlive it: a recorder assembles a lost recorder's within a
/// minute, so what is older is a leftover (a segment uploaded after its recording was stored).
pub const SEGMENT_DAYS: u32 = 2;

/// opname's rules for these retention classes, for export archives kept `archive_days` (0: no
/// archive rule) and for the segments of recordings in progress.
pub fn desired(layout: &Layout, classes: &BTreeSet<u32>, archive_days: u32) -> Vec<Rule> {
    let mut rules: Vec<Rule> = classes
        .iter()
        .filter(|d| **d > 0)
        .map(|&days| Rule::Expire {
            id: format!("{RULE_PREFIX}r{days}"),
            prefix: layout.class_prefix(days),
            days,
        })
        .collect();
    if archive_days > 0 {
        rules.push(Rule::Expire {
            id: format!("{RULE_PREFIX}exports"),
            prefix: layout.exports_prefix(),
            days: archive_days,
        });
    }
    rules.push(Rule::Expire {
        id: format!("{RULE_PREFIX}segments"),
        prefix: layout.segments_prefix(),
        days: SEGMENT_DAYS,
    });
    rules.push(Rule::AbortMultipart {
        id: format!("{RULE_PREFIX}abort-incomplete-uploads"),
        prefix: layout.everything(),
        days: 1,
    });
    rules.sort();
    rules
}

/// A bucket's lifecycle configuration as read: foreign rules verbatim, opname's parsed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Configuration {
    pub foreign: Vec<String>,
    pub ours: Vec<Rule>,
}

/// Parses a GetBucketLifecycleConfiguration body (empty: no configuration).
pub fn parse(xml: &str) -> Result<Configuration, RetentionError> {
    if xml.trim().is_empty() {
        return Ok(Configuration::default());
    }
    let doc = roxmltree::Document::parse(xml).map_err(|e| RetentionError::Xml(e.to_string()))?;
    let mut out = Configuration::default();
    for rule in doc
        .root_element()
        .children()
        .filter(|n| n.tag_name().name() == "Rule")
    {
        let text = |path: &[&str]| -> Option<String> {
            let mut node = rule;
            for p in path {
                node = node.children().find(|c| c.tag_name().name() == *p)?;
            }
            node.text().map(|t| t.trim().to_string())
        };
        let id = text(&["ID"]).unwrap_or_default();
        let prefix = text(&["Filter", "Prefix"])
            .or_else(|| text(&["Prefix"]))
            .unwrap_or_default();
        let ours = id.starts_with(RULE_PREFIX);
        let parsed = if let Some(days) = text(&["Expiration", "Days"]).and_then(|d| d.parse().ok())
        {
            Some(Rule::Expire {
                id: id.clone(),
                prefix: prefix.clone(),
                days,
            })
        } else {
            text(&["AbortIncompleteMultipartUpload", "DaysAfterInitiation"])
                .and_then(|d| d.parse().ok())
                .map(|days| Rule::AbortMultipart {
                    id: id.clone(),
                    prefix: prefix.clone(),
                    days,
                })
        };
        match (ours, parsed) {
            (true, Some(r)) => out.ours.push(r),
            // Ours but not understood (edited by hand): replaced by what it should be.
            (true, None) => {}
            (false, _) => out.foreign.push(xml[rule.range()].to_string()),
        }
    }
    out.ours.sort();
    Ok(out)
}

/// The configuration to write, or `None` when opname's rules are already in force.
pub fn plan(current: &Configuration, desired: &[Rule]) -> Option<String> {
    let mut want = desired.to_vec();
    want.sort();
    if current.ours == want {
        return None;
    }
    let mut body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><LifecycleConfiguration xmlns=\"{S3_NS}\">"
    );
    for f in &current.foreign {
        body.push_str(f);
    }
    for r in &want {
        body.push_str(&r.xml());
    }
    body.push_str("</LifecycleConfiguration>");
    Some(body)
}

/// Retention classes to keep rules for: those of current policies, and retired classes that
/// still hold objects (their recordings keep the retention they were written with).
pub fn classes_to_keep(
    in_use: &BTreeSet<u32>,
    current: &Configuration,
    still_holds_objects: impl Fn(u32) -> bool,
) -> BTreeSet<u32> {
    let mut keep = in_use.clone();
    for r in &current.ours {
        if let Some(days) = r.class()
            && !in_use.contains(&days)
            && still_holds_objects(days)
        {
            keep.insert(days);
        }
    }
    keep
}

/// Whether an object written at `created` has outlived `days` at `now` (the lifecycle rule's own
/// semantics: days from creation; never earlier).
pub fn expired(created: jiff::Timestamp, days: u32, now: jiff::Timestamp) -> bool {
    created
        .checked_add(jiff::SignedDuration::from_hours(24 * days as i64))
        .is_ok_and(|until| until <= now)
}

/// The keys of one recording (`{id}.opus`, `{id}.json`) to delete, audio first so that a record
/// never outlives its audio, or nothing while any of them is unexpired.
pub fn sweep_recording(
    layout: &Layout,
    objects: &[(String, jiff::Timestamp)],
    now: jiff::Timestamp,
) -> Vec<String> {
    let all_expired = !objects.is_empty()
        && objects.iter().all(|(key, created)| {
            layout
                .class_of(key)
                .is_some_and(|days| days > 0 && expired(*created, days, now))
        });
    if !all_expired {
        return Vec::new();
    }
    let mut keys: Vec<String> = objects.iter().map(|(k, _)| k.clone()).collect();
    // Audio first: a record never outlives its audio.
    keys.sort_by_key(|k| {
        let record = matches!(split_object(k), Some((_, Object::Record)));
        (record, k.clone())
    });
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    const FOREIGN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Rule><ID>logs-cleanup</ID><Filter><Prefix>logs/</Prefix></Filter><Status>Enabled</Status><Expiration><Days>3</Days></Expiration></Rule>
  <Rule><ID>opname-r30</ID><Filter><Prefix>recordings/r30/</Prefix></Filter><Status>Enabled</Status><Expiration><Days>30</Days></Expiration></Rule>
</LifecycleConfiguration>"#;

    fn set(days: &[u32]) -> BTreeSet<u32> {
        days.iter().copied().collect()
    }

    #[test]
    fn one_rule_per_class_on_its_prefix_plus_multipart_abort() {
        let rules = desired(&Layout::new("/recordings/"), &set(&[90, 30, 30]), 0);
        assert_eq!(
            rules,
            [
                Rule::Expire {
                    id: "opname-r30".into(),
                    prefix: "recordings/r30/".into(),
                    days: 30
                },
                Rule::Expire {
                    id: "opname-r90".into(),
                    prefix: "recordings/r90/".into(),
                    days: 90
                },
                Rule::Expire {
                    id: "opname-segments".into(),
                    prefix: "recordings/segments/".into(),
                    days: 2
                },
                Rule::AbortMultipart {
                    id: "opname-abort-incomplete-uploads".into(),
                    prefix: "recordings/".into(),
                    days: 1
                },
            ]
        );
        assert!(
            desired(&Layout::new(""), &set(&[0]), 0)
                .iter()
                .all(|r| r.class().is_none()),
            "a 0-day class never deletes everything now"
        );
    }

    #[test]
    fn foreign_rules_survive_verbatim_and_unchanged_rules_are_not_written() {
        let current = parse(FOREIGN).unwrap();
        assert_eq!(current.foreign.len(), 1);
        assert!(current.foreign[0].contains("<ID>logs-cleanup</ID>"));
        let want = desired(&Layout::new("recordings"), &set(&[30, 90]), 14);
        let body = plan(&current, &want).expect("r90 and the abort rule are missing");
        let written = parse(&body).unwrap();
        assert_eq!(
            written.foreign, current.foreign,
            "the other rule is kept as it was"
        );
        assert_eq!(written.ours, want);
        assert_eq!(
            plan(&written, &want),
            None,
            "nothing to write the second time"
        );
        assert!(!body.contains("<Tag>"), "prefix filters only");
    }

    #[test]
    fn retired_classes_keep_their_rule_while_objects_remain() {
        let current = parse(
            &plan(
                &Configuration::default(),
                &desired(&Layout::new("rec"), &set(&[7, 30]), 0),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            classes_to_keep(&set(&[30]), &current, |d| d == 7),
            set(&[7, 30])
        );
        assert_eq!(
            classes_to_keep(&set(&[30]), &current, |_| false),
            set(&[30])
        );
    }

    proptest::proptest! {
        /// Nothing unexpired is ever deleted; everything expired is; audio goes before its record.
        #[test]
        fn sweep_deletes_exactly_the_expired(
            class in proptest::sample::select(vec![1u32, 7, 30, 90, 3650]),
            ages in proptest::collection::vec(0i64..4_000 * 86_400, 1..3),
            now_offset in 0i64..86_400,
        ) {
            let now = jiff::Timestamp::from_second(2_000_000_000 + now_offset).unwrap();
            let objects: Vec<(String, jiff::Timestamp)> = ages
                .iter()
                .enumerate()
                .map(|(i, age)| {
                    let keys = Layout::new("rec").recording(class, "acme", jiff::civil::date(2026, 1, 1), "id");
                    let key = if i == 0 { keys.audio } else { keys.record };
                    (key.to_string(), now.checked_sub(jiff::SignedDuration::from_secs(*age)).unwrap())
                })
                .collect();
            let planned = sweep_recording(&Layout::new("rec"), &objects, now);
            let limit = class as i64 * 86_400;
            let all_expired = ages.iter().all(|a| *a >= limit);
            proptest::prop_assert_eq!(!planned.is_empty(), all_expired);
            if all_expired {
                proptest::prop_assert_eq!(planned.len(), objects.len());
                proptest::prop_assert!(planned.last().unwrap().ends_with(".json") || objects.len() == 1);
            }
        }
    }

    #[test]
    fn empty_and_broken_configurations() {
        assert_eq!(parse("").unwrap(), Configuration::default());
        assert!(parse("<LifecycleConfiguration>").is_err());
        let legacy = r#"<LifecycleConfiguration><Rule><ID>old</ID><Prefix>x/</Prefix><Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>"#;
        assert_eq!(parse(legacy).unwrap().foreign.len(), 1);
    }
}
