//! The JSON record stored beside each recording: who, when, what was heard and how well.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Mode;
use crate::metadata::Metadata;
use crate::recording::{Pause, StreamReport};
use crate::siprec::{Channel, EndReason};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantRecord {
    pub aor: Option<String>,
    pub name: Option<String>,
    pub channel: Option<Channel>,
    pub joined: Option<String>,
    pub left: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AudioObject {
    pub key: String,
    pub content_type: &'static str,
    pub size: u64,
    pub sha256: String,
    pub sample_rate: u32,
    pub channels: u8,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingRecord {
    pub schema: u32,
    pub id: String,
    pub namespace: String,
    pub user: String,
    pub policy: String,
    pub mode: Mode,
    pub matched_identity: String,
    pub participants: Vec<ParticipantRecord>,
    pub siprec_session_id: Option<String>,
    pub sip_call_ids: Vec<String>,
    pub correlation: BTreeMap<String, String>,
    /// From the recorder's clock: SRC clocks are not trusted.
    pub start: jiff::Timestamp,
    pub end: jiff::Timestamp,
    pub duration_seconds: f64,
    pub codecs: Vec<&'static str>,
    pub pauses: Vec<Pause>,
    pub streams: Vec<StreamReport>,
    pub audio: AudioObject,
    pub retention_days: u32,
    pub retain_until: jiff::Timestamp,
    /// On demand: when the user keyed the keep code (the whole call is kept, from its start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_at: Option<jiff::Timestamp>,
    /// False when the recording was cut (RTP timeout, shutdown, lost ACK).
    pub complete: bool,
    pub end_reason: EndReason,
    pub recorder: String,
}

/// Participants with the channel their streams went to.
pub fn participants(md: &Metadata, streams: &[StreamReport]) -> Vec<ParticipantRecord> {
    md.participants
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let by_stream = p.send.iter().find_map(|sid| {
                let label = md.streams.iter().find(|s| s.id == *sid)?.label.as_deref()?;
                streams
                    .iter()
                    .find(|s| s.label.as_deref() == Some(label))
                    .map(|s| s.channel)
            });
            let lone = streams.len() == 1 && streams[0].channel == Channel::Both;
            let channel = by_stream.or(match (lone, i) {
                (true, _) => Some(Channel::Both),
                (false, 0) => Some(Channel::Left),
                (false, _) => Some(Channel::Right),
            });
            ParticipantRecord {
                aor: p.aor.clone(),
                name: p.name.clone(),
                channel,
                joined: p.associate_time.clone(),
                left: p.disassociate_time.clone(),
            }
        })
        .collect()
}
