//! The JSON record stored beside each recording: who, when, what was heard and how well.
//!
//! The recorder writes it (first as the spool's partial record while the call runs, then final);
//! the operator, the recordings service and exports read it back as this same type. Its enums are
//! the archive's own, not the recorder's runtime types, so the stored format changes only here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::policy::Mode;

/// The record format's version, written into every record.
pub const SCHEMA: u32 = 1;

/// The MIME type of every recording's audio object.
pub const AUDIO_CONTENT_TYPE: &str = "audio/ogg; codecs=opus";

/// Which stereo channel(s) a participant or stream went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Left,
    Right,
    /// A mixed stream (both parties in one) goes to both channels.
    Both,
}

/// Why a recording ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    Bye,
    NoAck,
    MediaTimeout,
    MediaFailed,
    Shutdown,
    /// The recorder process died; recovered from the spool at the next start.
    Crashed,
    /// The recorder's pod or node was lost with its spool; assembled by another recorder from
    /// the segments it had uploaded.
    NodeLost,
}

impl EndReason {
    /// The label used in metrics and logs (the record's spelling).
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Bye => "bye",
            EndReason::NoAck => "no-ack",
            EndReason::MediaTimeout => "media-timeout",
            EndReason::MediaFailed => "media-failed",
            EndReason::Shutdown => "shutdown",
            EndReason::Crashed => "crashed",
            EndReason::NodeLost => "node-lost",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    #[serde(default)]
    pub aor: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub channel: Option<Channel>,
    #[serde(default)]
    pub joined: Option<String>,
    #[serde(default)]
    pub left: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Audio {
    pub key: String,
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
    pub sample_rate: u32,
    pub channels: u8,
}

/// A pause, in seconds from the start of the recording.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pause {
    pub start: f64,
    pub end: f64,
}

/// Per-stream statistics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stream {
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub codec: Option<String>,
    pub channel: Channel,
    pub received: u64,
    pub lost: u64,
    pub late: u64,
    pub duplicated: u64,
    /// Packets from a source other than the latched one.
    pub foreign: u64,
    pub unknown_payload: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub schema: u32,
    pub id: String,
    pub namespace: String,
    pub user: String,
    pub policy: String,
    pub mode: Mode,
    pub matched_identity: String,
    #[serde(default)]
    pub participants: Vec<Participant>,
    #[serde(default)]
    pub siprec_session_id: Option<String>,
    #[serde(default)]
    pub sip_call_ids: Vec<String>,
    #[serde(default)]
    pub correlation: BTreeMap<String, String>,
    /// From the recorder's clock: SRC clocks are not trusted.
    pub start: jiff::Timestamp,
    pub end: jiff::Timestamp,
    pub duration_seconds: f64,
    #[serde(default)]
    pub codecs: Vec<String>,
    #[serde(default)]
    pub pauses: Vec<Pause>,
    #[serde(default)]
    pub streams: Vec<Stream>,
    pub audio: Audio,
    pub retention_days: u32,
    pub retain_until: jiff::Timestamp,
    /// How callers were told the call is recorded, as the policy stated it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<crate::policy::Notice>,
    /// On demand: when the user keyed the keep code (the whole call is kept, from its start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_at: Option<jiff::Timestamp>,
    /// False when the recording was cut (RTP timeout, shutdown, lost ACK, crash).
    pub complete: bool,
    pub end_reason: EndReason,
    pub recorder: String,
}

#[derive(Debug, thiserror::Error)]
#[error("record {key}: {source}")]
pub struct RecordError {
    pub key: String,
    #[source]
    pub source: serde_json::Error,
}

impl Record {
    /// Reads a stored record; `key` names it in the error.
    pub fn parse(key: &str, bytes: &[u8]) -> Result<Self, RecordError> {
        serde_json::from_slice(bytes).map_err(|source| RecordError {
            key: key.to_string(),
            source,
        })
    }

    /// The bytes stored for it.
    pub fn to_json(&self) -> Vec<u8> {
        // A record holds only strings, numbers and maps with string keys: it always serialises.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    /// When retention ends for a recording that ended at `end`.
    pub fn retain_until(end: jiff::Timestamp, days: u32) -> jiff::Timestamp {
        end.checked_add(jiff::SignedDuration::from_hours(24 * i64::from(days)))
            .unwrap_or(end)
    }

    /// A moment `seconds` after the recording's start.
    pub fn at(&self, seconds: f64) -> jiff::Timestamp {
        self.start
            .checked_add(jiff::SignedDuration::from_secs_f64(seconds))
            .unwrap_or(self.start)
    }

    /// Marks the record as cut at `seconds` of audio (crash recovery): not complete, its audio
    /// as it was saved.
    pub fn cut(&mut self, seconds: f64, size: u64, sha256: String, reason: EndReason) {
        self.end = self.at(seconds);
        self.duration_seconds = seconds;
        self.retain_until = Self::retain_until(self.end, self.retention_days);
        self.audio.size = size;
        self.audio.sha256 = sha256;
        self.complete = false;
        self.end_reason = reason;
    }

    /// The participants' AoRs, in the metadata's order.
    pub fn parties(&self) -> Vec<String> {
        self.participants
            .iter()
            .filter_map(|p| p.aor.clone())
            .collect()
    }

    /// Where the user's own device (the identity the policy matched) is among the participants.
    fn own(&self) -> Option<usize> {
        let me = crate::identity::normalize(&self.matched_identity)?;
        self.participants.iter().position(|p| {
            p.aor
                .as_deref()
                .and_then(crate::identity::normalize)
                .is_some_and(|k| k == me)
        })
    }

    /// The other party: the first participant that is not the user's own matched device. An
    /// inbound call lists the caller first and the user second, so position alone names the
    /// user's own number as the other party.
    pub fn other_party(&self) -> Option<String> {
        let own = self.own();
        self.participants
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != own)
            .find_map(|(_, p)| p.aor.clone())
    }

    /// Whether the user placed the call: SRCs list the calling participant first (RFC 7865
    /// metadata has no direction of its own); `None` when the user's device is not listed.
    pub fn outbound(&self) -> Option<bool> {
        self.own().map(|i| i == 0)
    }

    /// An on-demand call nobody asked to keep.
    pub fn unkept(&self) -> bool {
        self.mode == Mode::OnDemand && self.kept_at.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORED: &str = r#"{
        "schema": 1, "id": "0190", "namespace": "acme", "user": "alice", "policy": "alice",
        "mode": "Always", "matchedIdentity": "tel:1001",
        "participants": [{"aor": "sip:1001@pbx", "channel": "left"}, {"aor": "tel:+3120", "channel": "right"}],
        "start": "2026-11-02T09:30:00Z", "end": "2026-11-02T09:31:00Z", "durationSeconds": 60.0,
        "codecs": ["PCMU"], "pauses": [], "streams": [],
        "audio": {"key": "r7/acme/2026/11/02/0190.opus", "contentType": "audio/ogg; codecs=opus",
                  "size": 10, "sha256": "ab", "sampleRate": 8000, "channels": 2},
        "retentionDays": 7, "retainUntil": "2026-11-09T09:31:00Z",
        "complete": true, "endReason": "bye", "recorder": "test"
    }"#;

    #[test]
    fn the_other_party_is_whoever_is_not_the_user() {
        let mut r = Record::parse("k", STORED.as_bytes()).unwrap();
        // Outbound: the user (tel:1001, spelled sip:1001@pbx) first.
        assert_eq!(r.other_party().as_deref(), Some("tel:+3120"));
        assert_eq!(r.outbound(), Some(true));
        // Inbound: the caller first, the user second.
        r.participants.reverse();
        assert_eq!(r.other_party().as_deref(), Some("tel:+3120"));
        assert_eq!(r.outbound(), Some(false));
        // The user's device not listed: the first participant, direction unknown.
        r.matched_identity = "tel:999".into();
        assert_eq!(r.other_party().as_deref(), Some("tel:+3120"));
        assert_eq!(r.outbound(), None);
    }

    #[test]
    fn reads_back_what_is_stored_and_round_trips() {
        let r = Record::parse("k", STORED.as_bytes()).unwrap();
        assert_eq!(r.end_reason, EndReason::Bye);
        assert_eq!(r.parties(), ["sip:1001@pbx", "tel:+3120"]);
        assert!(r.sip_call_ids.is_empty());
        let again = Record::parse("k", &r.to_json()).unwrap();
        assert_eq!(again, r);
        let json: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert!(json.get("keptAt").is_none());
        assert_eq!(json["participants"][0]["channel"], "left");
    }

    #[test]
    fn cut_marks_incomplete() {
        let mut r = Record::parse("k", STORED.as_bytes()).unwrap();
        r.cut(12.5, 99, "cd".into(), EndReason::Crashed);
        assert!(!r.complete);
        assert_eq!(r.end.to_string(), "2026-11-02T09:30:12.5Z");
        assert_eq!(r.retain_until.to_string(), "2026-11-09T09:30:12.5Z");
        let json: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(json["endReason"], "crashed");
        assert!(Record::parse("k", b"{}").is_err());
    }
}
