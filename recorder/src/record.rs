//! A call's record (the model's [`Record`]), built once when the recording starts and kept by
//! its media task, which refreshes it on re-negotiation and completes it at the end.

use opname_model::layout::RecordingKeys;
use opname_model::record::{self, Audio, Channel, EndReason, Participant, Record, Stream};

use crate::media::mixer::{self, StreamReport, Summary};
use crate::protocol::metadata::Metadata;
use crate::siprec::StartRecording;

/// The record as far as it is known when the call starts: end, audio and statistics are filled
/// in by [`finish`], or by crash recovery from the spool's copy.
pub fn initial(
    start: &StartRecording,
    id: &str,
    started: jiff::Timestamp,
    keys: &RecordingKeys,
    recorder: &str,
) -> Record {
    let policy = &start.policy;
    let mut r = Record {
        schema: record::SCHEMA,
        id: id.to_string(),
        namespace: start.namespace.clone(),
        user: policy.user.clone(),
        policy: policy.name.clone(),
        mode: policy.mode,
        matched_identity: start.matched_identity.clone(),
        participants: Vec::new(),
        siprec_session_id: None,
        sip_call_ids: vec![start.sip_call_id.clone()],
        correlation: Default::default(),
        start: started,
        end: started,
        duration_seconds: 0.0,
        codecs: Vec::new(),
        pauses: Vec::new(),
        streams: Vec::new(),
        audio: Audio {
            key: keys.audio.to_string(),
            content_type: record::AUDIO_CONTENT_TYPE.into(),
            size: 0,
            sha256: String::new(),
            sample_rate: mixer::mixing_rate(&start.streams),
            channels: 2,
        },
        retention_days: policy.retention_days,
        retain_until: started,
        kept_at: None,
        complete: false,
        end_reason: EndReason::Crashed,
        recorder: recorder.to_string(),
    };
    refresh(&mut r, start);
    r
}

/// What the metadata and the negotiated streams say, after the start or a re-negotiation.
pub fn refresh(r: &mut Record, start: &StartRecording) {
    r.participants = participants(&start.metadata, &[]);
    r.siprec_session_id = start.metadata.session_id.clone();
    r.correlation = start
        .metadata
        .correlation
        .clone()
        .into_iter()
        .chain(start.correlation.clone())
        .collect();
    r.codecs = start
        .streams
        .iter()
        .filter_map(|s| s.codec.map(|(_, c)| c.name().to_string()))
        .collect();
    r.codecs.dedup();
}

/// Completes the record from the mixer's summary and the audio as written.
pub fn finish(
    r: &mut Record,
    metadata: &Metadata,
    summary: Summary,
    audio: (u64, String),
    end: jiff::Timestamp,
    reason: EndReason,
) {
    r.participants = participants(metadata, &summary.streams);
    r.codecs = summary
        .streams
        .iter()
        .filter_map(|s| s.codec.map(str::to_string))
        .collect();
    r.codecs.dedup();
    r.end = end;
    r.duration_seconds = summary.duration.as_secs_f64();
    r.pauses = summary.pauses;
    r.streams = summary.streams.iter().map(stream).collect();
    (r.audio.size, r.audio.sha256) = audio;
    r.audio.sample_rate = summary.sample_rate;
    r.retain_until = Record::retain_until(end, r.retention_days);
    r.kept_at = summary.kept_at.map(|s| r.at(s));
    r.complete = reason == EndReason::Bye;
    r.end_reason = reason;
}

fn stream(s: &StreamReport) -> Stream {
    Stream {
        label: s.label.clone(),
        codec: s.codec.map(str::to_string),
        channel: s.channel,
        received: s.stats.received,
        lost: s.stats.lost,
        late: s.stats.late,
        duplicated: s.stats.duplicated,
        foreign: s.foreign,
        unknown_payload: s.unknown_payload,
    }
}

/// Participants with the channel their streams went to.
pub fn participants(md: &Metadata, streams: &[StreamReport]) -> Vec<Participant> {
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
            Participant {
                aor: p.aor.clone(),
                name: p.name.clone(),
                channel,
                joined: p.associate_time.clone(),
                left: p.disassociate_time.clone(),
            }
        })
        .collect()
}
