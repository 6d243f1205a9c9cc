//! Logging: readable lines by default, JSON with `LOG_FORMAT=json`; `RUST_LOG` filters.

use tracing_subscriber::EnvFilter;

use crate::configuration::LogFormat;

/// async-stripe logs every failed attempt as a warning; the gateway logs the ones that
/// matter, once, with context.
const DEFAULT_FILTER: &str = "info,stripe=error,actix_server=warn";

/// Installs the global subscriber, writing to standard error.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second call (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
