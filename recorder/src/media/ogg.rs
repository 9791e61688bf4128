//! Ogg Opus (RFC 7845) page writer.
//!
//! Written here rather than with the `ogg` crate's `PacketWriter`, which copies every packet
//! into a fresh allocation and a hash map keyed by stream serial: on the per-frame hot path of
//! hundreds of calls that is avoidable work. The `ogg` crate reads our output back in the tests.
//! A page is emitted every [`PACKETS_PER_PAGE`] packets (one second of 20 ms frames), so a
//! spool file always ends within a second of a complete page (crash recovery relies on it).

use std::io::{self, Write};

pub const PACKETS_PER_PAGE: usize = 50;
/// Samples per 20 ms frame at Opus' granule rate of 48 kHz.
pub const GRANULE_PER_FRAME: u64 = 960;

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut r = (i as u32) << 24;
        let mut j = 0;
        while j < 8 {
            r = if r & 0x8000_0000 != 0 {
                (r << 1) ^ 0x04c1_1db7
            } else {
                r << 1
            };
            j += 1;
        }
        t[i] = r;
        i += 1;
    }
    t
};

fn crc32(data: &[u8]) -> u32 {
    data.iter().fold(0u32, |crc, b| {
        (crc << 8) ^ CRC_TABLE[((crc >> 24) as u8 ^ b) as usize]
    })
}

pub struct OggOpusWriter<W: Write> {
    out: W,
    serial: u32,
    sequence: u32,
    granule: u64,
    segments: Vec<u8>,
    data: Vec<u8>,
    packets: usize,
    page: Vec<u8>,
}

impl<W: Write> OggOpusWriter<W> {
    /// Writes the two header pages. `pre_skip` is in 48 kHz samples.
    pub fn new(
        out: W,
        serial: u32,
        channels: u8,
        input_rate: u32,
        pre_skip: u16,
        vendor: &str,
    ) -> io::Result<Self> {
        let mut w = Self {
            out,
            serial,
            sequence: 0,
            granule: 0,
            segments: Vec::with_capacity(255),
            data: Vec::with_capacity(8 * 1024),
            packets: 0,
            page: Vec::with_capacity(8 * 1024 + 300),
        };
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1);
        head.push(channels);
        head.extend_from_slice(&pre_skip.to_le_bytes());
        head.extend_from_slice(&input_rate.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes());
        head.push(0);
        w.push(&head);
        w.flush_page(0x02)?;
        let mut tags = Vec::with_capacity(24 + vendor.len());
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor.as_bytes());
        tags.extend_from_slice(&0u32.to_le_bytes());
        w.push(&tags);
        w.flush_page(0)?;
        Ok(w)
    }

    fn push(&mut self, packet: &[u8]) {
        let mut len = packet.len();
        while len >= 255 {
            self.segments.push(255);
            len -= 255;
        }
        self.segments.push(len as u8);
        self.data.extend_from_slice(packet);
        self.packets += 1;
    }

    /// Appends one 20 ms audio packet; a page is written once a second.
    pub fn write_audio(&mut self, packet: &[u8]) -> io::Result<()> {
        if self.segments.len() + packet.len() / 255 + 1 > 255 {
            self.flush_page(0)?;
        }
        self.push(packet);
        self.granule += GRANULE_PER_FRAME;
        if self.packets >= PACKETS_PER_PAGE {
            self.flush_page(0)?;
        }
        Ok(())
    }

    fn flush_page(&mut self, flags: u8) -> io::Result<()> {
        if self.segments.is_empty() && flags & 0x04 == 0 {
            return Ok(());
        }
        let granule = if self.sequence < 2 { 0 } else { self.granule };
        self.page.clear();
        self.page.extend_from_slice(b"OggS\0");
        self.page.push(flags);
        self.page.extend_from_slice(&granule.to_le_bytes());
        self.page.extend_from_slice(&self.serial.to_le_bytes());
        self.page.extend_from_slice(&self.sequence.to_le_bytes());
        self.page.extend_from_slice(&[0; 4]);
        self.page.push(self.segments.len() as u8);
        self.page.extend_from_slice(&self.segments);
        self.page.extend_from_slice(&self.data);
        let crc = crc32(&self.page);
        self.page[22..26].copy_from_slice(&crc.to_le_bytes());
        self.out.write_all(&self.page)?;
        self.out.flush()?;
        self.sequence += 1;
        self.segments.clear();
        self.data.clear();
        self.packets = 0;
        Ok(())
    }

    /// The sink, as written so far (whole pages).
    pub fn output(&self) -> &W {
        &self.out
    }

    /// Duration written so far, in 48 kHz samples.
    pub fn granule(&self) -> u64 {
        self.granule
    }

    /// Writes the last page with the end-of-stream flag and returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_page(0x04)?;
        Ok(self.out)
    }
}

/// Makes a spool file left by a crash a valid Ogg stream: keeps the whole pages whose CRC
/// checks, drops a torn last page, and marks the last kept page end-of-stream. Returns the
/// granule position (48 kHz samples) of the last audio page, `None` when no audio page survived.
pub fn repair(bytes: &mut Vec<u8>) -> Option<u64> {
    let mut pos = 0;
    let mut last: Option<(usize, usize)> = None;
    let mut pages = 0;
    while pos + 27 <= bytes.len() && &bytes[pos..pos + 4] == b"OggS" {
        let segments = bytes[pos + 26] as usize;
        let header = 27 + segments;
        if pos + header > bytes.len() {
            break;
        }
        let body: usize = bytes[pos + 27..pos + header]
            .iter()
            .map(|&b| b as usize)
            .sum();
        let end = pos + header + body;
        if end > bytes.len() {
            break;
        }
        let mut page = bytes[pos..end].to_vec();
        let stored = u32::from_le_bytes([page[22], page[23], page[24], page[25]]);
        page[22..26].copy_from_slice(&[0; 4]);
        if crc32(&page) != stored {
            break;
        }
        pages += 1;
        last = Some((pos, end));
        pos = end;
    }
    bytes.truncate(pos);
    // Two header pages come first; without an audio page there is nothing to keep.
    let (start, end) = last.filter(|_| pages > 2)?;
    bytes[start + 5] |= 0x04;
    bytes[start + 22..start + 26].copy_from_slice(&[0; 4]);
    let crc = crc32(&bytes[start..end]);
    bytes[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
    let mut granule = [0u8; 8];
    granule.copy_from_slice(&bytes[start + 6..start + 14]);
    Some(u64::from_le_bytes(granule))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_ogg_reference() {
        // CRC of "OggS" pages is checked by the ogg crate below; this pins the polynomial.
        assert_eq!(crc32(b"123456789"), 0x89a1_897f);
    }

    #[test]
    fn repair_keeps_whole_pages_and_ends_the_stream() {
        let mut bytes = Vec::new();
        {
            let mut w = OggOpusWriter::new(&mut bytes, 7, 2, 8000, 312, "t").unwrap();
            for _ in 0..(PACKETS_PER_PAGE * 3 + 10) {
                w.write_audio(&[1u8; 40]).unwrap();
            }
            // A crash: dropped without `finish`, the last 10 packets never reach a page.
        }
        // And a torn page after the last whole one.
        bytes.extend_from_slice(&b"OggS\0\0garbage"[..]);
        let granule = repair(&mut bytes).unwrap();
        assert_eq!(granule, 3 * PACKETS_PER_PAGE as u64 * GRANULE_PER_FRAME);
        let mut r = ogg::PacketReader::new(std::io::Cursor::new(bytes.clone()));
        let mut n = 0;
        let mut eos = false;
        while let Some(p) = r.read_packet().unwrap() {
            n += 1;
            eos |= p.last_in_stream();
        }
        assert_eq!(n, 2 + 3 * PACKETS_PER_PAGE);
        assert!(eos, "the stream is ended");
        // Nothing but headers: nothing to recover.
        let mut only_headers = Vec::new();
        drop(OggOpusWriter::new(&mut only_headers, 7, 2, 8000, 312, "t").unwrap());
        assert_eq!(repair(&mut only_headers), None);
        assert_eq!(repair(&mut b"not ogg".to_vec()), None);
    }

    #[test]
    fn independent_reader_accepts_pages() {
        let mut w = OggOpusWriter::new(Vec::new(), 42, 2, 8000, 312, "opname-test").unwrap();
        for i in 0..120u32 {
            let pkt = vec![(i % 251) as u8; 60 + (i as usize % 300)];
            w.write_audio(&pkt).unwrap();
        }
        let bytes = w.finish().unwrap();
        let mut r = ogg::PacketReader::new(std::io::Cursor::new(bytes));
        let head = r.read_packet().unwrap().unwrap();
        assert_eq!(&head.data[..8], b"OpusHead");
        assert_eq!(head.data[9], 2);
        assert_eq!(u16::from_le_bytes([head.data[10], head.data[11]]), 312);
        let tags = r.read_packet().unwrap().unwrap();
        assert_eq!(&tags.data[..8], b"OpusTags");
        let mut n = 0;
        let mut last = 0;
        while let Some(p) = r.read_packet().unwrap() {
            assert_eq!(p.data.len(), 60 + (n % 300));
            n += 1;
            last = p.absgp_page();
        }
        assert_eq!(n, 120);
        assert_eq!(last, 120 * GRANULE_PER_FRAME);
    }
}
