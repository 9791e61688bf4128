//! Test audio: speech made with espeak-ng and sox, decoding of the recordings, and the envelope
//! correlation that tells which source a recorded channel carries.

use std::path::Path;
use std::process::Command;

use crate::require;

/// Speaks `text` into a raw 8 kHz mu-law file, after `pad_before` seconds of silence, padded or
/// cut to `total` seconds.
pub fn speech(
    dir: &Path,
    name: &str,
    text: &str,
    voice: &str,
    pad_before: f64,
    total: f64,
) -> Vec<u8> {
    require("espeak-ng", "apt-get install espeak-ng");
    require("sox", "apt-get install sox");
    let wav = dir.join(format!("{name}.wav"));
    let raw = dir.join(format!("{name}.ulaw"));
    let ok = Command::new("espeak-ng")
        .args(["-v", voice, "-s", "150", "-w"])
        .arg(&wav)
        .arg(text)
        .status()
        .unwrap()
        .success();
    assert!(ok, "espeak-ng failed");
    let ok = Command::new("sox")
        .arg("-V1")
        .arg(&wav)
        .args([
            "-D", "-r", "8000", "-c", "1", "-t", "raw", "-e", "mu-law", "-b", "8",
        ])
        .arg(&raw)
        .args([
            "pad",
            &pad_before.to_string(),
            &total.to_string(),
            "trim",
            "0",
            &total.to_string(),
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok, "sox failed");
    std::fs::read(&raw).unwrap()
}

pub fn ulaw_to_pcm(data: &[u8]) -> Vec<i16> {
    data.iter()
        .map(|b| opname_recorder::media::codec::ULAW[*b as usize])
        .collect()
}

/// A decoded recording.
pub struct Decoded {
    pub channels: u8,
    pub input_rate: u32,
    /// Interleaved stereo at 8 kHz, pre-skip removed.
    pub pcm: Vec<i16>,
    pub last_granule: u64,
    pub pre_skip: u64,
}

impl Decoded {
    pub fn seconds(&self) -> f64 {
        (self.last_granule.saturating_sub(self.pre_skip)) as f64 / 48_000.0
    }

    pub fn channel(&self, c: usize) -> Vec<i16> {
        self.pcm.chunks(2).map(|f| f[c]).collect()
    }
}

/// Decodes Ogg Opus with the ogg crate and libopus (independent of the recorder's writer).
pub fn decode_ogg_opus(bytes: &[u8]) -> Decoded {
    let mut r = ogg::PacketReader::new(std::io::Cursor::new(bytes.to_vec()));
    let head = r.read_packet().expect("ogg").expect("OpusHead page");
    assert_eq!(&head.data[..8], b"OpusHead", "first packet is OpusHead");
    let channels = head.data[9];
    let pre_skip = u16::from_le_bytes([head.data[10], head.data[11]]) as u64;
    let input_rate =
        u32::from_le_bytes([head.data[12], head.data[13], head.data[14], head.data[15]]);
    let tags = r.read_packet().expect("ogg").expect("OpusTags page");
    assert_eq!(&tags.data[..8], b"OpusTags");
    let mut dec = opus::Decoder::new(8000, opus::Channels::Stereo).expect("decoder");
    let mut pcm = Vec::new();
    let mut buf = vec![0i16; 2 * 960];
    let mut last_granule = 0;
    while let Some(p) = r.read_packet().expect("ogg page") {
        let n = dec.decode(&p.data, &mut buf, false).expect("opus packet");
        pcm.extend_from_slice(&buf[..2 * n]);
        last_granule = p.absgp_page();
    }
    let skip = (2 * pre_skip as usize / 6).min(pcm.len());
    Decoded {
        channels,
        input_rate,
        pcm: pcm.split_off(skip),
        last_granule,
        pre_skip,
    }
}

/// Mean absolute amplitude per 20 ms at 8 kHz.
pub fn envelope(samples: &[i16]) -> Vec<f64> {
    samples
        .chunks(160)
        .map(|c| c.iter().map(|s| (*s as f64).abs()).sum::<f64>() / c.len() as f64)
        .collect()
}

fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    if n < 2 {
        return 0.0;
    }
    let (a, b) = (&a[..n], &b[..n]);
    let ma = a.iter().sum::<f64>() / n as f64;
    let mb = b.iter().sum::<f64>() / n as f64;
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    if va == 0.0 || vb == 0.0 {
        0.0
    } else {
        cov / (va * vb).sqrt()
    }
}

/// Best correlation of the recorded envelope against the source envelope, for a recording lag
/// of 0..=`max_lag` frames (the recorder's jitter delay and start-up).
pub fn best_correlation(recorded: &[f64], source: &[f64], max_lag: usize) -> (f64, usize) {
    (0..=max_lag)
        .map(|lag| (pearson(recorded.get(lag..).unwrap_or(&[]), source), lag))
        .fold((f64::MIN, 0), |best, x| if x.0 > best.0 { x } else { best })
}
