//! Payload decoders producing 16-bit PCM at the call's mixing rate (8 or 16 kHz).
//!
//! Opus decodes natively at the mixing rate and G.722 has an 8 kHz mode; G.711 is upsampled by
//! linear interpolation when a call mixes at 16 kHz. Decoding never allocates (except G.722,
//! whose decoder returns a fresh vector).

use ezk_g722::libg722::{Bitrate, decoder::Decoder as G722Decoder};

use crate::protocol::sdp::Codec;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
}

pub enum Decoder {
    Pcmu { rate: u32 },
    Pcma { rate: u32 },
    G722(Box<G722Decoder>),
    Opus(Box<opus::Decoder>),
}

impl Decoder {
    pub fn new(codec: Codec, rate: u32) -> Result<Self, CodecError> {
        Ok(match codec {
            Codec::Pcmu => Decoder::Pcmu { rate },
            Codec::Pcma => Decoder::Pcma { rate },
            Codec::G722 => Decoder::G722(Box::new(G722Decoder::new(
                Bitrate::Mode1_64000,
                false,
                rate == 8000,
            ))),
            Codec::Opus => Decoder::Opus(Box::new(opus::Decoder::new(rate, opus::Channels::Mono)?)),
        })
    }

    /// Decodes into `out`, returning the samples written (0 for an undecodable payload).
    pub fn decode(&mut self, payload: &[u8], out: &mut [i16]) -> usize {
        match self {
            Decoder::Pcmu { rate } => g711(payload, out, *rate, &ULAW),
            Decoder::Pcma { rate } => g711(payload, out, *rate, &ALAW),
            Decoder::G722(d) => {
                let pcm = d.decode(payload);
                let n = pcm.len().min(out.len());
                out[..n].copy_from_slice(&pcm[..n]);
                n
            }
            Decoder::Opus(d) => d.decode(payload, out, false).unwrap_or(0),
        }
    }
}

fn g711(payload: &[u8], out: &mut [i16], rate: u32, table: &[i16; 256]) -> usize {
    if rate == 8000 {
        let n = payload.len().min(out.len());
        for (o, b) in out.iter_mut().zip(payload) {
            *o = table[*b as usize];
        }
        return n;
    }
    let n = payload.len().min(out.len() / 2);
    for i in 0..n {
        let a = table[payload[i] as usize] as i32;
        let b = payload.get(i + 1).map_or(a, |b| table[*b as usize] as i32);
        out[2 * i] = a as i16;
        out[2 * i + 1] = ((a + b) / 2) as i16;
    }
    2 * n
}

const fn ulaw_decode(b: u8) -> i16 {
    let u = !b;
    let t = (((u & 0x0f) as i32) << 3) + 0x84;
    let t = t << ((u & 0x70) >> 4);
    (if u & 0x80 != 0 { 0x84 - t } else { t - 0x84 }) as i16
}

const fn alaw_decode(b: u8) -> i16 {
    let a = b ^ 0x55;
    let mut t = ((a & 0x0f) as i32) << 4;
    let seg = ((a & 0x70) >> 4) as i32;
    t = match seg {
        0 => t + 8,
        1 => t + 0x108,
        _ => (t + 0x108) << (seg - 1),
    };
    (if a & 0x80 != 0 { t } else { -t }) as i16
}

const fn table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_decode(i as u8)
        } else {
            ulaw_decode(i as u8)
        };
        i += 1;
    }
    t
}

pub static ULAW: [i16; 256] = table(false);
pub static ALAW: [i16; 256] = table(true);

/// μ-law encoding (for the load generator and tests that synthesise calls).
pub fn ulaw_encode(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    let mut s = sample as i32;
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = (s + BIAS).min(32635 + BIAS);
    let exp = (31 - (s as u32).leading_zeros() as i32 - 7).clamp(0, 7);
    let mantissa = (s >> (exp + 3)) & 0x0f;
    !(sign | (exp << 4) | mantissa) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g711_known_values_and_round_trip() {
        assert_eq!(ULAW[0xff], 0);
        assert_eq!(ULAW[0x00], -32124);
        assert_eq!(ULAW[0x80], 32124);
        assert_eq!(ALAW[0xd5], 8);
        assert_eq!(ALAW[0x55], -8);
        for s in (-32000i16..32000).step_by(97) {
            let back = ULAW[ulaw_encode(s) as usize] as i32;
            let tol = (s as i32).abs() / 16 + 16;
            assert!((back - s as i32).abs() <= tol, "{s} -> {back}");
        }
    }

    #[test]
    fn upsamples_g711_for_wideband_calls() {
        let mut d = Decoder::new(Codec::Pcmu, 16000).unwrap();
        let mut out = [0i16; 320];
        assert_eq!(d.decode(&[0x80; 160], &mut out), 320);
        assert!(out.iter().all(|s| *s == 32124));
    }

    #[test]
    fn opus_and_g722_decode_at_the_mixing_rate() {
        let mut enc =
            opus::Encoder::new(16000, opus::Channels::Mono, opus::Application::Voip).unwrap();
        let pcm: Vec<i16> = (0..320)
            .map(|i| ((i as f32 * 0.2).sin() * 8000.0) as i16)
            .collect();
        let pkt = enc.encode_vec(&pcm, 400).unwrap();
        let mut d = Decoder::new(Codec::Opus, 8000).unwrap();
        let mut out = [0i16; 960];
        assert_eq!(d.decode(&pkt, &mut out), 160);
        assert_eq!(
            d.decode(b"\xff\xff\xff", &mut out),
            0,
            "garbage is dropped, not fatal"
        );
        let mut g = Decoder::new(Codec::G722, 16000).unwrap();
        assert_eq!(g.decode(&[0x55; 160], &mut out), 320);
        let mut g8 = Decoder::new(Codec::G722, 8000).unwrap();
        assert_eq!(g8.decode(&[0x55; 160], &mut out), 160);
    }
}
