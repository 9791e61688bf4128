//! A call's record (the model's [`Record`]), built once when the recording starts and kept by
//! its media task, which refreshes it on re-negotiation and completes it at the end.

use opname_model::layout::RecordingKeys;
use opname_model::record::{self, Audio, Channel, EndReason, Participant, Record, Stream};

use crate::media::mixer::{self, StreamReport, Summary};
use crate::protocol::metadata::Metadata;
use crate::siprec::StartRecording;

/// What is left of a recording whose recorder stopped before its end (a crash, with the spool's
/// audio; a lost pod or node, with its uploaded segments): the audio cut at its last whole Ogg
/// page and the record marked incomplete with `reason`. `None` when there is nothing to keep: no
/// whole page, or an on-demand call nobody asked to keep.
pub fn salvage(
    mut record: Record,
    mut audio: Vec<u8>,
    reason: EndReason,
) -> Option<(Vec<u8>, Record)> {
    use sha2::Digest;
    let granule = crate::media::ogg::repair(&mut audio)?;
    if record.unkept() {
        return None;
    }
    record.cut(
        granule as f64 / 48_000.0,
        audio.len() as u64,
        hex::encode(sha2::Sha256::digest(&audio)),
        reason,
    );
    Some((audio, record))
}

/// A lost recorder's recording from its segments, in order: the run of consecutive segments from
/// 0 (a gap ends it: what follows cannot be placed), salvaged as [`salvage`] does.
pub fn assemble(record: Record, segments: &[(u32, Vec<u8>)]) -> Option<(Vec<u8>, Record)> {
    let mut sorted: Vec<&(u32, Vec<u8>)> = segments.iter().collect();
    sorted.sort_by_key(|(seq, _)| *seq);
    let mut audio = Vec::new();
    for (expected, (seq, bytes)) in sorted.into_iter().enumerate() {
        if *seq as usize != expected {
            break;
        }
        audio.extend_from_slice(bytes);
    }
    salvage(record, audio, EndReason::NodeLost)
}

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
        notice: policy.notice.clone(),
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

/// Participants with the channel their streams went to. Where the metadata associates streams
/// with participants, one it associates with none sends nothing (an SBC's own dummy participant,
/// such as Avaya SBCE's) and has no channel; without associations, by position.
pub fn participants(md: &Metadata, streams: &[StreamReport]) -> Vec<Participant> {
    let associated = md.participants.iter().any(|p| !p.send.is_empty());
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
            let channel = by_stream.or(match (associated, lone, i) {
                (true, ..) => None,
                (false, true, _) => Some(Channel::Both),
                (false, false, 0) => Some(Channel::Left),
                (false, false, _) => Some(Channel::Right),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ogg::OggOpusWriter;

    const RECORD: &str = r#"{
        "schema": 1, "id": "0190", "namespace": "acme", "user": "alice", "policy": "alice",
        "mode": "Always", "matchedIdentity": "tel:1001", "participants": [],
        "start": "2026-11-02T09:30:00Z", "end": "2026-11-02T09:30:00Z", "durationSeconds": 0.0,
        "codecs": ["PCMU"], "pauses": [], "streams": [],
        "audio": {"key": "r7/acme/2026/11/02/0190.opus", "contentType": "audio/ogg; codecs=opus",
                  "size": 0, "sha256": "", "sampleRate": 8000, "channels": 2},
        "retentionDays": 7, "retainUntil": "2026-11-09T09:30:00Z",
        "complete": true, "endReason": "bye", "recorder": "lost-pod"
    }"#;

    /// Three seconds of audio as a recorder uploads it: split at page boundaries.
    fn segments() -> Vec<Vec<u8>> {
        let mut bytes = Vec::new();
        let mut w = OggOpusWriter::new(&mut bytes, 7, 2, 8000, 312, "t").unwrap();
        for _ in 0..150 {
            w.write_audio(&[1u8; 40]).unwrap();
        }
        drop(w);
        let pages: Vec<usize> = (0..bytes.len() - 3)
            .filter(|&i| &bytes[i..i + 4] == b"OggS")
            .chain([bytes.len()])
            .collect();
        // Headers and the first second; the second; the third.
        [(0, 3), (3, 4), (4, 5)]
            .iter()
            .map(|&(a, b)| bytes[pages[a]..pages[b]].to_vec())
            .collect()
    }

    #[test]
    fn a_lost_recorders_segments_make_an_incomplete_recording() {
        let record = Record::parse("k", RECORD.as_bytes()).unwrap();
        let s = segments();
        let all: Vec<(u32, Vec<u8>)> =
            vec![(2, s[2].clone()), (0, s[0].clone()), (1, s[1].clone())];
        let (audio, r) = assemble(record.clone(), &all).unwrap();
        assert_eq!(
            audio.len(),
            s.iter().map(Vec::len).sum::<usize>(),
            "in order, all of it"
        );
        assert_eq!(r.end_reason, EndReason::NodeLost);
        assert!(!r.complete);
        assert!(
            (r.duration_seconds - 3.0).abs() < 0.05,
            "{}",
            r.duration_seconds
        );
        assert_eq!(r.audio.size, audio.len() as u64);
        assert_eq!(r.end, r.at(r.duration_seconds));
        // A gap ends what can be placed; without the first segment there is no stream.
        let (_, gap) = assemble(record.clone(), &[(0, s[0].clone()), (2, s[2].clone())]).unwrap();
        assert!(
            (gap.duration_seconds - 1.0).abs() < 0.05,
            "{}",
            gap.duration_seconds
        );
        assert!(assemble(record.clone(), &[(1, s[1].clone())]).is_none());
        // An on-demand call nobody kept stays unkept.
        let mut unkept = record;
        unkept.mode = opname_model::policy::Mode::OnDemand;
        assert!(assemble(unkept, &all).is_none());
    }

    /// Avaya SBCE names itself as a participant beside the real ones and sends one mixed stream:
    /// the participants the metadata associates with it are on both channels, the SBC's dummy on
    /// none.
    #[test]
    fn a_participant_that_sends_no_stream_has_no_channel() {
        let xml = br#"<recording xmlns="urn:ietf:params:xml:ns:recording:1">
<participant participant_id="a"><nameID aor="sip:avaya@sbce.example"/></participant>
<participant participant_id="b"><nameID aor="sip:1001@cm.example"/></participant>
<stream stream_id="s1" session_id="x"><label>1</label></stream>
<participantstreamassoc participant_id="b"><send>s1</send></participantstreamassoc>
</recording>"#;
        let md = crate::protocol::metadata::parse(xml).unwrap();
        let stream = crate::media::mixer::StreamReport {
            label: Some("1".into()),
            codec: Some("PCMU"),
            channel: Channel::Both,
            stats: Default::default(),
            foreign: 0,
            unknown_payload: 0,
        };
        let p = participants(&md, &[stream]);
        assert_eq!(p[0].channel, None, "the SBC's own dummy participant");
        assert_eq!(p[1].channel, Some(Channel::Both));
    }
}
