//! Re-reads the configuration file: policy changes apply at once, server settings after a restart.
//!
//! The file and its `policiesDir` are parsed again only when one of them changed (modification
//! time or size): a namespace of 20,000 users is megabytes of YAML, and parsing it every two
//! seconds would take a core of its own. Parsing runs off the async workers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opname_model::config::Config;
use tokio::sync::mpsc;

use super::CoreInput;
use crate::siprec::policy::PolicyTable;

pub(super) async fn config_watcher(
    path: PathBuf,
    mut current: Config,
    tx: mpsc::Sender<CoreInput>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    // Empty: the first tick reads the file again, in case it changed since the start.
    let mut seen = Vec::new();
    loop {
        tick.tick().await;
        let now = stamp(&path, current.policies_dir.as_deref());
        if now == seen {
            continue;
        }
        seen = now;
        let file = path.clone();
        let Ok(loaded) = tokio::task::spawn_blocking(move || Config::load(&file)).await else {
            continue;
        };
        match loaded {
            Ok(next) if next != current => {
                if next.policies != current.policies || next.namespace != current.namespace {
                    let (table, warnings) = PolicyTable::build(&next);
                    for w in warnings {
                        tracing::warn!("{w}");
                    }
                    tracing::info!(identities = table.len(), "policies reloaded");
                    if tx.send(CoreInput::Policies(Arc::new(table))).await.is_err() {
                        return;
                    }
                }
                let mut settings = next.clone();
                settings.policies = current.policies.clone();
                settings.namespace = current.namespace.clone();
                if settings != current {
                    tracing::warn!(
                        "server settings changed in the config file; they apply after a restart"
                    );
                }
                current = next;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "config reload failed; keeping the previous policies")
            }
        }
    }
}

/// What says whether the configuration changed: each file's path, modification time and size
/// (the file itself, then every entry of the policies directory, as the kubelet projects them).
fn stamp(path: &Path, policies_dir: Option<&Path>) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let of = |p: PathBuf| {
        let meta = std::fs::metadata(&p).ok();
        let modified = meta.as_ref().and_then(|m| m.modified().ok());
        (p, modified, meta.map_or(0, |m| m.len()))
    };
    let mut out = vec![of(path.to_path_buf())];
    if let Some(dir) = policies_dir {
        let dir = path.parent().unwrap_or(Path::new(".")).join(dir);
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        entries.sort();
        out.extend(entries.into_iter().map(of));
    }
    out
}
