//! Per-call limits: the spec may lower the operator's defaults, never pass its bounds.

use std::time::Duration;

use super::WasmOptions;
use crate::crd::WasmLimits;

/// The deadline and memory cap of one hook call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    /// Wall-clock deadline.
    pub timeout: Duration,
    /// Memory cap in bytes.
    pub memory: u64,
}

/// A limit in the spec that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    /// Not a duration like `500ms`, `5s` or `1m`.
    #[error("timeout {0:?} is not a duration like 500ms, 5s or 1m")]
    Timeout(String),
    /// Not a size like `64Mi`.
    #[error("memory {0:?} is not a size like 65536, 512Ki, 64Mi or 1Gi")]
    Memory(String),
    /// Above the operator's bound.
    #[error("{what} {asked} is above the operator's bound of {bound}")]
    AboveBound {
        /// `timeout` or `memory`.
        what: &'static str,
        /// What the spec asked for.
        asked: String,
        /// The bound.
        bound: String,
    },
}

fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        _ => None,
    }
}

fn parse_memory(text: &str) -> Option<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let shift = match unit {
        "" => 0,
        "Ki" => 10,
        "Mi" => 20,
        "Gi" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

impl CallLimits {
    /// The limits of a call: the spec's where set, the operator's defaults otherwise.
    pub fn resolve(spec: Option<&WasmLimits>, options: &WasmOptions) -> Result<Self, LimitsError> {
        let timeout = match spec.and_then(|l| l.timeout.as_deref()) {
            Some(text) => {
                let t = parse_duration(text)
                    .filter(|t| !t.is_zero())
                    .ok_or_else(|| LimitsError::Timeout(text.to_owned()))?;
                if t > options.max_timeout {
                    return Err(LimitsError::AboveBound {
                        what: "timeout",
                        asked: text.to_owned(),
                        bound: format!("{}ms", options.max_timeout.as_millis()),
                    });
                }
                t
            }
            None => options.default_timeout,
        };
        let memory = match spec.and_then(|l| l.memory.as_deref()) {
            Some(text) => {
                let m = parse_memory(text)
                    .filter(|m| *m > 0)
                    .ok_or_else(|| LimitsError::Memory(text.to_owned()))?;
                if m > options.max_memory {
                    return Err(LimitsError::AboveBound {
                        what: "memory",
                        asked: text.to_owned(),
                        bound: format!("{}Mi", options.max_memory >> 20),
                    });
                }
                m
            }
            None => options.default_memory,
        };
        Ok(Self { timeout, memory })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(timeout: Option<&str>, memory: Option<&str>) -> Result<CallLimits, LimitsError> {
        CallLimits::resolve(
            Some(&WasmLimits {
                timeout: timeout.map(str::to_owned),
                memory: memory.map(str::to_owned),
            }),
            &WasmOptions::default(),
        )
    }

    #[test]
    fn defaults_apply_when_the_spec_is_silent() {
        let l = CallLimits::resolve(None, &WasmOptions::default()).unwrap();
        assert_eq!(l.timeout, Duration::from_secs(2));
        assert_eq!(l.memory, 64 << 20);
    }

    #[test]
    fn the_spec_may_lower_limits() {
        let l = limits(Some("500ms"), Some("16Mi")).unwrap();
        assert_eq!(l.timeout, Duration::from_millis(500));
        assert_eq!(l.memory, 16 << 20);
        assert_eq!(
            limits(Some("1m"), None).unwrap_err().to_string(),
            "timeout 1m is above the operator's bound of 30000ms"
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        assert!(matches!(
            limits(Some("5 seconds"), None),
            Err(LimitsError::Timeout(_))
        ));
        assert!(matches!(
            limits(None, Some("64MB")),
            Err(LimitsError::Memory(_))
        ));
        assert!(matches!(
            limits(None, Some("2Gi")),
            Err(LimitsError::AboveBound { what: "memory", .. })
        ));
        assert!(matches!(
            limits(Some("0s"), None),
            Err(LimitsError::Timeout(_))
        ));
    }
}
