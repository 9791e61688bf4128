//! Per-stream jitter buffer: places each packet's audio at its playout position.
//!
//! Positions count samples at the call's mixing rate from the call's start, so all streams of a
//! call share one timeline and stay aligned. A packet's position is its RTP timestamp mapped
//! through an anchor set when the stream (re)starts: arrival position plus the playout delay.
//! The anchor is reset on an SSRC change, a timestamp jump, repeated lateness, or a talkspurt
//! (marker bit) that starts far from where the delay wants it: this copes with silence
//! suppression and sender clock drift. What nothing was written to plays as silence.

/// Ring capacity in samples; a power of two above the delay plus the largest packet at 16 kHz.
const RING: usize = 1 << 14;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub received: u64,
    pub lost: u64,
    pub late: u64,
    pub duplicated: u64,
}

#[derive(Debug, Clone, Copy)]
struct Anchor {
    ssrc: u32,
    ts: u32,
    pos: i64,
}

pub struct JitterBuffer {
    ring: Box<[i16]>,
    /// Samples per RTP clock tick × 2^16, to map timestamps without division.
    scale: i64,
    delay: i64,
    anchor: Option<Anchor>,
    late_run: u32,
    /// Highest extended sequence number, first one, and a window of the 64 before it.
    highest: Option<u64>,
    first: u64,
    window: u64,
    /// Unique packets of the current SSRC run.
    run_received: u64,
    stats: Stats,
}

impl JitterBuffer {
    pub fn new(mix_rate: u32, clock_rate: u32, delay: i64) -> Self {
        Self {
            ring: vec![0; RING].into_boxed_slice(),
            scale: ((mix_rate as i64) << 16) / clock_rate as i64,
            delay,
            anchor: None,
            late_run: 0,
            highest: None,
            first: 0,
            window: 0,
            run_received: 0,
            stats: Stats::default(),
        }
    }

    /// The RTP clock changed (codec change in a re-offer).
    pub fn set_clock(&mut self, mix_rate: u32, clock_rate: u32) {
        self.scale = ((mix_rate as i64) << 16) / clock_rate as i64;
        self.anchor = None;
    }

    /// Admits a packet; `Some(position)` where its audio goes, `None` for a duplicate or late one.
    /// `now` is the current position of the call clock, `played` what the mixer has consumed.
    pub fn admit(
        &mut self,
        seq: u16,
        ts: u32,
        ssrc: u32,
        marker: bool,
        now: i64,
        played: i64,
    ) -> Option<i64> {
        if self.anchor.is_some_and(|a| a.ssrc != ssrc) {
            // A new source restarts sequence tracking as well as timing.
            self.finish_sequence();
            self.anchor = None;
        }
        if !self.track_sequence(seq) {
            self.stats.duplicated += 1;
            return None;
        }
        self.stats.received += 1;
        self.run_received += 1;
        let target = now + self.delay;
        let pos = match self.anchor {
            Some(a) => a.pos + ((ts.wrapping_sub(a.ts) as i32 as i64 * self.scale) >> 16),
            None => target,
        };
        let too_far = pos > now + (RING as i64) / 2 || pos < played - (RING as i64) / 2;
        let drifted = marker && (pos - target).abs() > self.delay;
        let pos = if self.anchor.is_none() || too_far || drifted || self.late_run >= 3 {
            self.anchor = Some(Anchor {
                ssrc,
                ts,
                pos: target,
            });
            self.late_run = 0;
            target
        } else {
            pos
        };
        if pos < played {
            self.late_run += 1;
            self.stats.late += 1;
            return None;
        }
        self.late_run = 0;
        Some(pos)
    }

    /// Returns false for a duplicate.
    fn track_sequence(&mut self, seq: u16) -> bool {
        let Some(highest) = self.highest else {
            self.highest = Some(seq as u64 + (1 << 16));
            self.first = seq as u64 + (1 << 16);
            self.window = 1;
            return true;
        };
        let cycle = highest & !0xffff;
        let mut ext = cycle | seq as u64;
        // Choose the cycle that puts `ext` closest to `highest`.
        if ext + 0x8000 < highest {
            ext += 1 << 16;
        } else if ext > highest + 0x8000 && ext >= 1 << 16 {
            ext -= 1 << 16;
        }
        if ext > highest {
            let shift = ext - highest;
            self.window = if shift >= 64 {
                1
            } else {
                (self.window << shift) | 1
            };
            self.highest = Some(ext);
            true
        } else {
            let back = highest - ext;
            if back >= 64 {
                // Far older than the window: a restart of the sender; count, don't judge.
                return true;
            }
            let bit = 1u64 << back;
            let fresh = self.window & bit == 0;
            self.window |= bit;
            if ext < self.first {
                self.first = ext;
            }
            fresh
        }
    }

    fn run_lost(&self) -> u64 {
        self.highest.map_or(0, |h| {
            (h + 1 - self.first).saturating_sub(self.run_received)
        })
    }

    fn finish_sequence(&mut self) {
        self.stats.lost += self.run_lost();
        self.highest = None;
        self.run_received = 0;
    }

    /// Writes decoded audio at `pos` (from [`JitterBuffer::admit`]).
    pub fn write(&mut self, pos: i64, pcm: &[i16]) {
        let start = pos as usize & (RING - 1);
        let first = pcm.len().min(RING - start);
        self.ring[start..start + first].copy_from_slice(&pcm[..first]);
        self.ring[..pcm.len() - first].copy_from_slice(&pcm[first..]);
    }

    /// Mixes the frame at `pos` into `out` (stride 2 for interleaved stereo) and clears it.
    pub fn read_into(&mut self, pos: i64, out: &mut [i16], offset: usize) {
        let n = out.len() / 2;
        let start = pos as usize & (RING - 1);
        let first = n.min(RING - start);
        let (a, b) = self.ring.split_at_mut(start);
        let segments = [&mut b[..first], &mut a[..n - first]];
        for (o, slot) in out[offset..]
            .iter_mut()
            .step_by(2)
            .zip(segments.into_iter().flat_map(|s| s.iter_mut()))
        {
            *o = o.saturating_add(*slot);
            *slot = 0;
        }
    }

    /// Statistics; loss follows RFC 3550 (expected minus received, never negative).
    pub fn stats(&self) -> Stats {
        let mut s = self.stats;
        s.lost += self.run_lost();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jb() -> JitterBuffer {
        JitterBuffer::new(8000, 8000, 480)
    }

    #[test]
    fn places_by_timestamp_reorders_and_drops_duplicates() {
        let mut j = jb();
        assert_eq!(j.admit(10, 1000, 1, false, 0, 0), Some(480));
        assert_eq!(
            j.admit(12, 1320, 1, false, 40, 0),
            Some(800),
            "out of order first"
        );
        assert_eq!(
            j.admit(11, 1160, 1, false, 45, 0),
            Some(640),
            "then the gap is filled"
        );
        assert_eq!(j.admit(11, 1160, 1, false, 46, 0), None, "duplicate");
        let s = j.stats();
        assert_eq!((s.received, s.duplicated, s.lost), (3, 1, 0));
    }

    #[test]
    fn counts_loss_and_late() {
        let mut j = jb();
        j.admit(1, 0, 7, false, 0, 0);
        j.admit(4, 480, 7, false, 60, 0); // 2 and 3 lost
        assert_eq!(j.stats().lost, 2);
        assert_eq!(
            j.admit(5, 640, 7, false, 2000, 2000),
            None,
            "played already"
        );
        assert_eq!(j.stats().late, 1);
    }

    #[test]
    fn reanchors_on_ssrc_change_and_jump() {
        let mut j = jb();
        j.admit(1, 0, 1, false, 0, 0);
        assert_eq!(
            j.admit(2, 50_000_000, 1, false, 160, 0),
            Some(640),
            "timestamp jump"
        );
        assert_eq!(j.admit(900, 77, 2, false, 320, 0), Some(800), "new SSRC");
        assert_eq!(j.stats().received, 3);
    }

    #[test]
    fn silence_suppression_keeps_timing_and_talkspurt_realigns() {
        let mut j = jb();
        j.admit(1, 0, 1, false, 0, 0);
        // 2 s of silence suppressed, talkspurt resumes on time: same mapping.
        assert_eq!(j.admit(2, 16000, 1, true, 16000, 15000), Some(16480));
        // Sender clock ran slow: the next talkspurt is far behind the delay → re-anchored.
        assert_eq!(j.admit(3, 32000, 1, true, 33000, 32000), Some(33480));
    }

    #[test]
    fn ring_write_read_clears() {
        let mut j = jb();
        j.write(100, &[1, 2, 3]);
        let mut out = [0i16; 8];
        j.read_into(100, &mut out, 1);
        assert_eq!(out, [0, 1, 0, 2, 0, 3, 0, 0]);
        let mut again = [0i16; 8];
        j.read_into(100, &mut again, 1);
        assert_eq!(again, [0; 8]);
    }

    #[test]
    fn sequence_wraps() {
        let mut j = jb();
        for (i, seq) in [65534u16, 65535, 0, 1].into_iter().enumerate() {
            assert!(
                j.admit(seq, i as u32 * 160, 3, false, i as i64 * 160, 0)
                    .is_some()
            );
        }
        assert_eq!(j.stats().lost, 0);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_stays_in_ring(pkts in proptest::collection::vec((proptest::prelude::any::<u16>(), proptest::prelude::any::<u32>(), 0u32..3, proptest::prelude::any::<bool>()), 0..200)) {
            let mut j = JitterBuffer::new(16000, 8000, 960);
            let mut now = 0i64;
            for (seq, ts, ssrc, m) in pkts {
                now += 320;
                if let Some(pos) = j.admit(seq, ts, ssrc, m, now, now - 100) {
                    proptest::prop_assert!(pos >= now - 100 && pos <= now + RING as i64 / 2);
                    j.write(pos, &[1; 320]);
                }
            }
        }
    }
}
