//! Logging setup: JSON lines under AWS Lambda (CloudWatch parses them), a
//! human format on a terminal. `RUST_LOG` overrides the default level.

use tracing_subscriber::EnvFilter;

/// Where the process runs, which decides the log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON lines, one event each (Lambda; CloudWatch parses them).
    Json,
    /// The human-readable format, for terminals.
    Human,
}

impl LogFormat {
    /// JSON under Lambda (`AWS_LAMBDA_FUNCTION_NAME` is set by the runtime) or
    /// when `BACKSTOP_LOG_FORMAT=json`; human otherwise.
    pub fn detect() -> Self {
        let forced = std::env::var("BACKSTOP_LOG_FORMAT").unwrap_or_default();
        if forced.eq_ignore_ascii_case("json") {
            return LogFormat::Json;
        }
        if forced.eq_ignore_ascii_case("human") {
            return LogFormat::Human;
        }
        if std::env::var_os("AWS_LAMBDA_FUNCTION_NAME").is_some() {
            LogFormat::Json
        } else {
            LogFormat::Human
        }
    }
}

/// Installs the global subscriber. Logs go to stderr so that stdout stays
/// free for machine-readable results (`--event` prints JSON there).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests, repeated calls) is harmless: keep the first.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Human => builder.with_ansi(colour_on_stderr()).try_init(),
    };
}

/// Colour codes only for a person at a terminal: never when stderr is a
/// file, a pipe or a log collector, and never with `NO_COLOR` set
/// (<https://no-color.org>: any non-empty value).
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
