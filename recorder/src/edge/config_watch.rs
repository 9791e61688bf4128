//! Re-reads the configuration file: policy changes apply at once, server settings after a restart.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    loop {
        tick.tick().await;
        match Config::load(&path) {
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
