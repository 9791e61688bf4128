//! Per-day listing indexes of a namespace's recordings under `{prefix}/index/{ns}/`.

use object_store::path::Path;

use crate::catalog::{self, Catalog};

/// Drops a namespace's indexes after recordings were erased, held or released; the next listing
/// rebuilds them from the store.
pub async fn invalidate(catalog: &Catalog, ns: &str) {
    let under = Path::from(catalog.key(&format!("index/{ns}")));
    let store = catalog.store();
    let mut listing = store.list(Some(&under));
    while let Some(item) = futures::StreamExt::next(&mut listing).await {
        let result = match item {
            Ok(meta) => catalog::delete(store.as_ref(), &meta.location).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(namespace = ns, error = %e, "cannot drop listing index; it will show stale entries until rebuilt");
            return;
        }
    }
}
