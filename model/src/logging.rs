//! How every opname process logs: `tracing` on stderr, levels from `RUST_LOG`, JSON lines when
//! [`FORMAT_ENV`] is `json` (the chart's `logFormat`, which the operator passes on to the pods it
//! makes), so the audit lines can go to a log pipeline or SIEM.

/// The environment variable that switches a process to JSON lines.
pub const FORMAT_ENV: &str = "LOG_FORMAT";

/// Installs the log subscriber.
pub fn init() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var(FORMAT_ENV).is_ok_and(|f| f == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
