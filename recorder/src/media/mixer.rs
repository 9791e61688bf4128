//! One call's recording pipeline, sans-IO: RTP packets and the time go in, Ogg pages come out
//! of the sink it was given.
//!
//! Every stream has a jitter buffer on the call's shared timeline; on each tick the mixer takes
//! the frames whose time has come from every stream, sums them into the left or right channel,
//! and the stereo frame is Opus-encoded. Time is the call clock (samples since the call started),
//! so pauses and missing packets become silence and both channels stay aligned for the whole call.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::media::codec::{ALAW, CodecError, Decoder, ULAW};
use crate::media::dtmf::{InBand, KeepCode};
use crate::media::jitter::{JitterBuffer, Stats};
use crate::media::ogg::OggOpusWriter;
use crate::protocol::sdp::Codec;
use crate::siprec::{Channel, MediaStream};

#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("opus encoder: {0}")]
    Encoder(#[from] opus::Error),
    #[error("spool write: {0}")]
    Io(#[from] io::Error),
}

#[derive(Debug, Clone)]
pub struct AudioSettings {
    pub bitrate: i32,
    pub complexity: i32,
    pub jitter: Duration,
}

/// A stream takes RTP from the address its offer names (`MediaStream::source`), or when latching
/// from the first source, kept for the call; and from one SSRC, which may change only after the
/// stream has been silent this long (an SBC re-anchoring media, a transfer). Anything else is
/// counted as foreign and dropped: nobody can inject audio into, or take over, a recording.
const SSRC_CHANGE_AFTER: Duration = Duration::from_secs(1);

struct StreamState {
    spec: MediaStream,
    jitter: JitterBuffer,
    decoder: Option<Decoder>,
    /// The source seen first (the one kept when latching).
    source: Option<SocketAddr>,
    /// SRTP decryption (SDES keys of the offer), with replay protection.
    srtp: Option<webrtc_srtp::context::Context>,
    ssrc: Option<u32>,
    last_packet: Option<Instant>,
    foreign: u64,
    unknown_payload: u64,
    /// In-band DTMF detection, on the user's G.711 streams without telephone-event (on demand).
    in_band: Option<InBand>,
}

/// Replay window of SRTP streams, packets (RFC 3711 §3.3.2 asks for at least 64).
const REPLAY_WINDOW: usize = 128;

/// The decryption context of a stream keyed by SDES; `None` for plain RTP, or for a key the
/// crate refuses (then every packet of the stream is dropped as foreign).
fn srtp_context(spec: &MediaStream) -> Option<webrtc_srtp::context::Context> {
    use crate::protocol::crypto::Suite;
    use webrtc_srtp::protection_profile::ProtectionProfile;
    let c = spec.srtp.as_ref()?;
    let profile = match c.suite {
        Suite::AesCm128HmacSha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
        Suite::AesCm128HmacSha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        Suite::AeadAes128Gcm => ProtectionProfile::AeadAes128Gcm,
    };
    let (key, salt) = c.key.split(c.suite);
    webrtc_srtp::context::Context::new(
        key,
        salt,
        profile,
        Some(webrtc_srtp::option::srtp_replay_protection(REPLAY_WINDOW)),
        None,
    )
    .ok()
}

/// Per-stream statistics for the record.
#[derive(Debug, Clone)]
pub struct StreamReport {
    pub label: Option<String>,
    pub codec: Option<&'static str>,
    pub channel: Channel,
    pub stats: Stats,
    /// Packets dropped as not the stream's: another source, another SSRC, or not RTP.
    pub foreign: u64,
    pub unknown_payload: u64,
}

pub use opname_model::record::Pause;

#[derive(Debug, Clone)]
pub struct Summary {
    pub duration: Duration,
    pub streams: Vec<StreamReport>,
    pub pauses: Vec<Pause>,
    pub sample_rate: u32,
    /// On demand: seconds from the start when the user keyed the keep code.
    pub kept_at: Option<f64>,
}

/// What on-demand recording listens for.
#[derive(Debug, Clone)]
pub struct KeepSpec {
    pub code: String,
    /// Labels of the user's own streams; `None` when the metadata does not say (then any stream).
    pub user_labels: Option<Vec<String>>,
}

pub struct Recording<W: Write> {
    start: Instant,
    rate: u32,
    frame: usize,
    delay: i64,
    streams: Vec<StreamState>,
    finished_streams: Vec<StreamReport>,
    encoder: opus::Encoder,
    ogg: OggOpusWriter<W>,
    played: i64,
    pauses: Vec<Pause>,
    paused_since: Option<f64>,
    mix: Vec<i16>,
    pcm: Vec<i16>,
    packet: Vec<u8>,
    keep: Option<(KeepSpec, KeepCode)>,
    kept_at: Option<f64>,
}

/// 16 kHz when any stream is wideband, else the G.711 rate: Opus takes 8 kHz natively and
/// resampling narrowband calls would only cost CPU.
pub fn mixing_rate(streams: &[MediaStream]) -> u32 {
    if streams
        .iter()
        .any(|s| s.codec.is_some_and(|(_, c)| c.wideband()))
    {
        16_000
    } else {
        8_000
    }
}

impl<W: Write> Recording<W> {
    pub fn new(
        sink: W,
        streams: &[MediaStream],
        audio: &AudioSettings,
        serial: u32,
        keep: Option<KeepSpec>,
        now: Instant,
    ) -> Result<Self, RecordingError> {
        let rate = mixing_rate(streams);
        let mut encoder =
            opus::Encoder::new(rate, opus::Channels::Stereo, opus::Application::Voip)?;
        encoder.set_bitrate(opus::Bitrate::Bits(audio.bitrate))?;
        encoder.set_complexity(audio.complexity)?;
        let lookahead = encoder.get_lookahead()?.max(0) as u32 * (48_000 / rate);
        let ogg = OggOpusWriter::new(
            sink,
            serial,
            2,
            rate,
            lookahead.min(u16::MAX as u32) as u16,
            crate::protocol::sip::SERVER,
        )?;
        let frame = (rate / 50) as usize;
        let mut rec = Self {
            start: now,
            rate,
            frame,
            delay: (audio.jitter.as_millis() as i64 * rate as i64) / 1000,
            streams: Vec::new(),
            finished_streams: Vec::new(),
            encoder,
            ogg,
            played: 0,
            pauses: Vec::new(),
            paused_since: None,
            mix: vec![0; 2 * frame],
            pcm: vec![0; 5760],
            packet: vec![0; 1500],
            keep: keep.map(|k| {
                let code = KeepCode::new(&k.code);
                (k, code)
            }),
            kept_at: None,
        };
        rec.update(streams, now)?;
        Ok(rec)
    }

    fn clock(&self, now: Instant) -> i64 {
        (now.saturating_duration_since(self.start).as_micros() as i64 * self.rate as i64)
            / 1_000_000
    }

    fn seconds(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.start).as_secs_f64()
    }

    /// Applies a (re-)negotiation: streams by m-line index, codec changes, pauses.
    pub fn update(&mut self, streams: &[MediaStream], now: Instant) -> Result<(), RecordingError> {
        let mut next = Vec::with_capacity(streams.len());
        let mut old: Vec<Option<StreamState>> = std::mem::take(&mut self.streams)
            .into_iter()
            .map(Some)
            .collect();
        for spec in streams.iter().filter(|s| s.port != 0) {
            let prev = old
                .iter_mut()
                .find(|o| {
                    o.as_ref()
                        .is_some_and(|o| o.spec.index == spec.index && o.spec.port == spec.port)
                })
                .and_then(Option::take);
            let codec = spec.codec.map(|(_, c)| c);
            let state = match prev {
                Some(mut s) => {
                    if s.spec.codec.map(|(_, c)| c) != codec {
                        s.decoder = codec.map(|c| Decoder::new(c, self.rate)).transpose()?;
                        s.jitter
                            .set_clock(self.rate, codec.map_or(8000, Codec::clock_rate));
                    }
                    // New signalling for the stream's source: its pins start again.
                    if s.spec.source != spec.source {
                        s.source = None;
                        s.ssrc = None;
                    }
                    if s.spec.srtp != spec.srtp {
                        s.srtp = srtp_context(spec);
                    }
                    s.spec = spec.clone();
                    s
                }
                None => StreamState {
                    in_band: self
                        .keep
                        .as_ref()
                        .is_some_and(|(k, _)| {
                            is_user_stream(k, spec)
                                && spec.telephone_event.is_none()
                                && matches!(codec, Some(Codec::Pcmu | Codec::Pcma))
                        })
                        .then(InBand::new),
                    spec: spec.clone(),
                    jitter: JitterBuffer::new(
                        self.rate,
                        codec.map_or(8000, Codec::clock_rate),
                        self.delay,
                    ),
                    decoder: codec.map(|c| Decoder::new(c, self.rate)).transpose()?,
                    source: None,
                    srtp: srtp_context(spec),
                    ssrc: None,
                    last_packet: None,
                    foreign: 0,
                    unknown_payload: 0,
                },
            };
            next.push(state);
        }
        self.finished_streams
            .extend(old.into_iter().flatten().map(|s| report(&s)));
        self.streams = next;
        let all_paused = self.streams.iter().all(|s| s.spec.paused);
        let t = self.seconds(now);
        match (all_paused, self.paused_since) {
            (true, None) => self.paused_since = Some(t),
            (false, Some(start)) => {
                self.pauses.push(Pause { start, end: t });
                self.paused_since = None;
            }
            _ => {}
        }
        Ok(())
    }

    /// The ports this recording listens on, by stream.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.streams.iter().map(|s| s.spec.port)
    }

    /// One received datagram for the stream on `port`.
    pub fn on_packet(&mut self, port: u16, data: &[u8], from: SocketAddr, now: Instant) {
        let now_pos = self.clock(now);
        let played = self.played;
        let Some(s) = self.streams.iter_mut().find(|s| s.spec.port == port) else {
            return;
        };
        // Only the source the offer names (or, latching, the first one), and one SSRC at a time.
        let admitted = match (s.spec.source, s.source) {
            (Some(ip), _) => from.ip().to_canonical() == ip,
            (None, Some(src)) => src == from,
            (None, None) => true,
        };
        if !admitted {
            s.foreign += 1;
            return;
        }
        let silent = s
            .last_packet
            .is_none_or(|t| now.saturating_duration_since(t) > SSRC_CHANGE_AFTER);
        // Another SSRC while the stream is live is dropped before any decryption work.
        let Some(ssrc) = data
            .get(8..12)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        else {
            s.foreign += 1;
            return;
        };
        if s.ssrc.is_some_and(|pinned| pinned != ssrc) && !silent {
            s.foreign += 1;
            return;
        }
        // SRTP: authenticated (and not a replay) before anything of it counts.
        let decrypted;
        let data = match (&mut s.srtp, s.spec.srtp.is_some()) {
            (Some(ctx), _) => match ctx.decrypt_rtp(data) {
                Ok(plain) => {
                    decrypted = plain;
                    &decrypted[..]
                }
                Err(_) => {
                    s.foreign += 1;
                    return;
                }
            },
            // Keyed, but the key made no context: nothing can be trusted.
            (None, true) => {
                s.foreign += 1;
                return;
            }
            (None, false) => data,
        };
        let Ok(rtp) = rtp_rs::RtpReader::new(data) else {
            s.foreign += 1;
            return;
        };
        s.ssrc = Some(rtp.ssrc());
        s.source.get_or_insert(from);
        s.last_packet = Some(now);
        let pt = rtp.payload_type();
        let Some((audio_pt, audio_codec)) = s.spec.codec else {
            return;
        };
        if let Some((spec, code)) = &mut self.keep
            && self.kept_at.is_none()
            && is_user_stream(spec, &s.spec)
        {
            let keyed = if Some(pt) == s.spec.telephone_event {
                code.on_event(rtp.timestamp(), rtp.payload())
            } else if let (Some(det), true) = (&mut s.in_band, pt == audio_pt) {
                let table = if audio_codec == Codec::Pcma {
                    &ALAW
                } else {
                    &ULAW
                };
                let n = rtp.payload().len().min(self.pcm.len());
                for (o, b) in self.pcm[..n].iter_mut().zip(rtp.payload()) {
                    *o = table[*b as usize];
                }
                det.push(&self.pcm[..n]).is_some_and(|d| code.on_digit(d))
            } else {
                false
            };
            if keyed {
                self.kept_at = Some(now.saturating_duration_since(self.start).as_secs_f64());
            }
        }
        if pt != audio_pt {
            // telephone-event (DTMF) and comfort noise carry no audio to record.
            if Some(pt) != s.spec.telephone_event && pt != 13 {
                s.unknown_payload += 1;
            }
            return;
        }
        if s.spec.paused {
            return;
        }
        let Some(pos) = s.jitter.admit(
            rtp.sequence_number().into(),
            rtp.timestamp(),
            rtp.ssrc(),
            rtp.mark(),
            now_pos,
            played,
        ) else {
            return;
        };
        if let Some(d) = &mut s.decoder {
            let n = d.decode(rtp.payload(), &mut self.pcm);
            s.jitter.write(pos, &self.pcm[..n]);
        }
    }

    /// Encodes every frame whose time has come.
    pub fn tick(&mut self, now: Instant) -> Result<(), RecordingError> {
        let due = self.clock(now);
        while self.played + self.frame as i64 <= due {
            self.mix.fill(0);
            for s in &mut self.streams {
                match s.spec.channel {
                    Channel::Left => s.jitter.read_into(self.played, &mut self.mix, 0),
                    Channel::Right => s.jitter.read_into(self.played, &mut self.mix, 1),
                    Channel::Both => {
                        s.jitter.read_into(self.played, &mut self.mix, 0);
                        // The ring slot is cleared by the first read: copy left to right.
                        for i in 0..self.frame {
                            self.mix[2 * i + 1] = self.mix[2 * i];
                        }
                    }
                }
            }
            let n = self.encoder.encode(&self.mix, &mut self.packet)?;
            self.ogg.write_audio(&self.packet[..n])?;
            self.played += self.frame as i64;
        }
        Ok(())
    }

    /// On demand: seconds from the start when the keep code was keyed, if it was.
    /// The sink the Ogg pages go to, as written so far.
    pub fn output(&self) -> &W {
        self.ogg.output()
    }

    pub fn kept_at(&self) -> Option<f64> {
        self.kept_at
    }

    /// Time since the last RTP packet on any stream, while not paused (for the RTP timeout).
    pub fn silent_for(&self, now: Instant) -> Option<Duration> {
        if self.paused_since.is_some() {
            return None;
        }
        let last = self
            .streams
            .iter()
            .filter_map(|s| s.last_packet)
            .max()
            .unwrap_or(self.start);
        Some(now.saturating_duration_since(last))
    }

    pub fn finish(mut self, now: Instant) -> Result<(W, Summary), RecordingError> {
        self.tick(now)?;
        if let Some(start) = self.paused_since.take() {
            self.pauses.push(Pause {
                start,
                end: self.seconds(now),
            });
        }
        let mut streams = std::mem::take(&mut self.finished_streams);
        streams.extend(self.streams.iter().map(report));
        streams.sort_by_key(|s| s.label.clone());
        let duration = Duration::from_micros(self.ogg.granule() * 1_000_000 / 48_000);
        let sink = self.ogg.finish()?;
        Ok((
            sink,
            Summary {
                duration,
                streams,
                pauses: self.pauses,
                sample_rate: self.rate,
                kept_at: self.kept_at,
            },
        ))
    }
}

fn is_user_stream(k: &KeepSpec, s: &MediaStream) -> bool {
    k.user_labels
        .as_ref()
        .is_none_or(|labels| s.label.as_ref().is_some_and(|l| labels.contains(l)))
}

fn report(s: &StreamState) -> StreamReport {
    StreamReport {
        label: s.spec.label.clone(),
        codec: s.spec.codec.map(|(_, c)| c.name()),
        channel: s.spec.channel,
        stats: s.jitter.stats(),
        foreign: s.foreign,
        unknown_payload: s.unknown_payload,
    }
}

#[cfg(test)]
mod tests;
