//! Logging: JSON lines in production (`LOG_FORMAT=json`), compact text for a terminal,
//! filtered by `RUST_LOG` (default [`DEFAULT_FILTER`]).

use tracing::Subscriber;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;

/// `info`, but the MCP library only from `warn`: it logs a line at `info` for every
/// connection it opens or serves.
pub const DEFAULT_FILTER: &str = "info,rmcp=warn";

pub fn get_subscriber<Sink>(
    default_filter: &str,
    json: bool,
    sink: Sink,
) -> Box<dyn Subscriber + Send + Sync>
where
    Sink: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let registry = tracing_subscriber::registry().with(filter);
    if json {
        Box::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(sink),
            ),
        )
    } else {
        Box::new(registry.with(tracing_subscriber::fmt::layer().compact().with_writer(sink)))
    }
}

/// Installs the subscriber for the process; a second call is ignored.
pub fn init_subscriber(subscriber: Box<dyn Subscriber + Send + Sync>) {
    let _ = tracing::subscriber::set_global_default(subscriber);
}

pub fn json_requested() -> bool {
    std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"))
}
