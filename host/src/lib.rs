//! plugboard couples applications through `Plug` and `Socket` resources and runs their
//! lifecycle hooks in HTTP apparatus pods or in sandboxed WebAssembly components.
//!
//! The crate is organised along the data flow of a reconcile: [`crd`] holds the API types
//! watched and written; [`engine`] is the pure core (config, interface, admission, checksums);
//! [`apparatus`] calls hooks, within the operator's [`egress`] policy; [`oci`] fetches WebAssembly components from registries;
//! [`controller`] loads objects, runs the lifecycle and writes status and Events; [`budget`]
//! derives every memory bound from one budget. Around the controllers, [`leader`] elects the
//! replica that runs them and [`health`] serves probes and [`metrics`]. [`status`] reads couplings back for people;
//! `dev` (feature `dev`) is the local playground of `plugboard dev`.

pub mod apparatus;
pub mod budget;
pub mod controller;
pub mod crd;
#[cfg(feature = "dev")]
pub mod dev;
pub mod egress;
pub mod engine;
pub mod health;
pub mod heap;
pub mod leader;
pub mod logging;
pub mod metrics;
pub mod oci;
pub mod signature;
pub mod status;
pub mod wasm;

#[cfg(test)]
mod proptests;
