//! plugboard couples applications through `Plug` and `Socket` resources and runs their
//! lifecycle hooks in HTTP apparatus pods or in sandboxed WebAssembly components.
//!
//! The crate is organised along the data flow of a reconcile: [`crd`] holds the API types
//! watched and written; [`engine`] is the pure core (config, interface, admission, checksums);
//! [`apparatus`] calls hooks, within the operator's [`egress`] policy; [`oci`] fetches WebAssembly components from registries;
//! [`controller`] loads objects, runs the lifecycle and writes status and Events; [`budget`]
//! derives every memory bound from one budget.

pub mod apparatus;
pub mod budget;
pub mod controller;
pub mod crd;
pub mod egress;
pub mod engine;
pub mod metrics;
pub mod oci;
pub mod signature;
pub mod wasm;

#[cfg(test)]
mod proptests;
