//! One task per call: drains its RTP sockets once per 20 ms tick, feeds the mixer, keeps the
//! call's record, and at the end finalises the spool files and hands them to the uploader.

use std::io::Write;
use std::net::UdpSocket as StdUdpSocket;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opname_model::layout::spool as names;
use opname_model::record::Record;
use tokio::sync::mpsc;

use super::segments::{self, Progress};
use super::spool::{self, SpoolWriter};
use super::upload::enqueue;
use super::{CoreInput, Shared};
use crate::media::mixer::{KeepSpec, Recording, RecordingError};
use crate::metrics::OutcomeLabel;
use crate::protocol::metadata::Metadata;
use crate::record;
use crate::siprec::{EndReason, MediaStream, StartRecording};

pub(super) enum CallCmd {
    Update {
        streams: Vec<MediaStream>,
        metadata: Box<Metadata>,
    },
    Stop(EndReason),
}

#[derive(Debug, thiserror::Error)]
pub(super) enum StartError {
    #[error("RTP port {0} was not held for this call")]
    NotHeld(u16),
    #[error("spool file {0}: {1}")]
    Spool(PathBuf, std::io::Error),
    #[error(transparent)]
    Recording(#[from] RecordingError),
}

/// The socket the core's port holder bound for `port` before the answer.
fn held_rtp(shared: &Shared, port: u16) -> Result<StdUdpSocket, StartError> {
    shared.ports.take(port).ok_or(StartError::NotHeld(port))
}

/// Binds the call's RTP sockets, opens its spool file and spawns its media task.
pub(super) fn start_call(
    start: StartRecording,
    shared: Arc<Shared>,
) -> Result<mpsc::UnboundedSender<CallCmd>, StartError> {
    let mut sockets = Vec::new();
    for s in start.streams.iter().filter(|s| s.port != 0) {
        sockets.push((s.port, held_rtp(&shared, s.port)?));
    }
    let id = uuid::Uuid::now_v7().to_string();
    let audio_path = names::audio(&shared.config.spool.dir, &id);
    let writer =
        SpoolWriter::create(&audio_path).map_err(|e| StartError::Spool(audio_path.clone(), e))?;
    let now = Instant::now();
    let serial = uuid::Uuid::parse_str(&id).map_or(0, |u| u.as_u128() as u32);
    let keep = start.policy.keep_code.as_ref().map(|code| KeepSpec {
        code: code.clone(),
        user_labels: user_labels(&start),
    });
    let recording = Recording::new(writer, &start.streams, &shared.audio, serial, keep, now)?;
    tracing::info!(
        id,
        user = start.policy.user,
        call_id = start.sip_call_id,
        "recording started"
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let started = jiff::Timestamp::now();
    let day = started.to_zoned(jiff::tz::TimeZone::UTC).date();
    let keys = shared
        .layout
        .recording(start.policy.retention_days, &start.namespace, day, &id);
    let record = record::initial(&start, &id, started, &keys, &shared.recorder_name);
    shared.owned.insert(&id);
    let task = MediaTask {
        progress: Progress::new(
            now,
            Duration::from_secs(shared.config.spool.segment_seconds),
        ),
        partial: names::partial(&shared.config.spool.dir, &id),
        id,
        audio_path,
        start,
        recording,
        sockets,
        record,
        keys,
    };
    task.publish(&shared);
    tokio::spawn(media_task(task, rx, shared));
    Ok(tx)
}

/// Labels of the streams the recorded user sends, from the metadata's stream associations;
/// `None` when the metadata does not associate them (then any stream may carry the keep code).
fn user_labels(start: &StartRecording) -> Option<Vec<String>> {
    let md = &start.metadata;
    let user = md.participants.iter().find(|p| {
        p.aor
            .as_deref()
            .and_then(opname_model::identity::normalize)
            .is_some_and(|k| k.to_string() == start.matched_identity)
    })?;
    let labels: Vec<String> = user
        .send
        .iter()
        .filter_map(|sid| md.streams.iter().find(|s| s.id == *sid)?.label.clone())
        .collect();
    (!labels.is_empty()).then_some(labels)
}

pub(super) struct MediaTask {
    id: String,
    audio_path: PathBuf,
    partial: PathBuf,
    start: StartRecording,
    recording: Recording<SpoolWriter>,
    sockets: Vec<(u16, StdUdpSocket)>,
    /// The call's record, built at the start and kept up to date; the spool's partial record is
    /// this, written whenever it changes.
    record: Record,
    keys: opname_model::layout::RecordingKeys,
    /// How far the spool file has gone up as segments.
    progress: Progress,
}

impl MediaTask {
    /// The record of a recording in progress: beside it in the spool, for recovery after a
    /// crash, and beside its segments in the store, for recovery after the pod is lost.
    fn publish(&self, shared: &Shared) {
        if let Err(e) = spool::write_record(&self.partial, &self.record) {
            tracing::warn!(id = self.id, error = %e, "cannot write the partial record");
        }
        segments::record(shared, &self.record);
    }
}

pub(super) async fn media_task(
    mut t: MediaTask,
    mut rx: mpsc::UnboundedReceiver<CallCmd>,
    shared: Arc<Shared>,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let timeout = Duration::from_secs(shared.config.rtp.timeout_seconds);
    let mut buf = vec![0u8; 2048];
    let reason = loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(CallCmd::Update { streams, metadata }) => {
                    t.start.metadata = *metadata;
                    let now = Instant::now();
                    if let Err(e) = t.recording.update(&streams, now) {
                        tracing::error!(id = t.id, error = %e, "re-negotiation failed");
                    }
                    t.sockets.retain(|(p, _)| streams.iter().any(|s| s.port == *p));
                    for s in streams.iter().filter(|s| s.port != 0) {
                        if !t.sockets.iter().any(|(p, _)| *p == s.port) {
                            match held_rtp(&shared, s.port) {
                                Ok(sock) => t.sockets.push((s.port, sock)),
                                Err(e) => tracing::error!(id = t.id, error = %e, "cannot bind new stream"),
                            }
                        }
                    }
                    t.start.streams = streams;
                    record::refresh(&mut t.record, &t.start);
                    t.publish(&shared);
                }
                Some(CallCmd::Stop(reason)) => break reason,
                None => break EndReason::Shutdown,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                for (port, sock) in &t.sockets {
                    loop {
                        match sock.recv_from(&mut buf) {
                            Ok((n, from)) => t.recording.on_packet(*port, &buf[..n], from, now),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                tracing::debug!(error = %e, "RTP receive");
                                break;
                            }
                        }
                    }
                }
                if t.record.kept_at.is_none() && let Some(at) = t.recording.kept_at() {
                    t.record.kept_at = Some(t.record.at(at));
                    t.publish(&shared);
                }
                if let Err(e) = t.recording.tick(now) {
                    tracing::error!(id = t.id, error = %e, "encoding failed; ending the recording");
                    shared.metrics.error("encode");
                    let _ = shared.core_tx.send(CoreInput::MediaEnded { call: t.start.call, reason: EndReason::MediaFailed }).await;
                    break EndReason::MediaFailed;
                }
                let written = t.recording.output().written();
                t.progress.tick(&shared, &t.id, &t.audio_path, written, now);
                if t.recording.silent_for(now).is_some_and(|d| d >= timeout) {
                    tracing::warn!(id = t.id, "RTP timeout; finalising");
                    let _ = shared.core_tx.send(CoreInput::MediaEnded { call: t.start.call, reason: EndReason::MediaTimeout }).await;
                    break EndReason::MediaTimeout;
                }
            }
        }
    };
    drop(std::mem::take(&mut t.sockets));
    if let Err(e) = finalise(t, reason, &shared) {
        tracing::error!(error = %e, "finalising a recording failed; its spool file is kept");
        shared.metrics.error("finalise");
    }
}

/// Closes the Ogg stream, writes the JSON record into the spool, and queues both for upload.
fn finalise(t: MediaTask, reason: EndReason, shared: &Shared) -> Result<(), RecordingError> {
    let ended = Instant::now();
    let MediaTask {
        id,
        audio_path,
        partial,
        start,
        recording,
        mut record,
        keys,
        ..
    } = t;
    let (mut writer, summary) = recording.finish(ended)?;
    writer.flush()?;
    if start.policy.mode == opname_model::policy::Mode::OnDemand && summary.kept_at.is_none() {
        // The user did not ask to keep this call: its audio is destroyed, nothing is uploaded.
        drop(writer);
        std::fs::remove_file(&audio_path)?;
        let _ = std::fs::remove_file(&partial);
        // Nor is what went up as segments kept.
        let segments_tx = shared.segments_tx.clone();
        let gone = id.clone();
        tokio::spawn(async move {
            segments_tx
                .send(segments::SegmentJob::Done { id: gone })
                .await
        });
        shared
            .metrics
            .recordings
            .get_or_create(&OutcomeLabel {
                outcome: "not-kept".into(),
            })
            .inc();
        tracing::info!(
            id,
            user = start.policy.user,
            "on-demand call ended without the keep code; discarded"
        );
        return Ok(());
    }
    shared
        .metrics
        .packets_received
        .inc_by(summary.streams.iter().map(|s| s.stats.received).sum());
    shared
        .metrics
        .packets_lost
        .inc_by(summary.streams.iter().map(|s| s.stats.lost).sum());
    let foreign: u64 = summary.streams.iter().map(|s| s.foreign).sum();
    shared.metrics.packets_foreign.inc_by(foreign);
    if foreign > 0 {
        static FOREIGN: crate::log_limit::LogLimit = crate::log_limit::LogLimit::new();
        if let Some(suppressed) = FOREIGN.check(std::time::Instant::now()) {
            tracing::warn!(
                id,
                foreign,
                suppressed,
                "RTP from other sources or SSRCs was dropped"
            );
        }
    }
    let audio = writer.finish();
    let bytes = audio.0;
    record::finish(
        &mut record,
        &start.metadata,
        summary,
        audio,
        jiff::Timestamp::now(),
        reason,
    );
    let record_path = names::record(&shared.config.spool.dir, &id);
    spool::write_record(&record_path, &record)?;
    let _ = std::fs::remove_file(&partial);
    shared
        .metrics
        .recordings
        .get_or_create(&OutcomeLabel {
            outcome: reason.as_str().into(),
        })
        .inc();
    tracing::info!(id, key = %record.audio.key, seconds = record.duration_seconds, "recording finished");
    enqueue(shared, audio_path, record_path, keys, bytes, ended);
    Ok(())
}
