use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;
use crate::media::codec::ulaw_encode;

fn stream(index: usize, port: u16, channel: Channel) -> MediaStream {
    MediaStream {
        index,
        port,
        codec: Some((0, Codec::Pcmu)),
        telephone_event: Some(101),
        paused: false,
        label: Some((index + 1).to_string()),
        channel,
        source: Some(SRC.ip()),
        srtp: None,
    }
}

fn settings() -> AudioSettings {
    AudioSettings {
        bitrate: 24_000,
        complexity: 5,
        jitter: Duration::from_millis(60),
    }
}

fn rtp(seq: u16, ts: u32, ssrc: u32, pt: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&ts.to_be_bytes());
    p[8..12].copy_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// 20 ms of a tone, or of silence.
fn frame(on: bool, k: u32, freq: f32) -> Vec<u8> {
    (0..160)
        .map(|i| {
            let t = (k * 160 + i) as f32 / 8000.0;
            let v = if on {
                (2.0 * std::f32::consts::PI * freq * t).sin() * 10_000.0
            } else {
                0.0
            };
            ulaw_encode(v as i16)
        })
        .collect()
}

/// Decodes an Ogg Opus file to interleaved stereo at 8 kHz, pre-skip removed.
fn decode(bytes: &[u8]) -> Vec<i16> {
    let mut r = ogg::PacketReader::new(std::io::Cursor::new(bytes.to_vec()));
    let head = r.read_packet().unwrap().unwrap();
    assert_eq!(&head.data[..8], b"OpusHead");
    assert_eq!(head.data[9], 2, "stereo");
    let pre_skip = u16::from_le_bytes([head.data[10], head.data[11]]) as usize / 6;
    r.read_packet().unwrap().unwrap();
    let mut dec = opus::Decoder::new(8000, opus::Channels::Stereo).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0i16; 2 * 960];
    while let Some(p) = r.read_packet().unwrap() {
        let n = dec.decode(&p.data, &mut buf, false).unwrap();
        out.extend_from_slice(&buf[..2 * n]);
    }
    out.split_off(2 * pre_skip.min(out.len() / 2))
}

/// RMS of one channel over [from, to) seconds.
fn rms(pcm: &[i16], channel: usize, from: f64, to: f64) -> f64 {
    let (a, b) = ((from * 8000.0) as usize, (to * 8000.0) as usize);
    let s: Vec<f64> = pcm
        .chunks(2)
        .skip(a)
        .take(b - a)
        .map(|f| f[channel] as f64)
        .collect();
    (s.iter().map(|v| v * v).sum::<f64>() / s.len().max(1) as f64).sqrt()
}

const SRC: SocketAddr = SocketAddr::new(
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)),
    4000,
);

/// Plays two streams for `seconds`: left talks in even seconds, right in odd ones. `mangle`
/// decides per (stream, frame) whether to send, and in which order frames go out.
fn run_call(
    seconds: u32,
    streams: &[MediaStream],
    mut drop: impl FnMut(usize, u32) -> bool,
    swap_pairs: bool,
) -> (Vec<u8>, Summary) {
    let t0 = Instant::now();
    let mut rec = Recording::new(Vec::new(), streams, &settings(), 7, None, t0).unwrap();
    let frames = seconds * 50;
    for k in 0..frames {
        let now = t0 + Duration::from_millis(20 * k as u64);
        let mut batch = Vec::new();
        for (i, s) in streams.iter().enumerate() {
            let talking = (k / 50) % 2 == i as u32;
            if !drop(i, k) {
                batch.push((
                    s.port,
                    rtp(
                        k as u16,
                        k * 160,
                        100 + i as u32,
                        0,
                        &frame(talking, k, 400.0 + 300.0 * i as f32),
                    ),
                ));
            }
        }
        if swap_pairs && k % 2 == 0 {
            // Hold even frames back one tick: they arrive after the odd ones.
            let held = batch;
            let later = now + Duration::from_millis(20);
            rec.tick(now).unwrap();
            let mut next = Vec::new();
            for (i, s) in streams.iter().enumerate() {
                let kk = k + 1;
                let talking = (kk / 50) % 2 == i as u32;
                next.push((
                    s.port,
                    rtp(
                        kk as u16,
                        kk * 160,
                        100 + i as u32,
                        0,
                        &frame(talking, kk, 400.0 + 300.0 * i as f32),
                    ),
                ));
            }
            for (port, p) in next.into_iter().chain(held) {
                rec.on_packet(port, &p, SRC, later);
            }
            continue;
        }
        if swap_pairs {
            rec.tick(now).unwrap();
            continue;
        }
        for (port, p) in batch {
            rec.on_packet(port, &p, SRC, now);
        }
        rec.tick(now).unwrap();
    }
    let (bytes, summary) = rec
        .finish(t0 + Duration::from_millis(20 * frames as u64 + 100))
        .unwrap();
    (bytes, summary)
}

#[test]
fn each_party_on_its_channel_and_aligned() {
    let streams = [
        stream(0, 20000, Channel::Left),
        stream(1, 20002, Channel::Right),
    ];
    let (bytes, summary) = run_call(4, &streams, |_, _| false, false);
    let pcm = decode(&bytes);
    let secs = pcm.len() as f64 / 2.0 / 8000.0;
    assert!((secs - 4.1).abs() < 0.1, "duration {secs}");
    // The jitter delay (60 ms) shifts everything equally; look inside each second.
    for second in 0..4 {
        let (from, to) = (second as f64 + 0.2, second as f64 + 0.9);
        let (l, r) = (rms(&pcm, 0, from, to), rms(&pcm, 1, from, to));
        if second % 2 == 0 {
            assert!(
                l > 2000.0 && r < 300.0,
                "second {second}: left {l} right {r}"
            );
        } else {
            assert!(
                r > 2000.0 && l < 300.0,
                "second {second}: left {l} right {r}"
            );
        }
    }
    assert_eq!(summary.streams.len(), 2);
    assert!(
        summary
            .streams
            .iter()
            .all(|s| s.stats.received == 200 && s.stats.lost == 0 && s.stats.late == 0)
    );
}

#[test]
fn reordering_is_undone_and_loss_is_counted() {
    let streams = [
        stream(0, 20000, Channel::Left),
        stream(1, 20002, Channel::Right),
    ];
    let (bytes, _) = run_call(2, &streams, |_, _| false, true);
    let pcm = decode(&bytes);
    assert!(
        rms(&pcm, 0, 0.2, 0.9) > 2000.0,
        "reordered audio still plays"
    );
    let (_, summary) = run_call(2, &streams, |i, k| i == 0 && k % 10 == 3, false);
    let left = summary
        .streams
        .iter()
        .find(|s| s.label.as_deref() == Some("1"))
        .unwrap();
    assert_eq!(left.stats.lost, 10);
    assert_eq!(left.stats.received, 90);
}

#[test]
fn pause_is_silence_and_listed() {
    let streams = [
        stream(0, 20000, Channel::Left),
        stream(1, 20002, Channel::Right),
    ];
    let t0 = Instant::now();
    let mut rec = Recording::new(Vec::new(), &streams, &settings(), 1, None, t0).unwrap();
    let paused: Vec<MediaStream> = streams
        .iter()
        .cloned()
        .map(|mut s| {
            s.paused = true;
            s
        })
        .collect();
    for k in 0..150u32 {
        let now = t0 + Duration::from_millis(20 * k as u64);
        if k == 50 {
            rec.update(&paused, now).unwrap();
        }
        if k == 100 {
            rec.update(&streams, now).unwrap();
        }
        // The SRC keeps sending during the pause; it must not be recorded.
        rec.on_packet(
            20000,
            &rtp(k as u16, k * 160, 5, 0, &frame(true, k, 500.0)),
            SRC,
            now,
        );
        rec.tick(now).unwrap();
        assert!(rec.silent_for(now).is_none() == (50..100).contains(&k));
    }
    let (bytes, summary) = rec.finish(t0 + Duration::from_secs(3)).unwrap();
    assert_eq!(summary.pauses.len(), 1);
    assert!(
        (summary.pauses[0].start - 1.0).abs() < 0.01 && (summary.pauses[0].end - 2.0).abs() < 0.01
    );
    let pcm = decode(&bytes);
    assert!(rms(&pcm, 0, 0.2, 0.9) > 2000.0);
    assert!(rms(&pcm, 0, 1.2, 1.9) < 300.0, "paused second is silent");
    assert!(rms(&pcm, 0, 2.2, 2.9) > 2000.0);
}

#[test]
fn foreign_sources_are_dropped_and_a_mixed_stream_fills_both_channels() {
    let streams = [stream(0, 20000, Channel::Both)];
    let t0 = Instant::now();
    let mut rec = Recording::new(Vec::new(), &streams, &settings(), 1, None, t0).unwrap();
    let intruder: SocketAddr = "10.9.9.9:666".parse().unwrap();
    for k in 0..50u32 {
        let now = t0 + Duration::from_millis(20 * k as u64);
        rec.on_packet(
            20000,
            &rtp(k as u16, k * 160, 5, 0, &frame(true, k, 500.0)),
            SRC,
            now,
        );
        rec.on_packet(
            20000,
            &rtp(9000 + k as u16, 0, 66, 0, &[0u8; 160]),
            intruder,
            now,
        );
        rec.on_packet(20000, b"\x00garbage", SRC, now);
        rec.on_packet(
            20000,
            &rtp(k as u16, k * 160, 5, 101, &[1, 0, 0, 160]),
            SRC,
            now,
        );
        rec.tick(now).unwrap();
    }
    let (bytes, summary) = rec.finish(t0 + Duration::from_secs(1)).unwrap();
    let s = &summary.streams[0];
    assert_eq!(s.foreign, 100, "50 from the intruder, 50 unparsable");
    assert_eq!(s.stats.received, 50);
    assert_eq!(
        s.unknown_payload, 0,
        "telephone-event is expected, not unknown"
    );
    let pcm = decode(&bytes);
    let (l, r) = (rms(&pcm, 0, 0.2, 0.9), rms(&pcm, 1, 0.2, 0.9));
    assert!(l > 2000.0 && (l - r).abs() < l * 0.2, "left {l} right {r}");
}

#[test]
fn wideband_calls_mix_at_16_khz() {
    let mut g722 = stream(0, 20000, Channel::Left);
    g722.codec = Some((9, Codec::G722));
    assert_eq!(
        mixing_rate(&[g722.clone(), stream(1, 20002, Channel::Right)]),
        16_000
    );
    assert_eq!(mixing_rate(&[stream(1, 20002, Channel::Right)]), 8_000);
    let t0 = Instant::now();
    let mut rec = Recording::new(
        Vec::new(),
        &[g722, stream(1, 20002, Channel::Right)],
        &settings(),
        1,
        None,
        t0,
    )
    .unwrap();
    for k in 0..25u32 {
        let now = t0 + Duration::from_millis(20 * k as u64);
        rec.on_packet(20000, &rtp(k as u16, k * 160, 5, 9, &[0x4a; 160]), SRC, now);
        rec.on_packet(
            20002,
            &rtp(k as u16, k * 160, 6, 0, &frame(true, k, 500.0)),
            SRC,
            now,
        );
        rec.tick(now).unwrap();
    }
    let (_, summary) = rec.finish(t0 + Duration::from_millis(600)).unwrap();
    assert_eq!(summary.sample_rate, 16_000);
    assert_eq!(
        summary
            .streams
            .iter()
            .map(|s| s.stats.received)
            .sum::<u64>(),
        50
    );
}

#[test]
fn only_the_users_own_stream_can_key_the_keep_code() {
    let streams = [
        stream(0, 20000, Channel::Left),
        stream(1, 20002, Channel::Right),
    ];
    let keep = || {
        Some(KeepSpec {
            code: "*44".into(),
            user_labels: Some(vec!["2".into()]),
        })
    };
    let event = |digit: u8| [digit, 0x8a, 0, 160];
    let t0 = Instant::now();
    let play = |port: u16| {
        let mut rec = Recording::new(Vec::new(), &streams, &settings(), 1, keep(), t0).unwrap();
        for (k, d) in [10u8, 4, 4].into_iter().enumerate() {
            let now = t0 + Duration::from_millis(500 + 200 * k as u64);
            rec.on_packet(
                port,
                &rtp(k as u16, 8000 + 1600 * k as u32, 9, 101, &event(d)),
                SRC,
                now,
            );
        }
        rec.finish(t0 + Duration::from_secs(2)).unwrap().1.kept_at
    };
    assert_eq!(
        play(20000),
        None,
        "the other party keying *44 keeps nothing"
    );
    let kept = play(20002).expect("the user's *44 keeps the call");
    assert!((kept - 0.9).abs() < 0.01, "{kept}");
}

/// RTP only from the offer's address and one SSRC at a time; latching keeps the first source
/// for the call, so silence does not let another sender take the stream over.
#[test]
fn media_is_pinned_to_the_offered_source_and_one_ssrc() {
    let streams = [stream(0, 20000, Channel::Both)];
    let t0 = Instant::now();
    let at = |k: u32| t0 + Duration::from_millis(20 * u64::from(k));
    let mut rec = Recording::new(Vec::new(), &streams, &settings(), 1, None, t0).unwrap();
    // Same host, another port: accepted (SRCs may send from a port other than the offered one).
    let other_port: SocketAddr = "10.0.0.1:4444".parse().unwrap();
    let elsewhere: SocketAddr = "10.0.0.2:4000".parse().unwrap();
    for k in 0..50u32 {
        rec.on_packet(
            20000,
            &rtp(k as u16, k * 160, 5, 0, &[0xff; 160]),
            other_port,
            at(k),
        );
        // Another host, before the SRC has sent anything: not taken.
        rec.on_packet(
            20000,
            &rtp(k as u16, k * 160, 7, 0, &[0; 160]),
            elsewhere,
            at(k),
        );
        // The right host, another SSRC while the stream is live: injected, dropped.
        rec.on_packet(20000, &rtp(k as u16, k * 160, 8, 0, &[0; 160]), SRC, at(k));
    }
    // After a second of silence, a new SSRC from the SRC's host is the SBC re-anchoring.
    for k in 110..120u32 {
        rec.on_packet(
            20000,
            &rtp(k as u16, k * 160, 9, 0, &[0xff; 160]),
            SRC,
            at(k),
        );
    }
    let (_, summary) = rec.finish(at(130)).unwrap();
    let s = &summary.streams[0];
    assert_eq!(s.stats.received, 60, "{s:?}");
    assert_eq!(s.foreign, 100, "{s:?}");

    // Latching: the first source is kept, also after silence.
    let mut latched = stream(0, 20000, Channel::Both);
    latched.source = None;
    let mut rec = Recording::new(Vec::new(), &[latched], &settings(), 1, None, t0).unwrap();
    for k in 0..10u32 {
        rec.on_packet(
            20000,
            &rtp(k as u16, k * 160, 5, 0, &[0xff; 160]),
            elsewhere,
            at(k),
        );
    }
    for k in 200..210u32 {
        rec.on_packet(20000, &rtp(k as u16, k * 160, 6, 0, &[0; 160]), SRC, at(k));
    }
    let (_, summary) = rec.finish(at(220)).unwrap();
    assert_eq!(summary.streams[0].stats.received, 10);
    assert_eq!(summary.streams[0].foreign, 10);
}
