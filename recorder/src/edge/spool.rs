//! The spool: the audio being written, its partial record while the call runs, the final record
//! once it ended; and at start-up, recovery of what a crashed process left there.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use object_store::path::Path as Key;
use opname_model::layout::spool::{self as names, File};
use opname_model::layout::{RecordingKeys, split_object};
use opname_model::record::{EndReason, Record, RecordError};
use sha2::{Digest, Sha256};

use super::Shared;
use super::upload::enqueue;
use crate::metrics::OutcomeLabel;

/// A spool file that hashes and counts what is written, so the record needs no second read.
pub struct SpoolWriter {
    file: BufWriter<std::fs::File>,
    hasher: Sha256,
    bytes: u64,
}

impl SpoolWriter {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            file: BufWriter::with_capacity(16 * 1024, std::fs::File::create(path)?),
            hasher: Sha256::new(),
            bytes: 0,
        })
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.bytes
    }

    /// Size and SHA-256 (hex) of everything written.
    pub fn finish(self) -> (u64, String) {
        (self.bytes, hex::encode(self.hasher.finalize()))
    }
}

impl Write for SpoolWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Writes a record atomically: a `.json` in the spool means "ready to upload".
pub fn write_record(path: &Path, record: &Record) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, record.to_json())?;
    std::fs::rename(&tmp, path)
}

fn read_record(path: &Path) -> Result<Record, RecoverError> {
    Ok(Record::parse(
        &path.display().to_string(),
        &std::fs::read(path)?,
    )?)
}

/// The store keys a record names (its audio key; the record beside it).
fn keys_of(record: &Record) -> Option<RecordingKeys> {
    let (stem, _) = split_object(&record.audio.key)?;
    Some(RecordingKeys {
        audio: Key::from(record.audio.key.as_str()),
        record: opname_model::layout::record_of(stem),
    })
}

/// A recording the previous process was taking when it died: its whole Ogg pages are kept and
/// uploaded as an incomplete recording with the metadata it had (unless it was an on-demand call
/// nobody asked to keep).
fn recover(dir: &Path, id: &str, shared: &Shared) -> Result<(), RecoverError> {
    let partial = names::partial(dir, id);
    let audio = names::audio(dir, id);
    let record = read_record(&partial)?;
    let bytes = std::fs::read(&audio).unwrap_or_default();
    let Some((bytes, record)) = crate::record::salvage(record, bytes, EndReason::Crashed) else {
        tracing::info!(file = %audio.display(), "nothing to recover from a crashed recording; removed");
        let _ = std::fs::remove_file(&audio);
        std::fs::remove_file(&partial)?;
        return Ok(());
    };
    std::fs::write(&audio, &bytes)?;
    let seconds = record.duration_seconds;
    // This process stores it, from the spool: no other recorder assembles its segments.
    shared.owned.insert(id);
    let keys = keys_of(&record).ok_or(RecoverError::Key)?;
    let record_path = names::record(dir, id);
    write_record(&record_path, &record)?;
    std::fs::remove_file(&partial)?;
    tracing::warn!(file = %audio.display(), seconds, "recovered a recording interrupted by a crash; uploading it marked incomplete");
    shared
        .metrics
        .recordings
        .get_or_create(&OutcomeLabel {
            outcome: EndReason::Crashed.as_str().into(),
        })
        .inc();
    enqueue(
        shared,
        audio,
        record_path,
        keys,
        bytes.len() as u64,
        Instant::now(),
    );
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum RecoverError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("the record's audio key is not a recording's key")]
    Key,
}

/// Finished recordings left in the spool by an earlier run (store outage, restart) are queued;
/// recordings interrupted by a crash are recovered first.
pub(super) fn requeue(shared: &Shared) {
    let dir = &shared.config.spool.dir;
    let Ok(listing) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names_found: Vec<String> = listing
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names_found.sort();
    for name in &names_found {
        if let File::Partial(id) = names::classify(name) {
            if names::record(dir, id).exists() {
                // Finished before the crash: the final record wins.
                let _ = std::fs::remove_file(names::partial(dir, id));
            } else if let Err(e) = recover(dir, id, shared) {
                tracing::error!(file = name, error = %e, "cannot recover a crashed recording; left in place");
            }
        }
    }
    for name in &names_found {
        let File::Record(id) = names::classify(name) else {
            continue;
        };
        let (path, audio) = (names::record(dir, id), names::audio(dir, id));
        let keys = read_record(&path).ok().and_then(|r| keys_of(&r));
        match (keys, std::fs::metadata(&audio)) {
            (Some(keys), Ok(meta)) => {
                tracing::info!(file = %audio.display(), "re-queueing a finished recording from the spool");
                shared.owned.insert(id);
                enqueue(shared, audio, path, keys, meta.len(), Instant::now());
            }
            _ => {
                tracing::warn!(file = %path.display(), "spool record without audio or key; left in place")
            }
        }
    }
}
