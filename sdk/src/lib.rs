//! `plugboard-sdk`: write plugboard lifecycle hooks in Rust.
//!
//! Hook authors implement one trait and call one export macro; the same code builds to a
//! WebAssembly component that plugboard pulls from an OCI registry and runs sandboxed, can be
//! served as an HTTP apparatus, and runs natively in unit tests. The trait, macro and harness
//! arrive with the `plugboard:apparatus` WIT contract; this crate holds their place in the
//! workspace until then.
#![deny(missing_docs)]
