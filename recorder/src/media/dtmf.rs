//! DTMF from the recorded user's own stream, and matching of the on-demand keep code.
//!
//! Digits arrive as RFC 4733 telephone-events (one event is sent in several packets sharing a
//! timestamp, the last with the end bit) or, on G.711 streams that negotiated no telephone-event,
//! as in-band tones found with a Goertzel filter per 20 ms frame. Sans-IO: fed payloads and PCM.

/// Digits of telephone-event codes 0..=15 (RFC 4733 §3.2).
const EVENTS: &[u8; 16] = b"0123456789*#ABCD";

/// Decodes one telephone-event payload: `(digit, end of event)`.
pub fn parse_event(payload: &[u8]) -> Option<(char, bool)> {
    let (&event, &flags) = (payload.first()?, payload.get(1)?);
    let digit = *EVENTS.get(event as usize)? as char;
    Some((digit, flags & 0x80 != 0))
}

const LOW: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
const HIGH: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];
const KEYPAD: [[char; 4]; 4] = [
    ['1', '2', '3', 'A'],
    ['4', '5', '6', 'B'],
    ['7', '8', '9', 'C'],
    ['*', '0', '#', 'D'],
];

/// Goertzel coefficients for 8 kHz.
fn coefficients() -> [f32; 8] {
    let mut c = [0.0; 8];
    for (i, f) in LOW.iter().chain(HIGH.iter()).enumerate() {
        c[i] = 2.0 * (2.0 * std::f32::consts::PI * f / 8000.0).cos();
    }
    c
}

fn power(samples: &[i16], coeff: f32) -> f32 {
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for &x in samples {
        let s = x as f32 + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - coeff * s1 * s2
}

/// In-band detector: a digit is reported once when the same tone pair is present in two
/// consecutive 20 ms blocks (≥ 40 ms, the ITU minimum) and again only after a pause.
#[derive(Debug, Default)]
pub struct InBand {
    coeff: [f32; 8],
    candidate: Option<char>,
    reported: Option<char>,
}

impl InBand {
    pub fn new() -> Self {
        Self {
            coeff: coefficients(),
            candidate: None,
            reported: None,
        }
    }

    /// One block of 8 kHz PCM (a 20 ms packet); returns a newly detected digit.
    pub fn push(&mut self, pcm: &[i16]) -> Option<char> {
        let digit = self.classify(pcm);
        let out = match (digit, self.candidate) {
            (Some(d), Some(c)) if d == c && self.reported != Some(d) => {
                self.reported = Some(d);
                Some(d)
            }
            _ => None,
        };
        if digit.is_none() {
            self.reported = None;
        }
        self.candidate = digit;
        out
    }

    fn classify(&self, pcm: &[i16]) -> Option<char> {
        let energy: f32 = pcm.iter().map(|&x| x as f32 * x as f32).sum();
        // Quieter than about -40 dBm0: no tone worth classifying.
        if pcm.is_empty() || energy / (pcm.len() as f32) < 2.0e4 {
            return None;
        }
        let p: Vec<f32> = self.coeff.iter().map(|&c| power(pcm, c)).collect();
        let best = |r: std::ops::Range<usize>| {
            r.clone()
                .max_by(|&a, &b| p[a].total_cmp(&p[b]))
                .map(|i| (i - r.start, p[i]))
        };
        let (li, lp) = best(0..4)?;
        let (hi, hp) = best(4..8)?;
        // Both tones dominate their group, carry most of the energy, and twist stays within 8 dB.
        let others_low = (0..4)
            .filter(|&i| i != li)
            .map(|i| p[i])
            .fold(0.0, f32::max);
        let others_high = (4..8)
            .filter(|&i| i != hi + 4)
            .map(|i| p[i])
            .fold(0.0, f32::max);
        let tone_energy = (lp + hp) * 2.0 / pcm.len() as f32;
        let twist = (lp / hp).max(hp / lp);
        (lp > 8.0 * others_low
            && hp > 8.0 * others_high
            && tone_energy > 0.5 * energy
            && twist < 6.3)
            .then(|| KEYPAD[li][hi])
    }
}

/// Matches the keep code against the digits keyed so far.
#[derive(Debug)]
pub struct KeepCode {
    code: Vec<char>,
    recent: Vec<char>,
    /// Timestamp of the last telephone-event seen, so repeated packets count once.
    last_event: Option<u32>,
}

impl KeepCode {
    pub fn new(code: &str) -> Self {
        Self {
            code: code.chars().collect(),
            recent: Vec::new(),
            last_event: None,
        }
    }

    /// A telephone-event packet; true when it completes the code.
    pub fn on_event(&mut self, rtp_timestamp: u32, payload: &[u8]) -> bool {
        let Some((digit, _end)) = parse_event(payload) else {
            return false;
        };
        if self.last_event == Some(rtp_timestamp) {
            return false;
        }
        self.last_event = Some(rtp_timestamp);
        self.on_digit(digit)
    }

    /// A digit from any detector; true when it completes the code.
    pub fn on_digit(&mut self, digit: char) -> bool {
        self.recent.push(digit);
        if self.recent.len() > self.code.len() {
            self.recent.remove(0);
        }
        !self.code.is_empty() && self.recent == self.code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(digit: char, ms: usize, level: f32) -> Vec<i16> {
        let (r, c) = KEYPAD
            .iter()
            .enumerate()
            .find_map(|(r, row)| row.iter().position(|d| *d == digit).map(|c| (r, c)))
            .unwrap();
        (0..ms * 8)
            .map(|i| {
                let t = i as f32 / 8000.0;
                (level
                    * ((2.0 * std::f32::consts::PI * LOW[r] * t).sin()
                        + (2.0 * std::f32::consts::PI * HIGH[c] * t).sin())) as i16
            })
            .collect()
    }

    fn detect(signal: &[i16]) -> String {
        let mut d = InBand::new();
        signal.chunks(160).filter_map(|c| d.push(c)).collect()
    }

    #[test]
    fn rfc4733_events_count_once_per_timestamp() {
        let mut k = KeepCode::new("*44");
        // "*" sent three times (same timestamp), the last with the end bit.
        assert!(!k.on_event(1000, &[10, 0x0a, 0, 160]));
        assert!(!k.on_event(1000, &[10, 0x0a, 1, 64]));
        assert!(!k.on_event(1000, &[10, 0x8a, 1, 224]));
        assert!(!k.on_event(2000, &[4, 0x8a, 0, 160]));
        assert!(k.on_event(3000, &[4, 0x8a, 0, 160]));
        assert_eq!(parse_event(&[11, 0]), Some(('#', false)));
        assert_eq!(parse_event(&[99, 0]), None);
        assert_eq!(parse_event(&[1]), None);
    }

    #[test]
    fn keep_code_slides_over_other_digits() {
        let mut k = KeepCode::new("*44");
        let hits: Vec<bool> = "1*4*44".chars().map(|d| k.on_digit(d)).collect();
        assert_eq!(hits, [false, false, false, false, false, true]);
    }

    #[test]
    fn in_band_tones_are_detected_once_each() {
        let mut signal = Vec::new();
        for d in ['*', '4', '4', '0', '#'] {
            signal.extend(tone(d, 80, 6000.0));
            signal.extend(vec![0i16; 8 * 60]);
        }
        assert_eq!(detect(&signal), "*440#");
    }

    #[test]
    fn speech_like_and_short_tones_are_not_digits() {
        // 20 ms is shorter than the 40 ms minimum.
        assert_eq!(detect(&tone('5', 20, 6000.0)), "");
        // A single frequency (a dial tone, a voice formant) is not a pair.
        let single: Vec<i16> = (0..8000)
            .map(|i| {
                ((i as f32 * 2.0 * std::f32::consts::PI * 770.0 / 8000.0).sin() * 8000.0) as i16
            })
            .collect();
        assert_eq!(detect(&single), "");
        // Broadband noise.
        let mut x = 12345u32;
        let noise: Vec<i16> = (0..8000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                ((x >> 16) as i16) / 4
            })
            .collect();
        assert_eq!(detect(&noise), "");
        // Quiet tones are ignored.
        assert_eq!(detect(&tone('1', 100, 20.0)), "");
    }
}
