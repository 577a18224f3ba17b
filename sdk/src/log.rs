//! Writing to the operator's log.
//!
//! Lines go to plugboard's tracing output, tagged with the Plug or Socket the call is for. The
//! host truncates long lines and bounds the total per call, so log what helps someone reading
//! the operator's log, not bulk data. Never log secret values: config and data may hold them.
//!
//! ```
//! use plugboard_sdk::log;
//!
//! log::info("provisioning started");
//! log::warn(format_args!("{} retries left", 3));
//! ```

use std::fmt;

use crate::host;

/// Severity of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Fine-grained tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something failed.
    Error,
}

impl Level {
    /// `"trace"`, `"debug"`, `"info"`, `"warn"` or `"error"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Writes a line at `level`.
pub fn log(level: Level, message: impl fmt::Display) {
    host::log(level, &message.to_string());
}

/// Writes a [`Level::Trace`] line.
pub fn trace(message: impl fmt::Display) {
    log(Level::Trace, message);
}

/// Writes a [`Level::Debug`] line.
pub fn debug(message: impl fmt::Display) {
    log(Level::Debug, message);
}

/// Writes a [`Level::Info`] line.
pub fn info(message: impl fmt::Display) {
    log(Level::Info, message);
}

/// Writes a [`Level::Warn`] line.
pub fn warn(message: impl fmt::Display) {
    log(Level::Warn, message);
}

/// Writes a [`Level::Error`] line.
pub fn error(message: impl fmt::Display) {
    log(Level::Error, message);
}
