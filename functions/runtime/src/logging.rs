//! Structured JSON logs on standard output, one object per line, as CloudWatch Logs Insights
//! reads them. `RUST_LOG` filters (default `info`).

use tracing_subscriber::EnvFilter;

pub fn init() {
    init_with_default("info");
}

/// Like [`init`], with another level when `RUST_LOG` is not set (the local runner prints its
/// own table and keeps the logs to warnings).
pub fn init_with_default(level: &str) {
    init_with_writer(level, std::io::stdout);
}

/// Like [`init_with_default`], the lines going to `writer` (a benchmark counts their bytes).
pub fn init_with_writer<W>(level: &str, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // A second initialisation (tests, the local runner) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_writer(writer)
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_span_list(false)
        .flatten_event(true)
        .with_target(false)
        .without_time()
        .try_init();
}
