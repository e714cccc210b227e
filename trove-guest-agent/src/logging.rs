//! The agent's log output: `[log]` in its configuration file, and the tracing subscriber it
//! selects.
//!
//! ```toml
//! [log]
//! format = "json"     # "text" (default): one human-readable line per event
//! level = "info"      # a tracing filter: "debug", "info,trove_guest_mysql=debug", ...
//! ```
//!
//! `RUST_LOG`, when set, overrides `level`; `guest_agent --log-format json|text` overrides
//! `format`. In JSON each line is one object with `timestamp`, `level`, `fields` (the event's,
//! `message` included), `target`, `span` (the innermost span) and `spans` (all open spans,
//! outermost first): an HTTP request's `http_request` span (`method`, `path`, `instance_id`,
//! `request_id`), an RPC message's `rpc_request` span (`method`, `msg_id`, `instance_id`), and a
//! replication change's `change` span (`operation`, `front_end`, `operation_id`,
//! `instance_id`). Each request and each change ends with one line (`request finished`,
//! `change finished`) carrying `outcome` and `duration_ms`.

use serde::Deserialize;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogFormat {
    /// One human-readable line per event (default).
    #[default]
    Text,
    /// One JSON object per line, with the open spans and their fields.
    Json,
}

/// `[log]`: the agent's log output (every key optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LogSection {
    /// `text` (default) or `json`.
    #[serde(default)]
    pub format: LogFormat,
    /// A tracing filter (`info` by default); `RUST_LOG` overrides it.
    #[serde(default)]
    pub level: Option<String>,
}

/// The filter `[log] level` gives (default `info`).
///
/// # Errors
///
/// [`trove_guest_core::Error::InvalidInput`] when `level` is not a valid filter.
pub fn filter(level: Option<&str>) -> trove_guest_core::Result<EnvFilter> {
    let level = level.unwrap_or("info");
    EnvFilter::try_new(level).map_err(|e| {
        trove_guest_core::Error::invalid("log.level", format!("{level:?} is not a filter: {e}"))
    })
}

/// A subscriber writing `format` lines that pass `filter` to `writer`.
pub fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => Box::new(fmt.finish()),
        LogFormat::Json => Box::new(
            fmt.json()
                .with_current_span(true)
                .with_span_list(true)
                .finish(),
        ),
    }
}

/// Installs the process's subscriber: `format`, filtered by `RUST_LOG` when set, else by
/// `level`, written to standard output.
///
/// # Errors
///
/// As [`filter`]; [`trove_guest_core::Error::InvalidInput`] when a subscriber is already set.
pub fn init(format: LogFormat, level: Option<&str>) -> trove_guest_core::Result<()> {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(f) => f,
        Err(_) => filter(level)?,
    };
    tracing::subscriber::set_global_default(subscriber(format, filter, std::io::stdout))
        .map_err(|e| trove_guest_core::Error::invalid("log", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_section_defaults_to_text_at_info_and_refuses_a_bad_level() {
        let s: LogSection = toml::from_str("").unwrap();
        assert_eq!(s.format, LogFormat::Text);
        let s: LogSection = toml::from_str("format = \"json\"\nlevel = \"debug\"").unwrap();
        assert_eq!(s.format, LogFormat::Json);
        filter(s.level.as_deref()).unwrap();
        assert!(toml::from_str::<LogSection>("format = \"xml\"").is_err());
        assert!(filter(Some("info,=[")).is_err());
    }
}
