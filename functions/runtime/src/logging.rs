//! Structured JSON logs on standard output, one object per line, as CloudWatch Logs Insights
//! reads them. `RUST_LOG` filters (default `info`).

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;

/// Where [`write_metric_line`] writes, when not standard output.
type MetricWriter = Box<dyn Fn(&str) + Send + Sync>;
static METRIC_WRITER: OnceLock<MetricWriter> = OnceLock::new();

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

/// Writes one CloudWatch Embedded Metric Format line as its own log event: standard output,
/// where Lambda sends it to CloudWatch Logs, which extracts the metrics.
pub fn write_metric_line(line: &str) {
    match METRIC_WRITER.get() {
        Some(writer) => writer(line),
        None => println!("{line}"),
    }
}

/// Sends the lines of [`write_metric_line`] to `writer` instead (a benchmark counts their bytes,
/// which Lambda would ingest as log events, rather than printing thousands of them). The first
/// call wins, as with the log subscriber; later ones return false.
pub fn set_metric_writer(writer: impl Fn(&str) + Send + Sync + 'static) -> bool {
    METRIC_WRITER.set(Box::new(writer)).is_ok()
}
