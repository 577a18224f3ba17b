//! plugboard couples applications through `Plug` and `Socket` resources and runs their
//! lifecycle hooks in HTTP apparatus pods or in sandboxed WebAssembly components.
//!
//! The crate is organised along the data flow of a reconcile: [`crd`] holds the API types
//! watched and written; later modules load, compute (pure), act and write status.

pub mod crd;
