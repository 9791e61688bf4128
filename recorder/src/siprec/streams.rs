//! The media streams of a session as the media side needs them: ports, codecs and channels.

use super::*;

/// Streams with channels: the first participant (by convention the caller) on the left, everyone
/// else on the right; by position when the metadata does not associate streams; a lone stream
/// (a mixed one) on both.
///
/// Each stream's RTP source is the address its offer names, unless `latching`.
pub(super) fn build_streams(
    negotiated: &[sdp::StreamAnswer],
    ports: &[u16],
    md: &Metadata,
    offer: &sdp::Offer,
    latching: bool,
) -> Vec<MediaStream> {
    let streams: Vec<MediaStream> = negotiated
        .iter()
        .map(|s| MediaStream {
            srtp: s.srtp.clone(),
            source: if latching {
                None
            } else {
                offer.source_of(s.index)
            },
            index: s.index,
            port: if s.accepted() {
                ports.get(s.index).copied().unwrap_or(0)
            } else {
                0
            },
            codec: s.codec,
            telephone_event: s.telephone_event,
            paused: s.paused,
            label: s.label.clone(),
            channel: Channel::Both,
        })
        .collect();
    rebuild_channels(&streams, md)
}

pub(super) fn rebuild_channels(streams: &[MediaStream], md: &Metadata) -> Vec<MediaStream> {
    let accepted = streams.iter().filter(|s| s.port != 0).count();
    let mut position = 0;
    streams
        .iter()
        .map(|s| {
            let mut s = s.clone();
            if s.port == 0 {
                return s;
            }
            let by_metadata = s.label.as_deref().and_then(|l| md.sender_of_label(l));
            s.channel = match (accepted, by_metadata) {
                (1, _) => Channel::Both,
                (_, Some(0)) => Channel::Left,
                (_, Some(_)) => Channel::Right,
                (_, None) if position == 0 => Channel::Left,
                (_, None) => Channel::Right,
            };
            position += 1;
            s
        })
        .collect()
}
