//! The pure core of a coupling: config and result merging, interface validation, who may
//! couple, and input checksums. Plain values in, plain values out; no client.

pub mod admission;
pub mod checksum;
pub mod config;
pub mod lifecycle;
pub mod resources;
pub mod template;
pub mod vars;

use std::collections::BTreeMap;

/// A string map: data, config or result of one side.
pub type Values = BTreeMap<String, String>;
