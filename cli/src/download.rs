//! `kubectl opname export download NAME [--verify]`: every part through its link, checked
//! against the export's status while it streams, and with `--verify` every recording in it
//! against the part's own manifest.

use std::io::Read;
use std::path::Path;

use futures::StreamExt;
use kube::api::Api;
use opname_operator::crd::{BulkExport, ExportPhase};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::CliError;

pub async fn run(
    client: &kube::Client,
    ns: &str,
    name: &str,
    out: &Path,
    verify: bool,
) -> Result<(), CliError> {
    let export = Api::<BulkExport>::namespaced(client.clone(), ns)
        .get(name)
        .await?;
    let status = export.status.unwrap_or_default();
    if status.phase != Some(ExportPhase::Succeeded) {
        let phase = status
            .phase
            .map_or_else(|| "none".into(), |p| format!("{p:?}"));
        return Err(CliError::NotFinished(name.into(), phase));
    }
    tokio::fs::create_dir_all(out)
        .await
        .map_err(|e| CliError::Io(out.into(), e))?;
    let http = reqwest::Client::new();
    for part in &status.parts {
        let url = part
            .url
            .as_ref()
            .ok_or_else(|| CliError::NoLink(part.key.clone()))?;
        let file_name = part.key.rsplit('/').next().unwrap_or(&part.key);
        let path = out.join(file_name);
        let mismatch = |what: String| CliError::Mismatch {
            part: file_name.to_string(),
            what,
        };
        let resp = http.get(url).send().await?.error_for_status()?;
        let (size, sha256) = save(resp, &path).await?;
        let size = size as i64;
        if size != part.size {
            return Err(mismatch(format!(
                "{size} bytes, the export says {}",
                part.size
            )));
        }
        if sha256 != part.sha256 {
            return Err(mismatch(format!(
                "SHA-256 {sha256}, the export says {}",
                part.sha256
            )));
        }
        let checked = if verify {
            let n = verify_manifest(&path).map_err(|e| match e {
                Verify::Zip(z) => CliError::Zip(path.clone(), z),
                Verify::Io(io) => CliError::Io(path.clone(), io),
                Verify::Entry(what) => mismatch(what),
            })?;
            format!(", {n} recordings match the manifest")
        } else {
            String::new()
        };
        println!(
            "{} ({} bytes, SHA-256 {}{checked})",
            path.display(),
            size,
            &sha256[..16]
        );
    }
    Ok(())
}

/// Streams a response's body into `path`: its size and SHA-256 (hex).
pub async fn save(resp: reqwest::Response, path: &Path) -> Result<(u64, String), CliError> {
    let io = |e| CliError::Io(path.to_path_buf(), e);
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let (mut hash, mut size) = (Sha256::new(), 0u64);
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        hash.update(&chunk);
        size += chunk.len() as u64;
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    Ok((size, hex::encode(hash.finalize())))
}

enum Verify {
    Zip(zip::result::ZipError),
    Io(std::io::Error),
    Entry(String),
}

/// Checks every recording `manifest.json` lists against the bytes stored in the archive;
/// returns how many it checked.
fn verify_manifest(path: &Path) -> Result<usize, Verify> {
    let file = std::fs::File::open(path).map_err(Verify::Io)?;
    let mut zip = zip::ZipArchive::new(file).map_err(Verify::Zip)?;
    let manifest: serde_json::Value = {
        let mut text = String::new();
        zip.by_name("manifest.json")
            .map_err(Verify::Zip)?
            .read_to_string(&mut text)
            .map_err(Verify::Io)?;
        serde_json::from_str(&text).map_err(|e| Verify::Entry(format!("manifest.json: {e}")))?
    };
    let rows = manifest["recordings"]
        .as_array()
        .ok_or_else(|| Verify::Entry("manifest.json lists no recordings".into()))?;
    for row in rows {
        let name = row["file"].as_str().unwrap_or_default();
        let mut entry = zip
            .by_name(name)
            .map_err(|_| Verify::Entry(format!("{name} is in the manifest, not in the archive")))?;
        let mut hash = Sha256::new();
        let size = std::io::copy(&mut entry, &mut hash).map_err(Verify::Io)?;
        if Some(size) != row["size"].as_u64() {
            return Err(Verify::Entry(format!(
                "{name}: {size} bytes, the manifest says {}",
                row["size"]
            )));
        }
        let sha256 = hex::encode(hash.finalize());
        if row["sha256"] != sha256.as_str() {
            return Err(Verify::Entry(format!(
                "{name}: SHA-256 differs from the manifest"
            )));
        }
    }
    Ok(rows.len())
}
