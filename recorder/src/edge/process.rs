//! What every process built on the recorder starts with besides its logs
//! (`opname_model::logging`): the tokio runtime.

/// The multi-threaded runtime, with `threads` workers (default: one per core).
pub fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        b.worker_threads(n.max(1));
    }
    b.enable_all().build()
}
